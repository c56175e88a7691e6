"""bench/_common.py's --json: the document's shape, where the table and the document go,
every benchmark's option, and bench/compare.py (issue 19: results compared between runs)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench"
# bench_failover.py and bench_hamon.py join when their owners move them onto _common's option
SCRIPTS = ("bench_drbd_vm", "bench_fence", "bench_lab", "bench_layers_stateful",
           "bench_layers_stateless", "bench_partition", "bench_vip")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("_common")
compare = _load("compare")


def _args(**values) -> argparse.Namespace:
    return argparse.Namespace(**{"runs": 3, "json": None, **values})


# -- the document -----------------------------------------------------------------------

def test_summary_of_a_series_and_of_none():
    assert common.summary([0.3, 0.1, 0.2]) == {"n": 3, "min": 0.1, "median": 0.2, "max": 0.3,
                                              "values": [0.3, 0.1, 0.2]}
    assert common.summary([]) is None
    assert common.summary(None) is None


def test_metric_ratio_is_ours_median_over_stock_median_over_many_series():
    rng = random.Random(19)
    for _ in range(300):
        ours = [rng.uniform(0.001, 5) for _ in range(rng.randint(1, 9))]
        stock = [rng.uniform(0.001, 5) for _ in range(rng.randint(1, 9))]
        m = common.metric(ours, stock)
        assert m["unit"] == "s"
        assert m["ours"]["median"] == statistics.median(ours)
        assert m["stock"]["min"] == min(stock) and m["stock"]["max"] == max(stock)
        assert m["ours"]["min"] <= m["ours"]["median"] <= m["ours"]["max"]
        assert m["ratio"] == pytest.approx(statistics.median(ours) / statistics.median(stock))


@pytest.mark.parametrize("stock", [None, [], [0.0, 0.0, 0.0]])
def test_no_ratio_without_a_stock_figure(stock):
    m = common.metric([1.0, 2.0], stock, unit="processes")
    assert m["ratio"] is None and m["unit"] == "processes"


def test_more_comparisons_each_get_their_own_ratio():
    m = common.metric([1.0, 1.4], [2.0], others={"pacemaker": [5.0, 6.0], "heartbeat": [3.0],
                                                  "none": []})
    assert m["ratio"] == pytest.approx(0.6)
    assert m["others"]["pacemaker"]["median"] == 5.5
    assert m["others"]["pacemaker"]["ratio"] == pytest.approx(1.2 / 5.5)
    assert m["others"]["heartbeat"]["ratio"] == pytest.approx(0.4)
    assert m["others"]["none"] == {"ratio": None}
    assert "others" not in common.metric([1.0], [2.0])


def test_stats_rows_become_wall_cpu_and_process_metrics():
    ours = common.Stats("hapack vip", [0.010, 0.012, 0.011], [0.008, 0.009, 0.007], 1)
    theirs = common.Stats("IPaddr2", [0.030, 0.028, 0.027], [0.02, 0.02, 0.03], 23)
    alone = common.Stats("hapack", [1.0, 3.0], [0.5, 0.5], None)
    got = common.stats_metrics([("monitor", ours, theirs), ("start", alone, None)], prefix="x ")
    assert set(got) == {"x monitor wall", "x monitor cpu", "x monitor procs", "x start wall",
                        "x start cpu"}
    assert got["x monitor wall"]["ratio"] == pytest.approx(0.011 / 0.028)
    assert got["x monitor procs"]["ours"]["median"] == 1
    assert got["x monitor procs"]["ratio"] == pytest.approx(1 / 23)
    assert got["x start wall"]["stock"] is None and got["x start wall"]["ours"]["median"] == 2.0


def test_host_facts_name_load_cpus_kernel_and_commit():
    host = common.host_facts()
    assert len(host["load_start"]) == 3 and host["load_end"] is None
    assert host["cpu_count"] == os.cpu_count()
    assert host["kernel"] == os.uname().release
    if (BENCH.parent / ".git").exists():  # a checkout: the commit is the checkout's HEAD
        head = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(BENCH.parent),
                               "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert host["hapack_commit"] == head
        assert isinstance(host["hapack_dirty"], bool)


def test_document_shape():
    metrics = {"a": common.metric([1.0], [2.0]), "b": common.metric([1.0])}
    doc = common.document("bench_x", common.host_facts(), _args(runs=7, cycles=2, json="-"),
                          metrics, targets={"t": True}, extra={"e": 1}, started="S")
    assert doc["schema"] == common.SCHEMA and doc["benchmark"] == "bench_x"
    assert doc["runs"] == 7 and doc["parameters"] == {"cycles": 2}  # --json is not a parameter
    assert len(doc["host"]["load_end"]) == 3
    assert doc["ratios"] == {"a": 0.5}  # only metrics that have one
    assert doc["targets"] == {"t": True} and doc["extra"] == {"e": 1} and doc["started"] == "S"
    assert json.loads(json.dumps(doc)) == doc


# -- where the table and the document go --------------------------------------------------

def _body(report, fail=False):
    print("TABLE")
    subprocess.run(["echo", "CHILD"], check=True)  # a process of the benchmark's, on fd 1
    report.add({"m": common.metric([1.0, 3.0], [4.0])})
    report.targets["t"] = True
    if fail:
        raise RuntimeError("boom")


def test_without_json_the_output_is_unchanged(capfd):
    with common.json_report("bench_x", _args()) as report:
        _body(report)
    out, err = capfd.readouterr()
    assert out == "TABLE\nCHILD\n" and err == ""


@pytest.mark.parametrize("spelling", [["--json"], ["--json=-"], ["--json", "-"]])
def test_json_on_stdout_sends_the_table_to_stderr(capfd, spelling):
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    common.add_json_option(parser)
    with common.json_report("bench_x", parser.parse_args(spelling)) as report:
        _body(report)
    out, err = capfd.readouterr()
    assert err == "TABLE\nCHILD\n"
    doc = json.loads(out)
    assert doc["benchmark"] == "bench_x" and doc["ratios"] == {"m": 0.5}
    assert doc["targets"] == {"t": True} and doc["runs"] == 3


def test_json_file_keeps_the_table_on_stdout(capfd, tmp_path):
    target = tmp_path / "run.json"
    with common.json_report("bench_x", _args(json=str(target))) as report:
        _body(report)
    out, err = capfd.readouterr()
    assert out == "TABLE\nCHILD\n" and err == ""
    assert json.loads(target.read_text())["metrics"]["m"]["ours"]["median"] == 2.0


@pytest.mark.parametrize("where", ["-", "file"])
def test_a_failed_run_writes_no_document_and_restores_stdout(capfd, tmp_path, where):
    target = "-" if where == "-" else str(tmp_path / "run.json")
    with pytest.raises(RuntimeError):
        with common.json_report("bench_x", _args(json=target)) as report:
            _body(report, fail=True)
    print("AFTER")
    out, _ = capfd.readouterr()
    assert out == ("AFTER\n" if where == "-" else "TABLE\nCHILD\nAFTER\n")
    assert not (tmp_path / "run.json").exists()


# -- every benchmark has the option --------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_takes_the_shared_json_option(script):
    """``--json`` takes no value or a FILE, through _common's option (its help text)."""
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--json", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--json [FILE]" in proc.stdout
    assert " ".join(common.JSON_HELP.split()[:4]) in " ".join(proc.stdout.split())


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_parser_reads_json(script):
    check = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); import {script} as b\n"
             "p = b.build_parser()\n"
             "print(p.parse_args([]).json, p.parse_args(['--json']).json,"
             " p.parse_args(['--json', 'a.json']).json, p.parse_args(['--json=b.json']).json)")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=120, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "-", "a.json", "b.json"]


# -- comparing two runs ----------------------------------------------------------------------

def _doc(ours, stock, load=1.0):
    host = dict(common.host_facts(), load_start=[load] * 3)
    return common.document("bench_x", host, _args(), {"monitor wall": common.metric(ours, stock)})


def test_compare_prints_ratio_changes(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_doc([0.010], [0.020])))
    b.write_text(json.dumps(_doc([0.012], [0.030], load=5.0)))
    assert compare.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("monitor wall"))
    assert line.split()[2:] == ["ms", "10", "12", "1.20", "0.5", "0.4", "0.80"]
    assert "load (1 min) start/end 5.00/" in out


def test_compare_shows_each_further_comparison(tmp_path, capsys):
    docs = []
    for ours, others in (([1.0], {"pacemaker": [4.0], "heartbeat": [2.0]}),
                         ([0.5], {"pacemaker": [5.0]})):
        metrics = {"vip": common.metric(ours, others=others)}
        docs.append(common.document("bench_hamon", common.host_facts(), _args(), metrics))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(docs[0]))
    b.write_text(json.dumps(docs[1]))
    assert compare.main([str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    pace = next(l for l in lines if l.strip().startswith("vs pacemaker"))
    heart = next(l for l in lines if l.strip().startswith("vs heartbeat"))
    assert pace.split()[2:] == ["ms", "1000", "500", "0.50", "0.25", "0.1", "0.40"]
    assert heart.split()[-3:] == ["0.5", "-", "-"]


def test_compare_refuses_two_different_benchmarks(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_doc([1.0], [1.0])))
    b.write_text(json.dumps(dict(_doc([1.0], [1.0]), benchmark="bench_y")))
    assert compare.main([str(a), str(b)]) == 2


# -- each benchmark's own rows, as metrics (the figures are made up: no lab, no VM) ----------

def _adapter(script: str, call: str) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(BENCH)!r}); import {script} as b\n"
            f"print(json.dumps({call}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_bench_fence_rows_are_fence_bmc_against_fence_ipmilan():
    results = {"fence_bmc": {a: {"wall": [0.4, 0.6], "lag": [0.03] if a == "off" else []}
                             for a in ("status", "off", "on")},
               "fence_ipmilan": {a: {"wall": [2.0], "lag": [1.5] if a == "off" else []}
                                 for a in ("status", "off", "on")}}
    got = _adapter("bench_fence", f"b.metrics({results!r})")
    assert set(got) == {"status wall", "off-confirmed wall", "on wall", "off lag"}
    assert got["off-confirmed wall"]["ratio"] == pytest.approx(0.25)
    assert got["off lag"]["ours"]["median"] == 0.03 and got["off lag"]["stock"]["median"] == 1.5
    alone = _adapter("bench_fence", f"b.metrics({ {'fence_bmc': results['fence_bmc']}!r})")
    assert all(m["stock"] is None and m["ratio"] is None for m in alone.values())


def test_bench_lab_rows_are_named_after_their_group():
    rows = {"cold start -> online": [5.0], "  build": [1.0], "node boot -> online": [2.0],
            "  -> network up": [0.5, 0.7]}
    got = _adapter("bench_lab", f"b.metrics({rows!r})")
    assert list(got) == ["cold start -> online", "cold start -> online: build",
                         "node boot -> online", "node boot -> online: -> network up"]
    assert got["node boot -> online: -> network up"]["ours"]["median"] == 0.6


def test_bench_drbd_vm_rows():
    results = {"detect": [1.7, 1.9, 1.8], "ours": [2.0, 2.1], "stock": [4.2, 4.4], "e2e": [4.0]}
    got = _adapter("bench_drbd_vm", f"b.metrics(1.0, 30.0, 5.0, {results!r}, 9.0, (200.0, 'ok'))")
    assert got["promote+mount on the survivor"]["ratio"] == pytest.approx(2.05 / 4.3)
    assert got["peer-loss detection"]["ratio"] == pytest.approx(1.8 / 9.0)  # vs DRBD's defaults
    assert got["whole failover test (pytest)"]["ours"]["median"] == 200.0
    bare = _adapter("bench_drbd_vm", f"b.metrics(1.0, 30.0, 5.0, {results!r}, None, None)")
    assert bare["peer-loss detection"]["stock"] is None
    assert "whole failover test (pytest)" not in bare
