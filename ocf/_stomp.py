"""A STOMP 1.2 client just big enough for the broker's health checks.

Level 10 is CONNECT/CONNECTED and DISCONNECT/RECEIPT (a clean close, so the
broker logs no broken connection every monitor); level 20 sends a
persistent message to a probe queue and reads it back through the store.
"""

from __future__ import annotations

from hapack.ocf._wire import AuthError, Wire
from hapack.probe import ProbeError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}
AUTH_WORDS = ("password", "user name", "credential", "authenticat", "login")


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in str(text))


def unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, chars = [], iter(text)
    for char in chars:
        out.append(_UNESCAPES.get(char + next(chars, ""), char) if char == "\\" else char)
    return "".join(out)


def encode(command: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    """One frame: command, escaped headers, blank line, body, NUL."""
    head = "".join(f"{escape(k)}:{escape(v)}\n" for k, v in headers)
    return f"{command}\n{head}\n".encode() + body + b"\0"


def parse_head(data: bytes) -> tuple[str, dict[str, str]] | tuple[str, dict[Any, Any]]:
    """(command, headers) of a frame head; the first of repeated headers wins."""
    lines = data.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(unescape(name), unescape(value))
    return lines[0], headers


def _head_end(data):
    """(index, length) of the blank line that ends a frame head, or None."""
    found = [(i, n) for i, n in ((data.find(b"\n\n"), 2), (data.find(b"\n\r\n"), 3)) if i >= 0]
    return min(found) if found else None


class Frame:
    __slots__ = ("command", "headers", "body")

    def __init__(self, command, headers, body):
        self.command, self.headers, self.body = command, headers, body

    def __repr__(self):
        return f"Frame({self.command}, {self.headers})"


class Stomp:
    def __init__(self, host, port, timeout):
        self.wire = Wire((host, port), timeout, f"STOMP {host}:{port}")

    def frame(self, command: str, headers: Iterable[tuple[str, str]] = (),
              body: bytes = b"") -> None:
        self.wire.send(encode(command, headers, body))

    def read(self) -> Frame:
        wire = self.wire
        while True:  # heart-beat end-of-lines between frames
            while not wire.buffer:
                wire.fill()
            if wire.buffer[:1] not in (b"\n", b"\r"):
                break
            wire.buffer = wire.buffer[1:]
        while _head_end(wire.buffer) is None:
            wire.fill()
        cut, blank = _head_end(wire.buffer)
        command, headers = parse_head(wire.take(cut + blank)[:cut])
        if "content-length" in headers and headers["content-length"].isdigit():
            body = wire.take(int(headers["content-length"]))
            wire.take(1)  # the NUL after the body
        else:
            body = wire.take_until(b"\0")
        return Frame(command, headers, body)

    def expect(self, command: str) -> Frame:
        frame = self.read()
        if frame.command == "ERROR":
            message = frame.headers.get("message") or frame.body.decode(errors="replace")
            message = " ".join(message.split())[:300]
            if any(word in message.lower() for word in AUTH_WORDS):
                raise AuthError(f"{self.wire.what}: login refused: {message}")
            raise ProbeError(f"{self.wire.what}: ERROR frame: {message}")
        if frame.command != command:
            raise ProbeError(f"{self.wire.what}: expected {command}, got {frame.command}")
        return frame

    def connect(self, login: str | None = None, passcode: str | None = None,
                vhost: str = "localhost") -> Frame:
        headers = [("accept-version", "1.2"), ("host", vhost), ("heart-beat", "0,0")]
        if login is not None:
            headers += [("login", login), ("passcode", passcode or "")]
        self.frame("CONNECT", headers)
        return self.expect("CONNECTED")

    def disconnect(self) -> None:
        self.frame("DISCONNECT", [("receipt", "bye")])
        self.expect("RECEIPT")
        self.wire.close()

    def round_trip(self, queue: str, body: bytes) -> int:
        """Send body persistently to queue and read it back; returns stale probes drained."""
        dest = f"/queue/{queue}"
        self.frame("SUBSCRIBE", [("destination", dest), ("id", "hapack"), ("ack", "auto")])
        self.frame("SEND", [("destination", dest), ("persistent", "true"), ("receipt", "sent"),
                            ("content-type", "text/plain")], body)
        receipt = message = False
        stale = 0
        while not (receipt and message):
            frame = self.read()
            if frame.command == "ERROR":
                raise ProbeError(f"{self.wire.what}: ERROR frame: "
                                 f"{frame.headers.get('message', '')[:300]}")
            if frame.command == "RECEIPT" and frame.headers.get("receipt-id") == "sent":
                receipt = True
            elif frame.command == "MESSAGE":
                message = message or frame.body == body
                stale += frame.body != body
        self.frame("UNSUBSCRIBE", [("id", "hapack")])
        return stale

    def close(self) -> None:
        self.wire.close()
