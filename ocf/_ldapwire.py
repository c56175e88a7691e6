"""A minimal LDAPv3 client (RFC 4511) with its own BER encoder.

Simple bind, base-scope search, add and delete, over ldap:// (TCP) or
ldapi:// (unix socket): what slapd's health checks need, with no
ldapsearch child and no password on a command line.
"""

from __future__ import annotations

from hapack.probe import ProbeError

SUCCESS, NO_SUCH_OBJECT, INVALID_CREDENTIALS, ALREADY_EXISTS = 0, 32, 49, 68
BIND, SEARCH, ADD, DELETE, UNBIND = 0x60, 0x63, 0x68, 0x4A, 0x42
BIND_RESPONSE, ENTRY, DONE, REFERENCE = 0x61, 0x64, 0x65, 0x73
ADD_RESPONSE, DEL_RESPONSE = 0x69, 0x6B


# -- BER --------------------------------------------------------------------

def tlv(tag: int, value: bytes) -> bytes:
    size = len(value)
    if size < 0x80:
        return bytes((tag, size)) + value
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(raw))) + raw + value


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def octets(text: str, tag: int = 0x04) -> bytes:
    return tlv(tag, text.encode("utf-8") if isinstance(text, str) else text)


def sequence(*parts: bytes, tag: int = 0x30) -> bytes:
    return tlv(tag, b"".join(parts))


def decode(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """(tag, value, next offset) of the TLV at offset."""
    if offset + 2 > len(data):
        raise ProbeError("LDAP: truncated BER element")
    tag, size = data[offset], data[offset + 1]
    offset += 2
    if size & 0x80:
        count = size & 0x7F
        size = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    if offset + size > len(data):
        raise ProbeError("LDAP: truncated BER element")
    return tag, data[offset:offset + size], offset + size


def elements(data: bytes) -> list[tuple[int, bytes]]:
    offset, found = 0, []
    while offset < len(data):
        tag, value, offset = decode(data, offset)
        found.append((tag, value))
    return found


def ldap_result(value: bytes) -> tuple[int, str]:
    """(resultCode, diagnosticMessage) of an LDAPResult."""
    parts = elements(value)
    code = int.from_bytes(parts[0][1], "big")
    diag = parts[2][1].decode("utf-8", errors="replace") if len(parts) > 2 else ""
    return code, diag


def entry_attributes(value: bytes) -> dict[str, list[str]]:
    """The attributes of a SearchResultEntry: {name: [values]}."""
    _, attrs = elements(value)[:2]
    found = {}
    for _, attr in elements(attrs[1]):
        (_, name), (_, values) = elements(attr)[:2]
        found[name.decode().lower()] = [v.decode("utf-8", errors="replace")
                                        for _, v in elements(values)]
    return found


def tcp_port(url: str) -> int:
    """The port of an ldap:// or ldaps:// URL (default 389 or 636)."""
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    port = netloc.rpartition(":")[2]
    if port.isdigit() and not netloc.endswith("]"):
        return int(port)
    return 636 if url.startswith("ldaps:") else 389


def ldapi_path(url: str) -> str:
    """The socket path of an ldapi:// URL, %-decoded."""
    head, *rest = url.split("://", 1)[1].split("/", 1)[0].split("%")
    return (head.encode() + b"".join(bytes.fromhex(p[:2]) + p[2:].encode() for p in rest)).decode()


def address(url: str) -> str | tuple[str, int]:
    """(host, port) for ldap://, the socket path for ldapi:// (no urllib: monitor path)."""
    if url.startswith("ldap://"):
        netloc = url[7:].split("/", 1)[0]
        host = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") and ":" in netloc else netloc
        return (host.strip("[]") or "127.0.0.1", tcp_port(url))
    if url.startswith("ldapi://") and ldapi_path(url):
        return ldapi_path(url)
    raise ValueError(f"{url!r}: the monitor speaks ldap://host:port/ or ldapi://<socket>/")


# -- the client ---------------------------------------------------------------

class Ldap:
    def __init__(self, url, timeout):
        from hapack.ocf._wire import Wire
        self.wire = Wire(address(url), timeout, f"LDAP {url}")
        self.next_id = 0

    def request(self, op: bytes) -> None:
        self.next_id += 1
        self.wire.send(sequence(integer(self.next_id), op))

    def response(self) -> tuple[int, bytes]:
        """(tag, value) of the next message for our last request."""
        wire = self.wire
        while True:
            head = wire.take(2)
            size = head[1]
            if size & 0x80:
                size = int.from_bytes(wire.take(size & 0x7F), "big")
            (_, msgid), (tag, value) = elements(wire.take(size))[:2]
            if int.from_bytes(msgid, "big") == self.next_id:
                return tag, value

    def call(self, op: bytes, expect: int) -> tuple[int, str]:
        self.request(op)
        tag, value = self.response()
        if tag != expect:
            raise ProbeError(f"{self.wire.what}: unexpected answer (tag 0x{tag:02x})")
        return ldap_result(value)

    def bind(self, dn: str = "", password: str = "") -> None:
        code, diag = self.call(tlv(BIND, integer(3) + octets(dn) + octets(password, 0x80)),
                               BIND_RESPONSE)
        if code == INVALID_CREDENTIALS:
            from hapack.ocf._wire import AuthError
            raise AuthError(f"{self.wire.what}: bind as {dn or 'anonymous'} refused: "
                            f"invalid credentials")
        if code != SUCCESS:
            raise ProbeError(f"{self.wire.what}: bind as {dn or 'anonymous'} failed: "
                             f"result {code} {diag}".rstrip())

    def read(self, dn: str, attrs: tuple[str, ...] = ("1.1",)) -> dict[str, list[str]]:
        """Base-scope search of dn: its attributes, or raise when absent."""
        self.request(tlv(SEARCH, octets(dn) + integer(0, 0x0A) + integer(0, 0x0A) + integer(1)
                         + integer(0) + tlv(0x01, b"\x00") + octets("objectClass", 0x87)
                         + sequence(*(octets(a) for a in attrs))))
        found = None
        while True:
            tag, value = self.response()
            if tag == ENTRY:
                found = entry_attributes(value)
            elif tag == DONE:
                code, diag = ldap_result(value)
                if code != SUCCESS:
                    name = "no such object" if code == NO_SUCH_OBJECT else f"result {code}"
                    raise ProbeError(f"{self.wire.what}: search of {dn}: {name} {diag}".rstrip())
                if found is None:
                    raise ProbeError(f"{self.wire.what}: search of {dn} returned no entry")
                return found
            elif tag != REFERENCE:
                raise ProbeError(f"{self.wire.what}: unexpected answer (tag 0x{tag:02x})")

    def add(self, dn: str, attrs: dict[str, list[str]]) -> tuple[int, str]:
        """Add an entry ({type: [values]}); returns the result code."""
        body = b"".join(sequence(octets(name), sequence(*(octets(v) for v in values), tag=0x31))
                        for name, values in attrs.items())
        return self.call(tlv(ADD, octets(dn) + sequence(body)), ADD_RESPONSE)

    def delete(self, dn: str) -> tuple[int, str]:
        return self.call(octets(dn, DELETE), DEL_RESPONSE)

    def unbind(self) -> None:
        self.request(tlv(UNBIND, b""))
        self.wire.close()

    def close(self) -> None:
        self.wire.close()
