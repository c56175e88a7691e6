"""A health-check HTTP client for agents: one GET, bounded by one timeout.

Built on the ``_socket`` C module:
``socket``, ``urllib.parse`` and ``http.client`` each pull in enum, email or
ipaddress, several milliseconds of a monitor that is a fresh interpreter
every few seconds. HTTP/1.0, so no chunked bodies; HTTPS (through ssl) is
not verified: this checks health, not identity.
"""

from __future__ import annotations

import time

from hapack.ocf import GenericError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable
    from hapack.ocf.runner import Context


def split_url(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, path with query, netloc); ValueError when not http(s)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    netloc, slash, path = rest.partition("/")
    path = (slash + path).partition("#")[0] or "/"
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
        path = "/?" + query
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port[1:] if port.startswith(":") else port
    else:
        host, _, port = hostport.partition(":")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise ValueError(f"{url!r} has no valid host and port")
    return scheme, host, int(port) if port else (443 if scheme == "https" else 80), path, netloc


def http_get(url: str, timeout: float | int, max_body: int = 1 << 20) -> tuple[int, str]:
    """(status, body text) of GET url; ``timeout`` bounds the whole exchange."""
    try:
        scheme, host, port, path, netloc = split_url(url)
    except ValueError as exc:
        raise GenericError(str(exc)) from None
    end = time.monotonic() + timeout
    request = (f"GET {path} HTTP/1.0\r\nHost: {netloc}\r\nUser-Agent: hapack\r\n"
               "Accept: */*\r\nConnection: close\r\n\r\n").encode()
    sock = None
    try:
        sock = _connect(host, port, end)
        if scheme == "https":
            sock = _tls(sock, host)
        sock.sendall(request)
        data = _read_all(sock, end, max_body)
    except TimeoutError:
        raise GenericError(f"{url}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise GenericError(f"{url}: cannot connect to {host}:{port}: "
                           f"{exc.strerror or exc}") from None
    finally:
        if sock is not None:
            sock.close()
    if not data:
        raise GenericError(f"{url}: the server closed the connection without answering")
    try:
        return parse_response(data)
    except ValueError as exc:
        raise GenericError(f"{url}: {exc}") from None


def _left(end):
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _connect(host, port, end):
    import _socket
    # bytes: a str host makes getaddrinfo import the idna codec
    name = host.encode() if host.isascii() else host
    error = OSError(f"no address for {host}")
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0,
                                                               _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(_left(end))
            sock.connect(address)
            return sock
        except OSError as exc:  # TimeoutError included: it ends the check below
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            error = exc
    raise error


def _tls(sock, host):
    import socket
    import ssl
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    wrapped = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    return context.wrap_socket(wrapped, server_hostname=host)


def _read_all(sock, end, max_body):
    chunks, size = [], 0
    while size < max_body:
        sock.settimeout(_left(end))
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def parse_response(data: bytes) -> tuple[int, str]:
    """(status, body text) of a raw HTTP answer; ValueError when it is not one."""
    head, _, body = data.partition(b"\r\n\r\n")
    words = head.split(b"\r\n", 1)[0].split()
    if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
        raise ValueError(f"not an HTTP answer: {excerpt(head.decode('latin-1'))}")
    return int(words[1]), body.decode("utf-8", errors="replace")


def excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def http_expect(ctx: Context, url: str, timeout: int, status: int = 200, regex: str | None = None,
                parse: Callable | None = None) -> str:
    """GET url; raise GenericError unless it answers as expected.

    ``regex`` must be found in the body; ``parse(body)`` raises ValueError on
    a bad page and its result is returned (else the body is).
    """
    limit = ctx.deadline.left(timeout)
    if limit <= 0:
        raise GenericError(f"no time left to check {url}")
    got, body = http_get(url, limit)
    if got != status:
        raise GenericError(f"{url} answered HTTP {got}, expected {status}")
    if regex is not None:
        import re
        if re.search(regex, body) is None:
            raise GenericError(f"{url}: the answer does not contain /{regex}/: {excerpt(body)}")
    if parse is None:
        return body
    try:
        return parse(body)
    except ValueError as exc:
        raise GenericError(f"{url}: {exc}") from None
