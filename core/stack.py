"""The stack file: one description of the two-node stack, loaded and checked.

An operator describes the stack once, in TOML (``docs/stack-file.md``): the
two nodes and their BMCs, the heartbeat links, the VIP, the replicated
partition and the layers in order. :func:`load` reads it into frozen, typed
objects that every consumer shares: ``hapack render`` (CIB, crm shell,
corosync.conf, Heartbeat files), hamon and the demo. Defaults are applied
here, once; the renderers never choose a default of their own.

Every problem is reported with the file, the key and what is wrong, all of
them at once, in one :class:`StackError`.

Agent parameters (``[layers.params]``, ``[vip.params]``, ...) are passed
through to the agent. When the agent module ``hapack.ocf.<agent>`` (or
``hapack.stonith.fence_bmc``) can be imported, they are checked against its
declared ``AGENT.params``: unknown names, missing required ones and values the
declaration refuses are errors. An agent that is not written yet is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import posixpath
import re
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

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
FENCE_AGENT = "stonith:fence_bmc"
FENCE_MODULE = "hapack.stonith.fence_bmc"
#: Operation defaults, per kind of resource (milliseconds).
DEFAULT_OPS = {
    "vip": dict(start_timeout=20_000, stop_timeout=20_000,
                monitor_interval=10_000, monitor_timeout=20_000),
    "partition": dict(start_timeout=240_000, stop_timeout=100_000,
                      monitor_interval=20_000, monitor_timeout=20_000,
                      promote_timeout=90_000, demote_timeout=90_000,
                      notify_timeout=90_000, promoted_monitor_interval=10_000),
    "layer": dict(start_timeout=60_000, stop_timeout=120_000,
                  monitor_interval=10_000, monitor_timeout=30_000),
    "fence": dict(monitor_interval=60_000, monitor_timeout=20_000),
}
PROVIDER = "hapack"
KINDS = ("stateless", "stateful")
PARTITION_BACKENDS = ("drbd", "shared")
FENCE_ACTIONS = ("off", "reboot")
CRYPTO_CIPHERS = ("none", "aes128", "aes192", "aes256")
CRYPTO_HASHES = ("none", "md5", "sha1", "sha256", "sha384", "sha512")

#: Resource ids the renderers use themselves; a layer may not take them.
RESERVED_IDS = ("vip", "partition", "cl-partition", "g-stateful", "g-stateless",
                "cl-stateless")

_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_NODE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_IFACE_RE = re.compile(r"^[^/:\s]{1,15}$")
_AGENT_RE = re.compile(r"^(ocf:[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+|[a-z][a-z0-9_]*)$")
_PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ms|s|min|m|h)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}


# -- errors --------------------------------------------------------------------

class StackError(ValueError):
    """A stack file that cannot be used.

    ``problems`` is a tuple of (key, message); ``key`` is a dotted TOML path
    such as ``layers[2].data_dir`` ('' for the file as a whole). ``file``,
    ``key`` and ``message`` are those of the first problem. ``str()`` gives
    one line per problem: ``FILE: KEY: MESSAGE``.
    """

    def __init__(self, file: str, problems):
        self.file = str(file)
        self.problems = tuple(problems)
        self.key, self.message = self.problems[0]
        super().__init__("\n".join(
            f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}"
            for key, message in self.problems))


# -- the typed stack -----------------------------------------------------------

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

    def address(self, link: str):
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
    def network(self):
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


# -- durations -----------------------------------------------------------------

def parse_duration(text: str) -> int:
    """'500ms', '10s', '2min' (or '2m'), '1h' -> milliseconds."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (use a number and a unit: ms, s, min, h; "
                         "e.g. \"10s\")")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """Milliseconds as Pacemaker writes them: '10s', '2min', '500ms'."""
    if ms and ms % 60_000 == 0 and ms >= 120_000:
        return f"{ms // 60_000}min"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


# -- reading -------------------------------------------------------------------

_MISSING = object()


class _Reader:
    """Typed access to the parsed TOML that records problems instead of raising."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[tuple[str, str]] = []

    def problem(self, key: str, message: str) -> None:
        if (key, message) not in self.problems:
            self.problems.append((key, message))

    def table(self, data, key: str, allowed, required=()) -> dict | None:
        """``data`` as a dict, with unknown keys and missing required keys reported."""
        if not isinstance(data, dict):
            self.problem(key, f"expected a table, got {_type_name(data)}")
            return None
        for name in data:
            if name not in allowed:
                self.problem(_join(key, name), f"unknown key (known keys here: {', '.join(allowed)})")
        for name in required:
            if name not in data:
                self.problem(_join(key, name), "is required")
        return data

    def value(self, table: dict, key: str, name: str, kind, default=_MISSING, check=None):
        """One scalar: kind is str, int, bool or 'duration'. Returns None on a problem."""
        path = _join(key, name)
        if name not in table:
            if default is _MISSING:
                self.problem(path, "is required")
                return None
            return default
        raw = table[name]
        if kind == "duration":
            if not isinstance(raw, str):
                self.problem(path, f"expected a duration string such as \"10s\", got {_type_name(raw)}")
                return None
            try:
                value = parse_duration(raw)
            except ValueError as exc:
                self.problem(path, str(exc))
                return None
        else:
            ok = isinstance(raw, kind) and not (kind is int and isinstance(raw, bool))
            if not ok:
                self.problem(path, f"expected {_KIND_NAMES[kind]}, got {_type_name(raw)}")
                return None
            value = raw
        if check is not None:
            try:
                value = check(value)
            except ValueError as exc:
                self.problem(path, str(exc))
                return None
        return value

    def params(self, table: dict, key: str) -> dict[str, str]:
        """A [*.params] table: agent parameter name -> value, as OCF strings."""
        raw = table.get("params", {})
        path = _join(key, "params")
        if not isinstance(raw, dict):
            self.problem(path, f"expected a table, got {_type_name(raw)}")
            return {}
        out = {}
        for name, value in raw.items():
            where = _join(path, name)
            if not _PARAM_RE.match(name):
                self.problem(where, "is not a valid parameter name")
            elif isinstance(value, bool):
                out[name] = "true" if value else "false"
            elif isinstance(value, int):
                out[name] = str(value)
            elif isinstance(value, str):
                if "\n" in value or "\0" in value:
                    self.problem(where, "a parameter value cannot hold a newline")
                else:
                    out[name] = value
            else:
                self.problem(where, f"expected a string, integer or boolean, got {_type_name(value)}")
        return out

    def ops(self, table: dict, key: str, kind: str) -> Ops:
        defaults = DEFAULT_OPS[kind]
        raw = table.get("ops", {})
        path = _join(key, "ops")
        if not isinstance(raw, dict):
            self.problem(path, f"expected a table, got {_type_name(raw)}")
            raw = {}
        self.table(raw, path, tuple(defaults))
        values = {}
        for name, default in defaults.items():
            value = self.value(raw, path, name, "duration", default=default, check=_positive_ms)
            values[name] = default if value is None else value
        if (values.get("promoted_monitor_interval") is not None
                and values["promoted_monitor_interval"] == values["monitor_interval"]):
            self.problem(_join(path, "promoted_monitor_interval"),
                         "must differ from monitor_interval (Pacemaker tells the two monitors "
                         "apart by their interval)")
        return Ops(**values)


_KIND_NAMES = {str: "a string", int: "an integer", bool: "a boolean (true or false)"}


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _join(key: str, name) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else str(name)


def _positive_ms(value: int) -> int:
    if value <= 0:
        raise ValueError("must be longer than 0")
    return value


def _resource_id(text: str) -> str:
    if not _ID_RE.match(text):
        raise ValueError(f"{text!r} is not a valid name (a letter, then letters, digits, '-' "
                         "or '_'; 63 characters at most)")
    return text


def _node_name(text: str) -> str:
    if not _NODE_RE.match(text):
        raise ValueError(f"{text!r} is not a valid node name (the node's host name: letters, "
                         "digits and '-')")
    return text


def _interface(text: str) -> str:
    if not _IFACE_RE.match(text) or text in (".", ".."):
        raise ValueError(f"{text!r} is not a valid interface name")
    return text


def _abs_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    norm = posixpath.normpath(text)
    return "/" + norm.lstrip("/")


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def _ip_interface(text: str):
    if "/" not in text:
        raise ValueError(f"{text!r} has no prefix length: write the node's address with its "
                         "prefix, e.g. \"198.18.240.11/24\"")
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an address with a prefix length") from None


def _choice(*choices):
    def check(text):
        if text not in choices:
            raise ValueError(f"{text!r} is not one of: {', '.join(choices)}")
        return text
    return check


def _range(low, high=None):
    def check(value):
        if value < low or (high is not None and value > high):
            raise ValueError(f"{value} is outside {low}..{high if high is not None else ''}")
        return value
    return check


# -- the stack file, table by table ----------------------------------------------

TOP_KEYS = ("cluster", "fencing", "corosync", "heartbeat", "nodes", "links", "vip",
            "partition", "layers", "hamon")


def load(path) -> Stack:
    """Read and check the stack file at ``path``; raise StackError on any problem."""
    path = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise StackError(path, [("", f"cannot read the stack file: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StackError(path, [("", "the stack file is not UTF-8 text")]) from None
    return loads(text, path)


def loads(text: str, file: str = "<stack>", *, check_agents: bool = True) -> Stack:
    """Parse and check stack-file text; ``file`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StackError(file, [("", f"not valid TOML: {exc}")]) from None
    reader = _Reader(file)
    stack = _build(reader, data, file)
    if not reader.problems and check_agents:
        _check_agents(reader, stack)
    if reader.problems:
        raise StackError(file, reader.problems)
    return stack


def _build(r: _Reader, data: dict, file: str) -> Stack | None:
    r.table(data, "", TOP_KEYS, required=("cluster", "nodes", "links", "vip", "partition", "layers"))
    cluster = _cluster(r, data.get("cluster", {}))
    fencing = _fencing(r, data.get("fencing", {}))
    corosync = _corosync(r, data.get("corosync", {}))
    heartbeat = _heartbeat(r, data.get("heartbeat", {}))
    links_raw = _array(r, data, "links")
    nodes = _nodes(r, _array(r, data, "nodes")) if "nodes" in data else []
    node_names = [n["name"] for n in nodes if n.get("name")]
    links = _links(r, links_raw, node_names) if "links" in data else ()
    partition = _partition(r, data["partition"]) if "partition" in data else None
    layers = _layers(r, _array(r, data, "layers"), partition) if "layers" in data else ()
    vip = _vip(r, data["vip"], links, node_names, layers) if "vip" in data else None
    hamon = data.get("hamon", {})
    if not isinstance(hamon, dict):
        r.problem("hamon", f"expected a table, got {_type_name(hamon)}")
    if r.problems:
        return None
    node_objs = tuple(
        Node(name=n["name"], nodeid=i + 1, bmc=n["bmc"], fence_delay=n["fence_delay"],
             addresses=_frozen_map((link.name, link.addresses[n["name"]]) for link in links))
        for i, n in enumerate(nodes))
    return Stack(file=file, cluster=cluster, nodes=node_objs, links=links, vip=vip,
                 partition=partition, layers=layers, fencing=fencing, corosync=corosync,
                 heartbeat=heartbeat, hamon=_frozen_map(hamon))


def _array(r: _Reader, data: dict, key: str) -> list:
    raw = data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        r.problem(key, f"expected an array of tables ([[{key}]]), got {_type_name(raw)}")
        return []
    return raw


def _cluster(r: _Reader, raw) -> Cluster:
    key = "cluster"
    t = r.table(raw, key, ("name", "stickiness", "migration_threshold", "failure_timeout"),
                required=("name",)) or {}
    stickiness = r.value(t, key, "stickiness", int, DEFAULT_STICKINESS)
    if stickiness is not None and stickiness <= PRIMARY_PREFERENCE:
        r.problem(_join(key, "stickiness"),
                  f"must be greater than {PRIMARY_PREFERENCE}, the primary's preference for the "
                  "stateful side; otherwise a recovered primary takes the stack back")
    return Cluster(
        name=r.value(t, key, "name", str, check=_cluster_name),
        stickiness=stickiness,
        migration_threshold=r.value(t, key, "migration_threshold", int,
                                    DEFAULT_MIGRATION_THRESHOLD, check=_range(1, 1000000)),
        failure_timeout=r.value(t, key, "failure_timeout", "duration", DEFAULT_FAILURE_TIMEOUT_MS))


def _cluster_name(text: str) -> str:
    if not re.match(r"^[A-Za-z0-9_-]{1,32}$", text):
        raise ValueError(f"{text!r} is not a valid cluster name (letters, digits, '-' and '_'; "
                         "32 characters at most)")
    return text


def _fencing(r: _Reader, raw) -> Fencing:
    key = "fencing"
    t = r.table(raw, key, ("action", "priority_fencing_delay", "timeout")) or {}
    return Fencing(
        action=r.value(t, key, "action", str, DEFAULT_FENCE_ACTION, check=_choice(*FENCE_ACTIONS)),
        priority_fencing_delay=r.value(t, key, "priority_fencing_delay", "duration",
                                       DEFAULT_PRIORITY_FENCING_DELAY_MS),
        timeout=r.value(t, key, "timeout", "duration", DEFAULT_FENCING_TIMEOUT_MS,
                        check=_positive_ms))


def _corosync(r: _Reader, raw) -> Corosync:
    key = "corosync"
    t = r.table(raw, key, ("token", "crypto_cipher", "crypto_hash", "syslog", "logfile")) or {}
    logfile = r.value(t, key, "logfile", str, DEFAULT_COROSYNC_LOGFILE, check=_abs_path_or_none)
    return Corosync(
        token=r.value(t, key, "token", "duration", DEFAULT_TOKEN_MS, check=_range(200, 600_000)),
        crypto_cipher=r.value(t, key, "crypto_cipher", str, DEFAULT_CRYPTO_CIPHER,
                              check=_choice(*CRYPTO_CIPHERS)),
        crypto_hash=r.value(t, key, "crypto_hash", str, DEFAULT_CRYPTO_HASH,
                            check=_choice(*CRYPTO_HASHES)),
        syslog=r.value(t, key, "syslog", bool, True),
        logfile=logfile or None)


def _abs_path_or_none(text: str):
    return _abs_path(text) if text else ""


def _heartbeat(r: _Reader, raw) -> Heartbeat:
    key = "heartbeat"
    t = r.table(raw, key, ("keepalive", "deadtime", "warntime", "initdead", "udpport",
                           "logfile")) or {}
    hb = Heartbeat(
        keepalive=r.value(t, key, "keepalive", "duration", DEFAULT_HB_KEEPALIVE_MS, check=_positive_ms),
        deadtime=r.value(t, key, "deadtime", "duration", DEFAULT_HB_DEADTIME_MS, check=_positive_ms),
        warntime=r.value(t, key, "warntime", "duration", DEFAULT_HB_WARNTIME_MS, check=_positive_ms),
        initdead=r.value(t, key, "initdead", "duration", DEFAULT_HB_INITDEAD_MS, check=_positive_ms),
        udpport=r.value(t, key, "udpport", int, DEFAULT_HB_UDPPORT, check=_range(1, 65535)),
        logfile=r.value(t, key, "logfile", str, DEFAULT_HB_LOGFILE, check=_abs_path_or_none) or None)
    if None not in (hb.keepalive, hb.deadtime) and hb.deadtime <= 2 * hb.keepalive:
        r.problem("heartbeat.deadtime", "must be more than twice keepalive (Heartbeat refuses "
                  "to start otherwise)")
    if None not in (hb.warntime, hb.deadtime) and not hb.warntime < hb.deadtime:
        r.problem("heartbeat.warntime", "must be shorter than deadtime")
    if None not in (hb.initdead, hb.deadtime) and hb.initdead < hb.deadtime:
        r.problem("heartbeat.initdead", "must be at least deadtime")
    return hb


def _nodes(r: _Reader, raw: list) -> list[dict]:
    if len(raw) != 2:
        r.problem("nodes", f"a stack has exactly two nodes ([[nodes]] twice), found {len(raw)}")
    out, seen = [], set()
    for i, item in enumerate(raw):
        key = _join("nodes", i)
        t = r.table(item, key, ("name", "fence_delay", "bmc"), required=("name",)) or {}
        name = r.value(t, key, "name", str, check=_node_name)
        if name in seen:
            r.problem(_join(key, "name"), f"node {name!r} is declared twice")
        seen.add(name)
        label = f"node {name!r}" if name else "this node"
        if "bmc" not in t:
            r.problem(_join(key, "bmc"),
                      f"{label} has no [nodes.bmc] table: each node must have a BMC its peer can "
                      "power it off through (the failed primary is powered off before its data "
                      "is taken over)")
            bmc = None
        else:
            bmc = _bmc(r, t["bmc"], _join(key, "bmc"))
        delay = r.value(t, key, "fence_delay", "duration", 0)
        out.append({"name": name, "bmc": bmc, "fence_delay": delay or 0})
    return out


def _bmc(r: _Reader, raw, key: str) -> Bmc | None:
    t = r.table(raw, key, ("driver", "address", "port", "username", "password_file", "password",
                           "lanplus", "cipher", "params"), required=("address",))
    if t is None:
        return None
    driver = r.value(t, key, "driver", str, "ipmi", check=_choice(*BMC_DRIVERS))
    if "password" in t and "password_file" in t:
        r.problem(_join(key, "password"), "give password_file or password, not both")
    if driver == "redfish":
        for name in ("lanplus", "cipher"):
            if name in t:
                r.problem(_join(key, name), "is an IPMI setting; this BMC's driver is redfish")
    address = r.value(t, key, "address", str, check=_bmc_address)
    return Bmc(
        driver=driver or "ipmi",
        address=address,
        port=r.value(t, key, "port", int, DEFAULT_BMC_PORT.get(driver, 623), check=_range(1, 65535)),
        username=r.value(t, key, "username", str, None),
        password_file=r.value(t, key, "password_file", str, None, check=_abs_path),
        password=r.value(t, key, "password", str, None),
        lanplus=r.value(t, key, "lanplus", bool, True),
        cipher=r.value(t, key, "cipher", int, None, check=_range(0, 17)),
        params=_frozen_map(r.params(t, key)))


def _bmc_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", text):
        return text
    raise ValueError(f"{text!r} is neither an IP address nor a host name")


def _links(r: _Reader, raw: list, node_names: list[str]) -> tuple[Link, ...]:
    if not raw:
        r.problem("links", "describe at least one heartbeat link ([[links]]); two are better: "
                  "one link lost must not look like a dead node")
    links, seen, used = [], set(), {}
    for i, item in enumerate(raw):
        key = _join("links", i)
        t = r.table(item, key, ("name", "interface", "addresses"),
                    required=("name", "interface", "addresses")) or {}
        name = r.value(t, key, "name", str, check=_resource_id)
        if name in seen:
            r.problem(_join(key, "name"), f"link {name!r} is declared twice")
        seen.add(name)
        interface = r.value(t, key, "interface", str, check=_interface)
        addresses = {}
        akey = _join(key, "addresses")
        raw_addr = t.get("addresses", {})
        if not isinstance(raw_addr, dict):
            r.problem(akey, f"expected a table of node name = \"address/prefix\", got "
                      f"{_type_name(raw_addr)}")
            raw_addr = {}
        for node, text in raw_addr.items():
            if node_names and node not in node_names:
                r.problem(_join(akey, node), f"{node!r} is not one of the nodes "
                          f"({', '.join(node_names)})")
                continue
            value = r.value(raw_addr, akey, node, str, check=_ip_interface)
            if value is None:
                continue
            if value.ip in used:
                r.problem(_join(akey, node), f"{value.ip} is already used by {used[value.ip]}")
            used[value.ip] = f"{node} on link {name!r}"
            addresses[node] = value
        if isinstance(t.get("addresses"), dict):
            for node in node_names:
                if node not in raw_addr:
                    r.problem(_join(akey, node), f"node {node!r} has no address on link {name!r}")
        nets = {a.network for a in addresses.values()}
        if len(nets) > 1:
            shown = ", ".join(f"{n}: {a.with_prefixlen}" for n, a in addresses.items())
            r.problem(akey, f"the nodes' addresses on link {name!r} are not on one subnet ({shown})")
        ordered = {n: addresses[n] for n in node_names if n in addresses}
        links.append(Link(name=name, number=i, interface=interface, addresses=_frozen_map(ordered)))
    return tuple(links)


def _partition(r: _Reader, raw) -> Partition | None:
    key = "partition"
    t = r.table(raw, key, ("backend", "device", "directory", "fstype", "options",
                           "drbd_resource", "params", "ops"),
                required=("backend", "device", "directory", "fstype"))
    if t is None:
        return None
    backend = r.value(t, key, "backend", str, check=_choice(*PARTITION_BACKENDS))
    directory = r.value(t, key, "directory", str, check=_abs_path)
    if directory == "/":
        r.problem(_join(key, "directory"), "the partition cannot be mounted on /")
    drbd_resource = r.value(t, key, "drbd_resource", str, None, check=_drbd_name)
    if backend == "drbd" and "drbd_resource" not in t:
        r.problem(_join(key, "drbd_resource"), "is required with backend = \"drbd\" (the "
                  "resource name in drbd.conf)")
    if backend == "shared" and "drbd_resource" in t:
        r.problem(_join(key, "drbd_resource"), "is only for backend = \"drbd\"")
    params = r.params(t, key)
    _no_overlap(r, key, params, ("backend", "device", "directory", "fstype", "options",
                                 "drbd_resource"))
    return Partition(
        backend=backend, device=r.value(t, key, "device", str, check=_abs_path),
        directory=directory, fstype=r.value(t, key, "fstype", str, check=_word),
        options=r.value(t, key, "options", str, None, check=_word),
        drbd_resource=drbd_resource, params=_frozen_map(params),
        ops=r.ops(t, key, "partition"))


def _drbd_name(text: str) -> str:
    if not re.match(r"^[-%+./0-9:=@A-Z_a-z]+$", text):
        raise ValueError(f"{text!r} is not a valid DRBD resource name")
    return text


def _word(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} must be one word (no spaces)")
    return text


def _no_overlap(r: _Reader, key: str, params: dict, owned, source=None) -> None:
    for name in params:
        if name in owned:
            r.problem(_join(_join(key, "params"), name),
                      f"is set by hapack from {source or key}; remove it from {key}.params")


def _param_name(text: str) -> str:
    if not _PARAM_RE.match(text):
        raise ValueError(f"{text!r} is not a valid parameter name")
    return text


def _agent(text: str) -> str:
    if not _AGENT_RE.match(text):
        raise ValueError(f"{text!r} is not an agent: use a hapack agent name (\"postgresql\") or "
                         "a full OCF spec (\"ocf:heartbeat:pgsql\")")
    return text if text.startswith("ocf:") else f"ocf:{PROVIDER}:{text}"


def _layers(r: _Reader, raw: list, partition: Partition | None) -> tuple[Layer, ...]:
    if not raw:
        r.problem("layers", "describe at least one layer ([[layers]])")
    layers, seen = [], {}
    for i, item in enumerate(raw):
        key = _join("layers", i)
        t = r.table(item, key, ("name", "agent", "kind", "data_dir", "data_param", "params",
                                "ops"),
                    required=("name", "agent", "kind")) or {}
        name = r.value(t, key, "name", str, check=_resource_id)
        if name in seen:
            r.problem(_join(key, "name"), f"layer {name!r} is declared twice (first as "
                      f"layers[{seen[name]}]); layer names must be unique")
        elif name in RESERVED_IDS or (name or "").startswith("fence-"):
            r.problem(_join(key, "name"), f"{name!r} is a name hapack uses itself; choose another")
        if name is not None:
            seen.setdefault(name, i)
        kind = r.value(t, key, "kind", str, check=_choice(*KINDS))
        data_dir = r.value(t, key, "data_dir", str, None, check=_abs_path)
        if kind == "stateful" and "data_dir" not in t:
            r.problem(_join(key, "data_dir"), f"stateful layer {name!r} needs data_dir: the "
                      "directory on the replicated partition that holds its data")
        if kind == "stateless" and "data_dir" in t:
            r.problem(_join(key, "data_dir"), f"stateless layer {name!r} keeps no data: remove "
                      "data_dir, or make the layer stateful")
        if kind == "stateful" and data_dir and partition is not None and partition.directory:
            if not partition.contains(data_dir):
                r.problem(_join(key, "data_dir"), f"{data_dir} is outside the partition "
                          f"({partition.directory}): stateful layer {name!r} must keep its data "
                          "on the replicated partition, in a directory below its mount point")
            for other in layers:
                if other.data_dir and (_below_or_same(data_dir, other.data_dir)
                                       or _below_or_same(other.data_dir, data_dir)):
                    r.problem(_join(key, "data_dir"), f"{data_dir} overlaps the data_dir of "
                              f"layer {other.name!r} ({other.data_dir})")
        data_param = r.value(t, key, "data_param", str, None, check=_param_name)
        if data_param is not None and "data_dir" not in t:
            r.problem(_join(key, "data_param"), "names the parameter that receives data_dir, "
                      "but this layer has no data_dir")
        params = r.params(t, key)
        if data_param is not None:
            _no_overlap(r, key, params, (data_param,), f"{key}.data_dir")
        layers.append(Layer(
            name=name, agent=r.value(t, key, "agent", str, check=_agent), kind=kind,
            data_dir=data_dir, data_param=data_param, params=_frozen_map(params),
            ops=r.ops(t, key, "layer")))
    return tuple(layers)


def _below_or_same(path: str, other: str) -> bool:
    return path == other or path.startswith(other.rstrip("/") + "/")


def _vip(r: _Reader, raw, links, node_names, layers) -> Vip | None:
    key = "vip"
    t = r.table(raw, key, ("address", "link", "start_after", "params", "ops"),
                required=("address",))
    if t is None:
        return None
    address = r.value(t, key, "address", str, check=_ip)
    link_name = r.value(t, key, "link", str, None)
    start_after = r.value(t, key, "start_after", str, None)
    stateful = [layer.name for layer in layers if layer.kind == "stateful"]
    if start_after is not None and start_after not in stateful:
        r.problem(_join(key, "start_after"), f"{start_after!r} is not a stateful layer "
                  f"(stateful layers: {', '.join(stateful) or 'none'}); leave start_after out to "
                  "start the VIP first, right after the partition is promoted")
    params = r.params(t, key)
    _no_overlap(r, key, params, ("ip", "cidr_netmask", "nic"))
    ops = r.ops(t, key, "vip")
    link = None
    if address is not None and links and all(lk.name for lk in links):
        if link_name is not None:
            link = next((lk for lk in links if lk.name == link_name), None)
            if link is None:
                r.problem(_join(key, "link"), f"{link_name!r} is not one of the links "
                          f"({', '.join(lk.name for lk in links)})")
            elif address not in link.network:
                r.problem(_join(key, "address"), f"{address} is not in link {link.name!r}'s "
                          f"subnet {link.network}")
        else:
            matches = [lk for lk in links if lk.addresses and address in lk.network]
            if not matches:
                shown = "; ".join(
                    f"{n}: " + ", ".join(str(lk.addresses[n].network) for lk in links
                                         if n in lk.addresses) for n in node_names)
                r.problem(_join(key, "address"), f"{address} is outside every node's subnets "
                          f"({shown}): the VIP must be on a subnet both nodes are on")
            else:
                link = matches[0]
        if link is not None:
            for node, iface in link.addresses.items():
                if iface.ip == address:
                    r.problem(_join(key, "address"), f"{address} is {node}'s own address; the "
                              "VIP must be an address no node uses")
            net = link.network
            if net.version == 4 and net.prefixlen < 31 and address in (net.network_address,
                                                                        net.broadcast_address):
                r.problem(_join(key, "address"), f"{address} is the network or broadcast "
                          f"address of {net}")
    if link is None:
        return None
    return Vip(address=address, link=link.name, interface=link.interface,
               prefixlen=link.network.prefixlen, start_after=start_after,
               params=_frozen_map(params), ops=ops)


# -- agent parameters against the agents' declarations -------------------------

def agent_declaration(module_name: str):
    """The ``AGENT.params`` of an importable agent module, or None if it is not written yet."""
    try:
        spec = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        return None
    if spec is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None     # being written: it cannot be imported yet, so it cannot be checked
    agent = getattr(module, "AGENT", None)
    params = getattr(agent, "params", None)
    return tuple(params) if params is not None else None


def _check_params(r: _Reader, key: str, agent: str, module: str, given: dict,
                  owned: dict, hapack_keys=()) -> None:
    declared = agent_declaration(module)
    if declared is None:
        return
    by_name = {p.name: p for p in declared}
    values = dict(given)
    values.update(owned)
    for name, text in values.items():
        if name.startswith("pcmk_"):
            continue
        where = _join(_join(key, "params"), name) if name in given else key
        param = by_name.get(name)
        if param is None:
            r.problem(where, f"{agent} has no parameter {name!r} (its parameters: "
                      f"{', '.join(by_name)})")
            continue
        try:
            param.convert(text)
        except ValueError as exc:
            r.problem(where, f"{agent} refuses the value {text!r}: {exc}")
    for param in declared:
        if param.required and param.name not in values:
            r.problem(_join(key, "params"), f"{agent} requires parameter {param.name!r}; add it "
                      f"to {key}.params")


def _check_agents(r: _Reader, stack: Stack) -> None:
    _check_params(r, "vip", stack.vip.agent, "hapack.ocf.vip", dict(stack.vip.params),
                  _without(stack.vip.agent_params(), stack.vip.params))
    _check_params(r, "partition", stack.partition.agent, "hapack.ocf.partition",
                  dict(stack.partition.params),
                  _without(stack.partition.agent_params(), stack.partition.params))
    for i, layer in enumerate(stack.layers):
        if layer.agent_provider == PROVIDER:
            _check_params(r, _join("layers", i), layer.agent, f"hapack.ocf.{layer.agent_type}",
                          dict(layer.params), _without(layer.agent_params(), layer.params))
    for i, node in enumerate(stack.nodes):
        full = node.bmc.agent_params(node.name, node.fence_delay)
        owned = {k: v for k, v in _without(full, node.bmc.params).items()
                 if not k.startswith("pcmk_")}
        _check_params(r, _join(_join("nodes", i), "bmc"), FENCE_AGENT, FENCE_MODULE,
                      dict(node.bmc.params), owned)


def _without(full: dict, given) -> dict:
    return {k: v for k, v in full.items() if k not in given}
