"""podman 4.3 and containerd 1.6, from Debian, driving kago as their OCI runtime (docs/oci.md), with private
configuration and storage as ../shared/notes/oci-runtime.md describes: nothing of the host's changes. Each
client starts once per module; each test checks what a user of that client sees.

What the clients leave outside their private roots is removed at the end: podman's cgroups (under the
parent these tests give it, /kago-itest-podman), containerd's (/kago-itest, its namespace), the state the
containerd shim keeps under /run/containerd (when it was not there before), kago's state dirs."""
import glob
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

from conftest import KAGO, ROOTFS, wait_for

PODMAN_CG = "kago-itest-podman"
CTR_NS = "kago-itest"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def rm_cgroups(parent):
    """Removes the cgroup parent (and what the clients made in it: conmon's, leftovers) in every hierarchy."""
    for top in glob.glob(f"/sys/fs/cgroup/*/{parent}") + glob.glob(f"/sys/fs/cgroup/{parent}"):
        for d in sorted((r for r, _, _ in os.walk(top)), key=len, reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass


def rootfs_tar(path):
    with tarfile.open(path, "w") as t:
        t.add(ROOTFS, arcname=".")


def kago_wrapper(d, root):
    """The runtime as podman sees it: named "kago" (podman's runtime_supports_json matches the basename, and
    only then sends --log-format json), with its own --root under the test's temp dir."""
    os.makedirs(d, exist_ok=True)
    w = os.path.join(d, "kago")
    with open(w, "w") as f:
        f.write(f'#!/bin/sh\nexec "{KAGO}" --root "{root}" "$@"\n')
    os.chmod(w, 0o755)
    return w


def podman_cmd(p, *args):
    """podman in a private mount namespace with a tmpfs over /var/lib (podman writes a blob-info cache in
    /var/lib/containers whatever its --root); "$0".."$2" are its three private paths."""
    w = p.work
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'r="$1" t="$2"; shift 2; mount -t tmpfs kago-itest-podman /var/lib && exec podman --root "$0" '
            '--runroot "$r" --tmpdir "$t" --cgroup-manager cgroupfs --events-backend file "$@"',
            f"{w}/root", f"{w}/runroot", f"{w}/run/libpod", *map(str, args)]


class Podman:
    def __init__(self, work):
        self.work = work
        self.kago_root = os.path.join(work, "kago-state")
        w = kago_wrapper(os.path.join(work, "bin"), self.kago_root)
        conf = os.path.join(work, "conf")
        for d in ("conf", "cni", "run/events", "run/libpod", "root", "runroot"):
            os.makedirs(os.path.join(work, d), exist_ok=True)
        with open(os.path.join(conf, "containers.conf"), "w") as f:
            f.write(f"""[containers]
log_driver = "k8s-file"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{work}/run/events/events.log"
tmp_dir = "{work}/run/libpod"
lock_type = "file"
runtime = "kago"
runtime_supports_json = ["crun", "runc", "kago"]
volume_path = "{work}/root/volumes"
static_dir = "{work}/root/libpod"
[engine.runtimes]
kago = ["{w}"]
[network]
network_backend = "cni"
network_config_dir = "{work}/cni"
""")
        with open(os.path.join(conf, "storage.conf"), "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\nrunroot = "{work}/runroot"\ngraphroot = "{work}/root"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=f"{conf}/containers.conf",
                        CONTAINERS_STORAGE_CONF=f"{conf}/storage.conf")
        self.image = "localhost/kago-busybox:latest"

    def __call__(self, *args, timeout=60, check=False, **kw):
        cmd = podman_cmd(self, *args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env, **kw)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def run(self, *args, **kw):
        """podman run with this module's defaults: no network, the test cgroup parent."""
        return self("run", "--network", "none", "--cgroup-parent", f"/{PODMAN_CG}", *args, **kw)


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    if not shutil.which("podman") or not shutil.which("conmon"):
        pytest.skip("podman and conmon are not installed (scripts/setup installs them)")
    work = str(tmp_path_factory.mktemp("podman"))
    p = Podman(work)
    tar = os.path.join(work, "rootfs.tar")
    rootfs_tar(tar)
    p("import", "--change", 'CMD ["/bin/sh"]', tar, p.image, check=True, timeout=120)
    yield p
    p("rm", "-af", "-t", "0", timeout=120)
    rm_cgroups(PODMAN_CG)
    left = os.listdir(p.kago_root) if os.path.isdir(p.kago_root) else []
    shutil.rmtree(work, ignore_errors=True)
    assert not left, f"kago state left by podman's containers: {left}"
    assert not glob.glob(f"/sys/fs/cgroup/*/{PODMAN_CG}"), "podman's test cgroups left"


def test_podman_run_output_and_exit_codes(podman):
    r = podman.run("--rm", podman.image, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3 and r.stdout == "out\n" and "err" in r.stderr, r
    r = podman.run("--rm", podman.image, "/nonexistent")
    assert r.returncode == 127 and "not found" in r.stderr, r   # podman maps "not found" to 127
    r = podman.run("--rm", "-i", podman.image, "cat", input="through stdin\n")
    assert r.returncode == 0 and r.stdout == "through stdin\n", r


def test_podman_detached_exec_logs_pause_stop(podman):
    name = "kago-it-d1"
    r = podman.run("-d", "--name", name, podman.image, "sh", "-c", "echo started; exec sleep 300")
    assert r.returncode == 0, r.stderr
    try:
        cid = r.stdout.strip()
        assert wait_for(lambda: "started" in podman("logs", name).stdout)
        r = podman("exec", name, "sh", "-c", "echo in exec; exit 7")
        assert r.returncode == 7 and r.stdout == "in exec\n", r
        r = podman("exec", "-t", name, "tty")
        assert r.returncode == 0 and r.stdout.strip().startswith("/dev/pts/"), r
        # the runtime's record: kago state answers in OCI form for podman's container
        st = json.loads(subprocess.run([KAGO, "--root", podman.kago_root, "state", cid], capture_output=True,
                                       text=True, check=True).stdout)
        assert st["status"] == "running" and st["id"] == cid and st["pid"] > 0
        assert podman("pause", name).returncode == 0
        assert podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "paused"
        assert podman("unpause", name).returncode == 0
        assert podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "running"
        r = podman("exec", name, "echo", "after resume")
        assert r.stdout == "after resume\n", r
        # sleep as pid 1 ignores SIGTERM: stop falls back to SIGKILL after its timeout, exit 137
        t0 = time.monotonic()
        assert podman("stop", "-t", "1", name, timeout=60).returncode == 0
        assert time.monotonic() - t0 < 20
        assert podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "137"
    finally:
        podman("rm", "-f", "-t", "0", name)
    assert not os.path.exists(os.path.join(podman.kago_root, cid))


def test_podman_kill_delivers_the_signal_and_reports_it(podman):
    """podman kill sends signal numbers; a trapped USR1 ends the command with its own code, a KILL shows as
    137 (pid 1 of a pid namespace gets only the signals it handles, and KILL)."""
    name = "kago-it-k1"
    state = lambda: podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
    for sig, script, code in (("USR1", 'trap "exit 42" USR1; sleep 300 & wait', 42),
                              ("KILL", "exec sleep 300", 128 + signal.SIGKILL)):
        assert podman.run("-d", "--name", name, podman.image, "sh", "-c", script).returncode == 0
        try:
            time.sleep(0.3)  # the trap is set
            assert podman("kill", "-s", sig, name).returncode == 0
            assert wait_for(lambda: state()[0] == "exited", timeout=20), state()
            assert state()[1] == str(code), (sig, state())
        finally:
            podman("rm", "-f", "-t", "0", name)


def test_podman_limits_in_the_containers_cgroup(podman):
    """--memory, --cpus, --pids-limit and --ulimit: the container reads its own limits at /sys/fs/cgroup (the
    cgroup mount podman asks for), read-only."""
    script = ("cd /sys/fs/cgroup; "
              "if [ -f cgroup.controllers ]; then cat memory.max pids.max cpu.max; "
              "else cat memory/memory.limit_in_bytes pids/pids.max cpu/cpu.cfs_quota_us; fi; "
              "ulimit -n; echo 1 > pids/pids.max 2>/dev/null || echo 1 > pids.max 2>/dev/null || echo ro")
    r = podman.run("--rm", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "77",
                   "--ulimit", "nofile=1000:1000", "--ulimit", "nproc=32768:32768", podman.image,
                   "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[0] == str(64 << 20) and out[1] == "77", out
    assert out[2] in ("50000", "50000 100000") or out[2:4] == ["50000", "100000"], out
    assert "1000" in out and out[-1] == "ro", out


def test_podman_preserve_fds(podman, tmp_path):
    f3, f4 = tmp_path / "fd3", tmp_path / "fd4"
    cmd = podman_cmd(podman, "run", "--rm", "--network", "none", "--cgroup-parent", f"/{PODMAN_CG}",
                     "--preserve-fds", "2", podman.image, "sh", "-c", "echo three >&3; echo four >&4")
    # podman gets fds 3 and 4 open on the two files, as a caller of --preserve-fds has them
    r = subprocess.run(["sh", "-c", 'exec "$@" 3>"$F3" 4>"$F4"', "sh", *cmd], capture_output=True, text=True,
                       timeout=60, env=dict(podman.env, F3=str(f3), F4=str(f4)))
    assert r.returncode == 0, r.stderr
    assert f3.read_text() == "three\n" and f4.read_text() == "four\n"


# --- containerd ------------------------------------------------------------------------------------------

class Containerd:
    def __init__(self, work):
        self.work = work
        self.sock = os.path.join(work, "containerd.sock")
        with open(os.path.join(work, "config.toml"), "w") as f:
            f.write(f"""version = 2
root = "{work}/root"
state = "{work}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
""")
        self.log = open(os.path.join(work, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", os.path.join(work, "config.toml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        assert wait_for(lambda: os.path.exists(self.sock), timeout=20), "containerd did not start"
        self.image = "localhost/kago-busybox:latest"
        self.runtime = kago_wrapper(os.path.join(work, "bin"), "/run/kago-unused")  # the shim gives --root

    def __call__(self, *args, timeout=60, check=False, **kw):
        r = subprocess.run(["ctr", "-a", self.sock, "-n", CTR_NS, *map(str, args)], capture_output=True,
                           text=True, timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise AssertionError(f"ctr {' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def run(self, *args, **kw):
        return self("run", "--runc-binary", self.runtime, *args, **kw)

    def stop(self):
        for c in self("c", "ls", "-q").stdout.split():
            self("task", "kill", "-s", "SIGKILL", c)
            self("task", "rm", "-f", c)
            self("c", "rm", c)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, podman):
    if not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("containerd is not installed (scripts/setup installs it)")
    run_existed = os.path.exists("/run/containerd")
    work = str(tmp_path_factory.mktemp("containerd"))
    c = Containerd(work)
    try:
        archive = os.path.join(work, "image.tar")
        podman("save", "--format", "oci-archive", "-o", archive, podman.image, check=True, timeout=120)
        c("images", "import", archive, check=True, timeout=120)
        yield c
    finally:
        c.stop()
        left = os.listdir(f"/run/containerd/runc/{CTR_NS}") if os.path.isdir(f"/run/containerd/runc/{CTR_NS}") \
            else []
        if run_existed:
            shutil.rmtree(f"/run/containerd/runc/{CTR_NS}", ignore_errors=True)
        else:
            shutil.rmtree("/run/containerd", ignore_errors=True)
        rm_cgroups(CTR_NS)
        shutil.rmtree(work, ignore_errors=True)
    assert not left, f"kago state left by containerd's tasks: {left}"
    assert not glob.glob(f"/sys/fs/cgroup/*/{CTR_NS}"), "containerd's test cgroups left"


def test_containerd_run_output_and_exit_codes(containerd):
    r = containerd.run("--rm", containerd.image, "kago-c1", "sh", "-c", "echo out; exit 3")
    assert r.returncode == 3 and r.stdout == "out\n", r
    r = containerd.run("--rm", containerd.image, "kago-c2", "/nonexistent")
    assert r.returncode != 0 and "/nonexistent: No such file or directory" in r.stderr, r  # the shim reads log.json


def test_containerd_exec_ps_pause_kill(containerd):
    c = containerd
    assert c.run("-d", c.image, "kago-c3", "sh", "-c", "sleep 300 & exec sleep 301").returncode == 0
    try:
        r = c("task", "exec", "--exec-id", "e1", "kago-c3", "sh", "-c", "echo in exec; exit 7")
        assert r.returncode == 7 and r.stdout == "in exec\n", r
        r = c("task", "ps", "kago-c3")
        pids = [line.split()[0] for line in r.stdout.splitlines()[1:]]
        assert r.returncode == 0 and len(pids) == 2, r              # kago ps --format json
        assert c("task", "pause", "kago-c3").returncode == 0
        assert "PAUSED" in c("task", "ls").stdout
        assert c("task", "resume", "kago-c3").returncode == 0
        assert "RUNNING" in c("task", "ls").stdout
        assert c("task", "kill", "-s", "SIGKILL", "kago-c3").returncode == 0
        assert wait_for(lambda: "STOPPED" in c("task", "ls").stdout, timeout=20)
    finally:
        c("task", "rm", "-f", "kago-c3")
        c("c", "rm", "kago-c3")
    assert not glob.glob(f"/sys/fs/cgroup/*/{CTR_NS}/kago-c3")
