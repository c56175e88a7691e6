"""Address changes and route look-ups through pyroute2's IPRoute.

A small wrapper so callers speak in exact terms (an interface index, an
address, a prefix length) and never match substrings of ``ip`` output.
pyroute2 is imported on first use: only the actions that change something
pay for it.
"""

import ipaddress
import socket

from hapack.netlink import IFA_F_NODAD

RT_TABLE_MAIN = 254
RTN_UNICAST = 1


class RouteLookupError(LookupError):
    pass


def _iproute():
    from pyroute2 import IPRoute
    return IPRoute()


class IPRoute:
    """``with IPRoute() as ipr:`` around the operations of one action."""

    def __enter__(self):
        self.ipr = _iproute()
        return self

    def __exit__(self, *exc):
        self.ipr.close()

    def add_address(self, index, address, prefixlen, *, label=None, preferred_lft=None):
        """Add address/prefixlen to the link; IPv6 skips the kernel's DAD
        (the caller probed for duplicates itself)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        kwargs = {"index": index, "address": address, "prefixlen": prefixlen, "family": family}
        if family == socket.AF_INET:
            kwargs["local"] = address
            if prefixlen < 31:
                network = ipaddress.IPv4Network(f"{address}/{prefixlen}", strict=False)
                kwargs["broadcast"] = str(network.broadcast_address)
            if label:
                kwargs["label"] = label
        else:
            kwargs["flags"] = IFA_F_NODAD
            if preferred_lft is not None:
                kwargs["IFA_CACHEINFO"] = {"ifa_preferred": preferred_lft, "ifa_valid": 0xFFFFFFFF,
                                           "cstamp": 0, "tstamp": 0}
        self.ipr.addr("add", **kwargs)

    def delete_address(self, index, address, prefixlen):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.ipr.addr("del", index=index, address=address, prefixlen=prefixlen, family=family)

    def connected_routes(self, address):
        """Main-table unicast routes (not default) that contain address.

        Returns (prefixlen, interface index, metric) tuples, longest prefix
        first: how findif chooses the interface for a VIP.
        """
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        found = []
        for route in self.ipr.route("dump", family=family):
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
