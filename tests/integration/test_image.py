"""OCI images, as a user sees them: kago image import / list / inspect / rm / prune, kago run --image, and
kago serve apps from images (docs/images.md). Needs root, umoci and skopeo (test images are built once
per session from the busybox rootfs, see image_util.py). Every test has its own store (--images) and
state dir (--root) in its tmp_path: nothing touches /var/lib/kago/images."""
import glob
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile

import pytest

from conftest import KAGO, ROOTFS, leftovers, wait_for
import image_util as iu
from image_util import APP_GID, APP_GROUP, APP_UID, APP_USER, Layout, entry, tar_bytes

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago runs containers and unpacks layers as root: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not (shutil.which("umoci") and shutil.which("skopeo")),
                       reason="the test images are built with umoci and skopeo (scripts/setup installs them)"),
]

FEAT_OUT = "ep:--from-ep cmd-a cmd-b"  # what the feature image's Entrypoint + Cmd print


# --- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def imgs(tmp_path_factory):
    rootfs = ROOTFS
    if not os.path.isdir(rootfs):  # the tests write nothing outside /tmp: a private busybox rootfs
        rootfs = iu.mkrootfs(str(tmp_path_factory.mktemp("rootfs") / "busybox"))
    return iu.TestImages(tmp_path_factory.mktemp("images"), rootfs)


@pytest.fixture(scope="session")
def big(tmp_path_factory):
    """A 200 MB layer of random files (uncompressed, so that unpacking it takes a while)."""
    d = tmp_path_factory.mktemp("big")
    L = iu.big_layout(d / "bigimg")
    yield L
    shutil.rmtree(d, ignore_errors=True)


class K:
    """kago with a private image store and state dir; remembers the containers it made."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.store = str(tmp_path / "store")
        self.root = str(tmp_path / "state")
        self.names = set()

    def argv(self, *args):
        return [KAGO, "--images", self.store, "--root", self.root, *map(str, args)]

    def __call__(self, *args, check=False, timeout=120, input=None, stdin=None, preexec_fn=None):
        r = subprocess.run(self.argv(*args), capture_output=True, timeout=timeout, input=input, stdin=stdin,
                           text=stdin is None, preexec_fn=preexec_fn)
        if stdin is not None:
            r.stdout, r.stderr = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(self.argv(*args))} -> {r.returncode}\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def imp(self, source, *opts, **kw):
        """kago image import --json OPTS SOURCE: the parsed JSON. (The options come first here: the order
        docs/images.md writes, SOURCE first, has a test of its own.)"""
        r = self("image", "import", "--json", *opts, source, check=True, **kw)
        return json.loads(r.stdout)

    def list(self):
        return json.loads(self("image", "list", "--json", check=True).stdout)

    def inspect(self, ref):
        return json.loads(self("image", "inspect", ref, check=True).stdout)

    def run(self, ref, *cmd, opts=(), check=False):
        """kago run --image REF OPTS [-- CMD...] in the foreground, named so that the leftover check
        covers it."""
        name = f"imgfg-{os.getpid()}-{len(self.names)}"
        self.names.add(name)
        return self("run", "--name", name, "--image", ref, *opts, *(("--", *cmd) if cmd else ()), check=check)

    def sh(self, ref, script, opts=()):
        """A shell script in a container of ref (its entrypoint replaced); stdout lines."""
        return self.run(ref, "-c", script, opts=("--entrypoint", "/bin/sh", *opts), check=True).stdout.splitlines()

    def detach(self, name, ref, *cmd, opts=(), entrypoint="/bin/sleep"):
        """kago run --detach; returns the container's name (made unique on the host: cgroups are global)."""
        name = f"{name}-{os.getpid()}"
        self.names.add(name)
        if entrypoint:
            opts = ("--entrypoint", entrypoint, *opts)
        self("run", "--detach", "--name", name, "--image", ref, *opts, *(("--", *cmd) if cmd else ()), check=True)
        return name

    def pid(self, name):
        return json.loads(self("state", name, check=True).stdout)["pid"]

    def layers(self):
        """The layer directories of the store (STORE/layers/HEX/)."""
        d = os.path.join(self.store, "layers")
        return sorted(x for x in os.listdir(d) if os.path.isdir(os.path.join(d, x))) if os.path.isdir(d) else []

    def snapshot(self):
        """What a failed import must leave as it was: every path of the store, refs.json, the list. Not
        STORE/locks/: the import's lock files (empty; prune sweeps those whose layer is not there)."""
        refs = os.path.join(self.store, "refs.json")
        tree = {(p, t) for p, t in iu.tree(self.store) if not p.startswith("locks/")}
        return {"tree": tree, "refs": open(refs).read() if os.path.exists(refs) else None,
                "list": self.list()}

    def unchanged(self, before, what="the failed import"):
        """Asserts the store is as the snapshot before found it, naming what changed."""
        now = self.snapshot()
        added = sorted(p for p, _ in now["tree"] - before["tree"])
        gone = sorted(p for p, _ in before["tree"] - now["tree"])
        assert not added and not gone, f"{what} changed the store: added {added[:10]}, removed {gone[:10]}"
        assert now == before, f"{what} changed the store's names or list"

    def cleanup(self):
        for n in list(self.names):
            self("delete", "--force", n)


@pytest.fixture
def k(tmp_path):
    kk = K(tmp_path)
    yield kk
    kk.cleanup()
    left = leftovers(kk.names)
    left += [os.path.join(kk.root, d) for d in (os.listdir(kk.root) if os.path.isdir(kk.root) else [])]
    left += [l.strip() for l in open("/proc/self/mountinfo") if str(tmp_path) in l]
    assert not left, f"left behind: {left}"


def hexof(digest):
    return digest.split(":")[-1]


def one_line(r):
    """The single line a failed command printed on stderr."""
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    print("stderr:", r.stderr.strip())
    assert r.returncode != 0, f"succeeded: {r.stdout} {r.stderr}"
    assert len(lines) == 1, f"not one line on stderr: {r.stderr!r}"
    return lines[0]


def short(name):
    """An image name without its registry part (localhost/x, docker.io/library/x -> x)."""
    return name.rsplit("/", 1)[-1] if name else name


def row(k, name, tag):
    rows = [r for r in k.list() if short(r["name"]) == name and r["tag"] == tag]
    assert len(rows) == 1, k.list()
    return rows[0]


# --- import, list, inspect ------------------------------------------------------------------------------

def test_import_oci_dir_list_and_inspect(k, imgs):
    man, cfg = imgs.L.image("feat")
    config_hex = hexof(man["config"]["digest"])
    out = k.imp(imgs.ref("feat"))
    assert set(out) >= {"id", "names", "layers", "new_layers", "size"}, out
    assert hexof(out["id"]) == config_hex, "an image's id is the sha256 of its config"
    assert (out["layers"], out["new_layers"]) == (3, 3), out
    assert [short(n) for n in out["names"]] == ["kagotest:feat"], "oci:DIR:TAG is named after DIR and TAG"
    assert out["size"] > 1_000_000, "the busybox layer alone is over 1 MB"

    [r] = k.list()
    assert (short(r["name"]), r["tag"], r["layers"]) == ("kagotest", "feat", 3), r
    assert config_hex.startswith(hexof(r["id"])) and len(hexof(r["id"])) >= 12, r
    assert r["size"] == out["size"] and r["created"], r
    table = k("image", "list", check=True).stdout.splitlines()
    assert table[0].split() == ["NAME", "TAG", "ID", "SIZE", "LAYERS", "CREATED"], table
    assert any("kagotest" in l and " feat " in f" {l} " for l in table[1:]), table

    ins = k.inspect("kagotest:feat")
    assert hexof(ins["id"]) == config_hex
    assert (ins["architecture"], ins["os"]) == ("amd64", "linux")
    c = ins["config"]
    assert c["User"] == APP_USER and c["WorkingDir"] == "/home/app"
    assert c["Entrypoint"] == ["/bin/ep", "--from-ep"] and c["Cmd"] == ["cmd-a", "cmd-b"]
    assert "GREETING=hello from the image" in c["Env"] and list(c["ExposedPorts"]) == ["8080/tcp"]
    assert [hexof(l["diff_id"]) for l in ins["layers"]] == [hexof(d) for d in cfg["rootfs"]["diff_ids"]]
    assert [hexof(l["digest"]) for l in ins["layers"]] == [hexof(l["digest"]) for l in man["layers"]]
    assert all(l["size"] > 0 for l in ins["layers"])
    assert ins["labels"] == {"org.kago.test": "feat", "org.opencontainers.image.title": "kago feature image"}
    assert ins["size"] == out["size"]
    # the other ways to name it: the full id, a unique prefix, a short name
    assert hexof(k.inspect("sha256:" + config_hex)["id"]) == config_hex
    assert hexof(k.inspect(config_hex[:8])["id"]) == config_hex
    assert k("image", "inspect", "kagotest").returncode != 0, "no kagotest:latest"
    assert k("image", "inspect", "nosuch:feat").returncode != 0
    assert k("image", "inspect", config_hex[:3]).returncode != 0, "a prefix needs 4 hex digits at least"

    # the store, as documented
    for d in cfg["rootfs"]["diff_ids"]:
        assert os.path.isdir(os.path.join(k.store, "layers", hexof(d))), d
    for f in ("config.json", "manifest.json"):
        assert os.path.isfile(os.path.join(k.store, "images", config_hex, f))
    with open(os.path.join(k.store, "images", config_hex, "config.json"), "rb") as f:
        assert iu.sha256(f.read()) == config_hex, "the config is kept byte for byte"


def test_inspect_fields(k, imgs):
    """docs/images.md: inspect gives id, name, created, architecture, os, config, labels, layers (diff_id,
    digest, media_type, size), size, store; name is the one REF named."""
    o = k.imp(imgs.ref("other"), "--name", "one:1")
    k.imp(imgs.ref("other"), "--name", "two:2")
    ins = k.inspect("one:1")
    assert {"id", "name", "created", "architecture", "os", "config", "labels", "layers", "size", "store"} <= set(ins), \
        sorted(ins)
    assert short(ins["name"]) == "one:1" and short(k.inspect("two:2")["name"]) == "two:2"
    # by id: no name was given (kago says null; podman would list every name: not in the contract)
    assert short(k.inspect(hexof(o["id"])[:6])["name"]) in (None, "one:1", "two:2")
    assert [l["media_type"] for l in ins["layers"]] == [iu.MT_LAYER_GZ] * 2, ins["layers"]
    assert os.path.samefile(ins["store"], k.store)


@pytest.mark.parametrize("fmt", ["oci-archive", "oci-archive-dot", "docker-archive", "docker-archive-stdin",
                                 "docker25-archive", "oci-archive-stdin", "oci-zstd"])
def test_import_formats(k, imgs, fmt):
    src, name, stdin = {
        "oci-archive": (f"oci-archive:{imgs.archive}", "feat-archive:feat", None),
        "docker-archive": (f"docker-archive:{imgs.docker}", "featd:v1", None),
        "docker25-archive": (f"docker-archive:{imgs.docker25}", "featd25:v1", None),
        "oci-archive-dot": (f"oci-archive:{imgs.dot_archive}:feat", "feat-dot:feat", None),
        "docker-archive-stdin": ("docker-archive:-", "featd:v1", imgs.docker),
        "oci-archive-stdin": ("oci-archive:-", "fromstdin:1", imgs.archive),
        "oci-zstd": (f"oci:{imgs.zstd}:feat", "feat-zstd:feat", None),
    }[fmt]
    if stdin:
        opts = ("--name", name) if fmt == "oci-archive-stdin" else ()
        with open(stdin, "rb") as f:
            r = k("image", "import", "--json", *opts, src, stdin=f, check=True)
        out = json.loads(r.stdout)
    else:
        out = k.imp(src)
    assert (out["layers"], out["new_layers"]) == (3, 3), out
    assert [short(n) for n in out["names"]] == [name], out
    ins = k.inspect(name)
    assert [hexof(l["diff_id"]) for l in ins["layers"]] == [hexof(d) for d in imgs.feat_diff_ids], \
        "the same layers, whatever the format"
    if fmt == "oci-zstd":
        zman = Layout(imgs.zstd).image("feat")[0]
        assert all(l["mediaType"] == iu.MT_LAYER_ZST for l in zman["layers"])
        assert [hexof(l["digest"]) for l in ins["layers"]] == [hexof(l["digest"]) for l in zman["layers"]]
    assert ins["config"]["Entrypoint"] == ["/bin/ep", "--from-ep"] and ins["config"]["User"] == APP_USER
    assert k.run(name, check=True).stdout.strip() == FEAT_OUT
    out = k.sh(name, f"cat /var/www/new.html; ls -A /var/www; test -e /etc/hostname || echo gone; cat /{iu.LONG_FILE}")
    assert out == ["new-www", "new.html", "gone", "long-name"], out


def test_import_oci_archive_gzip_and_nameless_stdin(k, imgs, tmp_path):
    gz = tmp_path / "feat.tar.gz"
    with open(imgs.archive, "rb") as f:
        gz.write_bytes(iu.gzip.compress(f.read()))
    out = k.imp(f"oci-archive:{gz}", "--name", "gz:1")
    assert [hexof(l["diff_id"]) for l in k.inspect("gz:1")["layers"]] == [hexof(d) for d in imgs.feat_diff_ids]
    # from standard input, an OCI archive whose index has no full reference stays nameless
    with open(imgs.archive, "rb") as f:
        r = k("image", "import", "--json", "oci-archive:-", stdin=f, check=True)
    assert json.loads(r.stdout)["names"] == [] and json.loads(r.stdout)["id"] == out["id"], r.stdout
    assert [(short(x["name"]), x["tag"]) for x in k.list()] == [("gz", "1")], "the same image: gz:1 still names it"


def test_docker_archive_of_two_images_is_refused(k, imgs, tmp_path):
    two = tmp_path / "two.tar"
    with tarfile.open(imgs.docker) as src, tarfile.open(two, "w") as dst:
        for m in src.getmembers():
            if m.name == "manifest.json":
                man = json.loads(src.extractfile(m).read())
                man.append(dict(man[0], RepoTags=["second:1"]))
                data = json.dumps(man).encode()
                m.size = len(data)
                dst.addfile(m, iu.io.BytesIO(data))
            else:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    k.imp(imgs.ref("other"), "--name", "other:1")
    before = k.snapshot()
    line = one_line(k("image", "import", f"docker-archive:{two}"))
    assert "2 images" in line or "one" in line, line
    k.unchanged(before)


def test_import_options_after_source(k, imgs):
    """The order docs/images.md gives: kago image import SOURCE [--name NAME[:TAG]] [--json]."""
    r = k("image", "import", imgs.ref("other"), "--name", "after:1", "--json")
    assert r.returncode == 0, r.stderr
    assert [short(n) for n in json.loads(r.stdout)["names"]] == ["after:1"]


def test_import_name_option_and_a_moved_name(k, imgs):
    a = k.imp(imgs.ref("feat"), "--name", "mine:1")
    assert [short(n) for n in a["names"]] == ["mine:1"]
    assert [(short(r["name"]), r["tag"]) for r in k.list()] == [("mine", "1")], "--name wins over DIR:TAG"
    b = k.imp(imgs.ref("other"), "--name", "mine:1")
    assert b["new_layers"] == 1, "other shares feat's base layer"
    rows = {hexof(r["id"])[:12]: r for r in k.list()}
    assert short(rows[hexof(b["id"])[:12]]["name"]) == "mine", rows
    assert rows[hexof(a["id"])[:12]]["name"] in (None, "<none>"), "the name moved: the old image is nameless"
    assert any(l.split()[:2] == ["<none>", "<none>"] for l in k("image", "list", check=True).stdout.splitlines())
    assert k.run("mine:1", check=True).stdout == "other-image\n"
    k("image", "prune", check=True)
    assert [hexof(r["id"])[:12] for r in k.list()] == [hexof(b["id"])[:12]], "prune removes the nameless image"
    assert len(k.layers()) == 2, "and the layers only it had"
    # names with a registry part: the short name finds them
    k.imp(imgs.ref("other"), "--name", "docker.io/library/dlib:1")
    k.imp(imgs.ref("other"), "--name", "localhost/lh:2")
    assert hexof(k.inspect("dlib:1")["id"]) == hexof(b["id"]) == hexof(k.inspect("lh:2")["id"])


def test_index_picks_linux_amd64(k, imgs):
    out = k.imp(f"oci:{imgs.multi}:multi", "--name", "multi:1")
    assert (out["layers"], out["new_layers"]) == (2, 2), out
    amd = [m for m in imgs.multi_manifests if m["platform"] == {"architecture": "amd64", "os": "linux"}][0]
    cfg = Layout(imgs.multi).get_json(Layout(imgs.multi).get_json(amd)["config"])
    ins = k.inspect("multi:1")
    assert (ins["architecture"], ins["os"]) == ("amd64", "linux")
    assert [hexof(l["diff_id"]) for l in ins["layers"]] == [hexof(d) for d in cfg["rootfs"]["diff_ids"]]
    assert k.run("multi:1", check=True).stdout == "linux/amd64\n"
    assert len(k.layers()) == 2, "the other platforms' layers are not fetched"


def test_index_without_linux_amd64_fails(k, imgs):
    k.imp(imgs.ref("base"), "--name", "base:1")
    before = k.snapshot()
    line = one_line(k("image", "import", f"oci:{imgs.multi}:noamd64"))
    assert "amd64" in line, line
    k.unchanged(before)


# --- what the container sees ---------------------------------------------------------------------------

def test_container_sees_the_layers(k, imgs):
    """Whiteout, opaque directory, hard link, symlinks, setuid bit, owner by name and an xattr, through the
    one overlay kago mounts."""
    k.imp(imgs.ref("feat"), "--name", "feat:1")
    out = k.sh("feat:1", """
        test -e /etc/hostname && echo hostname-present || echo hostname-gone
        test -e /data && echo data-present || echo data-gone
        test -s /etc/passwd && echo passwd-kept
        ls -A /etc | grep -c '^\\.wh\\.'
        ls -A /var/www | tr '\\n' ' '; echo
        stat -c %i /opt/data/orig /opt/data/hard | uniq | wc -l
        stat -c %h /opt/data/orig
        readlink /opt/data/sym; cat /opt/data/sym
        readlink /opt/abs-sym; cat /opt/abs-sym
        stat -c '%a %u %g' /opt/suid
        stat -c '%U %G %u %g' /opt/data/orig /home/app
    """)
    assert out == ["hostname-gone", "data-gone", "passwd-kept", "0", "new.html ",
                   "1", "2",
                   "orig", "hello-data",
                   "/opt/data/orig", "hello-data",
                   "4755 0 0",
                   f"{APP_USER} {APP_GROUP} {APP_UID} {APP_GID}", f"{APP_USER} {APP_GROUP} {APP_UID} {APP_GID}"], out
    # the xattr, read from the host through the container's root
    name = k.detach("imgxattr", "feat:1", "60")
    root = f"/proc/{k.pid(name)}/root"
    assert os.getxattr(f"{root}/opt/data/orig", "user.kago") == b"xattr-value"
    assert sorted(os.listdir(f"{root}/var/www")) == ["new.html"]


@pytest.mark.parametrize("tag", list(iu.USER_FORMS))
def test_user_forms(k, imgs, tag):
    user, uid, gid = iu.USER_FORMS[tag]
    k.imp(imgs.ref(tag), "--name", "u:1")
    assert k.sh("u:1", "id -u; id -g") == [str(uid), str(gid)], f"User {user!r}"


def test_entrypoint_and_cmd(k, imgs):
    k.imp(imgs.ref("feat"), "--name", "feat:1")
    assert k.run("feat:1", check=True).stdout == FEAT_OUT + "\n", "no command: Entrypoint + Cmd"
    assert k.run("feat:1", "x", "y z", check=True).stdout == "ep:--from-ep x y z\n", \
        "-- CMD replaces Cmd and keeps the Entrypoint (as podman)"
    r = k.run("feat:1", "hello", opts=("--entrypoint", "/bin/echo"), check=True)
    assert r.stdout == "hello\n", "--entrypoint replaces the Entrypoint"
    r = k.run("feat:1", opts=("--entrypoint", "/bin/echo"), check=True)
    assert r.stdout == "\n", "--entrypoint drops the image's Cmd (as podman)"


def test_config_env_cwd_user(k, imgs):
    k.imp(imgs.ref("feat"), "--name", "feat:1")
    script = ('echo "$GREETING"; echo "[$EMPTY]"; echo "$PATH"; pwd; id -u; id -g; '
              'echo "name=$(id -un 2>/dev/null)"; echo "[$EXTRA]"')
    assert k.sh("feat:1", script) == ["hello from the image", "[]", iu.PATH_ENV[5:], "/home/app",
                                      str(APP_UID), str(APP_GID), f"name={APP_USER}", "[]"]
    # what the command line says wins; the rest of the image's config stays
    out = k.sh("feat:1", script, opts=("--env", "GREETING=from-cli", "--env", "EXTRA=x", "--cwd", "/tmp",
                                       "--user", "1000:1001"))
    assert out[:2] == ["from-cli", "[]"] and out[3:6] == ["/tmp", "1000", "1001"] and out[7] == "[x]", out
    assert k.sh("feat:1", "id -u; id -g", opts=("--user", "0:0")) == ["0", "0"]


# --- one overlay, nothing copied -----------------------------------------------------------------------

def overlay_root(mountinfo):
    """(fs type, [lowerdir entries], upperdir) of the mount at / in a mountinfo text."""
    for line in mountinfo.splitlines():
        left, right = line.split(" - ", 1)
        if left.split()[4] == "/":
            fstype, _src, opts = right.split()[:3]
            lower, upper = [], None
            for o in opts.split(","):
                key, _, val = o.partition("=")
                if key in ("lowerdir", "lowerdir+"):
                    lower += [p for p in val.replace("\\:", "\0").split(":") if p]
                elif key == "upperdir":
                    upper = val
            return fstype, [p.replace("\0", ":") for p in lower], upper
    return None, [], None


def test_one_overlay_and_no_copy(k, imgs):
    out = k.imp(imgs.ref("feat"), "--name", "feat:1")
    layers_dir = os.path.realpath(os.path.join(k.store, "layers"))
    passwd = os.path.join(layers_dir, hexof(imgs.feat_diff_ids[1]), "etc", "passwd")
    passwd_sha = iu.sha256_file(passwd)
    store_before = iu.disk_usage(k.store)

    # --userns host: the lowers below are then the store's layer directories by name; in a user namespace
    # (the default) they are idmapped copies of the same mounts, named /proc/self/fd/N (test_userns.py)
    a = k.detach("imgov1", "feat:1", "60", opts=("--user", "0:0", "--userns", "host"))
    b = k.detach("imgov2", "feat:1", "60", opts=("--userns", "host"))
    mi = k("exec", a, "--", "cat", "/proc/self/mountinfo", check=True).stdout
    fstype, lower, upper = overlay_root(mi)
    assert fstype == "overlay", mi
    assert sum(1 for l in mi.splitlines() if l.split(" - ", 1)[1].startswith("overlay ")) == 1, mi
    assert len(lower) == 3, lower
    for p in lower:
        if os.path.isabs(p):
            assert os.path.dirname(os.path.realpath(p)) == layers_dir, f"{p} is not a layer of the store"
    assert [os.path.basename(p.rstrip("/")) for p in lower] == [hexof(d) for d in reversed(imgs.feat_diff_ids)], \
        f"the image's layers, top first: {lower}"
    assert upper and not os.path.realpath(upper).startswith(os.path.realpath(k.store)), upper

    # a write in the container goes to its upper layer, never into the store
    k("exec", a, "--", "/bin/sh", "-c", "echo intruder:x:0:0::/:/bin/sh >> /etc/passwd", check=True)
    assert "intruder" in k("exec", a, "--", "cat", "/etc/passwd", check=True).stdout
    assert "intruder" not in k("exec", b, "--", "cat", "/etc/passwd", check=True).stdout
    assert iu.sha256_file(passwd) == passwd_sha
    # starting containers copied nothing: the store is as large as before, the state dir holds no layer
    assert abs(iu.disk_usage(k.store) - store_before) < 64 * 1024, (store_before, iu.disk_usage(k.store))
    state = iu.disk_usage(k.root)
    assert state < out["size"] // 4 and state < 512 * 1024, f"the state dir holds {state} bytes"


def test_state_readonly_and_overlay_dir(k, imgs, tmp_path):
    out = k.imp(imgs.ref("feat"), "--name", "feat:1")
    name = k.detach("imgstate", "feat:1", "60")
    st = json.loads(k("state", name, check=True).stdout)
    assert short(st.get("image")) == "feat:1" and hexof(st.get("image_id", "")) == hexof(out["id"]), st
    # --readonly: the image's root cannot be written
    r = k.run("feat:1", "-c", "echo x > /home/app/f && echo wrote", opts=("--entrypoint", "/bin/sh", "--readonly"))
    assert "wrote" not in r.stdout, r
    # --overlay-dir: the writable layer in a host directory, kept for the next container
    ov = tmp_path / "ov"
    ov.mkdir()
    k.sh("feat:1", "echo kept > /home/app/f", opts=("--overlay-dir", ov))
    assert (ov / "upper" / "home" / "app" / "f").read_text() == "kept\n"
    assert k.sh("feat:1", "cat /home/app/f", opts=("--overlay-dir", ov)) == ["kept"]
    assert k.sh("feat:1", "test -e /home/app/f || echo fresh") == ["fresh"], "without it: a fresh tmpfs"


def test_many_layers(k, imgs, tmp_path):
    """100 layers: more lower directories than one page of mount options holds with the store's paths."""
    L = iu.many_layers_layout(tmp_path / "many", imgs.L, 100)
    out = k.imp(f"oci:{L.path}:many", "--name", "many:1")
    assert (out["layers"], out["new_layers"]) == (101, 101), out
    assert k.run("many:1", check=True).stdout.strip() == "100"


@pytest.mark.parametrize("fmt", ["oci", "docker-archive"])
def test_concurrent_imports_of_one_image(k, imgs, fmt):
    src = imgs.ref("feat") if fmt == "oci" else f"docker-archive:{imgs.docker}"
    procs = [subprocess.Popen(k.argv("image", "import", "--json", "--name", f"feat:{i}", src),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    if fmt == "oci":  # an oci: import locks a layer before unpacking it; archives may unpack it twice
        assert sum(json.loads(o)["new_layers"] for o, _ in outs) == 3, "each layer unpacked once"
    tmpd = os.path.join(k.store, "tmp")
    assert not os.path.isdir(tmpd) or os.listdir(tmpd) == [], "the losers' copies are gone"
    assert len(k.layers()) == 3
    assert sorted(r["tag"] for r in k.list()) == ["0", "1", "2"]
    assert k.run("feat:2", check=True).stdout == FEAT_OUT + "\n"


def test_layers_are_shared(k, imgs):
    a = k.imp(imgs.ref("feat"), "--name", "feat:1")
    layers_a, du_a = k.layers(), iu.disk_usage(os.path.join(k.store, "layers"))
    base_du = iu.disk_usage(os.path.join(k.store, "layers", hexof(imgs.base_diff_id)))
    assert len(layers_a) == 3 and base_du > 1_000_000, (layers_a, base_du)
    b = k.imp(imgs.ref("other"), "--name", "other:1")
    assert (b["layers"], b["new_layers"]) == (2, 1), b
    layers_b, du_b = k.layers(), iu.disk_usage(os.path.join(k.store, "layers"))
    assert len(layers_b) == 4 and set(layers_a) < set(layers_b)
    assert du_b - du_a < 128 * 1024, f"the second image added {du_b - du_a} bytes (its base is {base_du})"
    # the same image again adds nothing
    c = k.imp(imgs.ref("feat"), "--name", "feat:2")
    assert c["new_layers"] == 0 and hexof(c["id"]) == hexof(a["id"]), c
    assert k.layers() == layers_b and iu.disk_usage(os.path.join(k.store, "layers")) == du_b
    assert k.run("other:1", check=True).stdout == "other-image\n"
    assert k.run("feat:1", check=True).stdout == FEAT_OUT + "\n"


# --- verification failures -----------------------------------------------------------------------------

def two_layer_layout(path):
    """A small image of two layers: A (a few files) and B (256 KiB of incompressible data, so that an
    archive cut in half is cut inside B)."""
    L = Layout(path, create=True)
    a = L.add_layer(tar_bytes([entry("a/", kind="dir"), entry("a/one.txt", "one\n")]))
    b = L.add_layer(tar_bytes([entry("b/", kind="dir"), entry("b/blob.bin", os.urandom(256 * 1024))]))
    L.add_image([a, b], ref="t")
    return L, a, b


def archive_of(L, path):
    """An oci-archive written by hand: the layout's small files first, then the blobs in manifest order."""
    man = L.get_json(L.resolve("t"))
    order = ["oci-layout", "index.json", "blobs", "blobs/sha256",
             "blobs/sha256/" + hexof(L.resolve("t")["digest"]), "blobs/sha256/" + hexof(man["config"]["digest"])]
    order += ["blobs/sha256/" + hexof(l["digest"]) for l in man["layers"]]
    with tarfile.open(path, "w") as t:
        for n in order:
            t.add(os.path.join(L.path, n), n, recursive=False)
    return path


def corrupt(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        c = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([c[0] ^ 0xFF]))


@pytest.mark.parametrize("case", ["corrupt-layer", "corrupt-config", "wrong-diff-id", "missing-blob",
                                  "unsupported-media-type", "truncated-archive"])
def test_verification_failure_leaves_nothing(k, imgs, tmp_path, case):
    k.imp(imgs.ref("other"), "--name", "other:1")  # the store is not empty: it must stay exactly as it is
    before = k.snapshot()
    L, (la, _), (lb, _) = two_layer_layout(tmp_path / "bad")
    man = L.get_json(L.resolve("t"))
    named = [hexof(lb["digest"])]
    src = f"oci:{L.path}:t"
    if case == "corrupt-layer":
        corrupt(L.blob(lb["digest"]))
    elif case == "corrupt-config":
        corrupt(L.blob(man["config"]["digest"]))
        named = [hexof(man["config"]["digest"])]
    elif case == "wrong-diff-id":
        cfg = L.get_json(man["config"])
        wrong = "sha256:" + iu.sha256(b"not this layer")
        cfg["rootfs"]["diff_ids"][1] = wrong
        man["config"] = L.put_json(cfg, iu.MT_CONFIG)
        L.tag("t", L.put_json(man, iu.MT_MANIFEST))
        named += [hexof(wrong)]
    elif case == "missing-blob":
        os.unlink(L.blob(lb["digest"]))
    elif case == "unsupported-media-type":
        man["layers"][1] = dict(lb, mediaType="application/vnd.kago.test.layer.v1.tar+lz4")
        L.tag("t", L.put_json(man, iu.MT_MANIFEST))
        named += ["application/vnd.kago.test.layer.v1.tar+lz4"]
    elif case == "truncated-archive":
        path = archive_of(L, tmp_path / "t.tar")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        src = f"oci-archive:{path}"
    line = one_line(k("image", "import", src))
    assert any(n[:12] in line for n in named), f"the message names none of {named}: {line}"
    k.unchanged(before)
    # and a good import still works
    out = k.imp(f"oci:{two_layer_layout(tmp_path / 'good')[0].path}:t", "--name", "good:1")
    assert out["new_layers"] == 2


# --- malicious layers ----------------------------------------------------------------------------------

MALICIOUS = ["dotdot", "dotdot-deep", "absolute", "symlink-dir-abs", "symlink-dir-rel", "hardlink-dotdot",
             "hardlink-abs", "hardlink-via-symlink", "whiteout-via-symlink", "opaque-via-symlink",
             "xattr-overlay-opaque", "xattr-overlay-redirect"]


@pytest.mark.parametrize("case", MALICIOUS)
def test_malicious_layer_is_refused(k, imgs, tmp_path, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("victim\n")
    tok = os.urandom(4).hex()
    ok = [entry("ok/", kind="dir"), entry("ok/fine.txt", "fine\n")]
    entries, name = {
        "dotdot": ([entry(f"../escape-{tok}", "x")], f"escape-{tok}"),
        "dotdot-deep": ([entry("a/", kind="dir"),
                         entry(f"a/../../../../../../../../../../tmp/kago-escape-{tok}", "x")], f"kago-escape-{tok}"),
        "absolute": ([entry(f"/tmp/kago-evil-{tok}", "x")], f"kago-evil-{tok}"),
        "symlink-dir-abs": ([entry("lnk-abs", kind="symlink", link=str(outside)),
                             entry("lnk-abs/pwned-abs", "x")], "lnk-abs/pwned-abs"),
        "symlink-dir-rel": ([entry("lnk-rel", kind="symlink", link="../../../../../../../../.." + str(outside)),
                             entry("lnk-rel/pwned-rel", "x")], "lnk-rel/pwned-rel"),
        "hardlink-dotdot": ([entry("hl-dotdot", kind="hardlink", link="../outside/victim")], "hl-dotdot"),
        "hardlink-abs": ([entry("hl-abs", kind="hardlink", link=str(victim))], "hl-abs"),
        "hardlink-via-symlink": ([entry("via", kind="symlink", link=str(outside)),
                                  entry("hl-via", kind="hardlink", link="via/victim")], "hl-via"),
        "whiteout-via-symlink": ([entry("wlnk", kind="symlink", link=str(outside)), entry("wlnk/.wh.victim")],
                                 "wlnk/.wh.victim"),
        "opaque-via-symlink": ([entry("olnk", kind="symlink", link=str(outside)), entry("olnk/.wh..wh..opq")],
                               "olnk/.wh..wh..opq"),
        "xattr-overlay-opaque": ([entry("forged-opaque/", kind="dir",
                                        pax={"SCHILY.xattr.trusted.overlay.opaque": "y"})], "forged-opaque"),
        "xattr-overlay-redirect": ([entry("forged-redirect/", kind="dir",
                                          pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})], "forged-redirect"),
    }[case]
    L = iu.small_layout(tmp_path / "evil", tar_bytes(ok + entries))
    k.imp(imgs.ref("other"), "--name", "other:1")
    before = k.snapshot()
    line = one_line(k("image", "import", "--name", "evil:1", f"oci:{L.path}:t"))
    assert name in line, f"the message does not name the entry {name!r}: {line}"
    k.unchanged(before, "the refused import")
    # nothing outside the store changed
    assert sorted(os.listdir(outside)) == ["victim"], os.listdir(outside)
    assert victim.is_file() and victim.read_text() == "victim\n" and os.stat(victim).st_nlink == 1
    assert not [x for x in os.listxattr(outside) if x.startswith("trusted.")], os.listxattr(outside)
    assert not glob.glob(f"/tmp/kago-*-{tok}") and not glob.glob(f"/tmp/escape-{tok}")
    found = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if tok in f or "pwned" in f]
    assert not found, found


def test_symlink_then_file_does_not_write_through(k, tmp_path):
    """A symlink to a host file, then a regular file of the same name: the file replaces the link (or the
    layer is refused); the host file is never written."""
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    L = iu.small_layout(tmp_path / "evil", tar_bytes([entry("over", kind="symlink", link=str(victim)),
                                                       entry("over", "pwned\n", mode=0o644)]))
    r = k("image", "import", "--name", "over:1", f"oci:{L.path}:t")
    assert victim.read_text() == "victim\n", "the layer wrote through a symlink to the host"
    if r.returncode == 0:
        [layer] = k.layers()
        over = os.path.join(k.store, "layers", layer, "over")
        assert not os.path.islink(over) and open(over).read() == "pwned\n", "the later entry wins"


@pytest.mark.parametrize("limit", ["max-entries", "max-layer-size"])
def test_import_limits(k, imgs, tmp_path, limit):
    k.imp(imgs.ref("other"), "--name", "other:1")
    before = k.snapshot()
    # 64 MiB of zeros: a 64 KiB gzip blob
    L = iu.small_layout(tmp_path / "bomb", tar_bytes([entry(f"f{i}", b"\0" * (1 << 20)) for i in range(64)]))
    lb = L.layers_of("t")[0][0]
    assert lb["size"] < 256 * 1024
    opt = ("--max-entries", "10") if limit == "max-entries" else ("--max-layer-size", "16M")
    line = one_line(k("image", "import", *opt, f"oci:{L.path}:t"))
    assert hexof(lb["digest"])[:12] in line, line
    k.unchanged(before)
    if limit == "max-layer-size":  # 0 is no size; max is no limit (it meant the default, 64 GiB)
        r = k("image", "import", "--max-layer-size", "0", f"oci:{L.path}:t")
        assert r.returncode != 0 and 'size "0": not a number of bytes' in r.stderr, r.stderr
        k.unchanged(before)
        k.imp(f"oci:{L.path}:t", "--max-layer-size", "max", "--name", "bomb:1")
        return
    k.imp(f"oci:{L.path}:t", "--name", "bomb:1")  # without the limit it is a fine image


# --- hostile sources: what a tenant of a shared store could send -------------------------------------------

def fd_limit(n):
    """A preexec_fn: the soft RLIMIT_NOFILE lowered to n."""
    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return lower


# Runs the command it is given and prints its peak RSS (KB) last on stderr. A small process of its own: the
# peak RSS of a child forked from pytest itself counts pytest's memory up to the exec.
PEAK_RSS = """import resource, subprocess, sys
r = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, timeout=float(sys.argv[1]))
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(r.returncode)
"""


def measured(argv, timeout=120):
    """Runs argv: (exit status, stderr, its peak RSS in MB)."""
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, str(timeout), *argv], capture_output=True, text=True,
                       timeout=timeout + 10)
    err, _, rss = r.stderr.rstrip("\n").rpartition("\n")
    return r.returncode, err, int(rss) / 1024


def test_deep_layer_is_removed_under_a_low_fd_limit(k, tmp_path):
    """A tree 600 levels deep, with 256 descriptors: a failed import removes its part of it from tmp/, and rm
    and prune remove an imported one (each level an open descriptor would leave it there for ever)."""
    deep = "/".join(["dd"] * 600)
    low = fd_limit(256)
    tmpd = os.path.join(k.store, "tmp")
    bad = iu.small_layout(tmp_path / "bad", tar_bytes([entry(f"{deep}/f", "x\n"), entry("../evil", "x")]))
    line = one_line(k("image", "import", f"oci:{bad.path}:t", preexec_fn=low))
    assert "../evil" in line, line
    assert os.listdir(tmpd) == [], f"the failed import left {os.listdir(tmpd)}"
    good = iu.small_layout(tmp_path / "good", tar_bytes([entry(f"{deep}/f", "x\n")]))
    k("image", "import", "--name", "deep:1", f"oci:{good.path}:t", check=True, preexec_fn=low)
    [layer] = k.layers()
    assert os.path.isfile(os.path.join(k.store, "layers", layer, deep, "f"))
    k("image", "rm", "deep:1", check=True, preexec_fn=low)
    k("image", "prune", check=True, preexec_fn=low)
    assert k.layers() == [] and k.list() == []
    assert os.listdir(tmpd) == [], f"rm and prune left {os.listdir(tmpd)}"


def create_from(k, L, image, prefix):
    """Layout L's image (tag t) imported as image, then `kago create` of a container of it (named from
    prefix): (the name, the CompletedProcess)."""
    k.imp(f"oci:{L.path}:t", "--name", image)
    name = f"{prefix}-{os.getpid()}"
    k.names.add(name)
    return name, k("create", "--name", name, "--image", image, timeout=20)


@pytest.mark.parametrize("case", ["passwd-fifo", "passwd-chardev", "group-fifo", "uid-fifo"])
def test_image_user_files_that_are_not_regular(k, tmp_path, case):
    """The image's /etc/passwd (or /etc/group) a FIFO or a device: never opened (a FIFO hung kago create; a
    device would be opened on the host). It counts as missing: a name is not found, and the message says
    why; a numeric User needs no passwd."""
    kind, user, bad = {"passwd-fifo": ("fifo", "app", "passwd"), "passwd-chardev": ("chardev", "app", "passwd"),
                       "group-fifo": ("fifo", "app:appgrp", "group"), "uid-fifo": ("fifo", "1234", "passwd")}[case]
    files = {"passwd": entry("etc/passwd", f"root:x:0:0::/:/bin/sh\n{APP_USER}:x:{APP_UID}:{APP_GID}::/:/bin/sh\n"),
             "group": entry("etc/group", f"root:x:0:\n{APP_GROUP}:x:{APP_GID}:\n")}
    files[bad] = entry(f"etc/{bad}", kind=kind, dev=(1, 3))  # 1:3: /dev/null, harmless if it were opened
    sh = [entry("bin/", kind="dir"), entry("bin/sh", "#!/bin/sh\n", mode=0o755)]  # what create looks for
    L = iu.small_layout(tmp_path / "img", tar_bytes([*sh, entry("etc/", kind="dir"), *files.values()]),
                        config={"Env": [iu.PATH_ENV], "Cmd": ["/bin/sh"], "User": user})
    name, r = create_from(k, L, "u:1", "imguser")
    if case == "uid-fifo":
        assert r.returncode == 0, r.stderr
        return
    line = one_line(r)
    what = "a FIFO" if kind == "fifo" else "a character device"
    assert f"/etc/{bad} is {what}, not a regular file" in line, line
    assert k("state", name).returncode != 0, "no container is left"


@pytest.mark.parametrize("hide", ["opaque", "whiteout", "file", "none"])
def test_image_user_is_read_from_what_the_container_sees(k, tmp_path, hide):
    """A layer above the one with /etc/passwd makes /etc opaque (keeping only group), whites /etc out, or
    puts a file there: the container has no /etc/passwd, so the User's name is not in it (the lower
    layer's was read: a user the image no longer has, with its uid). "none": the lower file shows through."""
    sh = [entry("bin/", kind="dir"), entry("bin/sh", "#!/bin/sh\n", mode=0o755)]
    lower = tar_bytes([*sh, entry("etc/", kind="dir"),
                       entry("etc/passwd", f"root:x:0:0::/:/bin/sh\n{APP_USER}:x:{APP_UID}:{APP_GID}::/:/bin/sh\n")])
    upper = {"opaque": [entry("etc/", kind="dir"), entry("etc/.wh..wh..opq"), entry("etc/group", "root:x:0:\n")],
             "whiteout": [entry(".wh.etc")],
             "file": [entry("etc", "not a directory\n")],
             "none": [entry("srv/", kind="dir")]}[hide]
    L = iu.Layout(tmp_path / "img", create=True)
    L.add_image([L.add_layer(lower), L.add_layer(tar_bytes(upper))], ref="t",
                config={"Env": [iu.PATH_ENV], "Cmd": ["/bin/sh"], "User": APP_USER})
    name, r = create_from(k, L, "hid:1", "imghid")
    if hide == "none":
        assert r.returncode == 0, r.stderr
        k("delete", "--force", name)
        return
    assert f"user {APP_USER}: not in the image's /etc/passwd" in one_line(r)
    assert k("state", name).returncode != 0, "no container is left"


def test_sparse_files_count_their_full_size(k, imgs, tmp_path):
    """A sparse file counts as big as it claims against --max-layer-size and in the sizes reported: the tar
    of 2000 one-byte chunks 64 KiB apart is a few KB for 125 MiB of file; one chunk can claim 10 TiB."""
    k.imp(imgs.ref("other"), "--name", "other:1")
    before = k.snapshot()
    chunks = iu.sparse_entry("sparse", 2000 << 16, [(i << 16, b"x") for i in range(2000)])
    huge = iu.sparse_entry("huge", 10 << 40, [(0, b"x")])
    for label, e, limit, shown in (("chunks", chunks, "4M", "4 MiB"), ("huge", huge, "1M", "1 MiB"),
                                   ("huge-default", huge, None, "64 GiB")):
        L = iu.small_layout(tmp_path / label, tar_bytes([e]))
        lb = L.layers_of("t")[0][0]
        assert lb["size"] < 64 * 1024, lb
        opt = ("--max-layer-size", limit) if limit else ()
        line = one_line(k("image", "import", *opt, f"oci:{L.path}:t"))
        assert hexof(lb["digest"])[:12] in line and f"layer exceeds {shown} uncompressed (limit)" in line, line
        k.unchanged(before)
    L = iu.small_layout(tmp_path / "sp-ok", tar_bytes([chunks]))
    out = k.imp(f"oci:{L.path}:t", "--name", "sparse:1")
    assert out["size"] >= 2000 << 16, f"the sparse file counts {out['size']} bytes"
    f = os.path.join(k.store, "layers", hexof(L.layers_of("t")[0][1]), "sparse")
    assert os.path.getsize(f) == 2000 << 16 and os.stat(f).st_blocks * 512 < 64 << 20


def test_documents_kept_in_memory_are_bounded(k, tmp_path):
    """The entries of an archive that are not layers are kept in memory: 16 MiB each at most, and 64 MiB for
    all of one import (40 files of 16 MiB of zeros are a 650 KB gzip)."""
    L = iu.small_layout(tmp_path / "img")
    zeros = b"\0" * (16 << 20)

    def archive(name, junk):
        path = str(tmp_path / name)
        with tarfile.open(path, "w:gz", compresslevel=1) as t:
            for n, data in junk:
                ti = tarfile.TarInfo(n)
                ti.size = len(data)
                t.addfile(ti, iu.io.BytesIO(data))
            for n in ("oci-layout", "index.json", "blobs"):
                t.add(os.path.join(L.path, n), n)
        return path

    many = archive("many.tar.gz", [(f"junk/{i:02d}", zeros) for i in range(40)])
    assert os.path.getsize(many) < 4 << 20
    status, err, rss = measured(k.argv("image", "import", f"oci-archive:{many}"))
    print("stderr:", err.strip(), f"peak RSS {rss:.0f} MB")
    assert rss < 200, f"the import reached {rss:.0f} MB"
    assert status == 1 and "junk/04: more than 64 MiB of documents (not layers) in all" in err, err
    assert os.listdir(os.path.join(k.store, "tmp")) == []
    # one byte over 16 MiB is refused; 16 MiB is fine
    over = archive("over.tar.gz", [("junk/over", zeros + b"\0")])
    line = one_line(k("image", "import", f"oci-archive:{over}"))
    assert "junk/over: a document larger than 16 MiB" in line, line
    k.imp(f"oci-archive:{archive('max.tar.gz', [('junk/max', zeros)])}", "--name", "max:1")


def test_a_directory_listed_many_times(k, tmp_path):
    """One 4000-byte directory path listed 50,000 times (a 256 MB tar, a small gzip): its times are kept
    once, with the last entry's mtime, and the import's memory stays low."""
    path = "/".join(["d" * 199] * 20)
    n = 50000
    L = Layout(tmp_path / "img", create=True)
    layer = iu.add_streamed_layer(L, itertools.chain(
        (entry(path + "/", kind="dir", mtime=1500000000 + i) for i in range(n)), [entry(path + "/inside", "x\n")]))
    L.add_image([layer], ref="t")
    status, err, rss = measured(k.argv("image", "import", "--name", "dirs:1", f"oci:{L.path}:t"))
    print("stderr:", err.strip(), f"peak RSS {rss:.0f} MB")
    assert status == 0, err
    fd = os.open(os.path.join(k.store, "layers", hexof(layer[1])), os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = os.stat(path, dir_fd=fd)  # (the whole path is longer than PATH_MAX)
    finally:
        os.close(fd)
    assert st.st_mtime == 1500000000 + n - 1, "the last entry's mtime"
    assert rss < 120, f"the import reached {rss:.0f} MB"


def private_image(k, tmp_path):
    """Tenant A's image in the shared store: one layer of a secret. Returns (layout, layer tar, diff_id)."""
    tar = tar_bytes([entry("secret.txt", "tenant A's secret " + os.urandom(8).hex() + "\n")])
    A = iu.small_layout(tmp_path / "a", tar)
    k.imp(f"oci:{A.path}:t", "--name", "a:1")
    return A, tar, A.layers_of("t")[0][1]


@pytest.mark.parametrize("case", ["missing-blob", "wrong-blob", "another-layer"])
def test_a_known_diff_id_is_not_enough(k, tmp_path, case):
    """oci:DIR, a layer the store has: the layout must hold the blob the manifest names, and it must be that
    layer. Tenant B, knowing only the diff_id of tenant A's private layer, gets nothing."""
    A, tar, diff_id = private_image(k, tmp_path)
    before = k.snapshot()
    B = Layout(tmp_path / "b", create=True)
    zero = "0" * 64
    if case == "another-layer":  # an honest blob of B's own, with A's diff_id in the config
        desc, _ = B.add_layer(tar_bytes([entry("mine.txt", "B\n")]))
    else:
        desc = {"mediaType": iu.MT_LAYER_GZ, "digest": "sha256:" + zero, "size": 1}
        if case == "wrong-blob":
            with open(B.blob(zero), "wb") as f:
                f.write(b"x")
    B.add_image([(desc, diff_id)], ref="t")
    line = one_line(k("image", "import", "--name", "stolen:1", f"oci:{B.path}:t"))
    want = {"missing-blob": f"{zero}: No such file or directory",
            "wrong-blob": f"layer blob sha256:{zero[:12]}: digest mismatch",
            "another-layer": f"the config's diff_id is sha256:{hexof(diff_id)[:12]}"}[case]
    assert want in line, line
    k.unchanged(before, "the refused import")
    # A's own image again, and its layer compressed another way: nothing new, and both work
    out = k.imp(f"oci:{A.path}:t", "--name", "a:2")
    assert (out["layers"], out["new_layers"]) == (1, 0), out
    C = Layout(tmp_path / "c", create=True)
    C.add_image([C.add_layer(tar, "zstd")], ref="t")
    out = k.imp(f"oci:{C.path}:t", "--name", "c:1")
    assert (out["layers"], out["new_layers"]) == (1, 0), out
    assert k.layers() == [hexof(diff_id)]


@pytest.mark.parametrize("case", ["fifo-index", "blob-outside", "config-outside", "symlink-inside"])
def test_layout_files_are_opened_beneath_it(k, imgs, tmp_path, case):
    """oci:DIR: index.json, manifests, configs and blobs are opened beneath DIR (a symlink may stay inside,
    not lead out) and only if they are regular files (a FIFO index.json hung the import)."""
    k.imp(imgs.ref("other"), "--name", "other:1")
    before = k.snapshot()
    L = iu.small_layout(tmp_path / "img")
    man = L.get_json(L.resolve("t"))
    outside = tmp_path / "outside"
    outside.mkdir()
    if case == "fifo-index":
        os.unlink(L.index_path)
        os.mkfifo(L.index_path)
        want = "index.json: a FIFO, not a regular file"
    else:
        d = man["config"]["digest"] if case == "config-outside" else man["layers"][0]["digest"]
        shutil.move(L.blob(d), outside / "blob")
        if case == "symlink-inside":
            os.rename(outside / "blob", os.path.join(L.path, "kept-here"))
            os.symlink("../../kept-here", L.blob(d))
        else:
            os.symlink(outside / "blob", L.blob(d))
        want = f"{hexof(d)}: leads outside the layout"
    r = k("image", "import", "--name", "x:1", f"oci:{L.path}:t", timeout=20)
    if case == "symlink-inside":
        assert r.returncode == 0, r.stderr
        return
    line = one_line(r)
    assert want in line, line
    k.unchanged(before, "the refused import")


# --- an interrupted import -----------------------------------------------------------------------------

def kill_mid_unpack(k, src):
    """Starts an import of the big layer and SIGKILLs it once 20 MB are on disk. False if it ended first."""
    p = subprocess.Popen(k.argv("image", "import", "--name", "big:1", src), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        started = wait_for(lambda: p.poll() is not None or iu.disk_usage(k.store) > 20 << 20, 60, 0.005)
        if p.poll() is not None:
            return False
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        return p.returncode == -signal.SIGKILL and started
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_import_killed_mid_unpack(k, big, imgs):
    src = f"oci:{big.path}:big"
    k.imp(imgs.ref("other"), "--name", "other:1")
    kept = k.layers()
    if not kill_mid_unpack(k, src):
        pytest.skip("the 200 MB import finished before it could be killed")
    assert [short(r["name"]) for r in k.list()] == ["other"], "no image of a killed import is listed"
    pr = json.loads(k("image", "prune", "--json", check=True).stdout)
    assert set(pr) >= {"images", "layers", "partial", "bytes"} and pr["partial"] >= 1 and pr["images"] == 0, pr
    assert k.layers() == kept, "prune removed what the killed import left, and nothing else"
    tmpd = os.path.join(k.store, "tmp")
    assert not os.path.isdir(tmpd) or os.listdir(tmpd) == [], os.listdir(tmpd)
    assert iu.disk_usage(k.store) < 8 << 20, iu.disk_usage(k.store)
    locks = os.path.join(k.store, "locks")
    stale = [l for l in (os.listdir(locks) if os.path.isdir(locks) else []) if l not in kept]
    assert not stale, f"prune left the lock files of layers that are not there: {stale}"
    # killed again: the next import itself cleans up, and works
    if not kill_mid_unpack(k, src):
        pytest.skip("the 200 MB import finished before it could be killed")
    out = k.imp(src, "--name", "big:1")
    assert out["new_layers"] == 1
    assert not os.path.isdir(tmpd) or os.listdir(tmpd) == [], os.listdir(tmpd)
    assert iu.disk_usage(k.store) < 230 << 20, "one copy of the big layer, no leftovers"
    [layer] = set(k.layers()) - set(kept)
    files = os.listdir(os.path.join(k.store, "layers", layer, "big"))
    assert len(files) == 200 and sum(os.path.getsize(os.path.join(k.store, "layers", layer, "big", f))
                                     for f in files) == 200 << 20


# --- rm and prune with containers ----------------------------------------------------------------------

def test_rm_untags_one_name_at_a_time(k, imgs):
    a = k.imp(imgs.ref("feat"), "--name", "feat:1")
    k.imp(imgs.ref("feat"), "--name", "feat:2")
    assert sorted((short(r["name"]), r["tag"]) for r in k.list()) == [("feat", "1"), ("feat", "2")]
    k("image", "rm", "feat:1", check=True)
    assert [(short(r["name"]), r["tag"]) for r in k.list()] == [("feat", "2")]
    assert len(k.layers()) == 3 and k.run("feat:2", check=True).stdout == FEAT_OUT + "\n"
    r = k("image", "rm", "feat:1")
    assert r.returncode != 0 and "image feat:1: not in the store" in r.stderr, "feat:1 is gone, by name"
    k("image", "rm", hexof(a["id"])[:8], check=True)  # by id: the image goes, with its names
    assert k.list() == []
    assert k.layers() == [], "rm removes the layers no other image has"
    # several at once
    k.imp(imgs.ref("feat"), "--name", "feat:3")
    k.imp(imgs.ref("other"), "--name", "other:3")
    k("image", "rm", "feat:3", "other:3", check=True)
    assert k.list() == []
    k("image", "prune", check=True)
    assert k.layers() == []


def test_rm_refused_while_a_created_container_uses_it(k, imgs):
    k.imp(imgs.ref("other"), "--name", "other:1")
    name = f"imgcreated-{os.getpid()}"
    k.names.add(name)
    k("create", "--name", name, "--image", "other:1", check=True)
    r = k("image", "rm", "other:1")
    assert r.returncode != 0 and r.stderr.strip(), r
    assert [short(x["name"]) for x in k.list()] == ["other"]
    k("delete", "--force", name, check=True)
    k("image", "rm", "other:1", check=True)
    assert k.list() == []
    k("image", "prune", check=True)
    assert k.layers() == [], "no image references them any more"


def test_rm_force_and_prune_spare_a_running_container(k, imgs):
    o = k.imp(imgs.ref("other"), "--name", "other:1")
    k.imp(imgs.ref("feat"), "--name", "feat:1")  # named and unused: prune keeps it
    name = k.detach("imgrun", "other:1", "60")
    assert k("image", "rm", "other:1").returncode != 0
    assert k("image", "rm", hexof(o["id"])[:12]).returncode != 0, "by id too"
    k("image", "rm", "--force", "other:1", check=True)
    assert [short(r["name"]) for r in k.list()] == ["feat"]
    other_only = hexof(iu.Layout(imgs.layout).image("other")[1]["rootfs"]["diff_ids"][1])
    k("image", "prune", check=True)
    assert other_only in k.layers(), "prune removed a layer a running container uses"
    assert k("exec", name, "--", "cat", "/other.txt", check=True).stdout == "other-image\n"
    assert k.run("feat:1", check=True).stdout == FEAT_OUT + "\n"
    k("delete", "--force", name, check=True)
    k.names.discard(name)
    k("image", "prune", check=True)
    assert other_only not in k.layers()
    assert len(k.layers()) == 3, "feat's layers stay"


# --- kago serve ----------------------------------------------------------------------------------------

def image_app(name, host, image, extra=""):
    return (f'Kago.app "{name}" do |a|\n  a.hosts "{host}"\n  a.container do |c|\n    c.image "{image}"\n'
            f'  end\n  a.stop_grace "1s"\n{extra}end\n')


def test_serve_port_from_the_image(k, imgs):
    """No a.port: the app's port is the image's first tcp port in ExposedPorts (8081; 53/udp is listed
    first, and serve's usual 8080 is not it)."""
    from serve_util import Server, request
    k.imp(f"docker-archive:{imgs.web_archive[1]}", "--name", "web:live")
    s = Server(image_app("web", "web.test", "web:live", '  a.start_timeout "3s"\n'), env={"KAGO_IMAGES": k.store})
    try:
        st, _, body = request(s.port, "web.test")
        assert (st, body) == (200, b"image-v1\n"), (st, body, s.stderr())
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []


def test_serve_app_from_image_and_redeploy(k, imgs):
    from serve_util import Server, request
    k.imp(f"docker-archive:{imgs.web_archive[1]}", "--name", "web:live")
    s = Server(image_app("web", "web.test", "web:live", "  a.port 8081\n"), env={"KAGO_IMAGES": k.store})
    try:
        st, h, body = request(s.port, "web.test")
        assert (st, body) == (200, b"image-v1\n"), (st, body, s.stderr())
        assert "x-kago-cold-start" in h
        # a new image under the same name, then a reload: the next instance serves it
        v2 = k.imp(f"docker-archive:{imgs.web_archive[2]}", "--name", "web:live")
        assert hexof(v2["id"]).startswith(hexof(row(k, "web", "live")["id"]))
        # the old image is nameless now, but serve's instance (in serve's own --root) still runs on it:
        # prune keeps its layers, and the instance keeps serving
        v1_only = hexof(Layout(imgs.layout).image("web1")[1]["rootfs"]["diff_ids"][1])
        k("image", "prune", check=True)
        assert v1_only in k.layers(), "prune removed a layer of serve's running instance"
        st, _, body = request(s.port, "web.test")
        assert (st, body) == (200, b"image-v1\n"), "no reload yet: the running instance answers"
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: request(s.port, "web.test")[2] == b"image-v2\n", 10), s.stderr()
        st, _, body = request(s.port, "web.test")
        assert (st, body) == (200, b"image-v2\n")
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []
    k("image", "prune", check=True)
    assert [(short(r["name"]), r["tag"]) for r in k.list()] == [("web", "live")]
    assert v1_only not in k.layers(), "once serve is gone, prune removes the old image's layer"


def test_guestbook_through_serve(k, tmp_path):
    from serve_util import Server, request
    mk = os.path.join(iu.REPO, "scripts", "mkimage")
    if not os.path.exists(mk):
        pytest.skip("scripts/mkimage is missing: no guestbook image")
    cache = subprocess.run([mk, "--dir"], capture_output=True, text=True).stdout.strip()
    if cache and not os.path.exists(os.path.join(cache, "ok")):
        # not built for this version of scripts/mkimage: the newest build of another version will do
        built = sorted(glob.glob(os.path.join(os.path.dirname(cache), "*", "ok")), key=os.path.getmtime)
        if built:
            print(f"using {os.path.dirname(built[-1])}: {cache} is not built")
            cache = os.path.dirname(built[-1])
    if not cache or not os.path.exists(os.path.join(cache, "ok")):
        pytest.skip(f"the guestbook image is not built ({cache or '?'}): run scripts/mkimage (about 90 s)")
    out = k.imp(f"docker-archive:{cache}/guestbook-docker.tar")
    assert [short(n) for n in out["names"]] == ["guestbook:latest"], out
    data = tmp_path / "gbdata"
    data.mkdir()
    os.chown(data, 1000, 1000)  # the image's user app
    extra = f'  a.data "{data}", to: "/data"\n'
    s = Server(image_app("guestbook", "guestbook.test", "guestbook:latest", extra), env={"KAGO_IMAGES": k.store})
    try:
        st, h, body = request(s.port, "guestbook.test", "/healthz")
        assert (st, body) == (200, b"ok\n"), (st, body, s.stderr())
        msg = "hello-" + os.urandom(4).hex()
        st, h, _ = request(s.port, "guestbook.test", "/", "POST", f"name=kago&message={msg}".encode(),
                           {"Content-Type": "application/x-www-form-urlencoded"})
        assert st == 303, (st, s.stderr())
        assert os.path.exists(data / "guestbook.db"), "the SQLite file is on the host"
        # the instance goes; the next one (a cold start) serves the same entries
        [inst] = s.instances("guestbook")
        os.kill(inst["pid"], signal.SIGKILL)
        assert wait_for(lambda: not s.instances("guestbook"), 10)
        st, h, body = request(s.port, "guestbook.test", "/?format=json")
        assert st == 200 and "x-kago-cold-start" in h, (st, h)
        entries = json.loads(body)["entries"]
        assert [(e["name"], e["message"]) for e in entries] == [("kago", msg)], entries
    finally:
        assert s.stop() == 0, s.stderr()
        assert s.leftovers() == []
