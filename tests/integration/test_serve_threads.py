"""kago serve --threads N: N event loops on threads of their own take TLS handshakes and hand each
connection to the request loop of the app its name routes to (test_serve_loops.py: the request loops), where
that app's one pool is. Real handshakes from Python's ssl module and curl, real containers behind, /metrics
read. Needs root."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from serve_util import KAGO, CGI, Server, free_port, request
from test_serve_adopt import cleanup, wait_for
from test_serve_tls import PKI, client_ctx, connect, get, tls_app

if not shutil.which("openssl"):
    pytest.skip("the openssl CLI is not installed (scripts/setup installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def pki():
    p = PKI()
    p.site = p.leaf("site", ["site.test", "cold.test"])
    yield p
    shutil.rmtree(p.dir, ignore_errors=True)


def start(pki, threads, *extra):
    tls = free_port()
    apps = (tls_app("site", ["site.test"], CGI, *pki.site) +
            tls_app("cold", ["cold.test"], CGI, *pki.site, max_instances=4, concurrency=100))
    s = Server(apps, extra_args=["--listen-tls", f"127.0.0.1:{tls}", "--threads", str(threads),
                                 "--tls-handshake-timeout", "1s", *extra])
    s.tls = tls
    return s


def finish(s):
    try:
        assert s.stop() == 0, s.stderr()[-2000:]
        assert not s.leftovers(), s.leftovers()
    finally:
        cleanup(s)


@pytest.fixture(scope="module")
def srv(pki):
    s = start(pki, 3)  # two handshake loops beside the first
    yield s
    finish(s)


def at_once(n, fn, timeout):
    """fn() in n threads at once; the errors they raised (repr), in no order."""
    errors = []

    def run():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 (returned to the test)
            errors.append(repr(e))

    ts = [threading.Thread(target=run) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    return errors


def one_request(port, host, pki, path="/cgi-bin/sleep?0"):
    s = connect(port, host, client_ctx(pki))
    try:
        return get(s, host, path, close=True)
    finally:
        s.close()


def test_handshake_loops_hand_connections_to_one_pool(srv, pki):
    """40 new TLS connections at once to a cold app: every loop's handshakes end in the app's one pool, which
    starts one instance for all of them (they are held together, as with one loop) and serves each."""
    assert srv.metric("kago_tls_handshake_loops") == 3
    assert "3 event loops serve requests (each app on one of them), 3 more take TLS handshakes" in srv.stderr(), \
        srv.stderr()
    results = []
    errors = at_once(40, lambda: results.append(one_request(srv.tls, "cold.test", pki, "/cgi-bin/sleep?0.2")), 60)
    assert not errors, errors[:3]
    assert [st for st, _, _ in results] == [200] * 40, [st for st, _, _ in results]
    assert all(body.startswith(b"slept ") for _, _, body in results)
    # concurrency 100: one instance took all 40 (the held requests of every loop waited for the same start)
    assert srv.metric("kago_cold_starts_total", app="cold") == 1, srv.ps()["cold"]
    hosts = {body.split()[1] for _, _, body in results}
    assert len(hosts) == 1, hosts
    ok = srv.metric("kago_tls_handshakes_total", result="ok")
    handed = srv.metric("kago_tls_handshakes_handed_total")
    assert ok >= 40 and 0 < handed <= ok, (ok, handed)


def test_many_connections_spread_over_the_loops(srv, pki):
    """Back-to-back connections from 8 clients: the handshake loops take part of them (an idle loop accepts),
    and every response is right, HTTP/1.1 with keep-alive and HTTP/2 alike."""
    before = srv.metric("kago_tls_handshakes_handed_total")

    def client():
        for _ in range(15):
            s = connect(srv.tls, "site.test", client_ctx(pki))
            try:
                for _ in range(3):  # keep-alive on a handed-over connection
                    st, _, body = get(s, "site.test", "/cgi-bin/sleep?0")
                    assert st == 200 and body.startswith(b"slept "), (st, body)
            finally:
                s.close()

    errors = at_once(8, client, 120)
    assert not errors, errors[:3]
    assert srv.metric("kago_tls_handshakes_handed_total") > before
    # HTTP/2 (ALPN h2) on connections whichever loop made their handshake: 3 streams on one connection each
    for _ in range(6):
        out = subprocess.run(
            ["curl", "-sS", "--http2", "--cacert", pki.root, "--resolve", f"site.test:{srv.tls}:127.0.0.1",
             "-w", "%{http_version} %{http_code}\n", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
             *[f"https://site.test:{srv.tls}/cgi-bin/sleep?0"] * 3],
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split("\n")[:3] == ["2 200"] * 3, out.stdout
    # each connection brought its client's address, whichever loop made its handshake (HTTP/1.1 and HTTP/2)
    assert wait_for(lambda: sum('"GET /cgi-bin/sleep?0"' in l for l in open(srv.log)) >= 8 * 15 * 3 + 6 * 3, 10)
    lines = [l for l in open(srv.log).read().splitlines() if "/cgi-bin/sleep" in l]
    assert all(l.split()[1] == "127.0.0.1" for l in lines), [l for l in lines if l.split()[1] != "127.0.0.1"][:3]


def test_stalled_handshakes_time_out_on_every_loop(srv, pki):
    """Half a ClientHello, then nothing: whichever loop took the connection closes it after
    --tls-handshake-timeout (1 s) and counts a failed handshake."""
    failed = srv.metric("kago_tls_handshakes_total", result="failed")
    socks = []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", srv.tls), timeout=10)
        s.sendall(b"\x16\x03\x01\x02\x00\x01")  # a record header and the start of a ClientHello
        socks.append(s)
    t0 = time.monotonic()
    for s in socks:
        while s.recv(100):  # (an alert may come before the close)
            pass
        s.close()
    took = time.monotonic() - t0
    assert 0.8 < took < 5, took
    assert wait_for(lambda: srv.metric("kago_tls_handshakes_total", result="failed") >= failed + 8, 5)
    # the loops go on
    st, _, body = one_request(srv.tls, "site.test", pki)
    assert st == 200, (st, body)


def test_one_thread_has_no_handshake_loop(pki):
    s = start(pki, 1)
    try:
        assert s.metric("kago_tls_handshake_loops") == 0
        st, _, body = one_request(s.tls, "site.test", pki)
        assert st == 200 and body.startswith(b"slept "), (st, body)
        assert s.metric("kago_tls_handshakes_handed_total") == 0
        assert "event loops" not in s.stderr()
    finally:
        finish(s)


def test_sigterm_with_handshakes_in_flight_on_the_loops(pki):
    """SIGTERM while connections sit mid-handshake on the loops and a request runs: the request is answered,
    the half-made handshakes are closed, serve exits 0 within the drain, nothing is left."""
    s = start(pki, 2)
    try:
        assert one_request(s.tls, "site.test", pki)[0] == 200
        stalled = []
        for _ in range(6):
            c = socket.create_connection(("127.0.0.1", s.tls), timeout=10)
            c.sendall(b"\x16\x03\x01\x02\x00\x01")
            stalled.append(c)
        slow = {}

        def slow_request():
            slow["r"] = one_request(s.tls, "site.test", pki, "/cgi-bin/sleep?1")

        t = threading.Thread(target=slow_request)
        t.start()
        time.sleep(0.4)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(15) == 0, s.stderr()[-2000:]
        assert time.monotonic() - t0 < 10
        t.join(10)
        assert slow.get("r", (None,))[0] == 200, slow
        for c in stalled:
            c.settimeout(5)
            try:
                while c.recv(100):
                    pass
            except ConnectionResetError:
                pass
            c.close()
        assert not s.leftovers(), s.leftovers()
    finally:
        cleanup(s)


def test_threads_option_is_checked():
    for bad in ("0", "65", "two", "-1"):
        out = subprocess.run([KAGO, "serve", "--config", "/nonexistent", "--threads", bad], capture_output=True,
                             text=True, timeout=10)
        assert out.returncode != 0 and "--threads" in out.stderr, (bad, out.stderr)


def test_certificates_on_demand_across_the_loops():
    """ACME with two handshake loops: handshakes for a host without a certificate, taken by any loop, are
    handed to the first loop before they wait, held there for the one order, and all go on with pebble's
    certificate."""
    from acme_util import PEBBLE, Pebble
    if not PEBBLE:
        pytest.skip("pebble is not installed (scripts/setup installs it)")
    from test_serve_acme import acme_server, cert_info, handshake, metric
    from test_serve_acme import get as acme_get
    http_port = free_port()
    peb = Pebble(http_port)
    srv = None
    try:
        srv = acme_server(peb, http_port, extra=["--threads", "3"])
        root = peb.root_pem()
        results = []

        def one():
            s = handshake(srv.tls, "threads.wild.acme.test", cadata=root)
            try:
                results.append((acme_get(s, "threads.wild.acme.test")[0], cert_info(s)[1]))
            finally:
                s.close()

        errors = at_once(8, one, 60)
        assert not errors, (errors[:3], srv.stderr()[-2000:])
        assert results == [(200, "threads.wild.acme.test")] * 8, results
        assert srv.stderr().count("acme: threads.wild.acme.test: ordering a certificate") == 1
        assert metric(srv, "kago_acme_handshakes_held_total") >= 1
        assert metric(srv, "kago_tls_handshakes_handed_total") >= 1
        assert srv.stop() == 0, srv.stderr()[-3000:]
        assert not srv.leftovers(), srv.leftovers()
    finally:
        if srv:
            cleanup(srv)
        peb.close()


def test_no_handshake_loops_without_the_spawner(pki):
    """Without the spawner serve clones its containers itself; a clone of a process with other threads could
    inherit a lock one of them held, so serve keeps to one loop then, and says so."""
    tls = free_port()
    s = Server(tls_app("site", ["site.test"], CGI, *pki.site),
               extra_args=["--listen-tls", f"127.0.0.1:{tls}", "--threads", "2"], env={"KAGO_SERVE_SPAWNER": "off"})
    s.tls = tls
    try:
        assert s.metric("kago_tls_handshake_loops") == 0
        assert "--threads 2: one event loop, since serve clones its containers itself" in s.stderr(), s.stderr()
        st, _, body = one_request(tls, "site.test", pki)
        assert st == 200 and body.startswith(b"slept "), (st, body)
    finally:
        finish(s)


@pytest.mark.parametrize("threads", [2, 1])
def test_a_lost_spawner_stops_starts_rather_than_cloning_from_threads(pki, threads):
    """The spawner killed and (a test-only fault) not replaced: with handshake loops running, serve does not
    clone a container itself (a clone of a process with other threads may copy a lock one of them holds into
    a child that then never runs): the start fails with the reason, a running app goes on, nothing is left.
    With one loop, serve clones it itself, as before."""
    from test_serve_spawner import gone, spawners
    tls = free_port()
    s = Server(tls_app("site", ["site.test"], CGI, *pki.site) + tls_app("cold", ["cold.test"], CGI, *pki.site),
               extra_args=["--listen-tls", f"127.0.0.1:{tls}", "--threads", str(threads)],
               # (no warm sandbox: one made before the spawner died would take the start, safely)
               env={"KAGO_FAULT": "spawner-restart", "KAGO_SERVE_WARM": "0"})
    try:
        assert s.metric("kago_tls_handshake_loops") == (threads if threads > 1 else 0)
        st, _, body = one_request(tls, "site.test", pki)
        assert st == 200 and body.startswith(b"slept "), (st, body)
        [sp] = spawners(s)
        os.kill(sp, signal.SIGKILL)
        assert gone(sp)
        st = request(s.port, "cold.test", "/cgi-bin/sleep?0")[0]
        if threads > 1:
            assert st in (502, 503), st
            assert "containers cannot start until serve is restarted" in s.stderr(), s.stderr()[-2000:]
            assert not s.instances("cold")
        else:
            assert st == 200
            assert "containers are cloned by serve itself from now on" in s.stderr(), s.stderr()[-2000:]
        st, _, body = one_request(tls, "site.test", pki)
        assert st == 200 and body.startswith(b"slept "), (st, body)
    finally:
        finish(s)
