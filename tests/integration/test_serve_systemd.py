"""kago serve under systemd, without systemd: the test is the service manager. It listens on its own
NOTIFY_SOCKET (an AF_UNIX datagram socket, path or abstract) and checks READY=1, RELOADING=1/READY=1,
WATCHDOG=1, STATUS= and STOPPING=1; it makes the listening socket a .socket unit would and passes it as
fd 3 (LISTEN_PID, LISTEN_FDS=1); and it runs `systemd-analyze verify` on contrib/systemd's units."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from serve_util import KAGO, REPO, STATIC, Server, admin_request, app, free_port, request, root_leftovers

UNITS = os.path.join(REPO, "contrib", "systemd")
APPS = app("web", ["web.localhost"], STATIC, idle_timeout="1m")


class Notify:
    """The manager's end of NOTIFY_SOCKET."""

    def __init__(self, abstract=False):
        self.tmp = tempfile.mkdtemp(prefix="kago-notify-test-")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"kago-notify-test-{os.getpid()}-{os.path.basename(self.tmp)}"
            self.sock.bind("\0" + name)
            self.addr = "@" + name
        else:
            self.addr = os.path.join(self.tmp, "notify")
            self.sock.bind(self.addr)
        self.msgs = []  # (monotonic time, {key: value})

    def recv(self, timeout):
        """The next message as a dict, or None after timeout seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        kv = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.msgs.append((time.monotonic(), kv))
        return kv

    def wait_for(self, key, value="1", timeout=20):
        """Messages up to and including the first with key=value; fails after timeout."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            m = self.recv(deadline - time.monotonic())
            if m is None:
                break
            seen.append(m)
            if m.get(key) == value:
                return seen
        raise AssertionError(f"no {key}={value} within {timeout}s; got {seen}")

    def close(self):
        self.sock.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class NotifiedServer(Server):
    """Server that returns as soon as it is started (Server waits for the ports): READY=1 must tell."""

    def __init__(self, notify, env=None, apps_rb=APPS):
        self.tmp = tempfile.mkdtemp(prefix="kago-serve-test-")
        self.conf = os.path.join(self.tmp, "conf")
        self.root = os.path.join(self.tmp, "root")
        os.mkdir(self.conf)
        self.write_config(apps_rb)
        self.port, self.admin = free_port(), free_port()
        self.log = os.path.join(self.tmp, "access.log")
        self.errlog = open(os.path.join(self.tmp, "stderr.log"), "w+")
        self.seen = set()
        self.proc = subprocess.Popen(
            [KAGO, "--root", self.root, "serve", "--config", self.conf, "--listen", f"127.0.0.1:{self.port}",
             "--admin", f"127.0.0.1:{self.admin}", "--access-log", self.log],
            stdout=subprocess.DEVNULL, stderr=self.errlog,
            env={**os.environ, "NOTIFY_SOCKET": notify.addr, **(env or {})})


@pytest.fixture
def notify():
    n = Notify()
    yield n
    n.close()


def wait_status(notify, want, timeout=10):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        m = notify.recv(deadline - time.monotonic())
        if m is None:
            break
        seen.append(m)
        if m.get("STATUS") == want:
            return
    raise AssertionError(f"no STATUS={want}; got {seen}")


def finish(srv, notify=None):
    if notify:
        srv.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING")
        srv.proc.wait(30)  # (one SIGTERM, as systemd sends)
    assert srv.stop() == 0, srv.stderr()
    assert srv.leftovers() == []
    shutil.rmtree(srv.tmp, ignore_errors=True)


def test_ready_once_listening_status_and_stopping(notify):
    srv = NotifiedServer(notify)
    try:
        msgs = notify.wait_for("READY")
        # READY=1 means the listeners answer now, with no retry
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
        socket.create_connection(("127.0.0.1", srv.admin), timeout=1).close()
        wait_status(notify, "1 apps, 0 instances (0 ready)")
        assert request(srv.port, "web.localhost")[2] == b"hello-static\n"
        # the summary follows the instances (sent about once a second when it changed)
        wait_status(notify, "1 apps, 1 instances (1 ready)")
        assert srv.proc.poll() is None
        srv.proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING")
        assert srv.proc.wait(30) == 0, srv.stderr()
        assert not [m for _, m in notify.msgs if "WATCHDOG" in m]  # no WATCHDOG_USEC: no pings
    finally:
        finish(srv)


def test_reload_by_sighup_and_admin_api(notify):
    srv = NotifiedServer(notify)
    try:
        notify.wait_for("READY")
        for how in ("SIGHUP", "POST /reload"):
            t0 = time.monotonic()
            if how == "SIGHUP":
                srv.proc.send_signal(signal.SIGHUP)
            else:
                assert admin_request(srv.admin, srv.root, "/reload", method="POST")[0] == 200
            msgs = notify.wait_for("RELOADING")
            usec = int(msgs[-1]["MONOTONIC_USEC"])  # CLOCK_MONOTONIC, as systemd >= 253 wants
            assert t0 - 1 <= usec / 1e6 <= time.monotonic() + 1, (how, usec, t0)
            notify.wait_for("READY")
        # an invalid config: READY=1 again (the running config is kept) and STATUS= says why
        srv.write_config("Kago.app 'broken' do |a|\n  a.nonsense 1\nend\n")
        srv.proc.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        ready = notify.wait_for("READY")[-1]
        assert ready.get("STATUS", "").startswith("reload failed"), ready
        assert request(srv.port, "web.localhost")[0] == 200
    finally:
        finish(srv, notify)


def test_watchdog_pings_at_half_the_interval():
    n = Notify(abstract=True)  # systemd's usual NOTIFY_SOCKET=@/org/freedesktop/systemd1/notify/...
    srv = NotifiedServer(n, env={"WATCHDOG_USEC": "400000"})  # pings every 200 ms
    try:
        n.wait_for("READY")
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            n.recv(t_end - time.monotonic())
        pings = [t for t, m in n.msgs if m.get("WATCHDOG") == "1"]
        assert 7 <= len(pings) <= 13, pings
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.4, gaps  # never late enough for systemd to give up
    finally:
        finish(srv, n)
        n.close()


def test_watchdog_for_another_pid_is_ignored(notify):
    srv = NotifiedServer(notify, env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    try:
        notify.wait_for("READY")
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            notify.recv(t_end - time.monotonic())
        assert not [m for _, m in notify.msgs if "WATCHDOG" in m]
    finally:
        finish(srv, notify)


def start_activated(sock, extra_env=None, listen_port=None):
    """serve as systemd starts it for kago-serve.socket: the socket at fd 3, LISTEN_PID its own pid."""
    tmp = tempfile.mkdtemp(prefix="kago-serve-test-")
    conf, root = os.path.join(tmp, "conf"), os.path.join(tmp, "root")
    os.mkdir(conf)
    with open(os.path.join(conf, "apps.rb"), "w") as f:
        f.write(APPS)
    admin = free_port()
    errlog = open(os.path.join(tmp, "stderr.log"), "w+")
    fd = sock.fileno()
    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http", **(extra_env or {})}
    # --listen names the socket's own port: serve must not try to bind it (that would fail)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'export LISTEN_PID=$$; exec "$@"', "sh", KAGO, "--root", root, "serve",
         "--config", conf, "--listen", f"127.0.0.1:{listen_port or sock.getsockname()[1]}",
         "--admin", f"127.0.0.1:{admin}", "--access-log", "off"],
        stdout=subprocess.DEVNULL, stderr=errlog, env=env, close_fds=False,
        preexec_fn=lambda: os.dup2(fd, 3))
    return tmp, root, admin, errlog, proc


def test_socket_activation_serves_on_the_passed_socket(notify):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    port = lsock.getsockname()[1]
    tmp, root, admin, errlog, proc = start_activated(lsock, {"NOTIFY_SOCKET": notify.addr})
    try:
        # a connection made before serve is ready waits in the backlog of the socket the "manager" holds
        early = socket.create_connection(("127.0.0.1", port), timeout=30)
        notify.wait_for("READY")
        early.sendall(b"GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while (chunk := early.recv(65536)):
            data += chunk
        early.close()
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello-static\n"), data[:200]
        assert request(port, "web.localhost")[2] == b"hello-static\n"
        errlog.flush()
        assert "(systemd socket)" in open(errlog.name).read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, open(errlog.name).read()
        # the manager's socket outlives serve: connections queue for the next one
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert root_leftovers(root) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lsock.close()
        errlog.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_socket_activation_refuses_a_socket_it_cannot_serve():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tmp, root, admin, errlog, proc = start_activated(udp, listen_port=free_port())
    try:
        assert proc.wait(15) != 0
        err = open(errlog.name).read()
        assert "systemd socket http: fd 3 is not a TCP socket" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        udp.close()
        errlog.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_no_notify_socket_changes_nothing():
    srv = Server(APPS)  # no NOTIFY_SOCKET: serve starts, serves and stops as always
    try:
        assert request(srv.port, "web.localhost")[0] == 200
        assert "NOTIFY_SOCKET" not in srv.stderr()
    finally:
        finish(srv)


def test_unit_files_verify():
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed: unit files not verified")
    tmp = tempfile.mkdtemp(prefix="kago-sdverify-test-")
    try:
        # verify wants ExecStart's binary to exist: point it at the one under test
        with open(os.path.join(UNITS, "kago-serve.service")) as f:
            svc = f.read().replace("/usr/local/bin/kago", os.path.abspath(KAGO))
        with open(os.path.join(tmp, "kago-serve.service"), "w") as f:
            f.write(svc)
        shutil.copy(os.path.join(UNITS, "kago-serve.socket"), tmp)
        r = subprocess.run([analyze, "verify", os.path.join(tmp, "kago-serve.socket"),
                            os.path.join(tmp, "kago-serve.service")], capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "kago-serve" not in out, out  # no warning about our units (unknown keys, bad values)
        for key in ("Type=notify", "WatchdogSec=", "ExecReload=", "NotifyAccess=main", "Requires=kago-serve.socket"):
            assert key in svc, key
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
