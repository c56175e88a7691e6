"""Route look-ups through pyroute2's IPRoute.

A small wrapper so callers speak in exact terms (a prefix length, an
interface index, a metric) and never match substrings of ``ip route``
output. pyroute2 is imported on first use: only a start or validate-all
whose VIP has no ``nic`` or ``cidr_netmask`` pays for it.
"""

import ipaddress
import socket

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
