"""kago as an OCI runtime (docs/oci.md): bundles with config.json, the runc command line as podman's conmon
and containerd's shim call it. Real containers, as root; every test has its own --root and bundle."""
import array
import glob
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import CGROUP_V, KAGO, ROOTFS, leftovers, wait_for


# What these tests' programs need (mknod, chown, files of other owners...): Docker's and podman's set, given
# explicitly (`kago spec` writes runc's three)
DOCKER_CAPS = ["CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
               "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
               "CAP_SETUID", "CAP_SYS_CHROOT"]


@pytest.fixture
def bundle(tmp_path):
    """A bundle from `kago spec`, its rootfs a copy-free bind of the busybox rootfs (root.path absolute)."""
    b = tmp_path / "bundle"
    b.mkdir()
    r = subprocess.run([KAGO, "spec"], cwd=b, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((b / "config.json").read_text())
    cfg["root"] = {"path": ROOTFS, "readonly": True}
    cfg["process"]["capabilities"] = {k: DOCKER_CAPS for k in ("bounding", "effective", "permitted")}
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def edit(b, fn):
    cfg = json.loads((b / "config.json").read_text())
    fn(cfg)
    (b / "config.json").write_text(json.dumps(cfg))


def detached(kago, *argv, tmp):
    """An OCI create or run --detach: the container keeps the stdio it is given (as conmon's pipes), so it
    gets files here, not the pipes a captured run would wait on. Returns (returncode, stderr)."""
    with open(tmp / "out", "w") as out, open(tmp / "err", "w") as err:
        rc = subprocess.run([KAGO, "--root", kago.root, *map(str, argv)], stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, timeout=60).returncode
    return rc, (tmp / "err").read_text()


def args(b, *argv):
    edit(b, lambda c: c["process"].__setitem__("args", list(argv)))


def test_spec_writes_a_config_that_refuses_to_be_overwritten(tmp_path):
    r = subprocess.run([KAGO, "spec"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["ociVersion"].startswith("1.") and cfg["root"]["path"] == "rootfs"
    assert cfg["process"]["args"] == ["sh"] and cfg["process"]["terminal"] is False
    # runc's and crun's spec: three capabilities and a read-only root (it had Docker's fourteen: NET_RAW,
    # MKNOD, SETFCAP...), no new privileges
    runc3 = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert {k: sorted(v) for k, v in cfg["process"]["capabilities"].items()} == \
        {k: runc3 for k in ("bounding", "effective", "permitted")}, cfg["process"]["capabilities"]
    assert cfg["root"]["readonly"] is True and cfg["process"]["noNewPrivileges"] is True
    r = subprocess.run([KAGO, "spec"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "exists" in r.stderr


def test_features():
    r = subprocess.run([KAGO, "features"], capture_output=True, text=True, check=True)
    f = json.loads(r.stdout)
    assert f["ociVersionMin"].startswith("1.0") and f["ociVersionMax"].startswith("1.1")
    assert "pid" in f["linux"]["namespaces"]
    sc = f["linux"]["seccomp"]   # what load_seccomp accepts: every operator, KILL_THREAD, the archs
    assert len(sc["operators"]) == 7 and "SCMP_CMP_MASKED_EQ" in sc["operators"]
    assert "SCMP_ACT_KILL_THREAD" in sc["actions"] and "SCMP_ARCH_X86_64" in sc["archs"]


def test_kill_all_short_form(kago, bundle, tmp_path):
    """runc's kill -a (as --all): every process of the container."""
    args(bundle, "/bin/sh", "-c", "sleep 60 & sleep 61")
    kago.names.add("oci-ka")
    rc, err = detached(kago, "run", "--bundle", bundle, "--detach", "oci-ka", tmp=tmp_path)
    assert rc == 0, err
    assert wait_for(lambda: len(json.loads(kago("ps", "--format", "json", "oci-ka").stdout)) == 2, timeout=10)
    r = kago("kill", "-a", "oci-ka", "KILL")
    assert r.returncode == 0, r
    assert wait_for(lambda: json.loads(kago("state", "oci-ka").stdout)["status"] == "stopped", timeout=10)
    kago("delete", "oci-ka", check=True)


def test_listen_fds_only_for_kagos_own_pid(kago, bundle):
    """LISTEN_FDS is kago's only when LISTEN_PID is its pid (as runc reads them): inherited from a parent
    (a socket-activated shell or service), it named fds kago does not have and create failed."""
    args(bundle, "/bin/sh", "-c", "echo fds=${LISTEN_FDS:-none}")
    env = {**os.environ, "LISTEN_FDS": "2", "LISTEN_PID": "1"}
    r = subprocess.run([KAGO, "--root", kago.root, "run", "--bundle", bundle, "oci-lf"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "fds=none\n", r
    with socket.socket() as s:   # LISTEN_PID kago's own: the socket is the command's fd 3
        s.bind(("127.0.0.1", 0))
        s.listen()
        fd = s.fileno()
        wrap = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.close(int(sys.argv[1])); "
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execv(sys.argv[2], sys.argv[2:])")
        r = subprocess.run(["/usr/bin/python3", "-c", wrap, str(fd), KAGO, "--root", kago.root, "run", "--bundle",
                            bundle, "oci-lf"], pass_fds=(fd,), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "fds=1\n", r


def test_run_bundle_exit_codes_and_output(kago, bundle):
    args(bundle, "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
    r = kago("run", "--bundle", bundle, "oci-r1")
    assert r.returncode == 3 and r.stdout == "out\n" and r.stderr == "err\n", r
    args(bundle, "/bin/sh", "-c", "exit 42")
    assert kago("run", "--bundle", bundle, "oci-r2").returncode == 42
    args(bundle, "/nonexistent")
    r = kago("run", "--bundle", bundle, "oci-r3")
    assert r.returncode != 0 and ("not found" in r.stderr or "No such file" in r.stderr), r.stderr
    assert not leftovers(["oci-r1", "oci-r2", "oci-r3"])


def test_config_fields_take_effect(kago, bundle):
    def change(c):
        c["process"]["env"] = ["PATH=/bin:/sbin", "OCI_TEST=yes"]
        c["process"]["cwd"] = "/tmp"
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}
        c["process"]["oomScoreAdj"] = 500
        c["linux"]["sysctl"] = {"net.ipv4.ping_group_range": "0 2000", "kernel.shmmni": "1000"}
        c["hostname"] = "oci-host"
        c["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 50}}
    edit(bundle, change)
    with open("/proc/sys/kernel/shmmni") as f:
        host_shmmni = f.read().strip()
    args(bundle, "/bin/sh", "-c", "echo $OCI_TEST $(pwd) $(id -u):$(id -g) $(hostname) $(cat /proc/self/oom_score_adj); id -G; cat /proc/sys/net/ipv4/ping_group_range /proc/sys/kernel/shmmni")
    r = kago("run", "--bundle", bundle, "oci-f1")
    assert r.returncode == 0 and r.stdout.split() == ["yes", "/tmp", "1000:1000", "oci-host", "500",
                                                      "1000", "10", "20", "0", "2000", "1000"], r
    with open("/proc/sys/kernel/shmmni") as f:
        assert f.read().strip() == host_shmmni, "the container's sysctl reached the host"
    edit(bundle, lambda c: c["linux"].__setitem__("sysctl", {"kernel.panic": "1"}))
    r = kago("run", "--bundle", bundle, "oci-f2")
    assert r.returncode != 0 and "kernel.panic: not namespaced" in r.stderr, r.stderr


def test_create_start_state_kill_delete(kago, bundle, tmp_path):
    args(bundle, "/bin/sh", "-c", "sleep 60")
    pidfile = tmp_path / "pid"
    kago.names.add("oci-c1")
    rc, err = detached(kago, "create", "--bundle", bundle, "--pid-file", pidfile, "oci-c1", tmp=tmp_path)
    assert rc == 0, err
    pid = int(pidfile.read_text())   # written before create returned, no newline (conmon uses atoi)
    assert pidfile.read_text() == str(pid)
    st = json.loads(kago("state", "oci-c1", check=True).stdout)
    assert st["status"] == "created" and st["pid"] == pid and st["id"] == "oci-c1"
    assert st["bundle"] == str(bundle) and st["ociVersion"].startswith("1.")
    assert time.strptime(st["created"], "%Y-%m-%dT%H:%M:%SZ")   # RFC 3339, as go-runc parses it
    # the init is no kago process's child: create left it to the caller's subreaper
    with open(f"/proc/{pid}/status") as f:
        ppid = int(next(l for l in f if l.startswith("PPid:")).split()[1])
    with open(f"/proc/{ppid}/cmdline", "rb") as f:
        assert b"kago" not in f.read().split(b"\0")[0], "a kago process stayed the init's parent"
    kago("start", "oci-c1", check=True)
    assert json.loads(kago("state", "oci-c1").stdout)["status"] == "running"
    kago("kill", "oci-c1", "9", check=True)   # podman and containerd send numbers
    assert wait_for(lambda: json.loads(kago("state", "oci-c1").stdout)["status"] == "stopped", timeout=10)
    r = kago("kill", "oci-c1", "15")
    assert r.returncode != 0 and "not running" in r.stderr
    kago("delete", "oci-c1", check=True)
    r = kago("state", "oci-c1")
    assert r.returncode != 0 and "does not exist" in r.stderr
    assert kago("delete", "--force", "oci-c1").returncode == 0   # as runc and crun: the shim relies on it
    assert not leftovers(["oci-c1"])


def test_console_socket_gets_the_master(kago, bundle, tmp_path):
    edit(bundle, lambda c: c["process"].__setitem__("terminal", True))
    args(bundle, "/bin/sh")
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    kago.names.add("oci-t1")
    rc, err = detached(kago, "create", "--bundle", bundle, "--console-socket", path, "oci-t1", tmp=tmp_path)
    assert rc == 0, err
    srv.settimeout(5)
    conn, _ = srv.accept()
    msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    assert msg and len(fds) == 1, (msg, fds)
    master = fds[0]
    kago("start", "oci-t1", check=True)
    os.write(master, b"tty; echo marker-$((6*7))\n")
    out = b""
    deadline = time.time() + 10
    while b"marker-42" not in out and time.time() < deadline:
        out += os.read(master, 4096)
    assert b"marker-42" in out and b"/dev/pts/0" in out, out
    os.write(master, b"exit 0\n")
    os.close(master)
    conn.close()
    srv.close()
    kago("delete", "--force", "oci-t1", check=True)
    r = kago("create", "--bundle", bundle, "oci-t2")
    assert r.returncode != 0 and "console-socket" in r.stderr
    assert not leftovers(["oci-t1", "oci-t2"])


def test_errors_name_the_json_path_and_log_as_json(kago, bundle, tmp_path):
    edit(bundle, lambda c: c["linux"].__setitem__("intelRdt", {"closID": "x"}))
    log = tmp_path / "log.json"
    r = kago("--log", log, "--log-format=json", "create", "--bundle", bundle, "oci-e1")
    assert r.returncode != 0 and "linux.intelRdt" in r.stderr, r.stderr
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert lines[-1]["level"] == "error" and "linux.intelRdt" in lines[-1]["msg"] and lines[-1]["time"]
    (bundle / "config.json").write_text('{\n  "ociVersion": "1.0.2",\n  "process": {,\n}')
    r = kago("create", "--bundle", bundle, "oci-e2")
    assert r.returncode != 0 and "config.json:3:" in r.stderr, r.stderr
    assert not leftovers(["oci-e1", "oci-e2"])
    assert not os.path.exists(os.path.join(kago.root, "oci-e1"))


@pytest.mark.parametrize("field,change,msg", [
    ("linux.seccomp.architectures", lambda c: c["linux"].setdefault("seccomp", {"defaultAction": "SCMP_ACT_ALLOW"})
     .__setitem__("architectures", ["SCMP_ARCH_X86_64", "SCMP_ARCH_FOO"]), 'unknown architecture "SCMP_ARCH_FOO"'),
    ("linux.maskedPaths", lambda c: c["linux"].__setitem__("maskedPaths", ["proc/kcore"]),
     '"proc/kcore": not an absolute path'),
])
def test_values_refused_never_ignored(kago, bundle, field, change, msg):
    edit(bundle, change)
    r = kago("run", "--bundle", bundle, "oci-r1")
    assert r.returncode != 0 and field in r.stderr and msg in r.stderr, r.stderr
    assert not leftovers(["oci-r1"]) and not os.path.exists(os.path.join(kago.root, "oci-r1"))


def test_systemd_cgroup_without_systemd_is_a_clear_error(kago, bundle):
    if os.path.exists("/run/systemd/system"):
        pytest.skip("systemd runs here: the error path needs a host without it")
    r = kago("--systemd-cgroup", "create", "--bundle", bundle, "oci-s1")
    assert r.returncode != 0 and "systemd not running" in r.stderr


def test_run_bundle_detached_writes_pid_and_orphans(kago, bundle, tmp_path):
    args(bundle, "/bin/sh", "-c", "sleep 60")
    pidfile = tmp_path / "pid"
    kago.names.add("oci-d1")
    rc, err = detached(kago, "run", "--bundle", bundle, "--detach", "--pid-file", pidfile, "oci-d1", tmp=tmp_path)
    assert rc == 0, err
    pid = int(pidfile.read_text())
    assert json.loads(kago("state", "oci-d1").stdout)["status"] == "running"
    kago("delete", "--force", "oci-d1", check=True)
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                    open(f"/proc/{pid}/stat").read().split()[2] == "Z", timeout=10)
    assert not leftovers(["oci-d1"])


def test_exec_process_and_update_resources(kago, bundle, tmp_path):
    from conftest import read_cgroup
    args(bundle, "/bin/sh", "-c", "sleep 60")
    kago.names.add("oci-x1")
    rc, err = detached(kago, "run", "--bundle", bundle, "--detach", "oci-x1", tmp=tmp_path)
    assert rc == 0, err
    cfg = json.loads((bundle / "config.json").read_text())
    proc = dict(cfg["process"], args=["/bin/sh", "-c", "echo in-exec $(id -u); exit 7"],
                user={"uid": 1000, "gid": 1000}, cwd="/tmp")
    (tmp_path / "p.json").write_text(json.dumps(proc))
    r = kago("exec", "--process", tmp_path / "p.json", "oci-x1")
    assert r.returncode == 7 and r.stdout == "in-exec 1000\n", r
    # detached, as conmon runs it: the pid file names a process the caller's subreaper reaps
    proc["args"] = ["/bin/sh", "-c", "sleep 30"]
    (tmp_path / "p.json").write_text(json.dumps(proc))
    rc, err = detached(kago, "exec", "--process", tmp_path / "p.json", "--detach", "--pid-file",
                       tmp_path / "xpid", "oci-x1", tmp=tmp_path)
    assert rc == 0, err
    assert os.path.exists(f"/proc/{int((tmp_path / 'xpid').read_text())}")
    (tmp_path / "res.json").write_text(json.dumps({"memory": {"limit": 96 << 20}, "pids": {"limit": 77}}))
    kago("update", "--resources", tmp_path / "res.json", "oci-x1", check=True)
    assert int(read_cgroup("oci-x1", "memory.limit_in_bytes", "memory.max", "memory")) == 96 << 20
    r = subprocess.run([KAGO, "--root", kago.root, "update", "--resources", "-", "oci-x1"],
                       input='{"blockIO": {"weight": 10}}', capture_output=True, text=True)
    assert r.returncode != 0 and "blockIO" in r.stderr, r.stderr
    kago("delete", "--force", "oci-x1", check=True)
    assert not leftovers(["oci-x1"])


def test_exec_pid_file_names_the_command(kago, bundle, tmp_path):
    """conmon and containerd's shim kill an exec by its pid file: it must name the command itself, not a
    kago process in between (killing that one left the command running in the container)."""
    args(bundle, "/bin/sh", "-c", "sleep 60")
    kago.names.add("oci-xp")
    rc, err = detached(kago, "run", "--bundle", bundle, "--detach", "oci-xp", tmp=tmp_path)
    assert rc == 0, err
    cfg = json.loads((bundle / "config.json").read_text())
    (tmp_path / "p.json").write_text(json.dumps(dict(cfg["process"], args=["/bin/sleep", "37"])))
    members = lambda: json.loads(kago("ps", "--format", "json", "oci-xp", check=True).stdout)
    rc, err = detached(kago, "exec", "--process", tmp_path / "p.json", "--detach", "--pid-file",
                       tmp_path / "xpid", "oci-xp", tmp=tmp_path)
    assert rc == 0, err
    pid = int((tmp_path / "xpid").read_text())
    with open(f"/proc/{pid}/cmdline") as f:
        assert f.read().split("\0")[:2] == ["/bin/sleep", "37"]
    assert pid in members()
    os.kill(pid, 9)
    assert wait_for(lambda: pid not in members(), timeout=10)
    assert len(members()) == 1, "the exec is gone from the container: only its init is left"
    # in the foreground too: kago waits for the command itself and exits as it did
    p = kago.popen("exec", "--process", tmp_path / "p.json", "--pid-file", tmp_path / "fpid", "oci-xp",
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_for(lambda: (tmp_path / "fpid").exists(), timeout=10)
    pid = int((tmp_path / "fpid").read_text())
    with open(f"/proc/{pid}/cmdline") as f:
        assert f.read().split("\0")[:2] == ["/bin/sleep", "37"]
    os.kill(pid, 9)
    assert p.wait(timeout=10) == 137, p.stderr.read()
    assert len(members()) == 1
    kago("delete", "--force", "oci-xp", check=True)
    assert not leftovers(["oci-xp"])


def test_exec_process_groups_rlimits_no_new_privileges(kago, bundle, tmp_path):
    """exec --process FILE: the file's user.additionalGids, rlimits and noNewPrivileges apply to the
    command (they were silently the container's / kago's own)."""
    args(bundle, "/bin/sh", "-c", "sleep 60")
    edit(bundle, lambda c: c["process"].update(noNewPrivileges=False, rlimits=[
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]))
    kago.names.add("oci-xg")
    rc, err = detached(kago, "run", "--bundle", bundle, "--detach", "oci-xg", tmp=tmp_path)
    assert rc == 0, err
    proc = dict(json.loads((bundle / "config.json").read_text())["process"],
                args=["/bin/sh", "-c", "id -G; ulimit -n; grep NoNewPrivs /proc/self/status"],
                user={"uid": 1000, "gid": 1000, "additionalGids": [7, 42]}, noNewPrivileges=True,
                rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}])
    (tmp_path / "p.json").write_text(json.dumps(proc))
    r = kago("exec", "--process", tmp_path / "p.json", "oci-xg")
    assert r.returncode == 0 and r.stdout.split() == ["1000", "7", "42", "123", "NoNewPrivs:", "1"], r
    kago("delete", "--force", "oci-xg", check=True)
    assert not leftovers(["oci-xg"])


def test_update_resources_minus_one_is_unlimited(kago, bundle, tmp_path):
    """update --resources with -1 (unlimited) for memory.limit, cpu.quota and pids.limit lifts the limit,
    as runc and crun do (it exited 0 and left it as it was)."""
    from conftest import cpu_quota, read_cgroup
    args(bundle, "/bin/sh", "-c", "sleep 60")
    edit(bundle, _set("linux.resources", {"memory": {"limit": 64 << 20}, "cpu": {"quota": 20000},
                                          "pids": {"limit": 50}}))
    kago.names.add("oci-un")
    rc, err = detached(kago, "run", "--bundle", bundle, "--detach", "oci-un", tmp=tmp_path)
    assert rc == 0, err
    mem = lambda: read_cgroup("oci-un", "memory.limit_in_bytes", "memory.max", "memory")
    pids = lambda: read_cgroup("oci-un", "pids.max", "pids.max", "pids")
    assert (int(mem()), cpu_quota("oci-un")[0], pids()) == (64 << 20, 20000, "50")
    (tmp_path / "res.json").write_text(json.dumps({"memory": {"limit": 0}, "cpu": {"quota": 0},
                                                   "pids": {"limit": 0}}))
    kago("update", "--resources", tmp_path / "res.json", "oci-un", check=True)   # 0: unchanged
    assert (int(mem()), cpu_quota("oci-un")[0], pids()) == (64 << 20, 20000, "50")
    (tmp_path / "res.json").write_text(json.dumps({"memory": {"limit": -1}, "cpu": {"quota": -1},
                                                   "pids": {"limit": -1}}))
    kago("update", "--resources", tmp_path / "res.json", "oci-un", check=True)
    assert mem() in ("max", "9223372036854771712") and cpu_quota("oci-un")[0] is None and pids() == "max"
    kago("delete", "--force", "oci-un", check=True)
    assert not leftovers(["oci-un"])


def test_tmpcopyup_copies_the_rootfs_into_the_tmpfs(kago, bundle, tmp_path):
    """podman puts tmpcopyup on every tmpfs (--tmpfs, --read-only's /run, /tmp, /var/tmp): the tmpfs starts
    with a copy of what was there, as runc and crun make it (modes, owners, symlinks, files, subdirs)."""
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "f").write_text("hello\n")
    (tree / "f").chmod(0o640)
    os.chown(tree / "f", 1234, 5678)
    (tree / "sub").chmod(0o710)
    os.chown(tree / "sub", 42, 43)
    (tree / "sub" / "deeper" / "g").write_text("x" * 100000)
    os.symlink("sub/deeper/g", tree / "link")
    os.mkfifo(tree / "fifo")
    tmpfs = lambda dst, *o: {"destination": dst, "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "nodev", "tmpcopyup", *o]}
    edit(bundle, lambda c: c["mounts"].extend([
        {"destination": "/w", "type": "bind", "source": str(tree), "options": ["rbind", "ro"]},
        tmpfs("/w", "size=1m"), tmpfs("/etc", "mode=755", "ro")]))
    args(bundle, "/bin/sh", "-c",
         "cd /w && stat -c '%n %a %u:%g %F' f sub sub/deeper/g fifo link && readlink link && cat f && "
         "wc -c < sub/deeper/g && touch new && echo writable; grep -c root /etc/passwd; "
         "touch /etc/x 2>/dev/null || echo etc-ro")
    r = kago("run", "--bundle", bundle, "oci-cu")
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == [
        "f 640 1234:5678 regular file", "sub 710 42:43 directory", "sub/deeper/g 644 0:0 regular file",
        "fifo 644 0:0 fifo", "link 777 0:0 symbolic link", "sub/deeper/g", "hello", "100000", "writable",
        "1", "etc-ro"], r.stdout
    assert not (tree / "new").exists() and sorted(os.listdir(tree)) == ["f", "fifo", "link", "sub"]
    assert not leftovers(["oci-cu"])


def test_cpu_shares_as_given_on_v1(kago, bundle, tmp_path):
    """cgroup v1 gets linux.resources.cpu.shares as given (it went through v2's weight and back: 1024 was
    written 399); v2 the weight, as runc and crun convert it. update --resources too."""
    from conftest import read_cgroup
    args(bundle, "/bin/sh", "-c", "sleep 60")
    edit(bundle, _set("linux.resources", {"cpu": {"shares": 1024}}))
    kago.names.add("oci-sh")
    rc, err = detached(kago, "run", "--bundle", bundle, "--detach", "oci-sh", tmp=tmp_path)
    assert rc == 0, err
    assert read_cgroup("oci-sh", "cpu.shares", "cpu.weight", "cpu") == ("1024" if CGROUP_V == 1 else "39")
    (tmp_path / "res.json").write_text(json.dumps({"cpu": {"shares": 300}}))
    kago("update", "--resources", tmp_path / "res.json", "oci-sh", check=True)
    assert read_cgroup("oci-sh", "cpu.shares", "cpu.weight", "cpu") == ("300" if CGROUP_V == 1 else "12")
    kago("delete", "--force", "oci-sh", check=True)
    assert not leftovers(["oci-sh"])


def test_net_sysctl_in_a_joined_netns(kago, bundle, tmp_path):
    """Kubernetes pod sysctls: the container joins the pod's network namespace by path and sets net.*
    there, as runc allows; not when the path is kago's (the host's) own."""
    args(bundle, "/bin/sh", "-c", "sleep 60")
    kago.names.add("oci-pod")
    rc, err = detached(kago, "run", "--bundle", bundle, "--detach", "oci-pod", tmp=tmp_path)
    assert rc == 0, err
    pod = json.loads(kago("state", "oci-pod", check=True).stdout)["pid"]
    def join(path):
        def f(c):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"] + [
                {"type": "network", "path": path}]
            c["linux"]["sysctl"] = {"net.ipv4.ping_group_range": "7 4242"}
        return f
    edit(bundle, join(f"/proc/{pod}/ns/net"))
    args(bundle, "/bin/cat", "/proc/sys/net/ipv4/ping_group_range")
    r = kago("run", "--bundle", bundle, "oci-pj")
    assert r.returncode == 0 and r.stdout.split() == ["7", "4242"], r
    (tmp_path / "p.json").write_text(json.dumps(dict(json.loads((bundle / "config.json").read_text())["process"])))
    r = kago("exec", "--process", tmp_path / "p.json", "oci-pod")
    assert r.returncode == 0 and r.stdout.split() == ["7", "4242"], "set in the pod's netns"
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        assert f.read().split() != ["7", "4242"]
    edit(bundle, join(f"/proc/{os.getpid()}/ns/net"))
    r = kago("run", "--bundle", bundle, "oci-pj")
    assert r.returncode != 0 and "needs the container's own net namespace" in r.stderr, r
    kago("delete", "--force", "oci-pod", check=True)
    assert not leftovers(["oci-pod", "oci-pj"])


def test_seccomp_argument_filters(kago, bundle):
    """podman's default profile filters syscalls by their arguments: here chmod to mode 0700 is refused
    (EPERM), any other mode is not."""
    rule = lambda name, idx: {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                              "args": [{"index": idx, "value": 0o700, "op": "SCMP_CMP_EQ"}]}
    edit(bundle, lambda c: c["linux"].__setitem__("seccomp", {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [rule("chmod", 1), rule("fchmodat", 2)]}))
    edit(bundle, lambda c: c["root"].__setitem__("readonly", False) or c["mounts"].append(
        {"destination": "/w", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}))
    args(bundle, "/bin/sh", "-c", "touch /w/f && chmod 755 /w/f && echo made; chmod 700 /w/f || echo refused")
    r = kago("run", "--bundle", bundle, "oci-sc1")
    assert r.returncode == 0 and r.stdout.split() == ["made", "refused"], r
    assert "Operation not permitted" in r.stderr, r.stderr


def test_seccomp_unknown_syscalls_are_skipped(kago, bundle):
    """Profiles name syscalls newer than the host's libseccomp (moby's lists listmount, statmount,
    mseal...): runc and crun leave those names out, the rest of the rule still applies."""
    edit(bundle, lambda c: c["linux"].__setitem__("seccomp", {
        "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["kago_no_such_syscall"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["kago_no_such_syscall2", "mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    edit(bundle, lambda c: c["mounts"].append(
        {"destination": "/w", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}))
    args(bundle, "/bin/sh", "-c", "mkdir /w/d 2>/dev/null || echo refused")
    r = kago("run", "--bundle", bundle, "oci-sc2")
    assert r.returncode == 0 and r.stdout == "refused\n", r


def _set(path, value):
    """A config edit: sets the key at a dotted path ("linux.resources.cpu"), making the objects on the way."""
    def f(c):
        *parents, last = path.split(".")
        for p in parents:
            c = c.setdefault(p, {})
        c[last] = value
    return f


def _mount(m):
    return lambda c: c["mounts"].append(m)


# (field, config edit, shell check in the container, expected output): the conformance table of docs/oci.md,
# each field set in a bundle and seen to take effect from inside the container.
CONFORMANCE = [
    ("root.readonly", _set("root.readonly", True), "touch /x 2>/dev/null && echo rw || echo ro", "ro"),
    ("process.rlimits", _set("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]),
     "ulimit -n; ulimit -Hn", "123 456"),
    ("process.noNewPrivileges", _set("process.noNewPrivileges", True),
     "grep NoNewPrivs /proc/self/status | tr -d '\\t'", "NoNewPrivs:1"),
    ("process.capabilities", _set("process.capabilities", {k: ["CAP_CHOWN", "CAP_KILL"] for k in
                                                           ("bounding", "effective", "permitted")}),
     "grep CapEff /proc/self/status | tr -d '\\t'", "CapEff:0000000000000021"),
    ("process.capabilities five sets", lambda c: (
        _set("process.user", {"uid": 1000, "gid": 1000})(c),
        _set("process.capabilities", {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"],
                                      "permitted": ["CAP_CHOWN", "CAP_KILL"], "inheritable": ["CAP_KILL"],
                                      "ambient": ["CAP_KILL"]})(c)),
     "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | tr -d '\t' | tr '\n' ' '",
     # a non-root command keeps across exec only what is ambient (KILL, bit 5); CHOWN stays in bounding
     "CapInh:0000000000000020 CapPrm:0000000000000020 CapEff:0000000000000020 CapBnd:0000000000000021 "
     "CapAmb:0000000000000020"),
    ("process.capabilities no ambient", lambda c: (
        _set("process.user", {"uid": 1000, "gid": 1000})(c),
        _set("process.capabilities", {k: ["CAP_KILL"] for k in ("bounding", "effective", "permitted")})(c)),
     "grep -E '^CapEff' /proc/self/status | tr -d '\t'", "CapEff:0000000000000000"),
    ("process.env", _set("process.env", ["A=1", "PATH=/bin"]), "echo $A", "1"),
    ("linux.maskedPaths", _set("linux.maskedPaths", ["/proc/timer_list", "/proc/acpi"]),
     "wc -c < /proc/timer_list", "0"),
    ("linux.readonlyPaths", _set("linux.readonlyPaths", ["/proc/sys"]),
     "echo 1 > /proc/sys/kernel/shmmni 2>/dev/null && echo rw || echo ro", "ro"),
    ("linux.namespaces pid", lambda c: None, "echo $$", "1"),
    ("linux.namespaces network", lambda c: None, "ls /sys/class/net", "lo"),
    ("mounts bind ro", _mount({"destination": "/data", "type": "bind", "source": "/etc",
                               "options": ["rbind", "ro"]}),
     "test -f /data/hostname && touch /data/x 2>/dev/null && echo rw || echo ro", "ro"),
    ("mounts bind noexec", _mount({"destination": "/scripts", "type": "bind", "source": "scripts",
                                   "options": ["rbind", "noexec", "ro"]}),
     "/scripts/hello 2>/dev/null || echo noexec", "noexec"),
    ("mounts tmpfs mode size", _mount({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                                       "options": ["nosuid", "mode=750", "size=1m"]}),
     "stat -c %a /run; df -k /run | tail -1 | awk '{print $2}'", "750 1024"),
    ("mounts cgroup", lambda c: (_mount({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                                         "options": ["nosuid", "noexec", "nodev", "ro"]})(c),
                                 _set("linux.resources", {"memory": {"limit": 48 << 20}})(c)),
     "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
     "echo 1 > /sys/fs/cgroup/pids/pids.max 2>/dev/null || echo 1 > /sys/fs/cgroup/pids.max 2>/dev/null "
     "|| echo ro", f"{48 << 20} ro"),
    ("devices: no mknod by default", _mount({"destination": "/t", "type": "tmpfs", "source": "tmpfs"}),
     "mknod /t/n c 4 1 2>/dev/null && echo made || echo denied", "denied"),
    ("devices: c *:* m", lambda c: (
        _mount({"destination": "/t", "type": "tmpfs", "source": "tmpfs"})(c),
        _set("linux.resources", {"devices": [{"allow": False, "access": "rwm"},
                                             {"allow": True, "type": "c", "access": "m"}]})(c)),
     # made, but not opened: the rule allows mknod only (and the tmpfs is nodev)
     "mknod /t/n c 4 1 && echo made; echo x > /t/n 2>/dev/null || echo closed", "made closed"),
    ("linux.resources.cpu", _set("linux.resources", {"cpu": {"quota": 20000, "period": 100000}}),
     "echo ok", "ok"),   # the host side is checked below (the cgroup file)
]


@pytest.mark.parametrize("field,change,script,expect", CONFORMANCE, ids=[c[0] for c in CONFORMANCE])
def test_conformance(kago, bundle, field, change, script, expect):
    (bundle / "scripts").mkdir()   # a bind source relative to the bundle: an executable script
    (bundle / "scripts" / "hello").write_text("#!/bin/sh\necho hello\n")
    (bundle / "scripts" / "hello").chmod(0o755)
    edit(bundle, change)
    args(bundle, "/bin/sh", "-c", script)
    name = "oci-conf"
    if field == "linux.resources.cpu":
        edit(bundle, lambda c: c["linux"].__setitem__("cgroupsPath", f"/kago-itest-oci/{name}"))
        rc, err = detached(kago, "create", "--bundle", bundle, name, tmp=bundle)
        assert rc == 0, err
        try:
            v1 = "/sys/fs/cgroup/cpu/kago-itest-oci/oci-conf/cpu.cfs_quota_us"
            v2 = "/sys/fs/cgroup/kago-itest-oci/oci-conf/cpu.max"
            with open(v1 if os.path.exists(v1) else v2) as f:
                assert f.read().split()[0] == "20000", "linux.cgroupsPath and the cpu quota on the host"
        finally:
            kago("delete", "--force", name)
            for d in glob.glob("/sys/fs/cgroup/*/kago-itest-oci") + glob.glob("/sys/fs/cgroup/kago-itest-oci"):
                os.rmdir(d)
        return
    r = kago("run", "--bundle", bundle, name)
    assert r.returncode == 0 and " ".join(r.stdout.split()) == expect, (field, r)
    assert not leftovers([name])
