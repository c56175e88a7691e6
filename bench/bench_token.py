#!/usr/bin/env python3
"""Corosync token/consensus pairs in the lab: false membership changes under load, and
detection time.

    sudo .venv/bin/python bench/bench_token.py [--pairs 3000/3600,1000/1200,...]
        [--soak 300] [--runs 3] [--json]

A script, not a test. corosync.conf(5) (3.1.7) lets a two-node cluster run a
consensus shorter than the token ("For two node clusters, a consensus larger than
the join timeout but less than token is safe"); corosync itself only refuses a
consensus under the join timeout (exec/totemconfig.c). A survivor declares its peer
lost ``token`` after the last token it saw, plus ``consensus`` to agree on the new
membership alone (exec/totemsrp.c), so both timeouts are the detection time.

For each pair it builds one two-node Pacemaker lab (the lab's corosync.conf: knet,
two links, aes256/sha256, two_node; corosync at its default real-time priority) with
only the two stonith:fence_bmc devices (stonith-action=off). All labs come up first
and then soak side by side with no fault for at least ``--soak`` seconds, under the
machine's load (other labs, campaigns, builds: sampled from /proc/loadavg and
printed). A soak counts on both nodes' corosync logs every membership formed, every
token lost, token warnings (75 % of the token without one: a near miss), knet link
downs, and Pacemaker's fence operations; and corosync's own counters
(``corosync-cmapctl -m stats``: stats.srp.operational_token_lost,
consensus_timeouts). A pair passes only with zero membership changes and zero
fences. Then, lab by lab, ``--runs`` power cuts through the victim's BMC (victims
alternate): cut -> token expired (survivor: "A processor failed") -> peer declared
lost ("Members left") -> fence requested -> fence confirmed; the victim is powered
back on and rejoins before the next run.

Prints a table (seconds since the cut: min median max) and, with ``--json``, the
same as JSON on stdout (progress and the table go to stderr), with the ratio of
each pair's detection median to the baseline pair's (the first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

from hapack.lab import Lab, LabError, failover, missing_prerequisites
from hapack.lab.stack import fence_device_xml

DEFAULT_PAIRS = "3000/3600,1000/1200,1000/800,500/600,500/400,300/360,300/240,200/160"
SOAK_PATTERNS = {
    "memberships": r"\[TOTEM \] A new membership",
    "tokens_lost": r"\[TOTEM \] A processor failed",
    "token_warnings": r"\[TOTEM \] Token has not been received",
    "link_downs": r"\[KNET  \] link: host: \d+ link: \d+ is down",
    "retransmits": r"\[TOTEM \] Retransmit List",
}
FENCE_OP = r"pacemaker-fenced.*Operation '(off|reboot)' targeting"
STATS = ("stats.srp.operational_token_lost", "stats.srp.consensus_timeouts",
         "stats.srp.gather_token_lost", "stats.srp.commit_token_lost")
STEPS = ("token expired", "peer declared lost", "fence requested", "fence confirmed")


@dataclass
class Pair:
    token: int
    consensus: int
    lab: Lab | None = None
    soak_start: float = 0.0
    soak_end: float = 0.0
    stats_before: dict = field(default_factory=dict)
    soak: dict = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    runtime: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.token}/{self.consensus}"

    @property
    def clean(self) -> bool:
        return (self.soak.get("memberships", 1) == 0 and self.soak.get("fences", 1) == 0
                and self.soak.get("tokens_lost", 1) == 0)


class PairLab(Lab):
    """The lab's own corosync.conf with this ``consensus`` instead of the default's."""

    def __init__(self, consensus_ms: int, **kwargs):
        super().__init__(**kwargs)
        self.consensus_ms = consensus_ms

    def corosync_conf_text(self) -> str:
        text, found = re.subn(r"(?m)^    consensus: \d+$", f"    consensus: {self.consensus_ms}",
                              super().corosync_conf_text())
        assert found == 1, "the lab's corosync.conf has no consensus line"
        return text


class LoadSampler:
    """/proc/loadavg's 1-minute figure every ``interval`` seconds, in a thread."""

    def __init__(self, interval: float = 10.0):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with open("/proc/loadavg", encoding="ascii") as handle:
                self.samples.append((time.time(), float(handle.read().split()[0])))
            self._stop.wait(self.interval)

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[float]:
        return [load for wall, load in self.samples if start <= wall <= end]


def parse_pairs(text: str) -> list[Pair]:
    pairs = []
    for item in text.split(","):
        token, _, consensus = item.strip().partition("/")
        pairs.append(Pair(int(token), int(consensus)))
    return pairs


def configure_fencing(lab: Lab) -> None:
    run = lab.exec
    for name, value in (("stonith-enabled", "true"), ("stonith-action", "off")):
        run("node1", ["crm_attribute", "--type", "crm_config", "--name", name, "--update", value])
    # a false split must not kill both: the device fencing node1 waits 2 s
    for node, delay in (("node1", "2s"), ("node2", None)):
        run("node1", ["cibadmin", "--create", "-o", "resources",
                      "--xml-text", fence_device_xml(lab, node, delay, monitor="30s")])
        run("node1", ["cibadmin", "--create", "-o", "constraints", "--xml-text",
                      f'<rsc_location id="loc-fence-{node}" rsc="fence-{node}" '
                      f'node="{node}" score="-INFINITY"/>'])


def cmap(lab: Lab, node: str, *keys: str) -> dict[str, int]:
    """The values of ``keys`` in ``node``'s cmap (empty if the node is down: a soak may
    fence one)."""
    argv = ["corosync-cmapctl", "-m", "stats"] if keys[0].startswith("stats.") else \
        ["corosync-cmapctl"]
    if not lab.running(node):
        return {}
    try:
        out = lab.exec(node, argv, timeout=30, check=False).stdout
    except LabError:
        return {}
    values = {}
    for line in out.splitlines():
        name, _, rest = line.partition(" (")
        if name in keys:
            values[name] = int(rest.rpartition("= ")[2])
    return values


def log_count(lab: Lab, node: str, name: str, pattern: str, start: float, end: float) -> int:
    regex = re.compile(pattern)
    try:
        text = failover.node_log(lab, node, name).read_text(errors="replace")
    except FileNotFoundError:
        return 0
    count = 0
    for line in text.splitlines():
        stamp = failover.log_time(line)
        if stamp is not None and start <= stamp <= end and regex.search(line):
            count += 1
    return count


def bring_up(pair: Pair, say, qdevice: bool = False) -> None:
    lab = PairLab(pair.consensus, stack="pacemaker", token_ms=pair.token, boot_delay=1.0,
                  qdevice=qdevice)
    pair.lab = lab
    lab.up()
    configure_fencing(lab)
    lab.wait_online(timeout=120)
    pair.soak_start = time.time()
    pair.runtime = {node: cmap(lab, node, "runtime.config.totem.token",
                               "runtime.config.totem.consensus") for node in lab.nodes}
    pair.stats_before = {node: cmap(lab, node, *STATS) for node in lab.nodes}
    say(f"{pair.label}: lab {lab.name} up, soaking (runtime {pair.runtime['node1']})")


def end_soak(pair: Pair, loads: LoadSampler) -> None:
    lab = pair.lab
    pair.soak_end = time.time()
    soak = {name: sum(log_count(lab, n, "cluster/corosync.log", pattern, pair.soak_start,
                                pair.soak_end) for n in lab.nodes)
            for name, pattern in SOAK_PATTERNS.items()}
    soak["fences"] = sum(log_count(lab, n, "pacemaker/pacemaker.log", FENCE_OP,
                                   pair.soak_start, pair.soak_end) for n in lab.nodes)
    after = {node: cmap(lab, node, *STATS) for node in lab.nodes}
    for key in STATS:
        soak[key.rpartition(".")[2]] = sum(
            after[n].get(key, 0) - pair.stats_before[n].get(key, 0) for n in lab.nodes)
    soak["seconds"] = round(pair.soak_end - pair.soak_start, 1)
    load = loads.between(pair.soak_start, pair.soak_end)
    soak["load"] = ({"min": min(load), "median": statistics.median(load), "max": max(load)}
                    if load else None)
    pair.soak = soak


def wait_line(lab: Lab, node: str, name: str, after: float, pattern: str,
              timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = failover.first_line(failover.node_log(lab, node, name), after, pattern)
        if found is not None:
            return found
        time.sleep(0.2)
    return None


def both_online(lab: Lab) -> None:
    """Power on a node a false failover left off, and wait for both online."""
    for node in lab.nodes:
        if not lab.running(node):
            lab.power(node, "on", wait=True)
    lab.wait_online(timeout=180)


def one_cut(pair: Pair, victim: str, say) -> dict:
    lab = pair.lab
    survivor = next(n for n in lab.nodes if n != victim)
    both_online(lab)
    time.sleep(2)
    t0 = failover.power_cut(lab, victim)
    coro = "cluster/corosync.log"
    expired = wait_line(lab, survivor, coro, t0, r"A processor failed", 30)
    lost = wait_line(lab, survivor, coro, t0, r"Members left: ", 30)
    pcmk = "pacemaker/pacemaker.log"
    asked = wait_line(lab, survivor, pcmk, t0, rf"pacemaker-fenced.*Requesting peer fencing "
                                             rf"\((off|reboot)\) targeting {victim}", 60)
    done = failover.fenced_since(lab, victim, t0)
    deadline = time.monotonic() + 60
    while not done and time.monotonic() < deadline:
        time.sleep(0.3)
        done = failover.fenced_since(lab, victim, t0)
    run = {"victim": victim, "t0": t0,
           "token expired": None if expired is None else expired - t0,
           "peer declared lost": None if lost is None else lost - t0,
           "fence requested": None if asked is None else asked - t0,
           "fence confirmed": done[0]["wall"] - t0 if done else None,
           "load": os.getloadavg()[0]}
    both_online(lab)
    say(f"  {pair.label} cut {victim}: " + ", ".join(
        f"{k} {v:.2f}s" for k, v in run.items() if k in STEPS and v is not None)
        + f" (load {run['load']:.1f})")
    return run


def cut_all(pair: Pair, runs: int, say) -> None:
    """``runs`` cuts, victims alternating; a pair whose nodes cannot get back together
    (they keep splitting) keeps the cuts it has and says so."""
    for i in range(runs):
        try:
            pair.runs.append(one_cut(pair, ("node2", "node1")[i % 2], say))
        except LabError as exc:
            pair.soak["unstable"] = f"after {len(pair.runs)} cuts: {exc}"
            say(f"  {pair.label}: stopped: {exc}")
            return


def series(pair: Pair, step: str) -> list[float]:
    return [r[step] for r in pair.runs if r.get(step) is not None]


def fmt(values: list[float]) -> str:
    if not values:
        return f"{'-':>20}"
    return f"{min(values):6.2f}{statistics.median(values):7.2f}{max(values):7.2f}"


def report(pairs: list[Pair]) -> None:
    base = pairs[0]
    quorum = "quorum device" if base.lab is not None and base.lab.qdevice else "two_node"
    print(f"\nCorosync token/consensus pairs, two-node lab (knet, two links, {quorum}), each "
          "soaked with no fault side by side, then power cuts (seconds since the cut: min "
          "median max)")
    head = (f"{'pair (ms)':<11}{'soak s':>7}{'load med/max':>13}{'memb':>5}{'lost':>5}"
            f"{'warn':>5}{'linkdn':>7}{'fence':>6}  {'peer declared lost':>20}"
            f"  {'fence confirmed':>20}{'ratio':>7}  verdict")
    print(head)
    print("-" * len(head))
    for pair in pairs:
        s, load = pair.soak, pair.soak.get("load") or {}
        lost = series(pair, "peer declared lost")
        b = series(base, "peer declared lost")
        ratio = f"{statistics.median(lost) / statistics.median(b):7.2f}" if lost and b else \
            f"{'-':>7}"
        loads = f"{load.get('median', 0):5.1f}/{load.get('max', 0):4.1f}" if load else "-"
        print(f"{pair.label:<11}{s.get('seconds', 0):7.0f}{loads:>13}"
              f"{s.get('memberships', '-'):>5}{s.get('tokens_lost', '-'):>5}"
              f"{s.get('token_warnings', '-'):>5}{s.get('link_downs', '-'):>7}"
              f"{s.get('fences', '-'):>6}  {fmt(lost)}  {fmt(series(pair, 'fence confirmed'))}"
              f"{ratio}  {'clean' if pair.clean else 'FALSE MEMBERSHIP CHANGE'}"
              f"{'; nodes kept splitting' if 'unstable' in s else ''}")
    print("memb: memberships formed in the soak (both nodes' logs); lost: tokens lost; warn: "
          "token warnings (75 % of the token without one); linkdn: knet link downs; fence: "
          "fence operations; ratio: median detection / the first pair's")


def as_json(pairs: list[Pair], soak: float, runs: int) -> dict:
    base = series(pairs[0], "peer declared lost")
    out = []
    for pair in pairs:
        lost = series(pair, "peer declared lost")
        steps = {step: ({"min": min(v), "median": statistics.median(v), "max": max(v),
                         "n": len(v)} if (v := series(pair, step)) else None)
                 for step in STEPS}
        out.append({"token_ms": pair.token, "consensus_ms": pair.consensus,
                    "runtime": pair.runtime, "soak": pair.soak, "clean": pair.clean,
                    "steps": steps, "runs": pair.runs,
                    "ratio_detection": (statistics.median(lost) / statistics.median(base)
                                        if lost and base else None)})
    return {"soak_min_s": soak, "runs": runs, "baseline": pairs[0].label,
            "quorum": "qdevice" if pairs and pairs[0].lab and pairs[0].lab.qdevice else "two_node",
            "pairs": out}


def run_all(pairs: list[Pair], soak: float, runs: int, say, qdevice: bool = False) -> None:
    with LoadSampler() as loads:
        try:
            for pair in pairs:
                bring_up(pair, say, qdevice)
            started = max(p.soak_start for p in pairs)
            while time.time() < started + soak:
                time.sleep(5)
            say(f"soak of {soak:.0f}s done")
            for pair in pairs:
                end_soak(pair, loads)
                say(f"{pair.label}: soak {pair.soak}")
                cut_all(pair, runs, say)
                pair.lab.down()
        finally:
            for pair in pairs:
                if pair.lab is not None:
                    pair.lab.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=DEFAULT_PAIRS,
                        help=f"token/consensus in ms, comma-separated (default {DEFAULT_PAIRS})")
    parser.add_argument("--soak", type=float, default=300.0, help="seconds with no fault")
    parser.add_argument("--runs", type=int, default=3, help="power cuts per pair")
    parser.add_argument("--qdevice", action="store_true",
                        help="labs with a quorum device (corosync-qnetd on an arbiter) "
                             "instead of two_node")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    problems = missing_prerequisites("pacemaker", qdevice=args.qdevice)
    if os.geteuid() != 0 or problems or not os.path.exists("/usr/sbin/fence_bmc"):
        print("bench_token: needs root, the lab and /usr/sbin/fence_bmc: " + "; ".join(problems),
              file=sys.stderr)
        return 2
    pairs = parse_pairs(args.pairs)
    start = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {message}", flush=True,
              file=sys.stderr if args.json else sys.stdout)

    run_all(pairs, args.soak, args.runs, say, args.qdevice)
    if not args.json:
        report(pairs)
        return 0
    with contextlib.redirect_stdout(sys.stderr):
        report(pairs)
    print(json.dumps(as_json(pairs, args.soak, args.runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
