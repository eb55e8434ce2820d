"""kago serve's CRIU tier (a.checkpoint :after_ready or :at_listen): the first instance of a slow-starting
app is imaged (once ready, or the moment it listens), later starts restore the image, a restore that fails falls back to a cold start, and SIGTERM
leaves nothing (no image, cgroup or state). Real server, real containers, real criu.

CRIU works only where `criu check` passes: run the guest part with
    cp build/kago build/kago-guest; KAGO_SERVE_BIN=$PWD/build/kago-guest tests/vm/run --share /var/lib/kago:ro -- \
        /usr/bin/python3 -m pytest -q -s tests/integration/test_serve_criu.py
(tests/vm/run passes KAGO_* variables into the guest). Where criu is unusable (this host's 6.18 kernel
breaks criu 3.17) the app must still be served by cold starts, and serve's log says why."""
import os
import signal
import time

import pytest

import serve_util
from conftest import wait_for
from serve_util import ROOTFS, STATIC, Server, app, nice_of, proc_stat, request, statuses_at_once
from test_criu import CRIU_OK, CRIU_WHY

if os.environ.get("KAGO_SERVE_BIN"):
    serve_util.KAGO = os.environ["KAGO_SERVE_BIN"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(serve_util.KAGO), reason=f"{serve_util.KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

# A slow starter: it "loads data" for 2 s before it listens. KAGO_SERVE_CRIU_LOAD=N adds N shell loop
# rounds of CPU work: under TCG emulation CPU work is slowed many times over and a sleep is not, so a
# CPU-bound start compares with a restore (criu's own CPU work) on equal terms.
LOAD = int(os.environ.get("KAGO_SERVE_CRIU_LOAD", "0"))
SLOW = (f"i=0; while [ $i -lt {LOAD} ]; do i=$((i+1)); done; "
        "sleep 2; mkdir -p /srv/www && echo slow-but-here > /srv/www/index.html && "
        "exec /usr/sbin/httpd -f -p 8080 -h /srv/www")


def criu_app(moment="after_ready", **policy):
    # Without c.init: kago's init runs the kago binary from the host, which CRIU cannot dump
    # ("Can't lookup mount for fd=-3 path=.../kago": its exe is outside the container's mounts).
    block = app("slow", ["slow.test"], SLOW, init=False, **policy)
    return block[: block.rindex("end")] + f"  a.checkpoint :{moment}\nend\n"


def timed_get(srv):
    t0 = time.monotonic()
    st, h, body = request(srv.port, "slow.test", timeout=120)
    return st, h, body, time.monotonic() - t0


def starts(srv, tier):
    return srv.metric("kago_cold_start_seconds_count", app="slow", tier=tier)


def zombies(pid):
    """serve's zombie children: adopted processes (detached instances' shims, orphans after restores)
    that its SIGCHLD reaper should have reaped."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for child in f.read().split():
                try:
                    if proc_stat(f"/proc/{child}/stat")[0] == "Z":
                        found.append(int(child))
                except FileNotFoundError:
                    pass
    return found


def stop_clean(srv):
    assert srv.stop(timeout=120) == 0, srv.stderr()
    assert srv.leftovers() == [], srv.stderr()
    assert not os.path.exists(os.path.join(srv.root, "images")), srv.stderr()


@pytest.mark.skipif(CRIU_OK, reason="criu works here: the cold-start fallback for an unusable criu cannot be shown")
@pytest.mark.parametrize("moment", ["after_ready", "at_listen"])
def test_unusable_criu_means_cold_starts_and_says_why(moment):
    srv = Server(criu_app(moment, idle_timeout="1s", stop_grace="1s"))
    try:
        st, h, body, _ = timed_get(srv)
        assert (st, body) == (200, b"slow-but-here\n"), srv.stderr()
        assert "x-kago-cold-start" in h
        log = srv.stderr()
        why = [l for l in log.splitlines() if "CRIU is unusable here" in l]
        assert len(why) == 1, log
        assert "cold starts" in why[0] and "criu" in why[0].split(":", 2)[-1], why[0]
        assert starts(srv, "cold") == 1 and starts(srv, "restore") == 0
        assert srv.metric("kago_checkpoints_total", app="slow") == 0
        assert srv.metric("kago_checkpoint_failures_total", app="slow") == 0
    finally:
        stop_clean(srv)


@pytest.mark.skipif(not CRIU_OK, reason=f"criu is unusable on this host: {CRIU_WHY} (run in the guest: "
                    "tests/vm/run --share /var/lib/kago:ro -- /usr/bin/python3 -m pytest -q "
                    "tests/integration/test_serve_criu.py)")
def test_checkpoint_then_restore_then_fallback():
    # (two more apps, started at once with --max-starting 1 first: a storm raises the event loops, and with
    # KAGO_SERVE_LOOP_CALM_MS they stay raised through the test)
    others = "".join(app(n, [f"{n}.test"], STATIC, stop_grace="1s") for n in ("o1", "o2"))
    srv = Server(criu_app(idle_timeout="1s", start_timeout="120s", stop_grace="1s") + others,
                 extra_args=["--max-starting", "1"], env={"KAGO_SERVE_LOOP_CALM_MS": "600000"})
    try:
        assert "CRIU works here" in srv.stderr()
        assert statuses_at_once(srv, ["o1", "o2"]) == {"o1": 200, "o2": 200}
        assert wait_for(lambda: nice_of(srv.proc.pid) == -10, 5), nice_of(srv.proc.pid)
        # 1. cold start, then the ready instance is imaged off the request path
        st, h, body, cold_s = timed_get(srv)
        assert (st, body) == (200, b"slow-but-here\n"), srv.stderr()
        cold_h = h.get("x-kago-cold-start")
        assert wait_for(lambda: srv.metric("kago_checkpoints_total", app="slow") == 1, 180), srv.stderr()
        image = os.path.join(srv.root, "images", "slow", "0")
        assert os.path.isfile(os.path.join(image, "kago.json"))
        # a detached instance (forked with its shim from the first loop, raised by the storm) runs at serve's
        # own priority, not the loop's
        assert nice_of(srv.proc.pid) == -10 and nice_of(srv.instances("slow")[0]["pid"]) == 0
        # 2. idle stops it; the next request is served by a restore
        assert wait_for(lambda: not srv.instances("slow"), 60), srv.ps()
        st, h, body, restore_s = timed_get(srv)
        assert (st, body) == (200, b"slow-but-here\n"), srv.stderr()
        assert starts(srv, "restore") == 1 and starts(srv, "cold") == 1, srv.metrics()
        assert [i["tier"] for i in srv.instances("slow")] == ["restore"]
        assert h["x-kago-cold-start"].endswith("ms restore"), h
        assert nice_of(srv.instances("slow")[0]["pid"]) == 0  # (criu runs from serve's pool, at its own)
        print(f"\nfirst byte through serve (load {LOAD}): cold {cold_s:.3f} s "
              f"(held {cold_h}), restore {restore_s:.3f} s (held {h.get('x-kago-cold-start')}), "
              f"cold/restore = {cold_s / restore_s:.2f}x (TCG guest: compare ratios only)")
        # 3. a corrupt image: the restore fails, a cold start serves the request
        assert wait_for(lambda: not srv.instances("slow"), 60), srv.ps()
        with open(os.path.join(image, "pstree.img"), "wb") as f:
            f.write(b"\x00garbage, not a CRIU image\xff" * 8)
        st, h, body, _ = timed_get(srv)
        assert (st, body) == (200, b"slow-but-here\n"), srv.stderr()
        assert srv.metric("kago_restore_failures_total", app="slow") == 1
        assert starts(srv, "cold") == 2
        assert "restore failed, cold start instead: " in srv.stderr()
        # two more failures in a row: the image is given up, the next start is cold without a try
        for n in (2, 3, 3):
            assert wait_for(lambda: not srv.instances("slow"), 60), srv.ps()
            assert timed_get(srv)[0] == 200, srv.stderr()
            assert srv.metric("kago_restore_failures_total", app="slow") == n
        assert starts(srv, "cold") == 5 and "3 restores failed in a row" in srv.stderr()
        # the shims of stopped detached instances (serve's children) were reaped, not left as zombies
        assert wait_for(lambda: not srv.instances("slow"), 60), srv.ps()
        assert wait_for(lambda: not zombies(srv.proc.pid), 5), zombies(srv.proc.pid)
        print(srv.stderr())
    finally:
        stop_clean(srv)


@pytest.mark.skipif(not CRIU_OK, reason=f"criu is unusable on this host: {CRIU_WHY} (runs in the guest)")
def test_checkpoint_at_listen_images_before_any_connection():
    srv = Server(criu_app("at_listen", idle_timeout="1s", start_timeout="120s", stop_grace="1s"))
    try:
        st, h, body, cold_s = timed_get(srv)
        assert (st, body) == (200, b"slow-but-here\n"), srv.stderr()
        # imaged the moment it listened, before the first request reached it: so before this answer
        assert srv.metric("kago_checkpoints_total", app="slow") == 1, srv.stderr()
        assert "at listen" in srv.stderr()
        assert h["x-kago-cold-start"].endswith("ms")
        assert wait_for(lambda: not srv.instances("slow"), 60), srv.ps()
        st, h, body, restore_s = timed_get(srv)
        assert (st, body) == (200, b"slow-but-here\n"), srv.stderr()
        assert h["x-kago-cold-start"].endswith("ms restore"), h
        assert starts(srv, "restore") == 1 and starts(srv, "cold") == 1, srv.metrics()
        print(f"\n:at_listen: cold {cold_s:.3f} s (with the dump), restore {restore_s:.3f} s")
    finally:
        stop_clean(srv)


@pytest.mark.skipif(not CRIU_OK, reason=f"criu is unusable on this host: {CRIU_WHY} (runs in the guest)")
def test_reload_with_a_changed_container_drops_the_image():
    """The image holds the old container: after a reload that changes it, starts are cold (and a new
    image is taken) until the new container's image exists; the old image goes."""
    srv = Server(criu_app(idle_timeout="1s", start_timeout="120s", stop_grace="1s"))
    try:
        assert timed_get(srv)[0] == 200, srv.stderr()
        assert wait_for(lambda: srv.metric("kago_checkpoints_total", app="slow") == 1, 180), srv.stderr()
        old_image = os.path.join(srv.root, "images", "slow", "0")
        assert os.path.isdir(old_image)
        srv.write_config(criu_app(idle_timeout="1s", start_timeout="120s", stop_grace="1s").replace(
            "slow-but-here", "slow-and-new"))
        srv.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "its container changed" in srv.stderr(), 10), srv.stderr()
        assert wait_for(lambda: not srv.instances("slow"), 60), srv.ps()
        st, h, body, _ = timed_get(srv)
        assert (st, body) == (200, b"slow-and-new\n"), srv.stderr()
        assert starts(srv, "restore") == 0 and starts(srv, "cold") == 2, srv.metrics()
        assert wait_for(lambda: not os.path.exists(old_image), 10), srv.stderr()
        assert wait_for(lambda: srv.metric("kago_checkpoints_total", app="slow") == 2, 180), srv.stderr()
        assert os.path.isdir(os.path.join(srv.root, "images", "slow", "1"))
    finally:
        stop_clean(srv)
