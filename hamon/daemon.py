"""The daemon shell: the loop, signals, systemd notify and watchdog.

One thread runs the loop; it sleeps in select() on the heartbeat sockets,
the control socket and a wake-up pipe, at most one tick (50 ms). Each tick:
drain the heartbeats (after a freeze of this node the queued ones are read
first, so a freeze never makes the peer look dead), apply what the workers
finished, decide, act, and send our heartbeat when due. Signal handlers
only set flags. The systemd watchdog is fed only after a tick that ran to
its end and kept the heartbeats on time.
"""

from __future__ import annotations

import collections
import math
import os
import select
import signal
import socket
import time
import traceback

from hapack.hamon.actor import Actor, Worker, step_name
from hapack.hamon.decide import decide
from hapack.hamon.membership import Membership
from hapack.hamon.ocfexec import stack_resources
from hapack.hamon.snapshot import BMC_ACTIONS, Act
from hapack.hamon.states import ACTIVE, State, StateMachine
from hapack.hamon.timeline import Timeline
from hapack.hamon.world import World, load_maintenance, policy_of, save_maintenance

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.hamon.packet import Status
    from hapack.hamon.config import Settings
    from hapack.hamon.snapshot import Decision

TICK = 0.05
MAX_DECISIONS_PER_TICK = 8     # state changes decided back to back within one tick
HANDOVER_GRACE = 30.0          # how long a release waits for the peer to take over
TAKEOVER_REQUEST_TTL = 60.0
MAX_TICK_ERRORS = 5


def sd_notify(message: str) -> None:
    """systemd's notify protocol without a dependency; silent when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), path)
    except OSError:
        pass


def fresh_window(settings: Settings, links: int) -> int:
    """How many of our newest packets a peer's echo may name (three dead times' worth)."""
    return links * (3 * math.ceil(settings.dead_time / settings.interval) + 4)


class Daemon:
    def __init__(self, config, transport, ocf, fencer, log, *, pinger=None,
                 clock=time.monotonic, threaded=True):
        self.config = config
        self.s = config.settings
        self.transport = transport
        self.log = log
        self.clock = clock
        self.pinger = pinger
        self.policy = policy_of(config)
        self.membership = Membership([link.name for link in config.links], self.s.dead_time,
                                     self.s.warn, log)
        cluster = config.stack.cluster
        self.world = World(*stack_resources(config.stack), cluster.failure_timeout / 1000.0,
                           cluster.migration_threshold)
        self.world.maintenance = load_maintenance(self.s.state_dir)
        self.machine = StateMachine(log, self._on_change, clock)
        self.actor = Actor(self.world, ocf, fencer, config.node, config.fence_confirmed_file, log)
        # two lanes: the BMC's answer must not wait for an agent, nor the VIP for the BMC
        self.workers = {lane: Worker(self.wake, clock, threaded) for lane in ("agents", "bmc")}
        self.started = clock()
        self.next_send = self.started
        self.peer_alive = False
        self.last_decision = None
        self.recent = collections.deque(maxlen=4)
        self.reason = ""
        self.running = True
        self.signals = 0
        self.tick_errors = 0
        self.metrics = None          # a hamon.metrics.MetricsServer: published once per tick
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- the tick ----------------------------------------------------------------------
    def tick(self) -> Decision:
        """One pass; returns the last decision taken."""
        for hb in self.transport.receive():
            self.membership.heard(hb, self.clock())
        self._signals()
        for _ in range(MAX_DECISIONS_PER_TICK):
            for worker in self.workers.values():
                for d, result, started, ended in worker.collect():
                    self._finished(d, result, started, ended)
            decision = self._decide_and_act(self.clock())
            if decision.action is Act.WAIT or not self.running:
                break
        if self.clock() >= self.next_send:
            self.send()
        if self.metrics is not None:
            self.metrics.publish(self)
        return decision

    def snapshot(self, now: float, peer: Any = None) -> Any:
        """What the next decision sees (``peer``: the membership's view at ``now``)."""
        return self.world.snapshot(
            self.machine, now, self.started, peer or self.membership.view(now), self.policy,
            self.config.peer.name, self.config.preferred, self.workers["agents"].busy,
            self.workers["bmc"].busy, self.upstream(), self.s.dead_time)

    def _decide_and_act(self, now):
        """Decide until a decision is more than a change of state, and act on it."""
        peer = self.membership.view(now)
        self._track_peer(peer, now)
        for _ in range(MAX_DECISIONS_PER_TICK):
            decision = decide(self.snapshot(now, peer))
            self._note(decision)
            if decision.to is not None:
                self.machine.transition(decision.to, decision.reason)
            if decision.action is not Act.GOTO:
                break
        self._act(decision)
        return decision

    def _act(self, d):
        if d.action in (Act.WAIT, Act.GOTO):
            return
        if d.action is Act.EXIT:
            self.running = False
            return
        if d.resource == "vip" and self.machine.state is State.TAKEOVER:
            self.world.vip_tried = True
        self._lane(d).submit(step_name(d), d, self.actor.job(d))

    def _lane(self, d):
        return self.workers["bmc" if d.action in BMC_ACTIONS else "agents"]

    def _finished(self, d, result, started, ended):
        ok, detail = self.actor.apply(d, result, ended)
        if d.action in BMC_ACTIONS:
            self.world.bmc_results[d.action, ok] += 1
        level = "info" if ok else "warning"
        self.log.event("step", f"{step_name(d)}: {'done' if ok else 'FAILED'} in "
                       f"{ended - started:.3f}s ({detail})", level, step=step_name(d), ok=ok,
                       seconds=round(ended - started, 4), detail=detail)
        if d.action is not Act.MONITOR:
            self.recent.append((step_name(d), started, ended, ok, detail))
            if self.world.timeline is not None:
                self.world.timeline.add(step_name(d), started, ended, ok, detail)

    def _note(self, d):
        key = (d.action, d.resource, d.to, "".join(c for c in d.reason if not c.isdigit()))
        if key != self.last_decision:
            self.last_decision = key
            quiet = d.action in (Act.MONITOR, Act.GOTO) or d.reason.startswith("busy")
            level = "debug" if quiet else "info"
            self.log.event("decision", d.reason, level, action=d.action.value,
                           resource=d.resource, state=self.machine.state.value)
        self.reason = d.reason

    # -- the peer ----------------------------------------------------------------------
    def _track_peer(self, peer, now):
        w, status = self.world, peer.status
        off = w.confirmed_off(now, peer.silent_for)
        alive = peer.alive and not off
        if alive != self.peer_alive:
            self.peer_alive = alive
            if alive:  # a heartbeat newer than the BMC's answer: that answer is no evidence
                w.forget_power()
                self.log.event("peer", f"{self.config.peer.name} is alive", alive=True)
            else:
                why = " and its BMC reports the power off" if off and peer.alive else \
                    " on every link"
                self.log.event("peer", f"{self.config.peer.name} lost: silent for "
                               f"{peer.silent_for * 1000:.0f}ms{why}", "warning", alive=False)
        if w.handed_over and (not peer.alive or status.active or not status.eligible
                              or now - w.handed_over_at > HANDOVER_GRACE):
            w.handed_over = False
        healthy = peer.alive and status.eligible and not status.maintenance
        w.peer_healthy_since = (w.peer_healthy_since or now) if healthy else None
        if w.takeover_requested and now - w.takeover_requested > TAKEOVER_REQUEST_TTL:
            self.log.warning("the takeover request expired")
            w.takeover_requested = None

    def _on_change(self, old, new, reason):
        now, w = self.clock(), self.world
        self.log.event("transition", "", old=old.value, to=new.value, reason=reason)
        self.next_send = now  # every change of state is announced at once
        if new is State.TAKEOVER and old is not State.BLOCKED:
            w.was_active = old in ACTIVE or w.holding()
            w.takeovers += 1
            w.claim_seq = self.transport.seq + 1
            w.vip_tried = False
            last = self.membership.last
            # a silent peer (dead, or late and powered off): count from its last heartbeat
            origin = last if last is not None and now - last >= self.s.warn else now
            w.timeline = Timeline("takeover", reason, origin, self.clock)
            for step in self.recent:  # what was done since the peer went silent (early asks)
                if step[1] >= origin:
                    w.timeline.add(*step)
            w.timeline.mark("decided", reason)
        elif new is State.BLOCKED and w.timeline is not None:
            w.timeline.mark("blocked", reason)
        elif new is State.RELEASING:
            w.release_for_peer = old is State.PRIMARY
            if w.timeline is None:
                w.timeline = Timeline("release", reason, now, self.clock)
            w.timeline.mark("releasing", reason)
        elif new is State.STARTING:
            w.forget_resources()
        if new in (State.PRIMARY, State.SECONDARY):
            self._settled(old, new, reason, now)

    def _settled(self, old, new, reason, now):
        w = self.world
        if new is State.PRIMARY:
            w.takeover_requested, w.claim_seq = None, None
        if old is State.RELEASING:
            w.handed_over, w.handed_over_at = w.release_for_peer, now
        if w.timeline is not None:
            w.timeline.close(f"{new.value}: {reason}")
            w.timelines[w.timeline.kind] = w.timeline.to_dict()
            w.timeline.save(os.path.join(self.s.state_dir, f"last-{w.timeline.kind}.json"))
            self.log.event("timeline", f"{w.timeline.kind} done in "
                           f"{w.timeline.steps[-1]['end']:.3f}s: {reason}",
                           timeline=w.timeline.to_dict())
            w.timeline = None

    # -- our heartbeat -----------------------------------------------------------------
    def status(self) -> Status:
        return self.world.heartbeat(self.config.node, self.machine.state, self.clock(),
                                    self.upstream())

    def set_maintenance(self, on: bool) -> None:
        """The operator's maintenance mode: kept in state_dir, so a restart keeps it."""
        save_maintenance(self.s.state_dir, on)
        self.world.maintenance = on

    def send(self) -> list[Any]:
        failed = self.transport.send(self.status())
        for link in failed:
            self.log.debug(f"link {self.config.links[link].name}: send failed")
        self.next_send = max(self.next_send + self.s.interval, self.clock())
        return failed

    def upstream(self) -> bool | None:
        return None if self.pinger is None else self.pinger.up

    # -- signals, the loop -------------------------------------------------------------
    def _signal(self, signum, frame):
        self.signals += 1
        self.wake()

    def _signals(self):
        if self.signals and not self.world.stopping:
            self.log.info("asked to stop")
            self.world.stopping = True
        if self.signals > 1 and self.running:
            self.log.warning("asked to stop again: leaving at once, resources as they are")
            self.running = False

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def run(self, control: Any = None) -> int:
        """Run until stopped; returns the exit status."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._signal)
        watchdog = Watchdog()
        sd_notify("READY=1\nSTATUS=running")
        fds = self.transport.fileno_list() + [self._wake_r] + ([control] if control else [])
        try:
            while self.running:
                ready, _, _ = select.select(fds, [], [], self._sleep())
                self._drain_wake()
                if self._safe_tick() and self.clock() - self.next_send < self.s.interval:
                    watchdog.feed()
                if control is not None and control in ready:
                    control.serve()
        finally:
            sd_notify("STOPPING=1")
            self.send()
        return 1 if self.tick_errors >= MAX_TICK_ERRORS else 0

    def _sleep(self):
        """Until the next tick, heartbeat, or moment the peer turns late or dead."""
        now = self.clock()
        wake = [self.next_send, now + TICK]
        last = self.membership.last
        if last is not None:
            wake += [t for t in (last + self.s.warn, last + self.s.dead_time) if t > now]
        return max(0.0, min(wake) - now)

    def _drain_wake(self):
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _safe_tick(self):
        try:
            self.tick()
        except Exception:  # noqa: BLE001 - a bug must be logged; the loop decides to go on
            self.tick_errors += 1
            self.log.error(f"tick failed ({self.tick_errors}): {traceback.format_exc()}")
            if self.tick_errors >= MAX_TICK_ERRORS:
                self.running = False
            return False
        self.tick_errors = 0
        return True


class Watchdog:
    """Feeds systemd's watchdog (WATCHDOG_USEC) at half its period; a no-op without it."""

    def __init__(self):
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.period = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self.last = 0.0

    def feed(self) -> None:
        if self.period is None:
            return
        now = time.monotonic()
        if now - self.last >= self.period:
            sd_notify("WATCHDOG=1")
            self.last = now
