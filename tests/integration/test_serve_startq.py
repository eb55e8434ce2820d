"""kago serve's start queue (--max-starting): a burst of cold starts across many apps has at most N
instances between their create and ready at any moment, the rest wait in order, and every request is
answered. Needs root, the busybox rootfs and build/kago."""
import glob
import os
import subprocess
import threading
import time

import pytest

from serve_util import KAGO, ROOTFS, Server, app, request

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

# listens only after 0.6 s: a start is in flight (cgroup made, not ready) for at least that long
SLOW = "sleep 0.6; mkdir -p /srv/www && echo hi > /srv/www/index.html && exec /usr/sbin/httpd -f -p 8080 -h /srv/www"
NAPPS, MAX = 8, 2


def cgroups_of(srv):
    """This serve's instance cgroups (one per instance whose create began), by instance name. (A warm
    sandbox's cgroup, --warm, is an instance's once a start took it: its state names it.)"""
    prefix = f"-{srv.proc.pid:x}-"
    names = {os.path.basename(d) for d in glob.glob("/sys/fs/cgroup/*/kago/*") + glob.glob("/sys/fs/cgroup/kago/*")
             if prefix in os.path.basename(d) and os.path.isdir(d)}
    owner = {srv.cgroup(i).split("/")[-1]: i for i in os.listdir(srv.root) if prefix in i}
    return {owner.get(n, n) for n in names if not n.startswith("warm@") or n in owner}


def test_burst_across_apps_is_started_max_starting_at_a_time():
    apps = "".join(app(f"sq{i}", [f"sq{i}.test"], SLOW, stop_grace="1s", start_timeout="60s") for i in range(NAPPS))
    srv = Server(apps, extra_args=("--max-starting", str(MAX)))
    try:
        results, done = {}, threading.Event()

        def one(i):
            try:
                results[i] = request(srv.port, f"sq{i}.test", timeout=60)[0]
            except Exception as e:  # noqa: BLE001 - recorded as a failure below
                results[i] = repr(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(NAPPS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        # In flight = a cgroup made and not ready. Read the cgroups first, then /ps: an instance that turns
        # ready in between is subtracted, one created in between is not counted, so this never overcounts.
        most = 0
        while any(t.is_alive() for t in threads):
            made = cgroups_of(srv)
            ready = {i["name"] for a in srv.ps().values() for i in a["instances"] if i["state"] == "ready"}
            most = max(most, len(made - ready))
            assert len(made - ready) <= MAX, f"{sorted(made - ready)} starting at once with --max-starting {MAX}"
            time.sleep(0.05)
        took = time.monotonic() - t0
        for t in threads:
            t.join()
        assert results == {i: 200 for i in range(NAPPS)}, results
        assert most >= 1, "no start was seen in flight"
        # NAPPS starts of >= 0.6 s each, MAX at a time
        assert took >= NAPPS / MAX * 0.6 - 0.1, f"{NAPPS} starts took {took:.2f} s: more than {MAX} ran at once"
        assert len(srv.instances("sq0", states=("ready",))) == 1
    finally:
        assert srv.stop() == 0, srv.stderr()
        assert srv.leftovers() == []


def test_stop_with_starts_still_queued_leaves_nothing():
    """SIGTERM while most of a burst still waits in the queue: the waiting ones are never made, the held
    requests are answered, serve exits 0 and nothing is left behind."""
    apps = "".join(app(f"sr{i}", [f"sr{i}.test"], SLOW, stop_grace="1s") for i in range(NAPPS))
    srv = Server(apps, extra_args=("--max-starting", "1"))
    results = {}

    def one(i):
        try:
            results[i] = request(srv.port, f"sr{i}.test", timeout=60)[0]
        except Exception as e:  # noqa: BLE001 - the connection may be closed by the stopping serve
            results[i] = repr(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(NAPPS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while not cgroups_of(srv) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.stop() == 0, srv.stderr()
    for t in threads:
        t.join(30)
    assert len(results) == NAPPS and not any(t.is_alive() for t in threads), results
    assert srv.leftovers() == []


def test_waiting_in_the_queue_is_not_a_failed_start():
    """start_timeout 2s, one start at a time, five apps of 0.6 s each: the last ones wait longer than their
    start_timeout in the queue. Their held requests get 503 then, but the wait is not the app's failure:
    no start failure is counted, no backoff, and every instance becomes ready."""
    N = 5
    apps = "".join(app(f"st{i}", [f"st{i}.test"], SLOW, stop_grace="1s", start_timeout="2s") for i in range(N))
    srv = Server(apps, extra_args=("--max-starting", "1"))
    try:
        results = {}

        def one(i):
            results[i] = request(srv.port, f"st{i}.test", timeout=30)[0]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
        # st0 first (its start under way), then the rest behind it in the queue: threads alone give no order
        threads[0].start()
        deadline = time.monotonic() + 10
        while not cgroups_of(srv) and time.monotonic() < deadline:
            time.sleep(0.01)
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join()
        assert results[0] == 200 and set(results.values()) <= {200, 503}, results
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(len(srv.instances(f"st{i}", states=("ready",))) for i in range(N)) < N:
            time.sleep(0.1)
        assert [len(srv.instances(f"st{i}", states=("ready",))) for i in range(N)] == [1] * N
        # (one app's series, zeros included: the full scrape leaves zeros out)
        failures = [srv.metric("kago_start_failures_total", app=f"st{i}") for i in range(N)]
        assert failures == [0] * N, failures
        assert all(request(srv.port, f"st{i}.test")[0] == 200 for i in range(N))
    finally:
        assert srv.stop() == 0, srv.stderr()
        assert srv.leftovers() == []


@pytest.mark.parametrize("bad", ["0", "-1", "x", "2x", ""])
def test_bad_max_starting_is_refused(tmp_path, bad):
    p = subprocess.run([KAGO, "--root", str(tmp_path / "root"), "serve", "--config", str(tmp_path),
                        "--max-starting", bad], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "--max-starting" in p.stderr and "not a number from 1 to 100000" in p.stderr, p.stderr
    assert not os.path.exists(tmp_path / "root")
