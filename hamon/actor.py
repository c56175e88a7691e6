"""Carrying out decisions: one step at a time per lane, in worker threads.

The main loop must keep sending and receiving heartbeats while an agent
starts or a BMC answers (a node busy taking over that falls silent would
look dead to its peer), so every action that runs a command is a *job* for
a :class:`Worker` thread: :meth:`Actor.job` turns a decision into a function
of no arguments that touches nothing shared, and when it returns,
:meth:`Actor.apply` records its result in the :class:`~hapack.hamon.world.World`
from the main thread. There are two lanes, each running one job at a time:
the agents (which keeps the steps of a takeover in order) and the peer's
BMC (so a slow BMC never holds up the VIP); "busy" is a plain fact of the
snapshot that the decision reads.
"""

from __future__ import annotations

import threading
import time
import traceback

from hapack.hamon.snapshot import Act, Power, Res
from hapack.hamon.fence import FenceFailed, record_confirmation
from hapack.ocf.runner import OCF

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable
    from hapack.hamon.snapshot import Decision

PROMOTED_CODES = (OCF.RUNNING_PROMOTED, OCF.DEGRADED_PROMOTED)
STARTED_CODES = (OCF.SUCCESS, OCF.DEGRADED)
DEGRADED_CODES = (OCF.DEGRADED, OCF.DEGRADED_PROMOTED)  # running, but something is missing


class Worker:
    """One background thread running one job at a time; wakes the loop when done.

    ``threaded=False`` runs each job at once in the caller (tests with a fake clock).
    """

    def __init__(self, wake, clock=time.monotonic, threaded=True):
        self.wake = wake            # callable: makes the main loop's select() return
        self.clock = clock
        self.threaded = threaded
        self.current = None         # (name, decision, started)
        self.done = []
        self._lock = threading.Lock()

    @property
    def busy(self) -> str | None:
        current = self.current
        return current[0] if current else None

    def submit(self, name: str, decision: Decision, job: Callable) -> None:
        self.current = (name, decision, self.clock())
        if self.threaded:
            threading.Thread(target=self._run, args=(job,), name=f"hamon-{name}",
                             daemon=True).start()
        else:
            self._run(job)

    def _run(self, job):
        name, decision, started = self.current
        try:
            result = job()
        except Exception as exc:  # a bug in a job must not kill the loop: report it
            result = RuntimeError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        with self._lock:
            self.done.append((decision, result, started, self.clock()))
            self.current = None
        self.wake()

    def collect(self) -> list[Any]:
        with self._lock:
            done, self.done = self.done, []
        return done


def classify(rc: int) -> Res:
    if rc in PROMOTED_CODES:
        return Res.PROMOTED
    if rc in STARTED_CODES:
        return Res.STARTED
    if rc == OCF.NOT_RUNNING:
        return Res.STOPPED
    return Res.FAILED


class Actor:
    def __init__(self, world, ocf, fencer, node, confirmation_file, log):
        self.world = world
        self.ocf = ocf
        self.fencer = fencer
        self.node = node
        self.confirmation_file = confirmation_file
        self.log = log

    # -- jobs: run in the worker, touch nothing shared ------------------------------
    def job(self, d: Decision) -> Callable:
        if d.action is Act.PROBE:
            return self._probe_job([r.resource for r in self.world.all()])
        if d.action in (Act.POWER_STATUS, Act.FENCE):
            return self._power_job(self.fencer.status if d.action is Act.POWER_STATUS
                                   else self.fencer.off)
        res = self.world.by_name[d.resource]
        r = res.resource
        if d.action is Act.MONITOR:
            promoted = res.status is Res.PROMOTED
            return lambda: self.ocf.run(r, "monitor", r.interval(promoted))
        if d.action is Act.RESTART:
            return self._restart_job(r)
        verb = {Act.START: "start", Act.STOP: "stop", Act.PROMOTE: "promote",
                Act.DEMOTE: "demote"}[d.action]
        return lambda: self.ocf.run(r, verb)

    @staticmethod
    def _power_job(call):
        def power():
            try:
                return call()
            except FenceFailed as exc:
                return exc
        return power

    def _probe_job(self, resources):
        def probe():
            found = {}
            for r in resources:
                seen = self.ocf.run(r, "monitor")
                cleanup = None
                if classify(seen.rc) is Res.FAILED:
                    cleanup = self.ocf.run(r, "stop")
                found[r.name] = (seen, cleanup)
            return found
        return probe

    def _restart_job(self, r):
        def restart():
            first = self.ocf.run(r, "stop")
            return first, (self.ocf.run(r, "start") if first.ok else None)
        return restart

    # -- results: applied in the main thread ----------------------------------------
    def apply(self, d: Decision, result: Any, now: float) -> tuple[bool, str]:
        """Record a finished job; returns (ok, detail) for the timeline and the log."""
        if isinstance(result, RuntimeError):
            self.log.error(f"{d.action.value} {d.resource or ''}: internal error: {result}")
            if d.action in (Act.STOP, Act.DEMOTE, Act.RESTART):
                self.world.by_name[d.resource].status = Res.STOP_FAILED
            return False, str(result).splitlines()[0]
        if d.action is Act.PROBE:
            return self._probed(result, now)
        if d.action in (Act.POWER_STATUS, Act.FENCE):
            return self._powered(d, result, now)
        res = self.world.by_name[d.resource]
        if d.action is Act.RESTART:
            return self._restarted(res, result, now)
        return self._finished(res, d.action, result, now)

    def _probed(self, found, now):
        for name, (seen, cleanup) in found.items():
            res = self.world.by_name[name]
            status = classify(seen.rc)
            if cleanup is not None:
                status = Res.STOPPED if cleanup.ok else Res.STOP_FAILED
                self.log.warning(f"{name}: probe found it failed ({seen.describe()}); "
                                 f"stopped it: {cleanup.describe()}")
            res.status, res.last = status, seen.describe()
            self._watch_degraded(res, seen)
            self._schedule(res, now)
        self.world.probed = True
        running = [n for n, r in self.world.by_name.items() if r.status in
                   (Res.STARTED, Res.PROMOTED)]
        return True, f"running here: {', '.join(running) or 'nothing'}"

    def _powered(self, d, result, now):
        self.world.power_at = now
        if d.action is Act.FENCE:
            self.world.last_fence_at = now
        if isinstance(result, FenceFailed):
            # no answer is no evidence: an earlier "off" must not look fresh now
            self.world.power = Power.UNKNOWN
            if d.action is Act.FENCE:
                self.world.fence_attempts += 1
            return False, str(result)
        if d.action is Act.FENCE or result is Power.OFF:
            self.world.power = Power.OFF
            how = getattr(self.fencer, "verified_by", "") or (
                "fence_bmc off" if d.action is Act.FENCE else "fence_bmc status")
            record_confirmation(self.confirmation_file, self.fencer.peer, self.node, how,
                                self.log)
            return True, f"power off confirmed ({how})"
        self.world.power = result
        return True, f"power {result.value}"

    def _finished(self, res, action, outcome, now):
        res.last = outcome.describe()
        if action is Act.MONITOR or (action is Act.STOP and outcome.ok):
            self._watch_degraded(res, outcome)
        if action in (Act.STOP, Act.DEMOTE):
            if outcome.ok or (action is Act.DEMOTE and outcome.rc == OCF.NOT_RUNNING):
                res.status = Res.STOPPED if action is Act.STOP else Res.STARTED
            else:
                res.status = Res.STOP_FAILED
            res.next_monitor = float("inf") if action is Act.STOP else res.next_monitor
            return res.status is not Res.STOP_FAILED, res.last
        expected = {Act.START: Res.STARTED, Act.PROMOTE: Res.PROMOTED}.get(action, res.status)
        got = classify(outcome.rc) if action is Act.MONITOR else (
            expected if outcome.ok else Res.FAILED)
        return self._settle(res, expected, got, now)

    def _watch_degraded(self, res, outcome):
        """One warning event when a resource's monitor turns degraded (190/191: it runs,
        so nothing is decided on it), one info event when that ends; none while it stays."""
        name = res.resource.name
        if outcome.rc in DEGRADED_CODES:
            reason = outcome.reason or "no exit reason"
            if not res.degraded:
                self.log.event("degraded", f"{name}: degraded, left running: {reason}",
                               "warning", resource=name, degraded=True, reason=reason,
                               rc=outcome.rc)
            res.degraded = reason
        elif res.degraded:
            res.degraded = ""
            self.log.event("degraded", f"{name}: no longer degraded ({outcome.describe()})",
                           "info", resource=name, degraded=False, reason=outcome.describe(),
                           rc=outcome.rc)

    def _restarted(self, res, result, now):
        down, up = result
        if not down.ok:
            res.status, res.last = Res.STOP_FAILED, down.describe()
            return False, res.last
        res.last = up.describe()
        return self._settle(res, Res.STARTED, Res.STARTED if up.ok else Res.FAILED, now)

    def _settle(self, res, expected, got, now):
        if expected in (Res.STARTED, Res.PROMOTED) and got is not expected:
            res.failures.append(now)
            res.status = Res.FAILED
            self.log.warning(f"{res.resource.name}: {got.value}, expected {expected.value} "
                             f"({res.last}); {res.recent_failures(now, self.world.failure_timeout)}"
                             " recent failures")
            return False, res.last
        res.status = got
        self._schedule(res, now)
        return True, res.last

    def _schedule(self, res, now):
        if res.status in (Res.STARTED, Res.PROMOTED):
            res.next_monitor = now + res.resource.interval(res.status is Res.PROMOTED)
        else:
            res.next_monitor = float("inf")


def step_name(d: Decision) -> str:
    """How a decision appears in a timeline."""
    return f"{d.action.value} {d.resource}" if d.resource else d.action.value
