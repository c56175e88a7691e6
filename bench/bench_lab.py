#!/usr/bin/env python3
"""Lab baselines: cold start, node boot, power-off-to-gone (a script, not a test).

    sudo .venv/bin/python bench/bench_lab.py [--runs N] [--json [FILE]]

Prints one table. Later failover figures should be read against it: they
include a node boot (fence = off + on) and a power-off-to-gone, and the
POST delay of the lab they ran in (this script uses ``--boot-delay``, 0 by
default, so the rows show the lab's own overhead).

Rows (seconds from the first event of each group):
  cold start -> online    Lab.up() from nothing to both online with a DC and quorum
    build                 host side: dirs, bridges, client, disk, BMCs answering
    power on -> booted    first BMC power-on until both nodes' init reached "up"
    booted -> online      until crm_mon in both shows both online, a DC, quorum
  node boot -> online     ipmitool power on of one node until both see it online
    ipmitool on returns   the BMC answered (hook ran: namespaces + cables)
    -> network up         init configured eth0-2 (after the POST delay)
    -> corosync ready     corosync-cfgtool -s answers
  power off -> gone       ipmitool power off of a node serving on :8080 until no
                          process of it is left and its host veths are gone
    ipmitool off returns  the BMC answered (hook killed the tree, pulled cables)
    client sees error     start of the first failed try of a 10 ms client poller
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_json_option, json_report, metric  # noqa: E402

from hapack.lab import Lab, missing_prerequisites  # noqa: E402

T = time.monotonic


def stage_time(lab: Lab, node: str, name: str) -> float:
    for stage in lab.boot_stages(node):
        if stage.name == name:
            return stage.mono
    raise RuntimeError(f"{node}: no boot stage {name!r}")


def cold_start(boot_delay: float) -> dict[str, float]:
    start = T()
    lab = Lab(stack="pacemaker", boot_delay=boot_delay)
    try:
        lab.up()
        end = T()
        power_on = min(stage_time(lab, n, "poweron") for n in lab.nodes)
        booted = max(stage_time(lab, n, "up") for n in lab.nodes)
        return {"cold start -> online": end - start, "  build": power_on - start,
                "  power on -> booted": booted - power_on, "  booted -> online": end - booted}
    finally:
        lab.down()


def node_boot(lab: Lab, node: str) -> dict[str, float]:
    peer = next(n for n in lab.nodes if n != node)
    lab.power(node, "off", wait=True)
    lab.wait_online([peer], timeout=60)
    start = T()
    lab.power(node, "on")
    returned = T()
    lab.wait_booted(node)
    lab.wait_online(timeout=60)
    online = T()
    return {"node boot -> online": online - start, "  ipmitool on returns": returned - start,
            "  -> network up": stage_time(lab, node, "network") - start,
            "  -> corosync ready": stage_time(lab, node, "corosync") - start}


def power_off(lab: Lab, node: str) -> dict[str, float]:
    addr = lab.addr(node)
    lab.start_responder(node, addr, 8080)
    cables = [lab.plan.veth(node, link) for link in ("lan", "hb", "bmc")]
    with lab.watch_vip(addr, 8080, interval=0.01, timeout=0.1) as watch:
        watch.wait_for(node, timeout=10)
        start = T()
        lab.power(node, "off")
        returned = T()
        while lab.processes(node) or any(os.path.exists(f"/sys/class/net/{c}") for c in cables):
            time.sleep(0.001)
        gone = T()
        error = watch.wait_for("error", timeout=10, after=start)
    lab.stop_background()
    lab.power(node, "on", wait=True)
    lab.wait_online(timeout=60)
    return {"power off -> gone": gone - start, "  ipmitool off returns": returned - start,
            "  client sees error": error.mono - start}


def table(rows: dict[str, list[float]]) -> str:
    lines = [f"{'metric':<26} {'n':>3} {'min s':>8} {'median s':>9} {'max s':>8}", "-" * 58]
    for name, values in rows.items():
        lines.append(f"{name:<26} {len(values):>3} {min(values):>8.3f} {statistics.median(values):>9.3f} "
                     f"{max(values):>8.3f}")
    return "\n".join(lines)


def collect(rows: dict[str, list[float]], sample: dict[str, float]) -> None:
    for key, value in sample.items():
        rows.setdefault(key, []).append(value)


def metrics(rows: dict[str, list[float]]) -> dict[str, dict]:
    """The table's rows as metrics (no stock side); an indented row is named after its group."""
    out, group = {}, ""
    for name, values in rows.items():
        if name.startswith(" "):
            name = f"{group}: {name.strip()}"
        else:
            group = name
        out[name] = metric(values)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (default 3)")
    parser.add_argument("--boot-delay", type=float, default=0.0, help="simulated POST, seconds (default 0)")
    add_json_option(parser)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problems = missing_prerequisites("pacemaker")
    if problems:
        print("cannot run the lab here: " + "; ".join(problems), file=sys.stderr)
        return 1
    with json_report("bench_lab", args) as report:
        Lab.reap_stale()
        rows: dict[str, list[float]] = {}
        for _ in range(args.runs):
            collect(rows, cold_start(args.boot_delay))
        with Lab(stack="pacemaker", boot_delay=args.boot_delay) as lab:
            for i in range(args.runs):
                collect(rows, node_boot(lab, lab.nodes[i % 2]))
            for i in range(args.runs):
                collect(rows, power_off(lab, lab.nodes[i % 2]))
        print(f"hapack lab baselines ({args.runs} runs each, POST delay {args.boot_delay:g} s, token 1000 ms)")
        print(table(rows))
        report.add(metrics(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
