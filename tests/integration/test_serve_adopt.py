"""kago serve across restarts: a serve killed with SIGKILL leaves its instances running and recorded
under its --root; the next serve with the same root adopts the ready and frozen ones (same instance,
same pid, no start) and removes every trace of the others (starting, dead, changed). SIGTERM drains
within --drain-timeout and leaves nothing. Real server on loopback, real containers. Needs root."""
import glob
import os
import signal
import subprocess
import time

from serve_util import KAGO, STATIC, Server, admin_request, app, cgroup_of, request, root_leftovers, wait_for

COUNTER = ("mkdir -p /srv/www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n"
           "echo $$ $(cat /proc/1/stat | cut -d\" \" -f22)\\n' > /srv/www/cgi-bin/id && chmod +x /srv/www/cgi-bin/id"
           " && exec /usr/sbin/httpd -f -p 8080 -h /srv/www")


def apps(slow_cmd="sleep 600"):
    policy = dict(stop_grace="1s", idle_timeout="10m")
    frozen = app("frz", ["frz.test"], STATIC, stop_grace="1s", idle_timeout="300ms")
    frozen = frozen[: frozen.rindex("end")] + '  a.idle :freeze, for: "10m"\nend\n'
    return (app("web", ["web.test"], STATIC, **policy)
            + app("api", ["api.test"], STATIC, **policy)
            + frozen
            # never ready while the test runs: an instance that is starting when serve is killed
            + app("slow", ["slow.test"], slow_cmd, min_instances=1, start_timeout="10m", stop_grace="1s"))


class Restarted(Server):
    """A new kago serve on the same config dir, root and ports as prev (which is dead)."""

    def __init__(self, prev, extra_args=()):
        self.tmp, self.conf, self.root = prev.tmp, prev.conf, prev.root
        self.port, self.admin, self.log = prev.port, prev.admin, prev.log
        self.seen = prev.seen
        self.errlog = open(os.path.join(self.tmp, f"stderr-{time.time_ns()}.log"), "w+")
        self.t0 = time.time()
        self.proc = subprocess.Popen(
            [KAGO, "--root", self.root, "serve", "--config", self.conf, "--listen", f"127.0.0.1:{self.port}",
             "--admin", f"127.0.0.1:{self.admin}", "--access-log", self.log, *extra_args],
            stdout=subprocess.DEVNULL, stderr=self.errlog)
        import socket
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.admin), timeout=0.2).close()
                self.ready_s = time.time() - self.t0
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        raise RuntimeError("kago serve did not start: " + self.stderr())


def cleanup(*servers):
    """After a failure: kills the serves this test started, then lets a serve with no apps remove what
    they left in the root (every instance of an app that is gone is removed)."""
    last = None
    for srv in servers:
        if srv is not None:
            last = srv
            if srv.proc.poll() is None:
                srv.proc.kill()
                srv.proc.wait()
    rec = os.path.join(last.root, ".serve") if last else None
    if rec is None or not os.path.isdir(rec) or all(n.startswith(".") for n in os.listdir(rec)):
        return  # no record left (the admin token is not one)
    for f in glob.glob(os.path.join(last.conf, "*.rb")):
        os.unlink(f)
    for _ in range(5):  # (a killed serve's spawner may hold the root a moment longer)
        try:
            Restarted(last).stop()
            return
        except Exception:
            time.sleep(2)


def sigkill(s):
    s.proc.send_signal(signal.SIGKILL)  # only the pid this test started
    s.proc.wait(10)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def traces(s, names):
    """What is left on the host of the instances named names (and of the root)."""
    found = root_leftovers(s.root)
    for n in names:
        cg = cgroup_of(n)  # (kago/NAME, or the warm sandbox's it was started in)
        found += [d for d in glob.glob(f"/sys/fs/cgroup/*/{cg}") + glob.glob(f"/sys/fs/cgroup/{cg}")
                  if os.path.isdir(d)]
    for line in open("/proc/mounts"):
        if s.tmp in line or any(n in line for n in names):
            found.append(line.strip())
    return found


def one(s, name, states=("ready",)):
    insts = s.instances(name, states)
    assert len(insts) == 1, s.ps().get(name)
    return insts[0]


def test_sigkill_restart_adopts_ready_and_frozen_removes_starting_then_sigterm_leaves_nothing():
    s1 = Server(apps())
    try:
        for host in ("web.test", "api.test", "frz.test"):
            st, h, body = request(s1.port, host, "/index.html")
            assert st == 200 and body.strip() == b"hello-static", (host, st, body)
        frz = wait_for(lambda: s1.instances("frz", ("frozen",)), 5)
        assert frz, s1.ps()["frz"]
        web, api, slow = one(s1, "web"), one(s1, "api"), one(s1, "slow", ("starting",))
        names = {i["name"] for i in (web, api, frz[0], slow)}
        sigkill(s1)
        # the instances outlive serve (no parent-death signal): they are what the next serve adopts
        assert alive(web["pid"]) and alive(api["pid"]) and alive(frz[0]["pid"])

        s2 = Restarted(s1)
        log = s2.stderr()
        assert f"adopted the ready instance {web['name']}" in log, log
        assert f"adopted the ready instance {api['name']}" in log, log
        assert f"adopted the frozen instance {frz[0]['name']}" in log, log
        assert f"removed the instance {slow['name']} of the previous serve: it was starting" in log, log
        # nothing is left of the one that was starting
        assert not os.path.exists(os.path.join(s2.root, slow["name"]))
        cg = cgroup_of(slow["name"])
        assert not glob.glob(f"/sys/fs/cgroup/*/{cg}") + glob.glob(f"/sys/fs/cgroup/{cg}")
        assert wait_for(lambda: not alive(slow["pid"]), 5)
        # the same instances serve, with no start
        w2 = one(s2, "web")
        assert (w2["name"], w2["pid"]) == (web["name"], web["pid"])
        f2 = one(s2, "frz", ("frozen",))
        assert f2["name"] == frz[0]["name"]
        for host in ("web.test", "api.test"):
            st, h, body = request(s2.port, host, "/index.html")
            assert st == 200 and body.strip() == b"hello-static"
            assert "x-kago-cold-start" not in h, h
        st, h, body = request(s2.port, "frz.test", "/index.html")
        assert st == 200 and h["x-kago-cold-start"].endswith("thaw"), h  # thawed, not started
        assert one(s2, "frz")["pid"] == frz[0]["pid"]
        for a in ("web", "api", "frz"):
            assert s2.metric("kago_cold_starts_total", app=a) == 0, s2.metrics()
        print(f"restart to admin answering, 4 recorded instances: {s2.ready_s * 1000:.0f} ms")
        names |= {i["name"] for a in s2.ps().values() for i in a["instances"]}

        # SIGTERM: drained, stopped, removed
        assert s2.stop() == 0, s2.stderr()
        assert traces(s2, names) == [], s2.stderr()
        for i in (web, api, frz[0]):
            assert not alive(i["pid"])
    finally:
        cleanup(*(locals().get(p) for p in ("s1", "s2")))


def test_records_written_a_few_a_tick_still_tell_the_next_serve_after_sigkill():
    """A tick rewrites at most so many records (KAGO_SERVE_TICK_RECORDS, here one), the rest in the next
    ticks: every instance is still recorded ready, then stopping once SIGTERM reached serve (all of them
    in one tick), so a serve killed in the drain leaves the next one records to remove them by."""
    apps = [f"s{i}" for i in range(3)]
    s1 = Server("".join(app(a, [f"{a}.test"], "trap '' TERM; " + STATIC, stop_grace="30s") for a in apps),
                env={"KAGO_SERVE_TICK_RECORDS": "1"})
    try:
        assert [request(s1.port, f"{a}.test", "/index.html")[0] for a in apps] == [200] * 3
        insts = [one(s1, a) for a in apps]

        def all_recorded(state):
            for i in insts:
                with open(os.path.join(s1.root, ".serve", i["name"])) as f:
                    if f"state {state}\n" not in f.read():
                        return False
            return True
        assert wait_for(lambda: all_recorded("ready"), 5)
        s1.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: all_recorded("stopping"), 5)
        sigkill(s1)
        assert all(alive(i["pid"]) for i in insts)  # (they ignore SIGTERM, and their stop grace is 30 s)
        s2 = Restarted(s1)
        log = s2.stderr()
        for i in insts:
            assert f"removed the instance {i['name']} of the previous serve: it was stopping" in log, log
            assert wait_for(lambda: not alive(i["pid"]), 5)
        assert s2.stop() == 0, s2.stderr()
        assert traces(s2, {i["name"] for i in insts}) == [], s2.stderr()
    finally:
        cleanup(*(locals().get(p) for p in ("s1", "s2")))


def test_restart_removes_an_adopted_instance_whose_process_died_and_changed_apps():
    s1 = Server(apps("exec /usr/sbin/httpd -f -p 8080 -h /"))
    try:
        for host in ("web.test", "api.test"):
            assert request(s1.port, host, "/")[0] in (200, 403, 404)
        web, api = one(s1, "web"), one(s1, "api")
        names = {web["name"], api["name"]} | {i["name"] for a in s1.ps().values() for i in a["instances"]}
        sigkill(s1)
        s2 = Restarted(s1)
        assert f"adopted the ready instance {web['name']}" in s2.stderr()
        sigkill(s2)
        # meanwhile web's process dies, and api's container definition changes
        os.kill(web["pid"], signal.SIGKILL)
        assert wait_for(lambda: not alive(web["pid"]), 5)
        with open(os.path.join(s1.conf, "apps.rb")) as f:
            rb = f.read()
        head, tail = rb.split('Kago.app "api"', 1)
        with open(os.path.join(s1.conf, "apps.rb"), "w") as f:
            f.write(head + 'Kago.app "api"' + tail.replace('"64M"', '"65M"', 1))
        s3 = Restarted(s2)
        log = s3.stderr()
        assert f"removed the instance {web['name']} of the previous serve: its process is gone" in log, log
        assert f"removed the instance {api['name']} of the previous serve: its app's container changed" in log, log
        assert not os.path.exists(os.path.join(s3.root, web["name"]))
        assert not os.path.exists(os.path.join(s3.root, api["name"]))
        assert not glob.glob(f"/sys/fs/cgroup/*/{cgroup_of(web['name'])}")
        # web starts anew on request
        st, h, _ = request(s3.port, "web.test", "/")
        assert "x-kago-cold-start" in h
        names |= {i["name"] for a in s3.ps().values() for i in a["instances"]}
        assert s3.stop() == 0, s3.stderr()
        assert traces(s3, names) == [], s3.stderr()
        assert not alive(api["pid"])
    finally:
        cleanup(*(locals().get(p) for p in ("s1", "s2", "s3")))


def test_a_state_or_record_that_does_not_read_is_removed_with_what_it_names():
    # a crash while the disk had a state file or a record half written (a --root not on a tmpfs): the next
    # serve cannot adopt such an instance, and removes it (its processes, cgroup, state dir), saying why
    s1 = Server(apps("exec /usr/sbin/httpd -f -p 8080 -h /"))
    try:
        for host in ("web.test", "api.test", "frz.test"):
            assert request(s1.port, host, "/")[0] in (200, 403, 404)
        web, api = one(s1, "web"), one(s1, "api")
        frz = s1.instances("frz")[0]
        names = {i["name"] for a in s1.ps().values() for i in a["instances"]}
        sigkill(s1)
        st = lambda i: os.path.join(s1.root, i["name"], "state.json")
        rec = lambda i: os.path.join(s1.root, ".serve", i["name"])
        open(st(web), "w").close()  # empty
        with open(st(api), "r+") as f:  # cut short
            f.truncate(len(f.read()) // 2)
        with open(rec(frz)) as f:
            text = f.read()
        with open(rec(frz), "w") as f:  # its record cut in the middle of a number
            f.write(text[: text.index("created ") + 12])
        s2 = Restarted(s1)
        log = s2.stderr()
        for i in (web, api):
            assert f"removed the instance {i['name']} of the previous serve: its state does not read" in log, log
        assert f"removed the instance {frz['name']} of the previous serve: its record is damaged" in log, log
        for i in (web, api, frz):
            assert not alive(i["pid"]), i
            assert not os.path.exists(os.path.join(s2.root, i["name"])) and not os.path.exists(rec(i))
            assert not glob.glob(f"/sys/fs/cgroup/*/{cgroup_of(i['name'])}")
        assert s2.stop() == 0, s2.stderr()
        assert traces(s2, names) == [], s2.stderr()
    finally:
        cleanup(*(locals().get(p) for p in ("s1", "s2")))


def test_sigterm_cuts_requests_at_the_drain_timeout():
    cgi = ("mkdir -p /srv/www/cgi-bin && printf '#!/bin/sh\\nsleep 30\\necho Content-Type: text/plain\\necho\\n"
           "echo done\\n' > /srv/www/cgi-bin/slow && chmod +x /srv/www/cgi-bin/slow"
           " && exec /usr/sbin/httpd -f -p 8080 -h /srv/www")
    s = Server(app("cgi", ["cgi.test"], cgi, stop_grace="20s"), extra_args=("--drain-timeout", "1s"))
    import threading
    res = {}

    def slow():
        try:
            res["r"] = request(s.port, "cgi.test", "/cgi-bin/slow", timeout=60)
        except Exception as e:  # cut by the deadline
            res["r"] = e
    t = threading.Thread(target=slow)
    t.start()
    # in flight to the instance (not held while it starts: SIGTERM answers those 503 at once)
    assert wait_for(lambda: s.instances("cgi", ("ready",)) and s.metric("kago_requests_in_flight", app="cgi") == 1,
                    10), s.metrics()
    time.sleep(0.2)
    names = {i["name"] for i in s.instances("cgi")}
    def health():
        try:
            return admin_request(s.admin, s.root, "/healthz", timeout=2)[::2]
        except OSError as e:
            return e
    assert health() == (200, "ok\n")
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    # while it drains, /healthz says so (a load balancer's check takes it out), with the admin API still up
    assert wait_for(lambda: health() == (503, "stopping\n"), 0.8), (health(), s.stderr())
    assert s.proc.wait(30) == 0, s.stderr()
    took = time.time() - t0
    t.join(10)
    print(f"SIGTERM with a request in flight, --drain-timeout 1s: exited in {took:.2f} s")
    assert took < 5, s.stderr()  # not the 30 s the request would take, nor stop_grace
    assert "drain timeout" in s.stderr(), (s.stderr(), res)
    r = res.get("r")
    assert isinstance(r, Exception) or r[0] >= 500, r  # cut at the deadline, not answered after 30 s
    assert traces(s, names) == [], s.stderr()


def test_instances_signalled_and_deleted_off_the_loop_leave_nothing():
    """Signals past a few milliseconds' worth per loop turn wait for the next turns (KAGO_SERVE_SIGNAL_INLINE_US
    0: one a turn), and containers are deleted in the thread pool: an instance ended by its idle timeout, one of an app a reload removed, one that ignores SIGTERM
    (killed at the end of its stop grace) and all of them at SIGTERM each leave nothing (cgroups, state dirs,
    records, log FIFOs), their logs stay, and /metrics counts the delete queue back to 0."""
    small = "mkdir -p /srv/www && echo hi > /srv/www/index.html && exec /usr/sbin/httpd -f -p 8080 -h /srv/www"

    def left_of(n):  # its state dir, record, log FIFOs, cgroups
        cg = cgroup_of(n)
        return [p for p in [os.path.join(s.root, n), os.path.join(s.root, ".serve", n)]
                + glob.glob(os.path.join(s.root, "logs", "*", n + ".std*"))
                + glob.glob(f"/sys/fs/cgroup/*/{cg}") + glob.glob(f"/sys/fs/cgroup/{cg}") if os.path.exists(p)]
    rest = ("".join(app(f"k{i}", [f"k{i}.test"], small, stop_grace="1s") for i in range(8))
            + app("stubborn", ["stubborn.test"], "trap '' TERM; " + small, stop_grace="1s"))
    s = Server(app("idle", ["idle.test"], small, idle_timeout="1s", stop_grace="1s")
               + app("gone", ["gone.test"], small, stop_grace="1s") + rest,
               env={"KAGO_SERVE_SIGNAL_INLINE_US": "0"})
    apps = ["idle", "gone", "stubborn"] + [f"k{i}" for i in range(8)]
    took = None
    try:
        assert [request(s.port, f"{a}.test")[0] for a in apps] == [200] * len(apps)
        names = {a: [i["name"] for i in s.instances(a)] for a in apps}
        assert all(len(v) == 1 for v in names.values()), names
        # the idle timeout ends one while serve runs on
        n = names["idle"][0]
        assert left_of(n)  # (what the next checks see go)
        assert wait_for(lambda: not s.instances("idle") and left_of(n) == [], 15), left_of(n)
        # a reload removes an app: its instance is deleted after the app has left the Kagofiles
        s.write_config(app("idle", ["idle.test"], small, idle_timeout="1s", stop_grace="1s") + rest)
        assert admin_request(s.admin, s.root, "/reload", method="POST", timeout=60)[0] == 200
        n = names["gone"][0]
        assert wait_for(lambda: "gone" not in s.ps() and left_of(n) == [], 15), left_of(n)
        assert s.metric("kago_instances_deleting") == 0
        left = [n for k, v in names.items() if k not in ("idle", "gone") for n in v]
        t0 = time.monotonic()
        assert s.stop() == 0, s.stderr()
        took = time.monotonic() - t0
    finally:
        assert s.stop() == 0, s.stderr()
    assert 1 <= took < 15, took  # (the stubborn one's stop grace, then its SIGKILL)
    assert [n for n in left if left_of(n)] == [], [left_of(n) for n in left]
    assert s.leftovers() == [], s.stderr()
    for a in apps:  # (the apps' output outlives their instances)
        assert os.path.isdir(os.path.join(s.root, "logs", a)), a


def test_a_stop_signal_the_instance_cannot_act_on_ends_it_at_once():
    """busybox httpd as the init of its pid namespace neither catches nor ignores SIGTERM (the kernel discards
    it for an init) and runs alone once idle: its idle stop ends it with SIGKILL at once, not after its 30 s
    stop grace. One that ignores SIGTERM on purpose keeps its grace, and a shell init whose child can act on
    SIGTERM gets SIGTERM (its child ends, and the shell with it)."""
    small = "mkdir -p /srv/www && echo hi > /srv/www/index.html && {}/usr/sbin/httpd -f -p 8080 -h /srv/www"
    # (init=False: each command is the init of its pid namespace, not kago-init's child)
    s = Server(app("deaf", ["deaf.test"], small.format("exec "), init=False, idle_timeout="1s", stop_grace="30s")
               + app("ign", ["ign.test"], "trap '' TERM; " + small.format("exec "), init=False, idle_timeout="1s",
                     stop_grace="4s")
               + app("shell", ["shell.test"], small.format("") + "; exit 0", init=False, idle_timeout="1s",
                     stop_grace="30s"))
    try:
        assert [request(s.port, f"{a}.test")[0] for a in ("deaf", "ign", "shell")] == [200] * 3
        t0 = time.monotonic()
        assert wait_for(lambda: not s.instances("deaf") and not s.instances("shell"), 10), s.ps()
        assert time.monotonic() - t0 < 10
        assert s.metric("kago_stops_at_once_total", app="deaf") == 1
        assert s.metric("kago_stops_at_once_total", app="shell") == 0
        # the one that ignores SIGTERM is stopping through its grace, then killed
        assert wait_for(lambda: s.instances("ign", ("stopping",)), 5), s.ps()["ign"]
        assert s.instances("ign", ("stopping",))
        assert wait_for(lambda: not s.instances("ign"), 15), s.ps()["ign"]
        assert s.metric("kago_stops_at_once_total", app="ign") == 0
        assert s.stop() == 0, s.stderr()
    finally:
        s.stop()
    assert s.leftovers() == [], s.stderr()
