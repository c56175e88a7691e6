"""hamon's decisions explored: two nodes, the real decide(), a simulated network and BMCs.

The simulator and its invariants are in tests/hamon_sim.py (its docstring says what
is modelled). Here: a bounded breadth-first exploration and a seeded random search
on the code as it is, and the same search finding issue 14 item 3 (a restarted
daemon's "holds nothing" taken as a gate) in a copy of the old rules.

Deeper on demand: ``HAMON_SIM_DEPTH=12 HAMON_SIM_WALKS=20000 pytest tests/unit/test_hamon_sim.py``
or ``python tests/hamon_sim.py --depth 12``.
"""

import contextlib
import os

import pytest

import hamon_sim as sim
from hapack.hamon import decide as decide_mod
from hapack.hamon.decide import goto
from hapack.hamon.snapshot import Power, Res
from hapack.hamon.states import State
from hapack.hamon.world import World

DEPTH = int(os.environ.get("HAMON_SIM_DEPTH", "7"))
WALKS = int(os.environ.get("HAMON_SIM_WALKS", "1000"))


def _report(found):
    if found is None:
        return ""
    return f"{found.problem}\n" + "\n".join(f"  {n}. {e}" for n, e in enumerate(found.trace, 1))


def test_breadth_first_to_the_bound_finds_nothing(capsys):
    found, states, reached = sim.explore(DEPTH, max_faults=1)
    with capsys.disabled():
        print(f"\nhamon sim: breadth-first depth {reached}, {states} distinct states")
    assert found is None, _report(found)
    assert reached == DEPTH and states > 1000


def test_seeded_random_walks_beyond_the_bound_find_nothing(capsys):
    found, states = sim.random_search(WALKS, steps=60, max_faults=3, seed=14)
    with capsys.disabled():
        print(f"\nhamon sim: {WALKS} random walks of 60 events, {states} distinct states")
    assert found is None, _report(found)
    assert states > WALKS


# -- the rules before issue 14 item 3, to show the search finds that bug ----------------

def _old_holding(self):
    return self.partition.status in (Res.PROMOTED, Res.STOP_FAILED) or any(
        r.status in (Res.STARTED, Res.FAILED, Res.STOP_FAILED) for r in self.side)


def _old_resume(s):
    if s.peer.alive and s.peer_says("active"):
        return goto(State.RELEASING, "the stateful side runs here but the peer holds it too")
    return goto(State.PRIMARY, "the stateful side already runs here: resuming as primary")


def _old_forget(self):
    self.probed = False


@contextlib.contextmanager
def old_rules(monkeypatch):
    """hamon as it was: unknown left out of "holding", any acknowledgement a gate."""
    monkeypatch.setattr(World, "holding", _old_holding)
    monkeypatch.setattr(World, "probing", lambda self: False)
    monkeypatch.setattr(World, "forget_resources", _old_forget)
    monkeypatch.setattr(decide_mod, "_settled", lambda s: True)
    monkeypatch.setattr(decide_mod, "_resume", _old_resume)
    sim.clear_cache()
    try:
        yield
    finally:
        sim.clear_cache()


def test_the_old_rules_let_a_restarted_holder_s_acknowledgement_open_the_gate(monkeypatch):
    with old_rules(monkeypatch):
        found, _ = sim.random_search(20000, steps=40, max_faults=1, seed=3,
                                     initial=[sim.steady(0)], live=False)
    assert found is not None
    text = _report(found)
    assert "kill -9 hamon on node1" in text and "systemd restarts hamon on node1" in text
    assert "gate" in found.problem or "both nodes" in found.problem, text


# -- liveness: campaign finding 4 (a layer given up in a split stayed stopped for good) ----

FINDING_4 = ("power loss node2", "node1: vip dies (its monitor fails)", "node1: the peer is late",
             "node1: the peer is dead", "node1: fence_delay passes", "node1 ticks",
             "node1: fence ok", "node1 ticks", "node1: restart vip fails (fault)", "node1 ticks")


def play(events):
    state = sim.steady(0)
    for name in events:
        state = dict(sim.events(state, max_faults=9))[name]()
        assert not isinstance(state, str), state
    return state


def _old_side_care(real):
    def side_care(s):
        d = real(s)
        return None if d is not None and "can take over now" in d.reason else d
    return side_care


def test_a_layer_given_up_while_the_peer_was_fenced_goes_to_it_when_it_is_back():
    state = play(FINDING_4)
    assert state.nodes[0].know.fails[1] == sim.POLICY.migration_threshold
    assert sim.stack_liveness(state) is None
    final, _ = sim.settle(state)
    assert sim.held(final) == 1       # node2, rebooted and eligible, holds the stack


def test_the_old_rules_leave_the_stack_down_after_the_peer_is_back(monkeypatch):
    monkeypatch.setattr(decide_mod, "_side_care", _old_side_care(decide_mod._side_care))
    sim.clear_cache()
    try:
        problem = sim.stack_liveness(play(FINDING_4))
        found, _ = sim.random_search(300, steps=60, max_faults=3, seed=14)
    finally:
        sim.clear_cache()
    assert problem and "not held by one node" in problem
    assert found is not None and "not held by one node" in found.problem, _report(found)


def test_liveness_holds_from_every_start_without_faults():
    for start in sim.starts():
        assert sim.stack_liveness(start) is None


# -- issue 19: a late peer's BMC answer acted on at once ----------------------------------

def _early_on_any_answer(s):
    """A broken rule: any answer after the last heartbeat but "on" counts as off (a failed
    question, the power unknown, taken for a power cut)."""
    return s.power is not Power.ON and decide_mod._power_read(s)


def _early_on_any_off(s):
    """A broken rule: an "off" counts however old it is (read before the last heartbeat)."""
    return s.power is Power.OFF


def _early_on_lateness(s):
    """A broken rule: a late peer is taken over whatever its BMC says (a freeze)."""
    return s.peer.silent_for >= s.policy.warn_time


@pytest.mark.parametrize("broken", [_early_on_any_answer, _early_on_any_off,
                                    _early_on_lateness])
def test_the_search_catches_an_early_takeover_without_a_fresh_off(monkeypatch, broken):
    """The model lets the BMC of a late peer answer off (power cut) or on (frozen), fail,
    and age: each way of taking over a late peer without a fresh "off" is found."""
    monkeypatch.setattr(decide_mod, "confirmed_off", broken)
    sim.clear_cache()
    try:
        found, _ = sim.random_search(3000, steps=40, max_faults=2, seed=19,
                                     initial=[sim.steady(0)], live=False)
    finally:
        sim.clear_cache()
    assert found is not None, broken.__name__
    assert "without its power confirmed off" in found.problem or "gate" in found.problem \
        or "both nodes" in found.problem, _report(found)


def test_a_power_cut_of_the_holder_is_taken_over_while_it_is_late():
    """The model's BMC says off for a cut node: node2 claims before node1 turns dead."""
    state = play(("power loss node1", "node2: the peer is late", "node2 ticks",
                  "node2: power-status ok", "node2 ticks"))
    k = state.nodes[1].know
    assert k.pv == "late" and k.state is State.TAKEOVER and k.power is Power.OFF


def test_a_frozen_holder_s_bmc_says_on_and_nothing_starts_early():
    state = play(("node2: the peer is late", "node2 ticks", "node2: power-status ok",
                  "node2 ticks"))
    k = state.nodes[1].know
    assert k.pv == "late" and k.state is State.SECONDARY and k.power is Power.ON
