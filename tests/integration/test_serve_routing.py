"""kago serve's host routing for hosting: wildcard hosts ("*.sites.example", the most specific match
wins) and a default app for unmatched hosts, end to end: a real serve, real containers, real HTTP.
Each app is busybox httpd with a CGI that says which app it is and the headers it was given."""
import json
import os
import re
import signal
import socket
import subprocess

import pytest

from conftest import wait_for
from serve_util import KAGO, ROOTFS, Server, request

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]


def who_app(name, hosts, default=False):
    """An app answering GET /cgi-bin/who with its name, then its HTTP_* environment (the request's
    headers as busybox httpd passes them to CGIs), one per line."""
    script = ("mkdir -p /srv/www/cgi-bin && "
              f"printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho {name}\\n"
              "env | grep ^HTTP_ | sort\\n' > /srv/www/cgi-bin/who && chmod +x /srv/www/cgi-bin/who && "
              "exec /usr/sbin/httpd -f -p 8080 -h /srv/www")
    lines = [f'Kago.app "{name}" do |a|']
    if hosts:
        lines.append("  a.hosts " + ", ".join(f'"{h}"' for h in hosts))
    if default:
        lines.append("  a.default true")
    lines += ["  a.container do |c|",
              f'    c.rootfs "{ROOTFS}", overlay: "16M"',
              f'    c.command "/bin/sh", "-c", {json.dumps(script)}',
              "    c.init",
              "  end",
              "  a.port 8080",
              '  a.stop_grace "1s"',
              "end"]
    return "\n".join(lines) + "\n"


def who(srv, host):
    """(app name, {HEADER: value}) of the app that answered for host; (status, body) if not 200."""
    st, _, body = request(srv.port, host, "/cgi-bin/who")
    if st != 200:
        return st, body
    lines = body.decode().splitlines()
    hdrs = dict(l[len("HTTP_"):].split("=", 1) for l in lines[1:])
    return lines[0], hdrs


def app_of(srv, host):
    r = who(srv, host)
    return r[0] if isinstance(r[0], str) else r


def finish(s):
    assert s.stop() == 0, s.stderr()
    assert s.leftovers() == []


APPS = (who_app("exact", ["shop.a.sites.example"]) + who_app("wide", ["*.sites.example"]) +
        who_app("narrow", ["*.A.Sites.Example"]))


@pytest.fixture(scope="module")
def srv():
    s = Server(APPS)
    yield s
    finish(s)


def test_wildcard_matches_one_or_more_labels(srv):
    assert app_of(srv, "blog.sites.example") == "wide"
    assert app_of(srv, "x.y.z.sites.example") == "wide", "several labels left of the wildcard's domain"
    assert app_of(srv, "BLOG.Sites.Example:8080") == "wide", "case and port ignored"


def test_longer_wildcard_beats_shorter(srv):
    assert app_of(srv, "b.a.sites.example") == "narrow"
    assert app_of(srv, "c.b.a.sites.example") == "narrow"


def test_exact_beats_every_wildcard(srv):
    assert app_of(srv, "shop.a.sites.example") == "exact"


def test_no_default_unmatched_hosts_get_404(srv):
    # the wildcard's domain itself is not under it; nothing else matches either: today's 404
    for host in ("sites.example", "sites.example.org", "xsites.example", "other.example"):
        st, _, body = request(srv.port, host)
        assert st == 404 and body == b"404 Not Found\n", host


def test_app_sees_the_host_as_sent(srv):
    name, h = who(srv, "Deep.Blog.Sites.Example:8080")
    assert name == "wide"
    assert h["HOST"] == "Deep.Blog.Sites.Example:8080", "Host is forwarded unchanged"
    assert h["X_FORWARDED_HOST"] == "Deep.Blog.Sites.Example:8080"


def test_ps_shows_hosts_as_configured(srv):
    ps = srv.ps()
    assert ps["wide"]["hosts"] == ["*.sites.example"] and ps["narrow"]["hosts"] == ["*.a.sites.example"]
    assert not ps["wide"]["default"]
    out = subprocess.run([KAGO, "--root", srv.root, "ps", "--hosts", "--admin", f"127.0.0.1:{srv.admin}"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["APP", "HOSTS"]
    assert sorted(l.split(None, 1)[0] + " " + l.split(None, 1)[1] for l in lines[1:]) == [
        "exact shop.a.sites.example", "narrow *.a.sites.example", "wide *.sites.example"], out.stdout


def test_default_app_gets_unmatched_hosts_with_their_host():
    s = Server(who_app("site", ["site.example", "*.site.example"]) + who_app("fallback", [], default=True))
    try:
        assert app_of(s, "www.site.example") == "site", "a wildcard beats the default"
        assert app_of(s, "site.example") == "site"
        name, h = who(s, "Customer-Domain.Example:81")
        assert name == "fallback" and h["HOST"] == "Customer-Domain.Example:81"
        assert h["X_FORWARDED_HOST"] == "Customer-Domain.Example:81"
        # HTTP/1.0 without Host: the default app too (with kago's Host: localhost)
        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
            c.sendall(b"GET /cgi-bin/who HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                data += b
        assert data.startswith(b"HTTP/1.1 200") and b"\r\n\r\nfallback\n" in data, data
        ps = s.ps()
        assert ps["fallback"]["default"] is True and ps["fallback"]["hosts"] == []
        out = subprocess.run([KAGO, "--root", s.root, "ps", "--hosts", "--admin", f"127.0.0.1:{s.admin}"],
                             capture_output=True, text=True)
        assert "fallback         (default: unmatched hosts)" in out.stdout, out.stdout
    finally:
        finish(s)


@pytest.mark.parametrize("pattern,why", [
    ("*", 'a wildcard needs a domain after "*."'),
    ("*.", 'a wildcard needs a domain after "*."'),
    ("a.*.b", '"*" may only be the whole first label'),
    ("*x.example", '"*" may only be the whole first label'),
    ("*.*.example", '"*" may only be the whole first label'),
])
def test_bad_pattern_refused_with_file_and_line(pattern, why):
    with pytest.raises(RuntimeError) as e:
        Server(who_app("bad", ["ok.example", pattern]))
    msg = str(e.value)
    assert f'apps.rb:2: hosts: "{pattern}": {why}' in msg, msg


def test_second_default_refused_naming_both():
    with pytest.raises(RuntimeError) as e:
        Server(who_app("one", ["one.example"], default=True) + who_app("two", [], default=True))
    msg = str(e.value)
    assert 'app "two": a.default true, but app "one" is the default app already' in msg, msg
    assert re.search(r"/apps\.rb:\d+: ", msg), msg


def test_no_hosts_without_default_refused():
    with pytest.raises(RuntimeError) as e:
        Server(who_app("nohosts", []))
    assert 'app "nohosts": no hosts given' in str(e.value)


def test_reload_adds_wildcard_and_default_and_refuses_duplicates():
    base = who_app("site", ["site.example"])
    s = Server(base)
    try:
        assert request(s.port, "a.site.example")[0] == 404
        s.write_config(base + who_app("wild", ["*.site.example"]))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: app_of(s, "a.site.example") == "wild", 10), s.stderr()
        assert app_of(s, "site.example") == "site"
        assert request(s.port, "elsewhere.example")[0] == 404
        # the same wildcard in two apps (two files: only serve sees both): refused, the running config kept
        s.write_config(base + who_app("wild", ["*.site.example"]) + who_app("thief", ["*.SITE.example"]))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "host *.site.example belongs to both wild and thief" in s.stderr(), 5), s.stderr()
        assert "thief" not in s.ps()
        # two default apps in two files: refused, naming both
        s.write_config(base + who_app("wild", ["*.site.example"]) + who_app("d2", [], default=True), name="b.rb")
        with open(os.path.join(s.conf, "a.rb"), "w") as f:
            f.write(who_app("d1", [], default=True))
        s.proc.send_signal(signal.SIGHUP)
        # (the files are evaluated in one mruby state: the Kagofile loader names the second file and line)
        assert wait_for(lambda: 'b.rb:' in s.stderr() and 'app "d2": a.default true, but app "d1" is the default '
                        "app already" in s.stderr(), 5), s.stderr()
        assert request(s.port, "elsewhere.example")[0] == 404
        os.unlink(os.path.join(s.conf, "a.rb"))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: app_of(s, "elsewhere.example") == "d2", 10), s.stderr()
        assert app_of(s, "a.site.example") == "wild" and app_of(s, "site.example") == "site"
        # and a reload that drops the wildcard and the default: back to 404
        s.write_config(base)
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: request(s.port, "a.site.example")[0] == 404, 10)
        assert request(s.port, "elsewhere.example")[0] == 404
    finally:
        finish(s)
