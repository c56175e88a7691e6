"""hamon and a degraded resource (a monitor's 190/191): it stays where it runs, in its role;
one warning event when it turns degraded, one info event when that ends; status, metrics
and alerts show it. Two daemons on a fake clock (test_hamon_daemon.Pair)."""

import random

import exposition
from test_alerts_hamon import AlertPair, Recorder, settle
from test_hamon_daemon import Pair, pair  # noqa: F401 (pair: the running pair fixture)

from hapack.hamon import metrics, report
from hapack.hamon.snapshot import Res

WITHOUT = "r0 runs without its replica: cstate WFConnection, peer disk DUnknown"


class Watch:
    """Every event record of both daemons, and every agent call after this point."""

    def __init__(self, pair):
        self.pair, self.records = pair, {"node1": [], "node2": []}
        self.calls0 = {n: len(pair.agents(n).calls) for n in self.records}
        for name, got in self.records.items():
            pair[name].log.listeners.append(got.append)

    def degraded(self, node, level=None):
        return [r for r in self.records[node] if r["event"] == "degraded"
                and (level is None or r["level"] == level)]

    def actions(self, node):
        """Agent calls other than monitors since the watch began: the 'moves'."""
        return [c for c in self.pair.agents(node).calls[self.calls0[node]:]
                if c[1] != "monitor"]


def placed(pair):
    return ({n: dict(pair.agents(n).state) for n in ("node1", "node2")},
            pair.state("node1"), pair.state("node2"))


def test_a_degraded_promoted_partition_stays_promoted_one_warning(pair):
    watch, before = Watch(pair), placed(pair)
    pair.agents("node1").degraded["partition"] = WITHOUT
    pair.run(60)
    assert placed(pair) == before and watch.actions("node1") == watch.actions("node2") == []
    assert pair["node1"].world.partition.status is Res.PROMOTED
    warnings = watch.degraded("node1")
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert warnings[0]["resource"] == "partition" and warnings[0]["reason"] == WITHOUT
    assert warnings[0]["rc"] == 191 and WITHOUT in pair.log("node1")
    del pair.agents("node1").degraded["partition"]
    pair.run(30)
    assert placed(pair) == before and watch.actions("node1") == []
    assert [r["level"] for r in watch.degraded("node1")] == ["warning", "info"]
    assert watch.degraded("node2") == []


def test_a_degraded_unpromoted_partition_stays_started(pair):
    watch, before = Watch(pair), placed(pair)
    pair.agents("node2").degraded["partition"] = WITHOUT
    pair.run(60)
    assert placed(pair) == before and watch.actions("node2") == watch.actions("node1") == []
    assert pair["node2"].world.partition.status is Res.STARTED
    assert [(r["level"], r["rc"]) for r in watch.degraded("node2")] == [("warning", 190)]


def test_random_degradations_never_move_anything_one_event_per_change(pair):
    """Seeded sequences of degradations on either node and resource, toggled at random
    times: after every step nothing has moved, and the events match, one for one, the
    changes the monitors saw."""
    rng = random.Random(4711)
    watch, before = Watch(pair), placed(pair)
    seen = {n: {} for n in ("node1", "node2")}  # node -> resource -> monitor rc sequence
    for node in seen:
        agents = pair.agents(node)
        plain = agents.run

        def run(r, action, interval_s=0.0, plain=plain, node=node):
            out = plain(r, action, interval_s)
            if action == "monitor":
                seen[node].setdefault(r.name, []).append(out.rc in (190, 191))
            return out
        agents.run = run
    for _ in range(60):
        node = rng.choice(("node1", "node2"))
        name = rng.choice(sorted(pair.agents(node).state))
        degraded = pair.agents(node).degraded
        if name in degraded:
            del degraded[name]
        else:
            degraded[name] = f"{name} without something, try {rng.randrange(1000)}"
        pair.run(rng.choice((0.05, 0.5, 3, 12, 25)))
        assert placed(pair) == before
        for n in seen:
            assert watch.actions(n) == []
            for name, rcs in seen[n].items():
                turns = [(a, b) for a, b in zip([False] + rcs, rcs) if a != b]
                got = [r["level"] for r in watch.degraded(n) if r["resource"] == name]
                assert got == ["warning" if b else "info" for _, b in turns], (n, name)
    assert sum(len(watch.degraded(n)) for n in seen) > 10   # the sequence did change things


def test_status_and_metrics_show_it(pair):
    pair.agents("node1").degraded["partition"] = WITHOUT
    pair.run(12)
    st = report.status_of(pair["node1"])
    part = next(r for r in st["resources"] if r["name"] == "partition")
    assert part["status"] == "promoted" and part["degraded"] == WITHOUT
    assert f"DEGRADED: {WITHOUT}" in report.render(st)
    fams = exposition.parse(metrics.render(metrics.families(metrics.read(pair["node1"])))
                            .decode())
    assert exposition.value(fams, "hamon_resource_degraded", resource="partition",
                            node="node1") == 1
    assert exposition.value(fams, "hamon_resource_degraded", resource="vip",
                            node="node1") == 0
    assert exposition.value(fams, "ha_cluster_pacemaker_resources", resource="partition",
                            status="active", node="node1") == 1
    del pair.agents("node1").degraded["partition"]
    pair.run(12)
    fams = exposition.parse(metrics.render(metrics.families(metrics.read(pair["node1"])))
                            .decode())
    assert exposition.value(fams, "hamon_resource_degraded", resource="partition",
                            node="node1") == 0
    assert "DEGRADED" not in report.render(report.status_of(pair["node1"]))


def test_a_restarted_daemon_probes_a_degraded_partition_promoted(pair):
    pair.agents("node1").degraded["partition"] = WITHOUT
    d = pair.restart("node1")
    watch = Watch(pair)
    pair.run(10)
    assert pair.promoted("node1") and d.world.partition.status is Res.PROMOTED
    assert [(r["level"], r["rc"]) for r in watch.degraded("node1")] == [("warning", 191)]
    assert not [c for c in watch.actions("node1") if c[0] == "partition"]


def test_alerts_carry_degraded_and_back(tmp_path):
    sinks = {"node1": Recorder(), "node2": Recorder()}
    pair = AlertPair(str(tmp_path), sinks.get)
    try:
        pair.run(3)
        pair.agents("node1").degraded["partition"] = WITHOUT
        pair.run(30)
        del pair.agents("node1").degraded["partition"]
        pair.run(30)
        settle(pair)
        got = [e for e in sinks["node1"].got if e.rsc == "partition"]
        assert [e.event for e in got] == ["resource_degraded", "resource_ok"]
        assert got[0].kind == "resource" and WITHOUT in got[0].desc and got[0].rc == 191
        assert got[0].node == "node1" and got[0].task == "monitor"
    finally:
        pair.close()
