"""Shared measuring for the side-by-side benchmarks (not tests).

Each call is a whole process, as the cluster runs it: wall time and CPU
time (user+sys of the process and everything it waited for) per call, and,
in a separate pass under strace, how many processes one call spawns. Every
benchmark's ``--json`` is here too (add_json_option, json_report), with one
schema for all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterable, Iterator, Sequence


def timed(argv, env, netns=None, check=True):
    """(wall seconds, cpu seconds, returncode) of one call."""
    full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(full, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if check and proc.returncode not in (0, 7, 8):
        raise RuntimeError(f"{' '.join(full)} exited {proc.returncode}: {proc.stderr.strip()}")
    return wall, cpu, proc.returncode


def processes(argv, env, netns=None):
    """Processes one call creates (the call itself included), counted by strace."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        full = ["strace", "-f", "-qq", "-e", "trace=execve", "-o", out.name, *argv]
        if netns:
            full = ["ip", "netns", "exec", netns, *full]
        subprocess.run(full, env=env, capture_output=True)
        pids = {line.split()[0] for line in out.read().splitlines()
                if "execve(" in line and "= -1" not in line}
        return len(pids)


class Stats:
    def __init__(self, name, walls, cpus, procs):
        self.name, self.walls, self.cpus, self.procs = name, walls, cpus, procs

    @property
    def wall(self):
        return statistics.median(self.walls)

    @property
    def cpu(self):
        return statistics.median(self.cpus)


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def print_table(title, pairs, note=""):
    """pairs: [(operation, ours Stats, theirs Stats or None)]."""
    print(f"\n{title}")
    head = (f"{'operation':<22}{'agent':<18}{'wall ms (median)':>18}{'cpu ms':>10}"
            f"{'procs/call':>12}{'wall ratio':>12}{'cpu ratio':>11}")
    print(head)
    print("-" * len(head))
    for operation, ours, theirs in pairs:
        for stats, is_ours in ((ours, True), (theirs, False)):
            if stats is None:
                continue
            wall_r = ratio(ours.wall, theirs.wall) if is_ours and theirs else ""
            cpu_r = ratio(ours.cpu, theirs.cpu) if is_ours and theirs else ""
            procs = "?" if stats.procs is None else str(stats.procs)
            print(f"{operation if is_ours else '':<22}{stats.name:<18}{stats.wall * 1000:>18.1f}"
                  f"{stats.cpu * 1000:>10.1f}{procs:>12}{wall_r:>12}{cpu_r:>11}")
    if note:
        print(note)


def environment(extra):
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "OCF_ROOT": "/usr/lib/ocf", "OCF_RESKEY_CRM_meta_timeout": "20000"}
    env.update(extra)
    return env


# -- --json: one document per run, the same shape for every benchmark ---------------------
#
# {"schema": 1, "benchmark": "bench_vip", "started": "2026-12-03T13:00:00Z",
#  "host": {"load_start": [1m, 5m, 15m], "load_end": [...], "cpu_count": 2,
#           "kernel": "6.1.0-...", "hapack_commit": "3b7c05a...", "hapack_dirty": false},
#  "runs": 20, "parameters": {every other option},
#  "metrics": {"monitor wall": {"unit": "s", "ours": SUMMARY, "stock": SUMMARY or null,
#                               "ratio": ours median / stock median or null,
#                               optionally "others": {name: SUMMARY + "ratio"}}, ...},
#  "ratios": {metric: ratio, for every metric that has one},
#  "targets": {what the table's verdict lines say: true when met},
#  "extra": {anything else the benchmark reports}}
# SUMMARY = {"n", "min", "median", "max", "values"}. bench/compare.py diffs two documents.

SCHEMA = 1
JSON_HELP = ("print one JSON document (bench/_common.py's schema: host, runs, per-metric "
             "min/median/max of ours and stock, ratios) on stdout, the table going to "
             "stderr; with FILE, write the document there and print the table as usual")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """--json [FILE]: the one way every benchmark offers its results as JSON."""
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help=JSON_HELP)


def summary(values: Sequence[float] | None) -> dict[str, Any] | None:
    """n/min/median/max (and the samples) of one series; None when there is none."""
    if not values:
        return None
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "max": max(values), "values": list(values)}


def metric(ours: Sequence[float] | None, stock: Sequence[float] | None = None,
           unit: str = "s", others: dict[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """One metric: ours and the stock figure side by side, ratio of the medians. A benchmark
    with more than one comparison (hamon: Pacemaker and Heartbeat) names the rest in
    ``others``: each gets its summary and its own ratio (ours / that one)."""
    mine, theirs = summary(ours), summary(stock)
    out = {"unit": unit, "ours": mine, "stock": theirs, "ratio": _ratio(mine, theirs)}
    if others:
        out["others"] = {name: dict(summary(values) or {}, ratio=_ratio(mine, summary(values)))
                         for name, values in others.items()}
    return out


def _ratio(mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> float | None:
    if mine and theirs and theirs["median"]:
        return mine["median"] / theirs["median"]
    return None


def stats_metrics(pairs: Iterable[tuple[str, "Stats", "Stats | None"]],
                  prefix: str = "") -> dict[str, dict[str, Any]]:
    """print_table's rows as metrics: wall and CPU seconds per call, processes per call."""
    out: dict[str, dict[str, Any]] = {}
    for operation, ours, theirs in pairs:
        name = f"{prefix}{operation}"
        out[f"{name} wall"] = metric(ours.walls, theirs.walls if theirs else None)
        out[f"{name} cpu"] = metric(ours.cpus, theirs.cpus if theirs else None)
        procs = [theirs.procs] if theirs is not None and theirs.procs is not None else None
        if ours.procs is not None:
            out[f"{name} procs"] = metric([ours.procs], procs, unit="processes")
    return out


def _git(*argv: str) -> str | None:
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        proc = subprocess.run(["git", "-c", "safe.directory=*", "-C", top, *argv],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def host_facts() -> dict[str, Any]:
    """What the machine was like when the benchmark started (load_end is added at the end)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"load_start": list(os.getloadavg()), "load_end": None,
            "cpu_count": os.cpu_count(), "kernel": platform.release(),
            "hapack_commit": _git("rev-parse", "HEAD"),
            "hapack_dirty": None if status is None else bool(status)}


def document(benchmark: str, host: dict[str, Any], args: argparse.Namespace | dict[str, Any],
             metrics: dict[str, dict[str, Any]], targets: dict[str, bool] | None = None,
             extra: dict[str, Any] | None = None, started: str | None = None) -> dict[str, Any]:
    """The JSON document of one run; ``host`` from host_facts() at the start."""
    options = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    options.pop("json", None)
    host = dict(host, load_end=list(os.getloadavg()))
    return {"schema": SCHEMA, "benchmark": benchmark, "started": started, "host": host,
            "runs": options.pop("runs", None), "parameters": options, "metrics": metrics,
            "ratios": {k: m["ratio"] for k, m in metrics.items() if m["ratio"] is not None},
            "targets": targets or {}, "extra": extra or {}}


class JsonReport:
    """Collects a benchmark's metrics while it runs; see json_report()."""

    def __init__(self, benchmark: str, args: argparse.Namespace) -> None:
        self.benchmark, self.args = benchmark, args
        self.host = host_facts()
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.metrics: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, bool] = {}
        self.extra: dict[str, Any] = {}

    def add(self, metrics: dict[str, dict[str, Any]]) -> None:
        self.metrics.update(metrics)

    def document(self) -> dict[str, Any]:
        return document(self.benchmark, self.host, self.args, self.metrics, self.targets,
                        self.extra, self.started)


@contextlib.contextmanager
def json_report(benchmark: str, args: argparse.Namespace) -> Iterator[JsonReport]:
    """Around a benchmark's main: with ``--json``, everything the body prints (its own
    processes' output too) goes to stderr and the document to stdout at the end; with
    ``--json FILE`` the table stays on stdout and the document goes to FILE; without it,
    nothing changes. Nothing is written when the body fails."""
    report = JsonReport(benchmark, args)
    target = getattr(args, "json", None)
    with _stdout_to_stderr(target == "-"):
        yield report
    if target is None:
        return
    text = json.dumps(report.document(), indent=1) + "\n"
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)  # the benchmark's own processes
    try:
        with contextlib.redirect_stdout(sys.stderr):  # print() wherever sys.stdout points
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
