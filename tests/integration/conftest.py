"""Shared fixtures for kago's integration tests: real containers, as root, real cgroup files.

Every test gets its own state dir (--root) and the names it creates are checked for leftovers after it:
no cgroup, state file or process may outlive a test."""
import glob
import json
import os
import shlex
import subprocess
import time

import pytest

from waiting import wait_for  # noqa: F401 (the suites import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAGO = os.environ.get("KAGO", os.path.join(REPO, "build", "kago"))
ROOTFS = os.environ.get("KAGO_ROOTFS", "/var/lib/kago/rootfs/busybox")


def exited(pid):
    """Process pid has exited: a zombie (its parent has not reaped it yet) or gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def cgroup_version():
    """2 when /sys/fs/cgroup is the unified hierarchy, 1 for v1 (and hybrid hosts like this one)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if left.split()[4] == "/sys/fs/cgroup" and right.split()[0] == "cgroup2":
                return 2
    return 1


CGROUP_V = cgroup_version()

V1_CONTROLLER = {"cpu": "cpu", "memory": "memory", "pids": "pids", "cpuset": "cpuset", "freezer": "freezer",
                 "cpuacct": "cpuacct", "devices": "devices"}


def cgroup_path(name, controller="memory"):
    """The container's cgroup directory for controller (v1) or its unified dir (v2)."""
    if CGROUP_V == 2:
        return f"/sys/fs/cgroup/kago/{name}"
    return f"/sys/fs/cgroup/{V1_CONTROLLER[controller]}/kago/{name}"


def read_cgroup(name, v1file, v2file, controller):
    path = os.path.join(cgroup_path(name, controller), v2file if CGROUP_V == 2 else v1file)
    with open(path) as f:
        return f.read().strip()


def cpu_quota(name):
    """(quota_us or None for unlimited, period_us) from the container's cgroup."""
    if CGROUP_V == 2:
        q, p = read_cgroup(name, None, "cpu.max", "cpu").split()
        return (None if q == "max" else int(q), int(p))
    q = int(read_cgroup(name, "cpu.cfs_quota_us", None, "cpu"))
    p = int(read_cgroup(name, "cpu.cfs_period_us", None, "cpu"))
    return (None if q < 0 else q, p)


def leftovers(names):
    """Everything of these containers still on the host."""
    found = []
    for n in names:
        found += glob.glob(f"/sys/fs/cgroup/*/kago/{n}") + glob.glob(f"/sys/fs/cgroup/kago/{n}")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            for n in names:
                if f"/{n}/" in line.split()[4] + "/":
                    found.append("mount " + line.split()[4])
    return found


class Kago:
    def __init__(self, root):
        self.root = root
        self.names = set()

    def __call__(self, *args, check=False, timeout=60, input=None, **kw):
        cmd = [KAGO, "--root", self.root, *map(str, args)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, **kw)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def cmd(self, *args):
        """The command line of kago ARGS, quoted for a shell."""
        return " ".join(shlex.quote(a) for a in [KAGO, "--root", self.root, *map(str, args)])

    def popen(self, *args, **kw):
        return subprocess.Popen([KAGO, "--root", self.root, *map(str, args)], **kw)

    def run_detached(self, name, *args, opts=()):
        """kago run --detach; returns the container's name."""
        self.names.add(name)
        self("run", "--detach", "--name", name, "--rootfs", ROOTFS, *opts, "--", *args, check=True)
        return name

    def state(self, name):
        r = self("state", name, check=True)
        return json.loads(r.stdout)

    def stats(self, name):
        return json.loads(self("stats", name, "--json", check=True).stdout)

    def cleanup(self):
        for n in list(self.names):
            self("delete", "--force", n)


@pytest.fixture
def kago(tmp_path):
    k = Kago(str(tmp_path / "state"))
    yield k
    k.cleanup()
    # nothing of the test's containers may remain: state dirs, cgroups, mounts
    left = leftovers(k.names)
    left += [os.path.join(k.root, d) for d in (os.listdir(k.root) if os.path.isdir(k.root) else [])]
    assert not left, f"left behind: {left}"


@pytest.fixture(scope="session")
def rootfs():
    if not os.path.isdir(ROOTFS):
        subprocess.run([os.path.join(REPO, "scripts", "mkrootfs"), ROOTFS], check=True)
    return ROOTFS


def cpu_usage_us(kago, name):
    return kago.stats(name)["cpu_usage_us"]


def measure_cpu(kago, name, seconds=2.0):
    """Share of one core the container used over a window, in percent."""
    u0, t0 = cpu_usage_us(kago, name), time.monotonic()
    time.sleep(seconds)
    u1, t1 = cpu_usage_us(kago, name), time.monotonic()
    return 100.0 * (u1 - u0) / ((t1 - t0) * 1e6)


def measure_cpu_near(kago, name, expect, tol=5.0, tries=3):
    """measure_cpu, measured again (up to tries) while it comes out below expect - tol: a busy machine can
    keep a process under its quota, never over it (an overshoot is returned at once)."""
    for _ in range(tries):
        share = measure_cpu(kago, name)
        if share >= expect - tol:
            return share
    return share


