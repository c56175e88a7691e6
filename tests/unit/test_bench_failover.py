"""bench/bench_failover.py's arithmetic: the DC split, the ratios against the stock
agents, the derived rows and the JSON document (no lab: synthetic timelines)."""

import importlib.util
import json
import random
from pathlib import Path

import pytest
from lxml import etree

from hapack.cib import cib as cibmod
from hapack.lab import failover
from hapack.stack import loads

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_failover", ROOT / "bench" / "bench_failover.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


def _line(lost, asked, confirmed, chain, dc_victim, t0=1000.0):
    line = failover.Timeline("power cut", "node1", "node2", t0)
    for name, at in (("peer declared lost", lost), ("fence requested", asked),
                     ("fence confirmed", confirmed), ("full chain on the VIP", chain)):
        line.steps.append(failover.Step(name, None if at is None else t0 + at, "test"))
    line.victim_was_dc = dc_victim
    return line


def _random_lines(rng, n):
    lines = []
    for _ in range(n):
        lost = 2.0 + rng.random() * 0.2
        asked = lost + (1.0 if rng.random() < 0.5 else 0.05) + rng.random() * 0.05
        confirmed = asked + 0.1
        lines.append(_line(lost, asked, confirmed, confirmed + rng.random() * 0.4,
                           rng.random() < 0.5))
    return lines


@pytest.mark.parametrize("seed", range(20))
def test_the_dc_split_partitions_the_runs_and_keeps_their_figures(seed):
    rng = random.Random(seed)
    lines = _random_lines(rng, rng.randint(1, 12))
    split = bench.dc_split(lines)
    victims = [l for l in lines if l.victim_was_dc]
    survivors = [l for l in lines if not l.victim_was_dc]
    assert split["dc_victim"]["runs"] == len(victims)
    assert split["dc_survivor"]["runs"] == len(survivors)
    assert split["dc_victim"]["requeried"] + split["dc_survivor"]["requeried"] == \
        sum(bench.requeried(l) for l in lines)
    assert sorted(bench.series(lines, bench.DC_VICTIM) + bench.series(lines, bench.DC_SURVIVOR)) \
        == sorted(bench.series(lines, "full chain on the VIP"))
    for name, runs in (("dc_victim", victims), ("dc_survivor", survivors)):
        chains = [l.seconds("full chain on the VIP") for l in runs]
        expected = sorted(chains)[len(chains) // 2] if len(chains) % 2 else (
            sum(sorted(chains)[len(chains) // 2 - 1:len(chains) // 2 + 1]) / 2 if chains else None)
        assert split[name]["full_chain_median"] == pytest.approx(expected) if chains \
            else split[name]["full_chain_median"] is None


def test_a_run_without_the_dc_recorded_counts_as_survivor_not_as_victim():
    line = _line(2.0, 2.1, 2.2, 2.5, False)
    del line.victim_was_dc
    assert bench.dc_split([line])["dc_survivor"]["runs"] == 1


def test_ratios_are_against_the_stock_agents_whatever_the_order():
    assert bench.baseline(["hapack", "stock", "hapack-group"]) == "stock"
    assert bench.baseline(["hapack"]) == "hapack"
    cells = {"hapack": [2.0, 2.2, 2.4], "stock": [2.5, 2.6, 2.7], "hapack-group": [3.0]}
    found = bench.ratios(cells, "stock")
    assert found == {"hapack": pytest.approx(2.2 / 2.6), "hapack-group": pytest.approx(3.0 / 2.6)}
    assert bench.ratios({"hapack": [1.0], "stock": []}, "stock") == {}


def test_the_derived_rows_subtract_per_run():
    lines = [_line(2.0, 2.1, 2.3, 2.5, True), _line(2.1, 3.2, 3.3, 3.45, False)]
    assert bench.series(lines, bench.PACK) == pytest.approx([0.5, 1.35])
    assert bench.series(lines, bench.FENCE_TO_CHAIN) == pytest.approx([0.2, 0.15])
    assert bench.series(lines, bench.PACK_REQUERY) == pytest.approx([1.35])
    assert bench.series(lines, bench.PACK_QUICK) == pytest.approx([0.5])


def test_the_json_carries_ratios_dc_split_and_each_run(capsys):
    rng = random.Random(7)
    results = {"hapack": _random_lines(rng, 5), "stock": _random_lines(rng, 5)}
    doc = json.loads(json.dumps(bench.as_json(results, 5)))
    assert doc["baseline"] == "stock"
    assert set(doc["ratios"]) == {"full chain on the VIP", bench.PACK, bench.FENCE_TO_CHAIN}
    assert "hapack" in doc["ratios"]["full chain on the VIP"]
    assert set(doc["dc_split"]["hapack"]) == {"dc_victim", "dc_survivor"}
    assert [t["victim_was_dc"] for t in doc["timelines"]["hapack"]] == \
        [l.victim_was_dc for l in results["hapack"]]
    assert len(doc["load_average"]) == 3
    assert bench.report(results, 5) in (0, 1)
    out = capsys.readouterr().out
    assert "DC was the victim" in out and "hapack / stock" in out


def test_the_old_order_puts_the_vip_back_first_in_the_group():
    stack = loads((ROOT / "examples" / "stack.toml").read_text(), "stack.toml", check_agents=False)
    root = etree.fromstring(cibmod.render(stack, "stack.toml"))
    grouped = etree.fromstring(bench.vip_in_group(etree.tostring(root.find("configuration"))))
    group = grouped.find("resources/group[@id='g-stateful']")
    assert [p.get("id") for p in group.iterfind("primitive")] == ["vip", *stack.stateful_order()[1:]]
    assert grouped.find("resources/primitive[@id='vip']") is None
    assert group.find("primitive[@id='vip']/meta_attributes") is None
    assert {c.get("id") for c in grouped.find("constraints") if isinstance(c.tag, str)} >= {
        "col-stateful-with-partition", "ord-promote-then-stateful"}
    assert grouped.find("constraints/*[@id='ord-vip-then-stateful']") is None


@pytest.mark.parametrize("runs", range(1, 9))
def test_the_runs_alternate_between_cutting_the_dc_and_the_other_node(runs):
    wanted = [bench.wants_dc_victim(i) for i in range(runs)]
    assert wanted[0] is True
    assert abs(wanted.count(True) - wanted.count(False)) <= 1
    assert all(a != b for a, b in zip(wanted, wanted[1:]))
