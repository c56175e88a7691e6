"""decide(snapshot) for named situations, and the safety gate under random snapshots."""

import dataclasses
import random

import pytest

from hapack.hamon.decide import decide, shoots_first
from hapack.hamon.snapshot import Act, Policy, Power, Res, ResourceView, Snapshot
from hapack.hamon.membership import LinkView, PeerLiveness
from hapack.hamon.packet import Status
from hapack.hamon.states import State

INF = float("inf")
SIDE = ("vip", "postgresql", "slapd")


# -- builders: the vocabulary of the situations -------------------------------------

def links(*up):
    return tuple(LinkView(name, is_up, 0.1 if is_up else 2.0, 0.0, 0.2, 10)
                 for name, is_up in zip(("lan", "hb"), up))


def peer_alive(state="primary", up=(True, True), **said):
    active = state in ("primary", "takeover", "blocked", "releasing", "failed")
    status = Status("node1", state, active=said.pop("active", active), **said)
    return PeerLiveness(True, True, 0.1, links(*up), status, 5, said.pop("ack_seq", 0), 0.3)


def peer_silent(for_s=1.3, state="primary", **said):
    alive = peer_alive(state, **said)
    return dataclasses.replace(alive, alive=False, silent_for=for_s, links=links(False, False))


def peer_never_seen():
    return PeerLiveness(False, False, INF, links(False, False), None, None, 0, 0.0)


def secondary_side():
    return (ResourceView("partition", Res.STARTED), (ResourceView("apache", Res.STARTED),),
            tuple(ResourceView(n, Res.STOPPED) for n in SIDE))


def primary_side(**failures):
    side = tuple(ResourceView(n, Res.FAILED if n in failures else Res.STARTED,
                              failures.get(n, 0)) for n in SIDE)
    return ResourceView("partition", Res.PROMOTED), (ResourceView("apache", Res.STARTED),), side


def snapshot(state, peer, resources=None, **kw):
    partition, base, side = resources or secondary_side()
    fields = dict(state=state, in_state=5.0, uptime=60.0, policy=Policy(), peer_name="node1",
                  preferred=False, peer=peer, partition=partition, base=base, side=side,
                  lost_for=0.0 if peer.alive else 0.1)
    fields.update(kw)
    return Snapshot(**fields)


def secondary(peer, resources=None, **kw):
    return snapshot(State.SECONDARY, peer, resources, **kw)


def takeover(peer, resources=None, **kw):
    kw.setdefault("in_state", 0.0)
    return snapshot(State.TAKEOVER, peer, resources, **kw)


def primary(peer, resources=None, **kw):
    kw.setdefault("preferred", True)
    return snapshot(State.PRIMARY, peer, resources or primary_side(), **kw)


def with_vip(status):
    partition, base, side = secondary_side()
    return partition, base, (ResourceView("vip", status),) + side[1:]


# -- links and liveness --------------------------------------------------------------

def test_peer_silent_on_one_link_is_no_failover():
    d = decide(secondary(peer_alive(up=(False, True))))
    assert d.action is Act.WAIT and "standing by" in d.reason


def test_peer_silent_on_every_link_starts_a_takeover():
    d = decide(secondary(peer_silent()))
    assert (d.action, d.to) == (Act.GOTO, State.TAKEOVER)
    assert "silent for 1.30s on every link" in d.reason


def test_takeover_moves_the_vip_first_then_asks_the_bmc():
    peer = peer_silent()
    d = decide(takeover(peer))
    assert (d.action, d.resource) == (Act.START, "vip")
    d = decide(takeover(peer, side=with_vip(Res.STARTED)[2], vip_tried=True))
    assert d.action is Act.POWER_STATUS


def test_vip_after_fence_when_configured():
    d = decide(takeover(peer_silent(), policy=Policy(vip_first=False)))
    assert d.action is Act.POWER_STATUS


def test_a_powered_off_peer_is_taken_over_at_once():
    assert decide(takeover(peer_silent(), power=Power.OFF, power_age=0.1)).resource == "vip"
    d = decide(takeover(peer_silent(), vip_tried=True, power=Power.OFF, power_age=0.1))
    assert (d.action, d.resource) == (Act.PROMOTE, "partition")
    assert "confirmed powered off" in d.reason


def test_the_non_holder_waits_before_fencing_then_fences():
    early = takeover(peer_silent(), vip_tried=True, power=Power.ON, power_age=0.1, lost_for=0.3)
    d = decide(early)
    assert d.action is Act.WAIT and "fences first" in d.reason
    d = decide(dataclasses.replace(early, lost_for=1.0))
    assert d.action is Act.FENCE


def test_a_late_peer_makes_us_ask_its_bmc_early():
    late = dataclasses.replace(peer_alive("primary"), silent_for=0.7)
    d = decide(secondary(late))
    assert d.action is Act.POWER_STATUS and "ahead of time" in d.reason
    assert decide(secondary(late, power=Power.ON, power_age=0.1)).action is Act.WAIT
    # the holder does not: its fence must not queue behind a slow BMC question
    assert decide(primary(dataclasses.replace(late, status=Status("node1", "secondary")))).action \
        is Act.WAIT


def late(for_s=0.5, state="primary", **said):
    """The peer within its dead time, silent for ``for_s`` (a freeze, a cut, or dead)."""
    return dataclasses.replace(peer_alive(state, **said), silent_for=for_s)


@pytest.mark.parametrize("for_s", [0.4, 0.5, 0.8, 1.19])
def test_a_late_peer_whose_bmc_says_off_is_taken_over_at_once(for_s):
    """Issue 19: a power-off after the peer's last heartbeat is the gate; no dead time."""
    d = decide(secondary(late(for_s), power=Power.OFF, power_age=0.05))
    assert (d.action, d.to) == (Act.GOTO, State.TAKEOVER), d
    assert "without waiting out the dead time" in d.reason
    claim = takeover(late(for_s), power=Power.OFF, power_age=0.05)
    assert (decide(claim).action, decide(claim).resource) == (Act.START, "vip")
    d = decide(dataclasses.replace(claim, vip_tried=True))
    assert (d.action, d.resource) == (Act.PROMOTE, "partition")
    assert "confirmed powered off" in d.reason


@pytest.mark.parametrize("power, age", [(Power.ON, 0.05), (Power.UNKNOWN, 0.05),
                                        (Power.UNKNOWN, INF), (Power.OFF, "older"),
                                        (Power.OFF, INF)])
def test_a_late_peer_is_not_taken_over_without_a_fresh_off(power, age):
    """A freeze or a link cut (the BMC says on), a BMC that did not answer (unknown), an
    "off" older than the peer's last heartbeat: no takeover before the dead time."""
    for for_s in (0.3, 0.5, 0.79, 1.19):
        power_age = for_s + 0.01 if age == "older" else age
        d = decide(secondary(late(for_s), power=power, power_age=power_age))
        assert d.to is None and d.action in (Act.WAIT, Act.POWER_STATUS), (for_s, d)


def test_a_late_peer_in_maintenance_or_a_node_that_may_not_take_over_waits():
    off = dict(power=Power.OFF, power_age=0.05)
    d = decide(secondary(late(0.5, maintenance=True), **off))
    assert d.action is Act.WAIT and "maintenance" in d.reason
    for kw in (dict(standby=True), dict(upstream=False)):
        d = decide(secondary(late(0.5), **off, **kw))
        assert d.action is Act.WAIT and "may not take over" in d.reason, kw


def test_the_early_question_is_spaced_and_asked_once_per_late_spell():
    spacing = Policy().power_query_spacing
    assert decide(secondary(late(0.5))).action is Act.POWER_STATUS
    # answered after the last heartbeat: not again in this spell
    assert decide(secondary(late(0.9), power=Power.ON, power_age=0.4)).action is Act.WAIT
    # a new spell, but the last answer is younger than the spacing: not yet
    d = decide(secondary(late(0.5), power=Power.ON, power_age=spacing - 0.01))
    assert d.action is Act.WAIT, d
    d = decide(secondary(late(0.5), power=Power.ON, power_age=spacing))
    assert d.action is Act.POWER_STATUS, d
    # not late yet: no question at all
    assert decide(secondary(late(Policy().warn_time - 0.01))).action is Act.WAIT
    # one at a time: a question in flight is not doubled
    d = decide(secondary(late(0.5), bmc_busy="power-status"))
    assert d.action is Act.WAIT, d


def test_the_default_question_comes_two_heartbeat_intervals_into_a_silence():
    from hapack.hamon import defaults as D
    assert Policy().warn_time == D.warn(D.DEAD_TIME) == 2 * D.INTERVAL
    assert D.warn(0.6, 0.0, 0.2) == 0.3          # at most half the dead time
    assert D.warn(1.2, 0.7, 0.2) == 0.7          # a warn_time given is kept


def test_a_power_reading_older_than_the_last_heartbeat_is_not_evidence():
    stale = takeover(peer_silent(for_s=1.3), vip_tried=True, power=Power.OFF, power_age=5.0)
    assert decide(stale).action is Act.POWER_STATUS
    fresh = dataclasses.replace(stale, power_age=0.5)
    assert decide(fresh).action is Act.PROMOTE


def test_the_holder_fences_at_once():
    d = decide(primary(peer_silent(state="secondary"), lost_for=0.0))
    assert d.action is Act.FENCE


@pytest.mark.parametrize("mine, theirs, preferred, first", [
    (True, False, False, True), (False, True, True, False),
    (False, False, True, True), (False, False, False, False),
    (True, True, True, True), (True, True, False, False)])
def test_exactly_one_node_shoots_first(mine, theirs, preferred, first):
    assert shoots_first(mine, theirs, preferred) is first
    assert shoots_first(theirs, mine, not preferred) is not first


def test_split_with_both_alive_each_side_decides_its_part():
    """All links cut: node1 (primary) sees node2 silent, node2 sees node1 silent."""
    holder = decide(primary(peer_silent(state="secondary")))
    other_takes = decide(secondary(peer_silent(state="primary")))
    other = decide(takeover(peer_silent(state="primary"), vip_tried=True, power=Power.ON,
                            power_age=0.0, lost_for=0.0))
    assert holder.action is Act.FENCE
    assert other_takes.to is State.TAKEOVER
    assert other.action is Act.WAIT


# -- fencing failures and the gate ---------------------------------------------------

def test_fence_failed_retries_then_blocks_never_mounting():
    failing = takeover(peer_silent(), vip_tried=True, power_age=1.0, fence_attempts=1,
                       last_fence_ago=0.5, lost_for=5.0)
    assert decide(failing).action is Act.WAIT
    assert decide(dataclasses.replace(failing, last_fence_ago=1.0)).action is Act.FENCE
    d = decide(dataclasses.replace(failing, fence_attempts=3, last_fence_ago=5.0))
    assert (d.action, d.to) == (Act.GOTO, State.BLOCKED)
    blocked = dataclasses.replace(failing, state=State.BLOCKED, fence_attempts=3)
    assert decide(blocked).action is Act.WAIT and "VIP only" in decide(blocked).reason
    d = decide(dataclasses.replace(blocked, last_fence_ago=5.0))
    assert d.action is Act.FENCE
    d = decide(dataclasses.replace(blocked, power=Power.OFF))
    assert d.to is State.TAKEOVER


def test_peer_alive_and_acknowledging_opens_the_gate():
    claim = takeover(peer_alive(state="secondary"), vip_tried=True)
    assert decide(claim).action is Act.WAIT
    d = decide(dataclasses.replace(claim, claim_acked=True))
    assert (d.action, d.resource) == (Act.PROMOTE, "partition")


@pytest.mark.parametrize("state, said", [("starting", {}), ("starting", {"probing": True}),
                                         ("secondary", {"probing": True}),
                                         ("maintenance", {})])
def test_an_acknowledgement_from_a_peer_that_does_not_know_yet_is_no_gate(state, said):
    """Issue 14 item 3: a restarted holder says "starting" before its probe; its echo of
    our claim while it does not know what runs on it opens nothing."""
    claim = takeover(peer_alive(state=state, active=False, **said), vip_tried=True,
                     claim_acked=True)
    d = decide(claim)
    assert d.action is Act.WAIT and "acknowledge" in d.reason, d


def test_a_node_that_finds_the_stateful_side_waits_while_the_peer_claims_it():
    found = primary_side()
    for peer_state in ("takeover", "blocked", "releasing"):
        d = decide(snapshot(State.STARTING, peer_alive(state=peer_state), found))
        assert d.action is Act.WAIT and "abandon its claim" in d.reason, d
    d = decide(snapshot(State.STARTING, peer_alive(state="starting", active=True,
                                                   probing=True), found))
    assert d.action is Act.WAIT
    d = decide(snapshot(State.STARTING, peer_alive(state="primary"), found))
    assert d.to is State.RELEASING                       # both hold: ours goes
    d = decide(snapshot(State.STARTING, peer_alive(state="secondary"), found))
    assert d.to is State.PRIMARY
    both = peer_alive(state="starting", active=True)     # both probed, both hold
    assert decide(snapshot(State.STARTING, both, found, preferred=True)).action is Act.WAIT
    assert decide(snapshot(State.STARTING, both, found)).to is State.RELEASING


def test_a_secondary_stands_by_while_the_peer_is_probing():
    d = decide(secondary(peer_alive(state="starting", active=True, probing=True),
                         preferred=True))
    assert d.action is Act.WAIT and "standing by" in d.reason


def test_a_live_healthy_peer_is_never_fenced_from_a_claim():
    """Found by the simulator: two claims at once, ours kept (the stack's primary) while we
    had held something: the tie must not end in fencing a live peer."""
    both = takeover(peer_alive(state="takeover"), vip_tried=True, was_active=True,
                    preferred=True, power=Power.ON, power_age=0.05)
    d = decide(both)
    assert d.action is Act.WAIT and "abandon its claim" in d.reason, d
    back = dataclasses.replace(both, state=State.BLOCKED, fence_attempts=3,
                               last_fence_ago=10.0, peer=peer_alive(state="secondary"))
    d = decide(back)
    assert d.to is State.TAKEOVER and d.action is Act.GOTO, d
    failed = dataclasses.replace(both, peer=peer_alive(state="failed", stop_failed=True))
    assert decide(failed).action is not Act.WAIT   # a failed stop is still fenced


def test_releasing_ends_only_after_a_running_start():
    partition, base, side = secondary_side()
    d = decide(snapshot(State.RELEASING, peer_alive(state="takeover"), busy="start vip"))
    assert d.action is Act.WAIT and d.to is None, d
    d = decide(snapshot(State.RELEASING, peer_alive(state="takeover")))
    assert d.to is State.SECONDARY


def test_the_partition_is_started_before_it_is_promoted():
    partition, base, side = secondary_side()
    stopped = (dataclasses.replace(partition, status=Res.STOPPED), base, side)
    d = decide(takeover(peer_silent(), stopped, power=Power.OFF, power_age=0.1, vip_tried=True))
    assert (d.action, d.resource) == (Act.START, "partition")


def test_peer_that_left_cleanly_is_taken_over_without_fencing():
    gone = peer_silent(state="stopping", active=False, leaving=True)
    assert decide(secondary(gone)).to is State.TAKEOVER
    d = decide(takeover(gone, vip_tried=True))
    assert d.action is Act.PROMOTE and "left cleanly" in d.reason


def test_peer_back_and_holding_abandons_the_takeover():
    d = decide(takeover(peer_alive("primary"), with_vip(Res.STARTED), vip_tried=True))
    assert d.to is State.RELEASING
    d = decide(snapshot(State.RELEASING, peer_alive("primary"), with_vip(Res.STARTED)))
    assert (d.action, d.resource) == (Act.STOP, "vip")


def test_two_claims_at_once_the_preferred_keeps_its_claim():
    both = takeover(peer_alive("takeover"), vip_tried=True)
    assert decide(both).to is State.RELEASING
    assert decide(dataclasses.replace(both, preferred=True)).to is None


def test_upstream_down_yields():
    assert decide(takeover(peer_silent(), vip_tried=True, upstream=False, lost_for=9)).action \
        is Act.WAIT
    assert decide(secondary(peer_silent(), upstream=False)).action is Act.WAIT
    d = decide(primary(peer_silent("secondary"), upstream=False))
    assert d.action is Act.WAIT and "yielding" in d.reason


def test_upstream_down_on_the_primary_switches_over_to_a_peer_that_has_it():
    d = decide(primary(peer_alive("secondary", eligible=True, upstream=True), upstream=False))
    assert d.to is State.RELEASING


# -- start-up ------------------------------------------------------------------------

def test_startup_without_peer_waits_for_all():
    start = snapshot(State.STARTING, peer_never_seen(), uptime=2.0)
    assert decide(dataclasses.replace(start, probed=False)).action is Act.PROBE
    assert decide(start).action is Act.WAIT and "wait-for-all" in decide(start).reason
    later = dataclasses.replace(start, uptime=11.0)
    assert decide(later).action is Act.POWER_STATUS
    on = dataclasses.replace(later, power=Power.ON, power_age=1.0)
    d = decide(on)
    assert d.action is Act.WAIT and "not taking over" in d.reason
    assert decide(dataclasses.replace(on, power=Power.OFF)).to is State.TAKEOVER
    assert decide(dataclasses.replace(on, takeover_requested=True)).to is State.TAKEOVER


def test_startup_with_peer_primary_becomes_secondary():
    d = decide(snapshot(State.STARTING, peer_alive("primary"), uptime=0.5))
    assert d.to is State.SECONDARY


def test_startup_finding_the_stack_running_here_resumes_as_primary():
    d = decide(snapshot(State.STARTING, peer_alive("secondary"), primary_side()))
    assert d.to is State.PRIMARY


def test_cold_start_the_preferred_node_acquires():
    nobody = peer_alive("secondary", eligible=True)
    assert decide(secondary(nobody, preferred=True)).to is State.TAKEOVER
    assert decide(secondary(nobody, preferred=False)).action is Act.WAIT
    assert decide(secondary(peer_alive("secondary", eligible=False))).to is State.TAKEOVER


# -- the stateful side on the active node --------------------------------------------

def test_stateful_layer_failing_restarts_here_then_switches_over():
    peer = peer_alive("secondary", eligible=True)
    d = decide(primary(peer, primary_side(postgresql=1)))
    assert (d.action, d.resource) == (Act.RESTART, "postgresql")
    d = decide(primary(peer, primary_side(postgresql=3)))
    assert d.to is State.RELEASING and "switching over" in d.reason
    d = decide(primary(peer_alive("secondary", eligible=False), primary_side(postgresql=2)))
    assert (d.action, d.resource) == (Act.RESTART, "postgresql")
    d = decide(primary(peer_alive("secondary", eligible=False), primary_side(postgresql=3)))
    assert (d.action, d.resource) == (Act.STOP, "postgresql") and "leaving it stopped" in d.reason


@pytest.mark.parametrize("layer", ["vip", "postgresql", "slapd"])
def test_a_layer_left_stopped_goes_to_the_peer_once_it_can_take_it(layer):
    """Campaign finding 4: given up while the peer could not take over (a split, the peer
    fenced), the layer stayed stopped for good when the peer came back: the stack was down."""
    partition, base, side = primary_side(**{layer: 3})
    side = tuple(dataclasses.replace(v, status=Res.STOPPED) if v.name == layer else v
                 for v in side)
    for peer in (peer_silent(state="secondary"), peer_alive("secondary", eligible=False),
                 peer_alive("secondary", eligible=True, maintenance=True)):
        d = decide(primary(peer, (partition, base, side)))
        assert d.to is not State.RELEASING and d.action is not Act.START, d
    d = decide(primary(peer_alive("secondary", eligible=True), (partition, base, side)))
    assert d.to is State.RELEASING and "can take over now" in d.reason, d


def test_release_stops_in_reverse_then_demotes():
    partition, base, side = primary_side()
    order = []
    while True:
        d = decide(snapshot(State.RELEASING, peer_alive("secondary"), (partition, base, side)))
        if d.action is Act.GOTO:
            break
        order.append((d.action, d.resource))
        if d.action is Act.DEMOTE:
            partition = dataclasses.replace(partition, status=Res.STARTED)
        else:
            side = tuple(dataclasses.replace(v, status=Res.STOPPED) if v.name == d.resource else v
                         for v in side)
    assert order == [(Act.STOP, "slapd"), (Act.STOP, "postgresql"), (Act.STOP, "vip"),
                     (Act.DEMOTE, "partition")]
    assert d.to is State.SECONDARY


def test_a_failed_stop_waits_to_be_fenced():
    partition, base, side = primary_side()
    side = (dataclasses.replace(side[0], status=Res.STOP_FAILED),) + side[1:]
    d = decide(snapshot(State.RELEASING, peer_alive("secondary"), (partition, base, side)))
    assert d.to is State.FAILED
    assert decide(secondary(peer_alive("failed", stop_failed=True))).to is State.TAKEOVER
    d = decide(takeover(peer_alive("failed", stop_failed=True), vip_tried=True))
    assert d.action is Act.FENCE


def test_standby_and_takeover_requests_hand_over_cleanly():
    peer = peer_alive("secondary", eligible=True)
    assert decide(primary(peer, standby=True)).to is State.RELEASING
    asking = peer_alive("secondary", eligible=True, request="takeover")
    assert decide(primary(asking)).to is State.RELEASING
    released = peer_alive("secondary", eligible=True, released=True, active=False)
    assert decide(secondary(released)).to is State.TAKEOVER
    assert decide(secondary(released, handed_over=True)).action is Act.WAIT


def test_no_failback_unless_configured():
    preferred_back = peer_alive("secondary", eligible=True)
    mine = primary(preferred_back, preferred=False, peer_healthy_for=400.0)
    assert decide(mine).action is Act.WAIT
    failback = dataclasses.replace(mine, policy=Policy(auto_failback=True))
    assert decide(failback).to is State.RELEASING
    assert decide(dataclasses.replace(failback, peer_healthy_for=100.0)).action is Act.WAIT


def test_maintenance_and_a_silent_peer_in_maintenance_are_hands_off():
    assert decide(primary(peer_alive("secondary"), maintenance=True)).to is State.MAINTENANCE
    d = decide(secondary(peer_silent(state="maintenance", maintenance=True)))
    assert d.action is Act.WAIT and "maintenance" in d.reason


def test_shutdown_stops_everything_in_reverse():
    d = decide(primary(peer_alive("secondary"), stopping=True))
    assert d.to is State.STOPPING
    d = decide(snapshot(State.STOPPING, peer_alive("secondary"), primary_side()))
    assert (d.action, d.resource) == (Act.STOP, "slapd")
    partition, base, _ = secondary_side()
    idle = (partition, base, tuple(ResourceView(n, Res.STOPPED) for n in SIDE))
    d = decide(snapshot(State.STOPPING, peer_alive("secondary"), idle))
    assert (d.action, d.resource) == (Act.STOP, "apache")


def test_busy_waits_for_the_worker_but_may_change_state():
    assert decide(secondary(peer_silent(), busy="monitor web")).to is State.TAKEOVER
    d = decide(takeover(peer_silent(), busy="monitor web"))
    assert d.action is Act.WAIT and d.reason.startswith("busy: monitor web (next: moving the VIP")
    d = decide(takeover(peer_silent(), bmc_busy="power-status"))
    assert (d.action, d.resource) == (Act.START, "vip")  # the VIP does not wait for the BMC
    d = decide(takeover(peer_silent(), bmc_busy="power-status", vip_tried=True))
    assert d.action is Act.WAIT and "busy: power-status" in d.reason


# -- the gate, under random snapshots ------------------------------------------------

def random_snapshot(rng):
    state = rng.choice([s for s in State if s is not State.STOPPED])
    said = dict(active=rng.random() < 0.5, eligible=rng.random() < 0.7,
                released=rng.random() < 0.2, leaving=rng.random() < 0.1,
                maintenance=rng.random() < 0.1, probing=rng.random() < 0.2)
    peer = peer_alive(rng.choice(["primary", "secondary", "takeover", "starting",
                                  "maintenance"]), **said) \
        if rng.random() < 0.5 else peer_silent(rng.uniform(1.2, 9), **said)
    views = lambda names: tuple(ResourceView(n, rng.choice(list(Res)), rng.randint(0, 4))
                                for n in names)
    if peer.alive and rng.random() < 0.5:
        peer = dataclasses.replace(peer, silent_for=rng.uniform(0.1, 1.19))  # late
    return snapshot(state, peer, (views(["partition"])[0], views(["apache"]), views(SIDE)),
                    power=rng.choice(list(Power)), power_age=rng.choice([0.05, 0.5, 2.0, INF]),
                    preferred=rng.random() < 0.5, busy=rng.choice([None, None, "monitor web"]),
                    bmc_busy=rng.choice([None, None, "fence"]),
                    claim_acked=rng.random() < 0.5, fence_attempts=rng.randint(0, 4),
                    last_fence_ago=rng.uniform(0, 10), lost_for=rng.uniform(0, 3),
                    vip_tried=rng.random() < 0.5, upstream=rng.choice([None, True, False]),
                    uptime=rng.uniform(0, 30), probed=rng.random() < 0.9,
                    stopping=rng.random() < 0.1, maintenance=rng.random() < 0.1)


def gate_holds(s):
    st = s.peer.status
    settled = not st.probing and st.state not in ("starting", "maintenance")
    return ((s.power is Power.OFF and s.power_age <= s.peer.silent_for)
            or (s.peer.alive and s.claim_acked and not st.active and settled)
            or (not s.peer.alive and st.leaving and not st.active))


def test_the_partition_is_never_promoted_without_the_gate():
    rng = random.Random(11)
    promoted = 0
    for _ in range(20000):
        s = random_snapshot(rng)
        d = decide(s)
        if d.action is Act.PROMOTE or (d.action in (Act.START, Act.RESTART)
                                       and d.resource in ("postgresql", "slapd")):
            assert gate_holds(s) or (s.state is State.PRIMARY
                                     and s.partition.status is Res.PROMOTED), (s, d)
            promoted += 1
    assert promoted > 50  # the property was exercised


def test_a_live_peer_holding_the_stack_is_claimed_only_when_confirmed_off():
    """Under random snapshots: a secondary claims a peer within its dead time that says
    it holds the stateful side (not a failed stop) only on an "off" read after its last
    heartbeat: a freeze shorter than the dead time never starts a takeover."""
    rng = random.Random(19)
    early = 0
    for _ in range(20000):
        s = random_snapshot(rng)
        d = decide(s)
        if s.state is State.SECONDARY and d.to is State.TAKEOVER and s.peer.alive \
                and s.peer.status.active and not s.peer.status.stop_failed:
            assert s.power is Power.OFF and s.power_age <= s.peer.silent_for, (s, d)
            early += 1
    assert early > 20  # the property was exercised


def test_a_yielding_node_never_fences_and_every_decision_is_legal():
    rng = random.Random(12)
    from hapack.hamon.states import EDGES
    for _ in range(20000):
        s = random_snapshot(rng)
        d = decide(s)
        if s.upstream is False:
            assert d.action is not Act.FENCE, (s, d)
        if d.action is Act.FENCE and s.peer.alive:
            assert s.peer.status.stop_failed, (s, d)
        if d.to is not None:
            assert d.to in EDGES[s.state], (s.state, d)
        assert d.reason


# -- no stateful layer on an unpromoted partition (found by the simulator's deep walks) --

PEERS_NOT_HOLDING = (peer_silent(state="secondary"), peer_never_seen(),
                     peer_alive("secondary", eligible=True), peer_silent(for_s=5.0),
                     peer_alive("maintenance", active=False))


@pytest.mark.parametrize("part", [Res.STOPPED, Res.STARTED, Res.UNKNOWN])
@pytest.mark.parametrize("layers", [("vip",), ("vip", "postgresql"), ("postgresql",), ()])
def test_a_node_never_starts_a_stateful_layer_on_an_unpromoted_partition(part, layers):
    """Maintenance switched on during a takeover and off again: the probe finds the VIP
    (or a layer) running and the partition not promoted. The node resumed as primary and
    started the stateful layers on the bare mount point. In every state and with every
    peer, a start or restart of a layer other than the VIP needs the partition promoted."""
    side = tuple(ResourceView(n, Res.STARTED if n in layers else Res.STOPPED) for n in SIDE)
    partition = ResourceView("partition", part)
    for state in (State.STARTING, State.PRIMARY, State.TAKEOVER):
        for peer in PEERS_NOT_HOLDING:
            d = decide(snapshot(state, peer, (partition, (ResourceView("apache", Res.STARTED),),
                                              side), probed=True))
            if d.action in (Act.START, Act.RESTART):
                assert d.resource in ("vip", "partition"), (state, peer, d)
            if state is State.STARTING and d.to is State.PRIMARY:
                raise AssertionError(f"resumed as primary with the partition {part.value}: {d}")


# -- a gone peer is taken over from even with recent failures here (soak finding 8) ------

@pytest.mark.parametrize("gone", ["dead", "late-off"])
@pytest.mark.parametrize("layer", SIDE)
def test_recent_failures_here_never_leave_the_stack_down_when_the_peer_is_gone(gone, layer):
    """A layer failed here 3 times, the stack switched to the peer, and the peer then
    crashed: the node waited until failure_timeout (10 min) with the stack down. Now it
    takes over; the given-up layer is left stopped (as Pacemaker's migration threshold
    bans that resource only), every other layer starts; the peer's return hands the whole
    stack back to it (finding 4's rule)."""
    peer = peer_silent(state="primary") if gone == "dead" else late(0.5)
    power = dict(power=Power.OFF, power_age=0.05) if gone == "late-off" else {}
    failed = dict(failures=3)
    partition, base, side = secondary_side()
    side = tuple(dataclasses.replace(v, **failed) if v.name == layer else v for v in side)
    d = decide(secondary(peer, (partition, base, side), eligible=False, **power))
    assert d.to is State.TAKEOVER, d
    # the takeover with the gate met: the partition promoted, then every layer but the
    # given-up one, which is never started (and stopped if it failed again)
    started, partition = [], ResourceView("partition", Res.PROMOTED)
    for _ in range(10):
        d = decide(takeover(peer_silent(state="primary"), (partition, base, side),
                            eligible=False, power=Power.OFF, power_age=0.05, vip_tried=True))
        if d.action is Act.GOTO:
            break
        assert d.action is Act.START and d.resource != layer, d
        started.append(d.resource)
        side = tuple(dataclasses.replace(v, status=Res.STARTED) if v.name == d.resource else v
                     for v in side)
    assert d.to is State.PRIMARY, d
    assert started == [n for n in SIDE if n != layer]
    failing = tuple(dataclasses.replace(v, status=Res.FAILED) if v.name == layer else v
                    for v in side)
    d = decide(takeover(peer_silent(state="primary"), (partition, base, failing),
                        eligible=False, power=Power.OFF, power_age=0.05, vip_tried=True))
    assert (d.action, d.resource) == (Act.STOP, layer) and "leaving it stopped" in d.reason, d
