"""Guest self-test run by tests/vm/check inside the tests/vm guest.

Not collected by a plain `pytest tests/` (the name does not match test_*.py);
it needs root, cgroup v2 on /sys/fs/cgroup and criu, i.e. the guest.
"""
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

CG = pathlib.Path("/sys/fs/cgroup")

if os.geteuid() != 0 or not (CG / "cgroup.controllers").exists():
    pytest.skip("needs root and cgroup v2 (run via tests/vm/run)", allow_module_level=True)


@pytest.fixture
def cgroup():
    path = CG / f"kago-selftest-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        if child.is_dir():
            _kill_and_rmdir(child)
    _kill_and_rmdir(path)


def _kill_and_rmdir(path):
    if (path / "cgroup.kill").exists():
        (path / "cgroup.kill").write_text("1")
    for _ in range(100):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)
    path.rmdir()


def run_in(cg, script, **kw):
    """Runs `sh -c script` with the shell first moving itself into cg."""
    return subprocess.run(
        ["sh", "-c", f'echo $$ > {cg}/cgroup.procs && {script}'],
        capture_output=True, text=True, timeout=120, **kw)


def events(cg, name):
    return dict(line.split() for line in (cg / name).read_text().splitlines())


def test_limits_files_exist(cgroup):
    for f in ("cpu.max", "memory.max", "pids.max", "cpuset.cpus", "io.max"):
        assert (cgroup / f).exists(), f


def test_pids_max_enforced(cgroup):
    (cgroup / "pids.max").write_text("4")
    r = run_in(cgroup, "for i in 1 2 3 4 5 6 7 8; do sleep 3 & done; wait")
    assert int(events(cgroup, "pids.events")["max"]) > 0, r.stderr


def test_memory_max_oom_kills(cgroup):
    (cgroup / "memory.max").write_text(str(16 << 20))
    (cgroup / "memory.swap.max").write_text("0")
    r = run_in(cgroup, "exec python3 -c 'b = bytearray(96 << 20)'")
    assert r.returncode != 0
    assert int(events(cgroup, "memory.events")["oom_kill"]) >= 1


def test_cpu_max_accepted(cgroup):
    (cgroup / "cpu.max").write_text("50000 100000")
    assert (cgroup / "cpu.max").read_text().split() == ["50000", "100000"]


def test_criu_dump_restore_keeps_cgroup(cgroup, tmp_path):
    ctr = cgroup / "ctr"
    ctr.mkdir()
    images = tmp_path / "images"
    images.mkdir()
    p = subprocess.Popen(
        ["sh", "-c", f"echo $$ > {ctr}/cgroup.procs && exec sleep 1000"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        if pathlib.Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(b"sleep"):
            break
        time.sleep(0.02)
    before = pathlib.Path(f"/proc/{p.pid}/cgroup").read_text()
    assert before.strip() == f"0::/{cgroup.name}/ctr"

    d = subprocess.run(["criu", "dump", "-t", str(p.pid), "-D", str(images), "-o", "dump.log"],
                       capture_output=True, text=True, timeout=120)
    assert d.returncode == 0, (images / "dump.log").read_text()[-3000:]
    p.wait(timeout=30)  # dump killed it

    r = subprocess.run(["criu", "restore", "-d", "-D", str(images), "-o", "restore.log",
                        "--pidfile", str(tmp_path / "pid")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (images / "restore.log").read_text()[-3000:]
    pid = int((tmp_path / "pid").read_text())
    try:
        assert pid == p.pid
        assert pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep")
        assert pathlib.Path(f"/proc/{pid}/cgroup").read_text() == before
    finally:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(images)
