"""hamon's decisions explored: two nodes running the real decide() over a simulated world.

Each node runs hamon's real decision (:func:`hapack.hamon.decide.decide`), its real
state machine (:class:`~hapack.hamon.states.StateMachine`, which refuses an edge not in
the table), its real record (:class:`~hapack.hamon.world.World`: the snapshot decide()
reads and the heartbeat the peer reads are built by hamon's own code). What the daemon
shell does around them (applying a finished step, the bookkeeping of a claim, the
peer's liveness) is mirrored here from ``daemon.py``, ``actor.py`` and ``membership.py``.

The simulated world:

* **network**: per direction a channel of heartbeats in flight (at most ``CAP``); any of
  them may be delivered (reordering: an overtaken one only refreshes liveness, as in
  ``Membership.heard``), lost, or duplicated (the copy is dropped by the replay window).
  Admission mirrors ``Transport.admit``: an older generation is dropped, a packet that
  does not echo our current generation is stale (but its sender is remembered, the
  handshake). A claim is acknowledged by a packet echoing one of ours sent after it.
* **time** is abstract: a node's view of its peer goes fresh -> late -> dead -> dead
  longer than ``fence_delay``; ``initdead`` passes; a BMC answer ages; a fence retry
  falls due. A late peer's BMC is asked (issue 19) and answers the truth at the moment
  the answer comes: off for a node whose power is cut (so the takeover may start before
  the peer is dead), on for a frozen one; a failed question leaves the power unknown. Each is an event that may happen at any point (any silence is possible:
  messages may be lost), so every order of timers and messages is explored.
* **faults**: ``kill -9`` of a daemon (restarted later by systemd: it forgets everything
  and finds its resources unknown; a step it had running may or may not have taken
  effect), a node losing power, its power coming back (it boots with nothing running),
  an agent action failing, a running layer dying (its monitor finds it failed), a
  ``fence_bmc`` call failing or timing out (with the power
  cut or not), a status read failing, maintenance on and off. A freeze is a node that
  takes no step while its peer and the timers go on: every interleaving includes it.
* **agents**: honest (a failed start leaves nothing running, a failed stop leaves it
  running); the VIP agent refuses an address the live peer holds (its duplicate probe).

Checked after every event (:func:`violations`):

* never both nodes powered and holding the stateful side (partition promoted or a
  stateful layer running), nor the VIP (a power-off ends what ran on a node, so two
  holders at once always means no confirmed power-off in between);
* no promotion (nor a stateful layer started in ``takeover``) through a gate that the
  node's fresh observation contradicts: the gate is re-derived here independently (peer
  power confirmed off after its last heartbeat; or the peer alive, acknowledging our
  claim, holding nothing and settled: not starting, probing or in maintenance; or the
  peer gone after announcing a clean exit holding nothing);
* no stateful layer started or restarted on a node whose partition is not promoted
  there (its data would not be the replicated partition's);
* no fence of a peer whose fresh heartbeat (within the dead time) says it is healthy
  (not ``stop_failed``);
* no claim (secondary -> takeover) of a peer within its dead time that says it holds
  the stateful side, unless its BMC said off after its last heartbeat
  (:func:`check_claim`: a freeze or a link cut never starts a takeover early);
* no edge outside the state table (``IllegalTransition``).

Liveness (:func:`stack_liveness`, at the end of every random walk): once the faults stop,
a fair run (every step succeeds, every heartbeat arrives, fenced nodes powered back on,
daemons restarted, maintenance ended, timers fire when nothing else happens) ends with
one node holding the whole stack and the other secondary, unless both gave a layer up.

:func:`explore` is a breadth-first search over the abstract, hashable state, with
duplicates removed, to a bounded depth; :func:`random_search` walks further with a
seeded generator. Run deeper than the unit tier does::

    .venv/bin/python tests/hamon_sim.py --depth 14 --faults 2 --walks 20000 --steps 80
    HAMON_SIM_DEPTH=14 .venv/bin/pytest tests/unit/test_hamon_sim.py
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time
from typing import NamedTuple

from hapack.hamon.decide import decide
from hapack.hamon.membership import PeerLiveness
from hapack.hamon.packet import Status
from hapack.hamon.snapshot import Act, Policy, Power, Res
from hapack.hamon.states import ACTIVE, IllegalTransition, State, StateMachine
from hapack.hamon.world import World

NAMES = ("node1", "node2")            # node1 is the stack's primary
POLICY = Policy(initdead=10.0, warn_time=0.6, fence_delay=1.0, fence_retries=2,
                fence_retry_interval=5.0, migration_threshold=2)
DEAD_TIME = 1.2
NOW = 1000.0
CAP = 2                               # heartbeats in flight per direction
SILENT = {"never": float("inf"), "fresh": 0.1, "late": 0.7}
RES = ("partition", "vip", "db")      # the partition, then the stateful side in order


class _Rsc:
    """What World needs of a resource."""

    def __init__(self, name: str):
        self.name = name

    def interval(self, promoted: bool = False) -> float:
        return 10.0


RESOURCES = {name: _Rsc(name) for name in RES}


class _Quiet:
    def info(self, *a, **k):
        pass


class Know(NamedTuple):
    """What one daemon knows (None while it is not running)."""

    state: State
    probed: bool
    res: tuple                 # Res of partition, vip, db
    fails: tuple               # recent failures of each
    power: Power               # the peer's power, as its BMC last said
    pclass: str                # that answer: none | fresh (after the peer's last heartbeat) | stale | old
    attempts: int              # fence attempts
    fence_ago: str             # none | recent | ready (the retry is due)
    was_active: bool
    claim: bool                # claim_seq set
    acked: bool                # the peer echoed a packet of ours sent after our claim
    vip_tried: bool
    handed_over: bool
    release_for_peer: bool
    maintenance: bool
    initdead: bool             # uptime past initdead
    pv: str                    # the peer: never | fresh | late | dead
    lost_past: bool            # dead for longer than fence_delay
    peer_status: Status | None
    peer_gen: int | None       # the replay guard's generation of the peer
    peer_was_alive: bool       # the daemon's own memory (Daemon.peer_alive)
    echo_after_claim: bool     # our echo names a packet the peer sent after its latest claim
    stopping: bool             # SIGTERM: stop everything in reverse, then exit
    job: tuple | None          # (Act, resource) in the agents lane
    bmc_job: Act | None
    gen: int


class Node(NamedTuple):
    power: bool
    part: str                  # stopped | started | promoted (what really is)
    vip: bool
    db: bool
    know: Know | None
    maint_disk: bool           # maintenance as kept in state_dir


class Msg(NamedTuple):
    gen: int
    status: Status
    after_claim: bool          # sent after the sender's latest claim
    echo_gen: int | None
    echo_after_claim: bool
    older: bool                # overtaken by a newer one already delivered
    delivered: bool            # a copy: the replay window drops it


class Sim(NamedTuple):
    nodes: tuple
    links: tuple               # (node1 -> node2, node2 -> node1)
    faults: int


class Violation(Exception):
    pass


def fresh_know(gen: int, maintenance: bool) -> Know:
    return Know(State.STARTING, False, (Res.UNKNOWN,) * 3, (0, 0, 0), Power.UNKNOWN, "none", 0,
                "none", False, False, False, False, False, False, maintenance, False, "never",
                False, None, None, False, False, False, None, None, gen)


# -- building hamon's own objects from the abstract state ------------------------------

def silent_for(k: Know) -> float:
    if k.pv == "dead":
        return DEAD_TIME + (POLICY.fence_delay + 0.3 if k.lost_past else 0.1)
    return SILENT[k.pv]


def real_world(k: Know) -> World:
    w = World(RESOURCES["partition"], (), (RESOURCES["vip"], RESOURCES["db"]), 0,
              POLICY.migration_threshold)
    for r, status, fails in zip(w.all(), k.res, k.fails):
        r.status = status
        r.failures.extend([NOW - 1.0] * fails)
    silent = silent_for(k)
    w.probed, w.power, w.fence_attempts = k.probed, k.power, k.attempts
    w.power_at = {"none": None, "fresh": NOW - 0.01, "old": NOW - 100.0,
                  "stale": NOW - min(silent + 0.05, 100.0)}[k.pclass]
    w.last_fence_at = {"none": None, "recent": NOW - 0.01, "ready": NOW - 100.0}[k.fence_ago]
    w.was_active, w.vip_tried, w.handed_over = k.was_active, k.vip_tried, k.handed_over
    w.handed_over_at = NOW if k.handed_over else None
    w.release_for_peer, w.maintenance = k.release_for_peer, k.maintenance
    w.claim_seq = 10 if k.claim else None
    w.stopping = k.stopping
    return w


def liveness(k: Know) -> PeerLiveness:
    silent = silent_for(k)
    return PeerLiveness(alive=silent < DEAD_TIME, ever_seen=k.pv != "never",
                        silent_for=silent, links=(), status=k.peer_status,
                        generation=k.peer_gen, ack_seq=10 if k.acked else 9, worst_gap=0.0)


def heartbeat(i: int, k: Know) -> Status:
    key = (i, k)
    if key not in _HEARTBEATS:
        _HEARTBEATS[key] = real_world(k).heartbeat(NAMES[i], k.state, NOW, None)
    return _HEARTBEATS[key]


def busy_name(job) -> str | None:
    if job is None:
        return None
    if isinstance(job, tuple):
        return f"{job[0].value} {job[1]}" if job[1] else job[0].value
    return job.value


def snapshot(i: int, k: Know, w: World, machine: StateMachine):
    started = NOW - (POLICY.initdead + 1 if k.initdead else 1.0)
    return w.snapshot(machine, NOW, started, liveness(k), POLICY, NAMES[1 - i], i == 0,
                      busy_name(k.job), busy_name(k.bmc_job), None, DEAD_TIME)


# -- the invariants --------------------------------------------------------------------

def holds_side(n: Node) -> bool:
    return n.power and (n.part == "promoted" or n.db)


def violations(sim: Sim) -> list[str]:
    a, b = sim.nodes
    found = []
    if holds_side(a) and holds_side(b):
        found.append("the stateful side is held on both nodes")
    if a.power and b.power and a.vip and b.vip:
        found.append("the VIP is on both nodes")
    return found


def expected_gate(k: Know) -> bool:
    """The gate as the design states it, derived here from what the node observed."""
    st = k.peer_status
    alive = k.pv in ("fresh", "late")
    if k.power is Power.OFF and (k.pclass == "fresh" or (k.pclass == "old" and k.pv == "never")):
        return True
    if alive and st is not None and k.acked and not st.active and not st.probing \
            and st.state not in ("starting", "maintenance"):
        return True
    return bool(not alive and st is not None and st.leaving and not st.active)


def check_decision(i: int, k: Know, d) -> None:
    st = k.peer_status
    if d.action is Act.FENCE and k.pv in ("fresh", "late") and not (st and st.stop_failed):
        raise Violation(f"{NAMES[i]} fences {NAMES[1 - i]} whose fresh heartbeat says it is "
                        f"healthy ({st}): {d.reason}")
    if d.action in (Act.START, Act.RESTART) and d.resource == "db" and k.res[0] is not Res.PROMOTED:
        raise Violation(f"{NAMES[i]} starts the stateful layer with its partition "
                        f"{k.res[0].value}, not promoted: {d.reason}")
    gated = d.action is Act.PROMOTE or (
        k.state is State.TAKEOVER and d.action in (Act.START, Act.RESTART) and d.resource == "db")
    if gated and not expected_gate(k):
        raise Violation(f"{NAMES[i]} passes a gate its observation contradicts: {d.reason} "
                        f"(peer {k.pv}, says {st}, power {k.power.value}/{k.pclass}, "
                        f"acked {k.acked})")


def check_claim(i: int, k: Know, state: State, w: World, d) -> None:
    """A secondary claims a peer that is still within its dead time (late: a freeze, a
    link cut, or a power cut) and says it holds the stateful side only when that peer's
    BMC reported its power off after its last heartbeat (issue 19): a frozen peer's BMC
    says on, and a failed question is no answer."""
    st = k.peer_status
    if not (state is State.SECONDARY and d.to is State.TAKEOVER):
        return
    if k.pv in ("fresh", "late") and st is not None and st.active and not st.stop_failed \
            and not (w.power is Power.OFF and k.pclass == "fresh"):
        raise Violation(f"{NAMES[i]} claims the stateful side from {NAMES[1 - i]}, "
                        f"{k.pv} and saying {st.state}, without its power confirmed off "
                        f"(power {w.power.value}/{k.pclass}): {d.reason}")


# -- one node takes a step: hamon's tick, minus the I/O ---------------------------------

class _Changes:
    def __init__(self):
        self.claimed = False


_TICKS: dict = {}
_HEARTBEATS: dict = {}


def clear_cache() -> None:
    """Forget cached ticks and heartbeats (after hamon's rules were swapped, in a test)."""
    _TICKS.clear()
    _HEARTBEATS.clear()


def step(sim: Sim, i: int) -> Sim:
    """Node i's daemon ticks: decide (until more than a change of state) and act."""
    n = sim.nodes[i]
    key = (i, n.know)
    if key not in _TICKS:
        _TICKS[key] = _tick(i, n.know)
    k2, claimed, exiting = _TICKS[key]
    if exiting:                                                    # the daemon exits
        sim = send(_set(sim, i, n._replace(know=k2)), i) or sim    # its last heartbeat
        return _set(sim, i, sim.nodes[i]._replace(know=None))
    sim = _set(sim, i, n._replace(know=k2))
    return _claim(sim, i) if claimed else sim


def _tick(i: int, k: Know):
    """What one tick makes of a daemon's knowledge: (knowledge, new claim, exiting)."""
    w = real_world(k)
    peer = liveness(k)
    alive = peer.alive and not w.confirmed_off(NOW, peer.silent_for)   # Daemon._track_peer
    if alive and not k.peer_was_alive:
        w.forget_power()
    st = peer.status
    if w.handed_over and (not peer.alive or st.active or not st.eligible):
        w.handed_over = False
    changes = _Changes()
    machine = StateMachine(_Quiet(), lambda old, new, why: _on_change(w, old, new, changes),
                           lambda: NOW, k.state)
    d = None
    for _ in range(8):                                             # Daemon._decide_and_act
        d = decide(snapshot(i, k._replace(state=machine.state), w, machine))
        check_claim(i, k, machine.state, w, d)
        if d.to is not None:
            machine.transition(d.to, d.reason)
        if d.action is not Act.GOTO:
            break
    k2 = _from_world(k, w, machine.state, alive)
    check_decision(i, k2, d)
    job, bmc_job = k2.job, k2.bmc_job
    if d.action not in (Act.WAIT, Act.GOTO, Act.EXIT):            # Daemon._act
        if d.resource == "vip" and machine.state is State.TAKEOVER:
            k2 = k2._replace(vip_tried=True)
        if d.action in (Act.POWER_STATUS, Act.FENCE):
            bmc_job = d.action
        else:
            job = (d.action, d.resource)
    return k2._replace(job=job, bmc_job=bmc_job), changes.claimed, d.action is Act.EXIT


def _on_change(w: World, old: State, new: State, changes: _Changes) -> None:
    """Daemon._on_change and _settled, the parts decide() reads."""
    if new is State.TAKEOVER and old is not State.BLOCKED:
        w.was_active = old in ACTIVE or w.holding()
        w.claim_seq = 10
        w.vip_tried = False
        changes.claimed = True
    elif new is State.RELEASING:
        w.release_for_peer = old is State.PRIMARY
    elif new is State.STARTING:
        if hasattr(w, "forget_resources"):
            w.forget_resources()
        else:
            w.probed = False
    if new is State.PRIMARY:
        w.claim_seq = None
    if new in (State.PRIMARY, State.SECONDARY) and old is State.RELEASING:
        w.handed_over = w.release_for_peer


def _from_world(k: Know, w: World, state: State, alive: bool) -> Know:
    power_changed = w.power_at is None and k.pclass != "none"
    return k._replace(
        state=state, probed=w.probed, res=tuple(r.status for r in w.all()),
        power=w.power, pclass="none" if power_changed else k.pclass,
        attempts=w.fence_attempts, fence_ago="none" if w.last_fence_at is None else k.fence_ago,
        was_active=w.was_active, claim=w.claim_seq is not None, vip_tried=w.vip_tried,
        handed_over=w.handed_over, release_for_peer=w.release_for_peer, peer_was_alive=alive)


def _claim(sim: Sim, i: int) -> Sim:
    """A new claim: what was sent before it, and echoes of those, no longer count."""
    j = 1 - i
    links = list(sim.links)
    links[i] = tuple(m._replace(after_claim=False) for m in links[i])
    links[j] = tuple(m._replace(echo_after_claim=False) for m in links[j])
    sim = sim._replace(links=tuple(links))
    sim = _set(sim, i, sim.nodes[i]._replace(know=sim.nodes[i].know._replace(acked=False)))
    other = sim.nodes[j]
    if other.know is not None:
        sim = _set(sim, j, other._replace(know=other.know._replace(echo_after_claim=False)))
    return sim


def _set(sim: Sim, i: int, node: Node) -> Sim:
    nodes = list(sim.nodes)
    nodes[i] = node
    return sim._replace(nodes=tuple(nodes))


# -- heartbeats --------------------------------------------------------------------------

def send(sim: Sim, i: int) -> Sim | None:
    k = sim.nodes[i].know
    msg = Msg(k.gen, heartbeat(i, k), True, k.peer_gen, k.echo_after_claim, False, False)
    link = sim.links[i]
    if len(link) >= CAP or (link and link[-1] == msg):
        return None
    links = list(sim.links)
    links[i] = link + (msg,)
    return sim._replace(links=tuple(links))


def deliver(sim: Sim, i: int, pos: int, keep: bool) -> Sim:
    """The heartbeat at ``pos`` from node i arrives at its peer (``keep``: a copy stays)."""
    j = 1 - i
    link = list(sim.links[i])
    m = link[pos]
    if keep:
        link[pos] = m._replace(delivered=True)
    else:
        del link[pos]
    link = [x._replace(older=True) if x_pos < pos else x for x_pos, x in enumerate(link)]
    links = list(sim.links)
    links[i] = tuple(link)
    sim = sim._replace(links=tuple(links))
    node = sim.nodes[j]
    k = node.know
    if k is None or not node.power or m.delivered:
        return sim                                # nobody listening, or a replay
    if k.peer_gen is not None and m.gen < k.peer_gen:
        return sim                                # old-generation
    newer = k.peer_gen is None or m.gen > k.peer_gen or not m.older
    if newer:
        k = k._replace(peer_gen=m.gen, echo_after_claim=m.after_claim)
    if m.echo_gen != k.gen:
        return _set(sim, j, node._replace(know=k))    # stale, but heard: the handshake
    k = k._replace(pv="fresh", lost_past=False)
    if k.pclass == "fresh":
        k = k._replace(pclass="stale")            # the BMC's answer is older than this heartbeat
    if newer:
        k = k._replace(peer_status=m.status, acked=k.claim and m.echo_after_claim)
    return _set(sim, j, node._replace(know=k))


def drop(sim: Sim, i: int, pos: int) -> Sim:
    links = list(sim.links)
    links[i] = sim.links[i][:pos] + sim.links[i][pos + 1:]
    return sim._replace(links=tuple(links))


# -- finished steps: Actor.apply --------------------------------------------------------

def _truth(node: Node, name: str, on) -> Node:
    if name == "partition":
        return node._replace(part=on)
    return node._replace(**{name: on})


def _is_on(node: Node, name: str) -> bool:
    return node.part != "stopped" if name == "partition" else getattr(node, name)


def finish_agent(sim: Sim, i: int, ok: bool) -> Sim:
    node = sim.nodes[i]
    k = node.know
    act, name = k.job
    res, fails = list(k.res), list(k.fails)
    if act is Act.PROBE:
        res = [{"stopped": Res.STOPPED, "started": Res.STARTED, "promoted": Res.PROMOTED}[node.part],
               Res.STARTED if node.vip else Res.STOPPED, Res.STARTED if node.db else Res.STOPPED]
        k = k._replace(probed=True)
    else:
        x = RES.index(name)
        peer = sim.nodes[1 - i]
        if name == "vip" and act in (Act.START, Act.RESTART) and peer.power and peer.vip:
            ok = False                            # the VIP agent's duplicate-address probe
        up = {Act.START: "started", Act.RESTART: "started", Act.PROMOTE: "promoted",
              Act.STOP: "stopped", Act.DEMOTE: "started"}[act]
        if ok:
            node = _truth(node, name, up if name == "partition" else up != "stopped")
            res[x] = {"stopped": Res.STOPPED, "started": Res.STARTED,
                      "promoted": Res.PROMOTED}[up]
        elif act in (Act.STOP, Act.DEMOTE):
            res[x] = Res.STOP_FAILED
        else:
            if act is Act.RESTART:
                node = _truth(node, name, "started" if name == "partition" else False)
            res[x] = Res.FAILED
            fails[x] = min(fails[x] + 1, POLICY.migration_threshold)
    k = k._replace(res=tuple(res), fails=tuple(fails), job=None)
    return _set(sim, i, node._replace(know=k))


def layer_dies(sim: Sim, i: int, x: int) -> Sim:
    """The layer ``RES[x]`` stops running on node i and its monitor says so (Actor.apply)."""
    node = sim.nodes[i]
    k = node.know
    res, fails = list(k.res), list(k.fails)
    res[x], fails[x] = Res.FAILED, min(fails[x] + 1, POLICY.migration_threshold)
    node = _truth(node, RES[x], False)
    return _set(sim, i, node._replace(know=k._replace(res=tuple(res), fails=tuple(fails))))


def power_off(sim: Sim, j: int) -> Sim:
    n = sim.nodes[j]
    return _set(sim, j, n._replace(power=False, part="stopped", vip=False, db=False, know=None))


def finish_bmc(sim: Sim, i: int, outcome: str) -> Sim:
    """outcome: ok | fail | cut (fence_bmc timed out, but the power did go off)."""
    k = sim.nodes[i].know
    j = 1 - i
    act = k.bmc_job
    k = k._replace(bmc_job=None, pclass="fresh")
    if act is Act.FENCE:
        k = k._replace(fence_ago="recent")
        if outcome in ("ok", "cut"):
            sim = power_off(sim, j)
        if outcome == "ok":
            k = k._replace(power=Power.OFF)
        else:
            k = k._replace(attempts=min(k.attempts + 1, POLICY.fence_retries))
    elif outcome == "ok":     # the BMC tells the truth: on for a frozen peer, off for a cut
        k = k._replace(power=Power.ON if sim.nodes[j].power else Power.OFF)
    if outcome != "ok":       # Actor._powered: no answer is no evidence
        k = k._replace(power=Power.UNKNOWN)
    return _set(sim, i, sim.nodes[i]._replace(know=k))


# -- the successors of a state ------------------------------------------------------------

def successors(sim: Sim, max_faults: int):
    """Every (event, next state) from ``sim``; a step that breaks a rule gives a string."""
    return [(event, make()) for event, make in events(sim, max_faults)]


def events(sim: Sim, max_faults: int):
    """Every (event, function giving the next state): the random walk evaluates one."""
    budget = sim.faults < max_faults
    out = []
    for i in (0, 1):
        n, k = sim.nodes[i], sim.nodes[i].know
        if not n.power:
            if budget:
                out.append((f"power on {NAMES[i]}", lambda i=i: _boot(sim, i)))
            continue
        if budget:
            out.append((f"power loss {NAMES[i]}", lambda i=i: _fault(power_off(sim, i))))
        if k is None:
            out.append((f"systemd restarts hamon on {NAMES[i]}", lambda i=i, n=n: _set(
                sim, i, n._replace(know=fresh_know(_next_gen(sim, i), n.maint_disk)))))
            continue
        out.append((f"{NAMES[i]} ticks", lambda i=i: _safe_step(sim, i)))
        if len(sim.links[i]) < CAP:
            out.append((f"{NAMES[i]} sends {k.state.value}", lambda i=i: send(sim, i) or sim))
        out += _finishes(sim, i, k, budget)
        out += _timers(sim, i, k)
        if budget:
            out += _operator(sim, i, n, k)
    for i in (0, 1):
        for pos in range(len(sim.links[i])):
            where = f"{NAMES[i]}->{NAMES[1 - i]} #{pos}"
            out.append((f"deliver {where}", lambda i=i, pos=pos: deliver(sim, i, pos, False)))
            if budget:
                out.append((f"lose {where}", lambda i=i, pos=pos: _fault(drop(sim, i, pos))))
                if not sim.links[i][pos].delivered:
                    out.append((f"duplicate {where}",
                                lambda i=i, pos=pos: _fault(deliver(sim, i, pos, True))))
    return out


def _safe_step(sim: Sim, i: int):
    """The next state, or the violation the step raised (a string)."""
    try:
        return step(sim, i)
    except (Violation, IllegalTransition) as exc:
        return f"{type(exc).__name__}: {exc}"


def _fault(sim: Sim) -> Sim:
    return sim._replace(faults=sim.faults + 1)


def _next_gen(sim: Sim, i: int) -> int:
    gens = [m.gen for m in sim.links[i]] + [sim.nodes[1 - i].know.peer_gen or 0
                                            if sim.nodes[1 - i].know else 0]
    return max(gens + [0]) + 1


def _boot(sim: Sim, i: int) -> Sim:
    n = sim.nodes[i]
    know = fresh_know(_next_gen(sim, i), n.maint_disk)
    return _fault(_set(sim, i, n._replace(power=True, know=know)))


def _finishes(sim: Sim, i: int, k: Know, budget: bool):
    out = []
    if k.job is not None:
        what = busy_name(k.job)
        out.append((f"{NAMES[i]}: {what} done", lambda: finish_agent(sim, i, True)))
        if budget and k.job[0] is not Act.PROBE:
            out.append((f"{NAMES[i]}: {what} fails (fault)",
                        lambda: _fault(finish_agent(sim, i, False))))
    if budget:
        for x, name in enumerate(RES[1:], 1):
            if k.res[x] is Res.STARTED and _is_on(sim.nodes[i], name) and k.job is None:
                out.append((f"{NAMES[i]}: {name} dies (its monitor fails)",
                            lambda x=x: _fault(layer_dies(sim, i, x))))
    if k.bmc_job is not None:
        what = k.bmc_job.value
        out.append((f"{NAMES[i]}: {what} ok", lambda: finish_bmc(sim, i, "ok")))
        if budget:
            out.append((f"{NAMES[i]}: {what} fails", lambda: _fault(finish_bmc(sim, i, "fail"))))
            if k.bmc_job is Act.FENCE:
                out.append((f"{NAMES[i]}: fence times out, power cut",
                            lambda: _fault(finish_bmc(sim, i, "cut"))))
    return out


def _timers(sim: Sim, i: int, k: Know):
    out = []
    n = sim.nodes[i]

    def timer(what, **change):
        out.append((f"{NAMES[i]}: {what}",
                    lambda: _set(sim, i, n._replace(know=k._replace(**change)))))
    if k.pv == "fresh":
        timer("the peer is late", pv="late")
    elif k.pv == "late":
        timer("the peer is dead", pv="dead")
    elif k.pv == "dead" and not k.lost_past:
        timer("fence_delay passes", lost_past=True)
    if not k.initdead:
        timer("initdead passes", initdead=True)
    if k.pclass in ("fresh", "stale"):
        timer("the BMC's answer is old", pclass="old")
    if k.fence_ago == "recent":
        timer("the fence retry is due", fence_ago="ready")
    return out


def _operator(sim: Sim, i: int, n: Node, k: Know):
    """kill -9 of the daemon (a step it had started may or may not have taken effect),
    a clean stop (SIGTERM), maintenance on or off."""
    out = []

    def killed(after):
        return _fault(_set(after, i, after.nodes[i]._replace(know=None)))
    out.append((f"kill -9 hamon on {NAMES[i]}", lambda: killed(sim)))
    if k.job is not None and k.job[0] is not Act.PROBE:
        out.append((f"kill -9 hamon on {NAMES[i]} after its {busy_name(k.job)} took effect",
                    lambda: killed(finish_agent(sim, i, True))))
    if k.bmc_job is Act.FENCE:
        out.append((f"kill -9 hamon on {NAMES[i]} after its fence took effect",
                    lambda: killed(power_off(sim, 1 - i))))
    if not k.stopping:
        out.append((f"SIGTERM hamon on {NAMES[i]}",
                    lambda: _fault(_set(sim, i, n._replace(know=k._replace(stopping=True))))))
    flag = not k.maintenance
    out.append((f"maintenance {'on' if flag else 'off'} on {NAMES[i]}", lambda: _fault(
        _set(sim, i, n._replace(know=k._replace(maintenance=flag), maint_disk=flag)))))
    return out


# -- where exploring starts ---------------------------------------------------------------

def _settled_know(i: int, primary: bool, peer_status: Status, gen: int, peer_gen: int) -> Know:
    res = (Res.PROMOTED, Res.STARTED, Res.STARTED) if primary else (
        Res.STARTED, Res.STOPPED, Res.STOPPED)
    return fresh_know(gen, False)._replace(
        state=State.PRIMARY if primary else State.SECONDARY, probed=True, res=res,
        initdead=True, pv="fresh", peer_status=peer_status, peer_gen=peer_gen,
        peer_was_alive=True)


def steady(holder: int = 0) -> Sim:
    """The holder primary with everything running, its peer secondary, both in touch."""
    nodes = []
    for i in (0, 1):
        primary = i == holder
        nodes.append(Node(True, "promoted" if primary else "started", primary, primary,
                          None, False))
    knows = [_settled_know(i, i == holder, None, 1, 1) for i in (0, 1)]
    for i in (0, 1):
        knows[i] = knows[i]._replace(peer_status=heartbeat(1 - i, knows[1 - i]))
    nodes = [n._replace(know=k) for n, k in zip(nodes, knows)]
    return Sim(tuple(nodes), ((), ()), 0)


def cold() -> Sim:
    """Both nodes just booted: nothing runs, both daemons starting."""
    return Sim(tuple(Node(True, "stopped", False, False, fresh_know(1, False), False)
                     for _ in (0, 1)), ((), ()), 0)


def starts() -> list[Sim]:
    return [steady(0), steady(1), cold()]


# -- liveness: once the faults stop, the stack ends up held by one node --------------------

SETTLE_ROUNDS = 60


def held(sim: Sim) -> int | None:
    """The node holding the whole stack, its peer standing by as secondary; else None."""
    for i in (0, 1):
        n, m = sim.nodes[i], sim.nodes[1 - i]
        if not (n.power and m.power and n.know and m.know):
            return None
        if (n.know.state is State.PRIMARY and n.part == "promoted" and n.vip and n.db
                and n.know.res == (Res.PROMOTED, Res.STARTED, Res.STARTED)
                and m.know.state is State.SECONDARY and n.know.job is None):
            return i
    return None


def _given_up(k: Know | None) -> bool:
    return k is not None and any(f >= POLICY.migration_threshold for f in k.fails[1:])


def _heal(sim: Sim, i: int) -> Sim:
    """What the operator and systemd do once the faults stop: power a node back on
    (after its fence), restart a daemon that exited, end maintenance."""
    n = sim.nodes[i]
    if not n.power:
        return _set(sim, i, n._replace(power=True, maint_disk=False,
                                       know=fresh_know(_next_gen(sim, i), False)))
    if n.know is None:
        return _set(sim, i, n._replace(maint_disk=False,
                                       know=fresh_know(_next_gen(sim, i), False)))
    if n.know.maintenance:
        return _set(sim, i, n._replace(maint_disk=False, know=n.know._replace(maintenance=False)))
    return sim


def _quiet_time(sim: Sim, i: int) -> Sim:
    """Nothing happened for a while: every timer of node i falls due (a peer that is
    powered and running keeps being heard, so it never goes late)."""
    n, peer = sim.nodes[i], sim.nodes[1 - i]
    k = n.know
    if k is None:
        return sim
    heard = peer.power and peer.know is not None
    pv = k.pv if heard or k.pv == "never" else "dead"
    k = k._replace(pv=pv, lost_past=pv == "dead", initdead=True,
                   pclass="old" if k.pclass != "none" else "none",
                   fence_ago="ready" if k.fence_ago != "none" else "none")
    return _set(sim, i, n._replace(know=k))


def _round(sim: Sim) -> Sim | str:
    """Every node heals, ticks, finishes its steps (successfully), sends; every
    heartbeat is delivered."""
    for i in (0, 1):
        sim = _heal(sim, i)
    for i in (0, 1):
        if sim.nodes[i].know is not None:
            after = _safe_step(sim, i)
            if isinstance(after, str):
                return after
            sim = after
        k = sim.nodes[i].know
        if k is not None and k.job is not None:
            sim = finish_agent(sim, i, True)
        if k is not None and sim.nodes[i].know.bmc_job is not None:
            sim = finish_bmc(sim, i, "ok")
        if sim.nodes[i].know is not None:
            sim = send(sim, i) or sim
    for i in (0, 1):
        while sim.links[i]:
            sim = deliver(sim, i, 0, False)
    bad = violations(sim)
    return f"after the faults: {bad[0]}" if bad else sim


def settle(sim: Sim, rounds: int = SETTLE_ROUNDS) -> tuple[Sim | str, int]:
    """No more faults: a fair run (every step succeeds, every heartbeat arrives, time
    passes when nothing else happens). Returns (the final state or a violation, rounds)."""
    for n in range(rounds):
        after = _round(sim)
        if isinstance(after, str) or held(after) is not None:
            return after, n + 1
        if after == sim:
            for i in (0, 1):
                after = _quiet_time(after, i)
        sim = after
    return sim, rounds


def stack_liveness(sim: Sim) -> str | None:
    """None if, once the faults stop, one node ends up holding the stack (or no node may:
    both gave a layer up after ``migration_threshold`` failures, which only
    ``failure_timeout`` clears); else what is wrong."""
    final, rounds = settle(sim)
    if isinstance(final, str):
        return final
    if held(final) is not None:
        return None
    if all(_given_up(n.know) for n in final.nodes):
        return None
    states = ", ".join(f"{NAMES[i]} {n.know.state.value if n.know else 'down'} "
                       f"{[r.value for r in n.know.res] if n.know else ''}"
                       for i, n in enumerate(final.nodes))
    return f"the stack is not held by one node {rounds} rounds after the faults stopped: {states}"


# -- searching ----------------------------------------------------------------------------

class Found(NamedTuple):
    problem: str
    trace: list


def explore(depth: int, max_faults: int, initial: list[Sim] | None = None,
            limit: int = 2_000_000):
    """Breadth-first to ``depth`` events; returns (Found or None, states, depth reached)."""
    initial = initial or starts()
    parent = {s: None for s in initial}
    frontier = list(initial)
    reached = 0
    for level in range(depth):
        nxt = []
        for sim in frontier:
            for event, after in successors(sim, max_faults):
                if isinstance(after, str):
                    return Found(after, _trace(parent, sim) + [event]), len(parent), level + 1
                if after in parent:
                    continue
                parent[after] = (sim, event)
                bad = violations(after)
                if bad:
                    return Found(bad[0], _trace(parent, after)), len(parent), level + 1
                nxt.append(after)
                if len(parent) >= limit:
                    return None, len(parent), level
        if not nxt:
            return None, len(parent), reached
        frontier = nxt
        reached = level + 1
    return None, len(parent), reached


def _trace(parent, sim) -> list:
    events = []
    while parent[sim] is not None:
        sim, event = parent[sim]
        events.append(event)
    return events[::-1]


def random_search(walks: int, steps: int, max_faults: int, seed: int = 1,
                  initial: list[Sim] | None = None, live: bool = True):
    """Seeded random walks; returns (Found or None, distinct states seen). With ``live``,
    the end of every walk is checked for :func:`stack_liveness` too."""
    rng = random.Random(seed)
    initial = initial or starts()
    seen = set()
    for _ in range(walks):
        sim = rng.choice(initial)
        trace = []
        for _ in range(steps):
            choices = events(sim, max_faults)
            if not choices:
                break
            event, make = rng.choice(choices)
            after = make()
            trace.append(event)
            if isinstance(after, str):
                return Found(after, trace), len(seen)
            bad = violations(after)
            if bad:
                return Found(bad[0], trace), len(seen)
            seen.add(after)
            sim = after
        problem = stack_liveness(sim) if live else None
        if problem:
            return Found(problem, trace + ["the faults stop"]), len(seen)
    return None, len(seen)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--faults", type=int, default=2)
    parser.add_argument("--walks", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    found, states, reached = explore(args.depth, args.faults)
    print(f"breadth-first: depth {reached}, {states} distinct states, faults <= {args.faults}, "
          f"{time.monotonic() - started:.1f}s")
    if found is None:
        started = time.monotonic()
        found, states = random_search(args.walks, args.steps, args.faults + 2, args.seed)
        print(f"random: {args.walks} walks of {args.steps} events, {states} distinct states, "
              f"{time.monotonic() - started:.1f}s")
    if found is not None:
        print(f"VIOLATION: {found.problem}")
        for n, event in enumerate(found.trace, 1):
            print(f"  {n:3}. {event}")
        return 1
    print("no violation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
