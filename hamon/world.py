"""What the daemon remembers between ticks, and the snapshot decide() gets of it.

:class:`World` is the only mutable record of the daemon: each resource's
status, recent failures and next monitor; the peer's power as its BMC last
reported it and the fencing so far; the current takeover's bookkeeping; the
operator's requests. It is changed in the main thread only (results of the
worker are applied there), and :meth:`World.snapshot` freezes it, with the
membership's view of the peer, into a :class:`~hapack.hamon.decide.Snapshot`.
"""

from __future__ import annotations

import os
from collections import Counter, deque

from hapack.hamon.packet import Status
from hapack.hamon.snapshot import Policy, Power, Res, ResourceView, Snapshot
from hapack.hamon.states import ACTIVE, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.hamon.membership import PeerLiveness
    from hapack.hamon.config import Config
    from hapack.hamon.states import StateMachine

MAINTENANCE_FILE = "maintenance"   # in state_dir: maintenance mode survives a restart

INF = float("inf")


class ResourceState:
    def __init__(self, resource):
        self.resource = resource
        self.status = Res.UNKNOWN
        self.failures = deque()
        self.next_monitor = INF
        self.last = ""                # the last outcome, for status
        self.degraded = ""            # the exit reason while monitors report 190/191

    def recent_failures(self, now: float, timeout: float | int) -> int:
        while self.failures and timeout and now - self.failures[0] > timeout:
            self.failures.popleft()
        return len(self.failures)


class World:
    def __init__(self, partition, base, side, failure_timeout, migration_threshold):
        self.partition = ResourceState(partition)
        self.base = [ResourceState(r) for r in base]
        self.side = [ResourceState(r) for r in side]
        self.by_name = {r.resource.name: r for r in self.all()}
        self.failure_timeout = failure_timeout
        self.migration_threshold = migration_threshold
        self.probed = False
        self.power = Power.UNKNOWN
        self.power_at = None
        self.fence_attempts = 0
        self.last_fence_at = None
        self.was_active = False
        self.claim_seq = None
        self.vip_tried = False
        self.handed_over = False
        self.handed_over_at = None
        self.release_for_peer = False
        self.standby = False
        self.maintenance = False
        self.takeover_requested = None  # monotonic time of the request
        self.stopping = False
        self.peer_healthy_since = None
        self.timeline = None
        self.timelines = {}
        self.takeovers = 0                # never reset (metrics): takeovers begun
        self.bmc_results = Counter()      # never reset (metrics): (Act, ok) of BMC steps

    def all(self) -> list[ResourceState]:
        return [self.partition, *self.base, *self.side]

    def holding(self) -> bool:
        """Any part of the stateful side is (or may be) running here.

        Not yet known counts: until its probe, a resource may be running (hamon
        restarted under a running stack)."""
        return self.partition.status in (Res.PROMOTED, Res.STOP_FAILED, Res.UNKNOWN) or any(
            r.status in (Res.STARTED, Res.FAILED, Res.STOP_FAILED, Res.UNKNOWN)
            for r in self.side)

    def probing(self) -> bool:
        """Some part of the stateful side is not known yet (before or during the probe)."""
        return not self.probed or any(r.status is Res.UNKNOWN
                                      for r in (self.partition, *self.side))

    def forget_resources(self) -> None:
        """Before a new probe: what ran here is not known any more."""
        self.probed = False
        for r in self.all():
            r.status = Res.UNKNOWN

    def eligible(self, now: float) -> bool:
        return all(r.recent_failures(now, self.failure_timeout) < self.migration_threshold
                   for r in (self.partition, *self.side))

    def active(self, state: State) -> bool:
        return state in ACTIVE or self.holding()

    def heartbeat(self, node: str, state: State, now: float, upstream: bool | None) -> Status:
        """What our heartbeat says about this node in ``state``."""
        return Status(
            node=node, state=state.value, active=self.active(state),
            eligible=self.eligible(now) and not self.standby and state not in (
                State.STOPPING, State.STOPPED, State.MAINTENANCE),
            released=self.handed_over, stop_failed=state is State.FAILED,
            maintenance=state is State.MAINTENANCE or self.maintenance,
            leaving=state in (State.STOPPING, State.STOPPED),
            request="takeover" if self.takeover_requested else "", upstream=upstream,
            probing=self.probing())

    def confirmed_off(self, now: float, silent_for: float) -> bool:
        """The peer's BMC reported its power off after its last heartbeat (``silent_for``
        ago): the peer is lost whether or not the dead time has passed (decide's gate
        reads the same from the snapshot)."""
        return self.power is Power.OFF and self.power_at is not None \
            and now - self.power_at <= silent_for

    def forget_power(self) -> None:
        self.power, self.power_at = Power.UNKNOWN, None
        self.fence_attempts, self.last_fence_at = 0, None

    def views(self, group: list[ResourceState], now: float) -> tuple[ResourceView, ...]:
        return tuple(ResourceView(r.resource.name, r.status,
                                  r.recent_failures(now, self.failure_timeout),
                                  now >= r.next_monitor) for r in group)

    def snapshot(self, machine: StateMachine, now: float, started: float, peer: PeerLiveness,
                 policy: Policy, peer_name: str, preferred: bool, busy: str | None,
                 bmc_busy: str | None, upstream: bool | None, dead_time: float) -> Snapshot:
        lost_for = 0.0 if peer.alive else max(0.0, peer.silent_for - dead_time)
        return Snapshot(
            state=machine.state, in_state=now - machine.since, uptime=now - started,
            policy=policy, peer_name=peer_name, preferred=preferred, peer=peer,
            partition=self.views([self.partition], now)[0], base=self.views(self.base, now),
            side=self.views(self.side, now), probed=self.probed, busy=busy, bmc_busy=bmc_busy,
            power=self.power,
            power_age=INF if self.power_at is None else now - self.power_at,
            lost_for=lost_for if peer.ever_seen else INF, fence_attempts=self.fence_attempts,
            last_fence_ago=INF if self.last_fence_at is None else now - self.last_fence_at,
            was_active=self.was_active,
            claim_acked=self.claim_seq is not None and peer.ack_seq >= self.claim_seq,
            vip_tried=self.vip_tried, handed_over=self.handed_over,
            peer_healthy_for=0.0 if self.peer_healthy_since is None
            else now - self.peer_healthy_since,
            upstream=upstream, eligible=self.eligible(now), standby=self.standby,
            maintenance=self.maintenance, takeover_requested=self.takeover_requested is not None,
            stopping=self.stopping)


def policy_of(config: Config) -> Policy:
    s, cluster = config.settings, config.stack.cluster
    return Policy(initdead=s.initdead, warn_time=s.warn, fence_delay=s.fence_delay, fence_retries=s.fence_retries,
                  fence_retry_interval=s.fence_retry_interval,
                  migration_threshold=cluster.migration_threshold, vip_first=config.vip_first,
                  auto_failback=s.auto_failback, failback_holddown=s.failback_holddown)


def load_maintenance(state_dir: str) -> bool:
    """Maintenance mode as the operator last set it (kept across restarts of the daemon)."""
    return os.path.exists(os.path.join(state_dir, MAINTENANCE_FILE))


def save_maintenance(state_dir: str, on: bool) -> None:
    """Record maintenance mode in ``state_dir`` (a file present while it is on)."""
    path = os.path.join(state_dir, MAINTENANCE_FILE)
    if not on:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    os.makedirs(state_dir, exist_ok=True)
    with open(path, "w", encoding="ascii") as handle:
        handle.write("on: hamon leaves every resource as it is (hamon maintenance off)\n")
        handle.flush()
        os.fsync(handle.fileno())
