"""The control socket: JSON lines over a unix socket that only root may use.

The socket lives in a directory of mode 0700 and is itself 0600, and every
connection's peer credentials (SO_PEERCRED) must be uid 0. One request per
connection: ``{"cmd": "status"}``, ``{"cmd": "standby", "on": true}``,
``{"cmd": "takeover"}``, ``{"cmd": "maintenance", "on": false}``; one JSON
answer with ``"ok"``. The server side is served from the daemon's loop
(:meth:`ControlServer.serve`), so the handler may read and change the
daemon's state without locks.
"""

from __future__ import annotations

import json
import os
import socket
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_REQUEST = 65536
READ_TIMEOUT = 0.05     # a client sends its request right after connecting
SOCKET_NAME = "hamon.sock"


class ControlError(Exception):
    pass


class ControlServer:
    def __init__(self, run_dir, handler, log):
        self.path = os.path.join(run_dir, SOCKET_NAME)
        self.handler = handler
        self.log = log
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        os.chmod(run_dir, 0o700)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.sock.listen(8)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve(self) -> None:
        """Answer every pending connection."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                self._answer(conn)

    def _answer(self, conn):
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        conn.settimeout(READ_TIMEOUT)
        try:
            if uid != 0:
                raise ControlError(f"the control socket is for root only (uid {uid})")
            request = json.loads(_read_line(conn))
            if not isinstance(request, dict):
                raise ControlError("a request is a JSON object")
            answer = self.handler(request)
        except (ControlError, ValueError, OSError) as exc:
            answer = {"ok": False, "error": str(exc)}
        try:
            conn.sendall(json.dumps(answer, default=str).encode() + b"\n")
        except OSError as exc:
            self.log.warning(f"control: could not answer: {exc}")

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _read_line(conn):
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ControlError("request too long")
    return data.split(b"\n", 1)[0].decode()


def request(run_dir: str, payload: dict[str, str], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon and return its answer (a dict)."""
    path = os.path.join(run_dir, SOCKET_NAME)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"hamon is not running (no socket at {path})") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: the control socket is for "
                               "root only") from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        answer = _read_line(sock)
    if not answer:
        raise ControlError("hamon closed the connection without an answer")
    return json.loads(answer)
