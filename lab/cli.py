"""``hapack lab``: bring the two-node lab up, look at it, poke it, tear it down.

    hapack lab up [--stack pacemaker|none] [--name N] [--boot-delay S] [--token-ms MS] [--pdu]
                  [--qdevice]
    hapack lab status [--name N] [--json]
    hapack lab exec [--name N] NODE|client -- CMD...
    hapack lab power [--name N] NODE on|off|reset|cycle|status [--wait]
    hapack lab down [--name N] [--force]
    hapack lab campaign --manager pacemaker|hamon [--faults N] [--seed S] [--json]
                        [--keep-going] [--keep] [--kinds K,K...]

A lab brought up here (default name ``dev``) stays up, its state in
/var/tmp/hapack-lab/<name>/, until ``hapack lab down``. Commands that act on
one lab take ``--name``, else the HAPACK_LAB environment variable, else
``dev`` if it exists, else the only lab there is. ``down`` without a name
removes every lab on the machine: the CLI's, and the leftovers of crashed or
killed runs; a lab whose owning process (a test run) is still alive is left
to it unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .bmc import BmcError
from .core import DEFAULT_BOOT_DELAY, STACKS, Lab, LabError, NodeCommandError
from .naming import NODES, QNETD_PORT, NamingError
from .stack import DEFAULT_TOKEN_MS

DEFAULT_NAME = "dev"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hapack lab", description="The two-node lab on this machine.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab and boot both nodes through their BMCs")
    up.add_argument("--stack", choices=STACKS, default="pacemaker")
    up.add_argument("--name", default=None, help=f"lab name, 1-6 of [a-z0-9] (default {DEFAULT_NAME})")
    up.add_argument("--boot-delay", type=float, default=DEFAULT_BOOT_DELAY, help="simulated POST, seconds")
    up.add_argument("--token-ms", type=int, default=DEFAULT_TOKEN_MS, help="corosync totem token")
    up.add_argument("--pdu", action="store_true",
                    help="a PDU outlet per node too (a second ipmi_sim switching its power)")
    up.add_argument("--qdevice", action="store_true",
                    help="a quorum device: an arbiter namespace running corosync-qnetd on the BMC "
                         "network, corosync-qdevice in both nodes (no two_node)")
    status = sub.add_parser("status", help="show labs and their nodes")
    status.add_argument("--name", default=None)
    status.add_argument("--json", action="store_true")
    exec_ = sub.add_parser("exec", help="run a command inside a node (or the client)")
    exec_.add_argument("--name", default=None)
    exec_.add_argument("node", choices=NODES + ("client",))
    exec_.add_argument("argv", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    power = sub.add_parser("power", help="ipmitool chassis power through the node's BMC")
    power.add_argument("--name", default=None)
    power.add_argument("node", choices=NODES)
    power.add_argument("action", choices=("on", "off", "reset", "cycle", "status"))
    power.add_argument("--wait", action="store_true", help="wait until booted (on) or gone (off)")
    down = sub.add_parser("down", help="tear a lab down (all labs without --name)")
    down.add_argument("--name", default=None)
    down.add_argument("--force", action="store_true", help="also labs of running test processes")
    campaign = sub.add_parser("campaign", help="random faults in a row on the demo's full stack")
    campaign.add_argument("--manager", choices=("pacemaker", "hamon"), required=True)
    campaign.add_argument("--faults", type=_count, default=12, help="how many faults (default 12)")
    campaign.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    campaign.add_argument("--json", action="store_true", help="one JSON report on stdout")
    campaign.add_argument("--keep-going", action="store_true", help="do not stop at a violation")
    campaign.add_argument("--keep", action="store_true", help="keep the lab and its logs even if OK")
    campaign.add_argument("--kinds", default=None, help="only these fault kinds (comma-separated)")
    return parser


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def pick(name: str | None) -> Lab:
    """The lab to act on: --name, $HAPACK_LAB, the CLI's default lab, or the only one."""
    name = name or os.environ.get("HAPACK_LAB")
    if name:
        return Lab.attach(name)
    names = Lab.names()
    if DEFAULT_NAME in names:
        return Lab.attach(DEFAULT_NAME)
    if len(names) == 1:
        return Lab.attach(names[0])
    if not names:
        raise LabError("no lab is running; start one with 'hapack lab up'")
    raise LabError(f"several labs are running ({', '.join(names)}); choose one with --name")


def cmd_up(args) -> int:
    lab = Lab(args.name or DEFAULT_NAME, args.stack, boot_delay=args.boot_delay, token_ms=args.token_ms,
              persistent=True, pdu=args.pdu, qdevice=args.qdevice)
    lab.up()
    print(describe(lab))
    return 0


def describe(lab: Lab) -> str:
    disk = lab.shared_disk
    lines = [f"lab {lab.name} ({lab.stack}) up; state in {lab.dir}",
             f"  service LAN  {lab.subnet('lan')}  (eth0 in the nodes)",
             f"  heartbeat    {lab.subnet('hb')}  (eth1)",
             f"  BMC network  {lab.subnet('bmc')}  (eth2; host {lab.plan.host_bmc_addr})"]
    for node in lab.nodes:
        bmc = lab.bmc(node)
        lines.append(f"  {node}: lan {lab.addr(node, 'lan')}  hb {lab.addr(node, 'hb')}  "
                     f"bmc-net {lab.addr(node, 'bmc')}")
        lines.append(f"         BMC {bmc.address}:{bmc.port} user {bmc.username} "
                     f"password-file {bmc.password_file} (lanplus, cipher 3)")
        if lab.state.get("pdus"):
            pdu = lab.pdu(node)
            lines.append(f"         PDU {pdu.address}:{pdu.port} user {pdu.username} "
                         f"password-file {pdu.password_file} (fence_ipmilan, lanplus, cipher 3)")
    vips = lab.vip_candidates()
    if lab.arbiter_addr:
        lines.append(f"  arbiter: corosync-qnetd on {lab.arbiter_addr}:{QNETD_PORT} (BMC network); "
                     "corosync-qdevice in both nodes, ffsplit, heuristic: ping the client")
    lines += [f"  client: {lab.client_addr} on the service LAN",
              f"  VIP candidates: {vips[0]} .. {vips[-1]}",
              f"  shared disk: {disk.device} ({disk.fstype}, label {disk.label}, {disk.size_mb} MiB)",
              f"  shared dir (same path in host and nodes): {lab.shared_dir}",
              f"try: hapack lab exec --name {lab.name} node1 -- crm_mon -1",
              f"     hapack lab power --name {lab.name} node1 off",
              f"     hapack lab down --name {lab.name}"]
    return "\n".join(lines)


def cmd_status(args) -> int:
    names = [args.name] if args.name else Lab.names()
    report = {}
    for name in names:
        lab = Lab.attach(name)
        owner = lab.state.get("owner")
        report[name] = {"stack": lab.stack, "phase": lab.state.get("phase"), "dir": str(lab.dir),
                        "owner_pid": owner[0] if owner else None,
                        "stale": bool(owner) and not lab.owner_alive(), "nodes": lab.status(),
                        "arbiter": arbiter_status(lab)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if not report:
        print("no lab")
    for name, info in report.items():
        extra = " STALE (its owner died; 'hapack lab down' removes it)" if info["stale"] else ""
        print(f"lab {name}: {info['stack']}, {info['phase']}, {info['dir']}{extra}")
        if info["arbiter"]:
            arb = info["arbiter"]
            print(f"  arbiter: corosync-qnetd {arb['address']} "
                  f"{'running, pid ' + str(arb['pid']) if arb['pid'] else 'DOWN'}"
                  f"{', clients: ' + ', '.join(arb['clients']) if arb['clients'] else ''}")
        for node, st in info["nodes"].items():
            flags = [f for f, on in (("frozen", st["frozen"]), ("crashed", st["power"] == "on" and not st["running"]),
                                     ("bmc-unreachable", not st["bmc_reachable"])) if on]
            cut = f" cut={','.join(st['cut'])}" if st["cut"] else ""
            print(f"  {node}: power {st['power']}, stage {st['stage']}, boots {st['boots']}, "
                  f"lan {st['addresses']['lan']}{cut}{' ' + ' '.join(flags) if flags else ''}")
    return 0


def arbiter_status(lab: Lab) -> dict | None:
    """The arbiter's address, qnetd pid and the nodes connected to it (None: no qdevice)."""
    if not lab.arbiter_addr:
        return None
    try:
        qnetd = lab.qnetd()
        votes = lab.arbiter_votes() if qnetd else {}
    except LabError:
        qnetd, votes = None, {}
    return {"address": lab.arbiter_addr, "pid": qnetd[0] if qnetd else None,
            "clients": [f"node {nodeid} ({vote})" for nodeid, vote in sorted(votes.items())]}


def cmd_exec(args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("nothing to run: hapack lab exec NODE -- CMD...")
    lab = pick(args.name)
    if args.node == "client":
        return lab.client_exec(argv, check=False, timeout=None, capture=False).returncode
    return lab.exec(args.node, argv, check=False, timeout=None, capture=False).returncode


def cmd_power(args) -> int:
    lab = pick(args.name)
    print(lab.power(args.node, args.action, wait=args.wait))
    return 0


def cmd_down(args) -> int:
    if args.name:
        names = [args.name] if Lab.attach(args.name).down() else []
    else:
        names = []
        for name in Lab.names():
            lab = Lab.attach(name)
            if lab.owner_alive() and not args.force:
                print(f"lab {name} belongs to running process {lab.state['owner'][0]}: left to it "
                      "(--force to take it down anyway)")
            elif lab.down():
                names.append(name)
    for name in names:
        print(f"lab {name} down")
    if not names:
        print("no lab taken down")
    return 0


def cmd_campaign(args) -> int:
    from . import campaign
    from .faults import KINDS
    kinds = tuple(k.strip() for k in args.kinds.split(",")) if args.kinds else None
    unknown = [k for k in kinds or () if k not in KINDS]
    if unknown:
        print(f"hapack lab campaign: unknown fault kind(s) {', '.join(unknown)}; known: "
              f"{', '.join(KINDS)}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else \
        (lambda m: print(m, flush=True))
    say(f"campaign: manager {args.manager}, seed {seed}, {args.faults} faults")
    run = campaign.Campaign(args.manager, args.faults, seed, keep_going=args.keep_going,
                            kinds=kinds, say=say)
    report = None
    signal.signal(signal.SIGTERM, _interrupt)   # a stopped run keeps its lab and logs
    try:
        report = run.run()
    finally:
        campaign.keep_or_remove(run, report, say, keep=args.keep)
    print(json.dumps(report, indent=2) if args.json else campaign.render(report))
    return 0 if report["ok"] else 1


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends a campaign like Ctrl-C: its ``finally`` clauses stop the client and
    the samplers and keep the lab with its logs (a background job ignores SIGINT)."""
    raise KeyboardInterrupt(f"signal {signum}")


COMMANDS = {"campaign": cmd_campaign, "up": cmd_up, "status": cmd_status, "exec": cmd_exec, "power": cmd_power, "down": cmd_down}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (LabError, BmcError, NamingError, NodeCommandError) as exc:
        print(f"hapack lab {args.command}: {exc}", file=sys.stderr)
        return 1
