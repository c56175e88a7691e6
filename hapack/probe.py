"""Client-side health probes with their own timeouts (TCP connect, HTTP GET).

A hung server must fail a probe within the client timeout, never hang the
agent: every call takes a timeout and bounds the whole exchange by it.
"""

import socket
import time


class ProbeError(Exception):
    """The service did not answer as expected; the message says how."""


def tcp_connect(host, port, timeout):
    """Open and close a TCP connection; raise ProbeError when it fails."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError as exc:
        raise ProbeError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None


def http_get(url, timeout, headers=None, max_body=1 << 20):
    """GET url; return (status, body text). The timeout bounds the whole call."""
    import http.client
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ProbeError(f"{url}: only http and https URLs are supported")
    end = time.monotonic() + timeout
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=dict(headers or {}, Connection="close"))
        response = conn.getresponse()
        body = b""
        while len(body) < max_body:
            left = end - time.monotonic()
            if left <= 0:
                raise ProbeError(f"{url}: no complete answer within {timeout:g}s")
            conn.sock.settimeout(left)
            chunk = response.read1(65536)
            if not chunk:
                break
            body += chunk
        return response.status, body.decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, (TimeoutError, socket.timeout)):
            raise ProbeError(f"{url}: no answer within {timeout:g}s") from None
        raise ProbeError(f"{url}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}") from None
    finally:
        conn.close()
