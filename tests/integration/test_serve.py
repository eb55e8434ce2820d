"""kago serve end to end: a real server on loopback, real containers reached through their own
network namespaces, real HTTP. Needs root, the busybox rootfs and build/kago."""
import glob
import json
import os
import resource
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import wait_for
from serve_util import (CGI, KAGO, ROOTFS, STATIC, UPGRADE, Server, admin_request, app, children_named, nice_of, raw,
                        read_response, request, serving, statuses_at_once, thread_nices)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

SMALL = "mkdir -p /srv/www && echo hi > /srv/www/index.html && exec /usr/sbin/httpd -f -p 8080 -h /srv/www"

APPS = "".join([
    app("static", ["static.test", "WWW.Static.Test"], STATIC, max_instances=2, concurrency=50, stop_grace="3s"),
    app("burst", ["burst.test"], SMALL, max_instances=3, concurrency=20, stop_grace="2s"),
    app("cgi", ["cgi.test"], CGI, max_instances=3, concurrency=1, stop_grace="2s", max_body="200M"),
    app("idle", ["idle.test"], SMALL, idle_timeout="1s", stop_grace="1s"),
    app("mortal", ["mortal.test"], STATIC, lifetime="2s", stop_grace="15s", max_instances=2),
    app("ws", ["ws.test"], UPGRADE, lifetime="2s", stop_grace="15s"),
    app("never", ["never.test"], "exec sleep 1000", start_timeout="1s", stop_grace="1s"),
])


@pytest.fixture(scope="module")
def srv():
    yield from serving(APPS)


def cgi_sleeping(srv, instance):
    """The CGI's `sleep` runs in the instance: the app read the request and is working on it (a request
    the app never read may be sent again after a reset, see test_request_right_after_a_kill_is_not_lost)."""
    cg = f":/{srv.cgroup(instance)}\n"
    for d in glob.glob("/proc/[0-9]*"):
        try:
            if cg in open(d + "/cgroup").read() and open(d + "/cmdline").read().startswith("sleep\0"):
                return True
        except OSError:
            pass
    return False


def test_first_request_cold_starts(srv):
    assert srv.instances("static") == []
    st, h, body = request(srv.port, "static.test")
    assert st == 200 and body == b"hello-static\n"
    assert h["x-kago-cold-start"].endswith("ms")
    st, h, body = request(srv.port, "www.static.test:8080")  # other host of the app, any case, port ignored
    assert st == 200 and "x-kago-cold-start" not in h
    assert len(srv.instances("static")) == 1


def test_open_files_limit_raised():
    """Thousands of instances and clients need more descriptors than a shell's usual limit: serve raises its
    soft limit to the hard one, and as root with CAP_SYS_RESOURCE both to the kernel's fs.nr_open (<= 1M)."""
    soft0, hard0 = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard0))  # serve inherits a low soft limit
    try:
        s = Server(app("nofile", ["nofile.test"], STATIC))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft0, hard0))
    try:
        line = [l for l in open(f"/proc/{s.proc.pid}/limits") if l.startswith("Max open files")][0].split()
        soft, hard = int(line[3]), int(line[4])
        cap_eff = int([l for l in open("/proc/self/status") if l.startswith("CapEff:")][0].split()[1], 16)
        if cap_eff & (1 << 24):  # CAP_SYS_RESOURCE: the hard limit is raised too
            assert soft == hard == max(hard0, min(int(open("/proc/sys/fs/nr_open").read()), 1 << 20)), line
        else:  # (this machine's root has not got it)
            assert soft == hard == hard0, line
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []


def test_unknown_host_404(srv):
    st, _, body = request(srv.port, "nobody.test")
    assert st == 404 and body == b"404 Not Found\n"


@pytest.mark.parametrize("req", [
    b"POST / HTTP/1.1\r\nHost: static.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: static.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nHost: static.test\r\nContent-Length: +4\r\n\r\nabcd",
    b"GET / HTTP/1.1\r\nHost: static.test\r\nX-A: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : static.test\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: static.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
    b"POST / HTTP/1.1\r\nHost: static.test\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: static.test\r\nHost: cgi.test\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\nHost: static.test\r\n\r\n",
], ids=["cl+te", "dup-cl", "plus-cl", "obs-fold", "space-colon", "huge-chunk", "te-not-last", "two-hosts", "ctl-url"])
def test_malformed_and_smuggling_400(srv, req):
    out = raw(srv.port, req + b"GET / HTTP/1.1\r\nHost: static.test\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:80]
    assert out.count(b"HTTP/1.1") == 1, "the connection must close after a 400, the smuggled request unanswered"


def test_header_limits(srv):
    out = raw(srv.port, b"GET / HTTP/1.1\r\nHost: static.test\r\nX-Big: " + b"x" * 10000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431 ")
    out = raw(srv.port, b"POST /cgi-bin/count HTTP/1.1\r\nHost: cgi.test\r\nContent-Length: 300000000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413 ")


def test_keepalive_and_pipelining(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    for _ in range(5):
        s.sendall(b"GET / HTTP/1.1\r\nHost: static.test\r\n\r\n")
        st, h, body = read_response(s)
        assert st == 200 and body == b"hello-static\n"
    # two requests in one write: answered in order on the same connection
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: static.test\r\n\r\nHEAD / HTTP/1.1\r\nHost: static.test\r\n\r\n")
    st1, _, b1 = read_response(s)
    st2, h2, _ = read_response(s, method="HEAD")
    assert (st1, b1, st2, h2["content-length"]) == (200, b"hello-static\n", 200, "13")
    s.close()
    served = sum(i["served"] for i in srv.instances("static"))
    assert served >= 7


def test_burst_200_concurrent_to_stopped_app(srv):
    assert srv.instances("burst") == []
    results = []

    def one():
        try:
            results.append(request(srv.port, "burst.test", timeout=30)[0])
        except Exception as e:  # noqa: BLE001 - recorded as a failure below
            results.append(repr(e))

    threads = [threading.Thread(target=one) for _ in range(200)]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, len(srv.instances("burst")))
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert results.count(200) == 200, [r for r in results if r != 200][:5]
    assert 1 <= peak <= 3 and len(srv.instances("burst")) <= 3
    assert srv.metric("kago_cold_starts_total", app="burst") <= 3


def test_idle_expiry_then_cold_start_again(srv):
    assert request(srv.port, "idle.test")[0] == 200
    assert len(srv.instances("idle")) == 1
    assert wait_for(lambda: srv.instances("idle") == [], 5), srv.ps()["idle"]
    st, h, _ = request(srv.port, "idle.test")
    assert st == 200 and "x-kago-cold-start" in h


def test_scale_out_respects_max(srv):
    results = []
    threads = [threading.Thread(target=lambda: results.append(request(srv.port, "cgi.test", "/cgi-bin/sleep?1")))
               for _ in range(10)]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, len(srv.instances("cgi", ("starting", "ready"))))
        time.sleep(0.02)
    assert [r[0] for r in results] == [200] * 10
    assert 2 <= peak <= 3, peak
    assert len({r[2] for r in results}) >= 2, "requests spread over several instances"


def test_kill_mid_request_gives_502_then_recovers(srv):
    assert request(srv.port, "cgi.test", "/cgi-bin/sleep?0")[0] == 200
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", request(srv.port, "cgi.test", "/cgi-bin/sleep?5")))
    t.start()
    busy = wait_for(lambda: [i for i in srv.instances("cgi", ("ready",)) if i["in_flight"] > 0], 3)
    assert busy
    assert wait_for(lambda: all(cgi_sleeping(srv, i["name"]) for i in busy), 3), "the app is working on the request"
    for i in busy:
        os.kill(i["pid"], signal.SIGKILL)
    t.join(10)
    assert out["r"][0] == 502
    assert request(srv.port, "cgi.test", "/cgi-bin/sleep?0")[0] == 200


def test_never_ready_503_after_start_timeout(srv):
    failures = srv.metric("kago_start_failures_total", app="never") or 0
    t0 = time.time()
    st, h, _ = request(srv.port, "never.test")
    took = time.time() - t0
    assert st == 503 and h.get("retry-after") and 0.9 <= took < 3, (st, took)
    assert wait_for(lambda: srv.instances("never") == [], 5)
    assert srv.metric("kago_start_failures_total", app="never") >= failures + 1
    assert "never became ready" in srv.stderr()


def test_upload_100mb_flat_memory(srv):
    size = 100 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    s.sendall(f"POST /cgi-bin/count HTTP/1.1\r\nHost: cgi.test\r\nContent-Length: {size}\r\n"
              "Connection: close\r\n\r\n".encode())
    before = srv.rss_kb()
    chunk = b"x" * (1 << 20)
    peak = before
    for i in range(100):
        s.sendall(chunk)
        if i % 10 == 0:
            peak = max(peak, srv.rss_kb())
    st, _, body = read_response(s)
    s.close()
    assert st == 200 and body.strip() == str(size).encode()
    assert peak - before < 16 * 1024, f"proxy RSS grew {peak - before} KiB during a 100 MB upload"


def test_long_download_and_upgrade_survive_expiry(srv):
    # A download read slowly (backpressure all the way into the instance) and an upgraded stream.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: mortal.test\r\n\r\n")
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    ws = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    ws.sendall(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    st, h, _ = read_response(ws)
    assert st == 101 and h["upgrade"] == "websocket"
    ws.sendall(b"ping-1\n")
    assert ws.recv(100) == b"ping-1\n"
    # both lifetimes (2 s) pass while the streams are open: the instances drain but keep serving them
    assert wait_for(lambda: srv.instances("mortal", ("draining",)), 5)
    assert wait_for(lambda: srv.instances("ws", ("draining",)), 5)
    # new requests go to the new instance, started before the old one drained: no cold start to wait for
    st, h, _ = request(srv.port, "mortal.test")
    assert st == 200 and "x-kago-cold-start" not in h, h
    ws.sendall(b"ping-2\n")
    assert ws.recv(100) == b"ping-2\n"
    got = len(first.split(b"\r\n\r\n", 1)[1])
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += len(b)
        if got >= 32 * 1024 * 1024:
            break
    s.close()
    assert got == 32 * 1024 * 1024
    ws.close()
    assert wait_for(lambda: not srv.instances("ws", ("draining",)), 5), "closing the stream ends the drain"


def test_an_instance_at_its_lifetime_is_replaced_before_it_goes():
    # an app that takes 1 s to boot, lifetime 2 s, under steady traffic: the old instance was drained before
    # its replacement existed, so every request at each lifetime waited a whole cold start. Now the
    # replacement starts first and the old one serves until it is ready.
    boot = "sleep 1; mkdir -p /w && echo up > /w/index.html && exec /usr/sbin/httpd -f -p 8080 -h /w"
    s = Server(app("slowboot", ["slowboot.test"], boot, lifetime="2s", stop_grace="2s"))
    try:
        assert request(s.port, "slowboot.test")[0] == 200  # (the first start)
        times, end = [], time.monotonic() + 6
        while time.monotonic() < end:
            t = time.monotonic()
            st, _, body = request(s.port, "slowboot.test")
            assert (st, body) == (200, b"up\n")
            times.append(time.monotonic() - t)
            time.sleep(0.05)
        assert max(times) < 0.5, f"slowest request {max(times):.2f} s: it waited for a start"
        assert s.metric("kago_cold_starts_total", app="slowboot") >= 3, "lifetimes passed"
    finally:
        assert s.stop() == 0, s.stderr()


def test_requests_held_for_an_app_a_reload_renames_or_removes_are_routed_again():
    # held while "old" starts; a reload renames it (same host): they were 503 for a host still served,
    # now the renamed app answers them. Held by "fresh", which a reload removes: 404, as for any unknown host.
    boot = "sleep 1.5; mkdir -p /w && echo {} > /w/index.html && exec /usr/sbin/httpd -f -p 8080 -h /w"
    s = Server(app("old", ["held.test"], boot.format("old"), stop_grace="1s"))

    def held_then_reload(holder, apps):
        out = []
        ts = [threading.Thread(target=lambda: out.append(request(s.port, "held.test", timeout=20)))
              for _ in range(3)]
        for t in ts:
            t.start()
        assert wait_for(lambda: (s.ps().get(holder) or {}).get("pending") == 3, 5), s.ps()
        s.write_config(apps)
        s.proc.send_signal(signal.SIGHUP)
        for t in ts:
            t.join(20)
        return sorted((st, body) for st, _, body in out)

    try:
        got = held_then_reload("old", app("new", ["held.test"], boot.format("new"), stop_grace="1s"))
        assert got == [(200, b"new\n")] * 3, got
        s.write_config(app("fresh", ["held.test"], boot.format("fresh"), stop_grace="1s"))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "fresh" in s.ps(), 5)
        got = held_then_reload("fresh", app("other", ["other.test"], boot.format("x"), stop_grace="1s"))
        assert [st for st, _ in got] == [404] * 3, got
    finally:
        assert s.stop() == 0, s.stderr()


def test_reload_adds_and_removes_apps_without_dropping_requests():
    s = Server(app("cgi", ["cgi.test"], CGI, stop_grace="1s"))
    try:
        assert request(s.port, "new.test")[0] == 404
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", request(s.port, "cgi.test", "/cgi-bin/sleep?2")))
        t.start()
        time.sleep(0.5)
        s.write_config(app("cgi", ["cgi.test"], CGI, stop_grace="1s") + app("new", ["new.test"], SMALL, stop_grace="1s"))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: request(s.port, "new.test")[0] == 200, 5)
        s.write_config(app("cgi", ["cgi.test"], CGI, stop_grace="1s"))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: request(s.port, "new.test")[0] == 404, 5)
        t.join(10)
        assert out["r"][0] == 200 and out["r"][2].startswith(b"slept")
        s.write_config('Kago.app "broken" do |a|\n  a.portt 1\nend\n')
        s.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert request(s.port, "cgi.test", "/cgi-bin/sleep?0")[0] == 200, "a bad config keeps the running one"
        assert "reload failed" in s.stderr()
        assert wait_for(lambda: s.ps().get("new") is None, 5), "the removed app is gone once drained"
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []


def many_apps(n, rootfs):
    """n apps made by a loop in one Kagofile (each its own host, none started)."""
    return (f'{n}.times do |i|\n  Kago.app "gen#{{i}}" do |a|\n    a.hosts "gen#{{i}}.test"\n'
            f'    a.container do |c|\n      c.rootfs "{rootfs}"\n      c.command "/usr/sbin/httpd", "-f"\n'
            f'    end\n    a.port 8080\n  end\nend\n')


def test_a_reload_of_thousands_of_apps_keeps_serving_meanwhile():
    """The Kagofiles are evaluated off the event loop: while a reload of thousands of apps runs, the running
    apps and /healthz still answer; POST /reload answers once the new apps route, and a second reload asked
    meanwhile runs after it and answers too."""
    from serve_util import ROOTFS, admin_request
    base = app("small", ["small.test"], SMALL, stop_grace="1s")
    s = Server(base)
    try:
        assert request(s.port, "small.test")[0] == 200
        s.write_config(base + many_apps(4000, ROOTFS))
        out = {}
        posts = [threading.Thread(target=lambda k=k: out.setdefault(k, admin_request(
            s.admin, s.root, "/reload", method="POST", timeout=120))) for k in (1, 2)]
        posts[0].start()
        served = 0
        while posts[0].is_alive():
            ok = request(s.port, "small.test", timeout=60)[0] == 200
            served += ok and posts[0].is_alive()  # (answered before the reload was)
            if served == 1 and not posts[1].is_alive() and not out.get(2):
                posts[1].start()  # (asked while the first one runs)
        for t in posts:
            if t.is_alive() or t.ident:
                t.join(120)
        assert out[1][0] == 200 and "reloaded" in out[1][2], out[1]
        assert out[2][0] == 200 and "reloaded" in out[2][2], out[2]
        assert served >= 3, f"requests were served while the reload ran ({served})"
        assert "gen3999" in s.ps(), "the new apps are there once POST /reload answered"
        assert s.stderr().count("reloaded") == 2, s.stderr()
        s.write_config(base + 'Kago.app "bad" do |a|\n  a.portt 1\nend\n')
        st, _, body = admin_request(s.admin, s.root, "/reload", method="POST")
        assert st == 500 and "reload failed" in body and "portt" in body, body
        assert "gen1" in s.ps() and request(s.port, "small.test")[0] == 200, "a failed reload keeps the apps"
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []


def test_ps_of_thousands_of_apps_comes_whole_in_slices():
    """GET /ps is written in slices (serve answers other requests in between): at 3,000 apps, several
    slices of 128 KiB, the JSON comes whole, every app in it, and `kago ps` reads it."""
    from serve_util import ROOTFS, admin_request
    s = Server(app("small", ["small.test"], SMALL, stop_grace="1s") + many_apps(3000, ROOTFS))
    try:
        assert request(s.port, "small.test")[0] == 200
        st, _, body = admin_request(s.admin, s.root, "/ps")
        assert st == 200 and len(body) > 3 * 128 * 1024, (st, len(body))
        apps = {a["name"]: a for a in json.loads(body)["apps"]}
        assert len(apps) == 3001 and all(f"gen{i}" in apps for i in range(3000))
        assert apps["small"]["instances"][0]["state"] == "ready", apps["small"]
        out = subprocess.run([KAGO, "ps", "--admin", f"127.0.0.1:{s.admin}", "--root", s.root],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and len(out.stdout.splitlines()) == 3002, out.stderr
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []


def test_reload_with_a_changed_container_replaces_its_instances():
    """A deploy: the app's container changes in its Kagofile. After SIGHUP the ready instance of the old
    container finishes what it serves and goes; the next request gets the new container."""
    v1 = CGI.replace("echo slept", "echo v1 slept")
    v2 = CGI.replace("echo slept", "echo v2 slept")
    policy = dict(stop_grace="5s", lifetime="10m", idle_timeout="10m")
    s = Server(app("cgi", ["cgi.test"], v1, **policy))
    try:
        assert request(s.port, "cgi.test", "/cgi-bin/sleep?0")[2].startswith(b"v1 ")
        [old] = s.instances("cgi")
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", request(s.port, "cgi.test", "/cgi-bin/sleep?2")))
        t.start()
        assert wait_for(lambda: cgi_sleeping(s, old["name"]), 3)
        s.write_config(app("cgi", ["cgi.test"], v2, **policy))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "its container changed" in s.stderr(), 5), s.stderr()
        st, _, body = request(s.port, "cgi.test", "/cgi-bin/sleep?0")
        assert st == 200 and body.startswith(b"v2 "), body
        t.join(10)
        assert out["r"][0] == 200 and out["r"][2].startswith(b"v1 "), "the request in flight finished on v1"
        assert wait_for(lambda: old["name"] not in [i["name"] for i in s.instances("cgi")], 10)
        # a reload that changes only the policy keeps the instance
        [new] = s.instances("cgi")
        s.write_config(app("cgi", ["cgi.test"], v2, **{**policy, "max_instances": 2}))
        s.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert [i["name"] for i in s.instances("cgi")] == [new["name"]]
        assert s.stderr().count("its container changed") == 1
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []

def test_header_and_keepalive_timeouts():
    s = Server(app("t", ["t.test"], SMALL, stop_grace="1s"), ("--header-timeout", "1s", "--keepalive-timeout", "2s"))
    try:
        # warm the instance on its own connection (see test_cold_start_connection_closes for why)
        assert request(s.port, "t.test")[0] == 200
        # an incomplete head: 408 once the header timeout passes, then the connection closes
        t0 = time.time()
        out = raw(s.port, b"GET / HTTP/1.1\r\nHost: t.test\r\n")
        assert out.startswith(b"HTTP/1.1 408 ") and 0.8 < time.time() - t0 < 5, (out[:60], time.time() - t0)
        # a head in two writes within the timeout is answered; the idle keep-alive connection then
        # stays open past the header timeout and is closed, unanswered, after the keep-alive timeout
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"GET / HTTP/1.1\r\nHo")
        time.sleep(0.3)
        c.sendall(b"st: t.test\r\n\r\n")
        st, _, body = read_response(c)
        assert st == 200 and body == b"hi\n"
        t0 = time.time()
        assert c.recv(1) == b"" and 1.8 < time.time() - t0 < 6, time.time() - t0
        c.close()
        # a request that starts on a reused connection gets the header timeout again
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"GET / HTTP/1.1\r\nHost: t.test\r\n\r\n")
        assert read_response(c)[0] == 200
        c.sendall(b"GET / HTTP/1.1\r\n")
        t0 = time.time()
        st, _, _ = read_response(c)
        assert st == 408 and 0.8 < time.time() - t0 < 1.9, (st, time.time() - t0)
        c.close()
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []


# The --init PID 1 of an instance once kept a copy of every fd kago had open (the client connection
# that caused the cold start among them): kago closed it, the client never saw it close.
def test_cold_start_connection_closes():
    s = Server(app("t", ["t.test"], SMALL, stop_grace="1s"), ("--keepalive-timeout", "1s"))
    try:
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nHost: t.test\r\n\r\n")
        assert read_response(c)[0] == 200
        try:
            assert c.recv(1) == b"", "kago closes the idle keep-alive connection after 1 s"
        except socket.timeout:
            pytest.fail("no EOF 5 s after kago closed the idle connection")
        finally:
            c.close()
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []


def test_request_right_after_a_kill_is_not_lost():
    """The request after an instance was killed may reach it while it is going away (its listener still
    completes handshakes, then resets them unread): a GET is sent again, never answered 502."""
    # max_backoff 1s: killing instances soon after they became ready, again and again, is a crash loop
    # (the app backs off: test_serve_backoff.py); this test is about the request that meets the kill
    s = Server(app("cgi", ["cgi.test"], CGI, max_instances=3, concurrency=1, stop_grace="1s", max_backoff="1s"))
    try:
        for _ in range(5):
            assert wait_for(lambda: s.ps()["cgi"]["state"] != "backoff", 5), s.ps()["cgi"]
            assert request(s.port, "cgi.test", "/cgi-bin/sleep?0")[0] == 200
            out = {}
            t = threading.Thread(target=lambda: out.setdefault("r", request(s.port, "cgi.test", "/cgi-bin/sleep?5")))
            t.start()
            busy = wait_for(lambda: [i for i in s.instances("cgi", ("ready",)) if i["in_flight"] > 0], 3)
            assert busy
            assert wait_for(lambda: all(cgi_sleeping(s, i["name"]) for i in busy), 3)
            for i in busy:
                os.kill(i["pid"], signal.SIGKILL)
            t.join(10)
            assert out["r"][0] == 502, "the request the app was working on gets 502"
            st, _, body = request(s.port, "cgi.test", "/cgi-bin/sleep?0")
            assert st == 200 or (st == 503 and b"after it became ready" in body), (st, body)
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []


def children(pid):
    out = []
    for f in glob.glob(f"/proc/{pid}/task/*/children"):
        out += [int(p) for p in open(f).read().split()]
    return out


def test_cold_start_does_not_stall_other_apps():
    """A container's own setup (mounts, security, exec) runs while kago serves other requests: with each
    setup slowed to 1.5 s (a test-only fault), a ready app still answers at once during a cold start."""
    s = Server(app("hot", ["hot.test"], SMALL, stop_grace="1s") +
               app("cold", ["cold.test"], SMALL, start_timeout="20s", stop_grace="1s"),
               env={"KAGO_FAULT": "slow-setup"})
    try:
        assert request(s.port, "hot.test")[0] == 200  # its own cold start takes the slow setup too
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", request(s.port, "cold.test")))
        t0 = time.monotonic()
        t.start()
        assert wait_for(lambda: s.instances("cold"), 5)
        times = []
        for _ in range(5):
            t1 = time.monotonic()
            assert request(s.port, "hot.test")[0] == 200
            times.append(time.monotonic() - t1)
        assert t.is_alive(), "the cold start was still in its setup while the hot app answered"
        assert max(times) < 0.5, times
        t.join(30)
        assert out["r"][0] == 200 and time.monotonic() - t0 >= 1.4
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []


def cpu_weight_file(srv, inst):
    """An instance's CPU weight as its cgroup holds it: (value, the value of weight 100)."""
    cg = srv.cgroup(inst)
    for path, scale in ((f"/sys/fs/cgroup/cpu/{cg}/cpu.shares", 1024), (f"/sys/fs/cgroup/{cg}/cpu.weight", 100)):
        if os.path.exists(path):
            with open(path) as f:
                return int(f.read()), scale
    return None, None


def test_a_start_yields_the_cpu_until_ready():
    """A starting instance runs at CPU weight 10 (so that a storm of starts weighs less on the instances
    that serve), and gets its app's weight (the default 100, or c.cgroup cpu_weight) once ready."""
    weighted = app("w", ["w.test"], SMALL, start_timeout="20s", stop_grace="1s").replace(
        "    c.init\n", "    c.init\n    c.cgroup cpu_weight: 50\n")
    s = Server(app("d", ["d.test"], SMALL, start_timeout="20s", stop_grace="1s") + weighted,
               env={"KAGO_FAULT": "slow-setup"})
    try:
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", request(s.port, "d.test")))
        t.start()
        assert wait_for(lambda: s.instances("d") and cpu_weight_file(s, s.instances("d")[0]["name"])[0], 5)
        name = s.instances("d")[0]["name"]
        v, scale = cpu_weight_file(s, name)
        assert t.is_alive() and v == scale * 10 // 100, (v, scale)
        t.join(30)
        assert out["r"][0] == 200
        assert cpu_weight_file(s, name) == (scale, scale)
        assert request(s.port, "w.test")[0] == 200
        v, scale = cpu_weight_file(s, s.instances("w")[0]["name"])
        assert v == scale // 2, (v, scale)
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []


def test_sigterm_during_a_container_setup_leaves_nothing():
    s = Server(app("cold", ["cold.test"], SMALL, start_timeout="20s", stop_grace="1s"),
               env={"KAGO_FAULT": "slow-setup"})
    out = {}

    def get():
        try:
            out["r"] = request(s.port, "cold.test")[0]
        except OSError as e:
            out["r"] = repr(e)
    t = threading.Thread(target=get)
    t.start()
    assert wait_for(lambda: s.instances("cold"), 5)
    kids = children(s.proc.pid)
    assert kids, "the instance's process is kago serve's child"
    t0 = time.monotonic()
    assert s.stop() == 0, s.stderr()
    assert time.monotonic() - t0 < 1.4, "the setup was cut short, not waited for"
    t.join(10)
    assert out["r"] == 503, out
    assert s.leftovers() == []
    assert not [p for p in kids if os.path.exists(f"/proc/{p}")]


def test_a_start_in_the_thread_pool_neither_stalls_nor_leaks():
    """While other starts are in flight, a start's kernel half (cgroup, limits, filter, state file) runs in
    serve's thread pool: slowed to 1.5 s there (a test-only fault), a ready app still answers at once
    meanwhile, and a SIGTERM that comes while it runs waits for it, then removes that instance too: its
    client gets 503 (the lone start beside it, done on the loop, 200), and nothing is left."""
    s = Server(app("hot", ["hot.test"], SMALL, stop_grace="1s") +
               app("c1", ["c1.test"], SMALL, start_timeout="20s", stop_grace="1s") +
               app("c2", ["c2.test"], SMALL, start_timeout="20s", stop_grace="1s"),
               env={"KAGO_FAULT": "slow-work"})
    assert request(s.port, "hot.test")[0] == 200  # a lone start: not in the pool, not slowed
    out = {}

    def get(host):
        try:
            out[host] = request(s.port, host)[0]
        except OSError as e:
            out[host] = repr(e)
    ts = [threading.Thread(target=get, args=(h,)) for h in ("c1.test", "c2.test")]
    for t in ts:
        t.start()
    assert wait_for(lambda: 200 in out.values(), 5), out  # the lone one
    times = []
    for _ in range(3):
        t1 = time.monotonic()
        assert request(s.port, "hot.test")[0] == 200
        times.append(time.monotonic() - t1)
    assert max(times) < 0.5, times
    assert any(t.is_alive() for t in ts), "a start was still in the pool while the hot app answered"
    assert s.stop() == 0, s.stderr()
    for t in ts:
        t.join(10)
    assert sorted(out.values()) == [200, 503], out
    assert s.leftovers() == []


def test_starts_at_once_each_run_in_its_own_cgroup():
    """Starts in flight together (their kernel half in serve's thread pool, the child entering its cgroup
    itself rather than cloned into it on cgroup v2): each answers 200, and each instance's processes are
    in that instance's own cgroup, under every hierarchy (this test runs in the cgroup v2 guest too)."""
    names = [f"m{i}" for i in range(6)]
    s = Server("".join(app(n, [f"{n}.test"], SMALL, start_timeout="20s", stop_grace="1s") for n in names))
    try:
        out = statuses_at_once(s, names)
        assert out == {n: 200 for n in names}, out
        for n in names:
            (inst,) = s.instances(n)
            want = "/" + s.cgroup(inst["name"])
            with open(f"/proc/{inst['pid']}/cgroup") as f:
                lines = [ln.strip().split(":", 2) for ln in f if ln.strip()]
            v1 = {ctl: path for _, ctl, path in lines if set(ctl.split(",")) & {"cpu", "memory", "pids"}}
            paths = v1 or {ctl: path for _, ctl, path in lines if ctl == ""}  # (else cgroup v2)
            assert len(paths) == (3 if v1 else 1) and set(paths.values()) == {want}, (n, want, lines)
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []


def test_event_loops_run_above_what_serve_starts_in_a_storm():
    """--loop-priority (10 by default): while starts wait in the start queue (a storm), serve's event loops
    run 10 nice levels above serve's own, so that the storm does not keep them waiting for a CPU, and go
    back once the queue has been empty for a while (KAGO_SERVE_LOOP_CALM_MS, 2 s by default); a lone start
    does not raise them. What serve starts (the spawner, the instances) and the work it gives its thread
    pool stay at serve's own. --loop-priority 0 leaves every thread where it was."""
    names = ["n0", "n1", "n2", "n3"]
    for extra, loops, calm in (([], -10, "60000"), (["--loop-priority", "0"], 0, "60000"), ([], -10, "300")):
        s = Server("".join(app(n, [f"{n}.test"], SMALL, stop_grace="1s") for n in ["lone", *names]),
                   extra_args=["--threads", "2", "--max-starting", "1", *extra],
                   env={"KAGO_SERVE_LOOP_CALM_MS": calm})
        try:
            pid = s.proc.pid
            assert request(s.port, "lone.test")[0] == 200, s.stderr()
            time.sleep(0.1)  # (a tick)
            nices = thread_nices(pid)
            assert set(nices.values()) == {0}, (extra, "a lone start", nices)
            assert s.metric("kago_event_loops_raised") == 0
            out = statuses_at_once(s, names)  # one starts, three wait in the start queue
            assert out == {n: 200 for n in names}, (out, s.stderr())
            nices = thread_nices(pid)
            if calm == "300":  # the storm is over: back to serve's own
                deadline = time.monotonic() + 10
                while set(nices.values()) != {0} and time.monotonic() < deadline:
                    time.sleep(0.05)
                    nices = thread_nices(pid)
                assert set(nices.values()) == {0}, ("after the storm", nices)
                assert s.metric("kago_event_loops_raised") == 0
                continue
            assert s.metric("kago_event_loops_raised") == (1 if loops else 0)
            assert s.metric("kago_starts_waiting") == 0 and s.metric("kago_starts_in_flight") == 0
            assert nices[pid] == loops, (extra, nices)  # the first loop
            # the first loop and the two request loops; a pool thread that ran a start's work (starts at
            # once: all but the first go through the pool) at serve's own
            assert sum(1 for n in nices.values() if n == loops) >= 3, (extra, nices)
            assert sum(1 for n in nices.values() if n == 0) >= (1 if loops else len(nices)), (extra, nices)
            for n in names:
                (inst,) = s.instances(n)
                procs = [inst["pid"], *[int(c) for c in open(f"/proc/{inst['pid']}/task/{inst['pid']}/children")
                                        .read().split()]]
                assert [nice_of(p) for p in procs] == [0] * len(procs), (extra, n, procs)
            spawner = children_named(pid, "kago-spawner")  # (and a clone of it not yet exec'd)
            assert spawner and [nice_of(p) for p in spawner] == [0] * len(spawner), (extra, spawner)
        finally:
            assert s.stop() == 0, s.stderr()
            assert s.leftovers() == []
    for bad in ("-1", "40", "x"):
        p = subprocess.run([KAGO, "serve", "--config", "/nonexistent", "--loop-priority", bad], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2 and f'--loop-priority: "{bad}" is not a number from 0 to 39' in p.stderr, p.stderr


def test_loops_that_may_not_rise_stay_and_serve_says_so_as_it_starts():
    """Without CAP_SYS_NICE (as root in a container that lacks it) --loop-priority cannot raise the loops:
    serve says so as it starts, not in the first storm, and serves that storm at its own priority."""
    names = ["m0", "m1", "m2"]
    s = Server("".join(app(n, [f"{n}.test"], SMALL, stop_grace="1s") for n in names),
               extra_args=["--threads", "2", "--max-starting", "1"],
               wrap=["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", "--"])
    try:
        pid = s.proc.pid
        assert "event loops stay at nice 0 (--loop-priority): setpriority -10: Permission denied" in s.stderr()
        assert statuses_at_once(s, names) == {n: 200 for n in names}, s.stderr()
        nices = thread_nices(pid)
        assert set(nices.values()) == {0}, nices
        assert s.metric("kago_event_loops_raised") == 0
        assert s.stderr().count("event loops stay at nice") == 1, s.stderr()
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []


def test_sigterm_repeated_through_a_shutdown_is_ignored():
    """A supervisor that sends SIGTERM again and again (or a user's second ^C) does not kill serve half way
    through its shutdown: it still removes every instance and exits 0."""
    s = Server(app("a", ["a.test"], SMALL, stop_grace="1s") + app("b", ["b.test"], SMALL, stop_grace="1s"))
    assert request(s.port, "a.test")[0] == 200 and request(s.port, "b.test")[0] == 200
    sent = 0
    while s.proc.poll() is None and sent < 20000:
        try:
            os.kill(s.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            break
        sent += 1
        time.sleep(0.0005)
    assert s.proc.wait(30) == 0, (sent, s.stderr())
    assert sent > 1
    assert s.leftovers() == []


def test_limits_out_of_range_are_refused_not_stored(srv):
    # a value a start refuses (below 256K, or past 2^63 bytes, which wrapped to INT64_MIN) was stored into
    # the app although every live update failed: each later start failed, until a reload
    for mem in ("100K", "8388608T", "9223372036854775807"):
        code, _, body = admin_request(srv.admin, srv.root, f"/limits?app=idle&memory={mem}", method="POST")
        assert code == 400, (mem, code, body)
    assert request(srv.port, "idle.test")[0] == 200


def test_a_shared_directory_root_is_read_only_unless_the_app_says_otherwise(tmp_path):
    # an app's root directory with no overlay is every instance's (and every app's naming it): what one
    # wrote would stay for the next, as the host's root (a setuid-root file the host's users could run);
    # read-only then, as a.data keeps state; readonly: false keeps the old behaviour
    own = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", ROOTFS, str(own)], check=True)
    mark = f"kago-probe-{os.getpid()}-{time.time_ns()}"
    probe = (f"if touch /{mark} 2>/dev/null; then echo wrote; else echo refused; fi > /dev/shm/w && "
             "exec /usr/sbin/httpd -f -p 8080 -h /dev/shm")
    def one(name, rootfs, extra=""):
        return (f'Kago.app "{name}" do |a|\n  a.hosts "{name}.test"\n  a.container do |c|\n'
                f'    c.rootfs "{rootfs}"{extra}\n    c.command "/bin/sh", "-c", {json.dumps(probe)}\n  end\n'
                f'  a.port 8080\n  a.stop_grace "1s"\nend\n')
    s = Server(one("shared", ROOTFS) + one("mine", own, ", readonly: false"))
    try:
        st, _, body = request(s.port, "shared.test", "/w")
        assert st == 200 and body == b"refused\n", (st, body)
        assert not os.path.exists(os.path.join(ROOTFS, mark))
        assert request(s.port, "mine.test", "/w")[2] == b"wrote\n"
        assert os.path.exists(own / mark)
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []
