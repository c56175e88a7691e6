"""Address announcements and duplicate-address probes on a raw link socket.

IPv4: gratuitous ARP requests (or replies, ``mode="reply"``) announce an
address; an RFC 5227 ARP probe
(sender address 0.0.0.0) finds another holder. IPv6: unsolicited neighbour
advertisements (override flag) announce; a DAD-style neighbour solicitation
from the unspecified address finds another holder. Everything is built
here and sent on an AF_PACKET socket: no arping or send_arp process, no
tentative address waiting for the kernel's DAD.
"""

from __future__ import annotations

import socket
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Iterator

ETH_P_ARP, ETH_P_IPV6 = 0x0806, 0x86DD
BROADCAST = b"\xff" * 6
ICMPV6_NS, ICMPV6_NA = 135, 136
NA_FLAG_OVERRIDE = 0x20000000


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ethernet(dst, src, proto):
    return dst + src + struct.pack("!H", proto)


ARP_REQUEST, ARP_REPLY = 1, 2
ARP_MODES = ("request", "reply")


def arp_frame(mac: str, sender_ip: str, target_ip: str, op: int = ARP_REQUEST,
              target_mac: bytes = b"\0" * 6) -> bytes:
    """An Ethernet ARP frame, broadcast; op 1 is a request, 2 a reply."""
    src = mac_bytes(mac)
    payload = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, src,
                          socket.inet_aton(sender_ip), target_mac, socket.inet_aton(target_ip))
    return _ethernet(BROADCAST, src, ETH_P_ARP) + payload


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv6_frame(dst_mac, src_mac, src_ip, dst_ip, icmp):
    src = socket.inet_pton(socket.AF_INET6, src_ip)
    dst = socket.inet_pton(socket.AF_INET6, dst_ip)
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB", 0x60000000, len(icmp), 58, 255) + src + dst
    return _ethernet(dst_mac, src_mac, ETH_P_IPV6) + header + icmp


def solicited_node(ip: str) -> tuple[str, bytes]:
    raw = socket.inet_pton(socket.AF_INET6, ip)
    group = bytes.fromhex("ff02" + "00" * 9 + "01ff") + raw[13:]
    return socket.inet_ntop(socket.AF_INET6, group), b"\x33\x33\xff" + raw[13:]


def na_frame(mac: str, ip: str) -> bytes:
    """An unsolicited neighbour advertisement for ip (override set, solicited not)."""
    src = mac_bytes(mac)
    icmp = (struct.pack("!BBHI", ICMPV6_NA, 0, 0, NA_FLAG_OVERRIDE)
            + socket.inet_pton(socket.AF_INET6, ip) + struct.pack("!BB", 2, 1) + src)
    return _ipv6_frame(b"\x33\x33\x00\x00\x00\x01", src, ip, "ff02::1", icmp)


def ns_probe_frame(mac: str, ip: str) -> bytes:
    """A DAD neighbour solicitation for ip from the unspecified address."""
    group, group_mac = solicited_node(ip)
    icmp = struct.pack("!BBHI", ICMPV6_NS, 0, 0, 0) + socket.inet_pton(socket.AF_INET6, ip)
    return _ipv6_frame(group_mac, mac_bytes(mac), "::", group, icmp)


def parse_arp_holder(frame: bytes, ip: str, own_mac: str) -> str | None:
    """The MAC of another host claiming ip in this ARP frame, else None."""
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_ARP:
        return None
    sha, spa = frame[22:28], frame[28:32]
    if spa == socket.inet_aton(ip) and sha != mac_bytes(own_mac):
        return mac_text(sha)
    return None


def parse_na_holder(frame: bytes, ip: str, own_mac: str) -> str | None:
    """The MAC of another host advertising ip in this NA frame, else None."""
    if len(frame) < 14 + 40 + 24 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6:
        return None
    if frame[14 + 6] != 58 or frame[54] != ICMPV6_NA:
        return None
    if frame[62:78] != socket.inet_pton(socket.AF_INET6, ip):
        return None
    src_mac = frame[6:12]
    if src_mac == mac_bytes(own_mac):
        return None
    options = frame[78:]
    while len(options) >= 8 and options[1]:
        if options[0] == 2:
            return mac_text(options[2:8])
        options = options[options[1] * 8:]
    return mac_text(src_mac)


class LinkSocket:
    """An AF_PACKET socket bound to one interface and protocol."""

    def __init__(self, ifname, family):
        self.proto = ETH_P_ARP if family == socket.AF_INET else ETH_P_IPV6
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self.proto))
        self.sock.bind((ifname, self.proto))

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def receive(self, deadline: float) -> Iterator[bytes]:
        """Frames until the monotonic deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                yield self.sock.recv(2048)
            except TimeoutError:
                return

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def gratuitous_arp(mac: str, ip: str, mode: str = "request") -> bytes:
    """A gratuitous ARP for ip, broadcast, sender and target address both ip.

    A request has an empty target MAC (RFC 5227's announcement); a reply names
    the sender as target too, as resource-agents' send_arp's reply and
    iputils ``arping -A`` do (IPaddr2 ``send_arp_opts=-A``, resource-agents PR
    977): for switches that learn only from replies.
    """
    if mode not in ARP_MODES:
        raise ValueError(f"ARP mode {mode!r} is not one of {', '.join(ARP_MODES)}")
    if mode == "reply":
        return arp_frame(mac, ip, ip, op=ARP_REPLY, target_mac=mac_bytes(mac))
    return arp_frame(mac, ip, ip)


def announcement(family: int, mac: str, ip: str, mode: str = "request") -> bytes:
    """IPv4: a gratuitous ARP of ``mode``; IPv6: an unsolicited neighbour advertisement."""
    return gratuitous_arp(mac, ip, mode) if family == socket.AF_INET else na_frame(mac, ip)


def announce(ifname: str, family: int, mac: str, ip: str, count: int = 1, interval: float = 0.0,
             still_ours: Callable[[], bool] | None = None, mode: str = "request") -> int:
    """Send ``count`` announcements ``interval`` seconds apart (IPv4: ARP ``mode``).

    ``still_ours`` (optional callable) is asked before each one after the
    first, so a stopped VIP is never announced again. Returns how many were
    sent.
    """
    frame = announcement(family, mac, ip, mode)
    sent = 0
    with LinkSocket(ifname, family) as link:
        for n in range(count):
            if n:
                time.sleep(interval)
                if still_ours is not None and not still_ours():
                    break
            link.send(frame)
            sent += 1
    return sent


def probe(ifname: str, family: int, mac: str, ip: str, timeout: float,
          tries: int = 2) -> str | None:
    """Ask whether another host holds ip; the MAC that answered, or None."""
    if family == socket.AF_INET:
        frame, parse = arp_frame(mac, "0.0.0.0", ip), parse_arp_holder
    else:
        frame, parse = ns_probe_frame(mac, ip), parse_na_holder
    end = time.monotonic() + timeout
    with LinkSocket(ifname, family) as link:
        for n in range(tries):
            link.send(frame)
            slot = end if n == tries - 1 else min(end, time.monotonic() + timeout / tries)
            for received in link.receive(slot):
                holder = parse(received, ip, mac)
                if holder:
                    return holder
    return None
