"""The campaign's witness (``hapack.lab.democlient``'s writer) against a small fake
PostgreSQL server on loopback: a timeout per request (a healthy slow-ish server keeps
its one connection and no row is ever in doubt), and a failed connect puts no row in
doubt."""

import json
import socket
import struct
import threading
import time

import pytest

from hapack.lab import democlient


class FakePg:
    """Trust authentication; every query answered after ``delay`` seconds."""

    def __init__(self, delay: float):
        self.delay, self.connections, self.queries = delay, 0, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _read(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self, conn):
        try:
            length = struct.unpack("!I", self._read(conn, 4))[0]
            self._read(conn, length - 4)
            conn.sendall(b"R" + struct.pack("!II", 8, 0) + b"Z" + struct.pack("!I", 5) + b"I")
            while True:
                kind = self._read(conn, 1)
                body = self._read(conn, struct.unpack("!I", self._read(conn, 4))[0] - 4)
                if kind == b"X":
                    return
                self.queries.append(body.rstrip(b"\0").decode())
                time.sleep(self.delay)
                tag = b"INSERT 0 1\0"
                conn.sendall(b"C" + struct.pack("!I", 4 + len(tag)) + tag
                             + b"Z" + struct.pack("!I", 5) + b"I")
        except (EOFError, OSError):
            return
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def run_writer(cfg, out_path, seconds):
    out, stop = democlient.Out(str(out_path)), threading.Event()
    thread = threading.Thread(target=democlient.commit_rows, args=(cfg, out, stop), daemon=True)
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join(timeout=10)
    return [json.loads(line) for line in out_path.read_text().splitlines()]


def config(port):
    return {"vip": "127.0.0.1", "pg_port": port, "pg_password": "x", "table": "t"}


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_a_healthy_server_keeps_one_connection_and_no_row_is_in_doubt(tmp_path, delay):
    """Every INSERT answers well within REQUEST_TIMEOUT; the connection lives far longer
    than one timeout. (The old writer's timeout counted from the connect: after about a
    second every INSERT failed, was put in doubt, and the writer reconnected.)"""
    server = FakePg(delay)
    try:
        events = run_writer(config(server.port), tmp_path / "out.jsonl", 3.0)
    finally:
        server.close()
    assert [e for e in events if e["k"] != "ack"] == []
    acked = [e["id"] for e in events]
    assert len(acked) >= 5 and acked == list(range(1, len(acked) + 1))
    assert server.connections == 1


def test_an_insert_past_its_timeout_is_in_doubt_and_its_id_never_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(democlient, "REQUEST_TIMEOUT", 0.2)
    server = FakePg(0.4)
    try:
        events = run_writer(config(server.port), tmp_path / "out.jsonl", 2.0)
    finally:
        server.close()
    doubts = [e for e in events if e["k"] == "doubt"]
    assert doubts and all("no answer in time" in e["why"] for e in doubts)
    ids = [e["id"] for e in events if e["k"] in ("ack", "doubt")]
    assert len(ids) == len(set(ids))          # an id in doubt is never reused
    inserted = [q for q in server.queries if q.startswith("INSERT")]
    assert len(inserted) == len(ids)          # every id in doubt was sent


def test_a_failed_connect_sends_nothing_and_puts_no_row_in_doubt(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                              # nothing listens: connection refused
    events = run_writer(config(port), tmp_path / "out.jsonl", 0.6)
    assert [e["k"] for e in events] == ["down"]          # one event for the outage
    assert "refused" in events[0]["why"].lower()
