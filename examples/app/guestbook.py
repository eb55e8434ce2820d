#!/usr/bin/env python3
"""guestbook: a small web app for kago's image examples and benches (Python 3 standard library only).

  GET  /         the entries, newest first (HTML; JSON with `Accept: application/json` or `?format=json`)
  POST /         add one: form fields `message` (required, <= 2000 characters) and `name` (<= 100);
                 answers 303 to / (or 201 + the entry as JSON when the client accepts JSON)
  GET  /healthz  `ok` once the database is open

The data lives outside the container: a SQLite file in $GUESTBOOK_DATA (default /data, a bind-mounted
volume that outlives every instance), so any instance, old or new, serves the same entries.
Listens on $GUESTBOOK_LISTEN (default 0.0.0.0:8080), or on the socket passed as fd 3 under socket
activation (LISTEN_FDS=1, as `kago serve`'s `a.socket_activation` passes it). SIGTERM stops it at once.
"""
import html
import json
import os
import signal
import socket
import socketserver
import sqlite3
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = os.environ.get("GUESTBOOK_DATA", "/data")
DB = os.path.join(DATA, "guestbook.db")
MAX_BODY = 64 * 1024
MAX_NAME, MAX_MESSAGE, MAX_LIST = 100, 2000, 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL,
    message TEXT NOT NULL,
    created REAL NOT NULL
)"""


def connect():
    # One connection per request: they are cheap, and no connection crosses threads.
    db = sqlite3.connect(DB, timeout=5, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 5000")
    return db


def init_db():
    db = connect()
    try:
        # WAL: readers do not block the writer; several instances may share the file (same host).
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(SCHEMA)
    finally:
        db.close()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>guestbook</title></head>
<body>
<h1>guestbook</h1>
<form method="post" action="/">
  <input name="name" maxlength="{max_name}" placeholder="your name">
  <input name="message" maxlength="{max_message}" placeholder="a message" required>
  <button>sign</button>
</form>
<ul>
{items}
</ul>
<p><small>{count} entries, served by {host} (pid {pid})</small></p>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "guestbook/1"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall between them

    def log_message(self, fmt, *args):  # quiet unless asked: kago serve logs every request already
        if os.environ.get("GUESTBOOK_LOG"):
            super().log_message(fmt, *args)

    def send(self, code, body, ctype="text/plain; charset=utf-8", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def wants_json(self):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        return q.get("format") == ["json"] or "application/json" in self.headers.get("Accept", "")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/healthz":
            return self.send(200, "ok\n")
        if path != "/":
            return self.send(404, "not found\n")
        db = connect()
        try:
            rows = db.execute("SELECT id, name, message, created FROM entries ORDER BY id DESC LIMIT ?",
                              (MAX_LIST,)).fetchall()
            count = db.execute("SELECT count(*) FROM entries").fetchone()[0]
        finally:
            db.close()
        if self.wants_json():
            entries = [{"id": i, "name": n, "message": m, "created": c} for i, n, m, c in rows]
            return self.send(200, json.dumps({"count": count, "entries": entries}) + "\n", "application/json")
        items = "\n".join(
            f"<li><b>{html.escape(n or 'anonymous')}</b> "
            f"({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(c))} UTC): {html.escape(m)}</li>"
            for _, n, m, c in rows)
        self.send(200, PAGE.format(max_name=MAX_NAME, max_message=MAX_MESSAGE, items=items, count=count,
                                   host=html.escape(socket.gethostname()), pid=os.getpid()),
                  "text/html; charset=utf-8")

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/":
            return self.send(404, "not found\n")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.send(411, "a Content-Length is required\n", headers=[("Connection", "close")])
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return self.send(400, "bad Content-Length\n", headers=[("Connection", "close")])
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self.send(413, "body too large\n", headers=[("Connection", "close")])
        body = self.rfile.read(length).decode("utf-8", "replace")
        form = urllib.parse.parse_qs(body, keep_blank_values=True)
        name = form.get("name", [""])[0].strip()[:MAX_NAME]
        message = form.get("message", [""])[0].strip()
        if not message:
            return self.send(400, "the field 'message' is required\n")
        if len(message) > MAX_MESSAGE:
            return self.send(400, f"'message' is longer than {MAX_MESSAGE} characters\n")
        now = time.time()
        db = connect()
        try:
            cur = db.execute("INSERT INTO entries (name, message, created) VALUES (?, ?, ?)", (name, message, now))
            entry_id = cur.lastrowid
        finally:
            db.close()
        if self.wants_json():
            return self.send(201, json.dumps({"id": entry_id, "name": name, "message": message,
                                              "created": now}) + "\n", "application/json",
                             headers=[("Location", "/")])
        self.send(303, "signed\n", headers=[("Location", "/")])


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind also looks up socket.getfqdn(host) for a name nothing here uses: a
        # resolver round (/etc/hosts, DNS) at every start, milliseconds that depend on the host's network.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def on_term(*_):
    # The first SIGTERM leaves serve_forever (and closes the socket); one more kills at once, also
    # while Python shuts down.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(0)


def main():
    signal.signal(signal.SIGTERM, on_term)
    os.makedirs(DATA, exist_ok=True)
    init_db()
    # LISTEN_PID is not checked: under `c.init` it names the init, the app's parent.
    if os.environ.get("LISTEN_FDS") == "1":
        srv = Server(("0.0.0.0", 0), Handler, bind_and_activate=False)
        srv.socket.close()
        srv.socket = socket.socket(fileno=3)
        srv.server_address = srv.socket.getsockname()
    else:
        host, _, port = os.environ.get("GUESTBOOK_LISTEN", "0.0.0.0:8080").rpartition(":")
        srv = Server((host or "0.0.0.0", int(port)), Handler)
    try:
        srv.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
