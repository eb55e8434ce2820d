"""kago checkpoint / kago restore with Debian's criu: real containers, real images, real HTTP.

CRIU works only where `criu check` passes: run these in the Debian 12 guest,
    tests/vm/run --share /var/lib/kago:ro -- /usr/bin/python3 -m pytest -q tests/integration/test_criu.py
Where criu is unusable (this host's 6.18 kernel breaks criu 3.17), the file checks that `kago checkpoint`
fails with one clear line quoting criu's own reason and leaves nothing behind, and skips the rest saying
why. The apps are reached only from inside their own network namespace (kago exec ... wget 127.0.0.1)."""
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import CGROUP_V, leftovers, wait_for

PAGE = "mkdir -p /srv/www && echo hello from {tag} > /srv/www/index.html && cd /srv/www && exec httpd -f -p 8080 -h /srv/www"


def criu_check():
    """(True, None) when criu works here, else (False, its first real error line)."""
    criu = shutil.which("criu") or "/usr/sbin/criu"
    if not os.path.exists(criu):
        return False, "criu: not found (install Debian's criu package)"
    r = subprocess.run([criu, "check"], capture_output=True, text=True)
    if r.returncode == 0:
        return True, None
    msgs = re.findall(r"Error \([^)]*\): (.*)", r.stdout + r.stderr)
    real = [m for m in msgs if not m.startswith(("exited, status", "execvp("))]
    return False, (real or msgs or [f"criu check exited {r.returncode}"])[0].strip()


CRIU_OK, CRIU_WHY = criu_check()
needs_criu = pytest.mark.skipif(not CRIU_OK, reason=f"criu is unusable on this host: {CRIU_WHY} "
                                "(run in the guest: tests/vm/run --share /var/lib/kago:ro -- "
                                "/usr/bin/python3 -m pytest -q tests/integration/test_criu.py)")


# kago checkpoint refuses a container with a user namespace of kago's pool (the default: restored mounts
# would lose their idmapping, docs/userns.md): the containers checkpointed here run in the host's.
HOST_USERNS = ("--userns", "host")


def get(kago, name, path="/"):
    r = kago("exec", name, "--", "wget", "-qO-", f"http://127.0.0.1:8080{path}", timeout=60)
    return r.stdout if r.returncode == 0 else None


def serve(kago, rootfs, name, tag=None, opts=()):
    kago.run_detached(name, "/bin/sh", "-c", PAGE.format(tag=tag or name),
                      opts=("--overlay", "--memory", "64M", *HOST_USERNS, *opts))
    assert wait_for(lambda: get(kago, name), timeout=30) == f"hello from {tag or name}\n"


def restore(kago, image, name, check=True):
    kago.names.add(name)
    return kago("restore", "--image", image, "--name", name, "--detach", check=check, timeout=120)


def one_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    return lines[0]


def nothing_of(kago, name):
    assert not leftovers([name]), leftovers([name])
    assert not os.path.exists(os.path.join(kago.root, name))
    assert name not in kago("list").stdout


@pytest.mark.skipif(CRIU_OK, reason="criu works here: the unusable-criu error path cannot be shown")
def test_checkpoint_where_criu_is_unusable_says_why(kago, rootfs, tmp_path):
    kago.run_detached("kcr-host", "sleep", "60", opts=("--overlay", *HOST_USERNS))
    image = tmp_path / "made" / "for" / "img"  # (its parents are made too, as runc makes them)
    r = kago("checkpoint", "kcr-host", "--image", image)
    assert r.returncode != 0
    line = one_line(r.stderr)
    assert line.startswith("kago: checkpoint kcr-host: criu"), line
    assert CRIU_WHY in line, f"criu's own reason {CRIU_WHY!r} missing from {line!r}"
    assert not (tmp_path / "made").exists(), "a failed checkpoint left its image directory or its parents"
    assert kago.state("kcr-host")["status"] == "running"
    print(f"\nkago checkpoint here: {line}")


@needs_criu
def test_checkpoint_then_restore_serves(kago, rootfs, tmp_path):
    serve(kago, rootfs, "kcr-web")
    image = str(tmp_path / "img")
    kago("checkpoint", "kcr-web", "--image", image, check=True, timeout=180)
    # without --leave-running the original is stopped by the dump
    assert wait_for(lambda: kago.state("kcr-web")["status"] == "stopped", timeout=10)
    assert os.path.isfile(os.path.join(image, "upper", "srv", "www", "index.html"))
    restore(kago, image, "kcr-r1")
    assert get(kago, "kcr-r1") == "hello from kcr-web\n"
    st = kago.state("kcr-r1")
    assert st["status"] == "running" and st["limits"]["memory"] == 64 << 20
    assert "kcr-r1" in kago("list").stdout
    assert kago.stats("kcr-r1")["pids_current"] >= 1
    if CGROUP_V == 2:
        with open("/sys/fs/cgroup/kago/kcr-r1/memory.max") as f:
            assert int(f.read()) == 64 << 20
        with open("/sys/fs/cgroup/kago/kcr-r1/cgroup.procs") as f:
            assert str(st["pid"]) in f.read().split()
    kago("kill", "kcr-r1", "KILL", check=True)
    assert wait_for(lambda: kago.state("kcr-r1")["status"] == "stopped", timeout=10)
    kago("delete", "kcr-r1", check=True)
    nothing_of(kago, "kcr-r1")


@needs_criu
def test_restore_twice_gives_independent_instances(kago, rootfs, tmp_path):
    serve(kago, rootfs, "kcr-src")
    image = str(tmp_path / "img")
    kago("checkpoint", "kcr-src", "--image", image, "--leave-running", check=True, timeout=180)
    restore(kago, image, "kcr-a")
    restore(kago, image, "kcr-b")
    for n in ("kcr-a", "kcr-b"):
        assert get(kago, n) == "hello from kcr-src\n"
    # each has its own writable layer: a file written in one is not in the other, nor in the image
    kago("exec", "kcr-a", "--", "/bin/sh", "-c", "echo only-a > /srv/www/a.html", check=True)
    assert get(kago, "kcr-a", "/a.html") == "only-a\n"
    assert get(kago, "kcr-b", "/a.html") is None
    assert get(kago, "kcr-src", "/a.html") is None
    assert not os.path.exists(os.path.join(image, "upper", "srv", "www", "a.html"))
    pa, pb = kago.state("kcr-a")["pid"], kago.state("kcr-b")["pid"]
    assert pa != pb
    assert os.readlink(f"/proc/{pa}/ns/net") != os.readlink(f"/proc/{pb}/ns/net")
    for n in ("kcr-a", "kcr-b"):
        kago("delete", "--force", n, check=True)
        nothing_of(kago, n)
    assert get(kago, "kcr-src") == "hello from kcr-src\n"


def mounts_of(pid):
    """The container's mounts as (mount point, mount options, fs type, superblock options), sorted; the
    root (an overlay whose layers differ per instance) left out."""
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] != "/":
                out.append((fields[4], fields[5], fields[sep + 1], fields[sep + 3]))
    return sorted(out)


@needs_criu
def test_restore_keeps_tmpfs_contents_and_mount_flags(kago, rootfs, tmp_path):
    # kago saves the container's own tmpfs mounts (/dev, /dev/shm, the masks) itself, not criu's tar:
    # their files, modes and mount flags must come back as they were
    kago.run_detached("kcr-tmp", "/bin/sh", "-c", "echo in-shm > /dev/shm/x && chmod 640 /dev/shm/x && "
                      "mkdir /dev/shm/d && ln -s x /dev/shm/l && echo in-dev > /dev/kago-t && "
                      + PAGE.format(tag="tmp"), opts=("--overlay", *HOST_USERNS))
    assert wait_for(lambda: get(kago, "kcr-tmp"), timeout=30) == "hello from tmp\n"
    before = mounts_of(kago.state("kcr-tmp")["pid"])
    masks = [m for m in before if m[2] == "tmpfs" and m[1].split(",")[0] == "ro"]
    assert masks, f"no read-only tmpfs mask among {before}"
    image = str(tmp_path / "img")
    kago("checkpoint", "kcr-tmp", "--image", image, "--leave-running", check=True, timeout=180)
    restore(kago, image, "kcr-tmp2")
    assert get(kago, "kcr-tmp2") == "hello from tmp\n"
    assert mounts_of(kago.state("kcr-tmp2")["pid"]) == before
    sh = kago("exec", "kcr-tmp2", "--", "/bin/sh", "-c", "cat /dev/shm/l /dev/kago-t; stat -c '%a %F' "
              "/dev/shm/x /dev/shm/d /dev; readlink /dev/fd; ls -A " + masks[0][0] + "; echo end",
              check=True)
    assert sh.stdout.split("\n")[:7] == ["in-shm", "in-dev", "640 regular file", "755 directory",
                                          "755 directory", "/proc/self/fd", "end"], sh.stdout
    # each restored instance has its own /dev/shm: a write in one is not seen by the original
    kago("exec", "kcr-tmp2", "--", "/bin/sh", "-c", "echo changed > /dev/shm/x", check=True)
    assert kago("exec", "kcr-tmp", "--", "cat", "/dev/shm/x", check=True).stdout == "in-shm\n"
    kago("delete", "--force", "kcr-tmp2", check=True)
    nothing_of(kago, "kcr-tmp2")


def uffd_ok():
    r = subprocess.run([shutil.which("criu") or "/usr/sbin/criu", "check", "--feature", "uffd-noncoop"],
                       capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip().splitlines()[-1:]


def lazy_daemons(root):
    """The `criu lazy-pages` processes working for containers under root."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"lazy-pages" in args and any(a.startswith(root.encode()) for a in args):
            found.append(int(pid))
    return found


@needs_criu
def test_lazy_pages_restore_serves_with_the_memory_intact(kago, rootfs, tmp_path):
    ok, why = uffd_ok()
    if not ok:
        pytest.skip(f"criu lazy-pages needs userfaultfd: {why}")
    # the app holds 8 MB of random data in memory and writes its checksum once when started and again on
    # request: after a lazy restore every page must come back as it was, whether touched first by the
    # app or copied in the background
    app = ("data=$(dd if=/dev/urandom bs=1k count=6144 2>/dev/null | base64); mkdir -p /srv/www; "
           "echo \"$data\" | md5sum > /srv/www/before; echo hello from lazy > /srv/www/index.html; "
           "httpd -p 8080 -h /srv/www; while :; do if [ -f /tmp/go ]; then rm /tmp/go; "
           "echo \"$data\" | md5sum > /srv/www/after; fi; sleep 0.2; done")
    kago.run_detached("kcr-lazy", "/bin/sh", "-c", app, opts=("--overlay", *HOST_USERNS))
    assert wait_for(lambda: get(kago, "kcr-lazy"), timeout=120) == "hello from lazy\n"
    before = get(kago, "kcr-lazy", "/before")
    assert before and len(before.split()[0]) == 32, before
    image = str(tmp_path / "img")
    kago("checkpoint", "kcr-lazy", "--image", image, check=True, timeout=180)
    for n in ("kcr-lazy1", "kcr-lazy2"):
        kago.names.add(n)
        kago("restore", "--image", image, "--name", n, "--detach", "--lazy-pages", check=True, timeout=120)
        assert get(kago, n) == "hello from lazy\n"
        kago("exec", n, "--", "touch", "/tmp/go", check=True)
        assert wait_for(lambda: get(kago, n, "/after"), timeout=60) == before
        assert os.path.exists(os.path.join(kago.root, n, "lazy-pages.log"))
    # the daemons exit once every page is copied
    assert wait_for(lambda: not lazy_daemons(kago.root), timeout=120), lazy_daemons(kago.root)
    for n in ("kcr-lazy1", "kcr-lazy2"):
        kago("delete", "--force", n, check=True)
        nothing_of(kago, n)


@needs_criu
def test_lazy_pages_restore_of_a_corrupt_image_leaves_nothing(kago, rootfs, tmp_path):
    ok, why = uffd_ok()
    if not ok:
        pytest.skip(f"criu lazy-pages needs userfaultfd: {why}")
    serve(kago, rootfs, "kcr-lz")
    image = tmp_path / "img"
    kago("checkpoint", "kcr-lz", "--image", image, "--leave-running", check=True, timeout=180)
    (image / "pstree.img").write_bytes(b"\x00garbage\xff" * 8)
    kago.names.add("kcr-lzbad")
    r = kago("restore", "--image", image, "--name", "kcr-lzbad", "--detach", "--lazy-pages", timeout=120)
    assert r.returncode != 0
    assert one_line(r.stderr).startswith("kago: restore kcr-lzbad: criu"), r.stderr
    nothing_of(kago, "kcr-lzbad")
    assert wait_for(lambda: not lazy_daemons(kago.root), timeout=30), "a lazy-pages daemon was left behind"


@needs_criu
def test_leave_running_keeps_the_original_serving(kago, rootfs, tmp_path):
    serve(kago, rootfs, "kcr-keep")
    pid = kago.state("kcr-keep")["pid"]
    kago("checkpoint", "kcr-keep", "--image", tmp_path / "img", "--leave-running", check=True, timeout=180)
    st = kago.state("kcr-keep")
    assert st["status"] == "running" and st["pid"] == pid
    assert get(kago, "kcr-keep") == "hello from kcr-keep\n"


@needs_criu
def test_corrupt_image_fails_clearly_and_leaves_nothing(kago, rootfs, tmp_path):
    serve(kago, rootfs, "kcr-orig")
    image = tmp_path / "img"
    kago("checkpoint", "kcr-orig", "--image", image, "--leave-running", check=True, timeout=180)
    bad = tmp_path / "bad"
    shutil.copytree(image, bad, symlinks=True)  # as `cp -a` would: the image holds /dev's symlinks
    (bad / "pstree.img").write_bytes(b"\x00garbage, not a CRIU image\xff" * 8)
    r = restore(kago, str(bad), "kcr-bad", check=False)
    assert r.returncode != 0
    line = one_line(r.stderr)
    assert line.startswith("kago: restore kcr-bad: criu restore: "), line
    nothing_of(kago, "kcr-bad")
    # not an image at all
    empty = tmp_path / "empty"
    empty.mkdir()
    r = restore(kago, str(empty), "kcr-bad2", check=False)
    assert r.returncode != 0
    assert "not a kago checkpoint" in one_line(r.stderr)
    nothing_of(kago, "kcr-bad2")
    # the good image still restores
    restore(kago, str(image), "kcr-good")
    assert get(kago, "kcr-good") == "hello from kcr-orig\n"


@needs_criu
def test_checkpoint_once_ready_then_restore_in_foreground(kago, rootfs, tmp_path):
    # the app listens only after a while: --wait-port checkpoints once it does
    kago.run_detached("kcr-slow", "/bin/sh", "-c", "sleep 2; " + PAGE.format(tag="slow"), opts=("--overlay", *HOST_USERNS))
    image = str(tmp_path / "img")
    kago("checkpoint", "kcr-slow", "--image", image, "--wait-port", "8080", "--timeout", "60s", check=True,
         timeout=180)
    kago.names.add("kcr-fg")
    p = kago.popen("restore", "--image", image, "--name", "kcr-fg", stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: get(kago, "kcr-fg"), timeout=60) == "hello from slow\n"
        # httpd as the pid namespace's init ignores SIGTERM: KILL, and kago restore exits as it died
        kago("kill", "kcr-fg", "KILL", check=True)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 128 + 9, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    nothing_of(kago, "kcr-fg")  # a foreground restore removes its container when it ends


def test_image_dir_that_is_not_empty_is_refused(kago, rootfs, tmp_path):
    kago.run_detached("kcr-full", "sleep", "60", opts=("--overlay", *HOST_USERNS))
    image = tmp_path / "img"
    image.mkdir()
    (image / "keep").write_text("x")
    r = kago("checkpoint", "kcr-full", "--image", image)
    assert r.returncode != 0
    assert "exists and is not empty" in one_line(r.stderr)
    assert os.listdir(image) == ["keep"]


def oci_layout(path, layers, config):
    """A minimal OCI image layout made by hand (the guest has no umoci): layers are plain tar bytes."""
    import hashlib
    import json
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data):
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + h, "size": len(data)}

    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers",
                                 "diff_ids": ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(cfg)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **put(l)}
                                      for l in layers]}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                **put(manifest),
                                                "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')


def tar_of(root=None, files=()):
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        if root:
            t.add(root, arcname=".")
        for name, text in files:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            t.addfile(info, io.BytesIO(text))
    return buf.getvalue()


@needs_criu
def test_image_container_checkpoint_then_restore(kago, rootfs, tmp_path):
    """A container from an image: its writable layer is saved against the image's layers and restored over
    them; files of the image's upper layer, of its base and of the container's own writes all come back."""
    layout, store = str(tmp_path / "layout"), str(tmp_path / "images")
    oci_layout(layout, [tar_of(root=rootfs), tar_of(files=[("srv/www/index.html", b"from the image layer\n")])],
               {"Cmd": ["/bin/sh", "-c", "echo written > /srv/www/w.html && exec httpd -f -p 8080 -h /srv/www"]})
    kago("--images", store, "image", "import", f"oci:{layout}:v1", "--name", "crimg:v1", check=True)
    kago.names.add("kcr-img")
    kago("--images", store, "run", "--detach", "--name", "kcr-img", "--image", "crimg:v1", "--memory", "64M",
         *HOST_USERNS, check=True)
    assert wait_for(lambda: get(kago, "kcr-img", "/w.html"), timeout=30) == "written\n"
    image = str(tmp_path / "img")
    kago("checkpoint", "kcr-img", "--image", image, check=True, timeout=180)
    assert os.path.isfile(os.path.join(image, "upper", "srv", "www", "w.html"))
    assert not os.path.exists(os.path.join(image, "upper", "srv", "www", "index.html")), \
        "a file of the image's own layers was copied into the saved writable layer"
    kago("delete", "kcr-img", check=True)
    restore(kago, image, "kcr-img-r")
    assert get(kago, "kcr-img-r", "/index.html") == "from the image layer\n"
    assert get(kago, "kcr-img-r", "/w.html") == "written\n"
    st = kago.state("kcr-img-r")
    assert st["image"] == "crimg:v1" and st["status"] == "running"
    r = kago("--images", store, "image", "rm", "crimg:v1")
    assert r.returncode != 0 and "kcr-img-r" in r.stderr, "rm removed an image a restored container uses"
    kago("delete", "--force", "kcr-img-r", check=True)
    nothing_of(kago, "kcr-img-r")
    kago("--images", store, "image", "rm", "crimg:v1", check=True)
