"""PostgreSQL's frontend/backend protocol (v3), simple queries only.

Enough for the database's health checks without psql or a driver: startup,
authentication (trust, cleartext, md5, SCRAM-SHA-256), simple queries with
their rows, errors with SQLSTATE, and a clean Terminate. Over the server's
unix socket by default, so no TCP port needs opening for the monitor.
"""

from __future__ import annotations

import struct

from hapack.ocf._wire import AuthError, Wire
from hapack.probe import ProbeError

PROTOCOL = 196608  # 3.0
AUTH_FAILED = ("28P01", "28000")  # invalid_password, invalid_authorization_specification


class PgError(ProbeError):
    """An ErrorResponse: .sqlstate and .message."""

    def __init__(self, what, fields):
        self.sqlstate = fields.get("C", "")
        self.message = fields.get("M", "")
        super().__init__(f"{what}: {fields.get('S', 'ERROR')} {self.sqlstate}: {self.message}")


def message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\0"


def startup_packet(user: str, database: str, application: str = "hapack-monitor") -> bytes:
    body = struct.pack("!I", PROTOCOL) + cstr("user") + cstr(user) + cstr("database") + \
        cstr(database) + cstr("application_name") + cstr(application) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def error_fields(payload: bytes) -> dict[str, str]:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", errors="replace")
    return fields


def md5_response(user: str, password: str, salt: bytes) -> str:
    import hashlib
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


class Scram:
    """SCRAM-SHA-256 client (RFC 5802 / 7677); PostgreSQL ignores the user name in it."""

    def __init__(self, password, user="", nonce=None):
        import base64
        import os
        self.password = password.encode("utf-8")
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={user},r={self.nonce}"
        self.server_signature = None

    def first(self) -> str:
        return "n,," + self.first_bare

    def final(self, server_first: str) -> str:
        import base64
        import hashlib
        import hmac
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        if not attrs.get("r", "").startswith(self.nonce):
            raise ProbeError("SCRAM: the server's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        auth = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = base64.b64encode(hmac.digest(server_key, auth, "sha256")).decode()
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify(self, server_final: str) -> None:
        if server_final.strip() != f"v={self.server_signature}":
            raise AuthError("SCRAM: the server's signature does not match (not our server?)")


class PgConnection:
    def __init__(self, address, user, database, password, timeout, peer=None):
        where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        self.what = f"PostgreSQL at {where}"
        self.wire = Wire(address, timeout, self.what, peer)
        self.user, self.password = user, password
        self.wire.send(startup_packet(user, database))
        self._authenticate()

    def read(self) -> tuple[bytes, ...]:
        head = self.wire.take(5)
        kind, length = head[:1], struct.unpack("!I", head[1:])[0]
        return kind, self.wire.take(length - 4)

    def _error(self, payload):
        error = PgError(self.what, error_fields(payload))
        if error.sqlstate in AUTH_FAILED:
            raise AuthError(str(error))
        raise error

    def _need_password(self):
        if self.password is None:
            raise AuthError(f"{self.what}: the server asks for a password: set credentials_file")
        return self.password

    def _authenticate(self):
        scram = None
        while True:
            kind, payload = self.read()
            if kind == b"E":
                self._error(payload)
            if kind == b"Z":
                return
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            code = struct.unpack("!I", payload[:4])[0]
            if code == 3:
                self.wire.send(message(b"p", cstr(self._need_password())))
            elif code == 5:
                self.wire.send(message(b"p", cstr(md5_response(
                    self.user, self._need_password(), payload[4:8]))))
            elif code == 10:
                if b"SCRAM-SHA-256\0" not in payload[4:]:
                    raise AuthError(f"{self.what}: no supported SASL mechanism offered")
                scram = Scram(self._need_password())
                first = scram.first().encode()
                self.wire.send(message(b"p", cstr("SCRAM-SHA-256") +
                                       struct.pack("!I", len(first)) + first))
            elif code == 11:
                self.wire.send(message(b"p", scram.final(payload[4:].decode()).encode()))
            elif code == 12:
                scram.verify(payload[4:].decode())
            elif code != 0:
                raise AuthError(f"{self.what}: unsupported authentication method {code}")

    def query(self, sql: str) -> list[list[str | None]]:
        """Run a simple query; the rows of its last result, as lists of str or None."""
        self.wire.send(message(b"Q", cstr(sql)))
        rows, error = [], None  # type: ignore[var-annotated]
        while True:
            kind, payload = self.read()
            if kind == b"T":
                rows = []
            elif kind == b"D":
                rows.append(_data_row(payload))
            elif kind == b"E":
                error = payload
            elif kind == b"Z":
                if error is not None:
                    self._error(error)
                return rows

    def close(self) -> None:
        try:
            self.wire.send(message(b"X"))
        except ProbeError:
            pass
        self.wire.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _data_row(payload):
    count = struct.unpack("!H", payload[:2])[0]
    values, offset = [], 2
    for _ in range(count):
        length = struct.unpack("!i", payload[offset:offset + 4])[0]
        offset += 4
        if length < 0:
            values.append(None)
        else:
            values.append(payload[offset:offset + length].decode("utf-8", errors="replace"))
            offset += length
    return values


def literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings, the default since 9.1)."""
    return "'" + str(text).replace("'", "''") + "'"
