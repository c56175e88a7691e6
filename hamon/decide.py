"""One decision per tick: ``decide(snapshot) -> Decision``, a pure function.

The daemon builds an immutable :class:`Snapshot` of everything it knows
(the peer's liveness and last word, this node's state and resources, the
fencing so far, operator requests), calls :func:`decide`, logs the
decision's sentence and carries out its one action. Nothing here reads a
socket, a file or the clock.

The safety rules live here, in one place:

* the partition is promoted and the stateful layers started only behind the
  *gate*: the peer's power confirmed off through its BMC, or the peer alive
  and acknowledging our claim while holding nothing, or the peer gone after
  announcing a clean exit with nothing held;
* a fence race is won by the node that held the stateful side (a tie goes to
  the stack's primary): it fences at once, the other waits ``fence_delay``;
* a node that lost its upstream (ping targets) never fences and never takes
  over: it yields;
* a node that has not seen its peer since it started takes over only once
  the peer's BMC reports the power off (wait-for-all);
* a failed stop makes this node FAILED: the peer fences it.
"""

from __future__ import annotations

from hapack.hamon.snapshot import BMC_ACTIONS, Act, Decision, Power, Res
from hapack.hamon.states import EDGES, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.hamon.snapshot import Snapshot


def wait(reason: str) -> Decision:
    return Decision(Act.WAIT, reason)


def goto(state: State, reason: str) -> Decision:
    return Decision(Act.GOTO, reason, to=state)


def decide(s: Snapshot) -> Decision:
    """The one thing to do now, and why.

    While a step runs, the state may still change, but the next step waits
    for its lane: agents (``busy``) or the peer's BMC (``bmc_busy``).
    """
    d = _decide(s)
    busy = s.bmc_busy if d.action in BMC_ACTIONS else s.busy
    if busy and d.action not in (Act.GOTO, Act.WAIT):
        return wait(f"busy: {busy} (next: {d.reason})")
    return d


def _decide(s):
    if s.state is State.STOPPED:
        return Decision(Act.EXIT, "stopped")
    if s.stopping and s.state not in (State.STOPPING, State.STOPPED):
        if s.state in (State.MAINTENANCE, State.FAILED):
            return goto(State.STOPPED, f"shutting down from {s.state.value}: resources left "
                        "as they are")
        return goto(State.STOPPING, "shutting down: stopping everything in reverse")
    if s.maintenance and s.state not in (State.MAINTENANCE, State.STOPPING):
        return goto(State.MAINTENANCE, "maintenance mode: hands off every resource")
    if State.FAILED in EDGES[s.state] and _stop_failed(s):
        return goto(State.FAILED, f"stop of {_stop_failed(s)} failed: {s.peer_name} must "
                    "fence this node")
    return _BY_STATE[s.state](s)


# -- helpers -----------------------------------------------------------------------

def _stop_failed(s):
    for view in (s.partition, *s.base, *s.side):
        if view.status is Res.STOP_FAILED:
            return view.name
    return None


def shoots_first(was_active: bool, peer_was_active: bool, preferred: bool) -> bool:
    """In a split both nodes fence; the one that held the stateful side goes first."""
    if was_active != peer_was_active:
        return was_active
    return preferred


def can_acquire(s: Snapshot) -> bool:
    return (s.eligible and not s.standby and not s.maintenance and s.upstream is not False)


def _base(s):
    """Starting, restarting and monitoring what runs on both nodes; None when all is well."""
    for view in (s.partition, *s.base):
        if view.status is Res.STOPPED:
            return Decision(Act.START, f"{view.name} is stopped: starting it", view.name)
        if view.status is Res.FAILED:
            return Decision(Act.RESTART, f"{view.name} failed ({view.failures} recent "
                            "failures): restarting it here", view.name)
    for view in (s.partition, *s.base):
        if view.monitor_due and view.status in (Res.STARTED, Res.PROMOTED):
            return Decision(Act.MONITOR, f"monitoring {view.name}", view.name)
    return None


def _power_read(s):
    """The BMC was asked after the peer's last heartbeat (whatever it answered)."""
    return s.power_age != float("inf") and s.power_age <= s.peer.silent_for


def confirmed_off(s: Snapshot) -> bool:
    """The peer's BMC reported its power off after the peer's last heartbeat.

    A power-off at any moment after the last heartbeat ended everything that
    ran there, whatever the dead time says; a failed or unanswered question
    is never "off" (the world records it as unknown)."""
    return s.power is Power.OFF and _power_read(s)


def _ask_early(s):
    """The peer is late: ask its BMC now, so a powered-off peer is taken over at once.

    The load is bounded: one question per late spell (none again before the
    next heartbeat), at least ``power_query_spacing`` after the last answer,
    and never two at once (the BMC lane runs one step at a time)."""
    if s.peer.alive and s.peer.silent_for >= s.policy.warn_time and not _power_read(s) \
            and s.power_age >= s.policy.power_query_spacing:
        return Decision(Act.POWER_STATUS, f"{s.peer_name} is late ({s.peer.silent_for:.2f}s): "
                        "asking its BMC ahead of time")
    return None


def _gate(s):
    """Why it is safe to take the partition now, or None."""
    if confirmed_off(s):
        return f"{s.peer_name} is confirmed powered off"
    if s.peer.alive and s.claim_acked and not s.peer_says("active") and _settled(s):
        return f"{s.peer_name} acknowledged our claim and holds nothing"
    if not s.peer.alive and s.peer_says("leaving") and not s.peer_says("active"):
        return f"{s.peer_name} left cleanly holding nothing"
    return None


def _settled(s):
    """The peer knows what runs on it: not starting, probing or in maintenance.

    Its "holds nothing" is worth nothing before (hamon restarted under a
    running stack says so until its probe is done), so its acknowledgement
    opens no gate."""
    st = s.peer_status
    return st is not None and not st.probing and st.state not in (
        State.STARTING.value, State.MAINTENANCE.value)


def _fence(s, first):
    """The next fencing step, or None when fencing is not wanted now."""
    if s.upstream is False:
        return wait(f"{s.peer_name} is silent but our upstream is down too: yielding "
                    "(no fencing from a node that lost its upstream)")
    if not first and not _power_read(s):
        return Decision(Act.POWER_STATUS, f"asking {s.peer_name}'s BMC whether it is "
                        "already off")
    if not first and s.lost_for < s.policy.fence_delay:
        return wait(f"{s.peer_name} held the stateful side: it fences first; waiting "
                    f"{s.policy.fence_delay - s.lost_for:.1f}s more before fencing it")
    if s.fence_attempts and s.last_fence_ago < _backoff(s):
        return wait(f"fencing {s.peer_name} failed {s.fence_attempts} times: retrying in "
                    f"{_backoff(s) - s.last_fence_ago:.1f}s")
    return Decision(Act.FENCE, f"powering {s.peer_name} off through its BMC")


def _backoff(s):
    if s.fence_attempts < s.policy.fence_retries:
        return min(1.0, s.policy.fence_retry_interval)
    return s.policy.fence_retry_interval


def _side_care(s):
    """Local restarts and monitors of the stateful side on the active node."""
    if s.partition.status is Res.FAILED:
        return goto(State.RELEASING, "the partition failed here: stopping the stateful side "
                    "(it restarts here or on the peer)")
    if s.partition.status is not Res.PROMOTED:
        return goto(State.RELEASING, f"the partition is {s.partition.status.value} here, not "
                    "promoted: stopping the stateful side (it is taken again through the gate)")
    for view in s.side:
        given_up = view.failures >= s.policy.migration_threshold
        if view.status is Res.FAILED and given_up and _peer_can_take(s):
            return goto(State.RELEASING, f"{view.name} failed {view.failures} times: "
                        f"switching over to {s.peer_name}")
        if view.status is Res.STOPPED and given_up and _peer_can_take(s):
            # left stopped while the peer could not take over (a split, the peer fenced):
            # the peer is back and able, so the stack goes to it instead of staying down
            return goto(State.RELEASING, f"{view.name} was left stopped after {view.failures} "
                        f"failures and {s.peer_name} can take over now: switching over")
        if view.status is Res.FAILED and given_up:
            return Decision(Act.STOP, f"{view.name} failed {view.failures} times and "
                            f"{s.peer_name} cannot take over: leaving it stopped", view.name)
        if view.status is Res.FAILED:
            return Decision(Act.RESTART, f"{view.name} failed ({view.failures} recent "
                            "failures): restarting it here", view.name)
        if view.status is Res.STOPPED and not given_up:
            return Decision(Act.START, f"{view.name} may run here again: starting it",
                            view.name)
    for view in (s.partition, *s.side):
        if view.monitor_due and view.status in (Res.STARTED, Res.PROMOTED):
            return Decision(Act.MONITOR, f"monitoring {view.name}", view.name)
    return None


def _peer_can_take(s):
    return peer_objection(s) is None


def peer_objection(s: Snapshot) -> str | None:
    """Why the peer cannot take the stateful side now, or None if it can."""
    if not s.peer.alive:
        return "it is not alive"
    if s.peer_says("maintenance"):
        return "it is in maintenance"
    if s.peer_says("active"):
        return "it holds or starts a part of it"
    if s.peer_status is not None and s.peer_status.upstream is False:
        return "its upstream is down"
    if not s.peer_says("eligible"):
        return ("it is in standby, stopping, or has recent failures of the stateful side: "
                f"'hamon status' on {s.peer_name}, 'hamon cleanup' there clears failures")
    return None


def _holding(s):
    return s.partition.status is Res.PROMOTED or any(
        v.status in (Res.STARTED, Res.FAILED) for v in s.side)


# -- the states --------------------------------------------------------------------

def _starting(s):
    if not s.probed:
        return Decision(Act.PROBE, "learning what already runs on this node")
    if _holding(s):
        return _resume(s)
    if s.peer.alive:
        return goto(State.SECONDARY, f"{s.peer_name} is alive")
    step = _base(s)
    if step:
        return step
    if s.takeover_requested and can_acquire(s):
        return goto(State.TAKEOVER, f"takeover requested while {s.peer_name} is silent: "
                    "fencing it first")
    if s.uptime < s.policy.initdead:
        return wait(f"waiting for {s.peer_name} (wait-for-all): {s.uptime:.1f}s of "
                    f"{s.policy.initdead:.0f}s")
    if s.power is Power.OFF and can_acquire(s):
        return goto(State.TAKEOVER, f"{s.peer_name} was never seen and its BMC reports "
                    "the power off: taking over")
    if s.power_age >= s.policy.fence_retry_interval:
        return Decision(Act.POWER_STATUS, f"{s.peer_name} not seen since start: asking its BMC")
    return wait(f"{s.peer_name} not seen since start and its power is {s.power.value}: not "
                "taking over (wait-for-all; 'hamon takeover' fences it and takes over)")


def _resume(s):
    """The stateful side runs here (found by the probe): keep it, unless the peer holds it."""
    if not (s.peer.alive and s.peer_says("active")):
        if s.partition.status is not Res.PROMOTED:
            # the VIP or a layer without the partition (a takeover cut short): finish it
            # through the gate, never start the stateful layers on an unpromoted partition
            return goto(State.TAKEOVER, f"part of the stateful side runs here but the partition "
                        f"is {s.partition.status.value}: completing the takeover through the gate")
        return goto(State.PRIMARY, "the stateful side already runs here: resuming as primary")
    peer_state = s.peer_status.state
    if peer_state in _CLAIMING or (peer_state == State.STARTING.value and (
            s.peer_says("probing") or s.preferred)):
        # it sees us active (our heartbeats said "probing", now "starting" and active):
        # a claim is abandoned, a probe ends; neither can pass the gate meanwhile
        return wait(f"the stateful side runs here and {s.peer_name} is {peer_state}: waiting "
                    "for it to abandon its claim or finish its probe")
    return goto(State.RELEASING, f"the stateful side runs here but {s.peer_name} holds it "
                "too: releasing ours")


_CLAIMING = (State.TAKEOVER.value, State.BLOCKED.value, State.RELEASING.value)


def _secondary(s):
    step = _secondary_role(s) or _ask_early(s)
    if step is not None:
        return step
    return _base(s) or wait(_standing_by(s))


def _secondary_role(s):
    if not s.peer.alive or confirmed_off(s):
        return _peer_gone(s)
    if s.peer_says("stop_failed") and can_acquire(s):
        return goto(State.TAKEOVER, f"{s.peer_name} failed to stop a resource: fencing it "
                    "and taking over")
    if not can_acquire(s) or s.peer_says("active"):
        return None
    if s.peer_says("released") and not s.handed_over:
        return goto(State.TAKEOVER, f"{s.peer_name} released the stateful side: taking it "
                    "over")
    if s.handed_over:
        return None
    if s.preferred or not s.peer_says("eligible"):
        return goto(State.TAKEOVER, "nobody holds the stateful side: acquiring it")
    return None


def _peer_gone(s):
    """The peer is silent for the dead time, or late and its BMC says its power is off."""
    if s.peer_says("maintenance"):
        return wait(f"{s.peer_name} is silent but was in maintenance: hands off")
    if not _last_resort(s):
        return wait(f"{s.peer_name} is silent but this node may not take over "
                    f"({_why_not(s)})")
    if s.peer.alive:
        # late, not dead yet: a power-off is a fact, no dead time needs to pass for it
        return goto(State.TAKEOVER, f"{s.peer_name} silent for {s.peer.silent_for:.2f}s and "
                    "its BMC reports the power off: taking over without waiting out the "
                    "dead time")
    return goto(State.TAKEOVER, f"{s.peer_name} silent for {s.peer.silent_for:.2f}s on "
                "every link")


def _last_resort(s):
    """May take over from a peer that is gone. Recent failures here do not forbid it: they
    made the peer the better home, but a gone peer is none (as Pacemaker's migration
    threshold bans the failed resource from the node, not the whole stack). A layer at
    the threshold is then left stopped (see _acquire); standby, maintenance and a down
    upstream still forbid it."""
    return not s.standby and not s.maintenance and s.upstream is not False


def _why_not(s):
    if s.maintenance:
        return "maintenance"
    if s.standby:
        return "standby"
    if s.upstream is False:
        return "its upstream is down"
    return "too many recent failures of the stateful side here"


def _standing_by(s):
    if s.peer.alive and s.peer_says("active"):
        return f"standing by: {s.peer_name} holds the stateful side"
    return "standing by"


def _takeover(s):
    if s.peer.alive and s.peer_says("active") and not s.peer_says("stop_failed") \
            and s.power is not Power.OFF and _yields_claim(s):
        return goto(State.RELEASING, f"{s.peer_name} is alive and holds the stateful side: "
                    "abandoning the takeover")
    vip = _vip(s)
    if s.policy.vip_first and vip is not None and vip.status is Res.STOPPED and not s.vip_tried:
        return Decision(Act.START, "moving the VIP first (the patent's order)", vip.name)
    gate = _gate(s)
    if gate is None:
        return _before_gate(s)
    return _acquire(s, gate)


def _yields_claim(s):
    """Both claim: the stack's primary keeps its claim, unless the peer already holds it."""
    peer_state = s.peer_status.state if s.peer_status else ""
    return peer_state not in (State.TAKEOVER.value, State.BLOCKED.value) or not s.preferred


def _before_gate(s):
    if s.peer.alive and not s.peer_says("stop_failed"):
        # a live, healthy peer is never fenced: it acknowledges, or abandons its own claim
        if s.peer_says("active"):
            return wait(f"{s.peer_name} claims the stateful side too: waiting for it to "
                        "abandon its claim (the stack's primary keeps its own)")
        return wait(f"waiting for {s.peer_name} to acknowledge our claim")
    first = (s.takeover_requested or s.peer_says("stop_failed")
             or shoots_first(s.was_active, s.peer_says("active"), s.preferred))
    step = _fence(s, first)
    if step.action is Act.FENCE and s.fence_attempts >= s.policy.fence_retries:
        return goto(State.BLOCKED, f"fencing {s.peer_name} failed {s.fence_attempts} times: "
                    "keeping the VIP only, never mounting the partition; retrying every "
                    f"{s.policy.fence_retry_interval:.0f}s")
    return step


def _vip(s):
    for view in s.side:
        if view.name == "vip":
            return view
    return None


def _acquire(s, gate):
    if s.partition.status is Res.STOPPED:
        return Decision(Act.START, "starting the partition (ready, not mounted)",
                        s.partition.name)
    if s.partition.status is not Res.PROMOTED:
        if s.partition.status is Res.FAILED and s.partition.failures >= s.policy.migration_threshold:
            return goto(State.RELEASING, f"the partition failed {s.partition.failures} times "
                        "here: giving up the takeover")
        return Decision(Act.PROMOTE, f"{gate}: promoting and mounting the partition",
                        s.partition.name)
    for view in s.side:
        given_up = view.failures >= s.policy.migration_threshold
        if given_up and view.status in (Res.FAILED, Res.STOPPED) and not _peer_can_take(s):
            if view.status is Res.FAILED:
                return Decision(Act.STOP, f"{view.name} failed {view.failures} times and "
                                f"{s.peer_name} cannot take over: leaving it stopped", view.name)
            continue            # until failure_timeout, or the peer can take the stack
        if view.status is Res.FAILED and given_up:
            return goto(State.RELEASING, f"{view.name} failed {view.failures} times here: "
                        "giving up the takeover")
        if view.status is Res.FAILED:
            return Decision(Act.RESTART, f"{view.name} failed to start: trying again",
                            view.name)
        if view.status is not Res.STARTED:
            return Decision(Act.START, f"starting {view.name}", view.name)
    return goto(State.PRIMARY, "the stateful side runs here")


def _blocked(s):
    if s.peer.alive and s.peer_says("active") and not s.peer_says("stop_failed"):
        return goto(State.RELEASING, f"{s.peer_name} is back and holds the stateful side: "
                    "dropping our VIP")
    gate = _gate(s)
    if gate is not None:
        return goto(State.TAKEOVER, f"{gate}: resuming the takeover")
    if s.peer.alive and not s.peer_says("stop_failed"):
        return goto(State.TAKEOVER, f"{s.peer_name} is back and healthy: asking it to "
                    "acknowledge our claim instead of fencing it")
    if s.upstream is not False and s.last_fence_ago >= s.policy.fence_retry_interval:
        return Decision(Act.FENCE, f"retrying to power {s.peer_name} off")
    return wait(f"fencing {s.peer_name} failed {s.fence_attempts} times: VIP only, the "
                "partition stays unmounted")


def _primary(s):
    if not s.peer.alive and s.peer.ever_seen and not confirmed_off(s) \
            and not s.peer_says("leaving") and not s.peer_says("maintenance"):
        step = _fence(s, shoots_first(True, s.peer_says("active"), s.preferred))
        if step.action is not Act.WAIT or s.upstream is False:
            return step
    # no early BMC question here: the holder fences at once, and a slow answer to a
    # question would hold its fence back in the BMC lane, giving the race away
    step = _side_care(s) or _release_wanted(s) or _base(s)
    if step is None and s.standby:
        return wait(f"standby, but {s.peer_name} cannot take the stateful side "
                    f"({peer_objection(s)}): it stays here")
    return step or wait("primary: the stateful side runs here")


def _release_wanted(s):
    if not _peer_can_take(s):
        return None
    if s.standby:
        return goto(State.RELEASING, f"standby: handing the stateful side to {s.peer_name}")
    if s.peer_status.request == "takeover":
        return goto(State.RELEASING, f"{s.peer_name} asked to take over: releasing")
    if s.upstream is False and s.peer_status.upstream:
        return goto(State.RELEASING, f"our upstream is down and {s.peer_name}'s is not: "
                    "switching over")
    if s.policy.auto_failback and not s.preferred and s.peer_healthy_for >= s.policy.failback_holddown:
        return goto(State.RELEASING, f"failing back to {s.peer_name}, healthy for "
                    f"{s.peer_healthy_for:.0f}s")
    return None


def _releasing(s):
    step = _stop_side(s)
    if step is None and s.busy:
        # a start still running (the VIP of an abandoned takeover) would leave it up here
        return wait(f"busy: {s.busy}: stopping what it started once it is done")
    return step or goto(State.SECONDARY, "the stateful side is stopped here")


def _stop_side(s):
    for view in reversed(s.side):
        if view.status in (Res.STARTED, Res.FAILED, Res.UNKNOWN):
            return Decision(Act.STOP, f"stopping {view.name}", view.name)
    if s.partition.status is Res.PROMOTED or (s.partition.status is Res.FAILED
                                              and s.partition.failures):
        return Decision(Act.DEMOTE, "unmounting and demoting the partition", s.partition.name)
    return None


def _failed(s):
    return wait(f"a stop failed: waiting for {s.peer_name} to fence this node")


def _maintenance(s):
    if not s.maintenance:
        return goto(State.STARTING, "maintenance over: looking at what runs here again")
    return wait("maintenance: nothing is started, stopped or fenced")


def _stopping(s):
    step = _stop_side(s)
    if step:
        return step
    for view in reversed((s.partition, *s.base)):
        if view.status in (Res.STARTED, Res.PROMOTED, Res.FAILED):
            return Decision(Act.STOP, f"stopping {view.name}", view.name)
    return goto(State.STOPPED, "everything is stopped")


_BY_STATE = {
    State.STARTING: _starting,
    State.SECONDARY: _secondary,
    State.TAKEOVER: _takeover,
    State.BLOCKED: _blocked,
    State.PRIMARY: _primary,
    State.RELEASING: _releasing,
    State.FAILED: _failed,
    State.MAINTENANCE: _maintenance,
    State.STOPPING: _stopping,
}
