"""runc's checkpoint and restore forms (docs/oci.md), as podman's conmon and containerd's shim call them:
`checkpoint --image-path P --work-path W [--leave-running] ID` and
`restore --bundle B --image-path P --work-path W --pid-file F --detach ID`, over kago's CRIU support.

CRIU works only where `criu check` passes: the checkpoint/restore tests run in the Debian 12 guest,
    tests/vm/run --timeout 900 --share /var/lib/kago:ro -- env KAGO=$PWD/build/kago \\
        python3 -m pytest -q -p no:cacheprovider tests/integration/test_oci_checkpoint.py
and skip elsewhere saying why. The refusals of options kago's CRIU support does not cover need no CRIU
and run everywhere."""
import json
import os
import subprocess

import pytest

from conftest import KAGO, ROOTFS, leftovers, wait_for
from test_criu import CRIU_OK, CRIU_WHY, one_line

needs_criu = pytest.mark.skipif(not CRIU_OK, reason=f"criu is unusable on this host: {CRIU_WHY} "
                                "(run in the guest: tests/vm/run --share /var/lib/kago:ro -- "
                                "python3 -m pytest -q tests/integration/test_oci_checkpoint.py)")

# the count lives in the shell's memory; /dev/shm/count (kago's tmpfs, saved with the image) shows it
COUNT = "i=0; while :; do i=$((i+1)); echo $i > /dev/shm/count; sleep 0.2; done"
PAGE = ("mkdir -p /dev/shm/www && echo hello from {tag} > /dev/shm/www/index.html && "
        "exec httpd -f -p 8080 -h /dev/shm/www")


# What these tests' programs need (mknod, chown, files of other owners...): Docker's and podman's set, given
# explicitly (`kago spec` writes runc's three)
DOCKER_CAPS = ["CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
               "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
               "CAP_SETUID", "CAP_SYS_CHROOT"]


@pytest.fixture
def bundle(tmp_path):
    """A bundle from `kago spec` (its own pid, mount and network namespaces), root.path the busybox rootfs."""
    b = tmp_path / "bundle"
    b.mkdir()
    r = subprocess.run([KAGO, "spec"], cwd=b, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((b / "config.json").read_text())
    cfg["root"] = {"path": ROOTFS, "readonly": True}
    cfg["process"]["capabilities"] = {k: DOCKER_CAPS for k in ("bounding", "effective", "permitted")}
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def args(b, *argv):
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["args"] = list(argv)
    (b / "config.json").write_text(json.dumps(cfg))


@pytest.fixture(autouse=True)
def held_pipes():
    """The callers' ends of the containers' stdio pipes, closed when the test is done."""
    held = []
    yield held
    for p in held:
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()


def runtime(kago, tmp, *argv, pipes=None):
    """As conmon runs the runtime: errors are read from --log, and the container keeps the stdio it is
    given. With pipes (a list to hold them) those are pipes whose other ends the caller keeps, as conmon's;
    else /dev/null. Returns (returncode, log text)."""
    log = tmp / "runtime.log"
    if log.exists():
        log.unlink()
    how = subprocess.PIPE if pipes is not None else subprocess.DEVNULL
    p = subprocess.Popen([KAGO, "--root", kago.root, "--log", str(log), *map(str, argv)],
                         stdin=how, stdout=how, stderr=how)
    if pipes is not None:
        pipes.append(p)
    rc = p.wait(timeout=300)
    return rc, log.read_text() if log.exists() else ""


def oci_state(kago, name):
    return json.loads(kago("state", name, check=True).stdout)


def started(kago, tmp, bundle, name, *argv, pipes=None):
    """OCI create + start of argv; returns the init's pid."""
    args(bundle, *argv)
    kago.names.add(name)
    rc, log = runtime(kago, tmp, "create", "--bundle", bundle, name, pipes=pipes)
    assert rc == 0, log
    kago("start", name, check=True)
    st = oci_state(kago, name)
    assert st["status"] == "running", st
    return st["pid"]


def count(pid):
    try:
        with open(f"/proc/{pid}/root/dev/shm/count") as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return None


def get(kago, name):
    r = kago("exec", name, "--", "wget", "-qO-", "http://127.0.0.1:8080/", timeout=60)
    return r.stdout if r.returncode == 0 else None


def parent_cmd(pid):
    with open(f"/proc/{pid}/status") as f:
        ppid = int(next(l for l in f if l.startswith("PPid:")).split()[1])
    with open(f"/proc/{ppid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0]


def restore_detached(kago, tmp, bundle, image, work, name):
    """conmon's restore; checks what it must leave as OCI create does: the pid file (decimal, no
    newline), the OCI state, the init orphaned to the caller's subreaper. Returns the pid."""
    pidfile = tmp / f"{name}.pid"
    kago.names.add(name)
    rc, log = runtime(kago, tmp, "restore", "--bundle", bundle, "--pid-file", pidfile, "--detach",
                      "--image-path", image, "--work-path", work, name)
    assert rc == 0, log
    text = pidfile.read_text()
    pid = int(text)
    assert text == str(pid)
    st = oci_state(kago, name)
    assert st["status"] == "running" and st["pid"] == pid and st["id"] == name, st
    assert st["bundle"] == str(bundle) and st["ociVersion"].startswith("1.") and "limits" not in st, st
    assert b"kago" not in parent_cmd(pid), "a kago process stayed the restored init's parent"
    return pid


@needs_criu
def test_checkpoint_and_restore_continue_counting(kago, bundle, tmp_path):
    # stdio /dev/null, as podman's stdin (kago reopens it inside the container, where CRIU finds it)
    pid0 = started(kago, tmp_path, bundle, "ock-src", "/bin/sh", "-c", COUNT)
    assert wait_for(lambda: (count(pid0) or 0) >= 5, timeout=60)
    before = count(pid0)
    image, work = tmp_path / "img", tmp_path / "work"
    r = kago("checkpoint", "--image-path", image, "--work-path", work, "--file-locks",
             "--manage-cgroups-mode", "ignore", "ock-src", timeout=300)
    assert r.returncode == 0, r.stderr
    # without --leave-running the dump stops the original, as runc's does
    assert wait_for(lambda: oci_state(kago, "ock-src")["status"] == "stopped", timeout=10)
    assert (image / "pstree.img").exists()
    pid = restore_detached(kago, tmp_path, bundle, image, work, "ock-new")
    # the count goes on from where the dump took it, not from 1
    first = count(pid)
    assert first is not None and first >= before, (first, before)
    assert wait_for(lambda: (count(pid) or 0) >= first + 3, timeout=60)
    kago("kill", "ock-new", "9", check=True)
    assert wait_for(lambda: oci_state(kago, "ock-new")["status"] == "stopped", timeout=10)
    kago("delete", "ock-new", check=True)
    r = kago("state", "ock-new")
    assert r.returncode != 0 and "does not exist" in r.stderr
    kago("delete", "ock-src", check=True)
    assert not leftovers(["ock-src", "ock-new"])


@needs_criu
def test_leave_running_keeps_the_original_serving(kago, bundle, tmp_path, held_pipes):
    pid0 = started(kago, tmp_path, bundle, "ock-web", "/bin/sh", "-c", PAGE.format(tag="ock-web"),
                   pipes=held_pipes)
    assert wait_for(lambda: get(kago, "ock-web"), timeout=60) == "hello from ock-web\n"
    image, work = tmp_path / "img", tmp_path / "work"
    r = kago("checkpoint", "--image-path", image, "--work-path", work, "--leave-running", "ock-web",
             timeout=300)
    assert r.returncode == 0, r.stderr
    st = oci_state(kago, "ock-web")
    assert st["status"] == "running" and st["pid"] == pid0
    assert get(kago, "ock-web") == "hello from ock-web\n"
    pid = restore_detached(kago, tmp_path, bundle, image, work, "ock-web2")
    assert pid != pid0
    # its own network namespace, its listening socket recreated there
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink(f"/proc/{pid0}/ns/net")
    assert wait_for(lambda: get(kago, "ock-web2"), timeout=30) == "hello from ock-web\n"
    assert get(kago, "ock-web") == "hello from ock-web\n"
    for n in ("ock-web2", "ock-web"):
        kago("delete", "--force", n, check=True)
    assert not leftovers(["ock-web", "ock-web2"])


CHECKPOINT_REFUSED = [
    ("--pre-dump",), ("--empty-ns", "network"), ("--manage-cgroups-mode", "soft"), ("--tcp-established",),
    ("--ext-unix-sk",), ("--shell-job",), ("--lazy-pages",), ("--page-server", "127.0.0.1:9"),
    ("--parent-path", "../pre"), ("--auto-dedup",), ("--status-fd", "3"),
]
RESTORE_REFUSED = [
    ("--console-socket", "/tmp/none.sock"), ("--manage-cgroups-mode", "full"), ("--empty-ns", "network"),
    ("--tcp-established",), ("--ext-unix-sk",), ("--shell-job",), ("--auto-dedup",), ("--lsm-profile", "x"),
    ("--lsm-mount-context", "x"),
]


def test_unsupported_options_are_refused_naming_them(kago, bundle, tmp_path):
    # no CRIU needed: the refusal comes before anything is done
    pid = started(kago, tmp_path, bundle, "ock-opt", "sleep", "120")
    image, work = tmp_path / "img", tmp_path / "work"
    for opt in CHECKPOINT_REFUSED:
        r = kago("checkpoint", "--image-path", image, "--work-path", work, *opt, "ock-opt")
        line = one_line(r.stderr)
        assert r.returncode != 0 and opt[0] in line and "not supported" in line, (opt, r)
        assert not image.exists() and not work.exists(), opt
    st = oci_state(kago, "ock-opt")
    assert st["status"] == "running" and st["pid"] == pid
    pidfile = tmp_path / "pid"
    for opt in RESTORE_REFUSED:
        r = kago("restore", "--bundle", bundle, "--image-path", image, "--work-path", work,
                 "--pid-file", pidfile, "--detach", *opt, "ock-r")
        line = one_line(r.stderr)
        assert r.returncode != 0 and opt[0] in line and "not supported" in line, (opt, r)
        assert not pidfile.exists()
        assert "does not exist" in kago("state", "ock-r").stderr
    print("\n" + "\n".join(one_line(kago("checkpoint", "--image-path", image, *o, "ock-opt").stderr)
                           for o in CHECKPOINT_REFUSED[:3]))
    kago("delete", "--force", "ock-opt", check=True)
    assert not leftovers(["ock-opt", "ock-r"])


def test_restore_of_no_image_fails_clearly_and_leaves_nothing(kago, bundle, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pidfile = tmp_path / "pid"
    kago.names.add("ock-none")
    for image in (empty, tmp_path / "missing"):
        r = kago("restore", "--bundle", bundle, "--image-path", image, "--pid-file", pidfile, "--detach",
                 "ock-none")
        line = one_line(r.stderr)
        assert r.returncode != 0 and str(image) in line, line
        assert not pidfile.exists()
        assert "does not exist" in kago("state", "ock-none").stderr
    # a bundle kago cannot run is refused as create refuses it, naming the JSON path
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = True
    (bundle / "config.json").write_text(json.dumps(cfg))
    r = kago("restore", "--bundle", bundle, "--image-path", empty, "ock-none")
    assert r.returncode != 0 and "process.terminal" in one_line(r.stderr)
    assert not leftovers(["ock-none"])


def test_kagos_own_forms_are_unchanged(kago, tmp_path):
    # no --image-path / --bundle: kago's own grammar, with its own errors
    r = kago("checkpoint", "nosuch", "--image", tmp_path / "img")
    assert r.returncode != 0 and "nosuch" in r.stderr and "does not exist" in r.stderr
    r = kago("checkpoint", "--pre-dump", "nosuch")
    assert r.returncode == 2 and "kago checkpoint: unknown option --pre-dump" in r.stderr
    r = kago("restore", "--image", tmp_path / "img", "--name", "ock-own", "--detach")
    assert r.returncode != 0 and "restore ock-own" in r.stderr
    assert not leftovers(["ock-own"])


@pytest.mark.skipif(CRIU_OK, reason="criu works here: the unusable-criu error path cannot be shown")
def test_oci_checkpoint_where_criu_is_unusable_says_why(kago, bundle, tmp_path):
    started(kago, tmp_path, bundle, "ock-host", "sleep", "120")
    image = tmp_path / "img"
    r = kago("checkpoint", "--image-path", image, "--work-path", tmp_path / "work", "ock-host", timeout=120)
    line = one_line(r.stderr)
    assert r.returncode != 0 and line.startswith("kago: checkpoint ock-host: criu"), line
    assert CRIU_WHY in line, (CRIU_WHY, line)
    assert not image.exists()
    assert oci_state(kago, "ock-host")["status"] == "running"
    kago("delete", "--force", "ock-host", check=True)
    print(f"\nkago checkpoint --image-path here: {line}")
