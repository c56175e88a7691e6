"""The two cluster managers the campaign drives over the demo's full stack.

Both build the same stack (``hapack.lab.provision``: every layer, the
partition on the lab's shared disk, the VIP, fence_bmc against the lab's
BMCs) from the same stack file:

* :class:`PacemakerManager`: the stack file rendered to a CIB and loaded
  into Corosync + Pacemaker (exactly as ``hapack demo`` and the failover
  tests), with ``priority-fencing-delay`` on (production's setting: the
  holder wins a split); the agents are this checkout's, bound into the nodes
  at every boot (:func:`checkout_agents`).
* :class:`HamonManager`: the same stack file plus a ``[hamon]`` table, hamon
  started by every boot of every node (a lab boot service, as
  ``hamon.service`` would be), the agents staged by the hamon lab harness.

Each answers the campaign's questions (who is active, are both nodes back in
their roles) and performs the manager-specific parts of faults (a planned
switchover, killing and supervising the cluster daemon, the operator's
clean-up after a layer fault).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from . import failover, provision
from .core import Lab, LabError, NodeCommandError, NodeDown, NodeFrozen
from .hamonrig import HAMON, KEY_FILE, NODE_STATE, Rig
from .heartbeat import AGENT_PATHS, Agents
from .nodeinit import PACEMAKER_ENV
from .state import LAB_ROOT

FENCE_DELAY = "5s"       # Pacemaker's priority-fencing-delay in the campaign (production's)
TOKEN_MS = 1000
BOOT_DELAY = 1.0
DISK_MB = 400
QUIET = (NodeDown, NodeFrozen, NodeCommandError, LabError, OSError, ValueError)


def free_name(root: Path = LAB_ROOT) -> str:
    while True:
        name = "c" + secrets.token_hex(2)
        if not (root / name).exists():
            return name


def other(lab: Lab, node: str) -> str:
    return next(n for n in lab.nodes if n != node)


def pid_of(lab: Lab, node: str, name: str, needle: str = "") -> int | None:
    """The in-node pid of the one process named ``name`` (with ``needle`` in its
    command line), or None."""
    found = [p.pid for p in lab.processes(node) if p.name == name and needle in p.cmdline]
    return found[0] if len(found) == 1 else None


def layer_pid(lab: Lab, node: str, layer: str, data_dir: str) -> int | None:
    """The main process of a stateful layer on ``node``, or None if it does not run there."""
    try:
        if layer == "postgresql":
            text = lab.exec(node, ["cat", f"{data_dir}/postgresql/postmaster.pid"],
                            check=False, timeout=10).stdout
            pid = int(text.split()[0]) if text.strip() else None
            return pid if pid and any(p.pid == pid for p in lab.processes(node)) else None
        if layer == "slapd":
            return pid_of(lab, node, "slapd")
        return pid_of(lab, node, "java", "activemq")
    except QUIET:
        return None


def roles_from_view(view: dict[str, list[str]], nodes: tuple[str, ...]) -> str | None:
    """The active node if ``view`` (``failover.resources``) shows the stateful side on one
    node and both nodes in their roles (the stateless clone on both, the partition's
    unpromoted instance on the standby), else None."""
    anchor = view.get(failover.STATEFUL[0], [])
    if len(anchor) != 1 or not all(view.get(r) == anchor for r in failover.STATEFUL):
        return None
    active = anchor[0]
    standby = next(n for n in nodes if n != active)
    both = all(sorted(view.get(r, [])) == sorted(nodes) for r in ("apache", "tomcat"))
    return active if both and standby in view.get("partition", []) else None


def fencing_pending(crm_mon_xml: str) -> bool:
    """True if crm_mon's XML lists a fencing action still pending (or cannot be read)."""
    from lxml import etree
    try:
        doc = etree.fromstring(crm_mon_xml.encode())
    except etree.XMLSyntaxError:
        return True
    return any(e.get("status") == "pending" for e in doc.iterfind(".//fence_history/fence_event"))


def hamon_roles(statuses: dict[str, dict]) -> str | None:
    """The primary if one node is primary and the other secondary, both idle, every
    resource of the primary up and the stateless layers up on the secondary."""
    states = {node: st.get("state") for node, st in statuses.items()}
    primaries = [n for n, s in states.items() if s == "primary"]
    if len(primaries) != 1 or sorted(states.values()) != ["primary", "secondary"]:
        return None
    for node, st in statuses.items():
        if st.get("busy"):
            return None
        for r in st.get("resources", []):
            wanted = node in primaries or r.get("kind") == "stateless"
            if wanted and r.get("status") not in ("started", "promoted"):
                return None
    return primaries[0]


class PacemakerManager:
    name = "pacemaker"
    daemons = ("corosync", "pacemakerd")
    detect_s = TOKEN_MS / 1000.0    # a freeze under the token is not a failure

    def __init__(self) -> None:
        self.lab: Lab | None = None
        self.demo: provision.DemoStack | None = None

    def build(self) -> provision.DemoStack:
        self.lab = Lab(free_name(), stack="pacemaker", token_ms=TOKEN_MS, disk_mb=DISK_MB,
                       boot_delay=BOOT_DELAY)
        self.lab.up()
        checkout_agents(self.lab)
        self.demo = provision.provision(self.lab, priority_fencing_delay=FENCE_DELAY)
        failover.wait_active(self.lab, timeout=180)
        failover.warm_chains(self.lab, provision.HEALTH_PATH, provision.APACHE_PORT)
        return self.demo

    def _live(self) -> list[str]:
        return [n for n in self.lab.nodes if self.lab.running(n) and not self.lab.frozen(n)]

    def roles(self) -> str | None:
        """The active node if both nodes run, agree that both are in their roles, and
        neither has a fencing action pending (a fence held back by priority-fencing-delay
        would otherwise strike a cluster that looks converged)."""
        live = self._live()
        if len(live) != 2:
            return None
        found = set()
        for node in live:
            try:
                out = self.lab.exec(node, ["crm_mon", "-1", "--output-as=xml",
                                           "--include=fencing-pending"], timeout=30).stdout
            except QUIET:
                return None
            if fencing_pending(out):
                return None
            found.add(roles_from_view(failover.resources(self.lab, node), self.lab.nodes))
        return found.pop() if len(found) == 1 else None

    def holder(self) -> str | None:
        return failover.active_node(self.lab)

    def switchover(self, active: str, timeout: float = 90.0) -> None:
        run, peer = self.lab.exec, other(self.lab, active)
        attr = ["crm_attribute", "--node", active, "--name", "standby", "--lifetime", "forever"]
        run(peer, attr + ["--update", "on"])
        try:
            failover.wait_active(self.lab, timeout, node=peer)
        finally:
            run(peer, attr + ["--delete"], check=False)

    def kill_daemon(self, node: str, which: int) -> str:
        daemon = self.daemons[which % len(self.daemons)]
        self.lab.kill_process(node, daemon)
        return daemon

    def supervise(self, node: str) -> str | None:
        """What systemd does for pacemaker.service (Restart=on-failure): a dead pacemakerd
        is started again (it re-attaches to its running sub-daemons). corosync.service
        does not restart: a node whose corosync died is left to the peer's fence."""
        if not self.lab.running(node) or self.lab.frozen(node):
            return None
        names = {p.name for p in self.lab.processes(node)}
        if "corosync" in names and "pacemakerd" not in names:
            self.lab.spawn(node, ["pacemakerd"], name="pacemakerd-restart", env=PACEMAKER_ENV,
                           service=True)
            return f"pacemakerd started again on {node} (systemd's Restart=on-failure)"
        return None

    def clear_failures(self) -> str | None:
        node = next(iter(self._live()), None)
        if node is None:
            return None
        self.lab.exec(node, ["crm_resource", "--cleanup"], timeout=60, check=False)
        return "crm_resource --cleanup (the operator clears the fail counts)"

    def repair(self) -> None:
        failover.recover(self.lab, provision.HEALTH_PATH, provision.APACHE_PORT)


def checkout_agents(lab: Lab) -> Agents:
    """This checkout's agents in both nodes, now and after every boot (before Pacemaker
    starts): the campaign runs the code it belongs to, not the host's global install
    (whose wrappers may point at another venv). No resource is configured yet."""
    agents = Agents(lab)
    agents.bind()
    lab.add_boot_binds([(str(agents.staged(path)), path) for path in AGENT_PATHS])
    return agents


class CampaignRig(Rig):
    """The hamon lab harness over the demo's full stack (not the harness's small one)."""

    def __init__(self, lab: Lab, demo: provision.DemoStack):
        super().__init__(lab)
        self.demo = demo
        self.vip, self.data = demo.vip, demo.data_dir
        self.stack_file = stack_path(lab.name)

    def setup(self) -> "CampaignRig":
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self._install()
        self._keys()
        settings = {"key_file": KEY_FILE, "state_dir": NODE_STATE,
                    "ocf_root": str(self.root / "usr/lib/ocf"),
                    "fence_agent": str(self.root / "usr/sbin/fence_bmc")}
        table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        text = self.demo.stack_file.read_text() + f"\n[hamon]\n{table}"
        scratch = self.stack_file.with_suffix(".tmp")
        scratch.write_text(text)
        scratch.rename(self.stack_file)  # the boot service waits for this file
        return self


def stack_path(name: str, root: Path = LAB_ROOT) -> Path:
    return root / name / "shared" / "hamon" / "stack.toml"


def hamon_service(stack_file: Path) -> dict:
    """hamon as a boot service of every node: it waits for its stack file, then runs."""
    script = (f"while [ ! -s {stack_file} ]; do sleep 0.2; done; "
              f"exec {HAMON} run --config {stack_file}")
    return {"name": "hamon", "argv": ["sh", "-c", script]}


class HamonManager:
    name = "hamon"
    daemons = ("hamon",)
    detect_s = 1.0    # dead_time 1.2 s minus one interval (docs/hamon.md)

    def __init__(self) -> None:
        self.lab: Lab | None = None
        self.demo: provision.DemoStack | None = None
        self.rig: CampaignRig | None = None

    def build(self) -> provision.DemoStack:
        name = free_name()
        self.lab = Lab(name, stack="none", disk_mb=DISK_MB, boot_delay=BOOT_DELAY,
                       services=[hamon_service(stack_path(name))])
        self.lab.up()
        self.demo = provision.provision(self.lab, load=False)
        self.rig = CampaignRig(self.lab, self.demo).setup()
        deadline = time.monotonic() + 180
        while self.roles() is None:
            if time.monotonic() > deadline:
                raise LabError(f"hamon: the stack is not in its roles after 180s: {self._statuses()}")
            time.sleep(0.5)
        failover.warm_chains(self.lab, provision.HEALTH_PATH, provision.APACHE_PORT)
        return self.demo

    def _statuses(self) -> dict[str, dict]:
        found = {}
        for node in self.lab.nodes:
            if not self.lab.running(node) or self.lab.frozen(node):
                continue
            try:
                found[node] = self.rig.status(node)
            except Exception:  # noqa: BLE001 - a daemon not answering is "no status"
                continue
        return found

    def roles(self) -> str | None:
        statuses = self._statuses()
        return hamon_roles(statuses) if len(statuses) == 2 else None

    def holder(self) -> str | None:
        held = [n for n, st in self._statuses().items() if st.get("state") == "primary"]
        return held[0] if len(held) == 1 else None

    def switchover(self, active: str, timeout: float = 90.0) -> None:
        peer = other(self.lab, active)
        self.lab.exec(active, [HAMON, "standby", "on"], timeout=30)
        try:
            self.rig.wait_state(peer, "primary", timeout=timeout)
        finally:
            self.lab.exec(active, [HAMON, "standby", "off"], timeout=30, check=False)

    def kill_daemon(self, node: str, which: int) -> str:
        self.lab.kill_process(node, "hamon")
        return "hamon"

    def supervise(self, node: str) -> str | None:
        """What systemd does for hamon.service (Restart=on-failure)."""
        if not self.lab.running(node) or self.lab.frozen(node):
            return None
        if not any(p.name == "hamon" for p in self.lab.processes(node)):
            self.lab.spawn(node, [HAMON, "run", "--config", str(self.rig.stack_file)],
                           name="hamon-restart", service=True)
            return f"hamon started again on {node} (systemd's Restart=on-failure)"
        return None

    def clear_failures(self) -> str | None:
        """The operator clears the failures on both nodes (``hamon cleanup``), as
        ``crm_resource --cleanup`` does under Pacemaker: otherwise they count towards the
        next fault's migration_threshold for failure_timeout (10 min)."""
        done = [node for node in self.lab.nodes if self.lab.running(node)
                and not self.lab.frozen(node)
                and self.lab.exec(node, [HAMON, "cleanup"], timeout=30, check=False).returncode == 0]
        return f"hamon cleanup on {', '.join(done)} (the operator clears the failures)" if done \
            else None

    def repair(self) -> None:
        self.lab.restore(wait_online=False)
        for node in self.lab.nodes:
            self.supervise(node)


MANAGERS = {"pacemaker": PacemakerManager, "hamon": HamonManager}
