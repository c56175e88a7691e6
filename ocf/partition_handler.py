"""DRBD handlers for the partition agent: fence the peer through the cluster, record split brain.

Configured in drbd.conf (see docs/partition.md)::

    handlers {
        fence-peer          "<python> -m hapack.ocf.partition_handler fence-peer";
        after-resync-target "<python> -m hapack.ocf.partition_handler unfence-peer";
        split-brain         "<python> -m hapack.ocf.partition_handler split-brain";
    }

fence-peer is the equivalent of LINBIT's crm-fence-peer: it outdates the peer
*through the cluster* by placing a location constraint that forbids the
promoted role on every node but this one, and answers DRBD with the
handler exit code convention (3 peer already outdated, 4 peer outdated,
5 peer unreachable, 6 peer is primary, 7 peer fenced):

====================  ==========================  ===========  ====
peer in the CIB       local disk                  constraint   exit
====================  ==========================  ===========  ====
online member         UpToDate or Consistent      placed       4
fenced (down, clean)  UpToDate                    placed       7
unknown (timeout)     UpToDate                    placed       5
any                   anything else               not placed   5
====================  ==========================  ===========  ====

unfence-peer (after-resync-target) removes the constraint once this node
has caught up. split-brain writes a marker the agent reports (monitor
degraded, promotion of a Secondary refused) until ``clear-split-brain``
after the operator resolved it: nothing here resolves a split brain.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from hapack.log import Logger
from hapack.ocf import _drbd
from hapack.command import CommandError, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxml.etree import _Element
    from hapack.command import Result

EXIT_OUTDATED, EXIT_UNREACHABLE, EXIT_FENCED = 4, 5, 7
PARTITION = ("ocf", "hapack", "partition")


# -- reading the CIB ------------------------------------------------------------------

def find_clone(cib: _Element, resource: str) -> str | None:
    """The id of the promotable clone whose partition primitive manages resource."""
    for clone in cib.iter("clone", "master"):
        for prim in clone.iter("primitive"):
            if (prim.get("class"), prim.get("provider"), prim.get("type")) != PARTITION:
                continue
            for pair in prim.iter("nvpair"):
                if pair.get("name") == "drbd_resource" and pair.get("value") == resource:
                    return clone.get("id")
    return None


def peers(cib: _Element, me: str) -> list[str]:
    return [n.get("uname") for n in cib.iter("node") if n.get("uname") and n.get("uname") != me]


def _true(value, false_words):
    return value is not None and value not in false_words


def peer_state(cib: _Element, peer: str) -> str:
    """reachable (online member), fenced (down and expected down), or unknown."""
    for state in cib.iter("node_state"):
        if state.get("uname") != peer:
            continue
        member = _true(state.get("in_ccm"), ("false", "0", ""))
        online = _true(state.get("crmd"), ("offline", "false", "0", ""))
        if member and online:
            return "reachable"
        if not member and not online and state.get("expected") == "down":
            return "fenced"
    return "unknown"


def decide(disk: str, state: str) -> tuple[int, bool]:
    """(exit code, place the constraint?) for the local disk state and the peer's state."""
    if state == "reachable" and disk in ("UpToDate", "Consistent"):
        return EXIT_OUTDATED, True
    if state == "fenced" and disk == "UpToDate":
        return EXIT_FENCED, True
    if disk == "UpToDate":
        return EXIT_UNREACHABLE, True
    return EXIT_UNREACHABLE, False


def constraint_id(resource: str, clone: str) -> str:
    return f"hapack-fence-{resource}-{clone}"


def constraint_xml(resource: str, clone: str, me: str) -> str:
    """No promoted role anywhere but on this node: the peer is outdated through the cluster."""
    from lxml import etree
    cid = constraint_id(resource, clone)
    loc = etree.Element("rsc_location", id=cid, rsc=clone)
    rule = etree.SubElement(loc, "rule", id=f"{cid}-rule", role="Promoted", score="-INFINITY")
    etree.SubElement(rule, "expression", id=f"{cid}-expr", attribute="#uname",
                     operation="ne", value=me)
    return etree.tostring(loc, encoding="unicode")


# -- the handlers ----------------------------------------------------------------------

class Handler:
    def __init__(self, args, environ, log):
        self.args, self.environ, self.log = args, environ, log
        self.resource = args.resource or environ.get("DRBD_RESOURCE", "")
        self.me = args.node or os.uname().nodename

    def run(self, argv: list[str], input: None = None) -> Result:
        return run(argv, timeout=30, input=input, env=dict(self.environ), log=self.log)

    def cib(self) -> _Element:
        from lxml import etree
        result = self.run(["cibadmin", "--query", "--local"])
        if not result.ok:
            raise CommandError(result.argv, result.output())
        return etree.fromstring(result.stdout.encode())

    def local_disk(self) -> str:
        minor = self.environ.get("DRBD_MINOR")
        device = f"/dev/drbd{minor}" if minor else ""
        try:
            return _drbd.read_state(self.run, self.resource, device, loaded=True).disk
        except CommandError as exc:  # unknown: never taken for UpToDate
            self.log.error(f"the local disk state is unknown: {exc}")
            return "DUnknown"

    def fence_peer(self) -> int:
        cib = self.cib()
        clone = self.args.clone or find_clone(cib, self.resource)
        if clone is None:
            self.log.error(f"no promotable clone of ocf:hapack:partition manages {self.resource}")
            return 1
        deadline = time.monotonic() + self.args.timeout
        while True:
            states = {peer: peer_state(cib, peer) for peer in peers(cib, self.me)}
            state = "reachable" if "reachable" in states.values() else (
                "fenced" if states and set(states.values()) == {"fenced"} else "unknown")
            if state != "unknown" or time.monotonic() >= deadline:
                break
            time.sleep(1)
            cib = self.cib()
        disk = self.local_disk()
        code, place = decide(disk, state)
        if place and cib.find(f".//rsc_location[@id='{constraint_id(self.resource, clone)}']") is None:
            xml = constraint_xml(self.resource, clone, self.me)
            result = self.run(["cibadmin", "--create", "--scope", "constraints", "--xml-text", xml])
            if not result.ok:
                self.log.error(f"cannot place the fencing constraint: {result.output()}")
                return 1
        self.log.info(f"fence-peer {self.resource}: peer {state}, my disk {disk}: "
                      f"{'constraint placed' if place else 'no constraint'}, exit {code}")
        return code

    def unfence_peer(self) -> int:
        cib = self.cib()
        clone = self.args.clone or find_clone(cib, self.resource)
        if clone is None:
            return 0
        cid = constraint_id(self.resource, clone)
        if cib.find(f".//rsc_location[@id='{cid}']") is not None:
            result = self.run(["cibadmin", "--delete", "--xml-text", f'<rsc_location id="{cid}"/>'])
            if not result.ok:
                self.log.error(f"cannot remove {cid}: {result.output()}")
                return 1
            self.log.info(f"removed the fencing constraint {cid}")
        return 0

    def split_brain(self) -> int:
        marker = _drbd.split_brain_marker(self.environ, self.resource)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "a", encoding="utf-8") as handle:
            handle.write(f"detected {time.strftime('%Y-%m-%d %H:%M:%S')} on {self.me}\n")
        self.log.error(f"split brain on DRBD resource {self.resource}: recorded in {marker}; "
                       "resolve it by hand (docs/partition.md), then run clear-split-brain")
        return 0

    def clear_split_brain(self) -> int:
        try:
            os.unlink(_drbd.split_brain_marker(self.environ, self.resource))
        except FileNotFoundError:
            pass
        return 0


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(prog="partition_handler", description=__doc__.split("\n")[0])
    parser.add_argument("handler", choices=("fence-peer", "unfence-peer", "split-brain",
                                            "clear-split-brain"))
    parser.add_argument("--resource", help="DRBD resource (default: $DRBD_RESOURCE)")
    parser.add_argument("--clone", help="id of the promotable clone (default: from the CIB)")
    parser.add_argument("--node", help="this node's cluster name (default: uname -n)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for an unreachable peer to be fenced")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    environ.setdefault("HA_LOGFACILITY", "daemon")
    # DRBD runs handlers through the kernel's usermode helper: no stdin, stdout
    # or stderr at all (sys.stderr is None), and a log line must not fail them.
    stderr = sys.stderr if sys.stderr is not None else open(os.devnull, "w", encoding="utf-8")
    log = Logger(f"partition-handler({args.resource or environ.get('DRBD_RESOURCE', '?')})",
                 environ, stderr=stderr)
    handler = Handler(args, environ, log)
    if not handler.resource:
        log.error("no DRBD resource: set DRBD_RESOURCE or --resource")
        return 1
    try:
        return getattr(handler, args.handler.replace("-", "_"))()
    except (CommandError, OSError, ValueError) as exc:
        log.error(f"{args.handler} {handler.resource}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
