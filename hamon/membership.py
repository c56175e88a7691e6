"""Is the peer alive? Per-link last-seen, loss and worst gap, on the monotonic clock.

The peer is alive while *any* link delivered an admitted heartbeat within
the dead time; a link that stays silent that long is down, which is reported
(the node is degraded) but is not a failure of the peer. A gap between two
heartbeats longer than the warn time is a *late* heartbeat, logged with the
worst gap seen so far, the figure to tune the dead time by.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.hamon.packet import Heartbeat

LOSS_WINDOW = 100  # link sequence numbers the loss figure looks back over


@dataclass(frozen=True)
class LinkView:
    name: str
    up: bool
    last_seen: float | None      # seconds ago, None: never
    loss: float | None           # fraction lost over the last LOSS_WINDOW packets
    worst_gap: float             # seconds
    received: int


@dataclass(frozen=True)
class PeerLiveness:
    alive: bool
    ever_seen: bool
    silent_for: float            # seconds since the last heartbeat on any link (inf: never)
    links: tuple                 # LinkView, in link order
    status: object               # the peer's last Status, or None
    generation: int | None
    ack_seq: int                 # the newest of our seqs the peer echoed
    worst_gap: float


class _Link:
    def __init__(self, name):
        self.name = name
        self.last = None
        self.received = 0
        self.worst_gap = 0.0
        self.recent = deque(maxlen=LOSS_WINDOW)
        self.up = False

    def heard(self, link_seq, now):
        if self.recent and link_seq <= self.recent[-1]:
            self.recent.clear()  # the peer restarted: its link counter did too
        self.recent.append(link_seq)
        if self.last is not None:
            self.worst_gap = max(self.worst_gap, now - self.last)
        self.last = now
        self.received += 1

    def loss(self):
        if len(self.recent) < 2:
            return None
        span = self.recent[-1] - self.recent[0] + 1
        return max(0.0, 1.0 - len(self.recent) / span)

    def view(self, now):
        return LinkView(self.name, self.up, None if self.last is None else now - self.last,
                        self.loss(), self.worst_gap, self.received)


class Membership:
    """What the heartbeats say about the peer; ``log`` gets the late and link messages."""

    def __init__(self, link_names, dead_time, warn_time, log):
        self.links = [_Link(name) for name in link_names]
        self.dead_time = dead_time
        self.warn_time = warn_time
        self.log = log
        self.last = None
        self.worst_gap = 0.0
        self.status = None
        self.generation = None
        self.seq = -1              # of the newest packet: its status and echo are the peer's word
        self.ack_seq = 0

    def heard(self, hb: Heartbeat, now: float) -> None:
        """Account one admitted heartbeat that arrived at ``now``."""
        if self.last is not None:
            gap = now - self.last
            if gap > self.worst_gap:
                self.worst_gap = gap
            if gap > self.warn_time:
                self.log.warning(f"late heartbeat from {hb.status.node}: {gap * 1000:.0f}ms "
                                 f"since the previous one (worst {self.worst_gap * 1000:.0f}ms, "
                                 f"dead after {self.dead_time * 1000:.0f}ms)")
        link = self.links[hb.link]
        link.heard(hb.link_seq, now)
        if not link.up:
            link.up = True
            self.log.info(f"link {link.name}: up")
        if self.generation is not None and hb.generation != self.generation:
            self.log.info(f"{hb.status.node} restarted (generation {self.generation} -> "
                          f"{hb.generation})")
            self.seq = -1
        self.last = now
        if hb.seq > self.seq:  # a packet overtaken on another link says nothing newer
            self.status, self.seq, self.ack_seq = hb.status, hb.seq, hb.ack_seq
        self.generation = hb.generation

    def update(self, now: float) -> None:
        """Mark links down that stayed silent for the dead time."""
        for link in self.links:
            if link.up and (link.last is None or now - link.last >= self.dead_time):
                link.up = False
                self.log.warning(f"link {link.name}: down (silent for "
                                 f"{(now - link.last) * 1000:.0f}ms)")

    def view(self, now: float) -> PeerLiveness:
        self.update(now)
        silent = float("inf") if self.last is None else now - self.last
        return PeerLiveness(
            alive=silent < self.dead_time, ever_seen=self.last is not None, silent_for=silent,
            links=tuple(link.view(now) for link in self.links), status=self.status,
            generation=self.generation, ack_seq=self.ack_seq, worst_gap=self.worst_gap)
