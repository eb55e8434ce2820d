"""kago serve upgraded in place: a new serve (`kago serve --upgrade`, or SIGUSR2 to the running one)
takes the listening sockets over through <root>/.serve/.upgrade.sock, the old one drains and exits
leaving its instances, and the new one adopts them. Clients keep sending requests all along: none
fails, and the app's instance is the same one throughout (no new start). Real server on loopback,
real containers. Needs root."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

from serve_util import KAGO, STATIC, Server, app, children_named, nice_of, request, statuses_at_once
from test_serve_adopt import Restarted, alive, cleanup, wait_for
from test_serve_systemd import Notify

CGI = ("mkdir -p /srv/www/cgi-bin && printf '#!/bin/sh\\nsleep ${QUERY_STRING:-0}\\necho Content-Type: text/plain"
       "\\necho\\necho slept\\n' > /srv/www/cgi-bin/sleep && chmod +x /srv/www/cgi-bin/sleep && "
       "echo hello-static > /srv/www/index.html && exec /usr/sbin/httpd -f -p 8080 -h /srv/www")
APPS = app("web", ["web.test"], CGI, idle_timeout="10m", stop_grace="1s")


class Load:
    """Clients sending requests for web.test until stopped: keep-alive ones (a connection the server
    closes after a response is opened again, as every HTTP client does) and one that opens a connection
    per request. Any request without a complete 200 answer is a failure."""

    def __init__(self, port, keepalive=3, fresh=1):
        self.port, self.ok, self.failures, self.stopping = port, 0, [], False
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.keepalive) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self.fresh) for _ in range(fresh)]
        for t in self.threads:
            t.start()

    def count(self, st, body, what):
        with self.lock:
            if st == 200 and body.strip() == b"hello-static":
                self.ok += 1
            else:
                self.failures.append((time.time(), what, st, body[:200]))

    def keepalive(self):
        from serve_util import read_response
        s = None
        while not self.stopping:
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                s.sendall(b"GET /index.html HTTP/1.1\r\nHost: web.test\r\n\r\n")
                st, h, body = read_response(s)
                self.count(st, body, "keep-alive")
                if h.get("connection", "").lower() == "close":
                    s.close()
                    s = None
            except OSError as e:
                self.count(0, repr(e).encode(), "keep-alive")
                if s:
                    s.close()
                s = None
        if s:
            s.close()

    def fresh(self):
        while not self.stopping:
            try:
                st, h, body = request(self.port, "web.test", "/index.html")
                self.count(st, body, "fresh")
            except OSError as e:
                self.count(0, repr(e).encode(), "fresh")

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(60)


class Upgraded(Restarted):
    """`kago serve --upgrade` with prev's config, root and ports (prev runs)."""

    def __init__(self, prev, extra_args=()):
        super().__init__(prev, ("--upgrade", *extra_args))


def took_over(new, old, timeout=30):
    """new serves and old exited."""
    assert wait_for(lambda: old.proc.poll() is not None, timeout), old.stderr()[-2000:]
    assert old.proc.returncode == 0, old.stderr()[-2000:]
    # (the new serve says so once it holds the root lock the old one let go at its exit: a moment later)
    assert wait_for(lambda: "took over from pid %d" % old.proc.pid in new.stderr(), 5), new.stderr()[-2000:]


def test_upgrade_ten_times_under_load_loses_no_request_and_keeps_the_instance():
    s = Server(APPS)
    servers = [s]
    load = None
    try:
        st, _, body = request(s.port, "web.test", "/index.html")
        assert st == 200, body
        inst = s.instances("web")
        assert len(inst) == 1, inst
        name, pid = inst[0]["name"], inst[0]["pid"]
        load = Load(s.port)
        time.sleep(0.5)
        for i in range(10):
            before = load.ok
            new = Upgraded(servers[-1])
            servers.append(new)
            took_over(new, servers[-2])
            # the old serve said goodbye the way the issue asks: not accepting, drained, instances left
            log = servers[-2].stderr()
            assert "handing over to the new serve (pid %d)" % new.proc.pid in log, log[-2000:]
            assert "leaving it 1 running instances" in log, log[-2000:]
            assert f"adopted the ready instance {name}" in new.stderr(), new.stderr()[-3000:]
            # the old serve, exiting, left the new one's admin address (kago ps finds the new one by it)
            with open(os.path.join(new.root, ".serve", ".admin-addr")) as f:
                assert f.read().split("\n")[1] == str(new.proc.pid)
            assert wait_for(lambda: load.ok > before + 20, 10), (load.ok, load.failures[:5])
        load.stop()
        assert not load.failures, load.failures[:10]
        assert load.ok > 200, load.ok
        last = servers[-1]
        inst = last.instances("web")
        assert [(i["name"], i["pid"]) for i in inst] == [(name, pid)], inst
        assert last.stop() == 0
        assert not last.leftovers(), last.leftovers()
        assert not alive(pid)
    finally:
        if load:
            load.stop()
        cleanup(*servers)


def test_a_busy_keepalive_connection_of_a_request_loop_is_handed_over():
    # with request loops (--threads 2), a client that sends its next request as soon as it has an answer:
    # its connection is given over between two requests (not read meanwhile), not cut at the drain timeout
    # with a request lost while new connections waited 10 s for the old serve to go
    from serve_util import read_response
    s = Server(APPS, extra_args=("--threads", "2"))
    servers = [s]
    answers, stop = [], False

    def client():
        c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        while not stop:
            try:
                c.sendall(b"GET /cgi-bin/sleep?0.2 HTTP/1.1\r\nHost: web.test\r\n\r\n")
                answers.append(read_response(c)[0])
            except OSError as e:
                answers.append(repr(e))
                break
        c.close()
    t = None
    try:
        assert request(s.port, "web.test", "/cgi-bin/sleep?0")[0] == 200
        t = threading.Thread(target=client)
        t.start()
        assert wait_for(lambda: len(answers) >= 2, 10), answers
        t0 = time.monotonic()
        new = Upgraded(s)
        servers.append(new)
        took_over(new, s)
        took = time.monotonic() - t0
        n = len(answers)
        assert wait_for(lambda: len(answers) >= n + 3, 10), answers  # and it goes on, with the new serve
        stop = True
        t.join(30)
        assert set(answers) == {200}, answers
        assert "cut short" not in s.stderr() and took < 5, (took, s.stderr()[-2000:])
        assert "leaving it 1 running instances and 1 connections" in s.stderr(), s.stderr()[-2000:]
    finally:
        stop = True
        if t:
            t.join(30)
        cleanup(*servers)


def test_sigusr2_starts_the_new_serve_itself_and_tells_systemd_the_new_main_pid():
    n = Notify()
    more = "".join(app(k, [f"{k}.test"], CGI, idle_timeout="10m", stop_grace="1s") for k in ("w2", "w3"))
    # (a storm before the upgrade, --max-starting 1 and two starts at once, raises the old serve's loops)
    s = Server(APPS + more, extra_args=["--max-starting", "1"],
               env={"NOTIFY_SOCKET": n.addr, "KAGO_SERVE_LOOP_CALM_MS": "600000"})
    newpid = None
    try:
        n.wait_for("READY")
        st, _, _ = request(s.port, "web.test", "/index.html")
        assert st == 200
        name = s.instances("web")[0]["name"]
        assert statuses_at_once(s, ["w2", "w3"]) == {"w2": 200, "w3": 200}
        assert wait_for(lambda: nice_of(s.proc.pid) == -10, 5), nice_of(s.proc.pid)
        s.proc.send_signal(signal.SIGUSR2)
        # the old serve names the new one MAINPID= before it exits; the new one then says READY=1
        deadline = time.monotonic() + 30
        msgs = []
        while time.monotonic() < deadline and not any("MAINPID" in m for m in msgs):
            m = n.recv(deadline - time.monotonic())
            if m:
                msgs.append(m)
        mainpid = [m["MAINPID"] for m in msgs if "MAINPID" in m]
        assert mainpid, (msgs, s.stderr()[-2000:])
        newpid = int(mainpid[0])
        assert newpid != s.proc.pid
        m = re.search(r"SIGUSR2: started a new serve \(pid (\d+)", s.stderr())
        assert m and int(m.group(1)) == newpid, s.stderr()[-2000:]
        n.wait_for("READY")
        assert wait_for(lambda: s.proc.poll() is not None, 10) and s.proc.returncode == 0
        st, _, body = request(s.port, "web.test", "/index.html")
        assert st == 200 and body.strip() == b"hello-static"
        assert f"adopted the ready instance {name}" in s.stderr(), s.stderr()[-3000:]  # (same stderr file)
        # started from the old serve's raised first loop, the new one began at serve's own priority (in no
        # storm, its loops are there too, not 10 below), and so did its spawner
        spawners = children_named(newpid, "kago-spawner")
        assert nice_of(newpid) == 0 and spawners and {nice_of(p) for p in spawners} == {0}, \
            (nice_of(newpid), spawners)
        os.kill(newpid, signal.SIGTERM)  # the pid this test's serve started
        assert wait_for(lambda: not alive(newpid), 30)
        assert "stopped; every instance removed" in s.stderr()
        assert not s.leftovers(), s.leftovers()
    finally:  # (after a failure: SIGTERM removes the instances the new serve adopted; SIGKILL would leave them)
        if newpid and alive(newpid):
            os.kill(newpid, signal.SIGTERM)
            if not wait_for(lambda: not alive(newpid), 30):
                os.kill(newpid, signal.SIGKILL)
        cleanup(s)
        n.close()  # (its socket's temp dir)


def test_upgrade_refused_cleanly_when_nothing_runs_or_the_config_is_bad():
    s = Server(APPS)
    try:
        # a bad config: the new serve says why and the running one never stops accepting
        with open(os.path.join(s.conf, "bad.rb"), "w") as f:
            f.write('Kago.app "x" do |a|\n  a.hosts "x.test"\n  a.port "no"\nend\n')
        r = subprocess.run([KAGO, "--root", s.root, "serve", "--config", s.conf, "--listen",
                            f"127.0.0.1:{s.port}", "--admin", f"127.0.0.1:{s.admin}", "--upgrade"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "bad.rb" in r.stderr, r.stderr
        os.unlink(os.path.join(s.conf, "bad.rb"))
        st, _, _ = request(s.port, "web.test", "/index.html")
        assert st == 200 and s.proc.poll() is None
        # another root: nothing to take over from
        other = os.path.join(s.tmp, "other-root")
        os.mkdir(other)
        r = subprocess.run([KAGO, "--root", other, "serve", "--config", s.conf, "--upgrade"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "no kago serve runs with root" in r.stderr, r.stderr
        assert os.listdir(other) in ([], [".serve"]), os.listdir(other)
        assert s.stop() == 0
        assert not s.leftovers(), s.leftovers()
    finally:
        cleanup(s)


def test_new_serve_killed_during_the_drain_old_one_accepts_again():
    s = Server(APPS)
    new = None
    try:
        st, _, _ = request(s.port, "web.test", "/index.html")
        assert st == 200
        # a slow request keeps the old serve draining for 3 s
        slow = {}
        t = threading.Thread(target=lambda: slow.update(r=request(s.port, "web.test", "/cgi-bin/sleep?3")))
        t.start()
        time.sleep(0.5)
        new = subprocess.Popen([KAGO, "--root", s.root, "serve", "--config", s.conf, "--listen",
                                f"127.0.0.1:{s.port}", "--admin", f"127.0.0.1:{s.admin}", "--upgrade"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: "handing over to the new serve" in s.stderr(), 10), s.stderr()[-2000:]
        new.kill()  # the pid this test started
        new.wait()
        assert wait_for(lambda: "went away before taking over: accepting again" in s.stderr(), 10), s.stderr()[-2000:]
        st, _, body = request(s.port, "web.test", "/index.html")
        assert st == 200 and body.strip() == b"hello-static"
        t.join(30)
        assert slow["r"][0] == 200 and slow["r"][2].strip() == b"slept", slow
        assert s.proc.poll() is None
        assert s.stop() == 0
        assert not s.leftovers(), s.leftovers()
    finally:
        if new and new.poll() is None:
            new.kill()
            new.wait()
        cleanup(s)


def test_idle_keepalive_connections_move_to_the_new_serve():
    from serve_util import read_response
    s = Server(APPS)
    servers = [s]
    conns = []
    try:
        for _ in range(100):  # 100 keep-alive connections, idle after one request each
            c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            c.sendall(b"GET /index.html HTTP/1.1\r\nHost: web.test\r\n\r\n")
            st, h, body = read_response(c)
            assert st == 200 and h.get("connection", "").lower() != "close"
            conns.append(c)
        new = Upgraded(s)
        servers.append(new)
        took_over(new, s)
        assert "took over 100 keep-alive connections from pid %d" % s.proc.pid in new.stderr(), new.stderr()[-2000:]
        assert "leaving it 1 running instances and 100 connections" in s.stderr(), s.stderr()[-2000:]
        # each of them, idle across the upgrade, is answered by the new serve: nothing to retry
        for c in conns:
            c.sendall(b"GET /index.html HTTP/1.1\r\nHost: web.test\r\n\r\n")
            st, h, body = read_response(c)
            assert st == 200 and body.strip() == b"hello-static"
        assert new.stop() == 0
        assert not new.leftovers(), new.leftovers()
    finally:
        for c in conns:
            c.close()
        cleanup(*servers)
