"""One client connection for the protocol checks (STOMP, PostgreSQL, LDAP).

TCP or a unix socket; one timeout bounds the whole exchange, so a hung
server fails the check in time instead of hanging the monitor. Errors are
:class:`hapack.probe.ProbeError` with a readable message; :class:`AuthError`
marks a refused login (a configuration problem, not a sick server).
"""

from __future__ import annotations

import os
import socket
import time

from hapack.probe import ProbeError


class AuthError(ProbeError):
    """The server refused the monitor's credentials."""


def connect_as(sock: socket.socket, address: str, peer: tuple[int, int] | None) -> None:
    """Connect a unix socket with the effective ids ``peer`` (uid, gid) when root, so a
    server that authenticates by the peer's credentials (PostgreSQL's peer method, as
    Debian's default pg_hba.conf has for postgres) sees the service user, not root.
    The ids are restored before returning, also on failure."""
    if peer is None or os.geteuid() != 0:
        sock.connect(address)
        return
    os.setegid(peer[1])
    try:
        os.seteuid(peer[0])
        try:
            sock.connect(address)
        finally:
            os.seteuid(0)
    finally:
        os.setegid(0)


class Wire:
    def __init__(self, address, timeout, what, peer=None):
        """address: (host, port) or the path of a unix socket; peer: (uid, gid) to
        connect a unix socket as (see connect_as)."""
        self.what = what
        self.end = time.monotonic() + timeout
        self.buffer = b""
        try:
            if isinstance(address, str):
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                connect_as(self.sock, address, peer)
            else:
                self.sock = socket.create_connection(address, timeout=timeout)
        except OSError as exc:
            raise ProbeError(f"cannot connect to {what}: {self._why(exc)}") from None

    def _why(self, exc):
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return "no answer in time"
        return exc.strerror or str(exc)

    def _left(self):
        left = self.end - time.monotonic()
        if left <= 0:
            raise ProbeError(f"{self.what}: no answer in time")
        return left

    def send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self._left())
            self.sock.sendall(data)
        except OSError as exc:
            raise ProbeError(f"{self.what}: send failed: {self._why(exc)}") from None

    def fill(self) -> None:
        """Read more bytes into the buffer; raise when the peer closed."""
        try:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(65536)
        except OSError as exc:
            raise ProbeError(f"{self.what}: receive failed: {self._why(exc)}") from None
        if not chunk:
            raise ProbeError(f"{self.what}: the server closed the connection")
        self.buffer += chunk

    def take(self, count: int) -> bytes:
        """Exactly count bytes."""
        while len(self.buffer) < count:
            self.fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def take_until(self, marker: bytes) -> bytes:
        """Bytes up to (without) marker; the marker is consumed."""
        while marker not in self.buffer:
            self.fill()
        data, _, self.buffer = self.buffer.partition(marker)
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
