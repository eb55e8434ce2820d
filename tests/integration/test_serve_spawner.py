"""kago serve's spawner: a small process, started with serve, that clones every instance (CLONE_PARENT), so
that a start does not copy a serve grown large. The instances are still serve's children; the spawner
stays small; killed, it is replaced and the next start works; it ends with serve. Needs root, the busybox
rootfs and build/kago."""
import os
import re
import shutil
import signal
import tempfile
import time

import pytest

from serve_util import KAGO, ROOTFS, Server, app, keepalive_upstream, request, wait_for, with_data

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

WEB = "mkdir -p /srv/www && echo hi > /srv/www/index.html && exec /usr/sbin/httpd -f -p 8080 -h /srv/www"


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def status(pid):
    """/proc/PID/status as a dict ({} when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except (FileNotFoundError, ProcessLookupError):  # (reaped between the open and the read: ESRCH)
        return {}


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def spawners(srv, want=1, timeout=10):
    """serve's live spawner processes: `kago __spawner SERVE_PID` but not an instance (an instance's --init
    is a copy of the spawner that did not exec) nor a warm sandbox (--warm, KAGO_SERVE_WARM: a copy in a pid
    namespace of its own), waited for until there are want of them."""
    deadline = time.time() + timeout
    while True:
        insts = {i["pid"] for a in srv.ps().values() for i in a["instances"]}
        found = [p for p in children(srv.proc.pid) if p not in insts and cmdline(p)[:3] == [
            "kago", "__spawner", str(srv.proc.pid)] and not gone(p, 0) and same_pidns(p)]
        if len(found) == want or time.time() > deadline:
            return found
        time.sleep(0.05)


def same_pidns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    except OSError:
        return False


def gone(pid, timeout=5):
    deadline = time.time() + timeout
    while True:
        st = status(pid)
        if not st or st["State"].startswith("Z"):
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.05)


def apps(n):
    return "".join(app(f"sp{i}", [f"sp{i}.test"], WEB, stop_grace="1s") for i in range(n))


def test_instances_are_serves_children_and_the_spawner_stays_small():
    # (without warm sandboxes: those it made add a pidfd and a socket each, and on cgroup v1 its own cgroups'
    # tasks files, held to go back to them after cloning a sandbox into the sandbox's cgroup)
    srv = Server(apps(6), extra_args=("--warm", "0"))
    try:
        [sp] = spawners(srv)
        assert request(srv.port, "sp0.test")[0] == 200  # (the spawner has made the shared sysfs by now)
        # only its socket to serve beside stdio, and what the shared sysfs needs (its mount namespace and network
        # namespace, the spawner's own mount namespace and directory to come back to): a clone from it copies
        # no descriptor table worth the name
        fds = {int(f): os.readlink(f"/proc/{sp}/fd/{f}") for f in os.listdir(f"/proc/{sp}/fd")}
        assert sorted(fds)[:4] == [0, 1, 2, 3] and fds[3].startswith("socket:"), fds
        extra = sorted(re.sub(r"\[\d+\]", "", fds[f]) for f in sorted(fds)[4:])
        assert extra == sorted(["mnt:", "mnt:", "net:", os.readlink(f"/proc/{sp}/cwd")]), fds
        rss0 = int(status(sp)["VmRSS"].split()[0])  # (after a first start: its buffers touched once)
        for i in range(1, 6):
            assert request(srv.port, f"sp{i}.test")[0] == 200
        pids = [i["pid"] for a in srv.ps().values() for i in a["instances"] if i["state"] == "ready"]
        assert len(pids) == 6
        for p in pids:  # cloned by the spawner, parented to serve: serve reaps and watches them as before
            assert int(status(p)["PPid"]) == srv.proc.pid, p
        assert children(sp) == [], "the spawner keeps no children of its own"
        rss1 = int(status(sp)["VmRSS"].split()[0])
        assert rss1 <= rss0 + 2048, f"the spawner grew from {rss0} to {rss1} kB over 5 starts"
        assert rss1 < 32 * 1024, f"the spawner's RSS is {rss1} kB"
        assert rss1 < int(status(srv.proc.pid)["VmRSS"].split()[0]), "the spawner is smaller than serve"
    finally:
        assert srv.stop() == 0
    assert gone(sp), "the spawner outlived serve's SIGTERM"
    assert srv.leftovers() == []


def test_a_killed_spawner_is_replaced_and_the_next_start_works():
    srv = Server(apps(2))
    try:
        [sp] = spawners(srv)
        assert request(srv.port, "sp0.test")[0] == 200  # (the spawner has made the shared sysfs by now)
        assert request(srv.port, "sp0.test")[0] == 200
        os.kill(sp, signal.SIGKILL)
        assert gone(sp)
        assert request(srv.port, "sp1.test")[0] == 200
        [sp2] = spawners(srv)
        assert sp2 != sp
        [inst] = [i for i in srv.ps()["sp1"]["instances"] if i["state"] == "ready"]
        assert int(status(inst["pid"])["PPid"]) == srv.proc.pid
        assert f"the spawner (pid {sp}) has exited: restarted as pid {sp2}" in srv.stderr()
    finally:
        assert srv.stop() == 0
    assert gone(sp2)
    assert srv.leftovers() == []


def test_a_spawner_dying_before_it_answers_fails_that_start_and_leaves_nothing():
    """serve does not wait for the spawner's answer (each clone has a socket of its own for it): a spawner
    that dies before it answers ends that start with why, serve goes on serving, nothing is left."""
    srv = Server(apps(2), extra_args=("--warm", "0"), env={"KAGO_FAULT": "spawner-die"})  # (a clone, not a sandbox)
    try:
        st, _, body = request(srv.port, "sp0.test")
        assert st in (502, 503), (st, body)
        assert wait_for(lambda: "the spawner died before it answered" in srv.stderr(), 10), srv.stderr()[-2000:]
        assert srv.admin_get("/healthz")
        assert not srv.instances("sp0", states=("ready", "starting"))
    finally:
        assert srv.stop() == 0, srv.stderr()
    assert srv.leftovers() == []


def test_a_killed_serve_takes_its_spawner_along():
    srv = Server(apps(1))
    [sp] = spawners(srv)
    srv.proc.kill()
    srv.proc.wait()
    assert gone(sp), "the spawner outlived a serve killed with SIGKILL"
    shutil.rmtree(srv.tmp)  # (no instance ran: only serve's lock and token, which a SIGKILL leaves)


def test_spawner_off_clones_from_serve():
    srv = Server(apps(1), env={"KAGO_SERVE_SPAWNER": "off"})
    try:
        assert spawners(srv, want=0, timeout=1) == []
        assert request(srv.port, "sp0.test")[0] == 200
        [inst] = [i for i in srv.ps()["sp0"]["instances"] if i["state"] == "ready"]
        assert int(status(inst["pid"])["PPid"]) == srv.proc.pid
    finally:
        assert srv.stop() == 0
    assert srv.leftovers() == []


def links(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


def established(pid, port=8080):
    """Established connections to the app's port, as its network namespace's /proc/net/tcp lists them."""
    with open(f"/proc/{pid}/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(r[3] == "01" and r[1].endswith(f":{port:04X}") for r in rows)


def test_a_quiet_instance_costs_serve_three_descriptors():
    """At thousands of instances serve's open files limit is the bound: a running instance holds its pidfd and
    its two log FIFOs; no namespace fd (its network namespace is entered through the pidfd), and its
    keep-alive upstream connection is closed once idle for 10 s (the next request connects again)."""
    bindir = keepalive_upstream(tempfile.mkdtemp(prefix="kago-test-upstream-"))
    srv = Server(with_data(app("ka", ["ka.test"], "exec /opt/upstream 8080", stop_grace="1s"), bindir, "/opt"))
    try:
        assert request(srv.port, "ka.test")[0] == 200
        [inst] = [i for i in srv.ps()["ka"]["instances"] if i["state"] == "ready"]
        held = links(srv.proc.pid)
        host = os.readlink("/proc/self/ns/net")  # (serve holds the host's, to come back to it)
        # (and, once per spawner, the network namespace of the sysfs instances share: not the instance's)
        others = [x for x in held if x.startswith("net:") and x != host]
        assert len(others) <= 1 and os.readlink(f"/proc/{inst['pid']}/ns/net") not in others, held
        assert sum(x == "anon_inode:[pidfd]" for x in held) >= 1, held
        assert sum(inst["name"] in x and x.endswith((".stdout", ".stderr")) for x in held) == 2, held
        # its descriptor table is made large at start, while serve has one thread: grown later, in a process
        # of several threads, each doubling waits for an RCU grace period (8-20 ms on a loop, traced)
        fdsize = int(status(srv.proc.pid)["FDSize"])
        soft = [l.split()[3] for l in open(f"/proc/{srv.proc.pid}/limits") if l.startswith("Max open files")][0]
        assert fdsize >= min(32768, int(soft)), (fdsize, soft)
        t0 = time.time()
        assert established(inst["pid"]) == 1, "serve keeps its upstream connection after the response"
        assert wait_for(lambda: established(inst["pid"]) == 0, 16), "the idle upstream connection was not closed"
        assert time.time() - t0 >= 8, "closed before it idled 10 s"
        assert request(srv.port, "ka.test")[0] == 200, "a new upstream connection after the idle close"
    finally:
        assert srv.stop() == 0
        shutil.rmtree(bindir)
    assert srv.leftovers() == []
