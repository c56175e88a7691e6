"""A webhook receiver in the lab's client namespace, for the alert tests.

As a script (standard library only, like the poller): ``alertreceiver.py PORT OUT MODE``
listens on every address of the client namespace; MODE ``record`` answers each POST
with 204 and appends ``{"mono": <monotonic>, "wall": <time>, "path": ..., "body": <the
JSON>}`` to OUT; MODE ``hang`` accepts connections and never answers (a webhook that
hangs). CLOCK_MONOTONIC is shared by every namespace, so ``mono`` compares with the
caller's ``time.monotonic()``.

As a library: :class:`AlertReceiver` starts one in ``lab``'s client namespace,
``url(path)`` is its address as the nodes reach it, ``events()`` what it got,
``wait_for(predicate, timeout)`` the first event matching, and leaving the block
kills it (by PID). ::

    with AlertReceiver(lab) as rx:
        ... a [[alerts.recipients]] webhook with url = rx.url() ...
        fenced = rx.wait_for(lambda e: e["event"] == "fence_ok", timeout=60)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _serve_record(port: int, out: str) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(data)
            except ValueError:
                body = {"unparsed": data.decode("utf-8", "replace")}
            line = json.dumps({"mono": time.monotonic(), "wall": time.time(), "path": self.path,
                               "body": body})
            with open(out, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"listening {port}", flush=True)
    server.serve_forever()


def _serve_hang(port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(128)
    print(f"listening {port}", flush=True)
    held = []
    while True:
        conn, _ = sock.accept()
        held.append(conn)


class AlertReceiver:
    """A receiver (``mode`` record or hang) on ``port`` in ``lab``'s client namespace."""

    def __init__(self, lab, port: int = 9099, mode: str = "record"):
        self.lab, self.port, self.mode = lab, port, mode
        folder = Path(lab.shared_dir) / "alerts"
        folder.mkdir(parents=True, exist_ok=True)
        self.out = folder / f"received-{port}.jsonl"
        self.log = folder / f"receiver-{port}.log"
        self.proc = None

    def url(self, path: str = "/hapack") -> str:
        return f"http://{self.lab.client_addr}:{self.port}{path}"

    def __enter__(self) -> "AlertReceiver":
        self.out.unlink(missing_ok=True)
        argv = self.lab._client_nsenter() + [sys.executable, "-I", "-S", str(HERE / "alertreceiver.py"),
                                             str(self.port), str(self.out), self.mode]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while "listening" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"alert receiver did not start: {self.log.read_text()[-500:]}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)   # its own session: nsenter and python
            self.proc.wait(5)

    def events(self) -> list[dict]:
        """What arrived: the JSON bodies, each with ``_mono`` and ``_wall`` of its arrival."""
        try:
            lines = self.out.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            if line.strip():
                record = json.loads(line)
                out.append({**record["body"], "_mono": record["mono"], "_wall": record["wall"]})
        return out

    def wait_for(self, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                got = [(e.get("source"), e.get("reporter"), e.get("event"), e.get("node"),
                        e.get("rsc"), e.get("task")) for e in self.events()]
                raise AssertionError(f"no such alert within {timeout}s; received: {got}")
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    port, out, mode = int(argv[0]), argv[1], argv[2]
    if mode == "hang":
        _serve_hang(port)
    else:
        _serve_record(port, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
