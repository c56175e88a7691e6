"""Where a web server listens, read from its configuration as the stock agents do.

resource-agents' ``apache`` and ``nginx`` agents, given no port, take the first
``Listen`` (``listen``) directive of the configuration with its includes
expanded in place (a relative include is under ServerRoot, resp. the
configuration's directory; a directory or a wildcard pulls in its files in
alphabetical order), and build the status URL from it: ``http://<listen>``, the
address ``localhost`` when the directive names only a port, port 80 when there
is no directive. The same rule here, read with each server's own syntax: for
nginx the directive must be in an ``http`` block's ``server`` (the stock agent
reads lines and misses ``listen 8080;``, and would take a ``stream`` server's
port); ``unix:`` sockets are skipped. TLS (``Listen 443 https``, ``listen 443
ssl``, or apache's port 443 with no protocol) makes the URL https.

On the monitor path: no heavy import (``glob`` only for a wildcard include).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

WILDCARDS = frozenset(("", "*", "0.0.0.0", "::", "[::]"))


class Listen:
    """One listening socket: address (None: all), port, and whether it is TLS."""

    __slots__ = ("address", "port", "tls")

    def __init__(self, address: "str | None", port: int, tls: bool = False) -> None:
        self.address, self.port, self.tls = address, port, tls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Listen) and (self.address, self.port, self.tls) == (
            other.address, other.port, other.tls)

    def __repr__(self) -> str:
        return f"Listen({self.address!r}, {self.port}, tls={self.tls})"

    def host(self) -> str:
        """The address a local client connects to: the named one, else loopback."""
        if self.address is None:
            return "127.0.0.1"
        if self.address in WILDCARDS:
            return "::1" if ":" in self.address else "127.0.0.1"
        return self.address


def split_address(text: str) -> "tuple[str | None, str]":
    """``[v6]:port``, ``ip:port``, ``host:port``, ``port``, ``[v6]`` or ``ip`` ->
    (address or None, port text or '')."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed [")
        rest = text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: text after ]")
        return text[1:end], rest[1:]
    if text.isdigit():
        return None, text
    if text.count(":") == 1:
        address, port = text.split(":")
        return address or None, port
    return text, ""


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{where}: {text!r} is not a port")
    return int(text)


def apache_listen(words: "list[str]") -> Listen:
    """``Listen [address:]port [protocol]``."""
    address, port = split_address(words[0])
    number = _port(port, f"Listen {words[0]}")
    protocol = words[1].lower() if len(words) > 1 else ("https" if number == 443 else "http")
    return Listen(address if address not in ("*",) else None, number, protocol == "https")


def nginx_listen(words: "list[str]") -> "Listen | None":
    """``listen address[:port] | port [ssl] [default_server] ...``; None for unix:."""
    if words[0].startswith("unix:"):
        return None
    address, port = split_address(words[0])
    number = _port(port, f"listen {words[0]}") if port else 80
    return Listen(None if address in (None, "*") else address, number, "ssl" in words[1:])


# -- apache ---------------------------------------------------------------------------

def apache_lines(path: str, root: str,
                 seen: set[str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """(directive, words) of a configuration, includes expanded, comments dropped."""
    seen = set() if seen is None else seen
    if path in seen or len(seen) > 256:
        return
    seen.add(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read().replace("\\\n", " ")
    except OSError:
        return
    for line in text.splitlines():
        words = [w.strip('"') for w in line.split()]
        if not words or words[0].startswith("#"):
            continue
        name = words[0].lower()
        if name == "serverroot" and len(words) > 1:
            root = words[1]
        if name in ("include", "includeoptional") and len(words) > 1:
            for found in expand(words[1], root):
                yield from apache_lines(found, root, seen)
        else:
            yield name, words[1:]


def expand(spec: str, base: str) -> "list[str]":
    """The files an include names: a file, every file under a directory, or a wildcard's
    matches, in alphabetical order."""
    path = spec if os.path.isabs(spec) else os.path.join(base, spec)
    if os.path.isdir(path):
        return sorted(os.path.join(top, name) for top, _, names in os.walk(path)
                      for name in names)
    if any(char in path for char in "*?["):
        import glob
        return sorted(p for p in glob.glob(path) if os.path.isfile(p))
    return [path]


def apache_first(config: str, server_root: str = "/etc/apache2") -> "Listen | None":
    for name, words in apache_lines(config, server_root):
        if name == "listen" and words:
            return apache_listen(words)
    return None


def apache_status_path(config: str, server_root: str = "/etc/apache2") -> "str | None":
    """The last <Location> whose handler is server-status (the stock agent's choice)."""
    location, found = None, None
    for name, words in apache_lines(config, server_root):
        if name == "<location" and words:
            location = words[0].rstrip(">").strip('"')
        elif name == "sethandler" and words and words[0].lower() == "server-status":
            found = location
    return found


# -- nginx ----------------------------------------------------------------------------

def nginx_tokens(path: str, tokens_of: Callable[[str], Iterable[str]],
                 seen: set[str] | None = None) -> Iterator[str]:
    """The tokens of a configuration with ``include`` expanded in place (relative to
    the configuration's directory, as nginx resolves them)."""
    seen = set() if seen is None else seen
    if path in seen or len(seen) > 256:
        return
    seen.add(path)
    base = os.path.dirname(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return
    statement = []
    for token in tokens_of(text):
        if token not in "{};":
            statement.append(token)
            continue
        if token == ";" and len(statement) == 2 and statement[0] == "include":
            for found in expand(statement[1], base):
                yield from nginx_tokens(found, tokens_of, seen)
        else:
            yield from statement
            yield token
        statement = []
    yield from statement


def nginx_listens(config: str, tokens_of: Callable[[str], Iterable[str]]) -> "list[Listen]":
    """The TCP listen directives of the http servers, in order."""
    found: list[Listen] = []
    blocks: list[str] = []
    words: list[str] = []
    for token in nginx_tokens(config, tokens_of):
        if token == "{":
            blocks.append(words[0] if words else "")
            words = []
        elif token == "}":
            blocks, words = blocks[:-1], []
        elif token == ";":
            if words[:1] == ["listen"] and len(words) > 1 and blocks[-2:] == ["http", "server"]:
                listen = nginx_listen(words[1:])
                if listen is not None:
                    found.append(listen)
            words = []
        else:
            words.append(token)
    return found


def nginx_status_path(config: str, tokens_of: Callable[[str], Iterable[str]]) -> "str | None":
    """The last location whose block holds stub_status (the stock agent's choice)."""
    location: str | None = None
    found: str | None = None
    words: list[str] = []
    for token in nginx_tokens(config, tokens_of):
        if token == "{":
            if words[:1] == ["location"] and len(words) > 1:
                location = words[-1]
            words = []
        elif token in ";}":
            if words[:1] == ["stub_status"]:
                found = location
            words = []
        else:
            words.append(token)
    return found


def url(listen: "Listen", address: "str | None", path: str) -> str:
    """The URL of path on this listening socket (address overrides the socket's)."""
    host = address or listen.host()
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if listen.tls else 'http'}://{host}:{listen.port}{path}"
