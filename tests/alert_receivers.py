"""Receivers for alert tests (a plain module, like requires.py): an HTTP webhook receiver on
127.0.0.1, a listener that accepts and never answers, and a syslog unix socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Webhook:
    """``with Webhook(statuses=[500, 200]) as hook:`` answers each POST with the next status
    (the last one repeats) and records (path, headers, body) of every request."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.requests: list[tuple[str, dict, dict | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(data)
                except ValueError:
                    body = None
                owner.requests.append((self.path, dict(self.headers), body))
                status = owner.statuses.pop(0) if len(owner.statuses) > 1 else owner.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path="/hook", userinfo=""):
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    def bodies(self):
        return [body for _, _, body in self.requests]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        self.sock.settimeout(0.1)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except OSError:
                continue

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


class SyslogSocket:
    """A unix socket (datagram by default) standing in for /dev/log; ``lines()`` read it."""

    def __init__(self, path, kind=socket.SOCK_DGRAM):
        self.path = str(path)
        self.kind = kind
        self.sock = socket.socket(socket.AF_UNIX, kind)
        self.sock.bind(self.path)
        if kind == socket.SOCK_STREAM:
            self.sock.listen(4)
        self.received: list[bytes] = []

    def lines(self, count=1, timeout=5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if self.kind == socket.SOCK_DGRAM:
                    self.received.append(self.sock.recv(65536))
                else:
                    conn, _ = self.sock.accept()
                    with conn:
                        self.received.append(conn.recv(65536))
            except socket.timeout:
                break
        return self.received

    def close(self):
        self.sock.close()
