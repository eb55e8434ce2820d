"""kago serve's freeze tier end to end: idle instances frozen in their cgroup instead of stopped, a
request thaws one (no start), lifetime / idle for: / the host's frozen memory budget stop them.
Real server on loopback, real containers, real cgroup freezer. Needs root, the busybox rootfs and
build/kago."""
import os
import re
import subprocess
import time

import pytest

from conftest import wait_for
from serve_util import KAGO, ROOTFS, Server, app, cgroup_of, request, serving

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

PERIOD = 0.1  # the counter's tick (s)

# A counter held in a shell variable (process memory), published to a file every PERIOD; a CGI
# answers with its value and the counter loop's pid. A restart would begin again at 1.
COUNTER = r"""mkdir -p /srv/www/cgi-bin
printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$(cat /tmp/n) $(cat /tmp/loop.pid)"\n' > /srv/www/cgi-bin/n
chmod +x /srv/www/cgi-bin/n
sh -c 'echo $$ > /tmp/loop.pid; i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep %s; done' &
exec /usr/sbin/httpd -f -p 8080 -h /srv/www""" % PERIOD

# Holds about MB of memory in its cgroup (a tmpfs file in its writable layer), then serves.
def hog(mb):
    return (f"dd if=/dev/zero of=/hog bs=1M count={mb} 2>/dev/null; mkdir -p /srv/www && "
            "echo hog > /srv/www/index.html && exec /usr/sbin/httpd -f -p 8080 -h /srv/www")


def freezing_app(name, hosts, command, freeze_for="30s", **policy):
    block = app(name, hosts, command, **policy)
    return block[: block.rindex("end")] + f'  a.idle :freeze, for: "{freeze_for}"\nend\n'


def freezer_state(name):
    """The instance's cgroup freezer state as the kernel reports it (v1 or v2); its cgroup is the one its state
    names (kago/warm@... for a start that took a warm sandbox)."""
    cg = cgroup_of(name)
    for d in (f"/sys/fs/cgroup/freezer/{cg}", f"/sys/fs/cgroup/{cg}"):
        if os.path.exists(d + "/freezer.state"):
            return open(d + "/freezer.state").read().strip()
        if os.path.exists(d + "/cgroup.freeze"):
            return "FROZEN" if open(d + "/cgroup.freeze").read().strip() == "1" else "THAWED"
    return None


def counter(srv):
    # the counting loop writes its first value 0.1 s after the instance starts (much later under emulation):
    # a fresh instance may answer before that, with an empty count. The headers returned are the first
    # request's: the one that may have waited for a start or a thaw.
    first = None
    for _ in range(50):
        st, h, body = request(srv.port, "count.test", "/cgi-bin/n")
        assert st == 200, body
        first = first or h
        if len(body.split()) == 2:
            break
        time.sleep(0.1)
    n, pid = body.split()
    return int(n), int(pid), first


@pytest.fixture(scope="module")
def srv():
    # (SIGTERM at the end thaws and stops frozen instances too: nothing left behind)
    yield from serving(freezing_app("count", ["count.test"], COUNTER, idle_timeout="1s", stop_grace="2s")
                       + freezing_app("short", ["short.test"], hog(1), idle_timeout="300ms", freeze_for="1s",
                                      stop_grace="1s")
                       + freezing_app("mortal", ["mortal.test"], hog(1), idle_timeout="300ms", lifetime="2s",
                                      stop_grace="1s"))


def test_freeze_thaw_keeps_state(srv):
    n1, loop1, h = counter(srv)
    t1 = time.time()
    assert h["x-kago-cold-start"].endswith("ms")  # a start: the time alone
    [inst] = srv.instances("count")
    assert n1 < 20  # it just started
    # Idle 1 s: frozen, not stopped; the kernel says so.
    assert wait_for(lambda: srv.instances("count", ("frozen",)), 3), srv.ps()["count"]
    tf = time.time()
    assert freezer_state(inst["name"]) == "FROZEN"
    assert srv.metric("kago_instances", app="count", state="frozen") == 1
    ps = subprocess.run([KAGO, "--root", srv.root, "ps", "--admin", f"127.0.0.1:{srv.admin}"], capture_output=True, text=True)
    assert re.search(r"^count\s+" + re.escape(inst["name"]) + r"\s+frozen\s", ps.stdout, re.M), ps.stdout
    time.sleep(2)  # frozen: the counter must not move, the process must not be replaced
    cold, thaws = srv.metric("kago_cold_starts_total", app="count"), srv.metric("kago_thaws_total", app="count")

    n2, loop2, h = counter(srv)
    assert h["x-kago-cold-start"].endswith("ms thaw"), "no start: a thaw, and it is shown as one"
    assert loop2 == loop1, "the same counter process (not restarted)"
    assert n2 > n1, f"the counter continued from {n1}, got {n2}"
    ran = (tf - t1) / PERIOD + 5  # what it could count while not frozen (+ slack)
    assert n2 - n1 <= ran, f"{n2 - n1} ticks: it kept counting while frozen (at most {ran:.0f} expected)"
    [after] = srv.instances("count")
    assert after["name"] == inst["name"] and after["pid"] == inst["pid"] and after["state"] == "ready"
    assert freezer_state(inst["name"]) == "THAWED"
    assert srv.metric("kago_cold_starts_total", app="count") == cold
    assert srv.metric("kago_thaws_total", app="count") == thaws + 1
    assert srv.metric("kago_thaw_seconds_count", app="count") == thaws + 1
    # And it keeps counting after the thaw.
    time.sleep(5 * PERIOD)
    n3, _, _ = counter(srv)
    assert n3 > n2


def test_frozen_instance_serves_next_request(srv):
    st, _, body = request(srv.port, "short.test")
    assert st == 200 and body == b"hog\n"
    assert wait_for(lambda: srv.instances("short", ("frozen",)), 3)
    st, h, body = request(srv.port, "short.test")
    assert st == 200 and body == b"hog\n" and h["x-kago-cold-start"].endswith("ms thaw")
    # the request after it found the instance ready: it waited for nothing
    st, h, body = request(srv.port, "short.test")
    assert st == 200 and "x-kago-cold-start" not in h
    with open(srv.log) as f:
        assert re.search(r" cold=[0-9.]+ms:thaw$", f.read(), re.M)
    assert srv.metric("kago_cold_starts_total", app="short") == 1


def test_freeze_for_then_stopped(srv):
    request(srv.port, "short.test")
    assert wait_for(lambda: srv.instances("short", ("frozen",)), 3)
    # idle :freeze, for: "1s": then really stopped (thawed, SIGTERM, removed).
    assert wait_for(lambda: srv.instances("short", ("starting", "ready", "draining", "stopping", "frozen")) == [],
                    6), srv.ps()["short"]
    assert srv.metric("kago_frozen_expired_total", app="short") >= 1
    st, h, _ = request(srv.port, "short.test")
    assert st == 200 and "x-kago-cold-start" in h


def test_lifetime_applies_to_frozen(srv):
    request(srv.port, "mortal.test")
    assert wait_for(lambda: srv.instances("mortal", ("frozen",)), 3)
    # no freeze_for: the 2 s lifetime ends it while frozen
    assert wait_for(lambda: srv.instances("mortal", ("starting", "ready", "draining", "stopping", "frozen")) == [],
                    6), srv.ps()["mortal"]
    assert srv.metric("kago_frozen_expired_total", app="mortal") == 1


def test_memory_budget_stops_oldest_frozen():
    # Each instance holds ~24 MB; a 40 MB budget fits one frozen instance, not two.
    apps = "".join(freezing_app(n, [f"{n}.test"], hog(24), idle_timeout="500ms", freeze_for="5m", stop_grace="1s")
                   for n in ("old", "new"))
    s = Server(apps, extra_args=("--frozen-memory-budget", "40M"))
    try:
        assert request(s.port, "old.test")[0] == 200
        assert wait_for(lambda: s.instances("old", ("frozen",)), 3)
        [old] = s.ps()["old"]["instances"]
        assert old["frozen_memory"] >= 24 << 20, old
        assert s.metric("kago_frozen_memory_bytes") == old["frozen_memory"]
        assert request(s.port, "new.test")[0] == 200
        assert wait_for(lambda: s.instances("new", ("frozen",)), 3)
        # two frozen exceed the budget: the oldest (old) was stopped, the newest stays frozen
        assert wait_for(lambda: s.instances("old", ("starting", "ready", "draining", "stopping", "frozen")) == [],
                        5), s.ps()["old"]
        assert [i["state"] for i in s.instances("new", ("frozen", "ready", "draining", "stopping"))] == ["frozen"]
        assert s.metric("kago_frozen_budget_stops_total", app="old") == 1
        assert s.metric("kago_frozen_budget_stops_total", app="new") == 0
        assert s.metric("kago_frozen_memory_bytes") <= 40 << 20
        # the stopped one cold-starts on its next request, the frozen one thaws
        st, h, _ = request(s.port, "old.test")
        assert st == 200 and h["x-kago-cold-start"].endswith("ms")
        st, h, _ = request(s.port, "new.test")
        assert st == 200 and h["x-kago-cold-start"].endswith("ms thaw")
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []


def test_bad_budget_one_line_error():
    r = subprocess.run([KAGO, "serve", "--config", "/nonexistent", "--frozen-memory-budget", "lots"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--frozen-memory-budget" in lines[0] and "lots" in lines[0], r.stderr


def test_shutdown_thaws_frozen_then_sigterm():
    # stop_grace 20 s: an instance still frozen would only go at SIGKILL, 20 s after SIGTERM.
    s = Server(freezing_app("f", ["f.test"], hog(1), idle_timeout="300ms", stop_grace="20s"))
    try:
        assert request(s.port, "f.test")[0] == 200
        assert wait_for(lambda: s.instances("f", ("frozen",)), 3)
        [inst] = s.instances("f", ("frozen",))
        assert freezer_state(inst["name"]) == "FROZEN"
        t0 = time.time()
        assert s.stop() == 0, s.stderr()
        took = time.time() - t0
        assert took < 5, f"shutdown took {took:.1f} s: SIGTERM did not reach the frozen instance"
    finally:
        s.stop()
        assert s.leftovers() == []
        assert freezer_state(inst["name"]) is None
