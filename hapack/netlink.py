"""Read-only rtnetlink queries on the standard library.

The VIP monitor runs every few seconds for every VIP on every node, each
time in a fresh interpreter; importing pyroute2 costs about 100 ms, so the
monitor's two questions (which addresses are on which interface, and is that
link up) are answered here with one netlink socket and two requests. Changes
(adding and deleting addresses, route look-ups) go through pyroute2 in
:mod:`hapack.iproute`.
"""

import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300

IFLA_ADDRESS, IFLA_IFNAME, IFLA_OPERSTATE = 1, 3, 16
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS = 1, 2, 3, 8

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
    def up(self):
        """Administratively up with carrier (not DOWN or LOWERLAYERDOWN)."""
        return bool(self.flags & IFF_UP) and bool(self.flags & (IFF_LOWER_UP | IFF_RUNNING))


class Addr:
    __slots__ = ("family", "address", "prefixlen", "index", "label", "flags")

    def __init__(self, family, address, prefixlen, index, label, flags):
        self.family, self.address, self.prefixlen = family, address, prefixlen
        self.index, self.label, self.flags = index, label, flags

    @property
    def tentative(self):
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dadfailed(self):
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

    def close(self):
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

    def link(self, name):
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

    def link_by_index(self, index):
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

    def addresses(self, family):
        """Every address of ``family`` (socket.AF_INET or AF_INET6)."""
        body = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        found = []
        for mtype, data, start, end in self._request(RTM_GETADDR, NLM_F_DUMP, body):
            if mtype != RTM_NEWADDR:
                continue
            fam, prefixlen, flags, _, index = _IFADDRMSG.unpack_from(data, start)
            address = local = label = None
            for kind, value in _attrs(data, start + _IFADDRMSG.size, end):
                if kind == IFA_ADDRESS:
                    address = value
                elif kind == IFA_LOCAL:
                    local = value
                elif kind == IFA_LABEL:
                    label = value.rstrip(b"\0").decode()
                elif kind == IFA_FLAGS:
                    (flags,) = struct.unpack("=I", value[:4])
            raw = local or address
            if raw is None:
                continue
            found.append(Addr(fam, socket.inet_ntop(fam, raw), prefixlen, index, label, flags))
        return found

    def find_address(self, address, family):
        """The entries holding exactly ``address`` (text, canonical form)."""
        return [a for a in self.addresses(family) if a.address == address]
