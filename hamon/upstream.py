"""Is our upstream there? ICMP echo to the ping targets, from a thread of its own.

Optional (``ping_targets`` in ``[hamon]``): the upstream is up while any
target answered within ``window`` seconds (half the dead time), so when the
peer is declared dead the answer says how the upstream was *after* the peer
fell silent. A node whose upstream is down
yields: it neither fences its peer nor takes over, so in a split the node
that can still reach the clients survives (Heartbeat's ipfail idea).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    head = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    payload = b"hamon-upstream"
    return struct.pack("!BBHHH", ICMP_ECHO, 0, checksum(head + payload), ident, seq) + payload


class Pinger:
    def __init__(self, targets, interval, window, clock=time.monotonic):
        self.targets = tuple(targets)
        self.interval = interval
        self.window = window
        self.clock = clock
        self.last_reply = clock()   # the benefit of the doubt at start
        self.ident = os.getpid() & 0xFFFF
        self._stop = threading.Event()
        self._thread = None

    @property
    def up(self) -> bool | None:
        """True or False; None when no targets are configured."""
        if not self.targets:
            return None
        return self.clock() - self.last_reply < self.window

    def start(self) -> Pinger:
        if self.targets:
            self._thread = threading.Thread(target=self._run, name="hamon-ping", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self):
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            seq = 0
            while not self._stop.is_set():
                seq = (seq + 1) & 0xFFFF
                for target in self.targets:
                    try:
                        sock.sendto(echo_request(self.ident, seq), (target, 0))
                    except OSError:
                        pass
                self._replies(sock, self.clock() + self.interval)

    def _replies(self, sock, until):
        while (left := until - self.clock()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                return
            data, _ = sock.recvfrom(1500)
            header = (data[0] & 0x0F) * 4
            kind, _, _, ident, _ = struct.unpack_from("!BBHHH", data, header)
            if kind == ICMP_ECHOREPLY and ident == self.ident:
                self.last_reply = self.clock()
