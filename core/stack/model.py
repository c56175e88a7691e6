"""The stack's model: its typed, frozen objects and the defaults of the stack file.

A stack file is read into these objects (:mod:`hapack.stack.tables`) and
every consumer shares them: ``hapack render`` (CIB, crm shell,
corosync.conf, Heartbeat files), hamon and the demo. Defaults are written
here, once; the renderers never choose a default of their own. Operation
timings are the exception that proves it: a hapack agent's defaults are the
action timeouts it declares itself (:mod:`hapack.stack.agentcheck`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from hapack.agents import PROVIDER
from hapack.stack.durations import format_duration

# -- defaults: the only place they are written ---------------------------------

#: [cluster]
DEFAULT_STICKINESS = 100
DEFAULT_MIGRATION_THRESHOLD = 3
DEFAULT_FAILURE_TIMEOUT_MS = 10 * 60_000
#: The location score that makes the primary the preferred holder of the
#: stateful side on a cold start. Stickiness must beat it, or a recovered
#: primary takes the stack back.
PRIMARY_PREFERENCE = 50
#: [fencing]
DEFAULT_FENCE_ACTION = "off"
DEFAULT_PRIORITY_FENCING_DELAY_MS = 10_000
DEFAULT_FENCING_TIMEOUT_MS = 60_000
#: The resource priority of the stateful side (partition and group) that
#: priority-fencing-delay weighs.
STATEFUL_PRIORITY = 10
#: [corosync]
DEFAULT_TOKEN_MS = 3000
DEFAULT_CRYPTO_CIPHER = "aes256"
DEFAULT_CRYPTO_HASH = "sha256"
DEFAULT_COROSYNC_LOGFILE = "/var/log/corosync/corosync.log"
#: [heartbeat]
DEFAULT_HB_KEEPALIVE_MS = 1000
DEFAULT_HB_DEADTIME_MS = 10_000
DEFAULT_HB_WARNTIME_MS = 5000
DEFAULT_HB_INITDEAD_MS = 30_000
DEFAULT_HB_UDPPORT = 694
DEFAULT_HB_LOGFILE = "/var/log/ha-log"
#: [nodes.bmc]
BMC_DRIVERS = ("ipmi", "redfish")
DEFAULT_BMC_PORT = {"ipmi": 623, "redfish": 443}
FENCE_AGENT_NAME = "fence_bmc"
FENCE_AGENT = f"stonith:{FENCE_AGENT_NAME}"
#: The [*.ops] keys each kind of resource takes.
OPS_KEYS = {
    "vip": ("start_timeout", "stop_timeout", "monitor_interval", "monitor_timeout"),
    "layer": ("start_timeout", "stop_timeout", "monitor_interval", "monitor_timeout"),
    "partition": ("start_timeout", "stop_timeout", "monitor_interval", "monitor_timeout",
                  "promote_timeout", "demote_timeout", "notify_timeout",
                  "promoted_monitor_interval"),
}
#: Operation defaults (ms) of a layer whose agent is not hapack's (ocf:heartbeat:pgsql):
#: its declaration is not at hand. A hapack agent's defaults are its own declared ones.
FOREIGN_AGENT_OPS = dict(start_timeout=60_000, stop_timeout=120_000,
                         monitor_interval=10_000, monitor_timeout=30_000)
#: The fence devices' monitor (fence_bmc declares no action timeouts).
FENCE_OPS = dict(monitor_interval=60_000, monitor_timeout=20_000)
KINDS = ("stateless", "stateful")
PARTITION_BACKENDS = ("drbd", "shared")
FENCE_ACTIONS = ("off", "reboot")
CRYPTO_CIPHERS = ("none", "aes128", "aes192", "aes256")
CRYPTO_HASHES = ("none", "md5", "sha1", "sha256", "sha384", "sha512")

#: Resource ids the renderers use themselves; a layer may not take them.
RESERVED_IDS = ("vip", "partition", "cl-partition", "g-stateful", "g-stateless",
                "cl-stateless")


def _frozen_map(mapping=()) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Ops:
    """Operation timings of one resource, in milliseconds (None: not used)."""

    start_timeout: int | None = None
    stop_timeout: int | None = None
    monitor_interval: int | None = None
    monitor_timeout: int | None = None
    promote_timeout: int | None = None
    demote_timeout: int | None = None
    notify_timeout: int | None = None
    promoted_monitor_interval: int | None = None


@dataclass(frozen=True)
class Bmc:
    """How to cut one node's power: its BMC and the fence_bmc parameters."""

    driver: str
    address: str
    port: int
    username: str | None
    password_file: str | None
    password: str | None = field(repr=False)
    lanplus: bool
    cipher: int | None
    params: Mapping[str, str]

    def agent_params(self, node: str, delay_ms: int = 0) -> dict[str, str]:
        """The fence_bmc instance parameters for the device that fences ``node``."""
        out = {"driver": self.driver, "ip": self.address, "ipport": str(self.port)}
        if self.username is not None:
            out["username"] = self.username
        if self.password_file is not None:
            out["password_file"] = self.password_file
        if self.password is not None:
            out["password"] = self.password
        if self.driver == "ipmi":
            out["lanplus"] = "1" if self.lanplus else "0"
            if self.cipher is not None:
                out["cipher"] = str(self.cipher)
        out["hostname"] = node
        out.update(self.params)
        out["pcmk_host_list"] = node
        if delay_ms:
            out["pcmk_delay_base"] = format_duration(delay_ms)
        return out


@dataclass(frozen=True)
class Node:
    name: str
    nodeid: int
    bmc: Bmc
    fence_delay: int          # ms; Pacemaker waits this long before fencing this node
    addresses: Mapping[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]

    def address(self, link: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """This node's address (an ip_interface, with prefix) on ``link``."""
        return self.addresses[link]


@dataclass(frozen=True)
class Link:
    """A heartbeat link: corosync knet link ``number``, Heartbeat ucast pair."""

    name: str
    number: int
    interface: str
    addresses: Mapping[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return next(iter(self.addresses.values())).network


@dataclass(frozen=True)
class Vip:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    link: str
    interface: str
    prefixlen: int
    start_after: str | None    # None: first, right after the promotion (the patent's order)
    params: Mapping[str, str]
    ops: Ops
    agent: str = f"ocf:{PROVIDER}:vip"

    def agent_params(self) -> dict[str, str]:
        out = {"ip": str(self.address), "cidr_netmask": str(self.prefixlen), "nic": self.interface}
        out.update(self.params)
        return out


@dataclass(frozen=True)
class Partition:
    backend: str
    device: str
    directory: str
    fstype: str
    options: str | None
    drbd_resource: str | None
    params: Mapping[str, str]
    ops: Ops
    agent: str = f"ocf:{PROVIDER}:partition"
    #: where a verified fence is recorded for the promotion gate ('' disables it): the
    #: partition's fence_confirmed_file parameter, or the agent's declared default
    fence_confirmed_file: str = ""

    def agent_params(self) -> dict[str, str]:
        out = {"backend": self.backend, "device": self.device,
               "directory": self.directory, "fstype": self.fstype}
        if self.options is not None:
            out["options"] = self.options
        if self.drbd_resource is not None:
            out["drbd_resource"] = self.drbd_resource
        out.update(self.params)
        return out

    def contains(self, path: str) -> bool:
        """True if ``path`` is strictly below the mount point."""
        return path.startswith(self.directory.rstrip("/") + "/")


@dataclass(frozen=True)
class Layer:
    name: str
    agent: str                 # full spec, e.g. ocf:hapack:postgresql
    kind: str                  # stateless | stateful
    data_dir: str | None       # stateful only; below the partition's directory
    data_param: str | None     # the agent parameter that receives data_dir, if any
    params: Mapping[str, str]
    ops: Ops

    @property
    def stateful(self) -> bool:
        return self.kind == "stateful"

    @property
    def agent_type(self) -> str:
        return self.agent.split(":")[2]

    @property
    def agent_provider(self) -> str:
        return self.agent.split(":")[1]

    def agent_params(self) -> dict[str, str]:
        out = {}
        if self.data_param is not None and self.data_dir is not None:
            out[self.data_param] = self.data_dir
        out.update(self.params)
        return out


@dataclass(frozen=True)
class Cluster:
    name: str
    stickiness: int
    migration_threshold: int
    failure_timeout: int       # ms; 0 = failures never expire


@dataclass(frozen=True)
class Fencing:
    action: str                # off | reboot
    priority_fencing_delay: int  # ms; 0 = off
    timeout: int               # ms


@dataclass(frozen=True)
class Corosync:
    token: int                 # ms
    crypto_cipher: str
    crypto_hash: str
    syslog: bool
    logfile: str | None


@dataclass(frozen=True)
class Heartbeat:
    keepalive: int             # ms
    deadtime: int
    warntime: int
    initdead: int
    udpport: int
    logfile: str | None


@dataclass(frozen=True)
class Stack:
    file: str
    cluster: Cluster
    nodes: tuple[Node, ...]    # nodes[0] is the primary
    links: tuple[Link, ...]
    vip: Vip
    partition: Partition
    layers: tuple[Layer, ...]  # in declared order
    fencing: Fencing
    corosync: Corosync
    heartbeat: Heartbeat
    hamon: Mapping[str, Any]   # the [hamon] table, read by hamon, not checked here

    @property
    def primary(self) -> Node:
        return self.nodes[0]

    @property
    def secondary(self) -> Node:
        return self.nodes[1]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def peer(self, name: str) -> Node:
        """The other node: the one that fences ``name``."""
        self.node(name)
        return next(n for n in self.nodes if n.name != name)

    @property
    def stateless(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if not layer.stateful)

    @property
    def stateful(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.stateful)

    def stateful_order(self) -> tuple[str, ...]:
        """Start order after the promotion: the VIP and the stateful layers."""
        names = [layer.name for layer in self.stateful]
        at = 0 if self.vip.start_after is None else names.index(self.vip.start_after) + 1
        return tuple(names[:at] + ["vip"] + names[at:])


