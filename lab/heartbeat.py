"""Linux-HA Heartbeat 3 (classic haresources mode) on the lab's two nodes.

The baseline hamon is measured against (``bench/bench_hamon.py``) and the
proof that ``hapack render heartbeat`` drives Debian's ``heartbeat`` package
(``tests/cluster/test_heartbeat.py``). :class:`Heartbeat`, from a stack file:

1. renders it with the renderer, unchanged except for the lab's timing and log
   file in ``[heartbeat]`` (:data:`LAB_TIMING`, measured here);
2. installs ``ha.d/`` into each node's own /etc/ha.d (the lab binds a per-node
   directory there, seeded with the package's scripts) and reads
   ``default/heartbeat`` as the daemon's environment, as /etc/init.d/heartbeat
   does;
3. starts ``heartbeat -f`` in both nodes at once (:meth:`Lab.spawn`: it dies
   with its node and is not restarted at the next boot);
4. stops it with ``heartbeat -k``, which gives the resources up in reverse order.

The agents and cluster-glue's ``external/bmc`` plugin are this checkout's,
staged in the lab and bind-mounted in each node where Heartbeat and
cluster-glue look (:class:`Agents`), whatever the host has installed. ::

    with Lab(stack="none") as lab:
        hb = start_heartbeat(lab, write_stack(lab))   # resources up on the primary
        try:
            lab.power("node1", "off")
            hb.wait_holder("node2", timeout=30)        # fenced (reset), taken over
        finally:
            stop_heartbeat(hb)

Any stack file of the lab works, e.g. hamon's rig's for the benchmark
(``start_heartbeat(lab, rig.stack_file)``); Heartbeat runs the VIP, the partition and
the stateful layers, the stateless layers are the caller's to start in both nodes.

API: :func:`stack_text` / :func:`write_stack` (a minimal stack of the lab: VIP,
the shared disk as partition, a Dummy stateless layer), :data:`LAB_TIMING`,
:class:`Agents` / :func:`checkout_agents`, :func:`start_heartbeat` /
:func:`stop_heartbeat`, and :class:`Heartbeat`: ``stack``, ``etc`` (the rendered
tree), ``env``, ``start(wait=True)``, ``start_node(node)`` (e.g. after the node
was fenced and booted again), ``stop()``, ``holds(node)``, ``holders()``,
``wait_holder(node, timeout)``, ``log(node)``, ``dead_declared(node)``; :func:`soak`
(does a timing hold here without false failovers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

HEARTBEAT = "/usr/libexec/heartbeat/heartbeat"
LOGFILE = "/var/log/ha-log"
DATA_DIR = "/tmp/hapack-data"   # the partition's mount point: /tmp is private to each node
PORT = 8080                     # where to start the lab's responder (the web tier)
GLUE_PLUGIN = "/usr/lib/stonith/plugins/external/bmc"   # cluster-glue's fixed directory


class Timing(NamedTuple):
    keepalive_ms: int
    deadtime_ms: int
    warntime_ms: int
    initdead_ms: int


#: Measured here with :func:`soak` (2 cores shared with other test runs, load 1.3-6.5):
#: keepalive 20 ms with deadtime 50 or 60 ms declared a live peer dead within 90 s (beats
#: up to 70 ms apart); keepalive 50 ms ran 10 minutes clean with deadtime 150 ms (beats up
#: to 130 ms apart) and 200 ms (up to 110 ms). The lab uses 200 ms: the lowest clean
#: deadtime, 150 ms, kept only 20 ms over the worst gap seen.
LAB_TIMING = Timing(keepalive_ms=50, deadtime_ms=200, warntime_ms=100, initdead_ms=10000)


class HeartbeatError(RuntimeError):
    pass


# -- the stack ---------------------------------------------------------------------

def stack_text(lab, *, directory: str = DATA_DIR, timing: Timing = LAB_TIMING,
               vip_index: int = 0, pdu: bool = False) -> str:
    """A minimal stack of ``lab`` from its real addresses: node1 primary, both BMCs,
    the lan and hb links, a VIP, the shared disk as the partition, and one stateless
    layer, ``web``, as ocf:pacemaker:Dummy (a stack needs a layer). The web tier a client
    sees is the lab's responder, started by the caller in both nodes
    (``lab.start_responder(node, port=PORT)``): the stock ocf:heartbeat:anything starts
    its program through ``su -``, a login shell, and root's profile on this machine runs
    pyenv's rehash, which waits on a lock the nodes share. With ``pdu`` (a lab built with
    ``pdu=True``), each node's PDU outlet is its second fencing level, through the
    stock fence_ipmilan (:func:`pdu_fence_text`)."""
    out = [f'[cluster]\nname = "lab-{lab.name}"\n',
           '[fencing]\naction = "off"\npriority_fencing_delay = "5s"\n',
           '[corosync]\ntoken = "1s"\nsyslog = false\nlogfile = "/var/log/cluster/corosync.log"\n',
           "[heartbeat]\n" + "".join(f'{k} = "{v}ms"\n' for k, v in _hb_keys(timing).items())
           + f'logfile = "{LOGFILE}"\n']
    for node in lab.nodes:
        bmc = lab.bmc(node)
        out.append(f'[[nodes]]\nname = "{node}"\n[nodes.bmc]\ndriver = "ipmi"\n'
                   f'address = "{bmc.address}"\nport = {bmc.port}\nusername = "{bmc.username}"\n'
                   f'password_file = "{bmc.password_file}"\nlanplus = true\ncipher = {bmc.cipher}\n'
                   + (pdu_fence_text(lab, node) if pdu else ""))
    for link in ("lan", "hb"):
        addresses = ", ".join(f'{n} = "{lab.addr(n, link)}/{lab.prefixlen(link)}"'
                              for n in lab.nodes)
        out.append(f'[[links]]\nname = "{link}"\ninterface = "{lab.iface(link)}"\n'
                   f"addresses = {{ {addresses} }}\n")
    out.append(f'[vip]\naddress = "{lab.free_vip(vip_index)}"\n[vip.params]\narp_count = 3\n')
    out.append(f'[partition]\nbackend = "shared"\ndevice = "{lab.shared_disk.device}"\n'
               f'directory = "{directory}"\nfstype = "ext4"\n')
    out.append('[[layers]]\nname = "web"\nagent = "ocf:pacemaker:Dummy"\nkind = "stateless"\n')
    return "\n".join(out)


def pdu_fence_text(lab, node: str) -> str:
    """The ``[[nodes.fence]]`` of ``node``'s PDU outlet: level 2, Debian's fence_ipmilan."""
    pdu = lab.pdu(node)
    return (f'[[nodes.fence]]\nname = "pdu"\nagent = "fence_ipmilan"\n'
            f'password_file = "{pdu.password_file}"\n[nodes.fence.params]\n'
            f'ip = "{pdu.address}"\nipport = {pdu.port}\nusername = "{pdu.username}"\n'
            f'lanplus = 1\ncipher = {pdu.cipher}\n')


def write_stack(lab, path: str | Path | None = None, **kwargs) -> Path:
    """:func:`stack_text` written to ``path`` (default: the lab's shared directory)."""
    path = Path(path or Path(lab.shared_dir) / "heartbeat" / "stack.toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(stack_text(lab, **kwargs))
    return path


def _hb_keys(timing: Timing) -> dict[str, int]:
    return {"keepalive": timing.keepalive_ms, "deadtime": timing.deadtime_ms,
            "warntime": timing.warntime_ms, "initdead": timing.initdead_ms}


def with_lab_settings(stack, timing: Timing):
    """The stack with the lab's Heartbeat timing and a log file in the node's /var/log."""
    hb = dataclasses.replace(stack.heartbeat, logfile=LOGFILE, **_hb_keys(timing))
    return dataclasses.replace(stack, heartbeat=hb)


# -- the checkout's agents in the nodes -----------------------------------------------

AGENT_PATHS = ("/usr/lib/ocf/resource.d/hapack", "/usr/sbin/fence_bmc", GLUE_PLUGIN,
               "/usr/sbin/hapack-alert")   # Pacemaker's alert agent (the CIB's <alert path>)


class Agents:
    """This checkout's agents in the lab's nodes, whatever the host has installed.

    ``hapack install`` staged under the lab's shared directory (its wrappers run this
    interpreter) and bind-mounted, inside a node's own mount namespace, over where
    Pacemaker, Heartbeat and cluster-glue look (:data:`AGENT_PATHS`: the OCF agents, the
    fence agent, the glue plugin and Pacemaker's alert agent). The host's own
    copies may belong to another checkout or venv, even one under the host's /tmp,
    which the nodes do not see. A bind needs its target: one the host lacks is created
    for the lab's life and removed by :meth:`close`. Binds go with a node's power:
    :meth:`bind` again after every boot.
    """

    def __init__(self, lab):
        from hapack import install
        self.lab = lab
        self.root = Path(lab.shared_dir) / "agents"
        install.install(str(self.root), "/usr/lib/ocf", out=lambda *_: None)
        self.created = []
        for path in AGENT_PATHS:
            if not os.path.lexists(path):
                self._create(path)

    def _create(self, path: str) -> None:
        staged = self.staged(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if staged.is_dir():
            os.mkdir(path)
        else:
            shutil.copyfile(staged, path)
            os.chmod(path, 0o755)
        self.created.append(path)

    def staged(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def bind(self, *nodes: str) -> None:
        for node in nodes or self.lab.nodes:
            for path in AGENT_PATHS:
                self.lab.exec(node, ["mount", "--bind", str(self.staged(path)), path])

    def close(self) -> None:
        """Undo the binds in the running nodes, then remove what was created in the host
        (an emptied directory, a wrapper still as written)."""
        for node in self.lab.nodes:
            if self.lab.running(node) and not self.lab.frozen(node):
                for path in AGENT_PATHS:
                    self.lab.exec(node, ["umount", path], check=False)
        for path in reversed(self.created):
            try:
                if os.path.isdir(path):
                    os.rmdir(path)
                elif Path(path).read_bytes() == self.staged(path).read_bytes():
                    os.unlink(path)
            except OSError:
                pass
        self.created.clear()


@contextlib.contextmanager
def checkout_agents(lab, *nodes: str):
    """:class:`Agents` bound in ``nodes`` (default: both) for the block."""
    agents = Agents(lab)
    try:
        agents.bind(*nodes)
        yield agents
    finally:
        agents.close()


# -- Heartbeat in the nodes --------------------------------------------------------

class Heartbeat:
    """Heartbeat on both nodes of ``lab``, from ``stack`` (a path or a loaded Stack)."""

    def __init__(self, lab, stack, timing: Timing = LAB_TIMING):
        from hapack.stack import Stack, load
        self.lab = lab
        self.stack = with_lab_settings(stack if isinstance(stack, Stack) else load(stack), timing)
        self.timing = timing
        self.etc = Path(lab.shared_dir) / "heartbeat" / "etc"
        self.daemons = {}
        self.env = {}
        self.agents = None

    @property
    def primary(self) -> str:
        return self.stack.primary.name

    def render(self) -> Path:
        """``hapack render heartbeat`` of the stack into :attr:`etc` (authkeys kept)."""
        from hapack.cib import heartbeat
        heartbeat.write(self.stack, os.path.basename(self.stack.file), str(self.etc))
        self.env = _shell_assignments((self.etc / "default" / "heartbeat").read_text())
        return self.etc

    def install(self) -> None:
        """The rendered ha.d/ into each node's own /etc/ha.d, modes kept."""
        for node in self.lab.nodes:
            target = self.lab.node_dir(node) / "etc-ha.d"
            for sub in ("conf", "ocf"):  # no leftovers of an earlier stack
                shutil.rmtree(target / sub, ignore_errors=True)
            shutil.copytree(self.etc / "ha.d", target, dirs_exist_ok=True)

    def start(self, wait: bool = True, timeout: float = 60.0) -> "Heartbeat":
        """Render, install and start Heartbeat in both nodes; with ``wait``, return once
        the primary holds the resources (Heartbeat's first acquisition takes ~10 s)."""
        self.render()
        self.install()
        self.agents = self.agents or Agents(self.lab)
        try:
            for node in self.lab.nodes:
                self.start_node(node)
            if wait:
                self.wait_holder(self.primary, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node: str):
        """Start Heartbeat in ``node`` (binding the checkout's agents there first)."""
        self.agents.bind(node)
        self.lab.exec(node, ["mkdir", "-p", "/run/heartbeat/rsctmp"])
        self.daemons[node] = self.lab.spawn(node, [HEARTBEAT, "-f"], name="heartbeat",
                                            env=self.env)
        return self.daemons[node]

    def stop(self, timeout: float = 60.0) -> None:
        """``heartbeat -k`` in every running node (resources given up), then make sure
        no daemon of ours is left."""
        for node, spawned in list(self.daemons.items()):
            if spawned.running and self.lab.running(node) and not self.lab.frozen(node):
                self.lab.exec(node, [HEARTBEAT, "-k"], check=False, timeout=timeout)
            deadline = time.monotonic() + 10
            while spawned.running and time.monotonic() < deadline:
                time.sleep(0.05)
            spawned.stop()
        self.daemons.clear()
        if self.agents is not None:
            self.agents.close()
            self.agents = None

    # -- observing ---------------------------------------------------------------
    def vip_on(self, node: str) -> bool:
        vip = self.stack.vip
        out = self.lab.exec(node, ["ip", "-4", "-o", "addr", "show", "dev", vip.interface],
                            check=False, timeout=10).stdout
        return f" {vip.address}/" in out

    def mounted_on(self, node: str) -> bool:
        return any(m.target == self.stack.partition.directory for m in self.lab.mounts(node))

    def holds(self, node: str) -> bool:
        """The node has the VIP and the partition mounted."""
        return self.lab.running(node) and self.vip_on(node) and self.mounted_on(node)

    def holders(self) -> set[str]:
        """Nodes with the VIP or the partition (more than one: both hold something)."""
        return {node for node in self.lab.nodes if self.lab.running(node)
                and (self.mounted_on(node) or self.vip_on(node))}

    def wait_holder(self, node: str, timeout: float) -> float:
        """Wait until ``node`` holds the resources; the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.holds(node):
                    return time.monotonic()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise HeartbeatError(f"{node} does not hold the resources after {timeout}s; "
                                     f"its log ends:\n{self.log(node)[-3000:]}")
            time.sleep(0.05)

    def log(self, node: str) -> str:
        try:
            return (self.lab.node_dir(node) / "var-log" / Path(LOGFILE).name).read_text(
                errors="replace")
        except FileNotFoundError:
            return ""

    def dead_declared(self, node: str) -> list[str]:
        """Lines of ``node``'s log where it declared its peer dead (a failover)."""
        return [line for line in self.log(node).splitlines() if ": is dead" in line]


def _shell_assignments(text: str) -> dict[str, str]:
    """NAME=value lines of a /etc/default file (no quoting in what the renderer writes)."""
    out = {}
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq and not line.lstrip().startswith("#") and name.strip().isidentifier():
            out[name.strip()] = value.strip()
    return out


def soak(lab, stack, timing: Timing, seconds: float) -> dict:
    """Heartbeat idle in both nodes for up to ``seconds``, to see whether ``timing`` holds
    here: ``{"seconds": how long it ran, "false_failover": the first log line declaring
    a peer dead (None: none), "late_ms": the intervals Heartbeat logged as late}``."""
    import re
    for node in lab.nodes:
        (lab.node_dir(node) / "var-log" / Path(LOGFILE).name).unlink(missing_ok=True)
    hb = Heartbeat(lab, stack, timing).start()
    start, dead = time.monotonic(), None
    try:
        while time.monotonic() - start < seconds and not dead:
            time.sleep(1)
            dead = next((line for node in lab.nodes for line in hb.dead_declared(node)), None)
        late = [int(ms) for node in lab.nodes for ms in
                re.findall(r"Late heartbeat: Node \S+: interval (\d+) ms", hb.log(node))]
        return {"seconds": time.monotonic() - start, "false_failover": dead, "late_ms": late}
    finally:
        hb.stop()


def start_heartbeat(lab, stack, timing: Timing = LAB_TIMING, wait: bool = True) -> Heartbeat:
    """Heartbeat rendered from ``stack`` and running in both nodes of ``lab``."""
    return Heartbeat(lab, stack, timing).start(wait=wait)


def stop_heartbeat(hb: Heartbeat) -> None:
    hb.stop()
