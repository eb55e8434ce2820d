"""User namespaces by default (docs/userns.md): each container's root is a range of 65536 host ids from
kago's pool, its rootfs, layers and binds are idmapped mounts. Real containers, as root. Each test uses a
pool record and a subuid/subgid file of its own (KAGO_USERNS_DB, KAGO_SUBUID, KAGO_SUBGID)."""
import os
import subprocess

import pytest

from conftest import ROOTFS

POOL = 300000000  # kago:300000000:196608 in this test's subuid/subgid: three ranges


@pytest.fixture
def pool(tmp_path, monkeypatch):
    for f in ("subuid", "subgid"):
        (tmp_path / f).write_text(f"someone:100000:65536\nkago:{POOL}:196608\n")
    monkeypatch.setenv("KAGO_SUBUID", str(tmp_path / "subuid"))
    monkeypatch.setenv("KAGO_SUBGID", str(tmp_path / "subgid"))
    monkeypatch.setenv("KAGO_USERNS_DB", str(tmp_path / "userns"))
    return tmp_path / "userns"


def uid_map(kago, *opts):
    r = kago("run", "--rootfs", ROOTFS, *opts, "--", "cat", "/proc/self/uid_map", check=True)
    return r.stdout.split()


def host_uid(pid):
    return int([l for l in open(f"/proc/{pid}/status") if l.startswith("Uid:")][0].split()[1])


def test_root_is_a_range_of_the_pool_and_host_opts_out(kago, rootfs, pool):
    assert uid_map(kago) == ["0", str(POOL), "65536"]
    assert uid_map(kago, "--userns", "host") == ["0", "0", "4294967295"]
    name = kago.run_detached("uns1", "sleep", "30")
    assert host_uid(kago.state(name)["pid"]) == POOL, "the container's root is not the host's"
    # explicit maps win over the pool
    assert uid_map(kago, "--ns", "pid,mount,user", "--uidmap", "0:100000:65536") == ["0", "100000", "65536"]


def test_two_containers_get_different_ranges_released_on_delete(kago, rootfs, pool):
    a = kago.run_detached("uns-a", "sleep", "30")
    b = kago.run_detached("uns-b", "sleep", "30")
    ua, ub = host_uid(kago.state(a)["pid"]), host_uid(kago.state(b)["pid"])
    assert {ua, ub} == {POOL, POOL + 65536}, (ua, ub)
    assert {l.split()[1] for l in pool.read_text().splitlines()} == {"uns-a", "uns-b"}
    # the third range is the last: a fourth container is refused, by name, and leaves nothing
    c = kago.run_detached("uns-c", "sleep", "30")
    r = kago("run", "--name", "uns-d", "--rootfs", ROOTFS, "--", "true")
    assert r.returncode != 0 and "user namespace pool: all 3 ranges of 65536 ids are taken" in r.stderr, r
    assert not os.path.exists(os.path.join(kago.root, "uns-d"))
    kago("delete", "--force", c, check=True)
    kago("delete", "--force", a, check=True)
    held = {l.split()[1] for l in pool.read_text().splitlines() if not l.startswith("#")}
    assert held == {"uns-b"}, held
    d = kago.run_detached("uns-d", "sleep", "30")
    assert host_uid(kago.state(d)["pid"]) == POOL + (0 if ua == POOL else 65536), "a freed range is reused"


def test_image_root_files_are_root_inside_and_writes_stay_in_the_upper(kago, rootfs, pool):
    st = os.stat(os.path.join(ROOTFS, "bin/busybox"))
    assert st.st_uid == 0
    r = kago("run", "--rootfs", ROOTFS, "--overlay", "--", "/bin/sh", "-c",
             "ls -ln /bin/busybox /; touch /etc/new && ls -ln /etc/new && id -u", check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split()[2:4] == ["0", "0"], lines  # owned by root in the rootfs: root inside
    assert [l for l in lines if l.endswith("/etc/new")][0].split()[2:4] == ["0", "0"], lines
    assert lines[-1] == "0"
    assert not os.path.exists(os.path.join(ROOTFS, "etc/new")), "the shared rootfs was written"


def test_bind_is_idmapped(kago, rootfs, pool, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "host-file").write_text("x")
    os.chown(data / "host-file", 1000, 1000)
    r = kago("run", "--rootfs", ROOTFS, "--overlay", "--bind", f"{data}:/data", "--", "/bin/sh", "-c",
             "ls -ln /data/host-file; touch /data/by-root; chown 1000:1000 /data/by-root && echo chowned", check=True)
    assert r.stdout.split()[2:4] == ["1000", "1000"], r.stdout  # ids read through the mapping
    assert "chowned" in r.stdout
    st = os.stat(data / "by-root")
    # idmapped: what the container's uid N writes is uid N on the host, not POOL + N
    assert (st.st_uid, st.st_gid) == (1000, 1000), (st.st_uid, st.st_gid)
    r = kago("run", "--rootfs", ROOTFS, "--overlay", "--bind", f"{data}:/data", "--", "touch", "/data/f0",
             check=True)
    assert os.stat(data / "f0").st_uid == 0


def test_overlay_dir_failure_is_named(kago, rootfs, pool, tmp_path):
    # a bad --overlay-dir is named with its errno, not taken for a kernel without idmapped overlays
    (tmp_path / "file").write_text("x")
    for d, why in ((tmp_path / "no" / "deep", "No such file or directory"), (tmp_path / "file", "Not a directory")):
        r = kago("run", "--name", "uns-ovd", "--rootfs", ROOTFS, "--overlay-dir", str(d), "--", "true")
        assert r.returncode != 0 and f"overlay: mkdir in {d}: {why}" in r.stderr, r.stderr
        assert "need Linux" not in r.stderr and not os.path.exists(os.path.join(kago.root, "uns-ovd"))
    assert not (tmp_path / "no").exists()


def test_create_then_start(kago, rootfs, pool):
    # the exec fifo is opened by the container's root, not the host's
    kago("create", "--name", "uns-cs", "--rootfs", ROOTFS, "--", "sleep", "30", check=True)
    kago.names.add("uns-cs")
    kago("start", "uns-cs", check=True)
    assert host_uid(kago.state("uns-cs")["pid"]) == POOL


def test_missing_pool_entry(kago, rootfs, pool, tmp_path, monkeypatch):
    # no kago entry: kago's documented default range, unless another entry claims it
    (tmp_path / "subuid").write_text("someone:100000:65536\n")
    assert uid_map(kago) == ["0", "2147483648", "65536"]
    (tmp_path / "subuid").write_text("someone:2000000000:1000000000\n")
    r = kago("run", "--rootfs", ROOTFS, "--", "true")
    assert r.returncode != 0 and "has no kago entry" in r.stderr and "--userns host" in r.stderr, r.stderr
    assert r.stderr.startswith("kago: container "), r.stderr


def test_kagofile_userns(kago, rootfs, pool, tmp_path):
    kf = tmp_path / "Kagofile"
    kf.write_text(f'''Kago.container "uns-kf" do |c|
  c.rootfs "{ROOTFS}"
  c.command "cat", "/proc/self/uid_map"
end
Kago.container "uns-kh" do |c|
  c.rootfs "{ROOTFS}"
  c.userns :host
  c.command "cat", "/proc/self/uid_map"
end
''')
    r = kago("run", str(kf), "uns-kf", check=True)
    assert f"0 {POOL} 65536" in " ".join(r.stdout.split()), r.stdout
    r = kago("run", str(kf), "uns-kh", check=True)
    assert "0 0 4294967295" in " ".join(r.stdout.split()), r.stdout
    kf.write_text(kf.read_text().replace("c.userns :host", "c.userns :bogus"))
    r = kago("run", str(kf), "uns-kh")
    assert r.returncode != 0 and "userns" in r.stderr and "bogus" in r.stderr, r.stderr


def test_serve_apps_get_their_own_range_stable_across_a_restart(pool):
    from serve_util import STATIC, Server, app, request
    from test_serve_adopt import Restarted
    apps = app("web", ["web.test"], STATIC) + app("api", ["api.test"], STATIC)
    s1 = Server(apps)
    s2 = None
    try:
        uids = {}
        for name in ("web", "api"):
            st, _, body = request(s1.port, f"{name}.test", "/index.html")
            assert st == 200 and body.strip() == b"hello-static", (name, st, body)
            uids[name] = host_uid(s1.instances(name)[0]["pid"])
        assert uids["web"] != uids["api"] and {uids["web"], uids["api"]} <= {POOL, POOL + 65536, POOL + 131072}
        s1.stop()
        s2 = Restarted(s1)
        for name in ("api", "web"):  # the other order: a range follows its app, not the order of starts
            st, _, _ = request(s2.port, f"{name}.test", "/index.html")
            assert st == 200
            assert host_uid(s2.instances(name)[0]["pid"]) == uids[name], name
        s2.stop()
        s2 = None
    finally:
        for s in (s2, s1):
            if s is not None and s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()


def test_serve_with_more_apps_than_ranges_gives_the_pool_to_those_it_can(pool):
    """Five apps, a pool of three ranges: three apps get theirs at load and serve; the other two are told
    at their start why they cannot (the pool is full), and the log says so at load."""
    from serve_util import STATIC, Server, app, request
    names = ["a1", "a2", "a3", "a4", "a5"]
    s = Server("".join(app(n, [f"{n}.test"], STATIC) for n in names))
    try:
        assert "2 of 5 apps have no user namespace range yet" in s.stderr(), s.stderr()
        held = [l.split()[1] for l in open(pool).read().splitlines() if l and not l.startswith("#")]
        assert len(held) == 3 and all(k.startswith("serve:") for k in held), held
        got = {n: request(s.port, f"{n}.test", "/index.html")[0] for n in names}
        ranged = {k.rsplit("/", 1)[1] for k in held}
        assert all(got[n] == 200 for n in ranged), got
        assert all(got[n] == 503 for n in set(names) - ranged), got
        assert "ranges of 65536 ids are taken" in s.stderr(), s.stderr()
    finally:
        assert s.stop() == 0
        assert s.leftovers() == []


def test_checkpoint_is_refused_with_a_user_namespace(kago, rootfs, pool, tmp_path):
    # CRIU would restore the rootfs and binds without their idmapping: refused before criu runs, by name
    name = kago.run_detached("uns-cp", "sleep", "30")
    r = kago("checkpoint", name, "--image", str(tmp_path / "img"))
    assert r.returncode != 0 and "user namespace of kago's pool is not supported" in r.stderr, r.stderr
    assert "--userns host" in r.stderr
    assert kago.state(name)["status"] == "running"
