"""Names, addresses and MACs of one lab: pure functions, no I/O.

Every object a lab creates carries its prefix ``hl<name>`` (interfaces,
limited to 15 characters by the kernel) or ``hapack-lab-<name>`` (cgroups),
so two labs, or another program's simulators, never share a name. Each lab takes one *block* of three /24 subnets out of the
benchmarking range 198.18.0.0/15 (RFC 2544): service LAN, heartbeat LAN and
BMC network. :func:`allocate_block` picks a block that overlaps nothing in
use on the host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Iterable

BENCH_NET = IPv4Network("198.18.0.0/15")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
IFNAMSIZ = 15
NODES = ("node1", "node2")
LINKS = ("lan", "hb", "bmc")
# Interface names inside a node, fixed like the NICs of a real server.
NODE_IFACES = {"lan": "eth0", "hb": "eth1", "bmc": "eth2"}
CLIENT_IFACE = "eth0"
SUBNETS_PER_BLOCK = len(LINKS)
BLOCKS = (BENCH_NET.num_addresses // 256) // SUBNETS_PER_BLOCK  # 170
# Host parts inside each /24.
HOST_BMC_GATEWAY = 1        # the host's own address on the BMC network
NODE_HOST_BASE = 10         # node1 = .11, node2 = .12
BMC_HOST_BASE = 20          # BMC of node1 = .21, node2 = .22
PDU_HOST_BASE = 30          # the PDU outlet of node1 = .31, node2 = .32 (Lab(pdu=True))
CLIENT_HOST = 50
ARBITER_HOST = 30           # the quorum device's arbiter (corosync-qnetd), on the BMC network
QNETD_PORT = 5403
VIP_RANGE = range(100, 200)
# Only routes at least this specific count as "in use"; a default route
# (or any summary route wider than the whole range) is not a collision.
MIN_CONFLICT_PREFIXLEN = BENCH_NET.prefixlen


class NamingError(ValueError):
    """A lab name or a requested resource does not fit the naming scheme."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid lab name (1-6 of [a-z0-9], letter first)."""
    if not NAME_RE.match(name):
        raise NamingError(
            f"lab name {name!r} is not valid: use 1 to 6 characters [a-z0-9], starting with a letter"
        )
    return name


def node_index(node: str) -> int:
    """1 for ``node1``, 2 for ``node2``."""
    if node not in NODES:
        raise NamingError(f"unknown node {node!r}: expected one of {', '.join(NODES)}")
    return NODES.index(node) + 1


def check_link(link: str, allow_all: bool = False) -> tuple[str, ...]:
    """Expand a link name to the tuple of links it stands for."""
    if allow_all and link == "all":
        return LINKS
    if link not in LINKS:
        choices = LINKS + (("all",) if allow_all else ())
        raise NamingError(f"unknown link {link!r}: expected one of {', '.join(choices)}")
    return (link,)


def block_subnets(block: int) -> dict[str, IPv4Network]:
    """The three /24 subnets (lan, hb, bmc) of allocation block ``block``."""
    if not 0 <= block < BLOCKS:
        raise NamingError(f"block {block} outside 0..{BLOCKS - 1}")
    base = int(BENCH_NET.network_address) + block * SUBNETS_PER_BLOCK * 256
    return {link: IPv4Network((base + i * 256, 24)) for i, link in enumerate(LINKS)}


def preferred_block(name: str) -> int:
    """A stable starting block for ``name``, so a lab tends to keep its subnets."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") % BLOCKS


def conflicts(candidate: IPv4Network, used: Iterable[IPv4Network]) -> bool:
    """True if ``candidate`` overlaps a network in ``used`` that is not a wide summary."""
    return any(net.prefixlen >= MIN_CONFLICT_PREFIXLEN and net.overlaps(candidate) for net in used)


def allocate_block(name: str, used: Iterable[IPv4Network]) -> int:
    """The first block, probing from :func:`preferred_block`, free of ``used``."""
    used = [net for net in used if net.version == 4]
    start = preferred_block(name)
    for step in range(BLOCKS):
        block = (start + step) % BLOCKS
        if not any(conflicts(net, used) for net in block_subnets(block).values()):
            return block
    raise NamingError("no free block of three /24 subnets left in 198.18.0.0/15")


def mac(name: str, link_octet: int, host_octet: int) -> str:
    """A fixed, locally administered unicast MAC: 02:<3 bytes of the lab>:<link>:<host>."""
    digest = hashlib.sha256(name.encode()).digest()
    octets = [0x02, digest[0], digest[1], digest[2], link_octet, host_octet]
    return ":".join(f"{o:02x}" for o in octets)


@dataclass(frozen=True)
class Plan:
    """Every name, address and MAC of one lab, derived from its name and block."""

    name: str
    block: int

    @property
    def prefix(self) -> str:
        """Interface prefix, e.g. ``hlab12`` for lab ``ab12``."""
        return f"hl{self.name}"

    @property
    def long_prefix(self) -> str:
        """Prefix of the cgroups."""
        return f"hapack-lab-{self.name}"

    @property
    def subnets(self) -> dict[str, IPv4Network]:
        return block_subnets(self.block)

    @property
    def cluster_name(self) -> str:
        return self.prefix

    def bridge(self, link: str) -> str:
        check_link(link)
        return self._ifname(f"{self.prefix}-{link}")

    def bridge_mac(self, link: str) -> str:
        return mac(self.name, LINKS.index(link), 0xFE)

    def veth(self, node: str, link: str) -> str:
        """Host-side end of ``node``'s cable on ``link`` (a port of the bridge)."""
        check_link(link)
        return self._ifname(f"{self.prefix}-{node_index(node)}{link}")

    def node_mac(self, node: str, link: str) -> str:
        return mac(self.name, LINKS.index(link), node_index(node))

    def veth_mac(self, node: str, link: str) -> str:
        return mac(self.name, LINKS.index(link), 0x80 + node_index(node))

    def addr(self, node: str, link: str) -> IPv4Address:
        check_link(link)
        return self.subnets[link][NODE_HOST_BASE + node_index(node)]

    def bmc_addr(self, node: str) -> IPv4Address:
        return self.subnets["bmc"][BMC_HOST_BASE + node_index(node)]

    def pdu_addr(self, node: str) -> IPv4Address:
        return self.subnets["bmc"][PDU_HOST_BASE + node_index(node)]

    @property
    def host_bmc_addr(self) -> IPv4Address:
        return self.subnets["bmc"][HOST_BMC_GATEWAY]

    @property
    def client_veth(self) -> str:
        return self._ifname(f"{self.prefix}-clan")

    @property
    def client_mac(self) -> str:
        return mac(self.name, LINKS.index("lan"), CLIENT_HOST)

    @property
    def client_veth_mac(self) -> str:
        return mac(self.name, LINKS.index("lan"), 0x80 + CLIENT_HOST)

    @property
    def client_addr(self) -> IPv4Address:
        return self.subnets["lan"][CLIENT_HOST]

    @property
    def arbiter_veth(self) -> str:
        return self._ifname(f"{self.prefix}-arb")

    @property
    def arbiter_mac(self) -> str:
        return mac(self.name, LINKS.index("bmc"), ARBITER_HOST)

    @property
    def arbiter_veth_mac(self) -> str:
        return mac(self.name, LINKS.index("bmc"), 0x80 + ARBITER_HOST)

    @property
    def arbiter_addr(self) -> IPv4Address:
        """The arbiter's address: on the BMC (management) network, which a cut of a
        node's service and heartbeat links leaves alone, as a real management LAN."""
        return self.subnets["bmc"][ARBITER_HOST]

    def vip_candidates(self) -> list[IPv4Address]:
        """Service-LAN addresses no node or client uses, for VIPs."""
        return [self.subnets["lan"][i] for i in VIP_RANGE]

    def cgroup(self, node: str) -> str:
        node_index(node)
        return f"{self.long_prefix}-{node}"

    @property
    def interfaces(self) -> list[str]:
        """Every root-namespace interface name the lab may create."""
        names = [self.bridge(link) for link in LINKS]
        names += [self.veth(node, link) for node in NODES for link in LINKS]
        return names + [self.client_veth, self.arbiter_veth]

    @staticmethod
    def _ifname(name: str) -> str:
        if len(name) > IFNAMSIZ:
            raise NamingError(f"interface name {name!r} longer than {IFNAMSIZ} characters")
        return name


def used_networks_from_ip_json(addrs: list[dict], routes: list[dict]) -> list[IPv4Network]:
    """Networks in use according to ``ip -j -4 addr`` and ``ip -j -4 route show table all``."""
    nets: list[IPv4Network] = []
    for link in addrs:
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                nets.append(IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("", "default") or ":" in dst:
            continue
        try:
            nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
        except ValueError:
            continue
    return [net for net in nets if net.version == 4]
