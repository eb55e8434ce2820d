"""Helpers for kago serve's integration tests: a real server on free loopback ports with its own
state dir, apps written as Kagofiles, raw HTTP over sockets, and leftover checks."""
import atexit
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from waiting import wait_for  # noqa: F401 (the serve suites import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAGO = os.environ.get("KAGO", os.path.join(REPO, "build", "kago"))
ROOTFS = os.environ.get("KAGO_ROOTFS", "/var/lib/kago/rootfs/busybox")


def proc_stat(path):
    """The fields of a /proc/.../stat after the command's name: [state, ppid, ...] (stat field n is [n - 3])."""
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()


def nice_of(pid, tid=None):
    """A process's nice value (stat field 19), or one of its threads'."""
    return int(proc_stat(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat")[16])


def thread_nices(pid):
    """{tid: nice value} of each of a process's threads."""
    return {int(t): nice_of(pid, t) for t in os.listdir(f"/proc/{pid}/task")}


def children_named(pid, comm):
    """The pids of pid's children whose command name is comm (what exits meanwhile is left out)."""
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        if st.startswith(f"{p} ({comm}) ") and int(st.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(p))
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def app(name, hosts, command, port=8080, init=True, **policy):
    """A Kago.app block. command is a shell script run by /bin/sh -c in the instance (init=False: that shell
    is the init of the instance's pid namespace itself, without kago-init)."""
    lines = [f'Kago.app "{name}" do |a|',
             "  a.hosts " + ", ".join(f'"{h}"' for h in hosts),
             "  a.container do |c|",
             f'    c.rootfs "{ROOTFS}", overlay: "64M"',
             f'    c.command "/bin/sh", "-c", {json.dumps(command)}',
             *(["    c.init"] if init else []),  # a tiny PID 1 that forwards SIGTERM: the app is not PID 1
             "  end",
             f"  a.port {port}"]
    for k, v in policy.items():
        lines.append(f"  a.{k} {json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}")
    lines.append("end")
    return "\n".join(lines) + "\n"


STATIC = ("mkdir -p /srv/www && echo hello-static > /srv/www/index.html && "
          "dd if=/dev/zero of=/srv/www/big bs=1M count=32 2>/dev/null && exec /usr/sbin/httpd -f -p 8080 -h /srv/www")
CGI = r"""mkdir -p /srv/www/cgi-bin
printf '#!/bin/sh\nsleep ${QUERY_STRING:-0}\necho Content-Type: text/plain\necho\necho slept $(hostname)\n' > /srv/www/cgi-bin/sleep
printf '#!/bin/sh\necho Content-Type: text/plain\necho\nhead -c $CONTENT_LENGTH | wc -c\n' > /srv/www/cgi-bin/count
chmod +x /srv/www/cgi-bin/*
exec /usr/sbin/httpd -f -p 8080 -h /srv/www"""
# An Upgrade endpoint: answers 101 and then echoes every byte (a WebSocket stand-in at the byte level).
UPGRADE = r"""printf '#!/bin/sh\nwhile read -r l; do [ "$l" = "$(printf "\\r")" ] && break; done\nprintf "HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n"\nexec cat\n' > /ws.sh
chmod +x /ws.sh
exec nc -ll -p 8080 -e /ws.sh"""


def keepalive_upstream(dirpath):
    """bench/serve-upstream.c (a small epoll HTTP/1.1 server that keeps connections alive, unlike busybox
    httpd) built static into dirpath/upstream; an app runs it with `a.data dirpath, to: "/opt"`."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "bench", "serve-upstream.c")
    if not shutil.which("gcc"):
        import pytest  # (this module is also used outside pytest)
        pytest.skip("gcc missing: the upstream is compiled static from bench/serve-upstream.c")
    subprocess.run(["gcc", "-O2", "-static", "-o", os.path.join(dirpath, "upstream"), src], check=True)
    return dirpath


def with_data(app_text, host_dir, to):
    """app_text (from app()) with a.data host_dir mounted read-only at to."""
    return app_text[:-len("end\n")] + f'  a.data "{host_dir}", to: "{to}", readonly: true\nend\n'


ADMIN_TOKEN = os.path.join(".serve", ".admin-token")  # under serve's --root


def admin_token(root):
    """The admin API's bearer token serve made (or read) under root."""
    with open(os.path.join(root, ADMIN_TOKEN)) as f:
        return f.read().strip()


def admin_request(admin, root, path, method="GET", token=None, timeout=10):
    """A request to the admin API on 127.0.0.1:admin with the token of root (or token; "": none):
    (status, headers (lower-case), body str); 4xx and 5xx are returned, not raised."""
    token = admin_token(root) if token is None else token
    h = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method=method, headers=h,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def root_leftovers(root):
    """What is left in a serve's --root: anything but logs/ (the apps' output outlives their instances),
    acme/ (certificates on demand and the account key, for the next serve) and the admin token (it
    outlives serve, for the next one), and in logs/ the instances' FIFOs."""
    if not os.path.isdir(root):
        return []
    rec = os.path.join(root, ".serve")
    return ([os.path.join(root, d) for d in os.listdir(root) if d not in ("logs", "acme") and
             not (d == ".serve" and set(os.listdir(rec)) <= {".admin-token"})] +
            glob.glob(os.path.join(root, "logs", "*", "*.stdout")) + glob.glob(os.path.join(root, "logs", "*", "*.stderr")))


_TMPDIRS = []


def _remove_tmpdirs():
    """At the end of the test run: every Server's temp dir (config, logs, state), but never one with a mount
    below it (a serve that crashed left an instance: rmtree would walk into its root)."""
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for d in _TMPDIRS:
        if not any(m == d or m.startswith(d + "/") for m in mounts):
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_remove_tmpdirs)


_roots = set()  # every Server's root
_cgroups = {}  # instance name -> its cgroup path, as its state said while it lived


def cgroup_of(inst):
    """Instance inst's cgroup path under each hierarchy (kago/NAME, or kago/warm@... for a start that took a
    warm sandbox), as its state under the root of the serve that runs it names it; once its state is gone,
    what it said when last read (every instance a Server's ps() listed was read), else kago/NAME."""
    for root in _roots:
        try:
            with open(os.path.join(root, inst, "state.json")) as f:
                _cgroups[inst] = json.load(f)["spec"].get("cgroup_path") or f"kago/{inst}"
                break
        except (OSError, ValueError):
            pass
    return _cgroups.get(inst, f"kago/{inst}")


class Server:
    """kago serve with its own config dir, state dir and ports."""

    def __init__(self, apps_rb, extra_args=(), env=None, root=None, tls_only=False, port=None, wrap=()):
        """tls_only: self.port (port, or a free one) is a --listen-tls, and serve has no plain listener.
        wrap: a command that execs serve (its pid is serve's)."""
        self.tmp = tempfile.mkdtemp(prefix="kago-serve-test-")
        _TMPDIRS.append(self.tmp)
        self.conf = os.path.join(self.tmp, "conf")
        self.root = root or os.path.join(self.tmp, "root")  # (a root of an earlier serve: its state again)
        _roots.add(self.root)
        os.mkdir(self.conf)
        self.write_config(apps_rb)
        self.port, self.admin = port or free_port(), free_port()
        self.log = os.path.join(self.tmp, "access.log")
        self.errlog = open(os.path.join(self.tmp, "stderr.log"), "w+")
        self.seen = set()  # instance names observed, for the leftover check
        # A port free_port found free may be taken by another process of this shared machine before serve
        # binds it: then serve says so and exits, and it starts again on ports picked anew.
        for attempt in range(3):
            self.proc = subprocess.Popen(
                [*wrap, KAGO, "--root", self.root, "serve", "--config", self.conf,
                 "--listen-tls" if tls_only else "--listen", f"127.0.0.1:{self.port}",
                 "--admin", f"127.0.0.1:{self.admin}", "--access-log", self.log, *extra_args],
                stdout=subprocess.DEVNULL, stderr=self.errlog, env={**os.environ, **(env or {})})
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    socket.create_connection(("127.0.0.1", self.admin), timeout=0.2).close()
                    return
                except OSError:
                    if self.proc.poll() is not None:
                        break
                    time.sleep(0.02)
            taken = re.search(r"listen 127\.0\.0\.1:(\d+): Address already in use", self.stderr())
            chosen = {self.admin} | ({self.port} if not port else set())
            if attempt == 2 or self.proc.poll() is None or not taken or int(taken.group(1)) not in chosen:
                break
            self.port, self.admin = port or free_port(), free_port()
            self.errlog.seek(0)
            self.errlog.truncate()
        raise RuntimeError("kago serve did not start: " + self.stderr())

    def write_config(self, apps_rb, name="apps.rb"):
        for f in glob.glob(os.path.join(self.conf, "*.rb")):
            os.unlink(f)
        with open(os.path.join(self.conf, name), "w") as f:
            f.write(apps_rb)

    def stderr(self):
        self.errlog.flush()
        with open(self.errlog.name) as f:
            return f.read()

    def admin_get(self, path):
        """GET path on the admin API with serve's token; the body (raises on a status but 200)."""
        st, _, body = admin_request(self.admin, self.root, path, timeout=5)
        if st != 200:
            raise urllib.error.HTTPError(path, st, body, None, None)
        return body

    def ps(self):
        data = json.loads(self.admin_get("/ps"))
        for a in data["apps"]:
            for i in a["instances"]:
                self.seen.add(i["name"])
                if i["name"] not in _cgroups:
                    cgroup_of(i["name"])
        return {a["name"]: a for a in data["apps"]}

    def instances(self, app, states=("starting", "ready", "draining", "stopping")):
        a = self.ps().get(app)
        return [i for i in a["instances"] if i["state"] in states] if a else []

    def cgroup(self, inst):
        """Instance inst's cgroup path under each hierarchy: cgroup_of(inst)."""
        return cgroup_of(inst)

    def metrics(self):
        return self.admin_get("/metrics")

    def metric(self, name, **labels):
        """One series' value; with app=, from /metrics?app=APP (every series of the app, zeros included:
        the whole /metrics leaves an idle app's zeros and its histograms out)."""
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        body = self.admin_get(f"/metrics?app={labels['app']}") if "app" in labels else self.metrics()
        for line in body.splitlines():
            if line.startswith(name + "{" + want + "}") or (not labels and line.startswith(name + " ")):
                return float(line.rsplit(" ", 1)[1])
        return None

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.ps()
            except OSError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def leftovers(self):
        """Every trace of this server's instances still on the host."""
        found = []
        found += root_leftovers(self.root)
        prefix = f"-{self.proc.pid:x}-"
        for d in glob.glob("/sys/fs/cgroup/*/kago/*") + glob.glob("/sys/fs/cgroup/kago/*"):
            if prefix in os.path.basename(d) and os.path.isdir(d):
                found.append(d)
        for line in open("/proc/mounts"):
            if self.tmp in line or any(n in line for n in self.seen):
                found.append(line.strip())
        return found


def serving(apps, **kw):
    """A module's one serve (a module-scoped fixture's body: `yield from serving(APPS)`). At its end SIGTERM
    drains, stops every instance and removes every trace: serve exits 0 and nothing is left."""
    s = Server(apps, **kw)
    yield s
    assert s.stop() == 0, s.stderr()
    assert s.leftovers() == []


def request(port, host, path="/", method="GET", body=None, headers=None, timeout=30):
    """One request on a new connection; returns (status, headers dict (lower-case), body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        h = {"Host": host, "Connection": "close"}
        h.update(headers or {})
        if body is not None:
            h["Content-Length"] = str(len(body))
        req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        s.sendall(req.encode() + (body or b""))
        return read_response(s)
    finally:
        s.close()


def raw(port, data, timeout=10):
    """Sends raw bytes, returns everything until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b
    finally:
        s.close()


def read_response(s, method="GET"):
    """Reads one response from socket s (Content-Length, chunked, or until close)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            raise ConnectionError("closed before the response head: %r" % buf)
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, hdrs, b""
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(rest) < n:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        return status, hdrs, rest[:n]
    if hdrs.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(65536)
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += s.recv(65536)
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return status, hdrs, body
    while True:
        b = s.recv(65536)
        if not b:
            return status, hdrs, rest
        rest += b


def statuses_at_once(s, names):
    """One request to each app NAME.test at once (a thread each): {name: status}."""
    out = {}
    ts = [threading.Thread(target=lambda n=n: out.setdefault(n, request(s.port, f"{n}.test")[0])) for n in names]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out
