"""What decide() reads and returns: the snapshot of one tick and the decision.

Frozen dataclasses and enums only, built by :mod:`hapack.hamon.world` from
the daemon's record and the membership's view of the peer; nothing here
reads a socket, a file or the clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hapack.hamon import defaults as D
from hapack.hamon.states import State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.hamon.membership import PeerLiveness
    from hapack.hamon.packet import Status


class Act(str, enum.Enum):
    WAIT = "wait"
    GOTO = "goto"                  # only change state
    PROBE = "probe"                # learn what runs here: one monitor of every resource
    START = "start"
    STOP = "stop"
    RESTART = "restart"            # stop, then start, in place
    PROMOTE = "promote"
    DEMOTE = "demote"
    MONITOR = "monitor"
    POWER_STATUS = "power-status"  # ask the peer's BMC
    FENCE = "fence"                # power the peer off and confirm it
    EXIT = "exit"


#: Actions that talk to the peer's BMC: they run in a lane of their own.
BMC_ACTIONS = frozenset({Act.POWER_STATUS, Act.FENCE})


class Res(str, enum.Enum):
    UNKNOWN = "unknown"
    STOPPED = "stopped"
    STARTED = "started"
    PROMOTED = "promoted"
    FAILED = "failed"
    STOP_FAILED = "stop-failed"


class Power(str, enum.Enum):
    UNKNOWN = "unknown"
    ON = "on"
    OFF = "off"                    # confirmed by the BMC: a status read or a fence


@dataclass(frozen=True)
class Decision:
    action: Act
    reason: str
    resource: str | None = None
    to: State | None = None        # the state to enter (before the action runs)


@dataclass(frozen=True)
class ResourceView:
    name: str
    status: Res
    failures: int = 0              # recent failures (within the failure timeout)
    monitor_due: bool = False


@dataclass(frozen=True)
class Policy:
    """The settings decide() reads."""

    initdead: float = D.INITDEAD
    warn_time: float = D.warn(D.DEAD_TIME)  # a heartbeat this late makes us ask the peer's BMC early
    power_query_spacing: float = D.POWER_QUERY_SPACING  # between two early questions, at least
    fence_delay: float = D.FENCE_DELAY
    fence_retries: int = D.FENCE_RETRIES
    fence_retry_interval: float = D.FENCE_RETRY_INTERVAL
    migration_threshold: int = D.MIGRATION_THRESHOLD
    vip_first: bool = True
    auto_failback: bool = D.AUTO_FAILBACK
    failback_holddown: float = D.FAILBACK_HOLDDOWN


@dataclass(frozen=True)
class Snapshot:
    state: State
    in_state: float                # seconds in this state
    uptime: float                  # seconds since the daemon started
    policy: Policy
    peer_name: str
    preferred: bool                # this node is the stack's primary
    peer: PeerLiveness
    partition: ResourceView
    base: tuple = ()               # stateless layers, in start order
    side: tuple = ()               # the stateful side after promotion, in start order (VIP included)
    probed: bool = True
    busy: str | None = None        # the agent step running now
    bmc_busy: str | None = None    # the BMC step running now
    power: Power = Power.UNKNOWN   # the peer's power, as its BMC last said
    power_age: float = float("inf")  # seconds since that answer
    lost_for: float = 0.0          # seconds since the peer was declared lost (0: alive)
    fence_attempts: int = 0
    last_fence_ago: float = float("inf")
    was_active: bool = False       # this node held the stateful side when the peer was lost
    claim_acked: bool = False      # the peer echoed a heartbeat announcing our claim
    vip_tried: bool = False        # the VIP was tried ahead of the gate in this takeover
    handed_over: bool = False      # we released the stateful side for the peer
    peer_healthy_for: float = 0.0  # seconds the peer has been alive and eligible
    upstream: bool | None = None
    eligible: bool = True
    standby: bool = False
    maintenance: bool = False
    takeover_requested: bool = False  # `hamon takeover` on this node
    stopping: bool = False

    @property
    def peer_status(self) -> Status | None:
        return self.peer.status  # type: ignore[return-value]

    def peer_says(self, flag: str) -> bool:
        """A flag of the peer's last heartbeat (False when never heard)."""
        return bool(self.peer.status is not None and getattr(self.peer.status, flag))
