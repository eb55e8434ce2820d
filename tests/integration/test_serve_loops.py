"""kago serve --threads N: N request loops, each app served by one of them. A connection goes to the loop of
the app its request names (HTTP/1.1 keep-alive and pipelining across apps included), an HTTP/2 connection to
the loop of its first stream's app; a pool stays one (its limits exact) whichever loop accepted the
connection. Real containers, real HTTP, /ps and /metrics read. Needs root."""
import socket
import threading

import pytest

from serve_util import CGI, app, read_response, serving

pytest.importorskip("hyperframe", reason="python3-h2 is not installed (scripts/setup installs it)")
import hyperframe.frame as hf  # noqa: E402
from test_serve_h2 import Raw, statuses  # noqa: E402

NAMES = [f"site{i}" for i in range(8)]


@pytest.fixture(scope="module")
def srv():
    apps = "".join(app(n, [f"{n}.test"], CGI) for n in NAMES)
    apps += app("one", ["one.test"], CGI, concurrency=1, max_instances=1, max_pending=100)
    yield from serving(apps, extra_args=["--threads", "2", "--h2c"])


def loops(srv):
    return {n: a["loop"] for n, a in srv.ps().items()}


def two_loops(srv):
    """Two apps served by different loops."""
    by = loops(srv)
    a = next(n for n in NAMES if by[n] == by[NAMES[0]])
    b = next(n for n in NAMES if by[n] != by[NAMES[0]])
    return a, b


def get(s, host, path="/cgi-bin/sleep?0"):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return read_response(s)


def test_apps_are_spread_over_the_request_loops(srv):
    assert srv.metric("kago_request_loops") == 2
    assert "2 event loops serve requests" in srv.stderr(), srv.stderr()
    by = loops(srv)
    assert set(by[n] for n in NAMES) == {1, 2}, by  # (8 names: both loops own some)


def test_a_keepalive_connection_follows_its_host_from_loop_to_loop(srv):
    a, b = two_loops(srv)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        seen = {}
        for host in [a, b, a, b, b, a]:
            st, _, body = get(s, f"{host}.test")
            assert st == 200 and body.startswith(b"slept "), (host, st, body)
            seen.setdefault(host, set()).add(body.split()[1])
        # each app answered from its own instance (one each: the same pool whichever loop read the request)
        assert len(seen[a]) == 1 and len(seen[b]) == 1 and seen[a] != seen[b], seen
        # pipelined: two requests for apps of two loops in one write, answered in order
        s.sendall(f"GET /cgi-bin/sleep?0 HTTP/1.1\r\nHost: {a}.test\r\n\r\n"
                  f"GET /cgi-bin/sleep?0 HTTP/1.1\r\nHost: {b}.test\r\n\r\n".encode())
        st1, _, body1 = read_response(s)
        st2, _, body2 = read_response(s)
        assert (st1, st2) == (200, 200), (body1, body2)
        assert body1.split()[1] in seen[a] and body2.split()[1] in seen[b], (body1, body2, seen)
    finally:
        s.close()


def test_a_pool_stays_exact_whichever_loop_accepted(srv):
    """concurrency 1, max_instances 1: 12 connections at once (accepted by both loops in turn) share one
    instance, one request at a time; every one is answered."""
    results, errors = [], []

    def one():
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
            try:
                results.append(get(s, "one.test", "/cgi-bin/sleep?0.1"))
            finally:
                s.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=one) for _ in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    assert not errors, errors[:3]
    assert [st for st, _, _ in results] == [200] * 12
    assert len({body.split()[1] for _, _, body in results}) == 1
    assert srv.metric("kago_cold_starts_total", app="one") == 1


def test_h2c_goes_to_the_loop_of_its_first_stream_and_another_loops_app_gets_421(srv):
    a, b = two_loops(srv)
    for first, second in [(a, b), (b, a)]:
        c = Raw(srv.port)
        try:
            c.send(c.headers(1, data=c.block("/cgi-bin/sleep?0", host=f"{first}.test")))
            c.read(lambda fr: isinstance(fr, hf.DataFrame) and fr.stream_id == 1 and "END_STREAM" in fr.flags)
            c.send(c.headers(3, data=c.block("/cgi-bin/sleep?0", host=f"{second}.test")))
            c.read(lambda fr: isinstance(fr, hf.HeadersFrame) and fr.stream_id == 3)
            # RFC 9113 9.1.2: the client retries the request on a new connection
            assert statuses(c.frames) == {1: b"200", 3: b"421"}, c.frames
        finally:
            c.close()


def test_h2_over_tls_without_a_routed_name_goes_to_its_first_streams_loop():
    """HTTPS by IP address (no SNI; the default certificate): no name says which loop, so the first stream's
    head does, as for h2c. Every request of curl --http2 is answered, whichever loop took the handshake."""
    import shutil
    import subprocess
    from serve_util import free_port
    from test_serve_tls import PKI
    if not shutil.which("openssl"):
        pytest.skip("the openssl CLI is not installed (scripts/setup installs it)")
    pki = PKI()
    default = pki.leaf("default", ["default.test"])
    tls = free_port()
    s = None
    try:
        apps = "".join(app(n, [f"{n}.test"], CGI) for n in NAMES)
        gen = serving(apps, extra_args=["--threads", "2", "--listen-tls", f"127.0.0.1:{tls}",
                                        "--tls-default-cert", default[0], "--tls-default-key", default[1]])
        s = next(gen)
        a, b = two_loops(s)
        for _ in range(4):  # (the handshake's connection lands on either loop)
            for host in (a, b):
                out = subprocess.run(
                    ["curl", "-sS", "-k", "--http2", "-H", f"Host: {host}.test", "-o", "/dev/null",
                     "-w", "%{http_version} %{http_code}", f"https://127.0.0.1:{tls}/cgi-bin/sleep?0"],
                    capture_output=True, text=True, timeout=30)
                assert out.stdout == "2 200", (host, out.stdout, out.stderr)
        next(gen, None)  # (stops serve: exits 0, nothing left)
    finally:
        shutil.rmtree(pki.dir, ignore_errors=True)
