"""kago serve --cluster and kago app put/rm/list against a real single-member etcd on 127.0.0.1 (free ports,
a temp data dir, one per module): apps published to etcd are routed and served by real containers, changed,
removed; the node's key lives on a lease; etcd outages, restarts and compactions are survived.
Everything on loopback; nothing is left (serve, etcd, temp dirs)."""
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from serve_util import KAGO, ROOTFS, Server, free_port, request, wait_for

ETCD = shutil.which("etcd")
pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd is not installed (scripts/setup installs etcd-server)")


class Etcd:
    """One etcd member on 127.0.0.1 with free ports and its own data dir; stop() and start() keep both."""

    def __init__(self, tls=None):
        """tls: a TlsFiles; etcd then speaks HTTPS only and asks every client for a certificate."""
        self.tmp = tempfile.mkdtemp(prefix="kago-etcd-test-")
        self.client, self.peer = free_port(), free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.client}"
        self.proc = None
        self.start()

    def start(self):
        peer = f"http://127.0.0.1:{self.peer}"
        self.log = open(os.path.join(self.tmp, "etcd.log"), "a")
        tls = (["--cert-file", self.tls.server[0], "--key-file", self.tls.server[1], "--client-cert-auth",
                "--trusted-ca-file", self.tls.ca] if self.tls else [])
        self.proc = subprocess.Popen(
            [ETCD, "--name", "t1", "--data-dir", os.path.join(self.tmp, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"t1={peer}", "--initial-cluster-state", "new", *tls],
            stdout=self.log, stderr=self.log)
        assert wait_for(self.healthy, 20), "etcd did not become healthy: " + open(self.log.name).read()[-2000:]

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1, context=self.ssl()) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.log.close()

    def close(self):
        self.stop()
        shutil.rmtree(self.tmp)

    def ssl(self):
        if not self.tls:
            return None
        import ssl
        ctx = ssl.create_default_context(cafile=self.tls.ca)
        ctx.load_cert_chain(*self.tls.client)
        return ctx

    def call(self, op, body):
        req = urllib.request.Request(f"{self.url}/v3/{op}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5, context=self.ssl()) as r:
            return json.load(r)

    def get(self, key, prefix=False):
        """{key: kv dict with the value decoded} for key (or every key under the prefix)."""
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(key[:-1] + chr(ord(key[-1]) + 1))
        r = self.call("kv/range", body)
        out = {}
        for kv in r.get("kvs", []):
            kv["value"] = base64.b64decode(kv.get("value", "")).decode()
            out[base64.b64decode(kv["key"]).decode()] = kv
        return out

    def revision(self):
        return int(self.call("kv/range", {"key": b64("/")})["header"]["revision"])

    def put(self, key, value):
        return self.call("kv/put", {"key": b64(key), "value": b64(value)})

    def delete_prefix(self, prefix):
        self.call("kv/deleterange", {"key": b64(prefix), "range_end": b64(prefix[:-1] + chr(ord(prefix[-1]) + 1))})

    def compact(self):
        rev = self.revision()
        self.call("kv/compaction", {"revision": str(rev), "physical": True})
        return rev


def b64(s):
    return base64.b64encode(s.encode()).decode()


class Pausable:
    """A TCP relay from a free loopback port to etcd that the test can cut (every connection closed, new
    ones refused) and restore: etcd out of a node's reach while it stays up for the test."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.conns = []
        self.lock = threading.Lock()
        self.lsock = None
        self.resume()

    def resume(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(64)
        threading.Thread(target=self._accept, args=(self.lsock,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; no longer listening
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns = []


class Node(Server):
    """kago serve --cluster with its own state dir and ports (Server's helpers: ps, metric, stop, leftovers)."""

    def __init__(self, cluster, node, ttl="3s", extra_args=(), port=None):
        self.tmp = tempfile.mkdtemp(prefix="kago-cluster-test-")
        self.root = os.path.join(self.tmp, "root")
        self.port, self.admin = port or free_port(), free_port()
        self.node = node
        self.errlog = open(os.path.join(self.tmp, "stderr.log"), "w+")
        self.proc = subprocess.Popen(
            [KAGO, "--root", self.root, "serve", "--cluster", cluster, "--node", node,
             "--advertise", f"127.0.0.1:{self.port}", "--node-ttl", ttl, "--listen", f"127.0.0.1:{self.port}",
             "--admin", f"127.0.0.1:{self.admin}", "--access-log", "off", *extra_args],
            stdout=subprocess.DEVNULL, stderr=self.errlog)
        self.seen = set()

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.admin), timeout=0.2).close()
                return True
            except OSError:
                assert self.proc.poll() is None, self.stderr()
                return False
        assert wait_for(up, 20), self.stderr()

    def stderr(self):
        return getattr(self, "final_stderr", None) or Server.stderr(self)

    def get(self, host, path="/"):
        try:
            st, _, body = request(self.port, host, path, timeout=30)
            return st, body.decode(errors="replace")
        except OSError as e:
            return 0, str(e)

    def knows(self, app):
        """The node routes app (/metrics?app= answers 404 for an app it does not have)."""
        try:
            self.admin_get(f"/metrics?app={app}")
            return True
        except urllib.error.HTTPError:
            return False

    def close(self, killed=False):
        try:
            code = self.stop() if self.proc.poll() is None else (0 if killed else self.proc.returncode)
            # a SIGKILLed serve leaves its root lock (the next serve takes it); no instance ran
            left = [p for p in self.leftovers() if not (killed and p == os.path.join(self.root, ".serve"))]
        finally:
            self.final_stderr = Server.stderr(self)
            self.errlog.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
        assert code == 0, self.final_stderr
        assert left == []


def kagofile(name, host, text):
    cmd = f"mkdir -p /w && echo {text} > /w/index.html && exec /usr/sbin/httpd -f -p 8080 -h /w"
    return (f'Kago.app "{name}" do |a|\n  a.hosts "{host}"\n  a.container do |c|\n'
            f'    c.rootfs "{ROOTFS}", overlay: "16M"\n    c.command "/bin/sh", "-c", {json.dumps(cmd)}\n'
            f'    c.init\n  end\n  a.port 8080\nend\n')


def kago_app(etcd_url, *args, tmp=None, src=None):
    """kago app ARGS --cluster ...; with src, ARGS' FILE is written first (in tmp)."""
    return subprocess.run([KAGO, "app", *args, "--cluster", etcd_url], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def etcd():
    e = Etcd()
    yield e
    e.close()


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="kago-cluster-files-")
    yield d
    shutil.rmtree(d)


@pytest.fixture
def clean(etcd):
    etcd.delete_prefix("/kago/")
    yield etcd
    etcd.delete_prefix("/kago/apps/")


def put(etcd, tmp, name, host, text):
    path = os.path.join(tmp, f"{name}.rb")
    with open(path, "w") as f:
        f.write(kagofile(name, host, text))
    r = kago_app(etcd.url, "put", path)
    assert r.returncode == 0, r.stderr
    return r


def started_on_a(etcd, tmp, a, b, name, text):
    """App name (host NAME.test, answering text) put, known to nodes a and b, and started on a by a first
    request there: its instance key is in etcd."""
    put(etcd, tmp, name, f"{name}.test", text)
    for n in (a, b):
        assert wait_for(lambda: n.knows(name), 10), n.stderr()
    assert a.get(f"{name}.test") == (200, text + "\n"), a.stderr()
    assert wait_for(lambda: len(etcd.get(f"/kago/instances/{name}/", prefix=True)) == 1, 5)


def ready_instances(node, app):
    return sorted(i["name"] for i in node.instances(app, states=("ready",)))


def test_put_is_routed_and_served_changed_deploys_rm_drains(clean, tmp):
    etcd = clean
    n = Node(etcd.url.replace("http://", "etcd://"), "n1")
    try:
        r = put(etcd, tmp, "hello", "hello.test", "v1")
        assert "app hello published" in r.stdout
        assert wait_for(lambda: n.knows("hello"), 5), n.stderr()
        assert n.get("hello.test") == (200, "v1\n")
        first = ready_instances(n, "hello")
        assert len(first) == 1
        # `kago app list`: name, hosts, revision
        r = kago_app(etcd.url, "list")
        rev = etcd.get("/kago/apps/hello")["/kago/apps/hello"]["mod_revision"]
        assert r.returncode == 0 and r.stdout.split("\n")[1].split() == ["hello", "hello.test", str(rev)], r.stdout
        # a changed container: new instances serve, the old one drains
        put(etcd, tmp, "hello", "hello.test", "v2")
        assert wait_for(lambda: n.get("hello.test") == (200, "v2\n"), 10), n.stderr()
        assert wait_for(lambda: ready_instances(n, "hello") and set(ready_instances(n, "hello")).isdisjoint(first),
                        10), n.ps()
        assert "its container changed" in n.stderr()
        # rm: 404 at once, its instances drain away
        r = kago_app(etcd.url, "rm", "hello")
        assert r.returncode == 0 and "app hello removed" in r.stdout, r.stderr
        assert wait_for(lambda: n.get("hello.test")[0] == 404, 5)
        assert wait_for(lambda: not n.ps().get("hello"), 20), n.ps()
        r = kago_app(etcd.url, "rm", "hello")
        assert r.returncode == 1 and "app hello: not in the cluster" in r.stderr
        assert n.metric("kago_cluster_etcd_up") == 1
        assert n.metric("kago_cluster_nodes") == 1
        assert n.metric("kago_cluster_watch_revision") >= etcd.revision() - 1
    finally:
        n.close()


def test_bad_kagofile_is_refused_with_file_line_and_nothing_written(clean, tmp):
    etcd = clean
    before = etcd.revision()
    bad = os.path.join(tmp, "bad.rb")
    with open(bad, "w") as f:
        f.write('Kago.app "bad" do |a|\n  a.hosts "bad.test"\n  a.no_such_knob 3\nend\n')
    r = kago_app(etcd.url, "put", bad)
    assert r.returncode == 1 and f"{bad}:3: " in r.stderr and "no_such_knob" in r.stderr, r.stderr
    two = os.path.join(tmp, "two.rb")
    with open(two, "w") as f:
        f.write(kagofile("a1", "a1.test", "x") + kagofile("a2", "a2.test", "y"))
    r = kago_app(etcd.url, "put", two)
    assert r.returncode == 1 and "defines 2 apps" in r.stderr, r.stderr
    r = kago_app(etcd.url, "put", os.path.join(tmp, "missing.rb"))
    assert r.returncode == 1 and "missing.rb" in r.stderr and "No such file" in r.stderr, r.stderr
    assert etcd.get("/kago/apps/", prefix=True) == {} and etcd.revision() == before
    r = subprocess.run([KAGO, "app", "list", "--cluster", "etcd://127.0.0.1:1"], capture_output=True, text=True)
    assert r.returncode == 1 and "etcd 127.0.0.1:1 kv/range: connection refused" in r.stderr, r.stderr


def test_node_key_lives_on_a_lease_gone_after_sigterm_and_after_sigkill_within_the_ttl(clean):
    etcd = clean
    url = etcd.url.replace("http://", "etcd://")
    n = Node(url, "lease1", ttl="3s")
    try:
        kv = wait_for(lambda: etcd.get("/kago/nodes/lease1").get("/kago/nodes/lease1"), 5)
        assert kv and int(kv.get("lease", 0)) != 0
        assert json.loads(kv["value"])["addr"] == f"127.0.0.1:{n.port}"
        # kept alive past its TTL
        time.sleep(4)
        assert etcd.get("/kago/nodes/lease1")
    finally:
        n.close()  # SIGTERM: the lease is revoked before serve exits
    assert etcd.get("/kago/nodes/lease1") == {}
    assert "lease revoked" in n.stderr()

    k = Node(url, "lease2", ttl="3s")
    try:
        assert wait_for(lambda: etcd.get("/kago/nodes/lease2"), 5)
        k.proc.kill()
        k.proc.wait()
        t0 = time.time()
        assert wait_for(lambda: etcd.get("/kago/nodes/lease2") == {}, 6)
        assert time.time() - t0 <= 3.5  # the TTL, plus etcd's expiry check
    finally:
        k.close(killed=True)


def test_etcd_stopped_and_restarted_warm_app_keeps_serving_and_new_put_is_seen(clean, tmp):
    etcd = clean
    n = Node(etcd.url.replace("http://", "etcd://"), "n1", ttl="3s")
    try:
        put(etcd, tmp, "warm", "warm.test", "warm")
        assert wait_for(lambda: n.knows("warm"), 5)
        assert n.get("warm.test") == (200, "warm\n")
        etcd.stop()
        assert wait_for(lambda: n.metric("kago_cluster_etcd_up") == 0, 10), n.stderr()
        assert n.get("warm.test") == (200, "warm\n")  # routing what it knows
        time.sleep(4)  # longer than the node's TTL: its lease expires with etcd away
        assert n.get("warm.test") == (200, "warm\n")
        assert "cluster: watching:" in n.stderr() or "cluster: keeping" in n.stderr()
        etcd.start()
        assert wait_for(lambda: n.metric("kago_cluster_etcd_up") == 1, 15), n.stderr()
        put(etcd, tmp, "late", "late.test", "late")
        assert wait_for(lambda: n.knows("late"), 5), n.stderr()
        assert n.get("late.test") == (200, "late\n")
        assert n.get("warm.test") == (200, "warm\n")
        assert "answers again" in n.stderr()
        # the node is registered again (a new lease)
        assert wait_for(lambda: etcd.get("/kago/nodes/n1"), 10), n.stderr()
    finally:
        if etcd.proc.poll() is not None:
            etcd.start()
        n.close()


def test_etcd_made_anew_at_a_lower_revision_is_listed_again(clean, tmp):
    # etcd restored from an older snapshot or made anew: its revisions begin again below what the node saw;
    # a watch from the old revision would never see what is put there now
    etcd = clean
    n = Node(etcd.url.replace("http://", "etcd://"), "n1", ttl="3s")
    try:
        for i in range(20):  # (the revision well above what a new etcd starts at)
            put(etcd, tmp, f"old{i % 2}", f"old{i % 2}.test", f"old{i}")
        assert wait_for(lambda: n.knows("old1"), 5)
        etcd.stop()
        shutil.rmtree(os.path.join(etcd.tmp, "data"))
        etcd.start()
        put(etcd, tmp, "fresh", "fresh.test", "fresh")
        assert wait_for(lambda: n.knows("fresh"), 15), n.stderr()
        assert n.get("fresh.test") == (200, "fresh\n"), n.stderr()[-3000:]
        assert "etcd's revision went back" in n.stderr()
        assert wait_for(lambda: not n.knows("old0"), 10), "an app the new etcd does not have is gone"
    finally:
        n.close()


def test_advertise_must_be_reachable_by_other_nodes(tmp):
    # the address other nodes forward to: 0.0.0.0 (each would forward to itself), IPv6, a bad port: refused
    for adv in ("0.0.0.0:8080", "[::1]:8080", "127.0.0.1:99999", "unix:/x"):
        r = subprocess.run([KAGO, "--root", os.path.join(tmp, "adv"), "serve", "--cluster", "etcd://127.0.0.1:9",
                            "--node", "x", "--advertise", adv, "--listen", f"127.0.0.1:{free_port()}",
                            "--admin", "off"], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and f"--advertise {adv}: other nodes reach this one there" in r.stderr, \
            (adv, r.stderr)


def test_an_instance_key_lost_while_the_instance_runs_is_put_again(clean, tmp):
    # a put that failed while etcd was away a moment, or someone's delete: the key comes back at the next
    # keepalive tick, else the other nodes waited on the claim and answered 503 after 10 s, for good
    etcd = clean
    url = etcd.url.replace("http://", "etcd://")
    a, b = Node(url, "a"), Node(url, "b")
    try:
        started_on_a(etcd, tmp, a, b, "back", "back")
        etcd.delete_prefix("/kago/instances/back/")
        assert wait_for(lambda: len(etcd.get("/kago/instances/back/", prefix=True)) == 1, 5), a.stderr()
        t = time.monotonic()
        assert b.get("back.test") == (200, "back\n"), b.stderr()
        assert time.monotonic() - t < 5
    finally:
        a.close()
        b.close()


def test_a_second_serve_with_a_nodes_name_is_refused_until_the_first_is_gone(clean, tmp):
    # cloned machines share a host name, --node's default: the second serve put its key over the first's
    # and the two took each other's instances for their own. Registration is a txn now: the second is
    # refused (said once, with the holder), the first keeps its key and is not disturbed, and the second
    # registers once the first is gone.
    etcd = clean
    url = etcd.url.replace("http://", "etcd://")
    a, b = Node(url, "a"), Node(url, "b")
    a2 = None
    try:
        started_on_a(etcd, tmp, a, b, "dup", "dup")
        lease = etcd.get("/kago/nodes/a")["/kago/nodes/a"]["lease"]
        a2 = Node(url, "a")
        assert wait_for(lambda: "not registering: node name a is another serve's" in a2.stderr(), 10), a2.stderr()
        assert f'"addr":"127.0.0.1:{a.port}"' in a2.stderr()
        time.sleep(2.5)  # (a keepalive tick or two: tried again, said once)
        assert a2.stderr().count("not registering") == 1, a2.stderr()
        assert etcd.get("/kago/nodes/a")["/kago/nodes/a"]["lease"] == lease
        assert "another serve registered" not in a.stderr(), a.stderr()
        st, body = a2.get("dup.test")  # (a's instance is under its own name: it starts none, says why)
        assert st == 503 and "node name a is another serve's" in body, (st, body)
        assert a.get("dup.test") == (200, "dup\n"), a.stderr()
        a.close()
        assert wait_for(lambda: "registered as /kago/nodes/a" in a2.stderr(), 5), a2.stderr()
        kv = etcd.get("/kago/nodes/a")["/kago/nodes/a"]
        assert json.loads(kv["value"])["addr"] == f"127.0.0.1:{a2.port}"
    finally:
        for n in (a, b, a2):
            if n and not n.errlog.closed:
                n.close()


def test_a_serve_killed_and_started_again_takes_its_key_over_at_once(clean):
    # the same address's key is the node's own earlier serve's (SIGKILL, a crash): taken over, not waited for
    etcd = clean
    url = etcd.url.replace("http://", "etcd://")
    k = Node(url, "again", ttl="30s")
    k2 = None
    try:
        assert wait_for(lambda: etcd.get("/kago/nodes/again"), 5)
        k.proc.kill()
        k.proc.wait()
        k2 = Node(url, "again", ttl="30s", port=k.port)
        assert wait_for(lambda: "registered as /kago/nodes/again" in k2.stderr(), 5), k2.stderr()
        assert "was an earlier serve's of this address" in k2.stderr()
        kv = etcd.get("/kago/nodes/again")["/kago/nodes/again"]
        assert json.loads(kv["value"])["pid"] == k2.proc.pid
    finally:
        k.close(killed=True)
        if k2:
            k2.close()


def test_compaction_while_the_node_is_cut_off_relists(clean, tmp):
    etcd = clean
    relay = Pausable(etcd.client)
    n = Node(f"etcd://127.0.0.1:{relay.port}", "n1")
    try:
        put(etcd, tmp, "keep", "keep.test", "keep")
        put(etcd, tmp, "gone", "gone.test", "gone")
        assert wait_for(lambda: n.knows("keep") and n.knows("gone"), 5), n.stderr()
        relay.cut()
        assert wait_for(lambda: n.metric("kago_cluster_etcd_up") == 0, 10)
        # while it cannot see: one app added, one removed, one changed, and the history compacted
        put(etcd, tmp, "new", "new.test", "new")
        assert kago_app(etcd.url, "rm", "gone").returncode == 0
        put(etcd, tmp, "keep", "keep.test", "keep2")
        rev = etcd.compact()
        relay.resume()
        assert wait_for(lambda: n.knows("new") and not n.knows("gone"), 15), n.stderr()
        assert "compacted" in n.stderr() and "listing the apps again" in n.stderr(), n.stderr()
        assert n.get("keep.test") == (200, "keep2\n")
        assert n.get("new.test") == (200, "new\n")
        assert n.get("gone.test")[0] == 404
        assert n.metric("kago_cluster_watch_revision") >= rev
    finally:
        n.close()
        relay.cut()


def test_start_with_etcd_unreachable_serves_nothing_then_loads_the_apps(clean, tmp):
    etcd = clean
    put(etcd, tmp, "early", "early.test", "early")
    relay = Pausable(etcd.client)
    relay.cut()
    n = Node(f"etcd://127.0.0.1:{relay.port}", "n1")
    try:
        assert wait_for(lambda: "connection refused" in n.stderr(), 5), n.stderr()
        assert n.get("early.test")[0] == 404
        assert n.metric("kago_cluster_etcd_up") == 0
        relay.resume()
        assert wait_for(lambda: n.knows("early"), 10), n.stderr()
        assert n.get("early.test") == (200, "early\n"), n.stderr()
    finally:
        n.close()
        relay.cut()


def test_two_nodes_see_every_app(clean, tmp):
    etcd = clean
    url = etcd.url.replace("http://", "etcd://")
    a, b = Node(url, "a"), Node(url, "b")
    try:
        for i in range(3):
            put(etcd, tmp, f"app{i}", f"app{i}.test", f"body{i}")
        for n in (a, b):
            assert wait_for(lambda: all(n.knows(f"app{i}") for i in range(3)), 10), n.stderr()
            assert wait_for(lambda: n.metric("kago_cluster_nodes") == 2, 10), n.stderr()
        assert a.get("app1.test") == (200, "body1\n")
        assert b.get("app2.test") == (200, "body2\n")
    finally:
        a.close()
        b.close()


def test_propagation_time(clean, tmp):
    """app put (kago app put, a process) → the node routes the app; printed, and bounded loosely (a shared,
    loaded 2-core machine)."""
    etcd = clean
    n = Node(etcd.url.replace("http://", "etcd://"), "n1")
    try:
        times = []
        for i in range(int(os.environ.get("KAGO_CLUSTER_PUTS", "50"))):
            path = os.path.join(tmp, f"p{i}.rb")
            with open(path, "w") as f:
                f.write(kagofile(f"p{i}", f"p{i}.test", "x"))
            # publish through the gateway directly: kago app put's own start (mruby, process) is not the
            # propagation; the watch → evaluate → route path is
            src = open(path).read()
            t0 = time.perf_counter()
            etcd.put(f"/kago/apps/p{i}", src)
            assert wait_for(lambda: n.knows(f"p{i}"), 5, step=0.001)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1 if len(times) >= 100 else -1]
        print(f"\npropagation put -> routed over {len(times)} puts: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"max {times[-1]:.1f} ms")
        assert p50 < 500
    finally:
        n.close()


def test_cold_app_starts_on_one_node_the_other_forwards(clean, tmp):
    """Placement on loopback: the first request (on a) claims the app and starts it there; b forwards to a's
    instance (no second container); after a's instance is gone b starts it itself."""
    etcd = clean
    url = etcd.url.replace("http://", "etcd://")
    a, b = Node(url, "a"), Node(url, "b")
    try:
        started_on_a(etcd, tmp, a, b, "fw", "forwarded")
        assert b.get("fw.test") == (200, "forwarded\n"), b.stderr()
        # b holds a remote instance (NAME@a), a the only container
        assert [i.endswith("@a") for i in ready_instances(b, "fw")] == [True]
        assert len(ready_instances(a, "fw")) == 1 and "@" not in ready_instances(a, "fw")[0]
        assert b.metric("kago_cluster_forwarded_total") >= 1
        assert etcd.get("/kago/starting/fw", prefix=True) != {}
    finally:
        a.close()
        b.close()
    assert etcd.get("/kago/instances/", prefix=True) == {} and etcd.get("/kago/starting/", prefix=True) == {}


def test_sigterm_while_waiting_for_another_nodes_start_exits_at_once(clean, tmp):
    """b holds a request for the app a is starting (a slow start): SIGTERM of b answers it and exits at once,
    leaving nothing; a's start goes on and serves."""
    etcd = clean
    url = etcd.url.replace("http://", "etcd://")
    a, b = Node(url, "a"), Node(url, "b")
    try:
        path = os.path.join(tmp, "slow.rb")
        with open(path, "w") as f:
            f.write(kagofile("slow", "slow.test", "slow").replace("mkdir -p /w", "sleep 2 && mkdir -p /w"))
        assert kago_app(etcd.url, "put", path).returncode == 0
        for n in (a, b):
            assert wait_for(lambda: n.knows("slow"), 10), n.stderr()
        out = {}
        ta = threading.Thread(target=lambda: out.setdefault("a", a.get("slow.test")))
        ta.start()
        assert wait_for(lambda: etcd.get("/kago/starting/slow"), 5)
        tb = threading.Thread(target=lambda: out.setdefault("b", b.get("slow.test")))
        tb.start()
        assert wait_for(lambda: "waiting for its instance" in b.stderr(), 5), b.stderr()
        t0 = time.time()
        assert b.stop() == 0, b.stderr()
        assert time.time() - t0 < 1.5, b.stderr()
        tb.join(10)
        assert out["b"][0] in (0, 503), out["b"]
        ta.join(30)
        assert out["a"] == (200, "slow\n"), a.stderr()
    finally:
        a.close()
        b.close()


def peer_cert_der(port, name):
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return s.getpeercert(binary_form=True)


def test_app_certificates_from_etcd_are_served_and_go_with_the_app(clean, tmp):
    """An app put in etcd with a.tls (absolute paths: each node reads its own files) gets its certificate on the
    node's TLS listener by SNI; a relative path is refused with the reason; `kago app rm` takes the certificate
    away with the app."""
    import ssl
    etcd = clean
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", "site.key", "-out", "site.pem", "-days", "2", "-subj", "/CN=tls.test",
                    "-addext", "subjectAltName=DNS:tls.test"], cwd=tmp, check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", os.path.join(tmp, "site.pem"), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    tls = free_port()
    n = Node(etcd.url.replace("http://", "etcd://"), "n1", extra_args=["--listen-tls", f"127.0.0.1:{tls}"])
    try:
        def put_tls(name, cert, key):
            path = os.path.join(tmp, f"{name}.rb")
            with open(path, "w") as f:
                f.write(kagofile(name, "tls.test", "secure")[:-len("end\n")] +
                        f'  a.tls cert: "{cert}", key: "{key}"\nend\n')
            return kago_app(etcd.url, "put", path)

        r = put_tls("bad", "site.pem", "site.key")  # relative: refused before anything is written, with why
        assert r.returncode == 1 and "give absolute paths" in r.stderr and "nothing was written" in r.stderr, r
        assert etcd.get("/kago/apps/bad") == {}
        r = put_tls("secure", os.path.join(tmp, "site.pem"), os.path.join(tmp, "site.key"))
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda: n.knows("secure"), 10), n.stderr()
        assert peer_cert_der(tls, "tls.test") == der
        ctx = ssl.create_default_context(cafile=os.path.join(tmp, "site.pem"))
        with socket.create_connection(("127.0.0.1", tls), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="tls.test") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: tls.test\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"secure\n"), data[-200:]
        # rm: the name has no certificate any more (no default certificate: the unrecognized_name alert)
        assert kago_app(etcd.url, "rm", "secure").returncode == 0
        assert wait_for(lambda: not n.knows("secure"), 10)
        with pytest.raises(ssl.SSLError):
            peer_cert_der(tls, "tls.test")
        assert wait_for(lambda: not n.ps().get("secure"), 20), n.ps()
    finally:
        n.close()


class TlsFiles:
    """A CA, etcd's server certificate (IP 127.0.0.1) and a client certificate, made with the openssl CLI; and
    a second CA that signed nothing of etcd's."""

    def __init__(self, d):
        def run(*args):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

        for ca in ("ca", "other-ca"):
            run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=kago test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
        # (etcd's JSON gateway reaches its own gRPC server as a client with this certificate: clientAuth too)
        for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
                          ("client", "extendedKeyUsage=clientAuth\n")):
            run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=kago test {name}")
            with open(os.path.join(d, f"{name}.ext"), "w") as f:
                f.write("basicConstraints=CA:FALSE\n" + ext)
            run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
        self.ca, self.other_ca = os.path.join(d, "ca.pem"), os.path.join(d, "other-ca.pem")
        self.server = (os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
        self.client = (os.path.join(d, "client.pem"), os.path.join(d, "client.key"))


def test_etcd_over_tls_with_client_certificates(tmp):
    """etcd with HTTPS and --client-cert-auth: serve (--etcd-ca/--etcd-cert/--etcd-key) and `kago app`
    ($KAGO_ETCD_*) reach it over etcds://, verifying etcd's certificate; a wrong CA, a missing client
    certificate and a certificate without its key are refused, each saying why."""
    files = TlsFiles(tmp)
    etcd = Etcd(tls=files)
    n = None
    try:
        url = etcd.url.replace("https://", "etcds://")
        env = {**os.environ, "KAGO_ETCD_CA": files.ca, "KAGO_ETCD_CERT": files.client[0],
               "KAGO_ETCD_KEY": files.client[1]}

        def app_cmd(*args, env=env):
            return subprocess.run([KAGO, "app", *args, "--cluster", url], capture_output=True, text=True,
                                  timeout=30, env=env)

        path = os.path.join(tmp, "sec.rb")
        with open(path, "w") as f:
            f.write(kagofile("sec", "sec.test", "over-tls"))
        r = app_cmd("put", path)
        assert r.returncode == 0 and "app sec published" in r.stdout, r.stderr
        assert etcd.get("/kago/apps/sec")["/kago/apps/sec"]["value"].startswith('Kago.app "sec"')
        n = Node(url, "n1", extra_args=["--etcd-ca", files.ca, "--etcd-cert", files.client[0],
                                        "--etcd-key", files.client[1]])
        assert wait_for(lambda: n.knows("sec"), 10), n.stderr()
        assert n.get("sec.test") == (200, "over-tls\n")
        assert wait_for(lambda: n.metric("kago_cluster_etcd_up") == 1, 10)
        r = app_cmd("list")
        assert r.returncode == 0 and "sec" in r.stdout, r.stderr
        # etcd's certificate is not signed by the CA given
        r = app_cmd("list", env={**env, "KAGO_ETCD_CA": files.other_ca})
        assert r.returncode == 1 and "TLS handshake: certificate verify failed" in r.stderr, r.stderr
        # no client certificate: etcd refuses the handshake
        r = app_cmd("list", env={k: v for k, v in env.items() if k not in ("KAGO_ETCD_CERT", "KAGO_ETCD_KEY")})
        assert r.returncode == 1 and "no client certificate was given" in r.stderr, r.stderr
        # a plain etcd:// URL to the TLS port gets no answer it can read
        r = subprocess.run([KAGO, "app", "list", "--cluster", etcd.url.replace("https://", "etcd://")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, r.stdout
        # a certificate without its key
        r = subprocess.run([KAGO, "serve", "--cluster", url, "--etcd-cert", files.client[0]], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and "--etcd-key" in r.stderr, r.stderr
    finally:
        if n:
            n.close()
        etcd.close()
