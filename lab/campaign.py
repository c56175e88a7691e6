"""``hapack lab campaign``: many random faults in a row on the demo's full stack.

    hapack lab campaign --manager pacemaker|hamon [--faults N] [--seed S] [--json]
                        [--keep-going] [--keep] [--kinds K,K...]

One lab (``hapack.lab.managers`` builds it exactly as the demo does, under
Pacemaker or hamon), one client committing rows through the VIP the whole
time (``hapack.lab.democlient``), then N faults from ``hapack.lab.faults``.
After each fault the campaign powers back on whatever is off (after the
fault's drawn wait; never while its BMC is unreachable), restarts a killed
cluster daemon as systemd would, and waits until the cluster has converged:
both nodes running and back in their roles, the full stack answering on the
VIP, stable for STABLE_S, or twice the fault kind's bound has passed.

Watched the whole time, not only at the end (``hapack.lab.invariants``):
both nodes' mount tables every 50 ms (``failover.MountSampler``); who
answers ARP for the VIP, from the client's LAN every 100 ms
(``lab/arpwatch.py``); every power-off the cluster made (the BMCs' power logs,
minus the campaign's own cuts) against every boot (fence loops); after every
fault, every acknowledged row read back through the VIP.

A violation stops the run (unless ``--keep-going``), keeps the lab and its
logs, and prints the seed and the fault sequence: ``--seed S --faults K``
replays it (the schedule of K faults is the first K of any longer one).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import failover, invariants
from .faults import KINDS, Fault, schedule
from .managers import MANAGERS, layer_pid, other

STABLE_S = 2.0         # converged means: still converged this much later
# How long past its bound a fault is still watched: a slow convergence is measured (and is
# a violation), not cut off at the bound; only one that never comes within this is "never".
PATIENCE = 2.0         # x the bound
ARP_INTERVAL = 0.1
PROBES = ("http", "app+db", "postgresql", "slapd", "activemq")

# Bound on convergence (seconds from the fault's start until both nodes are back in
# their roles with the full stack on the VIP), per fault kind: the largest time measured
# for the kind on this 2-core machine (both managers, docs/campaign.md) plus a margin of
# about half, and for freeze-long below the 25 s of finding 2 (a survivor that promoted
# nothing after the fence). docs/campaign.md explains each; they include the drawn waits
# (power back on, heal, BMC back). link-cut has no measurement yet.
BOUNDS: dict[str, float] = {
    "power-cut-active": 35, "power-cut-standby": 25, "crash-active": 30, "crash-standby": 30,
    "freeze-short": 10, "freeze-long": 24, "link-cut": 30, "split": 25, "bmc-out": 20,
    "bmc-out-crash": 35, "layer-kill": 20, "layer-kill-repeated": 40,
    "daemon-kill-active": 30, "daemon-kill-standby": 30, "switchover": 20, "double": 45,
}


# -- the client's record, read as it grows -------------------------------------------
class ClientLog:
    """The democlient's events, read incrementally (the file grows ~50 lines a second)."""

    def __init__(self, path: Path):
        self.path, self.pos = Path(path), 0
        self.acks: list[tuple[int, float]] = []
        self.doubts: list[dict] = []
        self.probes: dict[str, list[tuple[float, bool, str]]] = {}

    def poll(self) -> "ClientLog":
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.pos)
                data = handle.read()
        except FileNotFoundError:
            return self
        end = data.rfind(b"\n") + 1
        self.pos += end
        for line in data[:end].decode(errors="replace").splitlines():
            self._take(json.loads(line))
        return self

    def _take(self, e: dict) -> None:
        if e.get("k") == "ack":
            self.acks.append((e["id"], e["t"]))
        elif e.get("k") == "doubt":
            self.doubts.append(e)
        elif e.get("k") == "probe":
            self.probes.setdefault(e["name"], []).append((e["t"], e["ok"], e.get("why", "")))

    def all_up(self, names=PROBES) -> bool:
        return all(self.probes.get(n) and self.probes[n][-1][1] for n in names)

    def stack_back(self, t0: float, names=PROBES) -> float | None:
        """Seconds from ``t0`` until every probe answered again (0 if none failed since
        ``t0``); None while one is still down."""
        if not self.all_up(names):
            return None
        back = t0
        for name in names:
            changes = [(t, ok) for t, ok, _ in self.probes[name] if t >= t0]
            if any(not ok for _, ok in changes):
                back = max(back, changes[-1][0])
        return back - t0

    def acked_between(self, start: float, end: float) -> list[int]:
        return [i for i, t in self.acks if start <= t < end]


class ArpWatch:
    """lab/arpwatch.py in the client's namespace; its replies read incrementally."""

    def __init__(self, lab, vip: str):
        self.out = lab.dir / "arpwatch.jsonl"
        self.out.write_text("")
        argv = lab._client_nsenter() + [sys.executable, "-I", "-S",
                                        str(Path(__file__).with_name("arpwatch.py")), vip,
                                        lab.client_addr, str(ARP_INTERVAL), str(self.out)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(lab.dir / "arpwatch.err", "ab"),
                                     start_new_session=True)
        self.log = ClientLog(self.out)   # same incremental reading
        self.replies: list[tuple[int, float, str]] = []

    def poll(self) -> list[tuple[int, float, str]]:
        before = self.log.pos
        try:
            with open(self.out, "rb") as handle:
                handle.seek(before)
                data = handle.read()
        except FileNotFoundError:
            return self.replies
        end = data.rfind(b"\n") + 1
        self.log.pos += end
        for line in data[:end].decode().splitlines():
            e = json.loads(line)
            if "seq" in e:
                self.replies.append((e["seq"], e["t"], e["mac"]))
        return self.replies

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# -- one fault's record ------------------------------------------------------------
@dataclass
class Outcome:
    index: int
    kind: str
    params: dict
    wall: float
    targets: dict = field(default_factory=dict)
    actions: list = field(default_factory=list)
    converged_s: float | None = None
    stack_s: float | None = None
    end: float | None = None
    rows_acked: int = 0
    rows_lost: int = 0
    double_mounts: int = 0
    double_vips: int = 0
    fences: list = field(default_factory=list)
    refenced: int = 0

    def as_json(self) -> dict:
        return dict(self.__dict__)


class Campaign:
    def __init__(self, manager: str, faults: int, seed: int, *, keep_going: bool = False,
                 kinds: tuple[str, ...] | None = None, say=print, bounds: dict | None = None):
        self.manager = MANAGERS[manager]()
        self.kinds = kinds
        self.plan = schedule(seed, faults, kinds)
        self.seed, self.keep_going, self.say = seed, keep_going, say
        self.bounds = dict(BOUNDS, **(bounds or {}))
        self.broken = ""          # why the lab could not be repaired (ends a --keep-going run)
        self.outcomes: list[Outcome] = []
        self.violations: list[invariants.Violation] = []
        self.injections: list[float] = []     # wall times of everything the campaign did
        self.own_cuts: list[tuple[str, float, float]] = []
        self.off_since: dict[str, float] = {}
        self.rejoins: list[tuple[str, float]] = []   # (node, back in its role) after a reboot
        self.fault: Fault | None = None
        self.t_start = time.time()

    # -- plumbing ------------------------------------------------------------------
    @property
    def lab(self):
        return self.manager.lab

    def log(self, message: str) -> None:
        self.say(f"[{time.time() - self.t_start:7.1f}s] {message}")

    def act(self, what: str, fault: bool = True) -> None:
        """Record something the campaign did; ``fault``: it is part of a fault (an
        injection), not of the recovery (powering back on, restarting a daemon)."""
        now = time.time()
        if fault:
            self.injections.append(now)
        if self.outcomes:
            self.outcomes[-1].actions.append((round(now - self.outcomes[-1].wall, 2), what))

    def power(self, node: str, action: str) -> None:
        before = time.time()
        self.lab.power(node, action)
        self.own_cuts.append((node, before, time.time()))
        self.act(f"power {action} {node}", fault=action != "on")

    def tick(self) -> None:
        """Power back on what is off, once its wait is over and its BMC answers."""
        wait = (self.fault.params.get("power_on_wait", 1.0) if self.fault else 1.0)
        now = time.time()
        for node in self.lab.nodes:
            if self.lab.power_state(node).get("on"):
                self.off_since.pop(node, None)
                continue
            since = self.off_since.setdefault(node, now)
            if now - since >= wait and node not in self.lab.state.get("bmc_unreachable", []):
                self.power(node, "on")
                self.off_since.pop(node, None)

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self.tick()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    # -- life --------------------------------------------------------------------
    def run(self) -> dict:
        self.log(f"building the lab and the demo's full stack under {self.manager.name}")
        demo = self.manager.build()
        lab = self.lab
        self.log(f"lab {lab.name} up: VIP {demo.vip}; starting the client and the samplers")
        self.client = failover.Client(lab, demo.client_config(table="campaign_rows"), tag="campaign")
        self.sampler = failover.MountSampler(lab, demo.data_dir)
        self.clog = ClientLog(self.client.out)
        self.macs = {lab.plan.node_mac(n, "lan"): n for n in lab.nodes}
        self.client.start()
        self.sampler.start()
        self.arp = ArpWatch(lab, demo.vip)
        stopped = False
        try:
            self._wait_stack(120)
            for fault in self.plan:
                self.one(fault)
                if self.broken or (self.violations and not self.keep_going):
                    stopped = True
                    break
            return self.finish(stopped)
        finally:
            self.client.stop()
            self.sampler.stop()
            self.arp.stop()

    def _wait_stack(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.clog.poll().all_up():
            if time.monotonic() > deadline:
                raise RuntimeError("the full stack does not answer on the VIP through the client")
            time.sleep(0.2)

    def one(self, fault: Fault) -> None:
        self.fault = fault
        active = self.manager.roles() or self.manager.holder() or self.lab.nodes[0]
        outcome = Outcome(fault.index, fault.kind, fault.params, time.time(),
                          targets={"active": active, "standby": other(self.lab, active)})
        self.outcomes.append(outcome)
        self.injections.append(outcome.wall)
        try:
            INJECT[fault.kind](self, fault, active, other(self.lab, active))
        except Exception as exc:  # noqa: BLE001 - a fault that could not be done is recorded
            self.act(f"could not inject: {type(exc).__name__}: {exc}")
        outcome.converged_s = self.converge(outcome)
        if fault.kind.startswith("layer-kill") and outcome.converged_s is not None:
            note = self.manager.clear_failures()
            if note:
                self.act(note, fault=False)
        self.close(outcome)

    def converge(self, outcome: Outcome) -> float | None:
        """Seconds from the fault's start until converged and stable; None if not within
        PATIENCE times the kind's bound (past the bound it is a violation all the same)."""
        deadline = outcome.wall + self.bounds[outcome.kind] * PATIENCE
        since = None
        while time.time() < deadline:
            self.tick()
            ok = (all(self.lab.running(n) for n in self.lab.nodes)
                  and self.clog.poll().all_up() and self.manager.roles() is not None)
            if not ok:
                since = None
            elif since is None:
                since = time.time()
            elif time.time() - since >= STABLE_S:
                return since - outcome.wall
            time.sleep(0.3)
        return None

    def close(self, o: Outcome) -> None:
        o.end = time.time()
        o.stack_s = self.clog.poll().stack_back(o.wall)
        acked = self.clog.acked_between(o.wall, o.end)
        o.rows_acked = len(acked)
        present = self.present()
        lost = [] if present is None else invariants.lost_rows([i for i, _ in self.clog.acks], present)
        o.rows_lost = 0 if present is None else len(invariants.lost_rows(acked, present))
        if present is None:
            self.act("rows not verified now (the database does not answer): checked at the end",
                     fault=False)
        window = [s for s in self.sampler.samples if o.wall <= s[0] < o.end]
        mounts = invariants.double_mounts(window)
        vips = invariants.double_vips([r for r in self.arp.poll() if o.wall <= r[1] < o.end],
                                      self.macs)
        o.double_mounts, o.double_vips = len(mounts), len(vips)
        fences = [(n, t) for n, t in self.fences() if o.wall <= t < o.end]
        o.fences = [(n, round(t - o.wall, 2)) for n, t in fences]
        booted = [(n, t) for n, t in self.boots() if o.wall <= t < o.end]
        o.refenced = sum(1 for n, t in fences if any(b == n and o.wall <= bt < t for b, bt in booted))
        if o.converged_s is not None:   # a node rebooted by this fault is back in its role now
            self.rejoins += [(n, o.wall + o.converged_s) for n in {b for b, _ in booted}]
        found = mounts + vips
        if lost:
            found.append(invariants.Violation("acknowledged rows lost", o.end,
                                              f"{len(lost)} rows, first {lost[:5]}"))
        found += [v for v in invariants.fence_loops(self.fences(), self.rejoins, self.injections)
                  if v not in self.violations]
        found += invariants.late([o.as_json()], self.bounds)
        self.violations += found
        self.progress(o, found)
        if o.converged_s is None and self.keep_going:
            self.act("repair: the lab put back in shape")
            try:
                self.manager.repair()
            except Exception as exc:  # noqa: BLE001 - the run ends with its report, not a traceback
                self.broken = f"{type(exc).__name__}: {exc}"[:2000]
                self.violations.append(invariants.Violation(
                    "the lab could not be put back in shape", time.time(), self.broken))

    def present(self, timeout: float = 90.0) -> set[int] | None:
        """Every row id in the table, read through the VIP; None if the database does
        not answer within ``timeout`` (powering nodes back on meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.client.present()
            except Exception:  # noqa: BLE001 - an outage is not a loss: ask again
                if time.monotonic() > deadline:
                    return None
            self.sleep(1.0)

    def fences(self) -> list[tuple[str, float]]:
        """Every power-off through a BMC that the campaign did not make itself."""
        found = []
        for node in self.lab.nodes:
            for e in self.lab.power_log(node):
                if e.command != "set power 0":
                    continue
                if any(n == node and a - 0.05 <= e.wall <= b + 0.05 for n, a, b in self.own_cuts):
                    continue
                found.append((node, e.wall))
        return found

    def boots(self) -> list[tuple[str, float]]:
        return [(n, s.wall) for n in self.lab.nodes for s in self.lab.boot_stages(n) if s.name == "up"]

    def progress(self, o: Outcome, found: list) -> None:
        who = ", ".join(f"{k} {v}" for k, v in o.targets.items())
        took = f"converged in {o.converged_s:.1f}s" if o.converged_s is not None else "NOT CONVERGED"
        stack = f"full stack {o.stack_s:.1f}s" if o.stack_s is not None else "stack down"
        fenced = ", ".join(f"{n}@{t:+.1f}s" for n, t in o.fences) or "none"
        fenced += f" ({o.refenced} after it had booted again)" if o.refenced else ""
        self.log(f"{Fault(o.index, o.kind, o.params).describe()} [{who}]: {took}, {stack}, "
                 f"rows +{o.rows_acked} lost {o.rows_lost}, fenced {fenced}"
                 + "".join(f"\n    VIOLATION {v.invariant}: {v.detail}" for v in found))

    # -- the end -----------------------------------------------------------------
    def finish(self, stopped: bool) -> dict:
        present = self.present(180.0)
        if present is None:   # unknown is not absent: no row is called lost unread
            self.violations.append(invariants.Violation(
                "rows not verifiable", time.time(), "the database did not answer for 180s"))
        starts = [o.wall for o in self.outcomes]
        report = {
            "manager": self.manager.name, "seed": self.seed, "faults_planned": len(self.plan),
            "faults_run": len(self.outcomes), "stopped_on_violation": stopped,
            "lab": self.lab.name, "lab_dir": str(self.lab.dir),
            "sequence": [f.as_json() for f in self.plan[:len(self.outcomes)]],
            "outcomes": [o.as_json() for o in self.outcomes],
            "rows": {"acknowledged": len(self.clog.acks), "verified": present is not None,
                     "lost": invariants.lost_rows([i for i, _ in self.clog.acks], present or set())
                     if present is not None else [],
                     "in_doubt": len(self.clog.doubts)},
            "doubts": {str(k): v for k, v in
                       invariants.explain_doubts(self.clog.doubts, present or set(), starts).items()},
            "mount_samples": len(self.sampler.samples), "arp_replies": len(self.arp.poll()),
            "violations": [v.as_json() for v in self.violations],
            "table": table(self.outcomes), "bounds": self.bounds,
            "replay": f"hapack lab campaign --manager {self.manager.name} --seed {self.seed} "
                      f"--faults {len(self.outcomes)}"
                      + (f" --kinds {','.join(self.kinds)}" if self.kinds else ""),
            "seconds": round(time.time() - self.t_start, 1),
        }
        report["ok"] = not self.violations and not report["rows"]["lost"]
        return report


# -- the faults ------------------------------------------------------------------------
def _role(fault: Fault, active: str, standby: str) -> str:
    return active if fault.params.get("role", "active") == "active" else standby


def inject_power_cut(c: Campaign, f: Fault, active: str, standby: str) -> None:
    c.power(active if f.kind.endswith("active") else standby, "off")


def inject_crash(c: Campaign, f: Fault, active: str, standby: str) -> None:
    c.act("crash")
    c.lab.crash(active if f.kind.endswith("active") else standby)


def freeze_for(c: Campaign, node: str, seconds: float) -> None:
    c.act(f"freeze {node} {seconds:.2f}s")
    c.lab.freeze(node)
    c.sleep(seconds)
    if c.lab.running(node) and c.lab.frozen(node):
        c.lab.thaw(node)
        c.act(f"thaw {node}")


def inject_freeze(c: Campaign, f: Fault, active: str, standby: str) -> None:
    node = _role(f, active, standby)
    seconds = f.params["fraction"] * c.manager.detect_s if f.kind == "freeze-short" \
        else f.params["seconds"]
    freeze_for(c, node, seconds)


def cut_for(c: Campaign, node: str, links: tuple[str, ...], seconds: float) -> None:
    for link in links:
        c.lab.cut_link(node, link)
    c.act(f"cut {'+'.join(links)} of {node}")
    c.sleep(seconds)
    for link in links:
        c.lab.heal_link(node, link)
    c.act(f"healed {'+'.join(links)} of {node}")


def inject_link_cut(c: Campaign, f: Fault, active: str, standby: str) -> None:
    cut_for(c, _role(f, active, standby), (f.params["link"],), f.params["heal_after"])


def inject_split(c: Campaign, f: Fault, active: str, standby: str) -> None:
    cut_for(c, _role(f, active, standby), ("lan", "hb"), f.params["heal_after"])


def bmc_out_for(c: Campaign, node: str, seconds: float, crash: bool) -> None:
    c.lab.bmc_unreachable(node)
    c.act(f"BMC of {node} unreachable")
    if crash:
        c.lab.crash(node)
        c.act(f"crash {node}")
    c.sleep(seconds)
    c.lab.bmc_reachable(node)
    c.act(f"BMC of {node} back")


def inject_bmc_out(c: Campaign, f: Fault, active: str, standby: str) -> None:
    bmc_out_for(c, _role(f, active, standby), f.params["back_after"], crash=False)


def inject_bmc_out_crash(c: Campaign, f: Fault, active: str, standby: str) -> None:
    bmc_out_for(c, active, f.params["back_after"], crash=True)


def kill_layer(c: Campaign, node: str, layer: str, wait: float = 0.0) -> int | None:
    """Kill ``layer``'s main process on ``node``, waiting up to ``wait`` s for it to run."""
    deadline = time.monotonic() + wait
    while True:
        pid = layer_pid(c.lab, node, layer, c.manager.demo.data_dir)
        if pid is not None:
            c.lab.kill_process(node, pid)
            c.act(f"killed {layer} (pid {pid}) on {node}")
            return pid
        if time.monotonic() >= deadline:
            c.act(f"{layer} not running on {node}: nothing to kill")
            return None
        c.sleep(0.2)


def inject_layer_kill(c: Campaign, f: Fault, active: str, standby: str) -> None:
    kill_layer(c, active, f.params["layer"])


def inject_layer_kill_repeated(c: Campaign, f: Fault, active: str, standby: str) -> None:
    layer, last = f.params["layer"], None
    for _ in range(f.params["times"]):
        node = _holder_of(c, layer, last, timeout=45)
        if node is None:
            return
        last = (node, kill_layer(c, node, layer))


def _holder_of(c: Campaign, layer: str, last, timeout: float) -> str | None:
    """The node where ``layer`` runs again (another pid than ``last``), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in c.lab.nodes:
            if not c.lab.running(node) or c.lab.frozen(node):
                continue
            pid = layer_pid(c.lab, node, layer, c.manager.demo.data_dir)
            if pid is not None and (node, pid) != last and c.clog.poll().all_up((layer,)):
                return node
        c.sleep(0.3)
    c.act(f"{layer} did not run again within {timeout:.0f}s")
    return None


def inject_daemon_kill(c: Campaign, f: Fault, active: str, standby: str) -> None:
    node = active if f.kind.endswith("active") else standby
    daemon = c.manager.kill_daemon(node, f.params["daemon"])
    c.act(f"killed {daemon} on {node}")
    c.sleep(f.params["restart_after"])
    note = c.manager.supervise(node)
    if note:
        c.act(note, fault=False)


def inject_switchover(c: Campaign, f: Fault, active: str, standby: str) -> None:
    # a planned switchover as an operator does it: old failures cleared first (a node
    # with recent failures of the stateful side, e.g. its VIP's during a link cut, is
    # not offered the stack: hamon keeps it, Pacemaker would stop it)
    note = c.manager.clear_failures()
    if note:
        c.act(note, fault=False)
    c.act(f"switchover {active} -> {standby}")
    c.manager.switchover(active)


def inject_double(c: Campaign, f: Fault, active: str, standby: str) -> None:
    p = f.params
    first = p["first"]
    if first == "freeze-long":
        c.lab.freeze(active)
        c.act(f"freeze {active} {p['seconds']:.2f}s")
    elif first == "crash-active":
        c.lab.crash(active)
        c.act(f"crash {active}")
    else:
        c.power(active, "off")
    c.sleep(p["delay"])
    SECONDS[p["second"]](c, f, active, standby)
    if first == "freeze-long":
        c.sleep(max(0.0, p["seconds"] - p["delay"]))
        if c.lab.running(active) and c.lab.frozen(active):
            c.lab.thaw(active)
            c.act(f"thaw {active}")


def _victim_back_early(c: Campaign, f: Fault, victim: str, survivor: str) -> None:
    deadline = time.monotonic() + 10
    while c.lab.power_state(victim).get("on") and time.monotonic() < deadline:
        time.sleep(0.05)
    if not c.lab.power_state(victim).get("on"):
        c.power(victim, "on")


SECONDS = {
    "layer-kill": lambda c, f, v, s: kill_layer(c, s, f.params["layer"], wait=8.0),
    "freeze-short": lambda c, f, v, s: freeze_for(c, s, f.params["fraction"] * c.manager.detect_s),
    "power-cut-survivor": lambda c, f, v, s: c.power(s, "off"),
    "link-cut-hb": lambda c, f, v, s: cut_for(c, s, ("hb",), 3.0),
    "victim-back-early": _victim_back_early,
}

INJECT = {
    "power-cut-active": inject_power_cut, "power-cut-standby": inject_power_cut,
    "crash-active": inject_crash, "crash-standby": inject_crash,
    "freeze-short": inject_freeze, "freeze-long": inject_freeze,
    "link-cut": inject_link_cut, "split": inject_split,
    "bmc-out": inject_bmc_out, "bmc-out-crash": inject_bmc_out_crash,
    "layer-kill": inject_layer_kill, "layer-kill-repeated": inject_layer_kill_repeated,
    "daemon-kill-active": inject_daemon_kill, "daemon-kill-standby": inject_daemon_kill,
    "switchover": inject_switchover, "double": inject_double,
}
assert set(INJECT) == set(KINDS)


# -- the table -------------------------------------------------------------------------
def table(outcomes: list[Outcome]) -> list[dict]:
    """One row per fault kind: count, recovered, median/max time to the full stack and
    to convergence, rows acknowledged/lost, double mounts, double VIPs, fences."""
    rows = []
    for kind in KINDS:
        mine = [o for o in outcomes if o.kind == kind]
        if not mine:
            continue
        stack = [o.stack_s for o in mine if o.stack_s is not None]
        conv = [o.converged_s for o in mine if o.converged_s is not None]
        rows.append({
            "kind": kind, "count": len(mine), "recovered": len(conv),
            "stack_median": _median(stack), "stack_max": max(stack, default=None),
            "converged_median": _median(conv), "converged_max": max(conv, default=None),
            "rows_acked": sum(o.rows_acked for o in mine), "rows_lost": sum(o.rows_lost for o in mine),
            "double_mounts": sum(o.double_mounts for o in mine),
            "double_vips": sum(o.double_vips for o in mine),
            "fences": sum(len(o.fences) for o in mine),
            "refenced": sum(o.refenced for o in mine)})
    return rows


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _num(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(report: dict) -> str:
    head = (f"{'fault kind':<20} {'n':>3} {'ok':>3} {'stack med':>9} {'max':>6} "
            f"{'conv med':>8} {'max':>6} {'acked':>6} {'lost':>4} {'2mnt':>4} {'2vip':>4} {'fences':>6} "
            f"{'refenced':>8}")
    lines = [f"Campaign under {report['manager']}, seed {report['seed']}: "
             f"{report['faults_run']} of {report['faults_planned']} faults, {report['seconds']}s",
             head, "-" * len(head)]
    for r in report["table"]:
        lines.append(f"{r['kind']:<20} {r['count']:>3} {r['recovered']:>3} "
                     f"{_num(r['stack_median']):>9} {_num(r['stack_max']):>6} "
                     f"{_num(r['converged_median']):>8} {_num(r['converged_max']):>6} "
                     f"{r['rows_acked']:>6} {r['rows_lost']:>4} {r['double_mounts']:>4} "
                     f"{r['double_vips']:>4} {r['fences']:>6} {r['refenced']:>8}")
    rows = report["rows"]
    lost = f"{len(rows['lost'])} lost" if rows["verified"] else "NOT VERIFIED (no answer)"
    lines.append(f"rows: {rows['acknowledged']} acknowledged, {lost}, {rows['in_doubt']} in doubt")
    for window, d in sorted(report["doubts"].items(), key=lambda kv: _window_key(kv[0])):
        where = "before the first fault" if window == "None" else \
            f"fault #{int(window) + 1} {report['outcomes'][int(window)]['kind']}"
        why = ", ".join(f"{k} x{n}" for k, n in d["why"].items())
        lines.append(f"  in doubt {where}: {d['rows']} ({d['committed']} committed, "
                     f"{d['not_committed']} not): {why}")
    lines.append(f"samples: {report['mount_samples']} of both mount tables, "
                 f"{report['arp_replies']} ARP replies for the VIP")
    for v in report["violations"]:
        lines.append(f"VIOLATION {v['invariant']}: {v['detail']}")
    if report["violations"]:
        lines.append(f"lab {report['lab']} kept ({report['lab_dir']}); replay: {report['replay']}")
        lines.append("sequence: " + "; ".join(Fault(**f).describe() for f in report["sequence"]))
    lines.append("RESULT: " + ("OK" if report["ok"] else "VIOLATIONS"))
    return "\n".join(lines)


def _window_key(key: str) -> int:
    return -1 if key == "None" else int(key)


def keep_or_remove(run: Campaign, report: dict | None, say, keep: bool = False) -> None:
    """A clean run's lab goes; a run with violations (or that broke) keeps its lab and
    copies every log into ``<lab>/logs``."""
    lab = run.lab
    if lab is None or not lab.state:
        return
    if report is not None and report["ok"] and not keep:
        lab.down()
        return
    dest = lab.collect_logs(lab.dir / "logs")
    lab.state["owner"] = None   # stays until 'hapack lab down --name NAME'
    lab._save()
    say(f"lab {lab.name} kept, logs in {dest}; remove it with 'hapack lab down --name {lab.name}'")
