"""The :class:`Lab`: two nodes, three networks, two BMCs, a client, a shared disk.

See the package docstring (``hapack.lab``) for the tour; this module holds the
implementation. Everything the lab builds is recorded in ``lab.json`` before
it is built, so :meth:`Lab.down` can remove it from the state file alone,
even after the process that built it was killed.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Callable

from . import bmc as bmcmod
from . import build, net, observe
from . import stack as stackmod
from .bmc import Bmc, BmcError
from .disk import SharedDisk, detach
from .naming import LINKS, NODE_IFACES, NODES, Plan, allocate_block, check_link, check_name, node_index
from .power import PowerSwitch
from .state import (LAB_ROOT, STATE_FILE, alive, global_lock, is_stale, lab_dirs, locked, proc_id,
                    read_state, write_json)

STACKS = ("pacemaker", "none")
DEFAULT_BOOT_DELAY = 2.0
CGROUP_ROOT = build.CGROUP_ROOT
HERE = build.HERE
NODE_PRIVATE = (Path("/tmp"), Path("/run"), Path("/dev/shm"))  # mounted afresh in every node
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_BINARIES = ("unshare", "nsenter", "ip", "ipmi_sim", "ipmitool", "losetup", "mkfs.ext4", "ping")
STACK_BINARIES = {"pacemaker": ("corosync", "corosync-cfgtool", "pacemakerd", "crm_mon", "cibadmin"),
                  "none": ()}


class LabError(RuntimeError):
    """The lab could not do what it was asked."""


class NodeDown(LabError):
    """The node is powered off or crashed: nothing runs in it."""


class NodeFrozen(LabError):
    """The node is frozen: a command in it would hang until thawed."""


class NodeCommandError(subprocess.CalledProcessError):
    """A command in a node (or the client) exited non-zero."""

    def __init__(self, where: str, returncode: int, cmd, output=None, stderr=None):
        super().__init__(returncode, cmd, output, stderr)
        self.where = where

    def __str__(self) -> str:
        tail = (self.stderr or self.output or "").strip()[-2000:]
        return f"{self.where}: {' '.join(map(str, self.cmd))} exited {self.returncode}: {tail}"


@dataclass
class Spawned:
    """A background process started in a node with :meth:`Lab.spawn`.

    ``pid`` is its pid inside the node; ``host`` its (pid, starttime) in the
    host, None if it was gone before it could be seen.
    """

    node: str
    argv: list[str]
    pid: int
    host: tuple[int, int] | None
    log: Path

    @property
    def running(self) -> bool:
        return alive(self.host)

    def stop(self, wait: float = 5.0) -> None:
        """SIGKILL it and wait up to ``wait`` seconds until it is gone.

        On a frozen node the kill lands at thaw: pass ``wait=0``.
        """
        if not alive(self.host):
            return
        try:
            os.kill(self.host[0], signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while alive(self.host) and time.monotonic() < deadline:
            time.sleep(0.005)


def missing_prerequisites(stack_name: str = "pacemaker", qdevice: bool = False) -> list[str]:
    """Why a lab cannot run here (empty if it can): root, binaries, cgroup v1 freezer."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    binaries = BASE_BINARIES + STACK_BINARIES.get(stack_name, ())
    for binary in binaries + (build.QDEVICE_BINARIES if qdevice else ()):
        if shutil.which(binary) is None:
            problems.append(f"{binary} not found")
    if not (CGROUP_ROOT / "freezer").is_dir():
        problems.append("no cgroup v1 freezer at /sys/fs/cgroup/freezer")
    for what, path in (("this Python environment", Path(sys.prefix)), ("hapack.lab", HERE)):
        if any(Path(os.path.realpath(path)).is_relative_to(p) for p in NODE_PRIVATE):
            problems.append(f"{what} is in {path}, which the nodes cannot see (their "
                            f"{', '.join(map(str, NODE_PRIVATE))} are their own): install "
                            "hapack elsewhere, e.g. with ./run setup (/opt/hapack/venv)")
    return problems


class Lab:
    """A two-node cluster on this machine; see the ``hapack.lab`` docstring."""

    nodes = NODES

    def __init__(self, name: str | None = None, stack: str = "pacemaker", *,
                 boot_delay: float = DEFAULT_BOOT_DELAY, token_ms: int = stackmod.DEFAULT_TOKEN_MS,
                 corosync_conf: str | None = None, cluster_options: dict[str, str] | None = None,
                 services: list[dict] | None = None, disk_mb: int = 64, persistent: bool = False,
                 pdu: bool = False, root: Path = LAB_ROOT, qdevice: bool = False):
        if stack not in STACKS:
            raise LabError(f"unknown stack {stack!r}: expected one of {', '.join(STACKS)}")
        if qdevice and stack != "pacemaker":
            raise LabError("a quorum device (qdevice) needs the pacemaker stack")
        self.qdevice = bool(qdevice)
        self.name = check_name(name) if name else None
        self.stack = stack
        self.boot_delay = float(boot_delay)
        self.token_ms = int(token_ms)
        self._corosync_conf = corosync_conf
        self.cluster_options = dict(stack_defaults() if cluster_options is None else cluster_options)
        self.services = list(services or [])
        self.disk_mb = disk_mb
        self.persistent = persistent
        self.pdu_enabled = bool(pdu)
        self.root = Path(root)
        self.state: dict = {}
        self._restore_sigterm: Callable[[], None] | None = None
        self._spawned: list[Spawned] = []
        self._watches: list[observe.VipWatch] = []
        self._children: list[subprocess.Popen] = []

    # -- life cycle ------------------------------------------------------
    @classmethod
    def attach(cls, name: str, root: Path = LAB_ROOT) -> "Lab":
        """The running lab ``name``, from its state file."""
        lab_dir = Path(root) / check_name(name)
        if not (lab_dir / STATE_FILE).is_file():
            raise LabError(f"no lab named {name!r} under {root}")
        state = read_state(lab_dir)
        lab = cls(name, state["stack"], boot_delay=state["boot_delay"], token_ms=state["token_ms"],
                  persistent=state.get("owner") is None, pdu=bool(state.get("pdus")), root=root,
                  qdevice=bool(state.get("qdevice")))
        lab.state = state
        return lab

    @classmethod
    def names(cls, root: Path = LAB_ROOT) -> list[str]:
        """Names of every lab on this machine (running, or left over)."""
        return [d.name for d in lab_dirs(Path(root))]

    @classmethod
    def reap_stale(cls, root: Path = LAB_ROOT) -> list[str]:
        """Tear down every lab whose owning process died; return their names."""
        reaped = []
        for lab_dir in lab_dirs(Path(root)):
            try:
                if not is_stale(read_state(lab_dir)):
                    continue
                lab = cls.attach(lab_dir.name, root)
            except (OSError, LabError):
                continue  # its owner is taking it down right now
            if lab.down():
                reaped.append(lab_dir.name)
        return reaped

    @classmethod
    def down_all(cls, root: Path = LAB_ROOT) -> list[str]:
        """Tear down every lab on this machine; return their names."""
        names = []
        for name in cls.names(root):
            try:
                lab = cls.attach(name, root)
            except (OSError, LabError):
                continue
            if lab.down():
                names.append(name)
        return names

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> "Lab":
        """Build the lab, power both nodes on through their BMCs, wait until ready."""
        problems = missing_prerequisites(self.stack, self.qdevice)
        if problems:
            raise LabError("cannot build a lab here: " + "; ".join(problems))
        self.reap_stale(self.root)
        if not self.persistent:
            self._restore_sigterm = interrupt_on_sigterm()
        self._allocate()
        try:
            self._build()
            self.power_on_all()
            for node in self.nodes:
                self.wait_booted(node)
            if self.stack == "pacemaker":
                self.wait_online()
        except BaseException:
            self.down()
            raise
        self.state["phase"] = "up"
        if self.persistent:
            self.state["owner"] = None  # stays up after we exit, until 'hapack lab down'
        self._save()
        return self

    def _allocate(self) -> None:
        with global_lock(self.root):
            if self.name is None:
                self.name = self._free_name()
            lab_dir = self.root / self.name
            if (lab_dir / STATE_FILE).exists():
                raise LabError(f"lab {self.name!r} already exists; run 'hapack lab down --name {self.name}'")
            used = net.used_networks()
            for other in lab_dirs(self.root):
                used += [IPv4Network(n) for n in read_state(other).get("subnets", {}).values()]
            plan = Plan(self.name, allocate_block(self.name, used))
            lab_dir.mkdir(parents=True, exist_ok=True)
            self.state = self._initial_state(plan, lab_dir)
            self._save()

    def _free_name(self) -> str:
        while True:
            name = "t" + secrets.token_hex(2)
            if not (self.root / name).exists():
                return name

    def _initial_state(self, plan: Plan, lab_dir: Path) -> dict:
        return {
            "version": 1, "name": plan.name, "block": plan.block, "stack": self.stack,
            "phase": "building", "created": time.time(), "dir": str(lab_dir),
            "owner": proc_id(os.getpid()),
            "boot_delay": self.boot_delay, "token_ms": self.token_ms,
            "subnets": {link: str(n) for link, n in plan.subnets.items()},
            "bridges": [plan.bridge(link) for link in LINKS],
            "client": {"holder": None, "veth": plan.client_veth, "addr": str(plan.client_addr)},
            "qdevice": self.qdevice,
            "arbiter": ({"holder": None, "veth": plan.arbiter_veth, "addr": str(plan.arbiter_addr),
                         "dir": str(lab_dir / build.ARBITER_DIR)} if self.qdevice else None),
            "nodes": {node: build.node_config(plan, lab_dir, node, self.stack, self.services,
                                              self.qdevice) for node in self.nodes},
            "bmcs": {}, "ipmi_sim": {}, "pdus": {}, "pdu_sim": {}, "reaper": None, "disk": None,
            "bmc_unreachable": [],
        }

    def add_boot_binds(self, binds: list[tuple[str, str]]) -> None:
        """Bind each ``(host path, path in the node)`` at every later boot of both nodes,
        with the node's own binds, before the cluster stack starts (running nodes are not
        changed: bind there yourself)."""
        for node in self.nodes:
            self.state["nodes"][node]["binds"] += [[src, dst] for src, dst in binds]
        self._save()

    def _save(self) -> None:
        write_json(self.dir / STATE_FILE, self.state)

    def _record_reaper(self, ident) -> None:
        self.state["reaper"] = ident
        self._save()

    # -- building --------------------------------------------------------
    def _build(self) -> None:
        plan = self.plan
        build.make_mountpoints(self.root)
        (self.dir / "shared").mkdir(exist_ok=True)
        corosync_conf = self.corosync_conf_text()
        authkey = os.urandom(stackmod.AUTHKEY_BYTES)
        cib = stackmod.seed_cib(self.cluster_options) if self.stack == "pacemaker" else None
        hosts = build.hosts_text(plan, self.nodes)
        for node in self.nodes:
            build.make_node_dirs(self.node_dir(node), corosync_conf, authkey, cib, hosts, self.boot_delay)
            for group in self.state["nodes"][node]["cgroups"]:
                os.makedirs(group, exist_ok=True)
        sim_addrs = [str(plan.bmc_addr(node)) for node in self.nodes]
        if self.pdu_enabled:
            sim_addrs += [str(plan.pdu_addr(node)) for node in self.nodes]
        net.create_bridges(plan, sim_addrs)
        self.state["bmcs"] = build.write_bmcs(plan, self.dir, self.nodes)
        kinds = ("bmc", "pdu") if self.pdu_enabled else ("bmc",)
        if self.pdu_enabled:
            self.state["pdus"] = build.write_pdus(plan, self.dir, self.nodes)
        self._save()
        extra = []
        if self.qdevice:
            build.make_qdevice_certificates(self.dir, plan.cluster_name,
                                            [self.node_dir(node) for node in self.nodes])
            extra.append(build.arbiter_command(self.dir))
        reaper, (holder, *rest) = build.start_host_processes(self.dir, self.nodes,
                                                             self._record_reaper, kinds, extra)
        self._children.append(reaper)
        self.state["client"]["holder"] = holder
        sims = rest[:len(kinds) * len(self.nodes)]
        self.state["ipmi_sim"] = dict(zip(self.nodes, sims))
        self.state["pdu_sim"] = dict(zip(self.nodes, sims[len(self.nodes):]))
        if self.qdevice:
            self.state["arbiter"]["holder"] = rest[len(sims)]
        self._save()
        net.wire_client(plan, holder[0])
        if self.qdevice:
            net.wire_arbiter(plan, self.state["arbiter"]["holder"][0])
        disk = SharedDisk.create(self.dir / "disk.img", self.disk_mb, label=f"hapack-{self.name}")
        self.state["disk"] = disk.to_json()
        self._save()
        for node in self.nodes:
            bmcmod.wait_ready(self.bmc(node))
            if self.pdu_enabled:
                bmcmod.wait_ready(self.pdu(node))

    def corosync_conf_text(self) -> str:
        if self._corosync_conf is not None:
            return self._corosync_conf
        plan = self.plan
        qdevice = (stackmod.QuorumDevice(host=str(plan.arbiter_addr), ping=str(plan.client_addr))
                   if self.qdevice else None)
        return stackmod.render_corosync_conf(
            plan.cluster_name, {n: (str(plan.addr(n, "lan")), str(plan.addr(n, "hb"))) for n in self.nodes},
            self.token_ms, qdevice)

    # -- teardown --------------------------------------------------------
    def down(self) -> bool:
        """Remove everything of the lab. Safe to call twice, or on a half-built lab.

        Returns False if there was nothing left to remove (already down, here
        or by another process).
        """
        if not self.state:
            return False
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            self.state = {}
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one teardown at a time, e.g. owner and reaper
            if not (self.dir / STATE_FILE).exists():
                self.state = {}
                return False
            self._teardown()
        finally:
            os.close(fd)
            if self._restore_sigterm is not None:
                self._restore_sigterm()
                self._restore_sigterm = None
        return True

    def _teardown(self) -> None:
        errors: list[str] = []
        self.stop_background()
        for node, cfg in self.state.get("nodes", {}).items():
            if Path(cfg["dir"]).is_dir():
                self._step(errors, f"power off {node}", PowerSwitch(self.dir, node).off)
        reap = self._reap_children
        self._step(errors, "stop BMCs", lambda: build.kill_recorded(
            "ipmi_sim", self.state.get("ipmi_sim", {}).values(), reap))
        self._step(errors, "stop PDUs", lambda: build.kill_recorded(
            "ipmi_sim", self.state.get("pdu_sim", {}).values(), reap))
        self._step(errors, "remove client", lambda: build.remove_client(self.state["client"].get("holder"), reap))
        arbiter = self.state.get("arbiter") or {}
        self._step(errors, "remove arbiter", lambda: build.remove_client(arbiter.get("holder"), reap))
        self._step(errors, "stop reaper", lambda: build.kill_recorded("reaper", [self.state.get("reaper")], reap))
        errors += net.delete_links(self.plan.interfaces)
        if self.state.get("disk"):
            self._step(errors, "detach disk", lambda: detach(Path(self.state["disk"]["image"])))
        self._step(errors, "remove cgroups", lambda: build.remove_cgroups(
            g for cfg in self.state.get("nodes", {}).values() for g in cfg["cgroups"]))
        self._step(errors, "remove mount points", lambda: build.remove_mountpoints(self.root, self.name))
        if errors:
            self.state["phase"] = "down-failed"
            self._save()
            raise LabError(f"lab {self.name}: teardown incomplete: " + "; ".join(errors))
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state = {}

    @staticmethod
    def _step(errors: list[str], what: str, action) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - teardown goes on, and reports every failure
            errors.append(f"{what}: {exc}")

    def _reap_children(self) -> None:
        for child in self._children:
            child.poll()

    # -- facts -----------------------------------------------------------
    def owner_alive(self) -> bool:
        """True if the process that owns this lab runs (always False for a CLI lab)."""
        return alive(self.state.get("owner"))

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def plan(self) -> Plan:
        return Plan(self.state["name"], self.state["block"])

    @property
    def shared_dir(self) -> Path:
        """A directory at the same path in the host and every node."""
        return self.dir / "shared"

    def node_dir(self, node: str) -> Path:
        node_index(node)
        return self.dir / "nodes" / node

    def subnet(self, link: str) -> IPv4Network:
        check_link(link)
        return IPv4Network(self.state["subnets"][link])

    def prefixlen(self, link: str) -> int:
        return self.subnet(link).prefixlen

    @staticmethod
    def iface(link: str) -> str:
        """Interface name inside a node: eth0 (lan), eth1 (hb), eth2 (bmc)."""
        check_link(link)
        return NODE_IFACES[link]

    def addr(self, node: str, link: str = "lan") -> str:
        return str(self.plan.addr(node, link))

    @property
    def client_addr(self) -> str:
        return self.state["client"]["addr"]

    def vip_candidates(self) -> list[str]:
        """Service-LAN addresses that no node or client uses."""
        return [str(a) for a in self.plan.vip_candidates()]

    def free_vip(self, index: int = 0) -> str:
        return self.vip_candidates()[index]

    def bmc(self, node: str) -> Bmc:
        return Bmc(**self.state["bmcs"][node])

    def pdu(self, node: str) -> Bmc:
        """The node's PDU outlet (a lab built with ``pdu=True``): a second ipmi_sim on the
        BMC network that switches the same power supply as the node's BMC. Fence it with
        the stock ``fence_ipmilan`` (:meth:`Bmc.fence_ipmilan_params`)."""
        if not self.state.get("pdus"):
            raise LabError(f"lab {self.name} has no PDUs (build it with Lab(pdu=True) or "
                           "'hapack lab up --pdu')")
        return Bmc(**self.state["pdus"][node])

    @property
    def shared_disk(self) -> SharedDisk:
        return SharedDisk.from_json(self.state["disk"])

    @property
    def corosync_conf(self) -> str:
        return (self.node_dir(self.nodes[0]) / "etc-corosync/corosync.conf").read_text()

    def cgroup(self, node: str, controller: str = "freezer") -> Path:
        return CGROUP_ROOT / controller / self.plan.cgroup(node)

    # -- power -----------------------------------------------------------
    def power(self, node: str, action: str, wait: bool = False) -> str:
        """``ipmitool chassis power <action>`` on the node's BMC (on, off, reset, cycle, status).

        Returns ``"on"``/``"off"`` for status, else ipmitool's answer. With
        ``wait``, off waits until the node is gone, on/reset/cycle until it booted.
        """
        if action not in ("on", "off", "reset", "cycle", "status"):
            raise LabError(f"unknown power action {action!r}")
        out = bmcmod.ipmitool(self.bmc(node), "chassis", "power", action)
        if action == "status":
            return bmcmod.parse_power_status(out)
        if wait and action == "off":
            self.wait_gone(node)
        elif wait:
            self.wait_booted(node)
        return out.strip()

    def power_on_all(self) -> None:
        """Power every node on through its BMC, all at once."""
        procs = [(node, subprocess.Popen(self.bmc(node).ipmitool_argv("chassis", "power", "on"),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                 for node in self.nodes]
        for node, proc in procs:
            out, err = proc.communicate(timeout=30)
            if proc.returncode != 0:
                raise BmcError(f"power on {node}: {(err or out).strip()}")

    def power_state(self, node: str) -> dict:
        """The power switch's own record (``on``, pids, boots), read without the BMC."""
        return PowerSwitch(self.dir, node).state()

    def running(self, node: str) -> bool:
        """True if the node's PID 1 lives (powered on and not crashed)."""
        return alive(self.power_state(node).get("init"))

    def boot_stages(self, node: str) -> list[observe.Stage]:
        try:
            return observe.parse_boot((self.node_dir(node) / "boot").read_text())
        except FileNotFoundError:
            return []

    def wait_booted(self, node: str, timeout: float | None = None) -> None:
        """Wait until the node's init reached stage ``up`` (network and stack started)."""
        timeout = timeout if timeout is not None else self._boot_delay(node) + 30.0
        deadline = time.monotonic() + timeout
        while True:
            stages = self.boot_stages(node)
            last = stages[-1].name if stages else "off"
            if last == "up" and self.running(node):
                return
            if last.startswith("failed"):
                raise LabError(f"{node} failed to boot ({last}); see {self.node_dir(node) / 'console.log'}")
            if time.monotonic() > deadline:
                raise LabError(f"{node} did not boot within {timeout:.0f}s (stage {last})")
            time.sleep(0.02)

    def wait_gone(self, node: str, timeout: float = 10.0) -> None:
        """Wait until no process, cable or cgroup member of the node is left."""
        deadline = time.monotonic() + timeout
        cables = [cable["host"] for cable in self.state["nodes"][node]["veths"]]
        while self.running(node) or self._members(node) or any(net.link_exists(c) for c in cables):
            if time.monotonic() > deadline:
                raise LabError(f"{node} still present {timeout}s after power loss")
            time.sleep(0.01)

    def _boot_delay(self, node: str) -> float:
        try:
            return float((self.node_dir(node) / "boot_delay").read_text())
        except (FileNotFoundError, ValueError):
            return self.boot_delay

    def set_boot_delay(self, seconds: float) -> None:
        """Change the simulated POST delay, from the next power on."""
        for node in self.nodes:
            (self.node_dir(node) / "boot_delay").write_text(f"{float(seconds)}\n")
        self.state["boot_delay"] = self.boot_delay = float(seconds)
        self._save()

    def _members(self, node: str) -> list[int]:
        return PowerSwitch(self.dir, node).members()

    # -- faults ----------------------------------------------------------
    def cut_power(self, node: str) -> float:
        """The node's power fails at the source, not through its BMC (which may be
        unreachable): everything of it dies; its BMC (and PDU) then report it off.
        Returns the wall time of the cut."""
        cut = time.time()
        PowerSwitch(self.dir, node).off()
        self.wait_gone(node)
        return cut

    def crash(self, node: str) -> None:
        """The node's kernel dies: SIGKILL its PID 1, so every process, cable and address goes.

        The BMC still reports power on, as after a panic; the node stays down
        until it is power cycled (``power(node, "reset")``, or a fence).
        """
        init = self.power_state(node).get("init")
        if not alive(init):
            raise NodeDown(f"{node} is not running")
        os.kill(init[0], signal.SIGKILL)
        if self.frozen(node):
            self.thaw(node)
        PowerSwitch(self.dir, node).unplug_cables()
        self.wait_gone(node)

    def freeze(self, node: str) -> None:
        """Stop every process of the node (cgroup freezer); the kernel side still answers."""
        self._set_freezer(node, "FROZEN")

    def thaw(self, node: str) -> None:
        self._set_freezer(node, "THAWED")

    def frozen(self, node: str) -> bool:
        path = self.cgroup(node) / "freezer.state"
        return path.exists() and path.read_text().strip() != "THAWED"

    def _set_freezer(self, node: str, wanted: str, timeout: float = 5.0) -> None:
        path = self.cgroup(node) / "freezer.state"
        path.write_text(wanted + "\n")
        deadline = time.monotonic() + timeout
        while path.read_text().strip() != wanted:
            if time.monotonic() > deadline:
                raise LabError(f"{node}: freezer stuck in {path.read_text().strip()}")
            time.sleep(0.005)

    def cut_link(self, node: str, link: str) -> None:
        """Pull the node's cable on ``link`` (lan, hb, bmc, or all); stays cut across reboots."""
        self._set_links(node, check_link(link, allow_all=True), cut=True)

    def heal_link(self, node: str, link: str) -> None:
        self._set_links(node, check_link(link, allow_all=True), cut=False)

    def cut_links(self, node: str) -> set[str]:
        return PowerSwitch(self.dir, node).cut_links()

    def _set_links(self, node: str, links: tuple[str, ...], cut: bool) -> None:
        with locked(self.node_dir(node) / "power.lock"):
            current = self.cut_links(node)
            current = current | set(links) if cut else current - set(links)
            (self.node_dir(node) / "cut").write_text("".join(f"{l}\n" for l in sorted(current)))
            for link in links:
                veth = self.plan.veth(node, link)
                if net.link_exists(veth):
                    net.ip("link", "set", veth, "down" if cut else "up")

    def kill_process(self, node: str, target: int | str, sig: int = signal.SIGKILL) -> observe.NodeProcess:
        """Kill one process of the node, by pid inside the node or by exact name."""
        procs = self.processes(node)
        if isinstance(target, int):
            matches = [p for p in procs if p.pid == target]
        else:
            matches = [p for p in procs if p.name == target]
        if len(matches) != 1:
            found = ", ".join(f"{p.pid}:{p.name}" for p in matches) or "none"
            raise LabError(f"{node}: {target!r} must match exactly one process (found {found})")
        os.kill(matches[0].host_pid, sig)
        return matches[0]

    def bmc_unreachable(self, node: str) -> None:
        """Take the BMC's address off the BMC network: requests to it time out."""
        bmc = self.bmc(node)
        net.ip("addr", "del", f"{bmc.address}/{self.prefixlen('bmc')}", "dev", self.plan.bridge("bmc"),
               check=False)
        if node not in self.state["bmc_unreachable"]:
            self.state["bmc_unreachable"].append(node)
            self._save()

    def bmc_reachable(self, node: str) -> None:
        bmc = self.bmc(node)
        out = net.ip("-j", "addr", "show", "dev", self.plan.bridge("bmc"))
        if f'"{bmc.address}"' not in out:
            net.ip("addr", "add", f"{bmc.address}/{self.prefixlen('bmc')}", "dev", self.plan.bridge("bmc"))
        if node in self.state["bmc_unreachable"]:
            self.state["bmc_unreachable"].remove(node)
            self._save()

    def restore(self, wait_online: bool = True) -> None:
        """Undo every fault: stop background processes, thaw, heal links, BMCs reachable,
        power on (or reset a crashed node), wait until booted and, for Pacemaker,
        until both nodes are online with quorum."""
        self.stop_background()
        for node in self.nodes:
            if self.frozen(node):
                self.thaw(node)
            if self.cut_links(node):
                self.heal_link(node, "all")
            self.bmc_reachable(node)
            if not self.running(node):
                self.power(node, "reset" if self.power(node, "status") == "on" else "on")
        if self.qdevice and not self.arbiter_running():
            self.arbiter_start()
        for node in self.nodes:
            self.wait_booted(node)
        if wait_online and self.stack == "pacemaker":
            self.wait_online()
            if self.qdevice:
                self.wait_arbiter_votes()

    # -- the quorum device's arbiter ---------------------------------------
    @property
    def arbiter_addr(self) -> str | None:
        """The address of the arbiter's corosync-qnetd (None without a quorum device)."""
        return (self.state.get("arbiter") or {}).get("addr")

    def _arbiter(self) -> dict:
        arbiter = self.state.get("arbiter")
        if not arbiter:
            raise LabError(f"lab {self.name} has no quorum device (Lab(qdevice=True), lab up --qdevice)")
        if not alive(arbiter.get("holder")):
            raise LabError(f"lab {self.name}: the arbiter's namespace is gone")
        return arbiter

    def qnetd(self) -> tuple[int, int] | None:
        """The running corosync-qnetd's (pid, starttime) in the host, or None."""
        try:
            pid = int((Path(self._arbiter()["dir"]) / "qnetd.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        ident = proc_id(pid)
        return ident if alive(ident) else None

    def arbiter_running(self) -> bool:
        return self.qnetd() is not None

    def arbiter_stop(self, wait: float = 5.0) -> int:
        """The arbiter fails: SIGKILL its corosync-qnetd (by pid); returns the pid."""
        ident = self.qnetd()
        if ident is None:
            raise LabError(f"lab {self.name}: corosync-qnetd is not running")
        os.kill(ident[0], signal.SIGKILL)
        deadline = time.monotonic() + wait
        while alive(ident):
            if time.monotonic() > deadline:
                raise LabError(f"corosync-qnetd {ident[0]} did not die")
            time.sleep(0.01)
        return ident[0]

    def arbiter_start(self, timeout: float = 20.0) -> None:
        """Start corosync-qnetd again (its namespace's init does, on SIGUSR1) and wait
        until it answers corosync-qnetd-tool."""
        os.kill(self._arbiter()["holder"][0], signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while self.arbiter_exec(["corosync-qnetd-tool", "-s"], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"corosync-qnetd did not start; see {self._arbiter()['dir']}/qnetd.log")
            time.sleep(0.05)

    def arbiter_votes(self) -> dict[int, str]:
        """Node id -> the vote corosync-qnetd holds for it (``ACK``, ``NACK``...), for
        every node connected to it."""
        out = self.arbiter_exec(["corosync-qnetd-tool", "-l"], check=False).stdout
        votes, current = {}, None
        for line in out.splitlines():
            words = line.split()
            if words[:2] == ["Node", "ID"] and len(words) == 3:
                current = int(words[2].rstrip(":"))
            elif words[:1] == ["Vote:"] and current is not None:
                votes[current] = words[-1].strip("()")
        return votes

    def wait_arbiter_votes(self, timeout: float = 60.0) -> None:
        """Wait until both nodes are connected to corosync-qnetd and hold its vote."""
        deadline = time.monotonic() + timeout
        while (votes := self.arbiter_votes()) != {1: "ACK", 2: "ACK"}:
            if time.monotonic() > deadline:
                raise LabError(f"the nodes do not hold the arbiter's vote after {timeout:.0f}s: {votes}")
            time.sleep(0.1)

    def arbiter_exec(self, argv: list[str], *, check: bool = True,
                     timeout: float | None = 30.0) -> subprocess.CompletedProcess:
        """Run ``argv`` in the arbiter's network and mount namespaces (corosync-qnetd-tool)."""
        holder = self._arbiter()["holder"][0]
        cmd = ["nsenter", f"--target={holder}", "--net", "--mount", "--", *map(str, argv)]
        return self._run("arbiter", cmd, check, timeout, None, self._env(None), True, True, None)

    # -- running things in nodes and the client --------------------------
    def stop_background(self) -> None:
        """Stop the processes and VIP watches this Lab object started."""
        for watch in self._watches:
            watch.stop()
        for spawned in self._spawned:
            spawned.stop(wait=0 if self.frozen(spawned.node) else 5.0)
        self._watches.clear()
        self._spawned.clear()

    def _init_pid(self, node: str) -> int:
        init = self.power_state(node).get("init")
        if not alive(init):
            raise NodeDown(f"{node} is not running (power {'on' if self.power_state(node).get('on') else 'off'})")
        return init[0]

    def _nsenter(self, node: str) -> list[str]:
        return ["nsenter", f"--target={self._init_pid(node)}", "--mount", "--uts", "--ipc", "--net",
                "--pid", "--wd=/"]

    def _joiner(self, node: str):
        paths = [os.path.join(g, "cgroup.procs") for g in self.state["nodes"][node]["cgroups"]]

        def join() -> None:
            pid = str(os.getpid()).encode()
            for path in paths:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
        return join

    @staticmethod
    def _env(extra: dict[str, str] | None) -> dict[str, str]:
        env = {"PATH": NODE_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
        env.update(extra or {})
        return env

    def exec(self, node: str, argv: list[str], *, check: bool = True, timeout: float | None = 60.0,
             input: str | bytes | None = None, env: dict[str, str] | None = None,
             text: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` inside ``node`` (all its namespaces and cgroups, cwd /, a clean env).

        With ``capture=False`` the command shares our stdin, stdout and stderr.
        """
        if self.frozen(node):
            raise NodeFrozen(f"{node} is frozen; thaw it first")
        cmd = self._nsenter(node) + ["--", *map(str, argv)]
        return self._run(node, cmd, check, timeout, input, self._env(env), text, capture, self._joiner(node))

    def client_exec(self, argv: list[str], *, check: bool = True, timeout: float | None = 60.0,
                    input: str | bytes | None = None, text: bool = True,
                    capture: bool = True) -> subprocess.CompletedProcess:
        """Run ``argv`` in the client namespace (on the service LAN)."""
        cmd = self._client_nsenter() + [*map(str, argv)]
        return self._run("client", cmd, check, timeout, input, self._env(None), text, capture, None)

    def _client_nsenter(self) -> list[str]:
        holder = self.state["client"].get("holder")
        if not alive(holder):
            raise LabError(f"lab {self.name}: the client namespace is gone")
        return ["nsenter", f"--target={holder[0]}", "--net", "--"]

    def _run(self, where, cmd, check, timeout, input, env, text, capture,
             preexec) -> subprocess.CompletedProcess:
        pipe = subprocess.PIPE if capture else None
        stdin = subprocess.PIPE if input is not None else (subprocess.DEVNULL if capture else None)
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=pipe, stderr=pipe, env=env, text=text,
                                start_new_session=capture, preexec_fn=preexec)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            # the command inside the node is a child of nsenter: kill the group
            if capture:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.communicate()
            raise
        result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise NodeCommandError(where, proc.returncode, cmd[cmd.index("--") + 1:], out, err)
        return result

    def spawn(self, node: str, argv: list[str], *, name: str | None = None,
              env: dict[str, str] | None = None, service: bool = False) -> Spawned:
        """Start ``argv`` as a daemon inside ``node``; output to ``nodes/<node>/spawn/<name>.log``.

        The process is adopted by the node's PID 1, in the node's cgroups. It
        dies with the node (power off, crash) and does not come back at the
        next boot: use ``Lab(services=...)`` for that. ``stop_background``
        (and ``restore``) kills it, unless it is a ``service``: a node's own
        daemon started again (as systemd restarts a unit), which lives as long
        as the node.
        """
        name = name or Path(str(argv[0])).name
        log = self.node_dir(node) / "spawn" / f"{name}.log"
        launcher = [sys.executable, "-I", "-S", str(HERE / "launch.py"), str(log), "--", *map(str, argv)]
        pid = int(self.exec(node, launcher, env=env, timeout=30).stdout.split()[-1])
        host = next((proc_id(p.host_pid) for p in self.processes(node) if p.pid == pid), None)
        spawned = Spawned(node, list(map(str, argv)), pid, host, log)
        if not service:
            self._spawned.append(spawned)
        return spawned

    @staticmethod
    def responder_argv(ip: str = "0.0.0.0", port: int = 8080) -> list[str]:
        """argv of the hostname responder, e.g. for an ``ocf:heartbeat:anything`` resource."""
        return [sys.executable, "-I", "-S", str(HERE / "responder.py"), ip, str(port)]

    def start_responder(self, node: str, ip: str = "0.0.0.0", port: int = 8080,
                        timeout: float = 10.0) -> Spawned:
        """Answer every TCP connection to ip:port in ``node`` with its hostname."""
        spawned = self.spawn(node, self.responder_argv(ip, port), name=f"responder-{ip}-{port}")
        deadline = time.monotonic() + timeout
        while f"listening {ip}:{port}" not in spawned.log.read_text(errors="replace"):
            if not spawned.running or time.monotonic() > deadline:
                raise LabError(f"responder on {node} {ip}:{port} did not start: {spawned.log.read_text()[-500:]}")
            time.sleep(0.01)
        return spawned

    def watch_vip(self, ip: str, port: int = 8080, interval: float = 0.05,
                  timeout: float = 0.2) -> observe.VipWatch:
        """A poller in the client namespace (start it with ``with`` or ``.start()``)."""
        argv = self._client_nsenter() + [
                sys.executable, "-I", "-S", str(HERE / "poller.py"), ip, str(port), str(interval), str(timeout)]
        watch = observe.VipWatch(argv, ip, port)
        self._watches.append(watch)
        return watch

    def ping(self, src: str, dst: str, timeout: float = 1.0) -> bool:
        """One ICMP echo from ``src`` (a node or ``"client"``) to ``dst``."""
        argv = ["ping", "-n", "-q", "-c", "1", "-W", f"{timeout:g}", dst]
        if src == "client":
            return self.client_exec(argv, check=False, timeout=timeout + 5).returncode == 0
        return self.exec(src, argv, check=False, timeout=timeout + 5).returncode == 0

    # -- observation -----------------------------------------------------
    def processes(self, node: str) -> list[observe.NodeProcess]:
        """The node's processes (pid inside the node and in the host); [] if it is down."""
        init = self.power_state(node).get("init")
        if not alive(init):
            return []
        try:
            pidns = os.readlink(f"/proc/{init[0]}/ns/pid")
        except FileNotFoundError:
            return []
        return observe.processes_in_pidns(pidns)

    def mounts(self, node: str) -> list[observe.Mount]:
        """The node's mount table; [] if it is down."""
        try:
            return observe.parse_mountinfo(Path(f"/proc/{self._init_pid(node)}/mountinfo").read_text())
        except (NodeDown, FileNotFoundError):
            return []

    def logs(self, node: str) -> dict[str, Path]:
        """The node's log files by name: console, power, boot, and every file under its /var/log."""
        node_dir = self.node_dir(node)
        found = {"console": node_dir / "console.log", "power": node_dir / "power.log",
                 "boot": node_dir / "boot"}
        found = {k: v for k, v in found.items() if v.exists()}
        for base in (node_dir / "var-log", node_dir / "spawn"):
            for path in sorted(base.rglob("*")):
                if path.is_file():
                    key = str(path.relative_to(base)) if base.name == "var-log" else f"spawn/{path.name}"
                    found[key] = path
        return found

    def power_log(self, node: str) -> list[observe.PowerEvent]:
        try:
            return observe.parse_power_log((self.node_dir(node) / "power.log").read_text())
        except FileNotFoundError:
            return []

    def crm_mon(self, node: str) -> stackmod.ClusterView:
        out = self.exec(node, ["crm_mon", "-1", "--output-as=xml"], timeout=30).stdout
        return stackmod.parse_crm_mon(out)

    def wait_online(self, nodes: list[str] | None = None, timeout: float = 90.0) -> stackmod.ClusterView:
        """Wait until every node in ``nodes`` sees all of them online, with a DC and quorum."""
        nodes = list(nodes or self.nodes)
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                views = [self.crm_mon(node) for node in nodes]
                if all(view.all_online(nodes) for view in views):
                    return views[0]
                last = views
            except (NodeCommandError, NodeDown, subprocess.TimeoutExpired) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise LabError(f"{nodes} not all online with quorum after {timeout:.0f}s: {last}")
            time.sleep(0.2)

    def status(self) -> dict:
        """A summary per node: power, running, frozen, boot stage, cut links, BMC."""
        out = {}
        for node in self.nodes:
            power = self.power_state(node)
            stages = self.boot_stages(node)
            bmc = self.bmc(node)
            out[node] = {
                "power": "on" if power.get("on") else "off",
                "running": self.running(node),
                "frozen": self.frozen(node),
                "stage": stages[-1].name if stages else "off",
                "boots": power.get("boots", 0),
                "cut": sorted(self.cut_links(node)),
                "addresses": {link: self.addr(node, link) for link in LINKS},
                "bmc": f"{bmc.address}:{bmc.port} user {bmc.username}",
                "bmc_reachable": node not in self.state.get("bmc_unreachable", []),
            }
            if self.state.get("pdus"):
                pdu = self.pdu(node)
                out[node]["pdu"] = f"{pdu.address}:{pdu.port} user {pdu.username}"
        return out

    def collect_logs(self, dest: Path) -> Path:
        """Copy every node's logs and the BMC logs to ``dest`` (for post-mortems)."""
        dest = Path(dest)
        for node in self.nodes:
            for key, path in self.logs(node).items():
                target = dest / node / key.replace("/", "_")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            for kind in ("bmc", "pdu"):
                sim_log = self.dir / kind / node / "ipmi_sim.log"
                if sim_log.exists():
                    name = "ipmi_sim.log" if kind == "bmc" else f"ipmi_sim-{kind}.log"
                    shutil.copyfile(sim_log, dest / node / name)
        return dest


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> Callable[[], None] | None:
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does, so that whoever owns a lab
    (a benchmark, a test run, a script) tears it down in its ``finally`` clauses instead
    of dying with the lab left behind. Only in the main thread and only over Python's
    default handler (a program that handles SIGTERM itself is left alone); returns the
    function that puts the default back, or None when nothing was changed."""
    import threading
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        return None
    signal.signal(signal.SIGTERM, _interrupted)

    def restore() -> None:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is _interrupted):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return restore


def stack_defaults() -> dict[str, str]:
    return dict(stackmod.DEFAULT_CLUSTER_OPTIONS)
