"""kago serve over TLS (--listen-tls): real certificates made at test time with the openssl CLI (a root,
an intermediate, ECDSA and RSA leaves, a wildcard, a default), real handshakes from Python's ssl module,
real containers behind. Needs root."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings

import pytest

from serve_util import Server, admin_request, app, free_port, read_response, request
from test_serve_adopt import cleanup, wait_for
from test_serve_upgrade import Upgraded, took_over

if not shutil.which("openssl"):
    pytest.skip("the openssl CLI is not installed (scripts/setup installs it)", allow_module_level=True)

# busybox httpd with a CGI that says which scheme kago told it (X-Forwarded-Proto)
WEB = ("mkdir -p /srv/www/cgi-bin && echo hello-tls > /srv/www/index.html && "
       "dd if=/dev/zero of=/srv/www/big bs=1M count=8 2>/dev/null && "
       "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho proto=$HTTP_X_FORWARDED_PROTO\\n' "
       "> /srv/www/cgi-bin/proto && chmod +x /srv/www/cgi-bin/proto && "
       "exec /usr/sbin/httpd -f -p 8080 -h /srv/www")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class PKI:
    """A root CA, an intermediate CA and leaves signed by the intermediate; each leaf's .pem holds the leaf
    then the intermediate (the chain), so a client that trusts only the root verifies it only if serve
    presents the chain."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kago-tls-test-")
        d = self.dir
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "root.key", "-out", "root.pem", "-days", "3", "-subj", "/CN=kago test root",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=d)
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "int.key", "-out", "int.csr", "-subj", "/CN=kago test intermediate", cwd=d)
        self.write("int.ext", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        openssl("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial",
                "-out", "int.pem", "-days", "3", "-extfile", "int.ext", cwd=d)
        self.root = os.path.join(d, "root.pem")

    def write(self, name, text):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(text)

    def leaf(self, name, sans, kind="ec", cn=None):
        """name.pem (leaf + intermediate) and name.key; returns their paths."""
        d = self.dir
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else ["-newkey", "rsa:2048"]
        openssl("req", "-new", *key, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn or sans[0]}", cwd=d)
        self.write(f"{name}.ext", "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=" +
                   ",".join("DNS:" + s for s in sans) + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "int.pem", "-CAkey", "int.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "3", "-extfile", f"{name}.ext", cwd=d)
        with open(os.path.join(d, f"{name}.pem"), "w") as out:
            for part in (f"{name}.crt", "int.pem"):
                out.write(open(os.path.join(d, part)).read())
        return os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")


def tls_app(name, hosts, cmd, cert=None, key=None, **policy):
    text = app(name, hosts, cmd, stop_grace="1s", **policy)
    if cert:
        text = text[:-len("end\n")] + f'  a.tls cert: "{cert}", key: "{key}"\nend\n'
    return text


def client_ctx(pki, version=None):
    ctx = ssl.create_default_context(cafile=pki.root)
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def connect(port, name, ctx, session=None, timeout=30):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=name, session=session)
    except Exception:
        raw.close()
        raise


def get(s, host, path="/index.html", close=False):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
              .encode())
    return read_response(s)


def https(port, host, pki, path="/index.html", version=None):
    s = connect(port, host, client_ctx(pki, version))
    try:
        return get(s, host, path, close=True), s.version(), s.cipher()[0]
    finally:
        s.close()


def peer_sans(port, name, pki=None):
    """The DNS names of the certificate serve presents for SNI name (not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-ext", "subjectAltName"], input=der,
                         capture_output=True, check=True).stdout.decode()
    return sorted(x.strip()[4:] for x in out.split("\n", 1)[1].split(",") if x.strip().startswith("DNS:"))


@pytest.fixture(scope="module")
def pki():
    p = PKI()
    p.ec = p.leaf("ec", ["ec.test"])
    p.rsa = p.leaf("rsa", ["rsa.test"], kind="rsa")
    p.wild = p.leaf("wild", ["*.wild.test"])
    p.default = p.leaf("default", ["default.test"])
    yield p
    shutil.rmtree(p.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def srv(pki):
    tls = free_port()
    apps = (tls_app("ec", ["ec.test"], WEB, *pki.ec, hsts="max-age=600") +
            tls_app("rsa", ["rsa.test"], WEB, *pki.rsa, https_redirect=True) +
            tls_app("wild", ["a.wild.test"], WEB, *pki.wild) +
            tls_app("wild2", ["c.wild.test"], WEB))  # no a.tls: served by the wildcard certificate's SAN
    s = Server(apps, extra_args=["--listen-tls", f"127.0.0.1:{tls}", "--tls-default-cert", pki.default[0],
                                 "--tls-default-key", pki.default[1], "--tls-handshake-timeout", "1s"])
    s.tls = tls
    yield s
    try:
        assert s.stop() == 0, s.stderr()[-2000:]
        assert not s.leftovers(), s.leftovers()
    finally:
        cleanup(s)


def test_cold_start_over_tls13_and_tls12_with_ecdsa_and_rsa(srv, pki):
    (st, h, body), ver, _ = https(srv.tls, "ec.test", pki)  # the first request starts the container
    assert st == 200 and body == b"hello-tls\n", (st, body)
    assert ver == "TLSv1.3" and "x-kago-cold-start" in h, (ver, h)
    (st, h, body), ver, cipher = https(srv.tls, "ec.test", pki, version=ssl.TLSVersion.TLSv1_2)
    assert (st, ver) == (200, "TLSv1.2") and cipher.startswith("ECDHE-ECDSA-"), cipher
    (st, h, body), ver, cipher = https(srv.tls, "rsa.test", pki, version=ssl.TLSVersion.TLSv1_2)
    assert (st, ver, body) == (200, "TLSv1.2", b"hello-tls\n") and cipher.startswith("ECDHE-RSA-"), cipher
    (st, h, body), ver, _ = https(srv.tls, "rsa.test", pki)
    assert (st, ver) == (200, "TLSv1.3")
    # TLS 1.1 and below are refused
    ctx = client_ctx(pki)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        connect(srv.tls, "ec.test", ctx).close()
    # the app saw https; the access log marks the TLS requests
    (st, _, body), _, _ = https(srv.tls, "ec.test", pki, "/cgi-bin/proto")
    assert body.strip() == b"proto=https", body
    st, _, body = request(srv.port, "ec.test", "/cgi-bin/proto")
    assert body.strip() == b"proto=http", body
    assert wait_for(lambda: "tls=TLSv1.2" in open(srv.log).read(), 5)
    lines = open(srv.log).read().splitlines()
    assert any('"GET /index.html" 200' in l and l.endswith("tls=TLSv1.3") for l in lines), lines[-5:]


def test_sni_exact_wildcard_and_default_with_the_chain(srv, pki):
    assert peer_sans(srv.tls, "ec.test") == ["ec.test"]
    assert peer_sans(srv.tls, "rsa.test") == ["rsa.test"]
    assert peer_sans(srv.tls, "c.wild.test") == ["*.wild.test"]   # a host whose app has no a.tls
    assert peer_sans(srv.tls, "zzz.wild.test") == ["*.wild.test"]  # no app at all, the wildcard SAN covers it
    assert peer_sans(srv.tls, "unknown.example") == ["default.test"]
    assert peer_sans(srv.tls, "deep.c.wild.test") == ["default.test"]  # a wildcard covers one label only
    # verified against the root alone: the intermediate came with the leaf
    (st, _, body), _, _ = https(srv.tls, "c.wild.test", pki)
    assert st == 200 and body == b"hello-tls\n"
    s = connect(srv.tls, "ec.test", client_ctx(pki))
    chain = s.get_unverified_chain() if hasattr(s, "get_unverified_chain") else None
    s.close()
    if chain is not None:
        assert len(chain) == 2, chain


def test_session_resumption_with_tickets(srv, pki):
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx(pki, version)
        s = connect(srv.tls, "ec.test", ctx)
        assert get(s, "ec.test")[0] == 200  # (TLS 1.3 tickets arrive after the handshake)
        sess = s.session
        s.close()
        assert sess is not None and sess.has_ticket, version
        s = connect(srv.tls, "ec.test", ctx, session=sess)
        try:
            assert s.session_reused, version
            assert get(s, "ec.test")[0] == 200
        finally:
            s.close()
    assert srv.metric("kago_tls_resumed_total") >= 2
    assert srv.metric("kago_tls_handshakes_total", result="ok") >= 4


def test_https_redirect_and_hsts(srv, pki):
    st, h, _ = request(srv.port, "rsa.test", "/a/b?c=d")
    assert st == 308 and h["location"] == f"https://rsa.test:{srv.tls}/a/b?c=d", (st, h)
    st, h, _ = request(srv.port, "rsa.test:" + str(srv.port), "/x")  # the client's port is not kept
    assert h["location"] == f"https://rsa.test:{srv.tls}/x", h
    (st, h, _), _, _ = https(srv.tls, "rsa.test", pki)  # over TLS: served
    assert st == 200 and "strict-transport-security" not in h
    (st, h, _), _, _ = https(srv.tls, "ec.test", pki)
    assert st == 200 and h.get("strict-transport-security") == "max-age=600", h
    st, h, _ = request(srv.port, "ec.test")  # plain HTTP: no HSTS (RFC 6797 7.2), no redirect
    assert st == 200 and "strict-transport-security" not in h, h


def test_unknown_name_gets_an_alert_without_a_default(pki):
    tls = free_port()
    s = Server(tls_app("ec", ["ec.test"], WEB, *pki.ec), extra_args=["--listen-tls", f"127.0.0.1:{tls}"])
    try:
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
            connect(tls, "other.test", client_ctx(pki)).close()
        assert peer_sans(tls, "EC.TEST.") == ["ec.test"]  # case and a trailing dot do not matter
        assert s.metric("kago_tls_handshakes_total", result="failed") >= 1
    finally:
        s.stop()
        cleanup(s)
    # a default certificate, and --tls-unknown alert: still the alert
    s = Server(tls_app("ec", ["ec.test"], WEB, *pki.ec),
               extra_args=["--listen-tls", f"127.0.0.1:{tls}", "--tls-default-cert", pki.default[0],
                           "--tls-default-key", pki.default[1], "--tls-unknown", "alert"])
    try:
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
            connect(tls, "other.test", client_ctx(pki)).close()
    finally:
        s.stop()
        cleanup(s)


def test_bad_certificate_is_a_config_error_naming_the_file(pki):
    bad = os.path.join(pki.dir, "bad.pem")
    with open(bad, "w") as f:
        f.write("not a certificate\n")
    apps = tls_app("ec", ["ec.test"], WEB, *pki.ec) + tls_app("bad", ["bad.test"], WEB, bad, pki.ec[1])
    conf = tempfile.mkdtemp(prefix="kago-tls-conf-")
    root = tempfile.mkdtemp(prefix="kago-tls-root-")
    try:
        with open(os.path.join(conf, "apps.rb"), "w") as f:
            f.write(apps)
        from serve_util import KAGO
        r = subprocess.run([KAGO, "--root", root, "serve", "--config", conf, "--listen", f"127.0.0.1:{free_port()}",
                            "--listen-tls", f"127.0.0.1:{free_port()}", "--admin", "off"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert f"app bad: tls cert {bad}: no start line (PEM routines)" in r.stderr, r.stderr
        # a key that is not the certificate's, a missing file
        with open(os.path.join(conf, "apps.rb"), "w") as f:
            f.write(tls_app("ec", ["ec.test"], WEB, pki.ec[0], pki.rsa[1]))
        r = subprocess.run([KAGO, "--root", root, "serve", "--config", conf, "--admin", "off"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and f"tls key {pki.rsa[1]} does not match the certificate in {pki.ec[0]}: an RSA key for an EC certificate" in r.stderr, r.stderr
        with open(os.path.join(conf, "apps.rb"), "w") as f:
            f.write(tls_app("ec", ["ec.test"], WEB, pki.dir + "/missing.pem", pki.ec[1]))
        r = subprocess.run([KAGO, "--root", root, "serve", "--config", conf, "--admin", "off"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and f"tls cert {pki.dir}/missing.pem: No such file or directory" in r.stderr, \
            r.stderr
    finally:
        shutil.rmtree(conf, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_reload_a_replaced_certificate_keeps_running_connections(pki):
    d = tempfile.mkdtemp(prefix="kago-tls-live-")
    cert, key = os.path.join(d, "site.pem"), os.path.join(d, "site.key")
    shutil.copy(pki.ec[0], cert)
    shutil.copy(pki.ec[1], key)
    tls = free_port()
    s = Server(tls_app("ec", ["ec.test", "new.test"], WEB, cert, key), extra_args=["--listen-tls", f"127.0.0.1:{tls}"])
    try:
        live = connect(tls, "ec.test", client_ctx(pki))  # a keep-alive connection across the change
        assert get(live, "ec.test")[0] == 200
        assert peer_sans(tls, "ec.test") == ["ec.test"]
        # a new certificate for both names, moved into place (a new inode): picked up without a signal
        newc, newk = pki.leaf("renewed", ["ec.test", "new.test"])
        shutil.copy(newc, cert + ".tmp")
        shutil.copy(newk, key + ".tmp")
        os.rename(key + ".tmp", key)
        os.rename(cert + ".tmp", cert)
        assert wait_for(lambda: peer_sans(tls, "new.test") == ["ec.test", "new.test"], 10), s.stderr()[-1000:]
        assert "changed: reloaded for new handshakes" in s.stderr()
        assert get(live, "ec.test")[0] == 200  # the old connection, its old session, still served
        (st, _, _), _, _ = https(tls, "new.test", pki)
        assert st == 200
        # a broken file: refused, the loaded certificate stays
        with open(cert, "w") as f:
            f.write("garbage\n")
        assert wait_for(lambda: "does not load, keeping the certificate loaded before" in s.stderr(), 10)
        assert peer_sans(tls, "new.test") == ["ec.test", "new.test"]
        # SIGHUP with the broken file: the reload is refused with the reason, and everything keeps working
        st, _, body = admin_request(s.admin, s.root, "/reload", method="POST")
        assert st != 200 and f"tls cert {cert}: no start line" in body, (st, body)
        assert get(live, "ec.test")[0] == 200
        # a FIFO in the certificate's place: refused (it held the loop in open(2) for good, SIGTERM too)
        os.unlink(cert)
        os.mkfifo(cert)
        st, _, body = admin_request(s.admin, s.root, "/reload", method="POST", timeout=10)
        assert st != 200 and f"tls cert {cert}: a FIFO, not a regular file" in body, (st, body)
        assert get(live, "ec.test")[0] == 200 and peer_sans(tls, "new.test") == ["ec.test", "new.test"]
        os.unlink(cert)
        # the original back in place, SIGHUP: loaded
        shutil.copy(pki.ec[0], cert)
        shutil.copy(pki.ec[1], key)
        st, _, body = admin_request(s.admin, s.root, "/reload", method="POST")
        assert st == 200, body
        assert peer_sans(tls, "ec.test") == ["ec.test"]
        assert get(live, "ec.test")[0] == 200
        live.close()
    finally:
        s.stop()
        cleanup(s)
        shutil.rmtree(d, ignore_errors=True)


def test_stalled_handshake_is_closed_while_others_are_served(srv, pki):
    stalled = [socket.create_connection(("127.0.0.1", srv.tls), timeout=10) for _ in range(3)]
    stalled[1].sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
    t0 = time.time()
    (st, _, _), _, _ = https(srv.tls, "ec.test", pki)  # served meanwhile
    assert st == 200
    for s in stalled:
        assert s.recv(100) == b""  # closed by serve (--tls-handshake-timeout 1s)
        s.close()
    took = time.time() - t0
    assert 0.5 < took < 8, took
    # big bodies both ways through the encryption
    s = connect(srv.tls, "ec.test", client_ctx(pki))
    st, _, body = get(s, "ec.test", "/big")
    s.close()
    assert st == 200 and len(body) == 8 << 20 and body.count(b"\0") == len(body)


def test_plain_and_tls_listeners_at_once_and_several_of_each(pki):
    p2, t1, t2 = free_port(), free_port(), free_port()
    s = Server(tls_app("ec", ["ec.test"], WEB, *pki.ec),
               extra_args=["--listen-tls", f"127.0.0.1:{t1}", "--listen", f"127.0.0.1:{p2}",
                           "--listen-tls", f"127.0.0.1:{t2}"])
    try:
        for port in (s.port, p2):
            assert request(port, "ec.test")[0] == 200
        for port in (t1, t2):
            assert https(port, "ec.test", pki)[0][0] == 200
        log = s.stderr()
        assert f"http://127.0.0.1:{s.port}, https://127.0.0.1:{t1}, http://127.0.0.1:{p2}, https://127.0.0.1:{t2}" in log
    finally:
        s.stop()
        cleanup(s)


def test_upgrade_hands_over_tls_listeners_and_drains_tls_connections(pki):
    tls = free_port()
    args = ["--listen-tls", f"127.0.0.1:{tls}"]
    s = Server(tls_app("ec", ["ec.test"], WEB, *pki.ec), extra_args=args)
    servers = [s]
    stop = threading.Event()
    failures, ok = [], [0]

    def load():  # a connection per request, all along the upgrade
        while not stop.is_set():
            try:
                (st, _, body), _, _ = https(tls, "ec.test", pki)
                if st == 200 and body == b"hello-tls\n":
                    ok[0] += 1
                else:
                    failures.append((st, body[:100]))
            except (OSError, ssl.SSLError) as e:
                failures.append(repr(e))

    t = threading.Thread(target=load)
    try:
        assert https(tls, "ec.test", pki)[0][0] == 200
        idle = connect(tls, "ec.test", client_ctx(pki))  # an idle TLS keep-alive connection: not handed over
        assert get(idle, "ec.test")[0] == 200
        t.start()
        time.sleep(0.5)
        new = Upgraded(s, extra_args=args)
        servers.append(new)
        took_over(new, s)
        before = ok[0]
        assert wait_for(lambda: ok[0] > before + 5, 20), (ok[0], failures[:5])
        stop.set()
        t.join(60)
        assert not failures, failures[:5]
        # the old serve closed the idle TLS connection itself (it cannot move: its state is OpenSSL's)
        idle.settimeout(5)
        try:
            assert idle.recv(100) == b""
        except (ssl.SSLError, ConnectionError):
            pass
        idle.close()
        assert "took over 0 keep-alive" not in new.stderr()
        assert new.stop() == 0
    finally:
        stop.set()
        if t.is_alive():
            t.join(60)
        cleanup(*servers)
