"""Test images for kago's image tests, built from the busybox rootfs with the tools podman's world uses
(umoci for layouts and layers, skopeo for the archive formats and zstd), plus hand-made OCI layouts
(python tarfile + hashlib) for what those tools will not write: opaque directories, several platforms,
broken and malicious layers.

Everything is written below the directory the caller gives (a pytest tmp dir)."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZ = MT_LAYER + "+gzip"
MT_LAYER_ZST = MT_LAYER + "+zstd"
REF_NAME = "org.opencontainers.image.ref.name"

PATH_ENV = "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# the user the feature image adds to /etc/passwd and /etc/group, and runs as
APP_USER, APP_UID, APP_GROUP, APP_GID = "app", 1234, "appgrp", 2345

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sh(*cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def skopeo(*args, tmp):
    """skopeo as root writes a blob-info cache in /var/lib/containers and temp files in /var/tmp: run it in a
    private mount namespace with a tmpfs over /var/lib, and TMPDIR in tmp, so that it leaves nothing behind."""
    return sh("unshare", "-m", "--propagation", "private", "sh", "-c",
              'mount -t tmpfs kago-itest-skopeo /var/lib && exec skopeo --insecure-policy "$@"', "skopeo", *args,
              env={**os.environ, "TMPDIR": str(tmp)})


def hexof(digest):
    return digest.split(":")[-1]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# --- tar layers by hand --------------------------------------------------------------------------------

def entry(name, data=b"", kind="file", mode=None, uid=0, gid=0, link="", pax=None, dev=(0, 0), mtime=1700000000):
    """One tar entry: (TarInfo, data). kind: file, dir, symlink, hardlink, fifo, chardev (dev: its major and
    minor)."""
    ti = tarfile.TarInfo(name)
    ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
               "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE}[kind]
    ti.devmajor, ti.devminor = dev
    ti.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o777 if kind == "symlink" else 0o644)
    ti.uid, ti.gid = uid, gid
    ti.mtime = mtime
    ti.linkname = link
    if pax:
        ti.pax_headers = dict(pax)
    if isinstance(data, str):
        data = data.encode()
    ti.size = len(data) if kind == "file" else 0
    return ti, data


def tar_bytes(entries):
    """A tar stream (PAX, so xattrs can ride in SCHILY.xattr.* records) of entries, names kept as given
    (absolute and ../ ones too: tarfile only sanitises on extraction)."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in entries:
            t.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    return b.getvalue()


def sparse_entry(name, realsize, chunks):
    """A sparse file as GNU tar writes it in PAX format 1.0 (tarfile reads those but does not write them):
    the data holds the map (how many chunks, then each one's offset and length, in decimal lines, padded to a
    block), then the chunks; the PAX records give the real name and size. chunks: [(offset, bytes)]."""
    m = f"{len(chunks)}\n" + "".join(f"{off}\n{len(d)}\n" for off, d in chunks)
    m = m.encode() + b"\0" * (-len(m) % 512)
    return entry(f"GNUSparseFile.0/{name}", m + b"".join(d for _, d in chunks),
                 pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
                      "GNU.sparse.realsize": str(realsize)})


class _HashingWriter:
    """A file-like sink that hashes what it is given and passes it on (to a gzip file)."""

    def __init__(self, out):
        self.out, self.h = out, hashlib.sha256()

    def write(self, b):
        self.h.update(b)
        return self.out.write(b)


def add_streamed_layer(L, entries, level=1):
    """A gzip layer of entries (an iterable of (TarInfo, data), never all in memory: for layers of hundreds of
    MB) written straight into layout L. Returns (descriptor, diff_id)."""
    tmp = os.path.join(L.path, "layer.tmp")
    with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=level, mtime=0) as gz:
        w = _HashingWriter(gz)
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as t:
            for ti, data in entries:
                t.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    d = sha256_file(tmp)
    os.rename(tmp, L.blob(d))
    return {"mediaType": MT_LAYER_GZ, "digest": "sha256:" + d, "size": os.path.getsize(L.blob(d))}, \
        "sha256:" + w.h.hexdigest()


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, 6, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    assert how == "none", how
    return data


# --- OCI image layouts ---------------------------------------------------------------------------------

class Layout:
    """An OCI image layout directory (what `oci:DIR` names), read and written by hand."""

    def __init__(self, path, create=False):
        self.path = str(path)
        if create:
            os.makedirs(os.path.join(self.path, "blobs", "sha256"), exist_ok=True)
            with open(os.path.join(self.path, "oci-layout"), "w") as f:
                json.dump({"imageLayoutVersion": "1.0.0"}, f)
            if not os.path.exists(self.index_path):
                self.write_index({"schemaVersion": 2, "manifests": []})

    @property
    def index_path(self):
        return os.path.join(self.path, "index.json")

    def blob(self, digest):
        """The path of a blob (digest with or without sha256:)."""
        return os.path.join(self.path, "blobs", "sha256", digest.split(":")[-1])

    def put(self, data, media_type, **extra):
        if isinstance(data, str):
            data = data.encode()
        d = sha256(data)
        with open(self.blob(d), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + d, "size": len(data), **extra}

    def put_json(self, obj, media_type, **extra):
        return self.put(json.dumps(obj, separators=(",", ":")), media_type, **extra)

    def get_json(self, desc):
        with open(self.blob(desc["digest"] if isinstance(desc, dict) else desc)) as f:
            return json.load(f)

    def index(self):
        with open(self.index_path) as f:
            return json.load(f)

    def write_index(self, idx):
        with open(self.index_path, "w") as f:
            json.dump(idx, f)

    def resolve(self, ref):
        """The descriptor index.json gives the name ref."""
        for m in self.index()["manifests"]:
            if m.get("annotations", {}).get(REF_NAME) == ref:
                return m
        raise KeyError(f"{self.path}: no {ref}")

    def image(self, ref):
        """(manifest, config) of the (single-platform) image ref."""
        man = self.get_json(self.resolve(ref))
        return man, self.get_json(man["config"])

    def tag(self, ref, desc):
        """Points ref at desc (a manifest or index descriptor), replacing what it named before."""
        idx = self.index()
        idx["manifests"] = [m for m in idx["manifests"] if m.get("annotations", {}).get(REF_NAME) != ref]
        d = {k: v for k, v in desc.items() if k != "annotations"}
        d["annotations"] = {REF_NAME: ref}
        idx["manifests"].append(d)
        self.write_index(idx)
        return d

    def add_layer(self, tar, how="gzip", media_type=None):
        """Stores a layer blob; returns (descriptor, diff_id)."""
        blob = compress(tar, how)
        mt = media_type or {"gzip": MT_LAYER_GZ, "zstd": MT_LAYER_ZST, "none": MT_LAYER}[how]
        return self.put(blob, mt), "sha256:" + sha256(tar)

    def add_image(self, layers, config=None, arch="amd64", os_="linux", ref=None, raw_config=None):
        """A manifest over layers [(descriptor, diff_id)] with a config; tagged ref when given. Returns the
        manifest descriptor."""
        cfg = raw_config or {
            "created": "2024-01-01T00:00:00Z", "architecture": arch, "os": os_,
            "config": config if config is not None else {"Env": [PATH_ENV], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "kago image tests"} for _ in layers],
        }
        cdesc = self.put_json(cfg, MT_CONFIG)
        man = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cdesc, "layers": [l for l, _ in layers]}
        mdesc = self.put_json(man, MT_MANIFEST)
        if ref:
            self.tag(ref, mdesc)
        return mdesc

    def layers_of(self, ref):
        """[(descriptor, diff_id)] of image ref."""
        man, cfg = self.image(ref)
        return list(zip(man["layers"], cfg["rootfs"]["diff_ids"]))

    def append_layer(self, ref, tar, new_ref, how="gzip"):
        """Image ref plus one layer, as new_ref (config and history kept)."""
        man, cfg = self.image(ref)
        ldesc, diff_id = self.add_layer(tar, how)
        cfg = json.loads(json.dumps(cfg))
        cfg["rootfs"]["diff_ids"].append(diff_id)
        cfg.setdefault("history", []).append({"created": "2024-01-01T00:00:00Z", "created_by": "python tarfile"})
        man = dict(man, config=self.put_json(cfg, MT_CONFIG), layers=man["layers"] + [ldesc])
        return self.tag(new_ref, self.put_json(man, MT_MANIFEST))

    def copy_blob_from(self, other, digest):
        shutil.copyfile(other.blob(digest), self.blob(digest))


def copy_layout(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return Layout(dst)


# --- umoci ---------------------------------------------------------------------------------------------

def umoci_config(layout, ref, new_ref, env=(), cmd=None, entrypoint=None, workdir=None, user=None, ports=(),
                 labels=None):
    args = ["umoci", "config", "--image", f"{layout}:{ref}", "--tag", new_ref]
    for e in env:
        args += ["--config.env", e]
    for c in cmd or ():
        args += ["--config.cmd", c]
    for c in entrypoint or ():
        args += ["--config.entrypoint", c]
    if workdir:
        args += ["--config.workingdir", workdir]
    if user:
        args += ["--config.user", user]
    for p in ports:
        args += ["--config.exposedports", p]
    for k, v in (labels or {}).items():
        args += ["--config.label", f"{k}={v}"]
    sh(*args)


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data)
    os.chmod(path, mode)


LONG_DIR = "opt/" + "d" * 150
LONG_FILE = LONG_DIR + "/" + "f" * 200 + ".txt"  # names beyond ustar's 100 + 155: PAX path records
EP_SCRIPT = '#!/bin/sh\necho "ep:$*"\n'
SUID_SCRIPT = "#!/bin/sh\necho suid\n"
# tag -> the image's User, and the uid and gid it means (the image's /etc/passwd and /etc/group)
USER_FORMS = {"user-uid": ("1234", 1234, 2345), "user-name-group": ("app:root", 1234, 0),
              "user-uid-group": ("0:appgrp", 0, 2345), "user-pair": ("1234:33", 1234, 33)}
HTTPD_CMD = ["/usr/sbin/httpd", "-f", "-p", "8081", "-h", "/srv/www"]


class TestImages:
    """Every image the tests import, built once per session under work.

    layout (oci:DIR, made with umoci) holds these tags:
      base   the busybox rootfs as one layer
      feat   base + a umoci layer (a whiteout of /etc/hostname, a user, a hard link, a symlink, a setuid file,
             an xattr, a file owned by the user, /bin/ep) + a hand-made layer making /var/www opaque, with
             Env, WorkingDir, User (by name), Entrypoint + Cmd, ExposedPorts and labels
      other  base + one small layer (layer sharing)
      web1   base + /srv/www/index.html "image-v1", httpd on the image's port (8081/tcp; 53/udp listed first)
      web2   the same serving "image-v2"
    and, from feat: zstd (oci layout, zstd layers), archive (oci-archive), docker (docker-archive, RepoTags
    featd:v1); multi: an index of four platforms where linux/amd64 is the third."""

    def __init__(self, work, rootfs):
        self.work = str(work)
        self.rootfs = rootfs
        self.layout = os.path.join(self.work, "kagotest")
        self.L = Layout(self.layout)
        self.build_umoci()
        self.build_formats()
        self.build_docker25()
        self.build_multi()

    def ref(self, tag):
        return f"oci:{self.layout}:{tag}"

    def build_umoci(self):
        L, w = self.layout, self.work
        sh("umoci", "init", "--layout", L)
        sh("umoci", "new", "--image", f"{L}:empty")
        b = os.path.join(w, "bundle-base")
        sh("umoci", "unpack", "--image", f"{L}:empty", b)
        sh("cp", "-a", self.rootfs + "/.", b + "/rootfs/")
        # the base's /var/www holds index.html (mkrootfs); a directory the opaque layer replaces
        sh("umoci", "repack", "--image", f"{L}:base-raw", b)
        umoci_config(L, "base-raw", "base", env=[PATH_ENV], cmd=["/bin/sh"])

        # feat: the umoci layer
        b = os.path.join(w, "bundle-feat")
        sh("umoci", "unpack", "--image", f"{L}:base-raw", b)
        r = b + "/rootfs"
        os.unlink(r + "/etc/hostname")                                   # -> etc/.wh.hostname
        os.rmdir(r + "/data")                                            # -> .wh.data (a directory)
        with open(r + "/etc/passwd", "a") as f:
            f.write(f"{APP_USER}:x:{APP_UID}:{APP_GID}:app:/home/app:/bin/sh\n")
        with open(r + "/etc/group", "a") as f:
            f.write(f"{APP_GROUP}:x:{APP_GID}:\n")
        os.makedirs(r + "/home/app")
        os.chown(r + "/home/app", APP_UID, APP_GID)
        write(r + "/opt/data/orig", "hello-data\n")
        os.chown(r + "/opt/data/orig", APP_UID, APP_GID)
        os.setxattr(r + "/opt/data/orig", "user.kago", b"xattr-value")
        os.link(r + "/opt/data/orig", r + "/opt/data/hard")
        os.symlink("orig", r + "/opt/data/sym")
        os.symlink("/opt/data/orig", r + "/opt/abs-sym")
        write(r + "/opt/suid", SUID_SCRIPT, 0o755)
        os.chmod(r + "/opt/suid", 0o4755)
        write(r + "/bin/ep", EP_SCRIPT, 0o755)
        sh("umoci", "repack", "--image", f"{L}:feat-umoci", b)
        # the opaque layer, by hand: umoci writes per-file whiteouts for a replaced directory
        opaque = tar_bytes([entry("var/", kind="dir"), entry("var/www/", kind="dir"),
                            entry("var/www/.wh..wh..opq"), entry("var/www/new.html", "new-www\n"),
                            entry("opt/", kind="dir"), entry(LONG_DIR + "/", kind="dir"),
                            entry(LONG_FILE, "long-name\n")])
        self.L.append_layer("feat-umoci", opaque, "feat-raw")
        umoci_config(L, "feat-raw", "feat", env=[PATH_ENV, "GREETING=hello from the image", "EMPTY="],
                     workdir="/home/app", user=APP_USER, entrypoint=["/bin/ep", "--from-ep"],
                     cmd=["cmd-a", "cmd-b"], ports=["8080/tcp"],
                     labels={"org.kago.test": "feat", "org.opencontainers.image.title": "kago feature image"})
        # the same image with other forms of User
        for tag, (user, _, _) in USER_FORMS.items():
            umoci_config(L, "feat", tag, user=user)

        # other: base + one small layer
        b = os.path.join(w, "bundle-other")
        sh("umoci", "unpack", "--image", f"{L}:base-raw", b)
        write(b + "/rootfs/other.txt", "other-image\n")
        sh("umoci", "repack", "--image", f"{L}:other-raw", b)
        umoci_config(L, "other-raw", "other", env=[PATH_ENV], cmd=["cat", "/other.txt"])

        # web1, web2: busybox httpd serving a file baked into a layer
        for v in (1, 2):
            b = os.path.join(w, f"bundle-web{v}")
            sh("umoci", "unpack", "--image", f"{L}:base-raw", b)
            write(b + "/rootfs/srv/www/index.html", f"image-v{v}\n")
            sh("umoci", "repack", "--image", f"{L}:web{v}-raw", b)
            umoci_config(L, f"web{v}-raw", f"web{v}", env=[PATH_ENV], cmd=HTTPD_CMD,
                         ports=["53/udp", "8081/tcp"])
        for b in os.listdir(w):
            if b.startswith("bundle-"):
                shutil.rmtree(os.path.join(w, b))

        man, cfg = self.L.image("feat")
        assert len(man["layers"]) == 3 and all(l["mediaType"] == MT_LAYER_GZ for l in man["layers"]), man
        self.feat_diff_ids = cfg["rootfs"]["diff_ids"]
        self.base_diff_id = self.L.image("base")[1]["rootfs"]["diff_ids"][0]

    def build_formats(self):
        def copy(*args):
            skopeo("copy", "-q", *args, tmp=self.work)
        self.zstd = os.path.join(self.work, "feat-zstd")
        copy("--dest-compress-format", "zstd", "--dest-compress", self.ref("feat"), f"oci:{self.zstd}:feat")
        self.archive = os.path.join(self.work, "feat-archive.tar")
        copy(self.ref("feat"), f"oci-archive:{self.archive}:feat")
        self.docker = os.path.join(self.work, "feat-docker.tar")
        copy(self.ref("feat"), f"docker-archive:{self.docker}:featd:v1")
        # the web images as archives too: serve's redeploy imports one under the same name
        self.web_archive = {}
        for v in (1, 2):
            self.web_archive[v] = os.path.join(self.work, f"web{v}.tar")
            copy(self.ref(f"web{v}"), f"docker-archive:{self.web_archive[v]}:web:v{v}")

    def build_docker25(self):
        """A docker-archive as docker 25+ writes it: an OCI layout (uncompressed layers) plus manifest.json
        whose Config and Layers are blobs/sha256/HEX paths."""
        self.docker25 = os.path.join(self.work, "feat-docker25.tar")
        src = Layout(self.layout)
        man, cfg = src.image("feat")
        D = Layout(os.path.join(self.work, "docker25"), create=True)
        with tarfile.open(self.docker) as t:  # skopeo's docker-archive: uncompressed layers named by diff_id
            layers = [D.put(t.extractfile(f"{hexof(d)}.tar").read(), MT_LAYER) for d in cfg["rootfs"]["diff_ids"]]
        cdesc = D.put(open(src.blob(man["config"]["digest"]), "rb").read(), MT_CONFIG)
        mdesc = D.put_json({"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cdesc, "layers": layers},
                           MT_MANIFEST)
        D.write_index({"schemaVersion": 2, "manifests": [dict(mdesc, annotations={
            "io.containerd.image.name": "docker.io/library/featd25:v1", REF_NAME: "v1"})]})
        with open(os.path.join(D.path, "manifest.json"), "w") as f:
            json.dump([{"Config": "blobs/sha256/" + hexof(cdesc["digest"]), "RepoTags": ["featd25:v1"],
                        "Layers": ["blobs/sha256/" + hexof(l["digest"]) for l in layers]}], f)
        sh("tar", "-C", D.path, "-cf", self.docker25, "oci-layout", "index.json", "manifest.json", "blobs")
        # an oci-archive as `tar -C DIR -cf FILE .` makes it: every name starts with ./
        self.dot_archive = os.path.join(self.work, "feat-dot.tar")
        sh("tar", "-C", self.layout, "-cf", self.dot_archive, ".")

    def build_multi(self):
        """An index of four platforms (linux/arm64, windows/amd64, linux/amd64, linux/ppc64le), nested as
        skopeo copy --all writes it; each image is the base layer plus /platform naming it."""
        self.multi = os.path.join(self.work, "multi")
        M = Layout(self.multi, create=True)
        base = self.L.layers_of("base")[0]
        M.copy_blob_from(self.L, base[0]["digest"])
        manifests = []
        for os_, arch, variant in (("linux", "arm64", "v8"), ("windows", "amd64", None), ("linux", "amd64", None),
                                   ("linux", "ppc64le", None)):
            plat = f"{os_}/{arch}"
            marker = M.add_layer(tar_bytes([entry("platform", plat + "\n")]))
            d = M.add_image([base, marker], arch=arch, os_=os_,
                            config={"Env": [PATH_ENV], "Cmd": ["cat", "/platform"]})
            d["platform"] = {"architecture": arch, "os": os_, **({"variant": variant} if variant else {})}
            manifests.append(d)
        self.multi_manifests = manifests
        idx = M.put_json({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}, MT_INDEX)
        M.tag("multi", idx)
        # the same index without linux/amd64
        idx = M.put_json({"schemaVersion": 2, "mediaType": MT_INDEX,
                          "manifests": [m for m in manifests if m["platform"]["architecture"] != "amd64"]}, MT_INDEX)
        M.tag("noamd64", idx)


# --- small hand-made images (verification failures, malicious layers) -----------------------------------

def small_layout(path, tar=None, ref="t", how="gzip", media_type=None, config=None):
    """A layout holding one image of one hand-made layer (by default /hello.txt)."""
    L = Layout(path, create=True)
    if tar is None:
        tar = tar_bytes([entry("hello.txt", "hello\n")])
    layer = L.add_layer(tar, how, media_type)
    L.add_image([layer], config=config, ref=ref)
    return L


def many_layers_layout(path, base_layout, n):
    """The busybox base plus n one-file layers (/layers/NNN), each adding its file."""
    L = Layout(path, create=True)
    base = base_layout.layers_of("base")[0]
    L.copy_blob_from(base_layout, base[0]["digest"])
    layers = [base] + [L.add_layer(tar_bytes([entry("layers/", kind="dir"), entry(f"layers/{i:03d}", f"{i}\n")]))
                       for i in range(n)]
    L.add_image(layers, ref="many", config={"Env": [PATH_ENV], "Cmd": ["/bin/sh", "-c", "ls /layers | wc -l"]})
    return L


def big_layout(path, mb=200, files=200):
    """A layout of one uncompressed layer of `mb` MB of random data in `files` files (SIGKILL mid-unpack)."""
    L = Layout(path, create=True)
    tmp = os.path.join(path, "layer.tar")
    per = (mb << 20) // files
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(entry("big/", kind="dir")[0])
        for i in range(files):
            ti = tarfile.TarInfo(f"big/f{i:04d}")
            ti.size, ti.mode, ti.mtime = per, 0o644, 1700000000
            t.addfile(ti, io.BytesIO(os.urandom(per)))
    d = sha256_file(tmp)
    os.rename(tmp, L.blob(d))
    layer = ({"mediaType": MT_LAYER, "digest": "sha256:" + d, "size": os.path.getsize(L.blob(d))}, "sha256:" + d)
    L.add_image([layer], ref="big", config={"Env": [PATH_ENV], "Cmd": ["/bin/sh"]})
    return L


# --- the store, as the tests look at it ----------------------------------------------------------------

def disk_usage(path):
    """Bytes on disk below path (st_blocks, each inode once, not crossing into other mounts)."""
    if not os.path.exists(path):
        return 0
    dev = os.lstat(path).st_dev
    seen, total = set(), 0
    for d, dirs, files in os.walk(path):
        dirs[:] = [x for x in dirs if os.lstat(os.path.join(d, x)).st_dev == dev]
        for n in dirs + files:
            st = os.lstat(os.path.join(d, n))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def tree(path):
    """Every path below path (relative), with its type: what a failed import must not change."""
    out = set()
    if not os.path.exists(path):
        return out
    for d, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(d, n)
            out.add((os.path.relpath(p, path), os.lstat(p).st_mode >> 12))
    return out


def mkrootfs(dest):
    sh(os.path.join(REPO, "scripts", "mkrootfs"), dest)
    return dest
