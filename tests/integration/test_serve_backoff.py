"""kago serve's crash-loop backoff: an app that cannot start is answered with 503 + Retry-After at once,
started again after 1 s, 2 s, 4 s ... (not every few hundred ms), shown in /ps and /metrics, and served
again once fixed (by a reload, or once the backoff ends). Also: what a readiness timeout names, and
--admin off. Traffic goes to loopback only."""
import os
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import wait_for
from serve_util import KAGO, ROOTFS, Server, admin_request, app, free_port, request

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

SMALL = "mkdir -p /srv/www && echo fixed > /srv/www/index.html && exec /usr/sbin/httpd -f -p 8080 -h /srv/www"


def post(s, path):
    st, _, body = admin_request(s.admin, s.root, path, method="POST")
    return st, body


def finish(s):
    assert s.stop() == 0, s.stderr()
    assert s.leftovers() == []


def test_missing_command_backs_off_then_a_reload_fixes_it():
    s = Server(app("broken", ["broken.test"], "exec /no/such/command", start_timeout="10s", stop_grace="1s"))
    try:
        t0 = time.time()
        st, h, body = request(s.port, "broken.test")
        took = time.time() - t0
        # at once, not after start_timeout (10 s), with the app and the reason
        assert st == 503 and took < 2, (st, took)
        assert int(h["retry-after"]) >= 1
        assert b"app broken" in body and b"status 127" in body, body
        # 10 s of traffic: a handful of starts (1 s, 2 s, 4 s, 8 s apart), not ~37
        end = time.time() + 10
        statuses = set()
        while time.time() < end:
            t1 = time.time()
            st, h, _ = request(s.port, "broken.test")
            statuses.add(st)
            assert time.time() - t1 < 2 and "retry-after" in h
            time.sleep(0.1)
        assert statuses == {503}
        ps = s.ps()["broken"]
        assert 2 <= ps["start_failures"] <= 5, ps
        assert s.stderr().count("app broken: instance") == ps["start_failures"]
        assert ps["state"] == "backoff" and ps["retry_in_s"] > 0 and ps["failures_in_a_row"] >= 2, ps
        assert "status 127" in ps["last_error"], ps
        assert s.metric("kago_start_failures_total", app="broken") == ps["start_failures"]
        assert s.metric("kago_backoff_seconds", app="broken") > 0
        assert "next start in" in s.stderr()
        # a deploy (reload with a working command) is tried at once, backoff or not
        s.write_config(app("broken", ["broken.test"], SMALL, start_timeout="10s", stop_grace="1s"))
        assert post(s, "/reload")[0] == 200
        st, _, body = request(s.port, "broken.test")
        assert (st, body) == (200, b"fixed\n")
        ps = s.ps()["broken"]
        assert ps["state"] == "ready" and ps["failures_in_a_row"] == 0, ps
    finally:
        finish(s)


def test_a_missing_rootfs_is_said_at_load_and_the_other_apps_serve(tmp_path):
    """An app whose rootfs is not there is loaded (one site's mistake does not refuse the others') and said at
    the load, with the path and why; its requests get 503 with the reason, the other apps serve."""
    missing = str(tmp_path / "no-rootfs")
    gone = app("gone", ["gone.test"], SMALL, stop_grace="1s").replace(f'c.rootfs "{ROOTFS}"', f'c.rootfs "{missing}"')
    assert missing in gone
    s = Server(app("ok", ["ok.test"], SMALL, stop_grace="1s") + gone)
    try:
        err = s.stderr()
        assert f"app gone: rootfs {missing}: No such file or directory: its starts fail until it is there" in err, err
        assert "app ok: rootfs" not in err, err
        assert request(s.port, "ok.test")[0] == 200
        st, _, body = request(s.port, "gone.test")
        assert st == 503 and missing.encode() in body and b"No such file or directory" in body, (st, body)
        # said again at a reload while it is missing, not once it is there
        assert post(s, "/reload")[0] == 200
        assert wait_for(lambda: s.stderr().count(f"app gone: rootfs {missing}:") == 2, 5), s.stderr()
        os.symlink(ROOTFS, missing)
        assert post(s, "/reload")[0] == 200
        assert wait_for(lambda: s.stderr().count("kago serve: reloaded") >= 2, 5), s.stderr()
        assert s.stderr().count(f"app gone: rootfs {missing}:") == 2, s.stderr()
    finally:
        finish(s)


def test_backoff_ends_and_a_now_working_app_serves():
    data = tempfile.mkdtemp(prefix="kago-backoff-data-")
    rb = app("flaky", ["flaky.test"], "[ -e /data/ok ] || exit 3; " + SMALL, start_timeout="10s",
             stop_grace="1s", max_backoff="1s")
    rb = rb.replace("  a.port", f'  a.data "{data}", to: "/data"\n  a.port')
    s = Server(rb)
    try:
        st, h, body = request(s.port, "flaky.test")
        assert st == 503 and h["retry-after"] == "1" and b"status 3" in body, (st, h, body)
        open(os.path.join(data, "ok"), "w").close()
        # capped at max_backoff: served again within about a second
        assert wait_for(lambda: request(s.port, "flaky.test")[0] == 200, 5)
        assert s.ps()["flaky"]["state"] == "ready"
    finally:
        finish(s)
        os.unlink(os.path.join(data, "ok"))
        os.rmdir(data)


def test_bad_max_backoff_is_a_clear_error():
    with tempfile.TemporaryDirectory(prefix="kago-backoff-bad-") as tmp:
        os.mkdir(tmp + "/conf")
        with open(tmp + "/conf/apps.rb", "w") as f:
            f.write(app("x", ["x.test"], SMALL, max_backoff="10ms"))
        p = subprocess.run([KAGO, "--root", tmp + "/root", "serve", "--config", tmp + "/conf", "--listen",
                            f"127.0.0.1:{free_port()}", "--admin", "off"], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode != 0
        assert "max_backoff" in p.stderr and "apps.rb" in p.stderr, p.stderr


def test_readiness_timeout_says_what_was_probed():
    s = Server(app("deaf", ["deaf.test"], "exec sleep 1000", start_timeout="1s", stop_grace="1s"))
    try:
        t0 = time.time()
        st, h, body = request(s.port, "deaf.test")
        assert st == 503 and 0.9 <= time.time() - t0 < 3 and h.get("retry-after")
        assert b"no answer on 127.0.0.1:8080" in body, body
        assert wait_for(lambda: "never became ready in 1 s: no answer on 127.0.0.1:8080 inside its network namespace "
                        "(connection refused" in s.stderr(), 5), s.stderr()
        assert wait_for(lambda: s.instances("deaf") == [], 5)
    finally:
        finish(s)


def test_readiness_timeout_names_what_the_app_printed_last():
    # --log-format journal: the same text lines, each with its syslog priority for journald
    s = Server(app("wrong", ["wrong.test"], "echo starting; echo listening on the wrong port; exec sleep 1000",
                   start_timeout="1s", stop_grace="1s"), extra_args=["--log-format", "journal"])
    try:
        st, h, body = request(s.port, "wrong.test")
        assert st == 503 and b"no answer on 127.0.0.1:8080" in body, body
        assert b'it printed last: "starting | listening on the wrong port"' in body, body
        assert wait_for(lambda: "<3>kago serve: app wrong: instance " in s.stderr(), 5), s.stderr()
        line = next(l for l in s.stderr().splitlines() if l.startswith("<3>kago serve: app wrong: instance "))
        assert 'no answer on 127.0.0.1:8080 inside its network namespace' in line, line
        assert 'it printed last: "starting | listening on the wrong port"; next start in' in line, line
    finally:
        finish(s)


def test_exit_before_ready_names_its_last_unfinished_line():
    s = Server(app("quits", ["quits.test"], "echo config ok; printf 'fatal: no DATABASE_URL' >&2; exit 3",
                   start_timeout="5s", stop_grace="1s"))
    try:
        st, _, body = request(s.port, "quits.test")
        assert st == 503 and b"status 3" in body, body
        assert b'it printed last: "config ok | fatal: no DATABASE_URL"' in body, body
        assert 'it printed last: "config ok | fatal: no DATABASE_URL"' in s.ps()["quits"]["last_error"]
    finally:
        finish(s)


def test_admin_off_prints_no_admin_url():
    with tempfile.TemporaryDirectory(prefix="kago-admin-off-") as tmp:
        os.mkdir(tmp + "/conf")
        with open(tmp + "/conf/apps.rb", "w") as f:
            f.write(app("x", ["x.test"], SMALL))
        port = free_port()
        with open(tmp + "/stderr", "w+") as err:
            p = subprocess.Popen([KAGO, "--root", tmp + "/root", "serve", "--config", tmp + "/conf", "--listen",
                                  f"127.0.0.1:{port}", "--admin", "off", "--access-log", "off"],
                                 stdout=subprocess.DEVNULL, stderr=err)
            try:
                assert wait_for(lambda: "listening on" in open(err.name).read() or p.poll() is not None, 10)
                text = open(err.name).read()
                assert "admin listener off" in text and "http://off" not in text and "admin on" not in text, text
                assert request(port, "x.test")[0] == 200
            finally:
                p.send_signal(signal.SIGTERM)
                assert p.wait(30) == 0


def test_an_app_that_dies_soon_after_it_is_ready_backs_off_too():
    # it listens (ready: its first request is served), then exits by itself 0.5 s later, every time
    cmd = "/usr/sbin/httpd -f -p 8080 -h /srv/www & sleep 0.5; kill $!; exit 4"
    s = Server(app("dies", ["dies.test"], "mkdir -p /srv/www && echo up > /srv/www/index.html && " + cmd,
                   start_timeout="10s", stop_grace="1s"))
    try:
        st, _, body = request(s.port, "dies.test")
        assert (st, body) == (200, b"up\n")
        # it crashed within 10 s of becoming ready: counted; the first time it is started again at once
        assert wait_for(lambda: (s.ps()["dies"]["failures_in_a_row"] or 0) >= 1, 10), s.ps()["dies"]
        ps = s.ps()["dies"]
        assert "after it became ready" in ps["last_error"] and "status 4" in ps["last_error"], ps
        assert "before it became ready" not in ps["last_error"], ps  # (it said both)
        assert "crashed (1 in a row)" in s.stderr() and "started again at once" in s.stderr(), s.stderr()
        st, _, body = request(s.port, "dies.test")
        assert (st, body) == (200, b"up\n")
        # the second crash in a row is a crash loop: 503 + Retry-After with the reason, then 2 s, 4 s apart
        end, statuses, why = time.time() + 7, [], b""
        while time.time() < end:
            st, h, body = request(s.port, "dies.test")
            statuses.append(st)
            if st == 503:
                assert "retry-after" in h
                why = body
            time.sleep(0.1)
        assert 503 in statuses and b"after it became ready" in why, (statuses, why)
        assert "crashed (2 in a row)" in s.stderr() and "next start in" in s.stderr(), s.stderr()
        assert 2 <= s.ps()["dies"]["start_failures"] <= 5, s.ps()["dies"]
    finally:
        finish(s)
