"""hamon's alerts on the two-daemon fake-clock harness (test_hamon_daemon.Pair): which events a
fault produces, in what order, and that a sink that never returns never delays a takeover."""

import io
import threading

import pytest

from hapack.alerts import Dispatcher
from hapack.hamon import alerts as hamon_alerts
from hapack.hamon.events import EventLog
from hapack.hamon.states import State
from test_hamon_daemon import Pair

ALERTS = '\n[alerts]\n[[alerts.recipients]]\nsink = "syslog"\nsocket = "/nonexistent"\n'


class Recorder:
    shown = "recorder"

    def __init__(self, block=False):
        self.got = []
        self.release = threading.Event()
        if not block:
            self.release.set()

    def send(self, event, deadline):
        self.got.append(event)
        self.release.wait()


class AlertPair(Pair):
    """The Pair, each daemon's EventLog feeding HamonAlerts -> a dispatcher of ``sinks``."""

    def __init__(self, tmp, sinks_of, alerts_table=ALERTS):
        self.dispatchers = {}
        self.sinks_of = sinks_of
        self.alerts_table = alerts_table
        super().__init__(tmp)

    def _daemon(self, cfg, i, tmp):
        d = super()._daemon(cfg, i, tmp)
        dispatcher = Dispatcher([self.sinks_of(cfg.node)], log=d.log.warning)
        d.log.listeners.append(hamon_alerts.HamonAlerts(cfg, dispatcher.submit))
        self.dispatchers[cfg.node] = dispatcher
        return d

    def close(self):
        for dispatcher in self.dispatchers.values():
            dispatcher.close(wait=2)


@pytest.fixture
def recorded(tmp_path):
    sinks = {"node1": Recorder(), "node2": Recorder()}
    pair = AlertPair(str(tmp_path), sinks.get)
    pair.run(3)
    assert (pair.state("node1"), pair.state("node2")) == (State.PRIMARY, State.SECONDARY)
    yield pair, sinks
    pair.close()


def names(sink):
    return [e.event for e in sink.got]


def settle(pair):
    for dispatcher in pair.dispatchers.values():
        dispatcher.close(wait=2)


def test_a_cold_start_reports_the_first_acquisition_only(recorded):
    pair, sinks = recorded
    settle(pair)
    assert names(sinks["node1"]) == ["takeover_started", "takeover_finished"]
    assert names(sinks["node2"]) == []


def test_power_loss_of_the_primary(recorded):
    pair, sinks = recorded
    pair.power_off("node1")
    pair.run(5)
    assert pair.state("node2") is State.PRIMARY
    settle(pair)
    got = names(sinks["node2"])
    # the BMC of a late peer is asked before the peer is declared dead: either order
    assert sorted(got[:2]) == ["fence_ok", "node_lost"], got
    assert got[2:] == ["takeover_started", "takeover_finished"], got
    lost, fenced = sorted(sinks["node2"].got[:2], key=lambda e: e.event != "node_lost")
    started, finished = sinks["node2"].got[2:]
    assert lost.node == fenced.node == "node1" and started.node == finished.node == "node2"
    assert fenced.task == "status" and "off" in fenced.desc     # the BMC confirmed it off
    assert all(e.source == "hamon" and e.reporter == "node2" and e.cluster == "hapack-lab"
               for e in sinks["node2"].got)
    assert [e.sequence for e in sinks["node2"].got] == [1, 2, 3, 4]
    steps = [s["step"] for s in finished.body()["timeline"]["steps"]]
    assert "promote partition" in steps and steps[-1] == "end"


def test_peer_lost_then_back(recorded):
    """Every link cut and neither BMC answering: node2 loses node1, cannot fence it, and
    sees it again once the links heal; a short gap reports nothing."""
    pair, sinks = recorded
    pair.cut("node1", 0, 1)
    pair.run(0.3)
    pair.hub.cut.clear()
    pair.run(1)
    for node in ("node1", "node2"):
        pair[node].actor.fencer.reachable = False
    pair.cut("node1", 0, 1)
    pair.run(6)
    pair.hub.cut.clear()
    pair.run(3)
    settle(pair)
    got = names(sinks["node2"])
    assert got.count("node_lost") == 1 and "node_back" in got, got
    assert got.index("node_lost") < got.index("node_back")
    assert "fence_failed" in got and "fence_ok" not in got


def test_fencing_that_fails_then_blocked(recorded):
    pair, sinks = recorded
    pair["node2"].actor.fencer.reachable = False
    pair.power_off("node1")
    pair.run(30)
    assert pair.state("node2") is State.BLOCKED
    settle(pair)
    got = names(sinks["node2"])
    assert "node_lost" in got and "fence_failed" in got and "blocked" in got
    assert got.index("fence_failed") < got.index("blocked")
    assert "fence_ok" not in got and "takeover_finished" not in got
    blocked = sinks["node2"].got[got.index("blocked")]
    assert blocked.node == "node1" and blocked.kind == "fencing"


def test_a_resource_that_fails(recorded):
    pair, sinks = recorded
    pair.agents("node1").broken.add("postgresql")
    pair.run(15)
    settle(pair)
    failed = [e for e in sinks["node1"].got if e.event == "resource_failed"]
    assert failed and failed[0].rsc == "postgresql" and failed[0].task == "monitor"
    assert failed[0].node == "node1"


def test_a_sink_that_never_returns_never_delays_the_takeover(tmp_path):
    """The sink blocks on every event until the end of the test: node2 still takes over in
    the same ticks as with no alerts at all, and its events queue (or drop) behind."""
    plain = Pair(str(tmp_path / "plain"))
    stuck = Recorder(block=True)
    pair = AlertPair(str(tmp_path / "alerts"), lambda node: stuck if node == "node2" else Recorder())
    try:
        for p in (plain, pair):
            p.run(3)
            p.power_off("node1")
        ticks = {}
        for label, p in (("plain", plain), ("alerts", pair)):
            for tick in range(200):
                p.run(0.05)
                if p.state("node2") is State.PRIMARY:
                    ticks[label] = tick
                    break
        assert ticks["alerts"] == ticks["plain"], ticks
        assert not stuck.release.is_set() and len(stuck.got) == 1
        assert pair.dispatchers["node2"].counts()["recorder"]["queued"] >= 3
    finally:
        stuck.release.set()
        pair.close()


def test_a_listener_that_raises_never_stops_the_log():
    log = EventLog("node1", None, stream=io.StringIO())

    def broken(record):
        raise RuntimeError("bug")
    config = type("C", (), {"node": "node1", "peer": type("P", (), {"name": "node2"}),
                            "stack": type("S", (), {"cluster": type("K", (), {"name": "c"})})})
    listener = hamon_alerts.HamonAlerts(config, broken)
    log.listeners.append(listener)
    log.event("peer", "node2 lost", "warning", alive=False)
    log.info("still logging")
    assert listener.errors == 1 and "still logging" in log.stream.getvalue()


def test_start_reads_the_stack_files_alerts(tmp_path):
    from hapack.hamon.config import Config, settings
    from hapack.stack import loads
    from test_hamon_daemon import EXAMPLE
    log = EventLog("node1", None, stream=io.StringIO())
    stack = loads(EXAMPLE.read_text(), check_agents=False)
    assert hamon_alerts.start(Config(stack, "node1", settings(stack.hamon)), log) is None
    assert log.listeners == []
    stack = loads(EXAMPLE.read_text() + ALERTS, check_agents=False)
    dispatcher = hamon_alerts.start(Config(stack, "node1", settings(stack.hamon)), log)
    try:
        assert len(log.listeners) == 1 and list(dispatcher.counts()) == ["syslog /nonexistent"]
        log.event("peer", "node2 lost", "warning", alive=False)
    finally:
        dispatcher.close(wait=2)
    counts = dispatcher.counts()["syslog /nonexistent"]
    assert counts["failed"] == 1
    assert "alerts: node_lost on node2 not delivered: syslog /nonexistent" in log.stream.getvalue()
