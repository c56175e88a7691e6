"""vip versus ocf:heartbeat:IPaddr2, side by side in one run.

    python bench/bench_vip.py [--runs N] [--json [FILE]]

Both agents manage the same address on the same interface of a throw-away
network namespace (198.18.0.0/15). Per operation: median wall and CPU time
per call and processes spawned per call; ratios are hapack / stock. Target:
vip monitor at most half of IPaddr2's wall time, with one process per call.
Needs root; the installed agents (``hapack install``) and resource-agents.
"""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (Stats, add_json_option, environment, json_report, print_table,  # noqa: E402
                     processes, stats_metrics, timed)

NETNS = f"hpbench{os.getpid()}"
IP = "198.18.222.100"
AGENTS = {"hapack vip": "/usr/lib/ocf/resource.d/hapack/vip",
          "IPaddr2": "/usr/lib/ocf/resource.d/heartbeat/IPaddr2"}


def setup():
    for argv in (["ip", "netns", "add", NETNS],
                 ["ip", "-n", NETNS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                 ["ip", "-n", NETNS, "link", "set", "lo", "up"],
                 ["ip", "-n", NETNS, "link", "set", "eth0", "up"],
                 ["ip", "-n", NETNS, "link", "set", "eth1", "up"],
                 ["ip", "-n", NETNS, "addr", "add", "198.18.222.1/24", "dev", "eth0"]):
        subprocess.run(argv, check=True)


def measure(name, path, runs, rsctmp):
    env = environment({"OCF_RESOURCE_INSTANCE": "bench", "HA_RSCTMP": rsctmp,
                       "OCF_RESKEY_ip": IP, "OCF_RESKEY_cidr_netmask": "24",
                       "OCF_RESKEY_nic": "eth0", "OCF_RESKEY_CRM_meta_interval": "10000"})
    results = {op: ([], []) for op in ("start", "monitor", "stop")}
    for _ in range(runs):
        for op in ("start", "monitor", "stop"):
            wall, cpu, _ = timed([path, op], env, NETNS)
            results[op][0].append(wall)
            results[op][1].append(cpu)
    # monitor is the hot path: many more samples, with the address up
    timed([path, "start"], env, NETNS)
    mon = ([], [])
    for _ in range(runs * 3):
        wall, cpu, code = timed([path, "monitor"], env, NETNS)
        assert code == 0, f"{name} monitor returned {code}"
        mon[0].append(wall)
        mon[1].append(cpu)
    counts = {op: processes([path, op], env, NETNS) for op in ("monitor", "stop", "start")}
    timed([path, "stop"], env, NETNS)
    stats = {op: Stats(name, *results[op], counts[op]) for op in ("start", "stop")}
    stats["monitor"] = Stats(name, *mon, counts["monitor"])
    return stats


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    add_json_option(parser)
    return parser


def main():
    args = build_parser().parse_args()
    for path in AGENTS.values():
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is missing: run 'hapack install' and install resource-agents")
    with json_report("bench_vip", args) as report:
        run(args, report)


def run(args, report):
    setup()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ours = measure("hapack vip", AGENTS["hapack vip"], args.runs, tmp)
            theirs = measure("IPaddr2", AGENTS["IPaddr2"], args.runs, tmp)
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
    pairs = [(op, ours[op], theirs[op]) for op in ("monitor", "start", "stop")]
    print_table(f"vip vs IPaddr2 ({args.runs} start/monitor/stop cycles, "
                f"{args.runs * 3} monitors; ratio = hapack / stock)", pairs)
    target = ours["monitor"].wall <= theirs["monitor"].wall / 2 and ours["monitor"].procs == 1
    print(f"\ntarget (monitor <= 1/2 of IPaddr2's wall time, 1 process per call): "
          f"{'met' if target else 'NOT met'}")
    report.add(stats_metrics(pairs))
    report.targets["monitor <= 1/2 of IPaddr2's wall time, 1 process per call"] = target


if __name__ == "__main__":
    main()
