"""Two hamon daemons on a fake clock, joined by MemoryTransport, with fake agents and BMCs.

Each test plays a fault on :class:`Pair` and checks the outcome and, at
every tick, that the partition is never promoted on both nodes at once.
"""

import io
import json
import os
import pathlib
import random

import pytest

from hapack import confirm
from hapack.hamon import report
from hapack.hamon.config import Config, settings
from hapack.hamon.daemon import Daemon, fresh_window
from hapack.hamon.snapshot import Power
from hapack.hamon.events import EventLog
from hapack.hamon.fence import FenceFailed
from hapack.hamon.ocfexec import Outcome
from hapack.hamon.packet import Heartbeat, Keyring, Status, encode
from hapack.hamon.states import State
from hapack.hamon.transport import Hub, MemoryTransport
from hapack.stack import loads

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "stack.toml"
KEYS = Keyring.parse("auth 1\n1 0123456789abcdef0123\n")
RC = {"stopped": 7, "started": 0, "promoted": 8}
AFTER = {"start": "started", "stop": "stopped", "promote": "promoted", "demote": "started"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeAgents:
    """Resources of one node: their state, the calls made, failures to inject."""

    def __init__(self):
        self.state, self.calls, self.fail, self.broken = {}, [], {}, set()
        self.degraded = {}  # name -> exit reason: its monitor says 190/191

    def run(self, r, action, interval_s=0.0):
        self.calls.append((r.name, action))
        if (r.name, action) in self.fail:
            self.fail[(r.name, action)] -= 1
            if not self.fail[(r.name, action)]:
                del self.fail[(r.name, action)]
            return Outcome(1, f"{action} injected failure", 0.0)
        current = self.state.get(r.name, "stopped")
        if action == "monitor":
            if r.name in self.degraded and r.name not in self.broken and current != "stopped":
                return Outcome(191 if current == "promoted" else 190, self.degraded[r.name], 0.0)
            return Outcome(1 if r.name in self.broken else RC[current], "", 0.0)
        self.state[r.name] = AFTER[action]
        if action in ("stop", "start"):
            self.broken.discard(r.name)
        return Outcome(0, "", 0.0)


class FakeBmc:
    def __init__(self, pair, peer):
        self.pair, self.peer, self.reachable, self.calls = pair, peer, True, []

    def status(self):
        self.calls.append("status")
        if not self.reachable:
            raise FenceFailed("no answer from the BMC")
        return Power.ON if self.pair.power[self.peer] else Power.OFF

    def off(self):
        self.calls.append("off")
        if not self.reachable:
            raise FenceFailed("no answer from the BMC")
        self.pair.power_off(self.peer)


class Pair:
    def __init__(self, tmp, hamon_table=""):
        text = EXAMPLE.read_text() + f'\n[hamon]\nstate_dir = "{tmp}"\n{hamon_table}'
        stack = loads(text, check_agents=False)
        self.hub, self.clock = Hub(), Clock()
        self.power = {"node1": True, "node2": True}
        self.frozen = set()
        self.nodes = {}
        self.tmp, self.generations = tmp, {}
        for i, name in enumerate(("node1", "node2")):
            self.nodes[name] = self._daemon(Config(stack, name, settings(stack.hamon)), i, tmp)

    def _daemon(self, cfg, i, tmp, generation=None):
        generation = 100 + i if generation is None else generation
        transport = MemoryTransport(self.hub, cfg.node, KEYS, generation, cfg.peer.name,
                                    len(cfg.links), fresh_window(cfg.settings, len(cfg.links)))
        log = EventLog(cfg.node, None, stream=io.StringIO())
        d = Daemon(cfg, transport, FakeAgents(), FakeBmc(self, cfg.peer.name), log,
                   clock=self.clock, threaded=False)
        d.actor.confirmation_file = os.path.join(tmp, f"fence-confirmed-{cfg.node}")
        return d

    def restart(self, name):
        """A new daemon on ``name`` (kill -9 and restart): same node, same resources."""
        old = self.nodes[name]
        i = ("node1", "node2").index(name)
        self.generations[name] = self.generations.get(name, 100 + i) + 10
        d = self._daemon(old.config, i, self.tmp, self.generations[name])
        d.actor.ocf, d.actor.fencer = old.actor.ocf, old.actor.fencer
        self.nodes[name] = d
        return d

    def __getitem__(self, name):
        return self.nodes[name]

    def agents(self, name):
        return self.nodes[name].actor.ocf

    def promoted(self, name):
        return self.power[name] and self.agents(name).state.get("partition") == "promoted"

    def power_off(self, name):
        self.power[name] = False
        self.frozen.discard(name)

    def run(self, seconds, dt=0.05):
        for _ in range(round(seconds / dt)):
            self.clock.now += dt
            for name, d in self.nodes.items():
                if self.power[name] and name not in self.frozen:
                    d.tick()
            assert not (self.promoted("node1") and self.promoted("node2")), \
                "the partition is promoted on both nodes"

    def state(self, name):
        return self.nodes[name].machine.state

    def log(self, name):
        return self.nodes[name].log.stream.getvalue()

    def cut(self, node, *links):
        self.hub.cut |= {(node, link) for link in links}


@pytest.fixture
def pair(tmp_path):
    p = Pair(str(tmp_path))
    p.run(3)
    assert (p.state("node1"), p.state("node2")) == (State.PRIMARY, State.SECONDARY)
    return p


def test_cold_start_the_primary_acquires_and_everything_starts(pair):
    assert pair.agents("node1").state == {
        "partition": "promoted", "vip": "started", "activemq": "started",
        "postgresql": "started", "slapd": "started", "apache": "started", "tomcat": "started"}
    assert pair.agents("node2").state == {"partition": "started", "apache": "started",
                                          "tomcat": "started"}
    assert pair["node2"].actor.fencer.calls == [] and pair["node1"].actor.fencer.calls == []


def takeover_moment(pair, node="node2", seconds=6.0, dt=0.05):
    """Run until ``node`` enters takeover; the membership's view of its peer then (or None)."""
    d = pair[node]
    for _ in range(round(seconds / dt)):
        pair.run(dt, dt)
        if d.machine.state is not State.SECONDARY:
            return d.membership.view(pair.clock.now)
    return None


def test_power_loss_of_the_primary_is_taken_over_without_waiting_out_the_dead_time(pair):
    """Issue 19: the BMC of a late peer says off: the gate is met, the takeover starts while
    the peer is still within its dead time (the order of events, not a speed)."""
    pair.power_off("node1")
    seen = takeover_moment(pair)
    assert seen is not None and seen.alive, "the takeover waited for the dead time"
    assert seen.silent_for >= pair["node2"].s.warn      # only a late peer's BMC is asked
    pair.run(1)
    assert pair.state("node2") is State.PRIMARY and pair.promoted("node2")
    assert pair["node2"].actor.fencer.calls == ["status"]  # asked early, already off: no shot
    steps = [s["step"] for s in pair["node2"].world.timelines["takeover"]["steps"]]
    assert steps == ["power-status", "decided", "start vip", "promote partition",
                     "start activemq", "start postgresql", "start slapd", "end"]
    decided = pair["node2"].world.timelines["takeover"]["steps"][1]
    assert decided["start"] < pair["node2"].s.dead_time   # from node1's last heartbeat
    assert "BMC reports the power off" in pair.log("node2")
    found, note = confirm.read(pair["node2"].actor.confirmation_file, "node2")
    assert (found.peer, found.how, note) == ("node1", "fence_bmc status", "")


def test_the_peer_lost_is_reported_before_the_takeover_starts(pair):
    pair.power_off("node1")
    pair.run(2)
    log = pair.log("node2")
    assert log.index("power-status: done") < log.index("node1 lost: silent for") \
        < log.index("-> takeover")
    assert "its BMC reports the power off" in log


@pytest.mark.parametrize("freeze", [0.3, 0.5, 0.75, 0.79, 0.95])
@pytest.mark.parametrize("phase", [0.0, 0.05, 0.1, 0.15])
def test_a_freeze_under_the_dead_time_never_takes_over_its_bmc_says_on(pair, freeze, phase):
    """The BMC of a frozen peer says on: no early takeover, whatever the freeze's length
    under the dead time and its phase against the heartbeats."""
    pair.run(phase)
    pair.frozen.add("node1")
    for _ in range(round(freeze / 0.05)):
        pair.run(0.05)
        assert pair.state("node2") is State.SECONDARY
    pair.frozen.discard("node1")
    pair.run(3)
    assert (pair.state("node1"), pair.state("node2")) == (State.PRIMARY, State.SECONDARY)
    assert pair.power == {"node1": True, "node2": True}
    assert "off" not in pair["node2"].actor.fencer.calls
    assert ("partition", "promote") not in pair.agents("node2").calls


def test_a_freeze_longer_than_the_dead_time_is_taken_over_only_after_it(pair):
    pair.frozen.add("node1")
    seen = takeover_moment(pair)
    assert seen is not None and not seen.alive, "taken over before the dead time"
    assert pair["node2"].actor.fencer.calls[0] == "status"
    pair.run(3)
    assert pair.power["node1"] is False and pair.state("node2") is State.PRIMARY
    assert pair["node2"].actor.fencer.calls.count("off") == 1


def test_an_unreachable_bmc_of_a_late_peer_is_not_off(pair):
    """"Unknown" is never "off": a BMC that does not answer starts nothing early."""
    pair["node2"].actor.fencer.reachable = False
    pair.power["node1"] = False
    seen = takeover_moment(pair)
    assert seen is not None and not seen.alive
    assert ("partition", "promote") not in pair.agents("node2").calls


def test_a_failed_question_forgets_an_earlier_off(pair):
    """A BMC step that fails leaves the power unknown: an "off" read before the peer's last
    heartbeat must not look fresh because a later question failed at a later time."""
    from hapack.hamon.snapshot import Act, Decision
    d = pair["node2"]
    d.world.power, d.world.power_at = Power.OFF, pair.clock.now - 5
    for act in (Act.POWER_STATUS, Act.FENCE):
        d.world.power = Power.OFF
        ok, _ = d.actor.apply(Decision(act, "test"), FenceFailed("no answer"), pair.clock.now)
        assert not ok and d.world.power is Power.UNKNOWN


def _status_calls(pair):
    return pair["node2"].actor.fencer.calls.count("status")


@pytest.mark.parametrize("silent, every", [(0.45, 0.5), (0.55, 0.6), (0.7, 0.8), (0.9, 1.0)])
def test_a_flapping_peer_costs_at_most_one_bmc_question_per_spacing(pair, silent, every):
    """The BMC query load is bounded: node1 falls silent for ``silent`` every ``every``
    seconds (late each time, never dead) for a minute: node2 asks at most once per
    late spell and once per power_query_spacing, and never takes over."""
    spacing = pair["node2"].policy.power_query_spacing
    before = _status_calls(pair)
    for _ in range(round(60 / every)):
        pair.frozen.add("node1")
        pair.run(silent)
        pair.frozen.discard("node1")
        pair.run(every - silent)
    asked = _status_calls(pair) - before
    assert 0 < asked <= 60 / max(spacing, every) + 1, asked
    assert pair.state("node2") is State.SECONDARY and pair.power["node1"]


def test_one_link_cut_is_degraded_not_a_failover(pair):
    pair.cut("node1", 0)
    pair.run(5)
    assert (pair.state("node1"), pair.state("node2")) == (State.PRIMARY, State.SECONDARY)
    st = report.status_of(pair["node2"])
    assert [(link["name"], link["up"]) for link in st["links"]] == [("lan", False), ("hb", True)]
    assert "link lan: down" in pair.log("node2")
    assert pair.power == {"node1": True, "node2": True}


def test_all_links_cut_exactly_one_keeps_the_stack(pair):
    pair.cut("node1", 0, 1)
    pair.run(4)
    assert pair.power == {"node1": True, "node2": False}
    assert pair.state("node1") is State.PRIMARY
    assert pair["node1"].actor.fencer.calls[-1:] == ["off"]


def test_all_links_cut_with_the_roles_swapped_the_holder_still_wins(tmp_path):
    pair = Pair(str(tmp_path))
    pair.run(3)
    pair["node1"].world.standby = True
    pair.run(3)
    assert (pair.state("node1"), pair.state("node2")) == (State.SECONDARY, State.PRIMARY)
    pair.cut("node2", 0, 1)
    pair.run(4)
    assert pair.power == {"node1": False, "node2": True}


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_a_short_freeze_of_either_node_changes_nothing(pair, node):
    pair.frozen.add(node)
    pair.run(0.75)
    pair.frozen.discard(node)
    pair.run(3)
    assert (pair.state("node1"), pair.state("node2")) == (State.PRIMARY, State.SECONDARY)
    assert pair.power == {"node1": True, "node2": True}
    assert "off" not in pair["node1"].actor.fencer.calls + pair["node2"].actor.fencer.calls


def test_a_three_second_freeze_of_the_primary_is_fenced_and_taken_over(pair):
    pair.frozen.add("node1")
    pair.run(3)
    assert pair.power["node1"] is False
    pair.run(0.5)
    assert pair.state("node2") is State.PRIMARY


def test_bmc_unreachable_keeps_the_vip_only_and_never_mounts(pair):
    pair["node2"].actor.fencer.reachable = False
    pair.power["node1"] = False  # its BMC cannot tell anyone
    pair.run(10)
    assert pair.state("node2") is State.BLOCKED
    assert pair.agents("node2").state["vip"] == "started"
    assert pair.agents("node2").state["partition"] == "started"  # never promoted
    assert ("partition", "promote") not in pair.agents("node2").calls
    pair["node2"].actor.fencer.reachable = True
    pair.run(6)
    assert pair.state("node2") is State.PRIMARY


def test_standby_hands_over_without_fencing(pair):
    answer = report.handle(pair["node1"], {"cmd": "standby", "on": True})
    assert answer["ok"]
    pair.run(2)
    assert (pair.state("node1"), pair.state("node2")) == (State.SECONDARY, State.PRIMARY)
    assert pair["node2"].actor.fencer.calls == []
    calls = [c for c in pair.agents("node1").calls if c[1] != "monitor"]
    at = calls.index(("slapd", "stop"))
    assert calls[at:at + 5] == [("slapd", "stop"), ("postgresql", "stop"), ("activemq", "stop"),
                                ("vip", "stop"), ("partition", "demote")]


def test_takeover_command_on_the_secondary(pair):
    assert report.handle(pair["node2"], {"cmd": "takeover"})["ok"]
    pair.run(2)
    assert (pair.state("node1"), pair.state("node2")) == (State.SECONDARY, State.PRIMARY)
    assert pair["node2"].actor.fencer.calls == []
    pair.run(10)  # no failback
    assert pair.state("node2") is State.PRIMARY


def test_a_failing_stateful_layer_restarts_here_then_switches_over(pair):
    agents = pair.agents("node1")
    agents.broken.add("postgresql")
    pair.run(11)
    assert ("postgresql", "stop") in agents.calls and pair.state("node1") is State.PRIMARY
    for _ in range(3):
        agents.broken.add("postgresql")
        pair.run(11)
    assert (pair.state("node1"), pair.state("node2")) == (State.SECONDARY, State.PRIMARY)
    assert pair["node2"].actor.fencer.calls == []
    assert "switching over to node2" in pair.log("node1")


def test_a_failed_stop_gets_the_node_fenced_by_its_peer(pair):
    pair.agents("node1").fail[("postgresql", "stop")] = 1
    report.handle(pair["node1"], {"cmd": "standby", "on": True})
    pair.run(3)
    assert pair.power["node1"] is False
    assert pair["node2"].actor.fencer.calls.count("off") == 1
    assert pair.state("node2") is State.PRIMARY


def test_clean_shutdown_of_the_primary_hands_over_without_fencing(pair):
    pair["node1"].world.stopping = True
    pair.run(3)
    assert pair.state("node1") is State.STOPPED and not pair["node1"].running
    pair.power["node1"] = False  # the daemon is gone (the host runs on)
    pair.run(3)
    assert pair.state("node2") is State.PRIMARY
    assert "off" not in pair["node2"].actor.fencer.calls
    assert pair.agents("node1").state == {k: "stopped" for k in pair.agents("node1").state}


def test_maintenance_then_silence_is_hands_off(pair):
    report.handle(pair["node1"], {"cmd": "maintenance", "on": True})
    pair.run(1)
    assert pair.state("node1") is State.MAINTENANCE
    pair.frozen.add("node1")  # the daemon restarts, say
    pair.run(5)
    assert pair.state("node2") is State.SECONDARY
    assert "off" not in pair["node2"].actor.fencer.calls
    pair.frozen.discard("node1")
    report.handle(pair["node1"], {"cmd": "maintenance", "on": False})
    pair.run(2)
    assert pair.state("node1") is State.PRIMARY


def test_maintenance_survives_a_restart_of_the_daemon(tmp_path):
    pair = Pair(str(tmp_path))
    pair.run(3)
    report.handle(pair["node1"], {"cmd": "maintenance", "on": True})
    pair.run(1)
    assert (tmp_path / "maintenance").exists()
    again = pair.restart("node1")
    assert again.world.maintenance
    pair.run(2)
    assert pair.state("node1") is State.MAINTENANCE
    st = again.status()
    assert st.maintenance and st.active and st.probing  # hands off, nothing known: "as found"
    report.handle(again, {"cmd": "maintenance", "on": False})
    assert not (tmp_path / "maintenance").exists()
    pair.run(3)
    assert (pair.state("node1"), pair.state("node2")) == (State.PRIMARY, State.SECONDARY)
    assert pair.power == {"node1": True, "node2": True}


def test_a_restarted_daemon_says_probing_and_active_until_its_probe(tmp_path):
    pair = Pair(str(tmp_path))
    pair.run(3)
    again = pair.restart("node2")       # the secondary: nothing of the stateful side runs there
    st = again.status()
    assert (st.state, st.active, st.probing) == ("starting", True, True)
    pair.run(2)
    st = again.status()
    assert (st.state, st.active, st.probing) == ("secondary", False, False)


def test_forged_and_replayed_packets_change_nothing(pair):
    recorded = [(link, data) for sender, link, data in pair.hub.tap if sender == "node1"][-40:]
    forger = Keyring.parse("auth 1\n1 a-guessed-secret-000\n")
    pair.power_off("node1")
    for n in range(40):
        for link, data in recorded:
            pair.hub.inject("node2", link, data)
        forged = Heartbeat(0, 10**9, n, 0, 0, n, Status("node1", "primary", active=True))
        pair.hub.inject("node2", 0, encode(forger, forged))
        pair.run(0.05)
    assert pair.state("node2") is State.PRIMARY
    rejected = pair["node2"].transport.rejected
    assert rejected["replay"] > 0 and rejected["bad-mac"] == 40


def test_status_shows_the_last_failover_timeline(pair):
    pair.power_off("node1")
    pair.run(2)
    st = report.status_of(pair["node2"])
    assert st["state"] == "primary" and st["peer"]["alive"] is False
    assert st["failover"]["outcome"].startswith("primary")
    text = report.render(json.loads(json.dumps(st)))
    assert "last failover:" in text and "promote partition" in text
    assert "lan" in text and "DOWN" in text


def test_startup_alone_waits_for_all_until_the_bmc_says_off(tmp_path):
    pair = Pair(str(tmp_path), 'initdead = "2s"\n')
    pair.power["node1"] = False
    pair.run(1.5)
    assert pair.state("node2") is State.STARTING
    pair.run(1)
    assert pair.state("node2") is State.PRIMARY
    assert pair["node2"].actor.fencer.calls == ["status"]


def test_startup_alone_with_the_peer_powered_on_does_not_take_over(tmp_path):
    pair = Pair(str(tmp_path), 'initdead = "2s"\n')
    pair.frozen.add("node1")  # on, but silent
    pair.run(10)
    assert pair.state("node2") is State.STARTING
    assert pair.power["node1"] is True
    assert "wait-for-all" in pair.log("node2")


# -- hamon cleanup: the operator forgets failures (crm_resource --cleanup) -------------

STATEFUL_LAYERS = ("activemq", "postgresql", "slapd")


def give_up(pair, node, layer="postgresql"):
    """``layer`` fails on ``node`` until hamon gives it up (migration_threshold)."""
    for _ in range(pair[node].world.migration_threshold):
        pair.agents(node).broken.add(layer)
        pair.run(11)


def stateful_only_with_the_partition(pair):
    for node in ("node1", "node2"):
        state = pair.agents(node).state
        running = [layer for layer in STATEFUL_LAYERS if state.get(layer) == "started"]
        if pair.power[node] and running:
            assert state.get("partition") == "promoted", f"{running} on {node} unpromoted"


def test_cleanup_starts_a_layer_given_up_on_both_nodes_where_the_side_is_held(pair):
    give_up(pair, "node1")
    assert pair.state("node2") is State.PRIMARY
    give_up(pair, "node2")      # node1 cannot take it back: left stopped on node2
    assert pair.agents("node2").state["postgresql"] == "stopped"
    assert "cannot take over: leaving it stopped" in pair.log("node2")
    answer = report.handle(pair["node2"], {"cmd": "cleanup", "resource": "postgresql"})
    assert answer == {"ok": True, "message": "failures forgotten on node2: postgresql (3)"}
    pair.run(3)
    assert pair.agents("node2").state["postgresql"] == "started"
    assert pair.state("node2") is State.PRIMARY
    assert not pair["node1"].world.eligible(pair.clock.now)
    assert report.handle(pair["node1"], {"cmd": "cleanup"})["ok"]
    pair.run(1)
    assert pair["node2"].membership.view(pair.clock.now).status.eligible


def test_cleanup_of_an_unknown_resource_is_refused_and_forgets_nothing(pair):
    give_up(pair, "node1")
    before = len(pair["node1"].world.by_name["postgresql"].failures)
    answer = report.handle(pair["node1"], {"cmd": "cleanup", "resource": "postgres"})
    assert not answer["ok"] and "no resource 'postgres'" in answer["error"]
    assert "postgresql" in answer["error"]
    assert len(pair["node1"].world.by_name["postgresql"].failures) == before > 0


@pytest.mark.parametrize("seed", range(8))
def test_cleanups_at_random_moments_never_start_a_layer_off_the_promoted_partition(tmp_path,
                                                                                    seed):
    rnd = random.Random(seed)
    pair = Pair(str(tmp_path))
    pair.run(3)
    for _ in range(30):
        node = rnd.choice(["node1", "node2"])
        move = rnd.choice(["break", "break", "cleanup", "cleanup-all", "wait"])
        if move == "break":
            pair.agents(node).broken.add(rnd.choice(STATEFUL_LAYERS))
        elif move.startswith("cleanup"):
            name = None if move == "cleanup-all" else rnd.choice(STATEFUL_LAYERS)
            assert report.handle(pair[node], {"cmd": "cleanup", "resource": name})["ok"]
        for _ in range(rnd.randint(1, 40)):
            pair.run(0.25)
            stateful_only_with_the_partition(pair)
    for node in ("node1", "node2"):
        report.handle(pair[node], {"cmd": "cleanup"})
    pair.run(40)
    holders = [n for n in ("node1", "node2") if pair.promoted(n)]
    assert len(holders) == 1
    assert all(pair.agents(holders[0]).state.get(layer) == "started" for layer in STATEFUL_LAYERS)


def test_standby_on_a_holder_whose_peer_cannot_take_says_so_and_keeps_the_stack(pair):
    give_up(pair, "node1", "vip")               # node1's VIP failed three times
    assert pair.state("node2") is State.PRIMARY
    for _ in range(pair["node1"].world.migration_threshold):
        pair["node1"].world.by_name["vip"].failures.append(pair.clock.now)
    pair.run(1)
    answer = report.handle(pair["node2"], {"cmd": "standby", "on": True})
    assert answer["ok"] and "node1 cannot take the stateful side now" in answer["message"]
    assert "hamon cleanup" in answer["message"]
    pair.run(5)
    assert pair.state("node2") is State.PRIMARY and pair.promoted("node2")
    assert "standby, but node1 cannot take the stateful side" in pair["node2"].reason
    report.handle(pair["node1"], {"cmd": "cleanup"})
    pair.run(10)
    assert (pair.state("node1"), pair.state("node2")) == (State.PRIMARY, State.SECONDARY)


def test_standby_on_with_an_able_peer_hands_over_without_a_note(pair):
    answer = report.handle(pair["node1"], {"cmd": "standby", "on": True})
    assert answer == {"ok": True, "message": "standby on"}
