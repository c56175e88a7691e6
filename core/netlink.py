"""The pack's one netlink module: links, addresses, routes and listening sockets.

The VIP agent runs in a fresh interpreter for every call, and its monitor
runs every few seconds for every VIP on every node. Importing pyroute2 costs
about 100 ms (0.9 pulls in asyncio), more than the whole of a stock
IPaddr2 monitor, so the agent's per-call work -- which addresses are on
which interface, is that link up, add or delete one address -- is done here
with one rtnetlink socket and a few fixed-layout messages, and so is the
sock_diag dump of listening TCP sockets that the server agents' level-0
monitor needs (:func:`listening_inodes`). Route discovery (finding the
interface and prefix of a VIP from the routing table, :func:`connected_routes`)
goes through pyroute2, imported on first use: only a start or validate-all
whose VIP has no ``nic`` or ``cidr_netmask`` pays for it. Callers speak in
exact terms (an interface index, a prefix length, a metric) and never match
substrings of ``ip`` output.
"""

from __future__ import annotations

import os
import struct

import _socket as socket  # the C module: 'socket' pulls in selectors and enum

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400

IFLA_ADDRESS, IFLA_IFNAME, IFLA_OPERSTATE = 1, 3, 16
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 3, 4, 6, 8
INFINITY_LIFE = 0xFFFFFFFF

IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
IFA_F_NODAD, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x02, 0x08, 0x20, 0x40

_NLMSGHDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")


class NetlinkError(OSError):
    pass


class Link:
    __slots__ = ("index", "name", "flags", "mac")

    def __init__(self, index, name, flags, mac):
        self.index, self.name, self.flags, self.mac = index, name, flags, mac

    @property
    def up(self) -> bool:
        """Administratively up with carrier (not DOWN or LOWERLAYERDOWN)."""
        return bool(self.flags & IFF_UP) and bool(self.flags & (IFF_LOWER_UP | IFF_RUNNING))


class Addr:
    """One address entry. ``created`` is the kernel's creation stamp of the entry
    (IFA_CACHEINFO cstamp, hundredths of a second since boot): an entry deleted
    and added again, by anyone, gets a new one."""
    __slots__ = ("family", "address", "prefixlen", "index", "label", "flags", "created")

    def __init__(self, family, address, prefixlen, index, label, flags, created=None):
        self.family, self.address, self.prefixlen = family, address, prefixlen
        self.index, self.label, self.flags, self.created = index, label, flags, created

    @property
    def tentative(self) -> bool:
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dadfailed(self) -> bool:
        return bool(self.flags & IFA_F_DADFAILED)

    def __repr__(self):
        return f"Addr({self.address}/{self.prefixlen} index={self.index})"


def _attrs(data, offset, end):
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            break
        yield kind & 0x7FFF, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def _rtattr(kind, payload):
    length = 4 + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (((length + 3) & ~3) - length)


class Netlink:
    """One rtnetlink socket; use as a context manager."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, kind, flags, body):
        self.seq += 1
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST,
                                self.seq, 0)
        self.sock.send(header + body)
        dump = bool(flags & NLM_F_DUMP)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    return
                if seq == self.seq:
                    if mtype == NLMSG_DONE:
                        return
                    if mtype == NLMSG_ERROR:
                        (error,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
                        if error:
                            raise NetlinkError(-error, os.strerror(-error))
                        return
                    yield mtype, data, offset + _NLMSGHDR.size, offset + length
                    if not dump:
                        return
                offset += (length + 3) & ~3

    def link(self, name: str) -> Link | None:
        """The link called ``name``, or None when there is none."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _rtattr(IFLA_IFNAME, name.encode() + b"\0")
        try:
            for mtype, data, start, end in self._request(RTM_GETLINK, 0, body):
                if mtype == RTM_NEWLINK:
                    return self._parse_link(data, start, end)
        except NetlinkError as exc:
            if exc.errno in (19, 22):  # ENODEV; EINVAL for an impossible name
                return None
            raise
        return None

    def link_by_index(self, index: int) -> Link | None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        try:
            for mtype, data, start, end in self._request(RTM_GETLINK, 0, body):
                if mtype == RTM_NEWLINK:
                    return self._parse_link(data, start, end)
        except NetlinkError as exc:
            if exc.errno == 19:
                return None
            raise
        return None

    @staticmethod
    def _parse_link(data, start, end):
        _, _, index, flags, _ = _IFINFOMSG.unpack_from(data, start)
        name, mac = "", ""
        for kind, value in _attrs(data, start + _IFINFOMSG.size, end):
            if kind == IFLA_IFNAME:
                name = value.rstrip(b"\0").decode()
            elif kind == IFLA_ADDRESS:
                mac = ":".join(f"{b:02x}" for b in value)
        return Link(index, name, flags, mac)

    def add_address(self, index: int, address: str, prefixlen: int, *, label: str | None = None,
                    broadcast: str | None = None, nodad: bool = False,
                    preferred_lft: int | None = None) -> None:
        """Add address/prefixlen to link ``index`` (EEXIST if it is there)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        raw = socket.inet_pton(family, address)
        body = _IFADDRMSG.pack(family, prefixlen, 0, 0, index)
        body += _rtattr(IFA_LOCAL, raw) + _rtattr(IFA_ADDRESS, raw)
        if broadcast:
            body += _rtattr(IFA_BROADCAST, socket.inet_aton(broadcast))
        if label:
            body += _rtattr(IFA_LABEL, label.encode() + b"\0")
        if nodad:
            body += _rtattr(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
        if preferred_lft is not None:
            body += _rtattr(IFA_CACHEINFO, struct.pack("=IIII", preferred_lft, INFINITY_LIFE, 0, 0))
        self._change(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_address(self, index: int, address: str, prefixlen: int) -> None:
        """Delete exactly address/prefixlen from link ``index``. IFA_ADDRESS is what
        makes an IPv4 delete match the prefix length: with IFA_LOCAL alone the kernel
        deletes the first entry of the address on the link, whatever its prefix."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        raw = socket.inet_pton(family, address)
        body = (_IFADDRMSG.pack(family, prefixlen, 0, 0, index) + _rtattr(IFA_LOCAL, raw)
                + _rtattr(IFA_ADDRESS, raw))
        self._change(RTM_DELADDR, 0, body)

    def _change(self, kind, flags, body):
        for _ in self._request(kind, flags | NLM_F_ACK, body):
            pass

    def addresses(self, family: int) -> list[Addr]:
        """Every address of ``family`` (socket.AF_INET or AF_INET6)."""
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        found = []
        for mtype, data, start, end in self._request(RTM_GETADDR, NLM_F_DUMP, body):
            if mtype != RTM_NEWADDR:
                continue
            fam, prefixlen, flags, _, index = _IFADDRMSG.unpack_from(data, start)
            address = local = label = created = None
            for kind, value in _attrs(data, start + _IFADDRMSG.size, end):
                if kind == IFA_ADDRESS:
                    address = value
                elif kind == IFA_LOCAL:
                    local = value
                elif kind == IFA_LABEL:
                    label = value.rstrip(b"\0").decode()
                elif kind == IFA_FLAGS:
                    (flags,) = struct.unpack("=I", value[:4])
                elif kind == IFA_CACHEINFO and len(value) >= 16:
                    created = struct.unpack_from("=I", value, 8)[0]
            raw = local or address
            if raw is None:
                continue
            found.append(Addr(fam, socket.inet_ntop(fam, raw), prefixlen, index, label, flags,
                              created))
        return found

    def find_address(self, address: str, family: int) -> list[Addr]:
        """The entries holding exactly ``address`` (text, canonical form)."""
        return [a for a in self.addresses(family) if a.address == address]


# -- routes (pyroute2, imported on first use) -----------------------------------

RT_TABLE_MAIN = 254
RTN_UNICAST = 1


def connected_routes(address: str) -> list:
    """Main-table unicast routes (not default) that contain address.

    Returns (prefixlen, interface index, metric) tuples, longest prefix
    first: how findif chooses the interface for a VIP. The one place that
    imports pyroute2 (about 100 ms): never on a monitor's path.
    """
    import ipaddress

    from pyroute2 import IPRoute
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    found = []
    with IPRoute() as ipr:
        for route in ipr.route("dump", family=family):
            if route.get("dst_len", 0) == 0 or route.get("type") != RTN_UNICAST:
                continue
            if (route.get_attr("RTA_TABLE") or route.get("table")) != RT_TABLE_MAIN:
                continue
            dst, oif = route.get_attr("RTA_DST"), route.get_attr("RTA_OIF")
            if dst is None or oif is None:
                continue
            if ip in ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False):
                found.append((route["dst_len"], oif, route.get_attr("RTA_PRIORITY") or 0))
    return sorted(found, key=lambda r: (-r[0], r[2]))


# -- listening TCP sockets (sock_diag) ----------------------------------------------

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
TCP_LISTEN, IPPROTO_TCP = 10, 6


def listening_inodes(port: int) -> set:
    """Inodes of the TCP sockets listening on port in this network namespace.

    One sock_diag dump of listening sockets per address family (reading
    /proc/net/tcp6 walks every connection). Raises OSError when sock_diag is
    not available; the caller decides what to fall back to.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        sock.settimeout(2.0)
        return {inode for family in (socket.AF_INET, socket.AF_INET6)
                for inode in _diag_listeners(sock, family, port)}
    finally:
        sock.close()


def _diag_listeners(sock, family, port):
    # inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed sockid
    request = struct.pack("=BBBxI", family, IPPROTO_TCP, 0, 1 << TCP_LISTEN) + bytes(48)
    sock.sendall(_NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY,
                                NLM_F_REQUEST | NLM_F_DUMP, family, 0) + request)
    while True:
        data, offset = sock.recv(65536), 0
        if not data:
            return
        while offset + _NLMSGHDR.size <= len(data):
            length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
                raise NetlinkError(-error or 71, f"sock_diag refused the dump of family "
                                   f"{family}: {os.strerror(-error or 71)}")
            message = data[offset + _NLMSGHDR.size:offset + length]
            if int.from_bytes(message[4:6], "big") == port:  # inet_diag_msg: sport
                yield int.from_bytes(message[68:72], "little")  # idiag_inode
            offset += (length + 3) & ~3
