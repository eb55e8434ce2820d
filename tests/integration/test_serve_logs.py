"""kago serve's per-app logs: every instance's stdout and stderr recorded under <root>/logs/<app>,
labelled with time, instance and stream, rotated by size; read with `kago logs`. Needs root, the busybox
rootfs and build/kago."""
import json
import os
import select
import signal
import subprocess
import time

import pytest

from conftest import wait_for
from serve_util import KAGO, ROOTFS, Server, admin_request, app, free_port, request, serving

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

# Prints one line to stdout (fd 3, the instance's stdout kept for the CGI) and one to stderr per request
# to /cgi-bin/log?WORD; /cgi-bin/long?N prints a stdout line of N bytes; /cgi-bin/flood?N prints the lines 1
# to N to stdout, in the background.
CHATTY = r"""mkdir -p /srv/www/cgi-bin
printf '#!/bin/sh\necho "out-$QUERY_STRING" >&3\necho "err-$QUERY_STRING" >&2\necho Content-Type: text/plain\necho\necho ok\n' > /srv/www/cgi-bin/log
printf '#!/bin/sh\nhead -c ${QUERY_STRING:-100} /dev/zero | tr "\\\\0" y >&3\necho >&3\necho Content-Type: text/plain\necho\necho ok\n' > /srv/www/cgi-bin/long
printf '#!/bin/sh\n(seq 1 $QUERY_STRING >&3 &)\necho Content-Type: text/plain\necho\necho ok\n' > /srv/www/cgi-bin/flood
chmod +x /srv/www/cgi-bin/*
echo started-out; echo started-err >&2
exec 3>&1
exec /usr/sbin/httpd -f -p 8080 -h /srv/www"""


def logs(srv, *args, check=True):
    r = subprocess.run([KAGO, "--root", srv.root, "logs", *args], capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def records(out):
    """(instance, stream, text) of each line of `kago logs`' text output."""
    res = []
    for line in out.splitlines():
        t, inst, stream, text = (line.split(" ", 3) + [""])[:4]
        assert t.endswith("Z") and "T" in t, line
        res.append((inst, stream, text))
    return res


@pytest.fixture(scope="module")
def srv():
    rot = app("rot", ["rot.test"], CHATTY, stop_grace="1s")
    rot = rot[:-len("end\n")] + '  a.log size: "4K", keep: 2\nend\n'
    yield from serving(app("chatty", ["chatty.test"], CHATTY, stop_grace="1s") + rot)


def served(srv, host, path):
    st, _, body = request(srv.port, host, path)
    assert st == 200 and body == b"ok\n", (st, body)


def test_both_streams_labelled_with_the_instance(srv):
    for w in ("a1", "a2", "a3"):
        served(srv, "chatty.test", f"/cgi-bin/log?{w}")
    inst = srv.instances("chatty")[0]["name"]
    want = {(inst, "stdout", "started-out"), (inst, "stderr", "started-err")}
    for w in ("a1", "a2", "a3"):
        want |= {(inst, "stdout", f"out-{w}"), (inst, "stderr", f"err-{w}")}
    wait_for(lambda: want <= set(records(logs(srv, "chatty").stdout)), timeout=5)
    recs = records(logs(srv, "chatty").stdout)
    # each stream in order
    outs = [t for i, s, t in recs if s == "stdout"]
    assert outs.index("out-a1") < outs.index("out-a2") < outs.index("out-a3")
    # serve's own stderr no longer carries the app's lines
    for w in ("started-out", "started-err", "out-a1", "err-a1"):
        assert w not in srv.stderr()
    # the log dir holds the current file and the instance's two FIFOs, nothing per idle app
    names = sorted(os.listdir(os.path.join(srv.root, "logs", "chatty")))
    assert names == sorted(["current.log", f"{inst}.stdout", f"{inst}.stderr"]), names


def test_a_flood_is_read_at_a_pace_and_nothing_is_lost(srv):
    # 100,000 short lines at once: recorded at the app's pace (2 MiB of credit a second, a record costs 64:
    # about 30,000 such lines a second), so that one tenant's flood does not hold the loop that starts
    # every app's instances and answers the admin API; the app's writes wait meanwhile, none is dropped
    t0 = time.monotonic()
    served(srv, "chatty.test", "/cgi-bin/flood?100000")
    worst = 0.0
    while True:
        a = time.monotonic()
        st, _, _ = admin_request(srv.admin, srv.root, "/healthz", token="", timeout=10)
        worst = max(worst, time.monotonic() - a)
        assert st == 200
        nums = [int(t) for _, s, t in records(logs(srv, "chatty").stdout) if s == "stdout" and t.isdigit()]
        if nums and nums[-1] == 100000:
            break
        assert time.monotonic() - t0 < 60, f"{len(nums)} lines recorded in 60 s"
        time.sleep(0.3)
    took = time.monotonic() - t0
    assert nums == list(range(1, 100001)), "every line, in order"
    assert took > 1.5, f"100,000 lines recorded in {took:.2f} s: not paced"
    assert worst < 1.0, f"/healthz took {worst:.2f} s during the flood"


def test_tail_json_instance_since(srv):
    served(srv, "chatty.test", "/cgi-bin/log?b1")
    served(srv, "chatty.test", "/cgi-bin/log?b2")
    wait_for(lambda: "err-b2" in logs(srv, "chatty").stdout, timeout=5)
    tail = records(logs(srv, "chatty", "--tail", "2").stdout)
    assert [t for _, _, t in tail] == ["out-b2", "err-b2"] or sorted(t for _, _, t in tail) == ["err-b2", "out-b2"]
    assert logs(srv, "chatty", "--tail", "0").stdout == ""
    inst = srv.instances("chatty")[0]["name"]
    js = [json.loads(l) for l in logs(srv, "chatty", "--json", "--tail", "4").stdout.splitlines()]
    assert len(js) == 4
    for j in js:
        assert set(j) == {"time", "app", "instance", "stream", "line"}
        assert j["app"] == "chatty" and j["instance"] == inst and j["stream"] in ("stdout", "stderr")
    assert {j["line"] for j in js} == {"out-b1", "err-b1", "out-b2", "err-b2"}
    assert logs(srv, "chatty", "--instance", "no-such-instance").stdout == ""
    assert len(records(logs(srv, "chatty", "--instance", inst).stdout)) == len(records(logs(srv, "chatty").stdout))
    assert "out-b2" in logs(srv, "chatty", "--since", "1m").stdout
    time.sleep(1.2)
    assert logs(srv, "chatty", "--since", "1s").stdout == ""


def test_follow_sees_a_new_line(srv):
    p = subprocess.Popen([KAGO, "--root", srv.root, "logs", "chatty", "-f", "--tail", "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert p.poll() is None, p.stderr.read()
        served(srv, "chatty.test", "/cgi-bin/log?followed")
        seen = b""
        deadline = time.time() + 10
        while b"out-followed" not in seen and time.time() < deadline:
            if select.select([p.stdout], [], [], 0.2)[0]:
                seen += os.read(p.stdout.fileno(), 65536)
        assert b"out-followed" in seen and b"started-out" not in seen, seen
    finally:
        os.kill(p.pid, signal.SIGTERM)
        p.wait(5)


def test_rotation_keeps_keep_files(srv):
    for i in range(12):
        served(srv, "rot.test", "/cgi-bin/long?1000")
    served(srv, "rot.test", "/cgi-bin/log?last")
    d = os.path.join(srv.root, "logs", "rot")
    wait_for(lambda: "out-last" in logs(srv, "rot").stdout, timeout=5)
    files = sorted(f for f in os.listdir(d) if f.startswith("current.log"))
    assert files == ["current.log", "current.log.1"], files
    for f in files:
        assert os.path.getsize(os.path.join(d, f)) <= 4096, f
    recs = records(logs(srv, "rot").stdout)
    assert recs[-2:] == [(recs[-1][0], "stdout", "out-last"), (recs[-1][0], "stderr", "err-last")]
    assert all(len(t) == 1000 for _, s, t in recs[:-2] if s == "stdout" and t.startswith("y")), recs
    assert "started-out" not in [t for _, _, t in recs]  # rotated away


def test_long_line_is_cut_and_partial_line_flushed_at_exit():
    # its stderr ends without a newline: recorded when the instance ends
    s = Server(app("long", ["long.test"], CHATTY.replace("exec 3>&1", "printf partial-no-newline >&2\nexec 3>&1"),
                   stop_grace="1s"))
    try:
        served(s, "long.test", "/cgi-bin/long?40000")
        wait_for(lambda: "yyyy" in logs(s, "long").stdout, timeout=5)
        ys = [t for _, st, t in records(logs(s, "long").stdout) if t.startswith("y")]
        assert [len(t) for t in ys] == [16384, 16384, 40000 - 2 * 16384], [len(t) for t in ys]
        assert "partial-no-newline" not in logs(s, "long").stdout  # not yet: its line goes on
    finally:
        assert s.stop() == 0, s.stderr()
    assert s.leftovers() == []
    recs = records(logs(s, "long").stdout)
    assert recs[-1][1:] == ("stderr", "partial-no-newline"), recs[-3:]


def test_unknown_app_and_bad_options(srv):
    r = logs(srv, "nope", check=False)
    assert r.returncode == 1 and "unknown app \"nope\"" in r.stderr, r.stderr
    r = logs(srv, "chatty", "--tail", "x", check=False)
    assert r.returncode == 2 and "--tail" in r.stderr
    r = logs(srv, "chatty", "--since", "soon", check=False)
    assert r.returncode == 1 and "--since" in r.stderr, r.stderr


@pytest.mark.parametrize("opt,msg", [
    ('size: "lots"', "log size:"),
    ('size: "1K"', 'log size: "1K" is too small'),
    ("keep: 0", "log keep: 0 is below 1"),
    ("keep: 1000", "log keep: 1000 is too many files"),
    ("sise: 3", "log: unknown keyword: sise"),
])
def test_bad_log_option_reports_file_line(tmp_path, opt, msg):
    path = tmp_path / "apps.rb"
    path.write_text(f'Kago.app "x" do |a|\n  a.hosts "x.test"\n  a.log {opt}\nend\n')
    r = subprocess.run([KAGO, "check", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and f"{path}:3: " in r.stderr and msg in r.stderr, r.stderr


def test_output_of_an_adopted_instance_is_still_recorded():
    """serve killed and started again on the same root: the instance (kept, adopted) never met a closed
    pipe, and what it prints after the restart lands in the same log."""
    s = Server(app("chatty", ["chatty.test"], CHATTY, stop_grace="1s"))
    s2 = None
    try:
        served(s, "chatty.test", "/cgi-bin/log?before")
        inst = s.instances("chatty")[0]
        s.proc.kill()
        s.proc.wait()
        s2 = Server.__new__(Server)
        s2.__dict__.update(s.__dict__)
        s2.errlog = open(os.path.join(s.tmp, "stderr2.log"), "w+")
        s2.port, s2.admin = free_port(), free_port()
        s2.proc = subprocess.Popen(
            [KAGO, "--root", s.root, "serve", "--config", s.conf, "--listen", f"127.0.0.1:{s2.port}",
             "--admin", f"127.0.0.1:{s2.admin}", "--access-log", s.log],
            stdout=subprocess.DEVNULL, stderr=s2.errlog)
        assert wait_for(lambda: "listening on" in s2.stderr(), 10), s2.stderr()
        served(s2, "chatty.test", "/cgi-bin/log?after")
        assert s2.instances("chatty")[0]["pid"] == inst["pid"], s2.stderr()
        wait_for(lambda: "err-after" in logs(s2, "chatty").stdout, timeout=5)
        recs = records(logs(s2, "chatty").stdout)
        assert [(i, st, t) for i, st, t in recs if "after" in t] == [(inst["name"], "stdout", "out-after"),
                                                                      (inst["name"], "stderr", "err-after")]
    finally:
        assert (s2 or s).stop() == 0, (s2 or s).stderr()
    assert (s2 or s).leftovers() == []


WRONG_PORT = "echo listening on the wrong port; exec sleep 1000"


def json_lines(text):
    """The JSON objects among text's lines (serve's own lines in --log-format json)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_log_format_json_server_and_access_log():
    s = Server(app("jweb", ["jweb.test"], CHATTY, stop_grace="1s") +
               app("jwrong", ["jwrong.test"], WRONG_PORT, start_timeout="1s", stop_grace="1s"),
               extra_args=["--log-format", "json"])
    try:
        served(s, "jweb.test", "/cgi-bin/log?cold")  # a cold start
        served(s, "jweb.test", "/cgi-bin/log?warm")
        inst = s.instances("jweb")[0]["name"]
        st, _, body = request(s.port, "jwrong.test", "/x")
        assert st == 503 and b'it printed last: "listening on the wrong port"' in body, body
        wait_for(lambda: len(open(s.log).read().splitlines()) >= 3, 5)
        acc = [json.loads(line) for line in open(s.log).read().splitlines()]  # every line is JSON
        cold, warm = [r for r in acc if r["app"] == "jweb"]
        assert cold["cold"] == "start" and cold["cold_ms"] > 0 and cold["duration_ms"] >= cold["cold_ms"]
        assert warm["cold"] == "none" and warm["cold_ms"] == 0 and warm["duration_ms"] > 0
        for r, q in ((cold, "cold"), (warm, "warm")):
            assert r["instance"] == inst and r["status"] == 200 and r["bytes"] > 0, r
            assert (r["method"], r["host"], r["path"], r["ip"]) == ("GET", "jweb.test", f"/cgi-bin/log?{q}",
                                                                    "127.0.0.1"), r
            assert r["ts"].endswith("Z") and len(r["ts"]) == len("2026-12-04T09:41:31.123Z"), r
        (bad,) = [r for r in acc if r["app"] == "jwrong"]
        assert bad["status"] == 503 and bad["instance"] is None and bad["cold"] == "none", bad
        # the start failure: one JSON line, its app and instance as fields
        wait_for(lambda: any(r.get("app") == "jwrong" for r in json_lines(s.stderr())), 5)
        fails = [r for r in json_lines(s.stderr()) if r.get("app") == "jwrong"]
        assert len(fails) == 1 and fails[0]["level"] == "error", fails
        f = fails[0]
        assert f["instance"].startswith("jwrong-") and f["msg"].startswith(f"instance {f['instance']} failed to start")
        assert 'it printed last: "listening on the wrong port"' in f["msg"] and f["ts"].endswith("Z"), f
        assert not f["msg"].startswith("kago serve:") and "app jwrong:" not in f["msg"], f
        # every line serve wrote is a JSON line (ASan's report, were there one, would not be)
        lines = s.stderr().splitlines()
        assert lines and all(l.startswith("{") for l in lines), [l for l in lines if not l.startswith("{")]
    finally:
        assert s.stop() == 0, s.stderr()
        assert all(l.startswith("{") for l in s.stderr().splitlines()), s.stderr()
        assert s.leftovers() == []


def test_bad_log_format_is_a_usage_error():
    p = subprocess.run([KAGO, "serve", "--config", "/nonexistent", "--log-format", "xml"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and '--log-format: "xml" is not text, json or journal' in p.stderr, p.stderr


def test_a_root_not_on_a_tmpfs_is_warned_about(tmp_path):
    """serve's state files are made and removed at every start and stop: on a disk that is slow, and serve says
    so at start. A root on a tmpfs gets no warning; one on an overlay (a file system that is not a tmpfs,
    made of tmpfs directories so that the test needs no disk) does."""
    mnt = str(tmp_path / "fs")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "kago-test-rootfs", mnt], check=True)
    mounted = [mnt]
    try:
        subprocess.run(["mount", "--make-private", mnt], check=True)
        for d in ("lower", "upper", "work", "ovl"):
            os.mkdir(os.path.join(mnt, d))
        ovl = os.path.join(mnt, "ovl")
        subprocess.run(["mount", "-t", "overlay", "-o", f"lowerdir={mnt}/lower,upperdir={mnt}/upper,"
                        f"workdir={mnt}/work", "kago-test-ovl", ovl], check=True)
        mounted.insert(0, ovl)
        subprocess.run(["mount", "--make-private", ovl], check=True)
        apps = app("rootfs", ["rootfs.test"], "exec /usr/sbin/httpd -f -p 8080 -h /etc")
        for root, warned in ((os.path.join(mnt, "root"), False), (os.path.join(ovl, "root"), True)):
            s = Server(apps, root=root)
            try:
                assert request(s.port, "rootfs.test", "/passwd")[0] == 200
            finally:
                assert s.stop() == 0, s.stderr()
            assert s.leftovers() == []
            assert ("not on a tmpfs" in s.stderr()) == warned, s.stderr()
            # and the host's inotify limit, when it is the kernel's default (every instance's counts as root's)
            with open("/proc/sys/fs/inotify/max_user_instances") as f:
                low = int(f.read()) < 1024
            assert ("fs.inotify.max_user_instances is" in s.stderr()) == low, s.stderr()
            assert not warned or f"--root {root} is on overlay, not on a tmpfs" in s.stderr(), s.stderr()
    finally:
        for m in mounted:
            subprocess.run(["umount", m], check=False)
