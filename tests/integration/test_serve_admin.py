"""kago serve's admin API is not open: over TCP every request but /healthz needs the bearer token of
--admin-token FILE (default <root>/.serve/.admin-token, made 0600 on first start and kept for the next
serve); a missing or wrong token gets 401 (logged, without the token), and 10 failures of one client
within a minute get it 429 for a minute. --admin unix:PATH listens on a 0600 unix socket instead (no
token), removed at exit. kago ps and kago reload find the token. Traffic goes to loopback only."""
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import wait_for
from serve_util import (ADMIN_TOKEN, KAGO, ROOTFS, STATIC, Server, admin_request, admin_token, app, free_port,
                        request, root_leftovers)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
]


class Bare:
    """kago serve with no app (no container needed) on its own root; admin is "IP:PORT" or "unix:PATH"."""

    def __init__(self, tmp, admin=None, extra=(), cwd=None):
        self.tmp, self.root, self.conf = tmp, os.path.join(tmp, "root"), os.path.join(tmp, "conf")
        os.makedirs(self.conf, exist_ok=True)
        self.port = free_port()
        self.admin = admin or f"127.0.0.1:{free_port()}"
        self.errlog = open(os.path.join(tmp, f"stderr-{time.time_ns()}.log"), "w+")
        self.proc = subprocess.Popen(
            [KAGO, "--root", self.root, "serve", "--config", self.conf, "--listen", f"127.0.0.1:{self.port}",
             "--admin", self.admin, "--access-log", "off", *extra], stdout=subprocess.DEVNULL, stderr=self.errlog,
            cwd=cwd)

    def started(self):
        return wait_for(lambda: "listening on" in self.stderr() or self.proc.poll() is not None, 10) and \
            self.proc.poll() is None

    def stderr(self):
        self.errlog.flush()
        with open(self.errlog.name) as f:
            return f.read()

    def admin_port(self):
        return int(self.admin.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def kago(*args, root=None):
    return subprocess.run([KAGO, *(["--root", root] if root else []), *args], capture_output=True, text=True,
                          timeout=30)


def raw_status(port, head):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(head.encode())
        out = b""
        while (b := s.recv(65536)):
            out += b
        return int(out.split(b" ", 2)[1]), out
    finally:
        s.close()


@pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)")
def test_token_required_logged_and_found_by_ps_and_reload():
    s = Server(app("web", ["web.test"], STATIC, stop_grace="1s"))
    try:
        path = os.path.join(s.root, ADMIN_TOKEN)
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
        token = admin_token(s.root)
        assert len(token) == 64 and int(token, 16) >= 0, "32 random bytes in hex"
        assert f"bearer token made in {path}" in s.stderr()
        # no token: 401 with the challenge, on every path but /healthz (unknown ones too)
        for method, p in (("GET", "/ps"), ("GET", "/metrics"), ("POST", "/reload"), ("GET", "/nope")):
            code, h, body = admin_request(s.admin, s.root, p, method=method, token="")
            assert code == 401 and h.get("www-authenticate", "").startswith("Bearer"), (p, code, h)
        code, _, _ = admin_request(s.admin, s.root, "/ps", token="x" * 64)
        assert code == 401
        assert raw_status(s.admin, "GET /ps HTTP/1.1\r\nHost: a\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n")[0] == 401
        assert raw_status(s.admin, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")[0] == 200
        # the right token: any case for the header name and the scheme
        assert raw_status(s.admin, f"GET /ps HTTP/1.1\r\nHost: a\r\nauthorization: bearer {token}\r\n\r\n")[0] == 200
        assert admin_request(s.admin, s.root, "/metrics")[0] == 200
        assert request(s.port, "web.test")[2] == b"hello-static\n"
        # the failures are logged with the client and the path, never a token
        err = s.stderr()
        assert "kago serve: admin: 401 for GET /ps from 127.0.0.1: no bearer token" in err, err
        assert "kago serve: admin: 401 for GET /ps from 127.0.0.1: wrong token" in err, err
        assert "401 for POST /reload from 127.0.0.1" in err and token not in err and "x" * 64 not in err
        # kago ps and kago reload read the token file of --root
        ps = kago("ps", "--admin", f"127.0.0.1:{s.admin}", root=s.root)
        assert ps.returncode == 0 and any(l.split()[:1] == ["web"] and " ready " in l
                                          for l in ps.stdout.splitlines()), ps
        rl = kago("reload", "--admin", f"127.0.0.1:{s.admin}", root=s.root)
        assert rl.returncode == 0 and rl.stdout == "reloaded\n", rl
        assert wait_for(lambda: "kago serve: reloaded" in s.stderr(), 5)
        # ... or the file --admin-token names; a wrong one says which file and what happened
        ok = kago("ps", "--json", "--admin", f"127.0.0.1:{s.admin}", "--admin-token", path)
        assert ok.returncode == 0 and '"name":"web"' in ok.stdout, ok
        bad = os.path.join(s.tmp, "other.token")
        with open(bad, "w") as f:
            f.write("0" * 64 + "\n")
        no = kago("ps", "--admin", f"127.0.0.1:{s.admin}", "--admin-token", bad)
        assert no.returncode == 1 and f"refused the token in {bad} (401)" in no.stderr, no
        missing = kago("reload", "--admin", f"127.0.0.1:{s.admin}", root=os.path.join(s.tmp, "elsewhere"))
        assert missing.returncode == 1 and "wants a bearer token (401)" in missing.stderr, missing
        assert "No such file or directory" in missing.stderr, missing
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []
        assert admin_token(s.root) == token, "the token outlives serve, for the next one"
    finally:
        s.stop()


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as t:
            t.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ps_and_reload_find_the_serve_of_their_root_without_admin():
    """serve writes where its admin API listens, and its pid, to <root>/.serve/.admin-addr before it says it
    listens (TCP, IPv6, a unix socket made absolute; "off" with --admin off) and removes it at exit: kago
    --root R ps and reload need no --admin. A file a killed serve left is not trusted: nothing is sent there (whoever
    listens on that address now would get the token)."""
    with tempfile.TemporaryDirectory(prefix="kago-admin-addr-") as tmp:
        root = os.path.join(tmp, "root")
        addr_file = os.path.join(root, ".serve", ".admin-addr")
        admins = [f"127.0.0.1:{free_port()}", "unix:admin.sock"] + ([f"[::1]:{free_port()}"] if ipv6_loopback() else [])
        for admin in admins:
            s = Bare(tmp, admin=admin, cwd=tmp)  # (the unix socket's path is relative to serve's directory)
            try:
                assert s.started(), s.stderr()
                want = admin if not admin.startswith("unix:") else f"unix:{tmp}/admin.sock"
                assert open(addr_file).read() == f"{want}\n{s.proc.pid}\n", (admin, open(addr_file).read())
                ps = kago("ps", "--json", root=root)
                assert ps.returncode == 0 and ps.stdout == '{"apps":[]}\n', (admin, ps)
                rl = kago("reload", root=root)
                assert rl.returncode == 0 and rl.stdout == "reloaded\n", (admin, rl)
            finally:
                assert s.stop() == 0, s.stderr()
            assert not os.path.exists(addr_file), "removed at exit"
        # a killed serve's file: its pid is gone, so nothing is sent to the address
        s = Bare(tmp, admin=f"127.0.0.1:{free_port()}")
        assert s.started(), s.stderr()
        s.proc.kill()
        s.proc.wait()
        assert os.path.exists(addr_file)
        ps = kago("ps", root=root)
        assert ps.returncode == 1 and f"no kago serve runs with root {root}: the one that wrote {addr_file} " \
            f"(pid {s.proc.pid}) is gone" in ps.stderr, ps
        # --admin off: "off" written (over the killed serve's file), and kago ps says so
        s = Bare(tmp, admin="off")
        try:
            assert s.started(), s.stderr()
            assert open(addr_file).read() == f"off\n{s.proc.pid}\n"
            ps = kago("ps", root=root)
            assert ps.returncode == 1 and f"the kago serve of root {root} (pid {s.proc.pid}) runs without an " \
                "admin API (--admin off)" in ps.stderr, ps
        finally:
            assert s.stop() == 0, s.stderr()
        assert not os.path.exists(addr_file)


def test_token_reused_on_restart_and_token_file_checks():
    with tempfile.TemporaryDirectory(prefix="kago-admin-auth-") as tmp:
        a = Bare(tmp)
        try:
            assert a.started(), a.stderr()
            token = admin_token(a.root)
            assert admin_request(a.admin_port(), a.root, "/ps")[0] == 200
        finally:
            assert a.stop() == 0, a.stderr()
        b = Bare(tmp)
        try:
            assert b.started(), b.stderr()
            assert admin_token(b.root) == token and "bearer token read from" in b.stderr()
            assert admin_request(b.admin_port(), b.root, "/ps", token=token)[0] == 200
        finally:
            assert b.stop() == 0, b.stderr()
        # --admin-token FILE: made there when missing (0600), used as is when present
        given = os.path.join(tmp, "admin.token")
        c = Bare(tmp, extra=("--admin-token", given))
        try:
            assert c.started(), c.stderr()
            assert stat.S_IMODE(os.stat(given).st_mode) == 0o600
            mine = open(given).read().strip()
            assert mine != token and len(mine) == 64
            assert admin_request(c.admin_port(), c.root, "/ps", token=mine)[0] == 200
            assert admin_request(c.admin_port(), c.root, "/ps", token=token)[0] == 401
            ps = kago("ps", "--json", "--admin", c.admin, "--admin-token", given)
            assert ps.returncode == 0 and ps.stdout.startswith('{"apps":['), ps
        finally:
            assert c.stop() == 0, c.stderr()
        # a token file others may read, or a short one, is refused with the file named
        for content, mode, why in (("s" * 40, 0o644, "others may access it (mode 0644)"),
                                   ("short", 0o600, "too short (5 characters")):
            with open(given, "w") as f:
                f.write(content + "\n")
            os.chmod(given, mode)
            d = Bare(tmp, extra=("--admin-token", given))
            assert d.proc.wait(20) != 0
            assert f"kago: admin token {given}: {why}" in d.stderr(), d.stderr()
            assert content not in d.stderr() or content == "short"


def test_failures_rate_limited_per_client():
    with tempfile.TemporaryDirectory(prefix="kago-admin-auth-") as tmp:
        s = Bare(tmp)
        try:
            assert s.started(), s.stderr()
            port = s.admin_port()
            codes = [admin_request(port, s.root, "/metrics", token=f"guess{i:059d}")[0] for i in range(10)]
            assert codes == [401] * 10, codes
            code, h, body = admin_request(port, s.root, "/metrics", token="guess")
            assert code == 429 and 55 <= int(h["retry-after"]) <= 60, (code, h)
            # blocked: even the right token waits (a guess must not tell anything), /healthz stays open
            assert admin_request(port, s.root, "/ps")[0] == 429
            assert raw_status(port, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")[0] == 200
            ps = kago("ps", "--admin", s.admin, root=s.root)
            assert ps.returncode == 1 and "(429)" in ps.stderr, ps
            err = s.stderr()
            assert err.count("kago serve: admin: 401 for GET /metrics from 127.0.0.1: wrong token") == 10, err
            assert "10 failed attempts from 127.0.0.1 within 60 s: it gets 429 for 60 s" in err, err
        finally:
            assert s.stop() == 0, s.stderr()


def test_unix_socket_0600_no_token_stale_replaced_removed_at_exit():
    with tempfile.TemporaryDirectory(prefix="kago-admin-auth-") as tmp:
        sock = os.path.join(tmp, "admin.sock")
        s = Bare(tmp, admin=f"unix:{sock}")
        try:
            assert s.started(), s.stderr()
            st = os.lstat(sock)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
            assert f"admin on unix:{sock}" in s.stderr()
            assert not os.path.exists(os.path.join(s.root, ADMIN_TOKEN)), "no token on a unix socket"
            ps = kago("ps", "--admin", f"unix:{sock}")
            assert ps.returncode == 0 and ps.stdout.startswith("APP "), ps
            rl = kago("reload", "--admin", f"unix:{sock}")
            assert rl.returncode == 0 and rl.stdout == "reloaded\n", rl
            c = socket.socket(socket.AF_UNIX)
            c.connect(sock)
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
            out = b""
            while (b := c.recv(65536)):
                out += b
            c.close()
            assert out.startswith(b"HTTP/1.1 200") and b"kago_connections" in out, out[:200]
            # a serve killed leaves its socket file: the next one replaces it
            s.proc.kill()
            s.proc.wait()
            assert os.path.exists(sock)
            s = Bare(tmp, admin=f"unix:{sock}")
            assert s.started(), s.stderr()
            assert kago("ps", "--json", "--admin", f"unix:{sock}").stdout == '{"apps":[]}\n'
            assert s.stop() == 0, s.stderr()
            assert not os.path.exists(sock), "removed at exit"
            # something else than a socket at the path: refused, left alone
            with open(sock, "w") as f:
                f.write("mine\n")
            s = Bare(tmp, admin=f"unix:{sock}")
            assert s.proc.wait(20) != 0
            assert f"admin socket {sock}: something else than a socket is there" in s.stderr(), s.stderr()
            assert open(sock).read() == "mine\n"
        finally:
            s.stop()


def unix_status(sock, head):
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock)
    try:
        c.sendall(head.encode())
        out = b""
        while (b := c.recv(65536)):
            out += b
        return int(out.split(b" ", 2)[1]), out
    finally:
        c.close()


def test_requests_without_a_credential_lock_nobody_out():
    # ten <img src=http://127.0.0.1:9090/ps> on any web page the operator's browser shows send no token: they
    # get 401, but are no failed attempts (they locked out the operator, Prometheus and kago ps for 60 s)
    with tempfile.TemporaryDirectory(prefix="kago-admin-auth-") as tmp:
        s = Bare(tmp)
        try:
            assert s.started(), s.stderr()
            port = s.admin_port()
            for _ in range(12):
                assert raw_status(port, "GET /ps HTTP/1.1\r\nHost: a\r\nOrigin: http://evil.example\r\n"
                                        "Connection: close\r\n\r\n")[0] == 401
            assert admin_request(port, s.root, "/ps")[0] == 200
            # a token in the URL is starred in the log whatever the method or other credentials
            raw_status(port, "HEAD /?token=s3cretguess HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            raw_status(port, "GET /ps?token=s3cretguess HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n"
                             "Connection: close\r\n\r\n")
            assert "s3cretguess" not in s.stderr() and "token=***" in s.stderr(), s.stderr()
        finally:
            assert s.stop() == 0, s.stderr()


def test_admin_connections_are_bounded_and_a_stalled_request_is_closed():
    # idle connections to the admin port (no token needed to open one) used to stay forever: 20,000 of them
    # took serve's descriptors, and the proxy stopped answering
    with tempfile.TemporaryDirectory(prefix="kago-admin-auth-") as tmp:
        s = Bare(tmp)
        socks = []
        try:
            assert s.started(), s.stderr()
            port = s.admin_port()
            for _ in range(300):
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.sendall(b"GET /ps HTTP/1.1\r\nX: ")
                socks.append(c)
            time.sleep(0.5)

            def closed(c):
                c.setblocking(False)
                try:
                    return c.recv(1) == b""
                except BlockingIOError:
                    return False
                except ConnectionResetError:
                    return True
            assert sum(closed(c) for c in socks) >= 300 - 256, "past 256 at once, the next are closed"
            assert raw_status(s.port, "GET / HTTP/1.1\r\nHost: nope.test\r\nConnection: close\r\n\r\n")[0] == 404
            assert wait_for(lambda: all(closed(c) for c in socks), 16), "a request not whole within 10 s is closed"
            assert admin_request(port, s.root, "/ps")[0] == 200
        finally:
            for c in socks:
                c.close()
            assert s.stop() == 0, s.stderr()


def test_the_unix_socket_refuses_rebound_hosts_and_a_reload_without_its_header():
    # a browser reaching an `ssh -L` forward of the socket through a DNS-rebound name sends that name
    with tempfile.TemporaryDirectory(prefix="kago-admin-auth-") as tmp:
        sock = os.path.join(tmp, "admin.sock")
        s = Bare(tmp, admin=f"unix:{sock}")
        try:
            assert s.started(), s.stderr()
            assert unix_status(sock, "GET /ps HTTP/1.1\r\nHost: attacker.example:9090\r\n\r\n")[0] == 403
            for host in ("localhost:9090", "kago", "127.0.0.1:9090", "[::1]:9090"):
                assert unix_status(sock, f"GET /ps HTTP/1.1\r\nHost: {host}\r\n\r\n")[0] == 200, host
            assert unix_status(sock, "POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")[0] == 403
            rl = kago("reload", "--admin", f"unix:{sock}")
            assert rl.returncode == 0 and rl.stdout == "reloaded\n", rl
        finally:
            assert s.stop() == 0, s.stderr()


def test_the_dashboards_login_by_url_redirects_within_the_site():
    with tempfile.TemporaryDirectory(prefix="kago-admin-auth-") as tmp:
        s = Bare(tmp)
        try:
            assert s.started(), s.stderr()
            tok = admin_token(s.root)
            code, out = raw_status(s.admin_port(), f"GET //evil.example/x?token={tok} HTTP/1.1\r\nHost: a\r\n"
                                                   "Connection: close\r\n\r\n")
            loc = [l for l in out.split(b"\r\n") if l.lower().startswith(b"location:")]
            assert code == 303 and loc and not loc[0].split(b":", 1)[1].strip().startswith(b"//"), out[:300]
        finally:
            assert s.stop() == 0, s.stderr()


def test_sigterm_while_a_reload_is_answered_exits_cleanly():
    # a reload of many apps takes long enough for SIGTERM to land while its answer is written: serve closed
    # the admin connection as it stopped, then the answer's write callback closed it again: uv_close
    # asserted and serve died of SIGABRT, leaving its lock and sockets behind
    with tempfile.TemporaryDirectory(prefix="kago-admin-test-") as tmp:
        b = Bare(tmp)
        with open(os.path.join(b.conf, "apps.rb"), "w") as f:
            f.write("".join(app(f"r{i}", [f"r{i}.test"], "exec sleep 1000") for i in range(1500)))
        try:
            assert b.started(), b.stderr()
            s = socket.create_connection(("127.0.0.1", b.admin_port()), timeout=5)
            s.sendall(f"POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                      f"{admin_token(b.root)}\r\nContent-Length: 0\r\n\r\n".encode())
            time.sleep(0.02)
            assert b.stop() == 0, b.stderr()
            s.close()
            assert "Assertion" not in b.stderr(), b.stderr()
            assert root_leftovers(b.root) == [], b.stderr()
        finally:
            b.stop()
