"""kago serve's certificates on demand (ACME) against Debian's pebble on loopback: the first handshake for
a routed host is held while serve orders a certificate (HTTP-01 answered on its plain listener), the
request is then served by the app over the pebble-issued certificate; the certificate is used again after
a restart; refused hosts get no order; pebble down gives clear errors, retries with backoff and leaves the
other sites alone; certificates are renewed at 2/3 of their lifetime. Real containers behind. Needs root."""
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from acme_util import CHALLTESTSRV, PEBBLE, Pebble, free_port
from serve_util import KAGO, STATIC, Server, app, read_response, wait_for
from test_serve_adopt import cleanup

if not PEBBLE or not CHALLTESTSRV or not shutil.which("openssl"):
    pytest.skip("pebble, pebble-challtestsrv or openssl is not installed (scripts/setup installs them)",
                allow_module_level=True)

# plain HTTP is redirected to https: serve answers HTTP-01 before that
APPS = app("web", ["new.acme.test", "*.wild.acme.test"], STATIC, stop_grace="1s", https_redirect=True)


class Ask:
    """An --acme-ask endpoint: 200 for the domains in allow, 404 for others; records every question."""

    def __init__(self, allow):
        self.allow, self.asked = set(allow), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                dom = self.path.split("domain=", 1)[-1]
                outer.asked.append(dom)
                self.send_response(200 if dom in outer.allow else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/check"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def acme_server(peb, http_port, root=None, extra=(), env=None):
    tls = free_port()
    s = Server(APPS, root=root, env=env,
               extra_args=["--listen", f"127.0.0.1:{http_port}", "--listen-tls", f"127.0.0.1:{tls}",
                           "--acme-directory", peb.directory, "--acme-ca", peb.ca, "--acme-email",
                           "ops@acme.test", "--acme-retry", "1s", *extra])
    s.tls = tls
    return s


def handshake(port, host, cadata=None, timeout=30):
    """A TLS connection to serve for host (verified against cadata when given)."""
    ctx = ssl.create_default_context(cadata=cadata) if cadata else ssl.create_default_context()
    if not cadata:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except Exception:
        raw.close()
        raise


def cert_info(s):
    """issuer CN, subject CN, serial of the certificate s got."""
    der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-issuer", "-subject", "-serial",
                          "-nameopt", "RFC2253"], input=der, capture_output=True, check=True).stdout.decode()
    f = dict(line.split("=", 1) for line in out.splitlines())
    cn = lambda v: re.search(r"CN=([^,]+)", v).group(1)
    return cn(f["issuer"]), cn(f["subject"]), f["serial"]


def get(s, host, path="/index.html"):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    return read_response(s)


def served_with_a_pebble_certificate(srv, port, host, root):
    """A handshake for host, verified against pebble's root (the chain from serve), and one request: the
    app's page over a pebble-issued certificate. Returns the seconds it took."""
    t0 = time.time()
    s = handshake(port, host, cadata=root)
    try:
        st, _, body = get(s, host)
        issuer, subject, _ = cert_info(s)
    finally:
        s.close()
    assert (st, body) == (200, b"hello-static\n"), (st, body, srv.stderr()[-2000:])
    assert issuer.startswith("Pebble Intermediate CA") and subject == host, (issuer, subject)
    return time.time() - t0


def metric(srv, name, **labels):
    v = srv.metric(name, **labels)
    return 0 if v is None else v


@pytest.fixture(scope="module")
def env():
    http_port = free_port()
    peb = Pebble(http_port)
    ask = Ask(["approved.other.test"])
    srv = None
    try:
        srv = acme_server(peb, http_port, extra=["--acme-ask", ask.url])
        yield peb, srv, http_port, ask
        assert srv.stop() == 0, srv.stderr()[-3000:]
        assert not srv.leftovers(), srv.leftovers()
    finally:
        if srv:
            cleanup(srv)
        ask.close()
        peb.close()


def test_first_handshake_gets_a_pebble_certificate_and_is_served(env):
    peb, srv, _, _ = env
    root = peb.root_pem()
    took = served_with_a_pebble_certificate(srv, srv.tls, "new.acme.test", root)
    print(f"first handshake to served response: {took * 1000:.0f} ms (a container's cold start included)")
    err = srv.stderr()
    assert "acme: new.acme.test: ordering a certificate" in err
    assert re.search(r'acme: new.acme.test: certificate issued by "Pebble Intermediate CA \w+" in [\d.]+ s', err), err
    # pebble validated HTTP-01 on serve's plain listener, answered before routing
    assert peb.validated("new.acme.test") >= 1
    assert wait_for(lambda: "/.well-known/acme-challenge/" in open(srv.log).read(), 5)
    assert re.search(r'"GET /.well-known/acme-challenge/[\w-]+" 200', open(srv.log).read())
    assert metric(srv, "kago_acme_orders_total", kind="new", result="ok") == 1
    assert metric(srv, "kago_acme_certificates") == 1
    assert metric(srv, "kago_acme_challenges_served_total") >= 1
    # the state dir holds it
    d = os.path.join(srv.root, "acme")
    assert os.path.isfile(os.path.join(d, "account.key")) and os.path.isfile(os.path.join(d, "certs", "new.acme.test", "cert.pem"))
    assert oct(os.stat(os.path.join(d, "certs", "new.acme.test", "key.pem")).st_mode & 0o777) == "0o600"
    # the second handshake: no new order; nor after a reload (SIGHUP: a new certificate store)
    s = handshake(srv.tls, "new.acme.test", cadata=root)
    s.close()
    srv.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded " in srv.stderr(), 10)
    s = handshake(srv.tls, "new.acme.test", cadata=root)
    assert cert_info(s)[1] == "new.acme.test"
    s.close()
    assert metric(srv, "kago_acme_orders_total", kind="new", result="ok") == 1


def test_a_wildcard_routed_host_and_parallel_handshakes_share_one_order(env):
    peb, srv, _, _ = env
    root = peb.root_pem()
    results = []

    def one():
        try:
            s = handshake(srv.tls, "a1.wild.acme.test", cadata=root)
            results.append((get(s, "a1.wild.acme.test")[0], cert_info(s)[1]))
            s.close()
        except Exception as e:  # noqa: BLE001 (reported by the assert)
            results.append(e)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(200, "a1.wild.acme.test")] * 4, results
    assert srv.stderr().count("acme: a1.wild.acme.test: ordering a certificate") == 1
    assert metric(srv, "kago_acme_handshakes_held_total") >= 4


def test_refused_hosts_get_no_order(env):
    peb, srv, _, ask = env
    # not routed to an app, and --acme-ask says no: the alert (no default certificate), no order
    for host in ("nope.acme.test", "deep.other.test"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(srv.tls, host).close()
    assert wait_for(lambda: "acme: deep.other.test: no certificate: --acme-ask refused it" in srv.stderr(), 10)
    assert ask.asked.count("nope.acme.test") == 1
    assert peb.validated("nope.acme.test") == 0 and peb.validated("deep.other.test") == 0
    assert metric(srv, "kago_acme_refused_total", reason="ask") == 2
    # asked again only after a while: a flood of handshakes for it costs no question
    for _ in range(3):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(srv.tls, "nope.acme.test").close()
    assert ask.asked.count("nope.acme.test") == 1
    # --acme-ask says yes: a certificate, though no app serves the host (404 from serve)
    s = handshake(srv.tls, "approved.other.test", cadata=peb.root_pem())
    try:
        assert get(s, "approved.other.test")[0] == 404
        assert cert_info(s)[1] == "approved.other.test"
    finally:
        s.close()


def test_without_ask_only_routed_hosts(env):
    peb, _, http_port, _ = env
    srv = acme_server(peb, free_port())  # (no HTTP-01 expected: the plain port is not pebble's)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(srv.tls, "stranger.example").close()
        assert "acme: stranger.example: no certificate: not routed to an app, and no --acme-ask" in srv.stderr()
        assert metric(srv, "kago_acme_refused_total", reason="not_routed") == 1
        assert peb.validated("stranger.example") == 0 and "stranger.example: ordering" not in srv.stderr()
        # a flood of made-up names: no order, no question, a log line a second at most
        t0 = time.time()
        for i in range(50):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                handshake(srv.tls, f"r{i}.flood.example").close()
        lines = srv.stderr().count("no certificate: not routed to an app")
        assert lines <= 2 + int(time.time() - t0), lines
        assert metric(srv, "kago_acme_refused_total", reason="not_routed") == 51
        assert metric(srv, "kago_acme_orders_pending") == 0 and "ordering" not in srv.stderr()
        # names no CA issues for: not even considered
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(srv.tls, "localhost").close()
        assert srv.stop() == 0
    finally:
        cleanup(srv)


def test_certificates_are_reused_after_a_restart(env):
    peb, srv, http_port, ask = env
    s = handshake(srv.tls, "new.acme.test")
    serial = cert_info(s)[2]
    s.close()
    assert srv.stop() == 0, srv.stderr()[-2000:]
    validated = peb.validated("new.acme.test")
    srv2 = acme_server(peb, http_port, root=srv.root, extra=["--acme-ask", ask.url])
    try:
        s = handshake(srv2.tls, "new.acme.test", cadata=peb.root_pem())
        try:
            assert cert_info(s)[2] == serial
            assert get(s, "new.acme.test")[0] == 200
        finally:
            s.close()
        assert metric(srv2, "kago_acme_certificates") >= 2
        assert metric(srv2, "kago_acme_orders_total", kind="new", result="ok") == 0
        assert peb.validated("new.acme.test") == validated and "ordering" not in srv2.stderr()
    finally:
        assert srv2.stop() == 0, srv2.stderr()[-2000:]
        cleanup(srv2)
    # the module's fixture stops srv again: a no-op


def test_pebble_down_errors_retries_and_other_sites_unaffected(env):
    peb, srv0, http_port, ask = env
    srv = acme_server(peb, http_port, root=srv0.root, extra=["--acme-ask", ask.url])
    try:
        root = peb.root_pem()
        peb.stop()
        with pytest.raises((ssl.SSLError, ConnectionError)):  # no certificate, no default: the alert
            handshake(srv.tls, "down.wild.acme.test").close()
        msg = f"acme: down.wild.acme.test: order failed (attempt 1, next in 1 s): acme directory: {peb.directory}: " \
              f"connect to 127.0.0.1 port {peb.port}: Connection refused"
        assert wait_for(lambda: msg in srv.stderr(), 10), srv.stderr()[-2000:]
        # the site that has its certificate is served all along
        s = handshake(srv.tls, "new.acme.test", cadata=root)
        assert get(s, "new.acme.test")[0] == 200
        s.close()
        # retried on its own with backoff (1 s, 2 s, ...), and succeeds once pebble is back
        assert wait_for(lambda: "acme: down.wild.acme.test: order failed (attempt 2, next in 2 s)" in srv.stderr(), 10)
        assert metric(srv, "kago_acme_orders_total", kind="new", result="failed") >= 2
        peb.start()  # a new pebble: a new root, and it knows no account (serve registers again)
        assert wait_for(lambda: "acme: down.wild.acme.test: certificate issued" in srv.stderr(), 30), \
            srv.stderr()[-3000:]
        s = handshake(srv.tls, "down.wild.acme.test", cadata=peb.root_pem())
        try:
            assert get(s, "down.wild.acme.test")[0] == 200
        finally:
            s.close()
    finally:
        if peb.proc.poll() is not None:
            peb.start()
        assert srv.stop() == 0, srv.stderr()[-2000:]
        cleanup(srv)


def test_renewal_at_two_thirds_of_the_lifetime():
    http_port = free_port()
    peb = Pebble(http_port, validity_s=15)  # renewed 10 s after issue
    srv = None
    try:
        srv = acme_server(peb, http_port)
        root = peb.root_pem()
        s = handshake(srv.tls, "new.acme.test", cadata=root)
        first = cert_info(s)[2]
        s.close()
        assert wait_for(lambda: "acme: new.acme.test: certificate renewed" in srv.stderr(), 25), srv.stderr()[-2000:]
        s = handshake(srv.tls, "new.acme.test", cadata=root)
        try:
            assert cert_info(s)[2] != first  # new handshakes get the new one
            assert get(s, "new.acme.test")[0] == 200
        finally:
            s.close()
        assert metric(srv, "kago_acme_orders_total", kind="renew", result="ok") >= 1
        assert srv.stop() == 0, srv.stderr()[-2000:]
    finally:
        if srv:
            cleanup(srv)
        peb.close()


def test_no_wait_and_the_overall_rate_limit():
    http_port = free_port()
    peb = Pebble(http_port)
    srv = None
    try:
        srv = acme_server(peb, http_port, extra=["--acme-no-wait", "--acme-rate", "1"])
        # not held: the handshake goes on at once without a certificate (no default: the alert)
        t0 = time.time()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(srv.tls, "n1.wild.acme.test").close()
        assert time.time() - t0 < 2
        assert wait_for(lambda: "acme: n1.wild.acme.test: certificate issued" in srv.stderr(), 15), srv.stderr()
        s = handshake(srv.tls, "n1.wild.acme.test", cadata=peb.root_pem())
        assert get(s, "n1.wild.acme.test")[0] == 200
        s.close()
        assert metric(srv, "kago_acme_handshakes_held_total") == 0
        # one order per minute in all: the next host has to wait for the bucket
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(srv.tls, "n2.wild.acme.test").close()
        assert "acme: n2.wild.acme.test: no order now: over --acme-rate 1 per minute" in srv.stderr()
        assert metric(srv, "kago_acme_rate_limited_total") == 1
        assert peb.validated("n2.wild.acme.test") == 0
        assert srv.stop() == 0, srv.stderr()[-2000:]
    finally:
        if srv:
            cleanup(srv)
        peb.close()


def test_renewal_time_forced_by_the_test_hook():
    """KAGO_ACME_RENEW_AFTER=S: renewed S seconds after the certificate was written (pebble's 5 years
    otherwise), then every S seconds."""
    http_port = free_port()
    peb = Pebble(http_port)
    srv = None
    try:
        srv = acme_server(peb, http_port, env={"KAGO_ACME_RENEW_AFTER": "2"})
        s = handshake(srv.tls, "new.acme.test", cadata=peb.root_pem())
        s.close()
        assert wait_for(lambda: srv.stderr().count("acme: new.acme.test: certificate renewed") >= 2, 20), \
            srv.stderr()[-2000:]
        assert re.search(r"certificate issued by .* valid until 20\d\d-\S+, renewal at ", srv.stderr())
        assert metric(srv, "kago_acme_orders_total", kind="renew", result="ok") >= 2
        assert srv.stop() == 0, srv.stderr()[-2000:]
    finally:
        if srv:
            cleanup(srv)
        peb.close()


def test_strangers_handshakes_never_starve_a_renewal():
    # made-up names under a wildcard host spend the on-demand bucket (--acme-rate 1: its one token a
    # minute); the renewal of a certificate held has a bucket of its own, and is not starved by them
    # (it expired while 15 made-up names a second took every token)
    http_port = free_port()
    peb = Pebble(http_port)
    srv = None
    try:
        srv = acme_server(peb, http_port, extra=["--acme-rate", "1", "--acme-no-wait"],
                          env={"KAGO_ACME_RENEW_AFTER": "3"})
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(srv.tls, "new.acme.test").close()  # (its first order: the bucket's token)
        assert wait_for(lambda: "acme: new.acme.test: certificate issued" in srv.stderr(), 15), srv.stderr()
        t0 = time.time()
        i = 0
        while "acme: new.acme.test: certificate renewed" not in srv.stderr() and time.time() - t0 < 15:
            i += 1
            with pytest.raises((ssl.SSLError, ConnectionError)):
                handshake(srv.tls, f"made-up-{i}.wild.acme.test", timeout=5).close()
            time.sleep(0.05)
        assert "acme: new.acme.test: certificate renewed" in srv.stderr(), srv.stderr()[-2000:]
        assert metric(srv, "kago_acme_rate_limited_total") >= 1  # (the strangers were refused)
        assert srv.stop() == 0, srv.stderr()[-2000:]
    finally:
        if srv:
            cleanup(srv)
        peb.close()


def test_tls_alpn_01_on_a_front_door_without_plain_http():
    """No plain listener: serve answers TLS-ALPN-01 (RFC 8737) on its TLS listener, as Caddy does. The first
    handshake for a routed host is held while pebble validates a handshake offering acme-tls/1 (which gets
    the challenge certificate, and nothing else), then served with the pebble-issued certificate. A
    validation for a name with no challenge running is refused with an alert; serving goes on."""
    tls = free_port()
    peb = Pebble(free_port(), tls_port=tls)  # (nothing listens on its HTTP-01 port)
    srv = None
    try:
        srv = Server(APPS, tls_only=True, port=tls,
                     extra_args=["--acme-directory", peb.directory, "--acme-ca", peb.ca, "--acme-retry", "1s"])
        root = peb.root_pem()
        took = served_with_a_pebble_certificate(srv, tls, "new.acme.test", root)
        print(f"TLS-ALPN-01: first handshake to served response: {took * 1000:.0f} ms")
        assert peb.validated("new.acme.test") >= 1
        # (no plain listener: pebble's validation was a handshake with acme-tls/1 on the TLS port)
        assert metric(srv, "kago_acme_challenges_served_total") >= 1
        assert metric(srv, "kago_acme_orders_total", kind="new", result="ok") == 1
        # an acme-tls/1 handshake with no validation running: refused, and serve goes on
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.set_alpn_protocols(["acme-tls/1"])
        raw = socket.create_connection(("127.0.0.1", tls), timeout=10)
        with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
            ctx.wrap_socket(raw, server_hostname="new.acme.test")
        raw.close()
        s = handshake(tls, "new.acme.test", cadata=root)
        assert get(s, "new.acme.test")[0] == 200
        s.close()
        assert srv.stop() == 0, srv.stderr()[-3000:]
        assert not srv.leftovers(), srv.leftovers()
    finally:
        if srv:
            cleanup(srv)
        peb.close()


@pytest.mark.parametrize("args,want", [
    (["--acme-challenge", "dns-01"], '--acme-challenge: "dns-01" (want http-01 or tls-alpn-01)'),
    (["--acme-challenge", "http-01"], "--acme-challenge http-01 needs a --listen"),
])
def test_acme_challenge_option_is_checked(tmp_path, args, want):
    conf = tmp_path / "conf"
    conf.mkdir()
    r = subprocess.run([KAGO, "--root", str(tmp_path / "root"), "serve",
                        "--config", str(conf), "--listen-tls", f"127.0.0.1:{free_port()}",
                        "--acme-directory", "https://127.0.0.1:1/dir", *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and want in r.stderr, (r.returncode, r.stderr)
