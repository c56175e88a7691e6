"""hamon's configuration: the stack file, this node, and the ``[hamon]`` table.

The stack file (:mod:`hapack.stack`) describes the nodes, links, VIP,
partition and layers once for Pacemaker, Heartbeat and hamon alike; it
passes its ``[hamon]`` table through unchecked, and :func:`settings` checks
it here: unknown keys, types and bounds, every problem at once, with the
file and key (a :class:`hapack.stack.StackError`).
"""

import ipaddress
from dataclasses import dataclass

from hapack.stack import StackError, load, parse_duration

VIP_ORDERS = ("before_fence", "after_fence")  # unset: before_fence, unless vip.start_after
DEFAULT_FENCE_CONFIRMED_FILE = "/run/hapack/fence-confirmed"


@dataclass(frozen=True)
class Settings:
    """The ``[hamon]`` table, typed; times in seconds."""

    port: int = 5405
    key_file: str = "/etc/hapack/hamon.key"
    interval: float = 0.2
    dead_time: float = 1.2
    warn_time: float = 0.0          # 0: half the dead time
    initdead: float = 10.0
    fence_delay: float = 1.0
    fence_timeout: float = 10.0
    fence_retries: int = 3
    fence_retry_interval: float = 5.0
    vip: str = ""                   # "": before_fence unless the stack sets vip.start_after
    ping_targets: tuple = ()
    ping_interval: float = 0.2
    auto_failback: bool = False
    failback_holddown: float = 300.0
    state_dir: str = "/var/lib/hamon"
    run_dir: str = "/run/hamon"
    event_log: str = "/var/log/hamon/events.jsonl"
    ocf_root: str = "/usr/lib/ocf"
    fence_agent: str = "/usr/sbin/fence_bmc"

    @property
    def warn(self):
        return self.warn_time or self.dead_time / 2


_SECONDS = ("interval", "dead_time", "warn_time", "initdead", "fence_delay", "fence_timeout",
            "fence_retry_interval", "ping_interval", "failback_holddown")
#: (low, high) in seconds for durations, or values for integers.
BOUNDS = {
    "port": (1, 65535), "interval": (0.05, 5.0), "dead_time": (0.15, 60.0),
    "warn_time": (0.0, 60.0), "initdead": (0.0, 3600.0), "fence_delay": (0.0, 60.0),
    "fence_timeout": (1.0, 300.0), "fence_retries": (1, 100),
    "fence_retry_interval": (0.5, 600.0), "ping_interval": (0.1, 60.0),
    "failback_holddown": (0.0, 86400.0),
}
_PATHS = ("key_file", "state_dir", "run_dir", "event_log", "ocf_root", "fence_agent")


class _Problems(list):
    def add(self, key, message):
        self.append((f"hamon.{key}", message))


def settings(table, file="<stack>"):
    """The checked :class:`Settings` of a ``[hamon]`` table (a mapping)."""
    problems = _Problems()
    values = {}
    for key, raw in dict(table).items():
        if key not in Settings.__dataclass_fields__:
            problems.add(key, f"unknown key (known keys: {', '.join(Settings.__dataclass_fields__)})")
            continue
        try:
            values[key] = _convert(key, raw)
        except ValueError as exc:
            problems.add(key, str(exc))
    result = Settings(**values)
    _relations(result, values, problems)
    if problems:
        raise StackError(file, problems)
    return result


def _convert(key, raw):
    default = Settings.__dataclass_fields__[key].default
    if key in _SECONDS:
        if not isinstance(raw, str):
            raise ValueError(f"expected a duration string such as \"200ms\", got {raw!r}")
        value = parse_duration(raw) / 1000.0
    elif key == "ping_targets":
        if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
            raise ValueError("expected an array of IP addresses")
        value = tuple(str(ipaddress.ip_address(a)) for a in raw)
    elif type(raw) is not type(default):
        raise ValueError(f"expected {type(default).__name__}, got {raw!r}")
    else:
        value = raw
    if key in _PATHS and not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    if key == "vip" and value not in VIP_ORDERS:
        raise ValueError(f"{value!r} is not one of: {', '.join(VIP_ORDERS)}")
    if key in BOUNDS:
        low, high = BOUNDS[key]
        if not low <= value <= high:
            raise ValueError(f"{raw} is outside {low}..{high}"
                             + (" seconds" if key in _SECONDS else ""))
    return value


def _relations(s, given, problems):
    if s.dead_time < 3 * s.interval:
        problems.add("dead_time", f"{s.dead_time * 1000:.0f}ms is under 3 heartbeat intervals "
                     f"({3 * s.interval * 1000:.0f}ms): one late packet would look like a dead "
                     "node")
    if "warn_time" in given and not 0 < s.warn_time < s.dead_time:
        problems.add("warn_time", "must be above 0 and below dead_time")
    if s.ping_targets and s.ping_interval > s.dead_time / 4:
        problems.add("ping_interval", "must be at most a quarter of dead_time: the upstream "
                     "must be known (half the dead time without an answer) before the peer "
                     "is declared dead")
    if s.fence_delay and s.fence_delay < 2 * s.interval:
        problems.add("fence_delay", "must be 0 or at least two heartbeat intervals (the "
                     "difference between the two nodes' detection times)")


@dataclass(frozen=True)
class LinkEnd:
    """One heartbeat link seen from this node."""

    name: str
    index: int
    local: str
    peer: str
    interface: str


@dataclass(frozen=True)
class Config:
    stack: object        # hapack.stack.Stack
    node: str
    settings: Settings

    @property
    def me(self):
        return self.stack.node(self.node)

    @property
    def peer(self):
        return self.stack.peer(self.node)

    @property
    def preferred(self):
        """This node is the stack's primary: it acquires first and shoots first in a tie."""
        return self.stack.primary.name == self.node

    @property
    def links(self):
        return tuple(LinkEnd(link.name, link.number, str(link.addresses[self.node].ip),
                             str(link.addresses[self.peer.name].ip), link.interface)
                     for link in self.stack.links)

    @property
    def vip_first(self):
        """The patent's order: the VIP moves before the peer is fenced."""
        if self.settings.vip:
            return self.settings.vip == "before_fence"
        return self.stack.vip.start_after is None

    @property
    def fence_confirmed_file(self):
        return self.stack.partition.params.get("fence_confirmed_file",
                                               DEFAULT_FENCE_CONFIRMED_FILE)


def load_config(path, node):
    """Read the stack file and pick this node; StackError names every problem."""
    stack = load(path)
    names = [n.name for n in stack.nodes]
    if node not in names:
        raise StackError(stack.file, [("nodes", f"{node!r} is not a node of this stack "
                                       f"({', '.join(names)})")])
    s = settings(stack.hamon, stack.file)
    if s.vip == "before_fence" and stack.vip.start_after is not None:
        raise StackError(stack.file, [("hamon.vip", "vip = \"before_fence\" moves the VIP "
                                       "first, but vip.start_after places it after layer "
                                       f"{stack.vip.start_after!r}: set hamon.vip = "
                                       "\"after_fence\" or remove vip.start_after")])
    return Config(stack, node, s)
