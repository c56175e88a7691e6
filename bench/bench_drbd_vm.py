"""DRBD between two emulated VMs: peer-loss detection, promote+mount on the survivor, tier cost.

    python bench/bench_drbd_vm.py [--runs N] [--skip-defaults] [--skip-test] [--json [FILE]]

One VM pair (hapack.lab.vm) with the DRBD settings recommended for
ocf:hapack:partition (ping-int 1, ping-timeout 5, connect-int 1). Per run:
A is Primary and mounted, B Secondary; A's power is cut through its BMC;

* peer-loss detection: from A's QEMU gone to B's /proc/drbd leaving
  Connected (host-side clock; the mailbox adds up to ~50 ms);
* promote+mount on the survivor, timed inside B: ``ocf:hapack:partition
  promote`` versus the stock pair ``ocf:linbit:drbd promote`` +
  ``ocf:heartbeat:Filesystem start``, in alternating order, on the same
  survivor (each undone before the other runs);
* power loss to mounted on B with our agent (detection + promote).

Then, once, the detection with DRBD's defaults for ping-int/ping-timeout/
connect-int, and the whole failover test (pytest tests/vm/test_failover.py,
its own pair, boot included) to keep the tier cheap. Needs root, qemu,
ipmi_sim, drbd-utils; the guest kernel is fetched once into the cache.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_json_option, json_report, metric  # noqa: E402

from hapack.lab import vm, vmkernel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIR = "/mnt/r0"
SHIM = ('#!/bin/sh\n# crm_attribute stand-in (no Pacemaker in the guests)\n'
        'echo "$OCF_RESOURCE_INSTANCE $*" >> /run/bench-crm_attribute.log\n')
PCMK = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESKEY_CRM_meta_timeout": "60000",
        "OCF_RESKEY_crm_feature_set": "3.16.2",
        "PATH": f"{vm.SHARE}/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
CLONE = {"OCF_RESKEY_CRM_meta_promotable": "true", "OCF_RESKEY_CRM_meta_notify": "true",
         "OCF_RESKEY_CRM_meta_clone_max": "2", "OCF_RESKEY_CRM_meta_clone_node_max": "1",
         "OCF_RESKEY_CRM_meta_master_max": "1", "OCF_RESKEY_CRM_meta_master_node_max": "1",
         "OCF_RESKEY_CRM_meta_promoted_max": "1"}
FS = {"OCF_RESKEY_device": vm.DEVICE, "OCF_RESKEY_directory": DIR, "OCF_RESKEY_fstype": "ext4"}
STOCK_DRBD = "/usr/lib/ocf/resource.d/linbit/drbd"
STOCK_FS = "/usr/lib/ocf/resource.d/heartbeat/Filesystem"
DEFAULTS_SED = r"s/ ping-int 1;//; s/ ping-timeout 5;//; s/ connect-int 1;//"


def call(agent: str, action: str, env: dict, instance: str) -> str:
    words = [f"{k}={v}" for k, v in {**PCMK, **env, "OCF_RESOURCE_INSTANCE": instance}.items()]
    return f"env {' '.join(words)} {agent} {action}"


class Agents:
    """The two ways to take the partition on a node, and how to give it back."""

    def __init__(self, pair: vm.VmPair):
        ours = pair.agent("partition")
        params = {**CLONE, **FS, "OCF_RESKEY_drbd_resource": vm.RESOURCE}
        self.ours = {action: call(ours, action, params, "p0")
                     for action in ("start", "promote", "demote")}
        drbd = {**CLONE, "OCF_RESKEY_drbd_resource": vm.RESOURCE}
        self.stock_promote = (f"{call(STOCK_DRBD, 'promote', drbd, 's0')} && "
                              f"{call(STOCK_FS, 'start', FS, 'fs0')}")
        self.stock_undo = (f"{call(STOCK_FS, 'stop', FS, 'fs0')} && "
                           f"{call(STOCK_DRBD, 'demote', drbd, 's0')}")


def timed_in_guest(guest, script: str) -> float:
    """Seconds ``script`` took inside the guest (its own clock); it must succeed."""
    out = guest.sh(f's=$(date +%s%N); {script} >/dev/null 2>&1; rc=$?; e=$(date +%s%N); '
                   f'echo "BENCH $((e-s)) $rc"', timeout=120)
    ns, code = re.search(r"BENCH (\d+) (\d+)", out).groups()
    if code != "0":
        raise RuntimeError(f"{guest.name}: {script!r} exited {code}")
    return int(ns) / 1e9


def power_loss(pair: vm.VmPair) -> tuple[float, float]:
    """Cut A's power; (time A's QEMU was seen gone, time B saw the peer lost)."""
    a, b = pair.a, pair.b
    seen = {}

    def watch():
        b.sh("while grep -q 'cs:Connected' /proc/drbd; do sleep 0.01; done", timeout=120)
        seen["lost"] = time.perf_counter()

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.3)  # the watcher's loop is running in B
    a.ipmi("chassis", "power", "off")
    while a.running():
        time.sleep(0.002)
    gone = time.perf_counter()
    watcher.join(120)
    return gone, seen["lost"]


def one_run(pair: vm.VmPair, agents: Agents, stock_first: bool, results: dict) -> None:
    a, b = pair.a, pair.b
    pair.reset_drbd()
    for guest in (a, b):
        guest.sh(agents.ours["start"])
    a.sh(agents.ours["promote"])
    gone, lost = power_loss(pair)
    results["detect"].append(lost - gone)
    fence = "mkdir -p /run/hapack && echo vma > /run/hapack/fence-confirmed"
    order = ("stock", "ours") if stock_first else ("ours", "stock")
    for who in order:
        if who == "ours":
            b.sh(fence)
            took = timed_in_guest(b, agents.ours["promote"])
            results["ours"].append(took)
            if not stock_first:
                results["e2e"].append(time.perf_counter() - gone)
            b.sh(agents.ours["demote"])
        else:
            results["stock"].append(timed_in_guest(b, agents.stock_promote))
            b.sh(agents.stock_undo)


def defaults_detection(pair: vm.VmPair) -> float:
    """Peer-loss detection with DRBD's defaults (ping-int 10 s...): one run."""
    pair.both(lambda g: g.power_on())
    pair.both(lambda g: g.sh(f"sed -i '{DEFAULTS_SED}' /etc/drbd.conf"))
    try:
        pair.reset_drbd()
        pair.a.sh(f"drbdadm primary {vm.RESOURCE}")
        gone, lost = power_loss(pair)
        return lost - gone
    finally:
        pair.a.power_on()
        pair.both(lambda g: g.sh(f"cp {vm.JOB}/drbd.conf /etc/drbd.conf"))


def failover_test() -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/vm/test_failover.py"], cwd=ROOT, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
    return time.perf_counter() - start, tail


def row(name: str, variant: str, values: list[float], base: list[float] | None = None) -> None:
    med = statistics.median(values)
    ratio = f"{med / statistics.median(base):.2f}" if base else ""
    print(f"{name:<34}{variant:<40}{med * 1000:>10.0f}{min(values) * 1000:>9.0f}"
          f"{max(values) * 1000:>9.0f}{len(values):>6}{ratio:>8}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-defaults", action="store_true")
    parser.add_argument("--skip-test", action="store_true")
    add_json_option(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    with json_report("bench_drbd_vm", args) as json_doc:
        run(args, json_doc)
    return 0


def run(args: argparse.Namespace, json_doc) -> None:
    t = time.perf_counter()
    kernel = vmkernel.prepare()
    prepare_s = time.perf_counter() - t
    results = {"detect": [], "ours": [], "stock": [], "e2e": []}
    pair = vm.VmPair(kernel)
    t = time.perf_counter()
    with pair.start():
        boot_s = time.perf_counter() - t
        (pair.share / "bin").mkdir()
        (pair.share / "bin" / "crm_attribute").write_text(SHIM)
        (pair.share / "bin" / "crm_attribute").chmod(0o755)
        agents = Agents(pair)
        for i in range(args.runs):
            one_run(pair, agents, stock_first=bool(i % 2), results=results)
        pair.reset_drbd()  # powers A on again
        t = time.perf_counter()
        pair.reset_drbd()
        reset_s = time.perf_counter() - t
        defaults = None if args.skip_defaults else defaults_detection(pair)
    test = None if args.skip_test else failover_test()
    report(kernel, prepare_s, boot_s, reset_s, results, defaults, test)
    json_doc.add(metrics(prepare_s, boot_s, reset_s, results, defaults, test))
    json_doc.extra["guest_kernel"] = kernel.abi
    if test is not None:
        json_doc.extra["failover_test"] = test[1]


def metrics(prepare_s, boot_s, reset_s, results, defaults, test) -> dict:
    """The table's rows; stock = the stock agents, or DRBD's own defaults for detection."""
    out = {"peer-loss detection": metric(results["detect"],
                                         [defaults] if defaults is not None else None),
           "promote+mount on the survivor": metric(results["ours"], results["stock"]),
           "power loss -> mounted on survivor": metric(results["e2e"]),
           "setup: guest kernel": metric([prepare_s]),
           "setup: VmPair.start": metric([boot_s]),
           "setup: VmPair.reset_drbd": metric([reset_s])}
    if test is not None:
        out["whole failover test (pytest)"] = metric([test[0]])
    return out


def report(kernel, prepare_s, boot_s, reset_s, results, defaults, test) -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nDRBD 8.4 between two TCG guests (kernel {kernel.abi}); times in ms; "
          f"host load average {load} on {os.cpu_count()} cores")
    head = (f"{'measure':<34}{'variant':<40}{'median':>10}{'min':>9}{'max':>9}{'runs':>6}"
            f"{'ratio':>8}")
    print(head)
    print("-" * len(head))
    row("peer-loss detection", "ping-int 1, ping-timeout 5 (ours)", results["detect"])
    if defaults is not None:
        row("", "DRBD defaults (ping-int 10)", [defaults])
        print(f"{'':<34}{'ratio defaults / recommended':<40}"
              f"{defaults / statistics.median(results['detect']):>10.1f}")
    row("promote+mount on the survivor", "ocf:hapack:partition promote", results["ours"],
        results["stock"])
    row("", "linbit:drbd promote + Filesystem start", results["stock"])
    if results["e2e"]:
        row("power loss -> mounted on survivor", "detection + partition promote", results["e2e"])
    row("setup", "guest kernel (cached after the first)", [prepare_s])
    row("", "VmPair.start (2 BMCs, 2 boots)", [boot_s])
    row("", "VmPair.reset_drbd (both guests on)", [reset_s])
    if test is not None:
        row("whole failover test (pytest)", "test_failover.py, own pair, boot incl.", [test[0]])
        print(f"{'':<34}{test[1]}")


if __name__ == "__main__":
    sys.exit(main())
