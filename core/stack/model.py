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
import posixpath
import shlex
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
#: The token (corosync.conf(5): "the time spent detecting a failure") and, for this
#: two-node ring, the consensus as a percentage of it. corosync.conf(5) (3.1.7):
#: "For two node clusters, a consensus larger than the join timeout but less than
#: token is safe"; corosync's own default is 1.2 x token. A survivor declares its
#: peer lost after both (token expired, then consensus alone): bench/bench_token.py
#: measured the pairs (docs/stack-file.md).
DEFAULT_TOKEN_MS = 1000
DEFAULT_CONSENSUS_PERCENT = 80
#: corosync's join timeout (the stack file leaves it at corosync's default): corosync
#: refuses a consensus below it (exec/totemconfig.c), and corosync.conf(5) calls a
#: two-node consensus safe only when it is larger.
COROSYNC_JOIN_MS = 50
DEFAULT_CRYPTO_CIPHER = "aes256"
DEFAULT_CRYPTO_HASH = "sha256"
DEFAULT_COROSYNC_LOGFILE = "/var/log/corosync/corosync.log"
#: [quorum]: corosync-qdevice's model net, its defaults (corosync-qdevice(8))
QNETD_PORT = 5403
QDEVICE_ALGORITHMS = ("ffsplit", "lms")
DEFAULT_QDEVICE_ALGORITHM = "ffsplit"
QDEVICE_TIE_BREAKERS = ("lowest", "highest")   # or a node's name
DEFAULT_QDEVICE_TIE_BREAKER = "lowest"         # node 1: the primary
QDEVICE_TLS = ("on", "off", "required")
DEFAULT_QDEVICE_TLS = "on"
HEURISTICS_MODES = ("sync", "on")
DEFAULT_HEURISTICS_MODE = "sync"
#: A heuristics ping: one echo, one second to answer (the command qdevice runs as is:
#: an absolute path, no shell, since heuristics_use_execvp is off by default).
HEURISTICS_PING = "/bin/ping -q -n -c 1 -W 1 {address}"
#: priority-fencing-delay when [quorum] is set: the quorum device settles a split
#: (crmsh sets it to 0 as soon as a qdevice is configured).
QUORUM_PRIORITY_FENCING_DELAY_MS = 0
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
#: [[nodes.fence]]: where fence agents are installed (Pacemaker and pcs look there too),
#: the highest fencing-topology level Pacemaker takes, and the command a password_file
#: becomes for a stock agent (fence-agents read a password only inline or from a script).
FENCE_AGENT_DIR = "/usr/sbin"
MAX_FENCE_LEVEL = 9
PASSWORD_FILE_COMMAND = "/bin/cat"
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

#: [alerts]
ALERT_SINKS = ("webhook", "syslog", "command")
ALERT_AGENT_NAME = "hapack-alert"             # /usr/sbin/hapack-alert (hapack.agents.SBIN_TOOLS)
ALERT_AGENT = f"/usr/sbin/{ALERT_AGENT_NAME}"
ALERT_ID = "hapack"                           # the <alert> id; recipients are hapack-recipient-N
DEFAULT_ALERT_TIMEOUT_MS = 30_000             # Pacemaker's own default for an alert agent
#: What the agent keeps below Pacemaker's alert timeout: its own deadline is timeout - margin.
ALERT_MARGIN_MS = 2000
DEFAULT_WEBHOOK_TIMEOUT_MS = 5000             # one HTTP attempt
DEFAULT_WEBHOOK_RETRIES = 2                   # attempts after the first
WEBHOOK_BACKOFF_MS = 500                      # wait before retry n: n x this
DEFAULT_COMMAND_TIMEOUT_MS = 10_000
DEFAULT_SYSLOG_SOCKET = "/dev/log"
DEFAULT_SYSLOG_FACILITY = "daemon"
SYSLOG_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
                     "cron", "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4",
                     "local5", "local6", "local7")

#: Resource ids the renderers use themselves; a layer may not take them.
RESERVED_IDS = ("vip", "partition", "cl-partition", "g-stateful", "g-stateless",
                "cl-stateless")


def default_consensus(token_ms: int) -> int:
    """The consensus a two-node stack renders when its file sets none: the declared
    percentage of its token, in whole milliseconds."""
    return token_ms * DEFAULT_CONSENSUS_PERCENT // 100


def fence_device_id(node: str, name: str | None = None) -> str:
    """The id of a device that fences ``node``: ``fence-<node>`` for its BMC's (level 1),
    ``fence-<node>-<name>`` for a further device of its ``[[nodes.fence]]``."""
    return f"fence-{node}" if name is None else f"fence-{node}-{name}"


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
class FenceDevice:
    """A further way to cut one node's power, tried after its BMC: any fence agent
    (a PDU's, a second management network's) with the parameters the stack file gives."""

    name: str                  # the device is fence-<node>-<name>
    agent: str                 # a fence agent's name (fence_apc_snmp): stonith:<agent>
    level: int                 # its fencing-topology level; the BMC is level 1
    password_file: str | None
    params: Mapping[str, str]

    @property
    def spec(self) -> str:
        return f"stonith:{self.agent}"

    @property
    def path(self) -> str:
        """Where the agent is installed (and run from by hamon)."""
        return posixpath.join(FENCE_AGENT_DIR, self.agent)

    def device_id(self, node: str) -> str:
        return fence_device_id(node, self.name)

    def agent_params(self, node: str) -> dict[str, str]:
        """The agent's instance parameters for the device that fences ``node``.

        A ``password_file`` reaches fence_bmc as itself; a stock fence agent reads
        it through its ``password_script`` (``/bin/cat FILE``): the password stays
        out of the CIB either way.
        """
        out = dict(self.params)
        if self.agent == FENCE_AGENT_NAME:
            out["hostname"] = node
        if self.password_file is not None:
            if self.agent == FENCE_AGENT_NAME:
                out["password_file"] = self.password_file
            else:
                out["password_script"] = shlex.join([PASSWORD_FILE_COMMAND, self.password_file])
        out["pcmk_host_list"] = node
        return out


@dataclass(frozen=True)
class Node:
    name: str
    nodeid: int
    bmc: Bmc
    fence_delay: int          # ms; Pacemaker waits this long before fencing this node
    addresses: Mapping[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]
    #: the further fence devices, in the order they are tried after the BMC (level 1)
    fences: tuple[FenceDevice, ...] = ()

    @property
    def fence_device(self) -> str:
        """The id of the device that fences this node through its BMC (level 1)."""
        return fence_device_id(self.name)

    def fence_topology(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """(level, device ids) in the order the levels are tried: level 1 is the BMC's
        device; a level succeeds only if every one of its devices does."""
        levels: dict[int, list[str]] = {1: [self.fence_device]}
        for device in self.fences:
            levels.setdefault(device.level, []).append(device.device_id(self.name))
        return tuple((level, tuple(levels[level])) for level in sorted(levels))

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
    start_after: str | None    # None: first (the patent's order; under Pacemaker a resource of its own)
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
    #: the cluster's node names: a fence confirmation must name the other one
    nodes: tuple[str, ...] = ()

    def agent_params(self) -> dict[str, str]:
        out = {"backend": self.backend, "device": self.device,
               "directory": self.directory, "fstype": self.fstype}
        if self.nodes:
            out["nodes"] = " ".join(self.nodes)
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
    consensus: int             # ms; below the token is safe in a two-node ring only
    crypto_cipher: str
    crypto_hash: str
    syslog: bool
    logfile: str | None


@dataclass(frozen=True)
class Heuristics:
    """corosync-qdevice heuristics: commands each node runs; a node whose commands
    fail scores lower at the arbiter, so in a split the other node gets the vote."""

    mode: str                          # sync | on
    execs: tuple[tuple[str, str], ...]  # (exec_ name, command), in declared order
    timeout: int | None = None         # ms; None: corosync's default
    sync_timeout: int | None = None
    interval: int | None = None


@dataclass(frozen=True)
class Quorum:
    """A quorum device: corosync-qdevice on both nodes, voting as corosync-qnetd on a
    third host (the arbiter) decides. It replaces two_node and the fence delays."""

    host: str
    port: int
    algorithm: str             # ffsplit | lms
    tie_breaker: str           # lowest | highest | a node's name
    tls: str                   # on | off | required
    timeout: int | None        # ms; None: corosync's default (10 s)
    sync_timeout: int | None   # ms; None: corosync's default (30 s)
    heuristics: Heuristics | None


@dataclass(frozen=True)
class Heartbeat:
    keepalive: int             # ms
    deadtime: int
    warntime: int
    initdead: int
    udpport: int
    logfile: str | None


@dataclass(frozen=True)
class Recipient:
    """One place an alert goes: a webhook, syslog or a command (``[[alerts.recipients]]``)."""

    sink: str                                  # webhook | syslog | command
    url: str | None = field(default=None, repr=False)        # webhook; may hold user:password
    headers: Mapping[str, str] = field(default_factory=_frozen_map, repr=False)  # webhook
    headers_file: str | None = None            # webhook: "Name: value" lines, read when sending
    ca_file: str | None = None                 # webhook (https): CA bundle instead of the system's
    retries: int = DEFAULT_WEBHOOK_RETRIES     # webhook
    timeout: int = DEFAULT_WEBHOOK_TIMEOUT_MS  # ms: webhook (one attempt) or command
    socket: str = DEFAULT_SYSLOG_SOCKET        # syslog
    facility: str = DEFAULT_SYSLOG_FACILITY    # syslog
    command: tuple[str, ...] = ()              # command: argv, run without a shell

    @property
    def worst_case_ms(self) -> int:
        """The longest one delivery may take: every attempt timing out, and the waits."""
        if self.sink == "webhook":
            waits = WEBHOOK_BACKOFF_MS * self.retries * (self.retries + 1) // 2
            return self.timeout * (self.retries + 1) + waits
        if self.sink == "command":
            return self.timeout
        return 1000


@dataclass(frozen=True)
class Alerts:
    """The ``[alerts]`` table: which events, Pacemaker's alert timeout, the recipients."""

    select_fencing: bool
    select_nodes: bool
    select_resources: bool
    select_attributes: bool | tuple[str, ...]  # False, True (every attribute) or these names
    timeout: int                               # ms: Pacemaker's alert timeout (meta timeout)
    recipients: tuple[Recipient, ...]

    @property
    def deadline(self) -> int:
        """ms: what one delivery may take, kept below Pacemaker's alert timeout."""
        return self.timeout - ALERT_MARGIN_MS

    @property
    def selects_all(self) -> bool:
        """Every kind Pacemaker has, attributes unfiltered: no <select> needed."""
        return (self.select_fencing and self.select_nodes and self.select_resources
                and self.select_attributes is True)


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
    alerts: Alerts | None = None  # the [alerts] table; None: no alerts
    quorum: Quorum | None = None  # None: two_node, fence races settled by fencing delays

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


