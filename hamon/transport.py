"""Sending and receiving heartbeats: one base class, a UDP and an in-memory transport.

:class:`Transport` owns trust. :meth:`Transport.send` numbers, acknowledges
and signs a heartbeat on every link; :meth:`Transport.receive` drains what
arrived and returns only packets that are authentic (a known key and a good
HMAC), came on the link they name, come from the peer, are not replays or
of an older generation, and are *fresh*: they echo one of our own recent
packets of our current generation. Everything else is dropped and counted
by reason in :attr:`Transport.rejected`. Subclasses move bytes only.
"""

from __future__ import annotations

import abc
import errno
import os
import socket
from collections import Counter

from hapack.hamon.packet import Heartbeat, Rejected, ReplayGuard, decode, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.hamon.packet import Status

DSCP_CS6 = 0xC0      # network control: heartbeats go before bulk traffic
IP_FREEBIND = 15     # bind before the address is configured (a link still down at boot)


def next_generation(path: str) -> int:
    """Bump and return the boot generation kept in ``path`` (written before use)."""
    try:
        with open(path, encoding="ascii") as handle:
            current = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        import time
        current = int(time.time())  # a lost file must not restart below the peer's memory
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{current + 1}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return current + 1


class Transport(abc.ABC):
    """Heartbeats over ``links`` links to one peer, authenticated with ``keyring``.

    ``fresh_window``: how many of our newest packets a peer's echo may name
    and still count as fresh (a few dead times' worth).
    """

    def __init__(self, keyring, generation, peer, links, fresh_window):
        self.keyring = keyring
        self.generation = generation
        self.peer = peer
        self.links = links
        self.fresh_window = fresh_window
        self.seq = 0
        self.link_seq = [0] * links
        self.guard = ReplayGuard()
        self.rejected = Counter()
        self.send_errors = [0] * links

    # -- what subclasses implement ------------------------------------------------
    @abc.abstractmethod
    def _send(self, link, data):
        """Send bytes on one link; raise OSError on failure."""

    @abc.abstractmethod
    def _recv(self):
        """Every (link, bytes) that arrived, without blocking."""

    def fileno_list(self) -> list[int]:
        """File descriptors a caller may select() on for arrivals."""
        return []

    def close(self) -> None:
        pass

    # -- the public side ----------------------------------------------------------
    def send(self, status: Status) -> list[Any]:
        """Send ``status`` on every link; returns the links whose send failed."""
        failed = []
        ack_gen, ack_seq = self.guard.generation or 0, self.guard.top
        for link in range(self.links):
            self.seq += 1
            self.link_seq[link] += 1
            hb = Heartbeat(link, self.generation, self.seq, ack_gen, ack_seq,
                           self.link_seq[link], status)
            try:
                self._send(link, encode(self.keyring, hb))
            except OSError:
                self.send_errors[link] += 1
                failed.append(link)
        return failed

    def receive(self) -> list[Heartbeat]:
        """The admitted heartbeats among everything that arrived."""
        admitted = []
        for link, data in self._recv():
            try:
                admitted.append(self.admit(link, data))
            except Rejected as exc:
                self.rejected[exc.reason] += 1
        return admitted

    def admit(self, link: int, data: bytes) -> Heartbeat:
        hb = decode(self.keyring, data)
        if hb.link != link:
            raise Rejected("wrong-link", f"says link {hb.link}, came on link {link}")
        if hb.status.node != self.peer:
            raise Rejected("wrong-node", hb.status.node)
        self.guard.check(hb.generation, hb.seq)
        self.guard.accept(hb.generation, hb.seq)  # echoed back even when stale: the handshake
        if hb.ack_generation != self.generation or self.seq - hb.ack_seq > self.fresh_window:
            raise Rejected("stale", f"echoes {hb.ack_generation}/{hb.ack_seq}, "
                           f"we are at {self.generation}/{self.seq}")
        return hb


class UdpTransport(Transport):
    """One UDP socket per link, bound to our address on it, sending to the peer's."""

    def __init__(self, keyring, generation, peer, link_ends, port, fresh_window):
        super().__init__(keyring, generation, peer, len(link_ends), fresh_window)
        self.ends = link_ends
        self.port = port
        self.socks = [self._socket(end) for end in link_ends]

    def _socket(self, end):
        family = socket.AF_INET6 if ":" in end.local else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_CS6)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, DSCP_CS6)
            sock.bind((end.local, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _send(self, link, data):
        self.socks[link].sendto(data, (self.ends[link].peer, self.port))

    def _recv(self):
        out = []
        for link, sock in enumerate(self.socks):
            while True:
                try:
                    data, source = sock.recvfrom(4096)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # an ICMP error queued on the socket
                    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        continue
                    raise
                if source[0] != self.ends[link].peer:
                    self.rejected["wrong-source"] += 1
                    continue
                out.append((link, data))
        return out

    def fileno_list(self) -> list[int]:
        return [s.fileno() for s in self.socks]

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


class Hub:
    """The wires between in-memory transports, with cables to cut and a tap."""

    def __init__(self):
        self.queues = {}
        self.cut = set()        # (node, link) that neither sends nor receives
        self.tap = []           # every (sender, link, bytes) that went on a wire

    def attach(self, node: str) -> None:
        self.queues[node] = []

    def carry(self, sender: str, receiver: str, link: int, data: bytes) -> None:
        self.tap.append((sender, link, data))
        if (sender, link) not in self.cut and (receiver, link) not in self.cut:
            self.queues[receiver].append((link, data))  # a cut cable loses it silently, as UDP

    def inject(self, receiver: str, link: int, data: bytes) -> None:
        """Put bytes on a wire as an attacker would."""
        self.queues[receiver].append((link, data))


class MemoryTransport(Transport):
    """A transport over a :class:`Hub`, for tests."""

    def __init__(self, hub, node, keyring, generation, peer, links, fresh_window):
        super().__init__(keyring, generation, peer, links, fresh_window)
        self.hub, self.node = hub, node
        hub.attach(node)

    def _send(self, link, data):
        self.hub.carry(self.node, self.peer, link, data)

    def _recv(self):
        out, self.hub.queues[self.node] = self.hub.queues[self.node], []
        return out
