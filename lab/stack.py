"""The cluster stack inside the nodes: corosync.conf, authkey, seed CIB, crm_mon.

The lab writes its own corosync.conf (knet, two links: ring0 on eth0 / the
service LAN, ring1 on eth1 / the heartbeat LAN; aes256/sha256; the lab's token
and the stack file's two-node consensus for it; ``two_node``,
or with a quorum device (``Lab(qdevice=True)``) its ``device`` section: the
arbiter's corosync-qnetd, ffsplit, and a heuristic that pings the client, the
service LAN's stand-in for a gateway) unless the caller hands it one. Pacemaker starts on a seed CIB that holds
only cluster options, by default ``dc-deadtime=2s`` so that a cold start does
not wait the default 20 s for a DC that is not there.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from hapack.stack.model import default_consensus

DEFAULT_TOKEN_MS = 1000
DEFAULT_CLUSTER_OPTIONS = {"dc-deadtime": "2s"}
AUTHKEY_BYTES = 256


@dataclass(frozen=True)
class QuorumDevice:
    """The lab's quorum device: corosync-qnetd at ``host``; each node's heuristic pings
    ``ping`` (None: no heuristics, ties go to the lowest node id)."""

    host: str
    ping: str | None = None
    algorithm: str = "ffsplit"

    def section(self) -> str:
        heuristics = ("        heuristics {\n"
                      "            mode: sync\n"
                      f"            exec_ping: /bin/ping -q -n -c 1 -W 1 {self.ping}\n"
                      "        }\n") if self.ping else ""
        return ("    device {\n"
                "        model: net\n"
                "        votes: 1\n"
                "        net {\n"
                f"            host: {self.host}\n"
                f"            algorithm: {self.algorithm}\n"
                "            tie_breaker: lowest\n"
                "            tls: on\n"
                "        }\n"
                f"{heuristics}"
                "    }\n")


def render_corosync_conf(cluster_name: str, nodes: dict[str, tuple[str, str]],
                         token_ms: int = DEFAULT_TOKEN_MS,
                         qdevice: QuorumDevice | None = None,
                         consensus_ms: int | None = None) -> str:
    """corosync.conf text; ``nodes`` maps name -> (ring0 address, ring1 address).
    ``consensus_ms`` None: the stack file's two-node default for ``token_ms``
    (:func:`hapack.stack.model.default_consensus`), so the lab runs what hapack renders."""
    consensus = default_consensus(token_ms) if consensus_ms is None else consensus_ms
    node_blocks = "".join(
        f"    node {{\n"
        f"        name: {name}\n"
        f"        nodeid: {nodeid}\n"
        f"        ring0_addr: {ring0}\n"
        f"        ring1_addr: {ring1}\n"
        f"    }}\n"
        for nodeid, (name, (ring0, ring1)) in enumerate(sorted(nodes.items()), start=1)
    )
    quorum = qdevice.section() if qdevice else "    two_node: 1\n"
    return (
        "# Written by hapack.lab\n"
        "totem {\n"
        "    version: 2\n"
        f"    cluster_name: {cluster_name}\n"
        "    transport: knet\n"
        f"    token: {int(token_ms)}\n"
        f"    consensus: {int(consensus)}\n"
        "    crypto_cipher: aes256\n"
        "    crypto_hash: sha256\n"
        "}\n"
        "nodelist {\n"
        f"{node_blocks}"
        "}\n"
        "quorum {\n"
        "    provider: corosync_votequorum\n"
        f"{quorum}"
        "}\n"
        "logging {\n"
        "    to_logfile: yes\n"
        "    logfile: /var/log/cluster/corosync.log\n"
        "    to_syslog: no\n"
        "    to_stderr: no\n"
        "    timestamp: hires\n"
        "}\n"
    )


def write_authkey(path: Path, key: bytes | None = None) -> bytes:
    """Write a corosync authkey (root, 0400) and return it."""
    key = key if key is not None else os.urandom(AUTHKEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def seed_cib(options: dict[str, str]) -> bytes:
    """An empty CIB (from ``cibadmin --empty``) carrying ``options`` as cluster options."""
    empty = subprocess.run(["cibadmin", "--empty"], capture_output=True, check=True, timeout=30).stdout
    return cib_with_options(empty, options)


def cib_with_options(cib_xml: bytes, options: dict[str, str]) -> bytes:
    root = etree.fromstring(cib_xml)
    crm_config = root.find("configuration/crm_config")
    props = etree.SubElement(crm_config, "cluster_property_set", id="cib-bootstrap-options")
    for name, value in options.items():
        etree.SubElement(props, "nvpair", id=f"cib-bootstrap-options-{name}", name=name, value=str(value))
    return etree.tostring(root, pretty_print=True)


@dataclass(frozen=True)
class ClusterView:
    """One node's view of the cluster, from ``crm_mon -1 --output-as=xml``."""

    dc: str | None
    quorum: bool
    online: frozenset[str] = field(default_factory=frozenset)
    offline: frozenset[str] = field(default_factory=frozenset)
    unclean: frozenset[str] = field(default_factory=frozenset)

    def all_online(self, nodes) -> bool:
        """True if every node in ``nodes`` is online, with a DC and quorum."""
        return bool(self.dc) and self.quorum and set(nodes) <= self.online


def parse_crm_mon(xml: str | bytes) -> ClusterView:
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    dc = root.find("summary/current_dc")
    present = dc is not None and dc.get("present") == "true"
    online, offline, unclean = set(), set(), set()
    for node in root.iterfind("nodes/node"):
        name = node.get("name")
        (online if node.get("online") == "true" else offline).add(name)
        if node.get("unclean") == "true":
            unclean.add(name)
    return ClusterView(
        dc=dc.get("name") if present else None,
        quorum=present and dc.get("with_quorum") == "true",
        online=frozenset(online), offline=frozenset(offline), unclean=frozenset(unclean),
    )


def fence_device_xml(lab, node: str, delay: str | None = None, host_list: bool = True,
                     monitor: str = "10s") -> str:
    """The CIB primitive of the ``stonith:fence_bmc`` device that fences ``node``
    through its lab BMC (``delay``: pcmk_delay_base)."""
    bmc = lab.bmc(node)
    rid = f"fence-{node}"
    params = {"ip": bmc.address, "ipport": bmc.port, "username": bmc.username,
              "password_file": bmc.password_file, "cipher": bmc.cipher, "hostname": node}
    if host_list:
        params["pcmk_host_list"] = node
    if delay:
        params["pcmk_delay_base"] = delay
    primitive = etree.Element("primitive", id=rid, **{"class": "stonith", "type": "fence_bmc"})
    attrs = etree.SubElement(primitive, "instance_attributes", id=f"{rid}-params")
    for name, value in params.items():
        etree.SubElement(attrs, "nvpair", id=f"{rid}-{name}", name=name, value=str(value))
    ops = etree.SubElement(primitive, "operations")
    etree.SubElement(ops, "op", id=f"{rid}-monitor", name="monitor", interval=monitor,
                     timeout="20s")
    return etree.tostring(primitive, encoding="unicode")
