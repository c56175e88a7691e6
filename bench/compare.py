#!/usr/bin/env python3
"""Compare two runs of one benchmark, from the documents their --json wrote.

    python bench/compare.py A.json B.json

Per metric of either run: our median in A and in B and B / A, then the
ratio hapack / stock in A and in B and B / A (below 1: B is better). The
ratios are the figures to compare: both sides of a ratio ran side by side in
one run, so a busier machine moves them much less than it moves the
medians. The load average at the start and end of each run is printed
above the table. Exit status 2 when the two documents are of different
benchmarks or schemas.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def describe(label: str, doc: dict[str, Any]) -> str:
    host = doc["host"]
    loads = "/".join(f"{x:.2f}" for x in host["load_start"][:1] + (host["load_end"] or [])[:1])
    commit = (host.get("hapack_commit") or "?")[:10] + ("+dirty" if host.get("hapack_dirty") else "")
    return (f"{label}: {doc['benchmark']} started {doc.get('started')}, runs {doc.get('runs')}, "
            f"load (1 min) start/end {loads} on {host['cpu_count']} cpus, commit {commit}")


def _num(value: float | None, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    value *= scale
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _change(a: float | None, b: float | None) -> str:
    return f"{b / a:.2f}" if a and b is not None else "-"


def rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, ...]]:
    """(metric, unit, ours A, ours B, B/A, ratio A, ratio B, B/A) for every metric of either;
    a metric's further comparisons ("others") follow it as "  vs NAME" rows."""
    out = []
    names = list(a["metrics"]) + [n for n in b["metrics"] if n not in a["metrics"]]
    for name in names:
        ma, mb = a["metrics"].get(name), b["metrics"].get(name)
        out.append(_row(name, ma, mb, [m["ratio"] if m else None for m in (ma, mb)]))
        others = [o for m in (ma, mb) if m for o in m.get("others", {})]
        for other in dict.fromkeys(others):
            ratios = [m.get("others", {}).get(other, {}).get("ratio") if m else None
                      for m in (ma, mb)]
            out.append(_row(f"  vs {other}", ma, mb, ratios))
    return out


def _row(name: str, ma: dict | None, mb: dict | None, rat: list) -> tuple[str, ...]:
    med = [(m["ours"] or {}).get("median") if m else None for m in (ma, mb)]
    unit = (ma or mb or {}).get("unit", "s")
    scale = 1000.0 if unit == "s" else 1.0
    return (name, "ms" if unit == "s" else unit, _num(med[0], scale), _num(med[1], scale),
            _change(*med), _num(rat[0]), _num(rat[1]), _change(*rat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", metavar="A.json")
    parser.add_argument("b", metavar="B.json")
    args = parser.parse_args(argv)
    a, b = load(args.a), load(args.b)
    if (a["benchmark"], a["schema"]) != (b["benchmark"], b["schema"]):
        print(f"compare: {args.a} is {a['benchmark']} (schema {a['schema']}), {args.b} is "
              f"{b['benchmark']} (schema {b['schema']})", file=sys.stderr)
        return 2
    print(describe("A", a))
    print(describe("B", b))
    head = ("metric", "unit", "ours A", "ours B", "B/A", "ratio A", "ratio B", "B/A")
    table = [head] + rows(a, b)
    width = max(len(r[0]) for r in table)
    for row in table:
        print(f"{row[0]:<{width}}  {row[1]:<9}" + "".join(f"{c:>9}" for c in row[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
