"""kago serve speaking HTTP/2: ALPN h2 on --listen-tls, h2c with prior knowledge on --listen with --h2c;
each stream routed and proxied like an HTTP/1.1 request to real containers (busybox httpd); the limits and
the known attacks crafted frame by frame with python3-h2 (hyperframe, hpack) over raw sockets. Needs root,
curl with HTTP/2 (Debian's), h2load (nghttp2-client) and python3-h2."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from serve_util import Server, free_port, wait_for
from test_serve_adopt import cleanup
from test_serve_tls import PKI, tls_app

try:
    import h2.config
    import h2.connection
    import h2.events
    import hpack
    from hyperframe import frame as hf
except ImportError:
    pytest.skip("python3-h2 is not installed (scripts/setup installs it)", allow_module_level=True)
if not shutil.which("curl") or "HTTP2" not in subprocess.run(["curl", "-V"], capture_output=True,
                                                                 text=True).stdout:
    pytest.skip("curl without HTTP/2 support", allow_module_level=True)

# busybox httpd: a page, 8 MB to download, a CGI counting the request body it reads, one that sleeps
WEB = ("mkdir -p /srv/www/cgi-bin && echo hello-h2 > /srv/www/index.html && "
       "dd if=/dev/zero of=/srv/www/big bs=1M count=8 2>/dev/null && "
       "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n"
       "echo proto=$HTTP_X_FORWARDED_PROTO len=$CONTENT_LENGTH cookie=$HTTP_COOKIE\\n"
       "cat | wc -c\\n' > /srv/www/cgi-bin/count && "
       "printf '#!/bin/sh\\nsleep ${QUERY_STRING:-0}\\necho Content-Type: text/plain\\necho\\necho slept\\n' "
       "> /srv/www/cgi-bin/sleep && "
       "printf '#!/bin/sh\\nsleep 6\\necho Content-Type: text/plain\\necho\\nwc -c\\n' > /srv/www/cgi-bin/slowread && "
       "chmod +x /srv/www/cgi-bin/* && "
       "exec /usr/sbin/httpd -f -p 8080 -h /srv/www")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def pki():
    p = PKI()
    p.ec = p.leaf("ec", ["ec.test"])
    yield p
    shutil.rmtree(p.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def srv(pki):
    tls = free_port()
    apps = tls_app("web", ["ec.test", "plain.test"], WEB, *pki.ec, hsts="max-age=600")
    s = Server(apps, extra_args=["--listen-tls", f"127.0.0.1:{tls}", "--h2c", "--keepalive-timeout", "3s",
                                 "--header-timeout", "2s"])
    s.tls = tls
    yield s
    try:
        assert s.stop() == 0, s.stderr()[-2000:]
        assert not s.leftovers(), s.leftovers()
        assert "runtime error" not in s.stderr(), s.stderr()[-3000:]  # (UBSan in the sanitizer build)
    finally:
        cleanup(s)


def curl(srv, pki, path, *args, tls=True, host="ec.test"):
    """curl over HTTP/2; returns (http_version, status, body bytes)."""
    out = tempfile.NamedTemporaryFile(delete=False)
    out.close()
    if tls:
        url = f"https://{host}:{srv.tls}{path}"
        conn = ["--http2", "--cacert", pki.root, "--resolve", f"{host}:{srv.tls}:127.0.0.1"]
    else:
        url = f"http://{host}:{srv.port}{path}"
        conn = ["--http2-prior-knowledge", "--resolve", f"{host}:{srv.port}:127.0.0.1"]
    try:
        r = subprocess.run(["curl", "-sS", "-o", out.name, "-w", "%{http_version} %{http_code}", "--max-time",
                            "60", *conn, *args, url], capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr
        ver, code = r.stdout.split()
        return ver, int(code), open(out.name, "rb").read()
    finally:
        os.unlink(out.name)


def test_alpn_h2_over_tls_and_h2c_prior_knowledge(srv, pki):
    ver, st, body = curl(srv, pki, "/index.html")  # starts the container
    assert (ver, st, body) == ("2", 200, b"hello-h2\n")
    ver, st, body = curl(srv, pki, "/cgi-bin/count", "-b", "a=1", "-b", "b=2", "-d", "xyz")
    assert (ver, st) == ("2", 200) and b"proto=https" in body and b"len=3" in body, body
    ver, st, body = curl(srv, pki, "/index.html", tls=False, host="plain.test")
    assert (ver, st, body) == ("2", 200, b"hello-h2\n")
    # without h2 the same listeners speak HTTP/1.1
    ver, st, _ = curl(srv, pki, "/index.html", "--http1.1")
    assert (ver, st) == ("1.1", 200)
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                        f"http://plain.test:{srv.port}/index.html", "--resolve",
                        f"plain.test:{srv.port}:127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert r.stdout == "1.1 200", r
    # unknown host, the access log
    ver, st, body = curl(srv, pki, "/", host="nope.test", tls=False)
    assert (ver, st) == ("2", 404)
    assert wait_for(lambda: "h2" in open(srv.log).read(), 5)
    lines = open(srv.log).read().splitlines()
    assert any('"GET /index.html" 200' in l and "tls=TLSv1.3 h2" in l for l in lines), lines[-5:]
    assert srv.metric("kago_h2_streams_total") >= 4


def test_large_bodies_both_ways(srv, pki):
    ver, st, body = curl(srv, pki, "/big")
    assert (ver, st, len(body)) == ("2", 200, 8 << 20) and body == bytes(8 << 20)
    data = os.path.join(tempfile.mkdtemp(prefix="kago-h2-"), "data")
    with open(data, "wb") as f:
        f.write(os.urandom(6 << 20))
    try:
        # with a length, then streamed without one (chunked to the app)
        ver, st, body = curl(srv, pki, "/cgi-bin/count", "--data-binary", "@" + data)
        assert (ver, st) == ("2", 200) and body.split()[-1] == str(6 << 20).encode(), body
        ver, st, body = curl(srv, pki, "/cgi-bin/count", "-T", data, "-X", "POST", "-H",
                             "Transfer-Encoding:", tls=False, host="plain.test")
        assert (ver, st) == ("2", 200) and body.split()[-1] == str(6 << 20).encode(), body
    finally:
        shutil.rmtree(os.path.dirname(data))


# --- frame by frame ----------------------------------------------------------------------------------------

class Raw:
    """An HTTP/2 client over a plain socket (h2c prior knowledge), frames built with hyperframe and hpack:
    it sends what it is told, checks nothing, and collects what comes back."""

    def __init__(self, port, settings=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.enc, self.dec = hpack.Encoder(), hpack.Decoder()
        self.dec.max_allowed_table_size = 65536
        self.buf = b""
        self.closed = False
        self.frames = []
        st = hf.SettingsFrame(0)
        st.settings = settings or {}
        self.s.sendall(PREFACE + st.serialize())

    def send(self, *frames):
        self.s.sendall(b"".join(f.serialize() for f in frames))

    def block(self, path="/index.html", host="plain.test", method="GET", extra=()):
        return self.enc.encode([(":method", method), (":scheme", "http"), (":path", path),
                                (":authority", host), *extra])

    def headers(self, sid, path="/index.html", end_stream=True, extra=(), end_headers=True, data=None,
                method="GET"):
        f = hf.HeadersFrame(sid)
        f.data = data if data is not None else self.block(path, method=method, extra=extra)
        if end_headers:
            f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def read(self, until=lambda f: False, timeout=10):
        """Frames until until(frame) is true, the connection closes, or timeout; all of them."""
        deadline = time.time() + timeout
        got = []
        while True:
            while len(self.buf) >= 9:
                f, n = hf.Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) < 9 + n:
                    break
                f.parse_body(memoryview(self.buf[9:9 + n]))
                self.buf = self.buf[9 + n:]
                if isinstance(f, hf.HeadersFrame):
                    f.decoded = dict(self.dec.decode(bytes(f.data)))
                got.append(f)
                self.frames.append(f)
                if until(f):
                    return got
            left = deadline - time.time()
            if left <= 0 or self.closed:
                return got
            self.s.settimeout(left)
            try:
                d = self.s.recv(1 << 16)
            except socket.timeout:
                return got
            except ConnectionResetError:
                d = b""
            if not d:
                self.closed = True
                return got
            self.buf += d

    def goaway(self, timeout=10):
        """The GOAWAY frame (after the connection closed), or None."""
        self.read(lambda f: False, timeout)
        return next((f for f in self.frames if isinstance(f, hf.GoAwayFrame)), None)

    def close(self):
        self.s.close()


def statuses(frames):
    return {f.stream_id: f.decoded.get(":status", "").encode() for f in frames if isinstance(f, hf.HeadersFrame)}


ENHANCE_YOUR_CALM = 0xB


def test_flow_control_holds_the_response_at_the_window(srv):
    c = Raw(srv.port)
    try:
        c.send(c.headers(1, "/big"))
        got = c.read(lambda f: False, timeout=2)
        data = sum(len(f.data) for f in got if isinstance(f, hf.DataFrame))
        assert data == 65535, data  # the initial window, not a byte more
        assert statuses(got) == {1: b"200"}
        c.send(hf.WindowUpdateFrame(0, (8 << 20)), hf.WindowUpdateFrame(1, (8 << 20)))
        got = c.read(lambda f: isinstance(f, hf.DataFrame) and "END_STREAM" in f.flags, timeout=20)
        assert data + sum(len(f.data) for f in got if isinstance(f, hf.DataFrame)) == 8 << 20
    finally:
        c.close()


def test_request_body_backpressure_reaches_the_client(srv):
    """A CGI that reads its 16 MB body only after 6 s: the client gets window for what the app's socket and
    pipe buffers and serve's queue hold, then waits; once the app reads, the whole body goes through."""
    size, chunk = 16 << 20, 16384
    c = Raw(srv.port)
    try:
        c.send(c.headers(1, "/cgi-bin/slowread", end_stream=False, method="POST",
                         extra=[("content-length", str(size))]))
        sent, granted, t0, stalled_at = 0, 65535, time.time(), None
        conn_granted = 65535
        while sent < size:
            can = min(granted, conn_granted) - sent
            if can <= 0:
                got = c.read(lambda f: isinstance(f, hf.WindowUpdateFrame), timeout=0.3)
                for f in got:
                    if isinstance(f, hf.WindowUpdateFrame):
                        if f.stream_id == 1:
                            granted += f.window_increment
                        else:
                            conn_granted += f.window_increment
                if not got and stalled_at is None:
                    stalled_at = (sent, time.time() - t0)
                assert not any(isinstance(f, (hf.RstStreamFrame, hf.GoAwayFrame)) for f in got), got
                assert time.time() - t0 < 60
                continue
            n = min(chunk, can, size - sent)
            d = hf.DataFrame(1)
            d.data = b"x" * n
            if sent + n == size:
                d.flags.add("END_STREAM")
            c.send(d)
            sent += n
        # stalled (0.3 s without window) short of the body: loopback's socket buffers hold a few MB
        assert stalled_at is not None and stalled_at[0] < 12 << 20, stalled_at
        c.read(lambda f: isinstance(f, hf.DataFrame) and "END_STREAM" in f.flags, timeout=30)
        body = b"".join(f.data for f in c.frames if isinstance(f, hf.DataFrame))
        assert statuses(c.frames) == {1: b"200"} and body.split()[-1] == str(size).encode(), body
        print(f"request body backpressure: the client stalled after {stalled_at[0] >> 10} KiB")
    finally:
        c.close()


def test_body_without_length_gets_one_when_whole_else_goes_chunked(srv):
    c = Raw(srv.port)
    try:
        # a small body, the stream ended: the app gets Content-Length (busybox httpd reads no chunked body)
        c.send(c.headers(1, "/cgi-bin/count", end_stream=False, method="POST"))
        d = hf.DataFrame(1)
        d.data = b"hello"
        d.flags.add("END_STREAM")
        c.send(d)
        c.read(lambda f: isinstance(f, hf.DataFrame) and "END_STREAM" in f.flags)
        body = b"".join(f.data for f in c.frames if isinstance(f, hf.DataFrame))
        assert statuses(c.frames) == {1: b"200"} and b"len=5 " in body and body.split()[-1] == b"5", body
        # a body that fills the window before it ends: routed then, chunked
        c.send(c.headers(3, "/cgi-bin/count", end_stream=False, method="POST"))
        for k in range(4):
            d = hf.DataFrame(3)
            d.data = b"y" * (16384 if k < 3 else 16383)
            c.send(d)
        c.read(lambda f: isinstance(f, hf.WindowUpdateFrame) and f.stream_id == 3)
        d = hf.DataFrame(3)
        d.data = b"z"
        d.flags.add("END_STREAM")
        c.send(d)
        c.read(lambda f: isinstance(f, hf.DataFrame) and f.stream_id == 3 and "END_STREAM" in f.flags)
        body = b"".join(f.data for f in c.frames if isinstance(f, hf.DataFrame) and f.stream_id == 3)
        assert statuses(c.frames)[3] == b"200" and b"len= " in body, body  # no length: chunked (busybox
        # httpd then hands its CGI what it has read, framing and all: an app that reads chunked bodies gets it)
    finally:
        c.close()


def test_a_stream_not_routed_within_the_header_timeout_gets_408(srv):
    c = Raw(srv.port)
    try:
        c.send(c.headers(1, "/cgi-bin/count", end_stream=False, method="POST"))  # and then nothing
        t0 = time.time()
        c.read(lambda f: isinstance(f, hf.HeadersFrame), timeout=10)
        assert statuses(c.frames) == {1: b"408"} and 1.5 < time.time() - t0 < 6, (c.frames, time.time() - t0)
        c.send(c.headers(3))  # the connection goes on
        c.read(lambda f: isinstance(f, hf.HeadersFrame) and f.stream_id == 3)
        assert statuses(c.frames)[3] == b"200"
    finally:
        c.close()


def credit(c, sid, sent_conn, sent_stream):
    """What the client may still send on stream sid by HTTP/2 flow control, from the frames seen so far."""
    init = 65535
    for f in c.frames:
        if isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags:
            init = f.settings.get(hf.SettingsFrame.INITIAL_WINDOW_SIZE, init)
    conn = 65535 + sum(f.window_increment for f in c.frames if isinstance(f, hf.WindowUpdateFrame) and f.stream_id == 0)
    stream = init + sum(f.window_increment for f in c.frames
                        if isinstance(f, hf.WindowUpdateFrame) and f.stream_id == sid)
    return min(conn - sent_conn, stream - sent_stream)


def test_bodies_of_streams_answered_unread_give_their_window_back(srv):
    """Streams whose body kago took in but never sent on (here: 404s for an unknown host) hand their bytes
    back to the connection's window: more than a window's worth of them, then an upload on the same
    connection still goes through."""
    c = Raw(srv.port)
    sent_conn = 0
    try:
        def post(sid, host, path, body, length=True):
            nonlocal sent_conn
            cl = [("content-length", str(len(body)))] if length else []
            c.send(c.headers(sid, path, end_stream=False, method="POST", data=c.block(path, host, "POST", cl)))
            off, deadline = 0, time.time() + 30
            while off < len(body):
                can = credit(c, sid, sent_conn, off)
                if can <= 0:
                    assert time.time() < deadline, (f"no window for stream {sid} after {off} bytes",
                                                    statuses(c.frames).get(sid))
                    c.read(lambda f: isinstance(f, hf.WindowUpdateFrame), timeout=0.5)
                    continue
                d = hf.DataFrame(sid)
                d.data = body[off:off + min(can, 16384)]
                off += len(d.data)
                sent_conn += len(d.data)
                if off == len(body):
                    d.flags.add("END_STREAM")
                c.send(d)

        c.send(c.headers(1))  # (the connection's first stream puts it on the loop of plain.test's app)
        c.read(lambda f: isinstance(f, hf.HeadersFrame) and f.stream_id == 1)
        for i in range(70):  # 70 x 64,000 bytes: more than the 4 MiB connection window
            post(3 + 2 * i, "nope.test", "/x", b"u" * 64000, length=False)  # (kept until whole, then 404)
        c.read(lambda f: len(statuses(c.frames)) >= 71, timeout=20)
        assert set(v for k, v in statuses(c.frames).items() if k > 1) == {b"404"}
        post(201, "plain.test", "/cgi-bin/count", b"v" * 200000)
        c.read(lambda f: isinstance(f, hf.DataFrame) and f.stream_id == 201 and "END_STREAM" in f.flags, timeout=30)
        body = b"".join(f.data for f in c.frames if isinstance(f, hf.DataFrame) and f.stream_id == 201)
        assert statuses(c.frames)[201] == b"200" and body.split()[-1] == b"200000", body
    finally:
        c.close()


def test_trailers_never_become_request_headers(srv):
    c = Raw(srv.port)
    try:
        c.send(c.headers(1, "/cgi-bin/count", end_stream=False, method="POST"))
        d = hf.DataFrame(1)
        d.data = b"hello"
        t = hf.HeadersFrame(1)
        t.data = c.enc.encode([("x-trailer", "t1"), ("cookie", "sess=trailer")])
        t.flags.add("END_HEADERS")
        t.flags.add("END_STREAM")
        c.send(d, t)
        c.read(lambda f: isinstance(f, hf.DataFrame) and f.stream_id == 1 and "END_STREAM" in f.flags)
        body = b"".join(f.data for f in c.frames if isinstance(f, hf.DataFrame))
        assert statuses(c.frames) == {1: b"200"} and body.split()[-1] == b"5", body
        assert b"sess=trailer" not in body, body
    finally:
        c.close()


def test_connect_is_405_at_once(srv):
    c = Raw(srv.port)
    try:
        f = hf.HeadersFrame(1)
        f.data = c.enc.encode([(":method", "CONNECT"), (":authority", "plain.test:443")])
        f.flags.add("END_HEADERS")  # a tunnel's client sends no END_STREAM
        t0 = time.time()
        c.send(f)
        c.read(lambda f: isinstance(f, hf.HeadersFrame))
        assert statuses(c.frames) == {1: b"405"} and time.time() - t0 < 1.5, c.frames
    finally:
        c.close()


def test_max_concurrent_streams(srv):
    c = Raw(srv.port)
    try:
        c.send(*[c.headers(1 + 2 * i, "/cgi-bin/sleep?1") for i in range(110)])
        got = c.read(lambda f: len(statuses(c.frames)) >= 100 and
                     sum(isinstance(x, hf.RstStreamFrame) for x in c.frames) >= 10, timeout=60)
        resets = [f for f in c.frames if isinstance(f, hf.RstStreamFrame)]
        assert len(resets) == 10 and all(f.error_code == 7 for f in resets), resets  # REFUSED_STREAM
        assert set(statuses(c.frames).values()) == {b"200"} and len(statuses(c.frames)) == 100, got[-3:]
        # the connection goes on
        c.send(c.headers(301))
        c.read(lambda f: isinstance(f, hf.HeadersFrame) and f.stream_id == 301)
        assert statuses(c.frames)[301] == b"200"
    finally:
        c.close()
    # that was before the client acknowledged serve's SETTINGS (Raw sends no ACK); a client that goes past
    # the limit after its ACK breaks the protocol, and nghttp2 ends the connection: GOAWAY PROTOCOL_ERROR
    c = Raw(srv.port)
    try:
        c.send(c.headers(1))  # (with --threads, serve's SETTINGS come once the first stream placed it)
        c.read(lambda f: isinstance(f, hf.DataFrame) and f.stream_id == 1 and "END_STREAM" in f.flags)
        assert any(isinstance(f, hf.SettingsFrame) and "ACK" not in f.flags for f in c.frames), c.frames
        c.send(hf.SettingsFrame(0, flags=["ACK"]))
        try:
            c.send(*[c.headers(3 + 2 * i, "/cgi-bin/sleep?1") for i in range(110)])
        except OSError:
            pass  # closed under our feet: the GOAWAY is read below
        g = c.goaway()
        assert g is not None and g.error_code == 1 and c.closed, (c.closed, c.frames)  # PROTOCOL_ERROR
        assert not any(isinstance(f, hf.RstStreamFrame) and f.error_code == 7 for f in c.frames), c.frames
    finally:
        c.close()
    assert curl_ok(srv)


def test_header_list_limit_answers_431_and_the_connection_goes_on(srv):
    c = Raw(srv.port)
    try:
        c.send(c.headers(1, extra=[("x-big", "a" * 20000)]))
        c.read(lambda f: isinstance(f, hf.HeadersFrame))
        c.send(c.headers(3))
        c.read(lambda f: isinstance(f, hf.HeadersFrame) and f.stream_id == 3)
        assert statuses(c.frames) == {1: b"431", 3: b"200"}
    finally:
        c.close()


def test_hpack_bomb_ends_the_connection(srv):
    before = srv.metric("kago_h2_flood_goaways_total")
    c = Raw(srv.port)
    try:
        # one 4 KB header into the dynamic table, then 2,000 one-byte references to it (8 MB decoded)
        block = c.block(extra=[("x-bomb", "a" * 4000)]) + b"\xbe" * 2000
        c.send(c.headers(1, data=block))
        g = c.goaway()
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM and c.closed, c.frames
    finally:
        c.close()
    assert srv.metric("kago_h2_flood_goaways_total") == before + 1
    assert curl_ok(srv)


def test_continuation_flood_ends_the_connection(srv):
    c = Raw(srv.port)
    try:
        frames = [c.headers(1, end_headers=False)]
        for _ in range(50):
            f = hf.ContinuationFrame(1)
            f.data = b""
            frames.append(f)
        c.send(*frames)
        g = c.goaway()
        assert g is not None and g.error_code != 0 and c.closed, c.frames
    finally:
        c.close()
    assert curl_ok(srv)


def assert_calmed(srv, c, before):
    """c's connection ended in GOAWAY ENHANCE_YOUR_CALM, counted once (before: the count until then)."""
    try:
        g = c.goaway()
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM and c.closed, c.frames[-3:]
    finally:
        c.close()
    assert srv.metric("kago_h2_flood_goaways_total") == before + 1


def test_rapid_reset_ends_the_connection(srv):
    before = srv.metric("kago_h2_flood_goaways_total")
    c = Raw(srv.port)
    frames = []
    for i in range(400):
        frames += [c.headers(1 + 2 * i, "/cgi-bin/sleep?1"), hf.RstStreamFrame(1 + 2 * i, error_code=8)]
    try:
        c.send(*frames)
    except OSError:
        pass  # closed under our feet: the GOAWAY is read below
    assert_calmed(srv, c, before)
    assert curl_ok(srv)


@pytest.mark.parametrize("kind", ["content-length", "window"])
def test_streams_the_client_makes_serve_reset_end_the_connection(srv, kind):
    """MadeYouReset (CVE-2025-8671): streams routed at once (a content-length), then made invalid so that
    serve resets them (a body longer than its length: PROTOCOL_ERROR; a window past 2^31-1:
    FLOW_CONTROL_ERROR) draw from the rapid-reset budget as the client's own resets do."""
    before = srv.metric("kago_h2_flood_goaways_total")
    c = Raw(srv.port)
    try:
        sid = 1
        for _ in range(10):  # 1,000 streams; the budget is 200 and 33/s
            frames = []
            for _ in range(100):
                frames.append(c.headers(sid, "/index.html", end_stream=False, method="POST",
                                        data=c.block("/index.html", method="POST",
                                                     extra=[("content-length", "1")])))
                if kind == "content-length":
                    d = hf.DataFrame(sid)
                    d.data = b"ab"
                    d.flags.add("END_STREAM")
                    frames.append(d)
                else:
                    frames.append(hf.WindowUpdateFrame(sid, 0x7FFFFFFF))
                sid += 2
            try:
                c.send(*frames)
            except OSError:
                break
            c.read(lambda f: isinstance(f, hf.GoAwayFrame), timeout=0.3)
            if c.closed or any(isinstance(f, hf.GoAwayFrame) for f in c.frames):
                break
        g = c.goaway()
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM and c.closed, (sid, c.frames[-3:])
        code = 1 if kind == "content-length" else 3  # PROTOCOL_ERROR, FLOW_CONTROL_ERROR
        assert any(isinstance(f, hf.RstStreamFrame) and f.error_code == code for f in c.frames)
        assert sid < 800, sid
    finally:
        c.close()
    assert srv.metric("kago_h2_flood_goaways_total") == before + 1
    assert curl_ok(srv)


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_floods_end_the_connection(srv, kind):
    c = Raw(srv.port)
    try:
        f = hf.PingFrame(0, opaque_data=b"12345678") if kind == "ping" else hf.SettingsFrame(0)
        if kind == "settings":
            f.settings = {hf.SettingsFrame.INITIAL_WINDOW_SIZE: 65535}
        try:
            for _ in range(5):
                c.send(*[f] * 1000)
                c.read(timeout=0.1)
        except OSError:
            pass
        g = c.goaway()
        assert g is not None and g.error_code == ENHANCE_YOUR_CALM and c.closed
        acks = sum(1 for x in c.frames if isinstance(x, type(f)) and "ACK" in x.flags)
        assert acks <= 1100, acks  # answered up to the budget (what was queued at the GOAWAY may be dropped)
    finally:
        c.close()
    assert curl_ok(srv)


@pytest.mark.parametrize("kind", ["padded-empty-data", "ping-ack", "unknown-type"])
def test_floods_of_frames_that_carry_nothing_end_the_connection(srv, kind):
    """DATA frames whose only payload is their padding, PING ACKs for PINGs serve never sent, frames of a
    type nobody knows (nghttp2 skips them silently): each from the control frames' budget."""
    before = srv.metric("kago_h2_flood_goaways_total")
    c = Raw(srv.port)
    if kind == "padded-empty-data":  # on a stream routed and waiting for its body
        c.send(c.headers(1, "/cgi-bin/count", end_stream=False, method="POST",
                         data=c.block("/cgi-bin/count", method="POST", extra=[("content-length", "10")])))
        f = hf.DataFrame(1)
        f.flags.add("PADDED")
        f.pad_length = 0
        frame = f.serialize()
        assert frame[:5] == b"\x00\x00\x01\x00\x08", frame  # one byte: the pad length, 0
    elif kind == "ping-ack":
        f = hf.PingFrame(0, opaque_data=b"12345678")
        f.flags.add("ACK")
        frame = f.serialize()
    else:
        frame = b"\x00\x00\x00\x42\x00\x00\x00\x00\x00"  # type 0x42, empty, stream 0
    try:
        for _ in range(10):
            c.s.sendall(frame * 1000)
            c.read(timeout=0.1)
            if c.closed:
                break
    except OSError:
        pass
    assert_calmed(srv, c, before)
    assert curl_ok(srv)


def test_idle_connection_gets_goaway_then_close(srv):
    c = Raw(srv.port)
    try:
        c.send(c.headers(1))
        t0 = time.time()
        g = c.goaway(timeout=15)
        assert g is not None and g.error_code == 0 and g.last_stream_id == 1 and c.closed
        assert 2.5 < time.time() - t0 < 8, time.time() - t0  # --keepalive-timeout 3s
        assert statuses(c.frames) == {1: b"200"}
    finally:
        c.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_connection_stalled_before_its_first_stream_has_the_header_timeout(pki, threads):
    """HTTP/2 connections that never begin a stream are closed at --header-timeout (2 s here), not the
    keep-alive timeout (30 s), as an HTTP/1.1 head is: ALPN h2 then nothing, a partial preface (TLS, h2c),
    the preface and SETTINGS only, a first HEADERS without END_HEADERS (with --threads: the wait for the head
    that places the connection), and PINGs without a stream (they do not push the deadline back)."""
    tls = free_port()
    s = Server(tls_app("web", ["ec.test", "plain.test"], WEB, *pki.ec),
               extra_args=["--listen-tls", f"127.0.0.1:{tls}", "--h2c", "--threads", str(threads),
                           "--header-timeout", "2s", "--keepalive-timeout", "30s"])
    ctx = ssl.create_default_context(cafile=pki.root)
    ctx.set_alpn_protocols(["h2"])
    settings = hf.SettingsFrame(0).serialize()
    ping = hf.PingFrame(0, opaque_data=b"12345678").serialize()
    partial = hf.HeadersFrame(1)
    partial.data = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                           (":authority", "plain.test")])
    cases = {"tls-nothing": (True, b""), "tls-partial-preface": (True, PREFACE[:10]),
             "tls-pings": (True, PREFACE + settings), "h2c-partial-preface": (False, PREFACE[:10]),
             "h2c-settings-only": (False, PREFACE + settings),
             "h2c-headers-unended": (False, PREFACE + settings + partial.serialize())}
    socks = {}
    try:
        for name, (over_tls, data) in cases.items():
            if over_tls:
                raw = socket.create_connection(("127.0.0.1", tls), timeout=10)
                sk = ctx.wrap_socket(raw, server_hostname="ec.test")
                assert sk.selected_alpn_protocol() == "h2"
            else:
                sk = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            if data:
                sk.sendall(data)
            sk.setblocking(False)
            socks[name] = sk
        t0, closed, next_ping = time.time(), {}, time.time() + 0.5
        while len(closed) < len(socks) and time.time() - t0 < 10:
            if time.time() > next_ping and "tls-pings" not in closed:
                try:
                    socks["tls-pings"].sendall(ping)
                except OSError:
                    pass
                next_ping += 0.5
            for name, sk in socks.items():
                if name in closed:
                    continue
                try:
                    while sk.recv(65536):
                        pass
                    closed[name] = time.time() - t0
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
                except OSError:
                    closed[name] = time.time() - t0
            time.sleep(0.05)
        assert set(closed) == set(cases) and all(1.5 < t < 6 for t in closed.values()), closed
        # a connection that begins a stream is served as before
        ver, st, body = curl(s, pki, "/index.html", tls=False, host="plain.test")
        assert (ver, st, body) == ("2", 200, b"hello-h2\n")
        assert s.stop() == 0, s.stderr()[-2000:]
        assert "runtime error" not in s.stderr(), s.stderr()[-3000:]
    finally:
        for sk in socks.values():
            sk.close()
        cleanup(s)


def test_a_connection_idle_past_its_trim_serves_its_next_streams(srv):
    """An idle connection gives back its buffers and its empty stream map's page within 2 s (kago__h2_idle):
    streams at once after that, their heads in the HPACK table the first ones filled, are all served."""
    c = Raw(srv.port)
    try:
        for rnd, first in enumerate((1, 7)):
            ids = [first + 2 * i for i in range(3)]
            c.send(*[c.headers(i, extra=[("x-round", "same value, indexed once")]) for i in ids])
            got = c.read(lambda f: set(ids) <= {g.stream_id for g in c.frames if "END_STREAM" in g.flags})
            assert {i: statuses(got).get(i) for i in ids} == {i: b"200" for i in ids}, (rnd, got)
            if rnd == 0:
                time.sleep(2.4)  # (the trim is at most 2 s after the last read; --keepalive-timeout is 3 s)
        assert not c.closed
    finally:
        c.close()


def curl_ok(srv):
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                        "--resolve", f"plain.test:{srv.port}:127.0.0.1", f"http://plain.test:{srv.port}/"],
                       capture_output=True, text=True, timeout=30)
    return r.stdout == "200"


def test_sigterm_sends_goaway_and_lets_streams_finish(pki):
    tls = free_port()
    s = Server(tls_app("web", ["plain.test", "ec.test"], WEB, *pki.ec),
               extra_args=["--h2c", "--listen-tls", f"127.0.0.1:{tls}", "--no-h2"])
    s.tls = tls
    try:
        # --no-h2: ALPN offers http/1.1 only, h2c still works
        assert curl(s, pki, "/index.html")[:2] == ("1.1", 200)
        c = Raw(s.port)
        c.send(c.headers(1))  # starts the instance
        c.read(lambda f: isinstance(f, hf.DataFrame) and "END_STREAM" in f.flags, timeout=30)
        c.send(c.headers(3, "/cgi-bin/sleep?2"))
        time.sleep(0.5)
        s.proc.send_signal(15)
        g = c.goaway(timeout=20)
        assert g is not None and g.error_code == 0 and g.last_stream_id == 3 and c.closed, c.frames
        # stream 3 was answered before the connection closed (its status is the drain's business: busybox's
        # CGI does not outlive the instance's SIGTERM, over HTTP/1.1 alike)
        assert set(statuses(c.frames)) == {1, 3}, c.frames
        assert any(f.stream_id == 3 and "END_STREAM" in f.flags for f in c.frames
                   if isinstance(f, (hf.DataFrame, hf.HeadersFrame)))
        c.close()
        assert s.proc.wait(30) == 0, s.stderr()[-2000:]  # (our SIGTERM: a second one would not drain)
        assert not s.leftovers(), s.leftovers()
        assert "runtime error" not in s.stderr(), s.stderr()[-3000:]
    finally:
        cleanup(s)
