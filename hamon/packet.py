"""The heartbeat on the wire: format, HMAC-SHA256 with key ids, replay window.

A packet is a fixed header, a JSON body (what the sender says about itself,
:class:`Status`) and an HMAC-SHA256 over both::

    magic "HAMN" | version | key id | link | flags
    generation u64 | seq u64 | ack generation u64 | ack seq u64 | link seq u32
    body (JSON, UTF-8) | HMAC-SHA256 (32 bytes)

``generation`` is the sender's boot generation, kept on disk and bumped at
every start; ``seq`` counts every packet of that generation (all links);
``link seq`` counts the packets of one link (for its loss figure). The
``ack`` pair echoes the newest authentic packet the sender received from us:
a packet counts only if it echoes one of our recent packets of our current
generation, which makes a recorded packet worthless once we moved on, even
across our own restart (see :mod:`hapack.hamon.transport`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import struct
from dataclasses import asdict, dataclass, fields

MAGIC = b"HAMN"
VERSION = 1
HEADER = struct.Struct("!4sBBBBQQQQI")
MAC_SIZE = 32
MIN_SECRET = 16
MAX_BODY = 1200
WINDOW = 64  # sequence numbers remembered behind the newest


class Rejected(Exception):
    """A packet that must be dropped; ``reason`` is its counter's name."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class KeyFileError(ValueError):
    """The key file is unusable (hamon refuses to start)."""


@dataclass(frozen=True)
class Status:
    """What a node says about itself in every heartbeat."""

    node: str
    state: str = "starting"
    active: bool = False         # holds or is acquiring the stateful side
    eligible: bool = True        # may take the stateful side
    released: bool = False       # released the stateful side cleanly for the peer
    stop_failed: bool = False    # a stop failed: fence me
    maintenance: bool = False
    leaving: bool = False        # shutting down cleanly, holding nothing
    request: str = ""            # "takeover": asks the peer to hand the stateful side over
    upstream: bool | None = None  # the ping targets answer (None: none configured)
    probing: bool = False        # what runs here is not known yet: counted as active

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Status":
        raw = json.loads(data)
        if not isinstance(raw, dict) or not isinstance(raw.get("node"), str):
            raise ValueError("not a status object")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class Heartbeat:
    link: int
    generation: int
    seq: int
    ack_generation: int
    ack_seq: int
    link_seq: int
    status: Status
    key_id: int = 0


class Keyring:
    """Secrets by key id, and the id to send with (Heartbeat's ``auth N``)."""

    def __init__(self, keys, send_id):
        if send_id not in keys:
            raise KeyFileError(f"auth {send_id}: no key with id {send_id}")
        self.keys = dict(keys)
        self.send_id = send_id

    @classmethod
    def load(cls, path: str) -> "Keyring":
        """Read a key file owned by root and private to it, else refuse."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyFileError(f"{path} is not a regular file")
            if info.st_uid != 0 or info.st_mode & 0o077:
                raise KeyFileError(f"{path} must be owned by root and readable by root only "
                                f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}; "
                                f"chown root {path}; chmod 600 {path})")
            data = handle.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # name no byte of it: the file holds the secrets
            raise KeyFileError(f"{path} is not valid UTF-8 text (expected 'auth ID' and "
                               "'ID SECRET' lines; 'hamon keygen' writes one)") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, where: str = "<keys>") -> "Keyring":
        keys, send_id = {}, None
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0] == "auth" and len(words) == 2 and words[1].isdigit():
                send_id = int(words[1])
            elif len(words) == 2 and words[0].isdigit() and 1 <= int(words[0]) <= 255:
                if len(words[1]) < MIN_SECRET:
                    raise KeyFileError(f"{where}:{number}: key {words[0]} is shorter than "
                                    f"{MIN_SECRET} characters")
                keys[int(words[0])] = words[1].encode()
            else:
                raise KeyFileError(f"{where}:{number}: expected 'auth ID' or 'ID SECRET' "
                                "(ID 1-255)")
        if not keys:
            raise KeyFileError(f"{where}: no keys")
        return cls(keys, send_id if send_id is not None else min(keys))


def encode(keyring: Keyring, hb: Heartbeat) -> bytes:
    body = hb.status.to_json()
    if len(body) > MAX_BODY:
        raise ValueError("status too large for one packet")
    head = HEADER.pack(MAGIC, VERSION, keyring.send_id, hb.link, 0, hb.generation, hb.seq,
                       hb.ack_generation, hb.ack_seq, hb.link_seq)
    signed = head + body
    return signed + hmac.new(keyring.keys[keyring.send_id], signed, hashlib.sha256).digest()


def decode(keyring: Keyring, data: bytes) -> Heartbeat:
    """The authenticated :class:`Heartbeat` in ``data``, or :class:`Rejected`."""
    if len(data) < HEADER.size + MAC_SIZE + 2 or len(data) > HEADER.size + MAX_BODY + MAC_SIZE:
        raise Rejected("malformed", f"{len(data)} bytes")
    (magic, version, key_id, link, _flags, generation, seq, ack_gen, ack_seq,
     link_seq) = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise Rejected("malformed", "not a hamon packet of this version")
    key = keyring.keys.get(key_id)
    if key is None:
        raise Rejected("unknown-key", f"key id {key_id}")
    signed, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if not hmac.compare_digest(mac, hmac.new(key, signed, hashlib.sha256).digest()):
        raise Rejected("bad-mac")
    try:
        status = Status.from_json(signed[HEADER.size:])
    except (ValueError, TypeError) as exc:
        raise Rejected("malformed", f"body: {exc}") from None
    return Heartbeat(link, generation, seq, ack_gen, ack_seq, link_seq, status, key_id)


class ReplayGuard:
    """The newest (generation, seq) of the peer and which recent seqs were seen."""

    def __init__(self):
        self.generation = None
        self.top = 0
        self.seen = 0  # bit i: top - i was seen

    def check(self, generation: int, seq: int) -> None:
        """Raise Rejected for a replay or an older generation (changes nothing)."""
        if self.generation is None or generation > self.generation:
            return
        if generation < self.generation:
            raise Rejected("old-generation", f"{generation} < {self.generation}")
        if seq > self.top:
            return
        behind = self.top - seq
        if behind >= WINDOW:
            raise Rejected("replay", f"seq {seq} is {behind} behind the newest")
        if self.seen >> behind & 1:
            raise Rejected("replay", f"seq {seq} was seen already")

    def accept(self, generation: int, seq: int) -> None:
        if self.generation is None or generation > self.generation:
            self.generation, self.top, self.seen = generation, seq, 1
        elif seq > self.top:
            shift = seq - self.top
            self.seen = ((self.seen << shift) | 1) & ((1 << WINDOW) - 1)
            self.top = seq
        else:
            self.seen |= 1 << (self.top - seq)
