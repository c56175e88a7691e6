#!/usr/bin/env python3
"""fence_bmc against fence_ipmilan (cipher suite 3) on the same ipmi_sim BMC.

Both agents run as whole processes with their parameters on stdin, the way
pacemaker-fenced runs them: fence_bmc as ``hapack install`` writes it,
fence_ipmilan from fence-agents with its defaults (lanplus, cipher 3). The
BMC is tests/integration/test_fence_sim.py's ipmi_sim whose power switch
kills a stand-in node ``--off-delay`` seconds after a power-off request, as
a real chassis takes a moment to lose power (ipmi_sim with a VM codec took
0.2-1.6 s). For each action the table shows wall time per call (min /
median / max over ``--runs``) and the ratio of medians; for off it also
shows how long after the node really lost power the agent returned (the
"lag"; the BMC reports off from that moment on).

Targets (issue 7): off-confirmed at most half of fence_ipmilan's median,
and back within 100 ms of the moment the BMC reports off.

    .venv/bin/python bench/bench_fence.py [--runs 5] [--off-delay 0.5] [--json [FILE]]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests", "integration")]

from test_fence_sim import SimBmc  # noqa: E402  (the test tier's BMC simulator)

from _common import add_json_option, json_report, metric  # noqa: E402

from hapack import install  # noqa: E402

ACTIONS = ("status", "off", "on")
TARGET_RATIO = 0.5
TARGET_LAG = 0.100


def agents(workdir):
    """name -> (argv, extra stdin lines)."""
    fence_bmc = os.path.join(workdir, "fence_bmc")
    with open(fence_bmc, "w", encoding="utf-8") as handle:
        handle.write(install.wrapper("hapack.stonith.fence_bmc", "stonith:fence_bmc"))
    os.chmod(fence_bmc, 0o755)
    table = {"fence_bmc": ([fence_bmc], {"cipher": "3"})}
    ipmilan = shutil.which("fence_ipmilan") or "/usr/sbin/fence_ipmilan"
    if os.access(ipmilan, os.X_OK):
        table["fence_ipmilan"] = ([ipmilan], {"lanplus": "1", "cipher": "3"})
    return table


def stdin(bmc, action, extra):
    params = {"action": action, "ip": bmc.address, "ipport": bmc.port,
              "username": bmc.username, "password": bmc.password,
              "nodename": "peer", "plug": "peer", **extra}
    return "".join(f"{k}={v}\n" for k, v in params.items())


def prepare(bmc, action):
    """Put the node in the state the action changes (status: on)."""
    if action == "on":
        bmc.power_off_now()
    elif not bmc.powered_node_alive():
        bmc.power_on()


def one_call(bmc, argv, extra, action):
    """(wall seconds, lag seconds or None) of one call."""
    prepare(bmc, action)
    offs = len(bmc.events("off"))
    started = time.monotonic()
    proc = subprocess.run(argv, input=stdin(bmc, action, extra), capture_output=True,
                          text=True, timeout=120)
    wall = time.monotonic() - started
    ended = time.time()
    expected = {"status": (0,), "off": (0,), "on": (0,)}[action]
    if proc.returncode not in expected:
        raise RuntimeError(f"{argv[0]} {action} exited {proc.returncode}: {proc.stderr.strip()}")
    lag = None
    if action == "off":
        events = bmc.events("off")[offs:]
        if not events:
            raise RuntimeError(f"{argv[0]} off returned but the node was never switched off")
        lag = ended - events[0][0]
        if lag < 0:
            raise RuntimeError(f"{argv[0]} off returned {-lag:.3f}s before the node lost power")
    return wall, lag


def measure(bmc, table, runs):
    results = {name: {action: {"wall": [], "lag": []} for action in ACTIONS} for name in table}
    for action in ACTIONS:
        for _ in range(runs):
            for name, (argv, extra) in table.items():  # interleaved: same conditions
                wall, lag = one_call(bmc, argv, extra, action)
                results[name][action]["wall"].append(wall)
                if lag is not None:
                    results[name][action]["lag"].append(lag)
    return results


def ms(values):
    return (f"{min(values) * 1000:7.0f} {statistics.median(values) * 1000:7.0f} "
            f"{max(values) * 1000:7.0f}")


def report(results, runs, off_delay):
    names = list(results)
    print(f"\nfence agents on one ipmi_sim BMC, {runs} runs each, off takes effect "
          f"{off_delay:g}s after the request; wall ms: min median max")
    print(f"{'action':<14}" + "".join(f"{n:>24}" for n in names) + "   ratio (median)")
    for action in ACTIONS:
        walls = [results[n][action]["wall"] for n in names]
        ratio = ""
        if len(names) == 2:
            ratio = (f"   {statistics.median(walls[0]) / statistics.median(walls[1]):.2f}")
        label = "off-confirmed" if action == "off" else action
        print(f"{label:<14}" + "".join(f"{ms(w):>24}" for w in walls) + ratio)
    lags = [results[n]["off"]["lag"] for n in names]
    print(f"{'off lag':<14}" + "".join(f"{ms(w):>24}" for w in lags)
          + "   (return - moment the node lost power)")
    return verdict(results, names)


def verdict(results, names):
    """The targets, each True when met (also printed)."""
    bmc_off = results["fence_bmc"]["off"]
    lag_ok = max(bmc_off["lag"]) <= TARGET_LAG
    lines = [f"off lag: max {max(bmc_off['lag']) * 1000:.0f} ms "
             f"(target <= {TARGET_LAG * 1000:.0f} ms): {'met' if lag_ok else 'MISSED'}"]
    targets = {f"off lag <= {TARGET_LAG * 1000:.0f} ms": lag_ok}
    if "fence_ipmilan" in names:
        ratio = (statistics.median(bmc_off["wall"])
                 / statistics.median(results["fence_ipmilan"]["off"]["wall"]))
        ratio_ok = ratio <= TARGET_RATIO
        targets[f"off-confirmed <= {TARGET_RATIO} x fence_ipmilan"] = ratio_ok
        lines.append(f"off-confirmed: fence_bmc/fence_ipmilan = {ratio:.2f} "
                     f"(target <= {TARGET_RATIO}): {'met' if ratio_ok else 'MISSED'}")
    else:
        lines.append("fence_ipmilan not installed: no ratio (Debian: fence-agents)")
    print("\n".join(lines))
    return targets


def metrics(results):
    """fence_bmc as ours, fence_ipmilan (when installed) as stock."""
    stock = results.get("fence_ipmilan")
    out = {}
    for action in ACTIONS:
        label = "off-confirmed" if action == "off" else action
        out[f"{label} wall"] = metric(results["fence_bmc"][action]["wall"],
                                      stock[action]["wall"] if stock else None)
    out["off lag"] = metric(results["fence_bmc"]["off"]["lag"],
                            stock["off"]["lag"] if stock else None)
    return out


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--off-delay", type=float, default=0.5,
                        help="seconds between the off request and the node losing power")
    add_json_option(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("ipmi_sim", "ipmitool"):
        if shutil.which(name) is None:
            print(f"bench_fence: {name} is not installed", file=sys.stderr)
            return 2
    with json_report("bench_fence", args) as json_doc:
        with tempfile.TemporaryDirectory(prefix="bench-fence-") as workdir:
            with SimBmc(os.path.join(workdir, "bmc"), off_delay=args.off_delay) as bmc:
                results = measure(bmc, agents(workdir), args.runs)
        json_doc.targets.update(report(results, args.runs, args.off_delay))
        json_doc.add(metrics(results))
    return 0 if all(json_doc.targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
