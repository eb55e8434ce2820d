"""Message framing between client, kago serve and an app: what a front door must never let one side make
the other read differently (request smuggling, responses injected into the next exchange). The app is a
shell script behind busybox nc that answers each path with exact bytes, and echoes the head it received."""
import os
import socket
import time

import pytest

from serve_util import KAGO, ROOTFS, app, read_response, request, serving, wait_for, with_data

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="kago serve starts containers: needs root"),
    pytest.mark.skipif(not os.path.exists(KAGO), reason=f"{KAGO} not built"),
    pytest.mark.skipif(not os.path.isdir(ROOTFS), reason=f"no rootfs at {ROOTFS} (scripts/mkrootfs)"),
]

FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
# One connection per request (nc -e): the request line and head are read, then the path picks the answer.
# /echo answers with the head as the app received it, so a test sees what kago forwarded.
SCRIPT = r"""#!/bin/sh
read -r first
head=""
while read -r l; do
    l=$(printf '%s' "$l" | tr -d '\r')
    [ -z "$l" ] && break
    head="$head$l
"
done
case "$first" in
*" /304 "*) printf 'HTTP/1.1 304 Not Modified\r\nContent-Length: LEN\r\n\r\nFORGED'; sleep 2 ;;
*" /204 "*) printf 'HTTP/1.1 204 No Content\r\nContent-Length: LEN\r\n\r\nFORGED'; sleep 2 ;;
*" /304-nobody "*) printf 'HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n'; sleep 5 ;;
*" /101 "*) printf 'HTTP/1.1 101 Switching Protocols\r\n\r\nFORGED'; sleep 2 ;;
*" /big "*) printf 'HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n'; head -c 100000000 /dev/zero ;;
*" /1xx-body "*) printf 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nContent-Length: LEN\r\n\r\nFORGED'
   printf 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal'; sleep 2 ;;
*" /empty-value "*) printf 'HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Empty2: \r\nContent-Length: 2\r\n\r\nok' ;;
*" /te-gzip "*) printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot-gzip' ;;
*" /status-99 "*) printf 'HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok' ;;
*" /ctl "*) printf 'HTTP/1.1 200 OK\r\nX-A: a\001b\r\nContent-Length: 2\r\n\r\nok' ;;
*" /ext-flood "*) printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;'; yes x | tr -d '\n' ;;
*" /reason-flood "*) printf 'HTTP/1.1 200 '; yes x | tr -d '\n' ;;
*" /keep-once "*) printf 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce'
   while read -r l; do [ "$l" = "$(printf '\r')" ] && break; done ;;  # the next request's head: then EOF
*" /slow "*) sleep 1; printf 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' ;;
*" /bad-chunk "*) printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n'; sleep 2 ;;
*" /stall "*) printf 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n'; sleep 30 ;;
*) n=$(printf '%s' "$head" | wc -c)
   printf 'HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n%s' "$n" "$head" ;;
esac
""".replace("LEN", str(len(FORGED))).replace("FORGED", FORGED.decode().replace("\r\n", r"\r\n"))


def script_app(tmp_path_factory, name):
    d = tmp_path_factory.mktemp(name)
    with open(d / "up.sh", "w") as f:
        f.write(SCRIPT)
    os.chmod(d / "up.sh", 0o755)
    os.chmod(d, 0o755)
    return with_data(app("fr", ["fr.test"], "exec nc -ll -p 8080 -e /opt/up.sh", stop_grace="1s", concurrency=20),
                     str(d), "/opt")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    yield from serving(script_app(tmp_path_factory, "framing"), extra_args=["--send-timeout", "1s", "--h2c"])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The same app behind a serve whose --response-timeout is 3 s."""
    yield from serving(script_app(tmp_path_factory, "quick"), extra_args=["--response-timeout", "3s"])


def conn(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def drain(s, wait=1.0):
    """Whatever else the connection brings within wait seconds (b"" if nothing, or closed)."""
    s.settimeout(wait)
    out = b""
    try:
        while b := s.recv(65536):
            out += b
    except socket.timeout:
        pass
    return out


@pytest.mark.parametrize("path,status", [("/304", 304), ("/204", 204)])
def test_a_bodyless_status_carries_no_body_whatever_its_length_says(srv, path, status):
    # The app announces a body on a 304 or 204 and sends a whole response as that "body": a client that
    # (rightly) reads no body after such a status would take those bytes for its next answer.
    s = conn(srv.port)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: fr.test\r\n\r\n".encode())
    st, h, body = read_response(s)
    assert st == status and body == b""
    assert b"forged" not in drain(s), "the app's extra bytes reached the client"
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: fr.test\r\nConnection: close\r\n\r\n")
    st, _, body = read_response(s)
    assert st == 200 and b"host: fr.test" in body.lower(), "the next request on the connection gets its own answer"
    s.close()


def test_a_304_with_a_length_and_no_body_is_answered_at_once(srv):
    s = conn(srv.port)
    t = time.monotonic()
    s.sendall(b"GET /304-nobody HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    st, _, _ = read_response(s)
    assert st == 304 and time.monotonic() - t < 4
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: fr.test\r\nConnection: close\r\n\r\n")
    assert read_response(s)[0] == 200, "the connection goes on (kago does not wait for 1,234 bytes)"
    s.close()


def test_switching_protocols_that_was_not_asked_for_is_a_bad_gateway(srv):
    s = conn(srv.port)
    s.sendall(b"GET /101 HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    st, _, body = read_response(s)
    assert st == 502
    assert b"forged" not in body + drain(s, 0.5)
    s.close()


def test_an_interim_response_has_no_body_whatever_its_length_says(srv):
    # A 103 with a Content-Length whose "body" is a whole response: that is no body (RFC 9110 15.2), else
    # the client reads two answers to one request and gives the second to its next request (another
    # site's, on a connection a CDN shares). What follows the 103 is the response (as nginx reads it);
    # the app's bytes past it are no one's.
    s = conn(srv.port)
    s.sendall(b"GET /1xx-body HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    raw = drain(s, 1.5)
    assert raw.startswith(b"HTTP/1.1 103 ") and b"link: </a.css>" in raw.lower(), raw
    assert raw.count(b"HTTP/1.1 ") == 2 and b"real" not in raw, raw
    assert b"content-length: %d\r\n\r\nHTTP" % len(FORGED) not in raw.lower(), "a 1xx's length is not forwarded"
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: fr.test\r\nConnection: close\r\n\r\n")
    st, _, body = read_response(s)
    assert st == 200 and b"host: fr.test" in body.lower(), "the next request gets its own answer"
    s.close()
    # an HTTP/1.0 client gets no 1xx at all
    s = conn(srv.port)
    s.sendall(b"GET /1xx-body HTTP/1.0\r\nHost: fr.test\r\n\r\n")
    raw = drain(s, 1.5)
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.count(b"HTTP/1.1 ") == 1 and b"103" not in raw, raw
    s.close()


def test_empty_header_values_are_no_folding(srv):
    # "X-Empty:" is a field with an empty value, legal both ways (nginx passes it)
    s = conn(srv.port)
    s.sendall(b"GET /empty-value HTTP/1.1\r\nHost: fr.test\r\nX-Empty:\r\n\r\n")
    st, h, body = read_response(s)
    assert st == 200 and body == b"ok" and h.get("x-empty") == "" and h.get("x-empty2") == "", (st, h)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: fr.test\r\nX-Empty: \r\nConnection: close\r\n\r\n")
    st, _, body = read_response(s)
    assert st == 200 and b"x-empty:" in body.lower(), body
    s.close()


@pytest.mark.parametrize("path", ["/te-gzip", "/status-99", "/ctl"])
def test_a_response_that_cannot_be_forwarded_as_it_is_is_a_bad_gateway(srv, path):
    # a coding the client was not offered (Transfer-Encoding is hop-by-hop: the client would take the
    # gzip bytes for the body), a status below 100, a control character in a value: 502, as nginx
    s = conn(srv.port)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: fr.test\r\n\r\n".encode())
    st, _, body = read_response(s)
    assert st == 502 and b"not-gzip" not in body, (st, body)
    s.close()


def test_an_app_flooding_framing_or_its_head_is_cut_at_once(srv):
    # endless chunk extensions (no data) and an endless status line: the loop parsed them at full speed
    # until the response timeout (60 s), or for good once the head was sent
    s = conn(srv.port)
    t = time.monotonic()
    s.sendall(b"GET /reason-flood HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    assert read_response(s)[0] == 502 and time.monotonic() - t < 5
    s.close()
    s = conn(srv.port)
    t = time.monotonic()
    s.sendall(b"GET /ext-flood HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    raw = drain(s, 8)  # (the head, then the connection cut: the body can never be complete)
    assert raw.startswith(b"HTTP/1.1 200 ") and not raw.endswith(b"0\r\n\r\n"), raw[:300]
    assert time.monotonic() - t < 8, "the connection was not cut"
    s.close()


def test_an_app_that_goes_silent_mid_response_is_cut_at_the_response_timeout(quick):
    # a head and a chunk, then nothing: cut after --response-timeout (3 s here) without a read, as nginx's
    # proxy_read_timeout, and the app's slot freed (it was held until the instance's lifetime)
    before = quick.metric("kago_read_timeouts_total")
    s = conn(quick.port)
    t = time.monotonic()
    s.sendall(b"GET /stall HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    raw = drain(s, 9)
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"5\r\nfirst\r\n"), raw  # (never the last chunk)
    assert 2.5 < time.monotonic() - t < 9, time.monotonic() - t
    s.close()
    assert quick.metric("kago_read_timeouts_total") == before + 1
    assert wait_for(lambda: quick.ps()["fr"]["in_flight"] == 0, 3)


def test_a_client_that_goes_away_frees_the_apps_slot_at_once(quick):
    # the client closes while the app holds its response (long polling): the request is aborted (nginx's
    # default), not left holding the app's slot
    s = conn(quick.port)
    s.sendall(b"GET /stall HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    s.settimeout(5)
    assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert quick.ps()["fr"]["in_flight"] == 1
    s.close()
    t = time.monotonic()
    assert wait_for(lambda: quick.ps()["fr"]["in_flight"] == 0, 5)
    assert time.monotonic() - t < 1.5, "freed by the response timeout, not by the client's going"


def test_connection_cannot_take_the_length_away_from_a_request(srv):
    # `Connection: Content-Length` used to remove the length upstream while the body still went on: the
    # app read the body as a second request, past every header kago sets.
    inner = b"GET /echo HTTP/1.1\r\nHost: fr.test\r\n\r\n"
    s = conn(srv.port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: fr.test\r\nContent-Length: %d\r\nConnection: Content-Length, Host\r\n"
              b"Forwarded: for=6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n" % len(inner) + inner)
    st, _, body = read_response(s)
    got = body.lower()
    assert st == 200 and b"content-length: %d" % len(inner) in got and b"host: fr.test" in got
    assert b"6.6.6.6" not in got, "the client's Forwarded and underscore headers do not reach the app"
    s.close()


@pytest.mark.parametrize("split", [False, True])
def test_chunk_data_must_end_in_crlf(srv, split):
    # llhttp 8 skipped the two bytes after a chunk's data whatever they were: "5\r\nhelloXY0\r\n\r\n" was
    # a whole body to kago, while a proxy in front that reads it otherwise sees other requests. 400, as
    # nginx; the same bytes split across reads (the check spans them), and a good body split there passes.
    # (/slow answers 1 s after the head: the app's answer cannot come first)
    head = b"POST /slow HTTP/1.1\r\nHost: fr.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello"
    for rest, want in ((b"XY0\r\n\r\n", 400), (b"\rX0\r\n\r\n", 400), (b"\r\n0\r\n\r\n", 200)):
        s = conn(srv.port)
        if split:
            s.sendall(head)
            time.sleep(0.2)
            s.sendall(rest[:1])
            time.sleep(0.2)
            s.sendall(rest[1:])
        else:
            s.sendall(head + rest)
        st, _, body = read_response(s)
        assert st == want, (rest, st, body)
        s.close()


def test_a_response_whose_chunk_data_does_not_end_in_crlf_is_cut(srv):
    s = conn(srv.port)
    s.sendall(b"GET /bad-chunk HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    raw = drain(s, 3)  # (the connection cut: before the head when it all came in one read)
    assert raw == b"" or raw.startswith(b"HTTP/1.1 200 "), raw
    assert not raw.endswith(b"0\r\n\r\n"), raw
    s.close()


def test_a_get_on_a_kept_connection_the_app_closes_is_sent_again(srv):
    # the app ends a kept-alive connection as the next request reaches it (its idle timeout crossing the
    # request: Node's, uvicorn's, gunicorn's are shorter than kago's): EOF before any byte was a 502. (Only
    # after a second's idle: an EOF in steady use is an app that died with its request, not resent.)
    for _ in range(3):
        st, _, body = request(srv.port, "fr.test", "/keep-once")
        assert (st, body) == (200, b"once"), (st, body)
        time.sleep(1.1)


@pytest.mark.parametrize("host", ["fr.test:@evil.example/x", "fr.test:80x"])
def test_a_host_whose_port_is_not_digits_is_refused(srv, host):
    assert request(srv.port, host, "/echo")[0] == 400


def test_a_client_that_takes_nothing_of_its_response_is_cut_after_the_send_timeout(srv):
    # 100 MB asked for and never read: without a limit the connection and the app's slot stay taken for
    # as long as the client likes (nginx: send_timeout). --send-timeout 1s here.
    before = srv.metric("kago_send_timeouts_total") or 0
    s = conn(srv.port)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: fr.test\r\n\r\n")
    assert wait_for(lambda: (srv.metric("kago_send_timeouts_total") or 0) > before, 20)
    got = 0
    s.settimeout(10)
    try:
        while b := s.recv(1 << 20):
            got += len(b)
    except ConnectionResetError:
        pass
    s.close()
    assert got < 100_000_000, "the response was cut"


def test_a_slow_reader_is_no_stalled_one(srv):
    # taking the response steadily, if slowly (256 KiB every 40 ms), is no stall: the connection stays
    before = srv.metric("kago_send_timeouts_total") or 0
    s = conn(srv.port)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: fr.test\r\nConnection: close\r\n\r\n")
    s.settimeout(10)
    got, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 4:
        b = s.recv(256 << 10)
        assert b, "closed under a reader that makes progress"
        got += len(b)
        time.sleep(0.04)
    s.close()
    assert (srv.metric("kago_send_timeouts_total") or 0) == before


def test_an_http2_stream_its_client_gives_no_window_is_reset_after_the_send_timeout(srv):
    from test_serve_h2 import Raw  # (skips when python3-h2 is missing)
    from hyperframe import frame as hf
    before = srv.metric("kago_send_timeouts_total") or 0
    c = Raw(srv.port, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    try:
        f = hf.HeadersFrame(1)
        f.data = c.block("/big", host="fr.test")
        f.flags.add("END_HEADERS")
        f.flags.add("END_STREAM")
        c.send(f)
        got = c.read(lambda f: isinstance(f, hf.RstStreamFrame) and f.stream_id == 1, timeout=15)
        assert any(isinstance(f, hf.RstStreamFrame) and f.stream_id == 1 for f in got), got
        assert (srv.metric("kago_send_timeouts_total") or 0) > before
        # the connection itself goes on
        f = hf.HeadersFrame(3)
        f.data = c.block("/echo", host="fr.test")
        f.flags.add("END_HEADERS")
        f.flags.add("END_STREAM")
        c.send(f, hf.WindowUpdateFrame(0, 1 << 20), hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 65535}))
        got = c.read(lambda f: isinstance(f, hf.HeadersFrame) and f.stream_id == 3, timeout=10)
        assert any(isinstance(f, hf.HeadersFrame) and f.stream_id == 3 and f.decoded.get(":status") == "200"
                   for f in got), got
    finally:
        c.close()


def test_an_absolute_form_target_routes_by_its_own_authority(srv):
    # RFC 9112 3.2.2: the target's authority wins over Host, and the app gets that Host (it builds its links
    # from it) with the origin-form path
    s = conn(srv.port)
    s.sendall(b"GET http://fr.test/echo HTTP/1.1\r\nHost: nope.test\r\nConnection: close\r\n\r\n")
    st, _, body = read_response(s)
    s.close()
    assert st == 200 and b"host: fr.test" in body.lower() and b"nope" not in body
    s = conn(srv.port)
    s.sendall(b"GET http://nope.test/echo HTTP/1.1\r\nHost: fr.test\r\nConnection: close\r\n\r\n")
    assert read_response(s)[0] == 404
    s.close()
