"""hamon's configuration: the stack file, this node, and the ``[hamon]`` table.

The stack file (:mod:`hapack.stack`) describes the nodes, links, VIP,
partition and layers once for Pacemaker, Heartbeat and hamon alike. Its
``[hamon]`` table is read with the same reader as every other table
(:func:`read_settings`, called while the stack file is loaded): unknown
keys, types and bounds, every problem at once, with the file and key (a
:class:`hapack.stack.StackError`). Durations are strings with their unit
(``"200ms"``, ``"1.2s"``); the defaults are :mod:`hapack.hamon.defaults`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping

from hapack.hamon import defaults as D
from hapack.hamon.metrics import Endpoint, check_address, parse_address
from hapack.stack import StackError, load
from hapack.stack.reader import Reader, abs_path, choice, join, within

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from hapack.stack.model import Node
    from hapack.stack.model import Stack

VIP_ORDERS = ("before_fence", "after_fence")  # unset: before_fence, unless vip.start_after


@dataclass(frozen=True)
class Settings:
    """The ``[hamon]`` table, typed; times in seconds."""

    port: int = D.PORT
    key_file: str = D.KEY_FILE
    interval: float = D.INTERVAL
    dead_time: float = D.DEAD_TIME
    warn_time: float = D.WARN_TIME  # 0: two intervals, at most half the dead time
    initdead: float = D.INITDEAD
    fence_delay: float = D.FENCE_DELAY
    fence_timeout: float = D.FENCE_TIMEOUT
    fence_retries: int = D.FENCE_RETRIES
    fence_retry_interval: float = D.FENCE_RETRY_INTERVAL
    vip: str = D.VIP_ORDER          # "": before_fence unless the stack sets vip.start_after
    ping_targets: tuple = ()
    ping_interval: float = D.PING_INTERVAL
    auto_failback: bool = D.AUTO_FAILBACK
    failback_holddown: float = D.FAILBACK_HOLDDOWN
    state_dir: str = D.STATE_DIR
    run_dir: str = D.RUN_DIR
    event_log: str = D.EVENT_LOG
    ocf_root: str = D.OCF_ROOT
    fence_agent: str = D.FENCE_AGENT
    metrics_address: str = D.METRICS_ADDRESS

    @property
    def warn(self) -> float:
        return D.warn(self.dead_time, self.warn_time, self.interval)


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
KEY = "hamon"


def settings(table: Mapping[str, Any], file: str = "<stack>") -> Settings:
    """The checked :class:`Settings` of a ``[hamon]`` table (a mapping)."""
    reader = Reader(file)
    result = read_settings(reader, dict(table))
    reader.raise_problems()
    assert result is not None  # None only with a problem, raised above
    return result


def read_settings(r: Reader, table: Any) -> Settings | None:
    """The ``[hamon]`` table read with ``r``; None (and problems in ``r``) if it is wrong."""
    fields = tuple(Settings.__dataclass_fields__)
    t = r.table(table, KEY, fields)
    if t is None:
        return None
    before = len(r.problems)
    values = {name: _read(r, t, name) for name in fields if name in t}
    if len(r.problems) > before:
        return None
    result = Settings(**values)
    _relations(r, result, values)
    return result if len(r.problems) == before else None


def _read(r: Reader, t: dict, name: str) -> Any:
    if name in _SECONDS:
        low, high = BOUNDS[name]
        ms = r.value(t, KEY, name, "duration", check=_seconds_within(low, high))
        return None if ms is None else ms / 1000.0
    if name == "ping_targets":
        return _ping_targets(r, t)
    default = Settings.__dataclass_fields__[name].default
    check = (abs_path if name in _PATHS else choice(*VIP_ORDERS) if name == "vip"
             else check_address if name == "metrics_address"
             else within(*BOUNDS[name]) if name in BOUNDS else None)
    return r.value(t, KEY, name, type(default), check=check)


def _seconds_within(low: float, high: float):
    def check(ms: int) -> int:
        if not low <= ms / 1000.0 <= high:
            raise ValueError(f"{ms / 1000.0:g}s is outside {low}..{high} seconds")
        return ms
    return check


def _ping_targets(r: Reader, t: dict) -> tuple | None:
    raw = t["ping_targets"]
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        r.problem(join(KEY, "ping_targets"), "expected an array of IP addresses")
        return None
    try:
        return tuple(str(ipaddress.ip_address(a)) for a in raw)
    except ValueError as exc:
        r.problem(join(KEY, "ping_targets"), str(exc))
        return None


def _relations(r: Reader, s: Settings, given: dict) -> None:
    def problem(key, message):
        r.problem(join(KEY, key), message)
    if s.dead_time < 3 * s.interval:
        problem("dead_time", f"{s.dead_time * 1000:.0f}ms is under 3 heartbeat intervals "
                f"({3 * s.interval * 1000:.0f}ms): one late packet would look like a dead node")
    if "warn_time" in given and not 0 < s.warn_time < s.dead_time:
        problem("warn_time", "must be above 0 and below dead_time")
    if s.ping_targets and s.ping_interval > s.dead_time / 4:
        problem("ping_interval", "must be at most a quarter of dead_time: the upstream must be "
                "known (half the dead time without an answer) before the peer is declared dead")
    if s.fence_delay and s.fence_delay < 2 * s.interval:
        problem("fence_delay", "must be 0 or at least two heartbeat intervals (the "
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
    stack: Stack
    node: str
    settings: Settings

    @property
    def me(self) -> Node:
        return self.stack.node(self.node)

    @property
    def peer(self) -> Node:
        return self.stack.peer(self.node)

    @property
    def preferred(self) -> bool:
        """This node is the stack's primary: it acquires first and shoots first in a tie."""
        return self.stack.primary.name == self.node

    @property
    def links(self) -> tuple[LinkEnd, ...]:
        return tuple(LinkEnd(link.name, link.number, str(link.addresses[self.node].ip),
                             str(link.addresses[self.peer.name].ip), link.interface)
                     for link in self.stack.links)

    @property
    def vip_first(self) -> bool:
        """The patent's order: the VIP moves before the peer is fenced."""
        if self.settings.vip:
            return self.settings.vip == "before_fence"
        return self.stack.vip.start_after is None

    @property
    def metrics_endpoint(self) -> Endpoint | None:
        """Where to serve metrics (a link's name resolved to this node's address), or None."""
        if not self.settings.metrics_address:
            return None
        end = parse_address(self.settings.metrics_address)
        if end.is_link:
            end = Endpoint(next(e.local for e in self.links if e.name == end.host), end.port)
        return end

    @property
    def fence_confirmed_file(self) -> str:
        return self.stack.partition.fence_confirmed_file


def load_config(path: Path | str, node: str) -> Config:
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
    _check_metrics_link(stack, s)
    return Config(stack, node, s)


def _check_metrics_link(stack, s: Settings) -> None:
    """A link named in metrics_address must be one of the stack's."""
    end = parse_address(s.metrics_address) if s.metrics_address else None
    names = [link.name for link in stack.links]
    if end is not None and end.is_link and end.host not in names:
        raise StackError(stack.file, [("hamon.metrics_address", f"{end.host!r} is neither an "
                                       f"IP address nor a link of this stack ({', '.join(names)})")])
