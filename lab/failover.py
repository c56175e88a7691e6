"""Measuring a failover of the example stack: who holds what, and when.

* :class:`Client`: the demo client (``hapack.lab.democlient``) in the lab's
  client namespace: rows committed through the VIP and per-layer probes.
* :class:`MountSampler`: both nodes' mount tables every 50 ms (read from
  ``/proc``, so a frozen node is seen too); ``overlaps`` lists the samples
  where the partition was mounted on two nodes at once.
* :func:`timeline`: the steps of one failover on the host's wall clock (the
  nodes share the host's kernel clock): power cut, peer declared lost
  (survivor's corosync log), fence confirmed (survivor's pacemaker log),
  partition promoted and mounted (pacemaker log, mount samples), each
  stateful layer healthy and the full chain answering on the VIP (client
  probes).
* :func:`holders`, :func:`resources`: the cluster's view (crm_mon XML).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from lxml import etree

from .core import Lab, LabError, NodeCommandError, NodeDown, NodeFrozen

SAMPLE_S = 0.05


# -- the client ---------------------------------------------------------------------
class Client:
    """The demo client in the client namespace; events in ``<lab>/client-<n>.jsonl``."""

    def __init__(self, lab: Lab, config: dict, tag: str = "client"):
        self.lab = lab
        self.config_file = lab.dir / f"{tag}.json"
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle)
        self.out = lab.dir / f"{tag}.jsonl"
        self.out.write_text("")
        self.proc: subprocess.Popen | None = None

    def _argv(self, *args) -> list[str]:
        return self.lab._client_nsenter() + [sys.executable, "-m", "hapack.lab.democlient", *args]

    def start(self, *probe: str) -> "Client":
        """The writer and every probe; ``start("postgresql", "0.02")``: that probe alone,
        every 20 ms (``democlient probe``)."""
        command = ("probe", str(self.config_file), str(self.out), *probe) if probe else \
            ("run", str(self.config_file), str(self.out))
        self.proc = subprocess.Popen(self._argv(*command),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.lab.dir / "client.err", "ab"),
                                     start_new_session=True)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> "Client":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def events(self) -> list[dict]:
        lines = self.out.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def acked(self) -> list[int]:
        return [e["id"] for e in self.events() if e["k"] == "ack"]

    def probe_ok_since(self, name: str, wall: float) -> float | None:
        """The start of the first successful ``name`` probe after ``wall`` that stayed up."""
        found = None
        for event in self.events():
            if event["k"] == "probe" and event["name"] == name and event["t"] >= wall:
                found = event["t"] if event["ok"] else None
        return found

    def first_answer(self, name: str, wall: float) -> float | None:
        """When the first ``name`` probe that began at or after ``wall`` was answered."""
        return first_answer(self.events(), name, wall)

    def probe_state(self, name: str) -> bool | None:
        state = None
        for event in self.events():
            if event["k"] == "probe" and event["name"] == name:
                state = event["ok"]
        return state

    def wait_probes(self, names, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.probe_state(n) for n in names):
            if time.monotonic() > deadline:
                down = [n for n in names if not self.probe_state(n)]
                raise LabError(f"client: {', '.join(down)} not answering on the VIP after {timeout:.0f}s")
            time.sleep(0.1)

    def wait_acks(self, more: int = 5, timeout: float = 60.0) -> int:
        """Wait until ``more`` further rows are acknowledged; the count."""
        target = len(self.acked()) + more
        deadline = time.monotonic() + timeout
        while len(self.acked()) < target:
            if time.monotonic() > deadline:
                raise LabError(f"client: no rows acknowledged for {timeout:.0f}s")
            time.sleep(0.1)
        return len(self.acked())

    def present(self) -> set[int]:
        """Every row id in the table, read through the VIP."""
        out = self.lab.client_exec(self._argv("verify", str(self.config_file))[len(self.lab._client_nsenter()):],
                                   timeout=60).stdout
        return set(json.loads(out)["rows"])

    def lost(self) -> list[int]:
        """Acknowledged rows missing from the table (must be [])."""
        present = self.present()
        return [i for i in self.acked() if i not in present]


def first_answer(events: list[dict], name: str, wall: float) -> float | None:
    """The wall clock at which the first successful ``name`` probe begun at or after
    ``wall`` was answered (its ``done``; ``t``, its start, for a client that did not
    record it), or None. The client logs a probe's changes only, so a success after
    ``wall`` is the first answer after a failure (the outage)."""
    for event in events:
        if event.get("k") == "probe" and event.get("name") == name and event.get("ok") \
                and event["t"] >= wall:
            return event.get("done", event["t"])
    return None


# -- mounts ---------------------------------------------------------------------------
class MountSampler:
    """Samples which nodes have ``directory`` mounted, every 50 ms, in a thread."""

    def __init__(self, lab: Lab, directory: str):
        self.lab, self.directory = lab, directory
        self.samples: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mount-sampler", daemon=True)

    def holders(self) -> frozenset[str]:
        return frozenset(n for n in self.lab.nodes if self._mounted(n))

    def _mounted(self, node: str) -> bool:
        try:
            return any(m.target == self.directory for m in self.lab.mounts(node))
        except OSError:  # the node's init is dying right now: its mounts go with it
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.holders()))
            self._stop.wait(SAMPLE_S)

    def start(self) -> "MountSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MountSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def overlaps(self) -> list[tuple[float, frozenset[str]]]:
        return [s for s in self.samples if len(s[1]) > 1]

    def first(self, node: str, after: float) -> float | None:
        return next((t for t, held in self.samples if t >= after and node in held), None)

    def nowhere_until(self, after: float) -> float | None:
        """The first time after ``after`` that any node had it mounted."""
        return next((t for t, held in self.samples if t >= after and held), None)


# -- the cluster's view ---------------------------------------------------------------
def crm_xml(lab: Lab, node: str):
    out = lab.exec(node, ["crm_mon", "-1", "--output-as=xml"], timeout=30, check=False).stdout
    return etree.fromstring(out.encode()) if out.strip().startswith("<") else None


def resources(lab: Lab, node: str) -> dict[str, list[str]]:
    """resource id (clone instances merged, promoted as '<id>:Promoted') -> active nodes."""
    doc = crm_xml(lab, node)
    found: dict[str, list[str]] = {}
    if doc is None:
        return found
    for rsc in doc.iterfind(".//resources//resource"):
        if rsc.get("active") != "true" or rsc.get("failed") == "true":
            continue
        rid = rsc.get("id") + (":Promoted" if rsc.get("role") == "Promoted" else "")
        found.setdefault(rid, []).extend(n.get("name") for n in rsc.iterfind("node"))
    return found


def failures(lab: Lab, node: str) -> list[str]:
    doc = crm_xml(lab, node)
    if doc is None:
        return []
    return [f"{f.get('op_key')} on {f.get('node')}: {f.get('exitreason') or f.get('exitstatus')}"
            for f in doc.iterfind("failures/failure")]


# The resources that make up "the stack is active on one node": the anchor (the
# promoted partition, or a plain Filesystem in the stock agents' topology), then the
# rest of the stateful side; and a stateless layer that must run there too.
STATEFUL = ("partition:Promoted", "vip", "postgresql", "slapd", "activemq")
STATELESS = "apache"


def active_node(lab: Lab, ask: str | None = None, stateful=STATEFUL) -> str | None:
    """The node holding the whole stateful side (one node) with the stateless layers
    running, as ``ask`` (or the first node that answers) sees it."""
    for node in ([ask] if ask else lab.nodes):
        try:
            view = resources(lab, node)
        except (NodeDown, NodeFrozen, NodeCommandError, subprocess.TimeoutExpired):
            continue
        anchor = view.get(stateful[0], [])
        if len(anchor) == 1 and all(view.get(r) == anchor for r in stateful) \
                and anchor[0] in view.get(STATELESS, []):
            return anchor[0]
    return None


def wait_active(lab: Lab, timeout: float = 120.0, node: str | None = None,
                stateful=STATEFUL) -> str:
    """Wait until one node (``node``, if given, as it sees itself) holds the stack."""
    deadline = time.monotonic() + timeout
    while True:
        active = active_node(lab, node, stateful)
        if active and active == (node or active):
            return active
        if time.monotonic() > deadline:
            view = {n: resources(lab, n) for n in lab.nodes if lab.running(n)}
            fails = [f for n in lab.nodes if lab.running(n) for f in failures(lab, n)]
            raise LabError(f"the stack is not active on one node after {timeout:.0f}s: {view} "
                           f"failures: {fails}")
        time.sleep(0.25)


# -- logs -------------------------------------------------------------------------------
_STAMP = re.compile(r"^([A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d\.\d+)")


def log_time(line: str) -> float | None:
    """Wall time of a corosync/pacemaker log line ('Nov 24 23:25:41.145', local time)."""
    match = _STAMP.match(line)
    if not match:
        return None
    now = datetime.now()
    stamp = datetime.strptime(f"{now.year} {match.group(1)}", "%Y %b %d %H:%M:%S.%f")
    if stamp > now.replace(microsecond=0) and (stamp - now).days > 180:
        stamp = stamp.replace(year=now.year - 1)
    return stamp.timestamp()


def first_line(path: Path, after: float, pattern: str) -> float | None:
    """The time of the first line after ``after`` that matches ``pattern``."""
    regex = re.compile(pattern)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        stamp = log_time(line)
        if stamp is not None and stamp >= after - 0.001 and regex.search(line):
            return stamp
    return None


def node_log(lab: Lab, node: str, name: str) -> Path:
    return lab.node_dir(node) / "var-log" / name


# -- the timeline ------------------------------------------------------------------------
@dataclass
class Step:
    name: str
    wall: float | None
    source: str

    def since(self, t0: float) -> float | None:
        return None if self.wall is None else self.wall - t0


@dataclass
class Timeline:
    fault: str
    victim: str
    survivor: str
    t0: float
    steps: list[Step] = field(default_factory=list)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def seconds(self, name: str) -> float | None:
        step = self.step(name)
        return None if step is None else step.since(self.t0)

    @property
    def total(self) -> float | None:
        return self.seconds("full chain on the VIP")

    def as_json(self) -> dict:
        return {"fault": self.fault, "victim": self.victim, "survivor": self.survivor,
                "t0": self.t0, "total_s": self.total,
                "steps": [{"step": s.name, "seconds": s.since(self.t0), "wall": s.wall,
                           "source": s.source} for s in self.steps]}


def timeline(lab: Lab, fault: str, victim: str, survivor: str, t0: float, client: Client,
             sampler: MountSampler, layers=("postgresql", "slapd", "activemq")) -> Timeline:
    """The failover's steps, read after the fact from the logs, samples and probes."""
    coro = node_log(lab, survivor, "cluster/corosync.log")
    pcmk = node_log(lab, survivor, "pacemaker/pacemaker.log")
    line = Timeline(fault, victim, survivor, t0)
    add = line.steps.append
    add(Step(fault, t0, "BMC power log" if "power" in fault else "host"))
    add(Step("peer declared lost", first_line(coro, t0, r"Members left: "), "corosync.log"))
    add(Step("fence requested", first_line(
        pcmk, t0, rf"pacemaker-fenced.*Requesting peer fencing \((off|reboot)\) targeting {victim}"),
        "pacemaker-fenced"))
    add(Step("fence confirmed", first_line(
        pcmk, t0, rf"pacemaker-fenced.*(Operation '(off|reboot)' .*targeting {victim}.*OK"
                  rf"|{victim} was successfully|successfully fenced)"), "pacemaker-fenced"))
    add(Step("partition promoted", first_line(
        pcmk, t0, rf"Result of (promote operation for partition|start operation for fs) "
                  rf"on {survivor}: ok"), "pacemaker.log"))
    add(Step("partition mounted", sampler.first(survivor, t0), "mount samples"))
    for layer in layers:
        add(Step(f"{layer} healthy", client.probe_ok_since(layer, t0), "client probe on the VIP"))
    add(Step("full chain on the VIP", client.probe_ok_since("http", t0),
             "client: apache -> tomcat -> app"))
    add(Step("app reaches the database", client.probe_ok_since("app+db", t0),
             "client: app page says db=up"))
    return line


def warm_chains(lab: Lab, url_path: str, port: int, timeout: float = 120.0) -> None:
    """Fetch the app page through each node's own HTTP server until it answers (the
    first request compiles the JSP: the standby must not pay that during a failover)."""
    deadline = time.monotonic() + timeout
    for node in lab.nodes:
        url = f"http://{lab.addr(node)}:{port}{url_path}"
        while lab.client_exec(["curl", "-sf", "-m", "10", "-o", "/dev/null", url],
                              check=False, timeout=20).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"{url} does not answer after {timeout:.0f}s")
            time.sleep(0.5)


def dc(lab: Lab, ask: str) -> str | None:
    """The current DC as ``ask`` sees it."""
    from .stack import parse_crm_mon
    out = lab.exec(ask, ["crm_mon", "-1", "--output-as=xml"], timeout=30, check=False).stdout
    return parse_crm_mon(out).dc if out.strip().startswith("<") else None


def power_cut(lab: Lab, node: str) -> float:
    """Cut ``node``'s power through its BMC; the wall time its BMC cut it (power log),
    or when ipmitool returned."""
    before = time.time()
    lab.power(node, "off")
    returned = time.time()
    cuts = [e.wall for e in lab.power_log(node) if e.command == "set power 0" and e.wall >= before]
    return cuts[0] if cuts else returned


def format_timeline(line: Timeline) -> str:
    rows = [f"  {'step':<28} {'t+ s':>7}  {'delta':>6}  source"]
    prev = line.t0
    for step in sorted(line.steps, key=lambda s: (s.wall is None, s.wall or 0)):
        at = step.since(line.t0)
        if at is None:
            rows.append(f"  {step.name:<28} {'-':>7}  {'':>6}  {step.source} (not seen)")
            continue
        rows.append(f"  {step.name:<28} {at:7.2f}  {step.wall - prev:+6.2f}  {step.source}")
        prev = max(prev, step.wall)
    total = line.total
    rows.append(f"  {'total':<28} {total:7.2f}" if total is not None else "  total: not reached")
    return "\n".join(rows)


# -- fencing and recovery ---------------------------------------------------------------
def fenced_since(lab: Lab, target: str, since: float) -> list[dict]:
    """Successful power-offs/reboots of ``target`` completed at or after ``since`` (wall
    time), from the fencers' logs on every node (``stonith_admin --history`` is no
    record: the history of a node can vanish once the node rejoins)."""
    pattern = re.compile(rf"pacemaker-fenced.*Operation '(off|reboot)' targeting {target} "
                         rf"by (\S+) for \S+: OK.*id=(\w+)")
    found: dict[str, dict] = {}
    for node in lab.nodes:
        try:
            text = node_log(lab, node, "pacemaker/pacemaker.log").read_text(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            match = pattern.search(line)
            stamp = log_time(line) if match else None
            if stamp is not None and stamp >= since:
                found[match.group(3)] = {"action": match.group(1), "origin": match.group(2),
                                         "wall": stamp}
    return sorted(found.values(), key=lambda e: e["wall"])


def running_node(lab: Lab) -> str:
    node = next((n for n in lab.nodes if lab.running(n) and not lab.frozen(n)), None)
    if node is None:
        raise LabError("no node is running")
    return node


def recover(lab: Lab, url_path: str, port: int, timeout: float = 180.0,
            stateful=STATEFUL) -> str:
    """Put the lab and the stack back in shape after a fault: every node powered on and
    online, failures cleaned up, the stack active on one node, both chains warm."""
    for _ in range(3):  # a fence still pending from the fault may power a node off again
        lab.restore()
        lab.exec(running_node(lab), ["crm_resource", "--cleanup"], timeout=60)
        active = wait_active(lab, timeout, stateful=stateful)
        if all(lab.running(n) for n in lab.nodes):
            break
    warm_chains(lab, url_path, port)
    return active
