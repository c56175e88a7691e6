"""``hapack demo [--keep] [--json] [--name NAME]``: the two-node failover, end to end.

Builds a lab (:mod:`hapack.lab`: two nodes with BMCs, a shared disk,
Corosync and Pacemaker, the lab's token), provisions the example stack in it
(:mod:`hapack.lab.provision`: Apache -> Tomcat -> app, PostgreSQL, slapd and
ActiveMQ on the shared partition, the VIP, fence_bmc) and hands it to
Pacemaker; waits until every layer answers on the VIP; shows the cluster;
starts a client that commits rows to PostgreSQL through the VIP; cuts the
active node's power through its BMC; and prints the failover as a timeline
(seconds since the cut, from the survivor's logs, the mount tables and the
client's probes), the rows acknowledged and whether every one of them is
still there. The lab is torn down at the end unless ``--keep``.

Progress goes to stdout (stderr with ``--json``, where stdout gets one JSON
document). Exit status 0 only if the failover happened, the partition was
never mounted on two nodes at once and no acknowledged row is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from collections.abc import Callable

DISK_MB = 400
LAYERS = ("postgresql", "slapd", "activemq")
PROBES = ("http", "app+db") + LAYERS
AGENTS = ("vip", "partition", "apache", "tomcat", "postgresql", "slapd", "activemq")


class Progress:
    """Timestamped progress lines: '[  12.3s] message'."""

    def __init__(self, stream):
        self.stream, self.start = stream, time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {message}", file=self.stream, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hapack demo", description="Two-node failover demo in a lab on this machine "
        "(see docs/demo.md). Needs root.")
    parser.add_argument("--keep", action="store_true",
                        help="leave the lab running at the end (remove it with "
                             "'hapack lab down --name NAME')")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document at the end (progress goes to stderr)")
    parser.add_argument("--name", default="demo", help="the lab's name (default: demo)")
    return parser


def missing_agents() -> list[str]:
    """Installed agents the lab's nodes cannot run: missing, or whose interpreter lives
    under /tmp (private in every node: an install from a venv there works on the host
    only)."""
    root = os.environ.get("OCF_ROOT", "/usr/lib/ocf")
    paths = [f"{root}/resource.d/hapack/{a}" for a in AGENTS] + ["/usr/sbin/fence_bmc"]
    problems = []
    for path in paths:
        if not os.access(path, os.X_OK):
            problems.append(f"{path} is missing")
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            interpreter = handle.readline()[2:].split()[:1]
        if interpreter and (interpreter[0].startswith("/tmp/") or not os.path.exists(interpreter[0])):
            problems.append(f"{path} runs {interpreter[0]}, which the lab's nodes cannot see")
    return problems


def cluster_state(lab: Any, node: str) -> str:
    return lab.exec(node, ["crm_mon", "-1"], timeout=30, check=False).stdout.rstrip()


def bring_up(lab: Any, say: Callable[[str], None]) -> tuple[Any, str]:
    """Build and provision the lab; wait until the stack answers on the VIP."""
    from hapack.lab import failover, provision
    say(f"building lab {lab.name!r} (two nodes, BMCs, shared disk, Corosync + Pacemaker, "
        f"token {lab.token_ms} ms)")
    lab.up()
    say(f"lab up: nodes {', '.join(lab.addr(n) for n in lab.nodes)}, client {lab.client_addr}")
    say("provisioning the stack: instance configs on both nodes, initdb/slapadd on the "
        "shared disk, stack file, CIB")
    demo = provision.provision(lab)
    say(f"stack file {demo.stack_file} rendered and loaded (VIP {demo.vip})")
    active = failover.wait_active(lab, timeout=180)
    say(f"Pacemaker started the stack: partition promoted and stateful layers on {active}")
    failover.warm_chains(lab, provision.HEALTH_PATH, provision.APACHE_PORT)
    say("both nodes' Apache -> Tomcat -> app chains answer (the standby's is warm)")
    return demo, active


def cut_and_watch(lab: Any, demo: Any, active: str, survivor: str, args: Any,
                  say: Callable[[str], None]) -> dict:
    """With the client and the mount sampler running: cut the active node's power, wait
    for the survivor; the timeline and the row check."""
    from hapack.lab import failover
    report: dict = {}
    with failover.Client(lab, demo.client_config()) as client, \
            failover.MountSampler(lab, demo.data_dir) as sampler:
        client.wait_probes(PROBES, timeout=120)
        say(f"every layer answers on the VIP; the client commits rows to PostgreSQL "
            f"through {demo.vip}:5432")
        client.wait_acks(20)
        report["state_before"] = cluster_state(lab, active)
        if not args.json:
            print("\n" + report["state_before"] + "\n", flush=True)
        say(f"cutting {active}'s power through its BMC ({lab.bmc(active).address})")
        t0 = failover.power_cut(lab, active)
        say(f"{active} is off; waiting for {survivor} to take over")
        failover.wait_active(lab, timeout=120, node=survivor)
        say(f"{survivor} holds the stack; waiting for every layer to answer on the VIP")
        client.wait_probes(PROBES, timeout=120)
        client.wait_acks(20)
    line = failover.timeline(lab, "power cut", active, survivor, t0, client, sampler, LAYERS)
    say("checking every acknowledged row through the VIP")
    acked, lost, overlaps = client.acked(), client.lost(), sampler.overlaps()
    before = sum(1 for e in client.events() if e["k"] == "ack" and e["t"] < t0)
    report.update(survivor=survivor, timeline=line.as_json(),
                  timeline_text=failover.format_timeline(line),
                  rows={"acknowledged": len(acked), "missing": lost, "before_cut": before},
                  never_mounted_twice=not overlaps, mount_samples=len(sampler.samples),
                  state_after=cluster_state(lab, survivor),
                  ok=bool(line.total is not None and not lost and not overlaps))
    return report


def run(args: Any, say: Callable[[str], None]) -> dict:
    from hapack.lab import Lab
    lab = Lab(args.name, stack="pacemaker", disk_mb=DISK_MB, boot_delay=1.0,
              persistent=args.keep)
    report: dict = {"lab": args.name, "ok": False}
    try:
        demo, active = bring_up(lab, say)
        survivor = next(n for n in lab.nodes if n != active)
        report.update(lab_dir=str(lab.dir), stack_file=str(demo.stack_file), vip=demo.vip,
                      chain_url=demo.chain_url, active=active)
        report.update(cut_and_watch(lab, demo, active, survivor, args, say))
        return report
    finally:
        if not report["ok"] and lab.state and not args.keep:
            keep_logs(lab, say)
        if args.keep and lab.state:
            say(f"lab kept: 'hapack lab exec --name {lab.name} node1 -- crm_mon -1'; "
                f"'hapack lab down --name {lab.name}' removes it")
        elif lab.state:  # empty when the lab was never allocated (e.g. the name is taken)
            say("tearing the lab down")
            lab.down()


def keep_logs(lab: Any, say: Callable[[str], None]) -> None:
    """After a failure: copy the nodes' logs out of the lab before it is torn down."""
    try:
        logs = lab.collect_logs(Path(f"/var/tmp/hapack-demo-logs-{int(time.time())}"))
        say(f"the nodes' logs (corosync, pacemaker, the layers) are kept in {logs}")
    except OSError as exc:
        say(f"could not keep the nodes' logs: {exc}")


def render(report: dict) -> str:
    rows = report["rows"]
    lines = [
        report["state_after"], "",
        f"Failover of {report['active']} to {report['survivor']} (seconds since the power cut):",
        report["timeline_text"], "",
        f"Rows committed through the VIP: {rows['acknowledged']} acknowledged "
        f"({rows['before_cut']} before the cut); "
        + ("every one of them is in the table." if not rows["missing"] else
           f"{len(rows['missing'])} MISSING: {rows['missing'][:20]}"),
        "The partition was " + ("never mounted on two nodes at once"
                                if report["never_mounted_twice"] else "MOUNTED ON TWO NODES")
        + f" ({report['mount_samples']} samples of both mount tables).",
        f"Stack file: {report['stack_file']}",
        "RESULT: " + ("OK" if report["ok"] else "FAILED"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    say = Progress(sys.stderr if args.json else sys.stdout)
    from hapack.lab.naming import NamingError, check_name
    try:
        check_name(args.name)
    except NamingError as exc:
        print(f"hapack demo: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("hapack demo: must run as root (namespaces, mounts, Pacemaker)", file=sys.stderr)
        return 2
    from hapack.lab import missing_prerequisites
    problems = missing_prerequisites("pacemaker") + [
        f"{p} (run 'hapack install'; './run demo' does)" for p in missing_agents()]
    if problems:
        print("hapack demo: cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    try:
        report = run(args, say)
    except Exception as exc:  # the lab is already down (or kept); say what failed
        say(f"FAILED: {type(exc).__name__}: {exc}")
        if args.json:
            print(json.dumps({"lab": args.name, "ok": False, "error": str(exc)}, indent=2))
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n" + render(report), flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
