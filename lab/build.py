"""Building and tearing down the host side of a lab (the helpers of Lab.up/down).

Each function takes what it needs explicitly; :class:`hapack.lab.core.Lab`
decides the order and records every object in ``lab.json`` before it exists.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from . import bmc as bmcmod
from . import net
from .bmc import Bmc
from .naming import LINKS, NODE_IFACES, Plan
from .power import hook_script
from .stack import write_authkey
from .state import ProcId, alive, global_lock, lab_dirs, proc_id, read_json, write_json

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("freezer", "cpuacct", "memory")
MOUNTPOINTS_FILE = ".mountpoints.json"
HERE = Path(__file__).resolve().parent
# (directory of the node's "disk", where it is mounted in the node)
NODE_BINDS = (("etc-corosync", "/etc/corosync"), ("etc-hapack", "/etc/hapack"),
              ("var-lib-pacemaker", "/var/lib/pacemaker"), ("var-lib-corosync", "/var/lib/corosync"),
              ("var-log", "/var/log"), ("hosts", "/etc/hosts"),
              ("etc-ha.d", "/etc/ha.d"), ("var-lib-heartbeat", "/var/lib/heartbeat"))
# Mount points the nodes need; created in the host if missing, removed with the last lab.
MOUNTPOINTS = ("/etc/hapack", "/var/lib/corosync", "/var/lib/pacemaker", "/etc/ha.d", "/var/lib/heartbeat")
# Heartbeat's directories, seeded from the host's as its package installed them:
# (host directory, node "disk" directory, copy the files too). /var/lib/heartbeat
# gets only its directories: its files (hb_uuid, hb_generation) are each node's own.
HOST_SEEDED = (("/etc/ha.d", "etc-ha.d", True), ("/var/lib/heartbeat", "var-lib-heartbeat", False))
PLAIN_DIRS = ("etc-corosync/uidgid.d", "etc-hapack", "var-lib-corosync", "spawn",
              "var-log/cluster", "var-log/corosync", "var-log/hapack", "var-log/crmsh")
HACLUSTER_DIRS = (("var-lib-pacemaker/cib", 0o750), ("var-lib-pacemaker/pengine", 0o750),
                  ("var-lib-pacemaker/blackbox", 0o750), ("var-lib-pacemaker/cores", 0o750),
                  ("var-log/pacemaker", 0o770), ("var-log/pacemaker/bundles", 0o770))


def node_config(plan: Plan, lab_dir: Path, node: str, stack: str, services: list[dict],
                qdevice: bool = False) -> dict:
    """What the power switch and the node's init need to know about ``node``."""
    node_dir = lab_dir / "nodes" / node
    return {
        "dir": str(node_dir), "hostname": node, "stack": stack, "services": services,
        "qdevice": qdevice,
        "freezer": str(CGROUP_ROOT / "freezer" / plan.cgroup(node)),
        "cgroups": [str(CGROUP_ROOT / c / plan.cgroup(node)) for c in CGROUP_CONTROLLERS
                    if (CGROUP_ROOT / c).is_dir()],
        "veths": [{"link": link, "host": plan.veth(node, link), "host_mac": plan.veth_mac(node, link),
                   "peer": NODE_IFACES[link], "mac": plan.node_mac(node, link),
                   "bridge": plan.bridge(link)} for link in LINKS],
        "ifaces": [{"name": NODE_IFACES[link], "addr": f"{plan.addr(node, link)}/{plan.subnets[link].prefixlen}"}
                   for link in LINKS],
        "binds": [(str(node_dir / src), dst) for src, dst in NODE_BINDS],
        "init_argv": [sys.executable, "-I", "-S", str(HERE / "nodeinit.py"), str(lab_dir), node],
    }


def hosts_text(plan: Plan, nodes: Iterable[str]) -> str:
    """The nodes' /etc/hosts: every lab address by name."""
    lines = ["127.0.0.1\tlocalhost"]
    for node in nodes:
        lines.append(f"{plan.addr(node, 'lan')}\t{node}")
        lines.append(f"{plan.addr(node, 'hb')}\t{node}-hb")
        lines.append(f"{plan.addr(node, 'bmc')}\t{node}-mgmt")
        lines.append(f"{plan.bmc_addr(node)}\t{node}-bmc")
    lines.append(f"{plan.client_addr}\tclient")
    return "\n".join(lines) + "\n"


def make_node_dirs(node_dir: Path, corosync_conf: str, authkey: bytes, cib: bytes | None,
                   hosts: str, boot_delay: float) -> None:
    """The node's persistent "disk" (pitfall P11: hacluster owns Pacemaker's dirs)."""
    hacluster, haclient = pwd.getpwnam("hacluster").pw_uid, grp.getgrnam("haclient").gr_gid
    for sub in PLAIN_DIRS:
        (node_dir / sub).mkdir(parents=True, exist_ok=True)
    for sub, mode in HACLUSTER_DIRS:
        path = node_dir / sub
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, hacluster, haclient)
        path.chmod(mode)
    (node_dir / "etc-corosync/corosync.conf").write_text(corosync_conf)
    write_authkey(node_dir / "etc-corosync/authkey", authkey)
    if cib is not None:
        cib_file = node_dir / "var-lib-pacemaker/cib/cib.xml"
        cib_file.write_bytes(cib)
        os.chown(cib_file, hacluster, haclient)
        cib_file.chmod(0o600)
    (node_dir / "hosts").write_text(hosts)
    (node_dir / "boot_delay").write_text(f"{boot_delay}\n")
    for source, sub, files in HOST_SEEDED:
        seed_from_host(Path(source), node_dir / sub, files)


def seed_from_host(source: Path, target: Path, files: bool) -> None:
    """Copy the host's ``source`` tree to ``target`` (only its directories unless
    ``files``), owners and modes kept; an empty ``target`` if the host has none."""
    target.mkdir(exist_ok=True)
    for root, _, names in os.walk(source):
        dest = target / os.path.relpath(root, source)
        dest.mkdir(exist_ok=True)
        pairs = [(Path(root), dest)]
        if files:
            pairs += [(Path(root, n), dest / n) for n in names if Path(root, n).is_file()]
        for src, dst in pairs:
            if src.is_file():
                shutil.copyfile(src, dst)
            info = src.stat()
            os.chown(dst, info.st_uid, info.st_gid)
            dst.chmod(info.st_mode & 0o7777)


def make_mountpoints(root: Path) -> None:
    """Create the mount points the nodes need but the host lacks (shared by all labs)."""
    with global_lock(root):
        record = root / MOUNTPOINTS_FILE
        created = read_json(record) if record.exists() else []
        for path in MOUNTPOINTS:
            if not os.path.isdir(path):
                os.makedirs(path, mode=0o755)
                created.append(path)
        write_json(record, created, mode=0o644)


def remove_mountpoints(root: Path, leaving: str) -> None:
    """Remove the mount points labs created, once lab ``leaving`` is the last one."""
    with global_lock(root):
        others = [d for d in lab_dirs(root) if d.name != leaving]
        record = root / MOUNTPOINTS_FILE
        if others or not record.exists():
            return
        for path in read_json(record):
            try:
                os.rmdir(path)
            except OSError:
                pass
        record.unlink()


def write_bmcs(plan: Plan, lab_dir: Path, nodes: Iterable[str]) -> dict[str, dict]:
    """lan.conf, bmc.emu and a password file per node; returns each ``Bmc`` as JSON."""
    return _write_sims("bmc", [(node, str(plan.bmc_addr(node))) for node in nodes], plan, lab_dir)


def write_pdus(plan: Plan, lab_dir: Path, nodes: Iterable[str]) -> dict[str, dict]:
    """The same for each node's PDU outlet: a second ipmi_sim on the BMC network, its own
    address, user and password, switching the same power supply as the node's BMC."""
    return _write_sims("pdu", [(node, str(plan.pdu_addr(node))) for node in nodes], plan, lab_dir)


def _write_sims(kind: str, where: list[tuple[str, str]], plan: Plan, lab_dir: Path) -> dict[str, dict]:
    port = bmcmod.choose_port([addr for _, addr in where],
                              bmcmod.parse_proc_net_udp(Path("/proc/net/udp").read_text()))
    sims = {}
    for node, address in where:
        sim_dir = lab_dir / kind / node
        (sim_dir / "state").mkdir(parents=True, exist_ok=True)
        password = bmcmod.new_password()
        password_file = sim_dir / "password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        user = f"adm-{node}" if kind == "bmc" else f"{kind}-{node}"
        sim = Bmc(node=node, address=address, port=port, username=user, password=password,
                  password_file=str(password_file))
        script = sim_dir / "power.sh"
        script.write_text(hook_script(sys.executable, lab_dir, node, lab_dir / "nodes" / node))
        script.chmod(0o755)
        hook = ["/bin/sh", str(script)]
        suffix = "" if kind == "bmc" else f"-{kind}"
        (sim_dir / "lan.conf").write_text(
            bmcmod.render_lan_conf(sim, f"{plan.prefix}-{node}{suffix}", bmcmod.new_guid(), hook))
        (sim_dir / "bmc.emu").write_text(bmcmod.BMC_EMU)
        sims[node] = sim.to_json()
    return sims


def start_host_processes(lab_dir: Path, nodes: Iterable[str],
                         record_reaper: Callable[[ProcId | None], None],
                         kinds: tuple[str, ...] = ("bmc",),
                         extra: Iterable[dict] = ()) -> tuple[subprocess.Popen, list]:
    """Start the reaper and, through it, the client's holder, one ipmi_sim per node and
    kind (``bmc``, and ``pdu`` for a lab with PDUs) and the ``extra`` commands
    (``{"argv": [...], "log": path or None}``).

    ``record_reaper`` is called with the reaper's identity as soon as it
    exists. Returns the reaper and the identities of [holder, *ipmi_sims, *extra], the
    simulators kind by kind, node by node.
    """
    commands = [{"argv": net.CLIENT_HOLDER, "log": None}]
    commands += [{"argv": bmcmod.ipmi_sim_argv(lab_dir / kind / node),
                  "log": str(lab_dir / kind / node / "ipmi_sim.log")}
                 for kind in kinds for node in nodes]
    commands += list(extra)
    with open(lab_dir / "reaper.log", "ab") as log:
        reaper = subprocess.Popen([sys.executable, "-I", "-S", str(HERE / "reaper.py")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                  start_new_session=True, text=True)
    record_reaper(proc_id(reaper.pid))
    reaper.stdin.write(json.dumps(commands) + "\n")
    reaper.stdin.close()
    line = reaper.stdout.readline()
    reaper.stdout.close()
    pids = json.loads(line) if line else None
    if not isinstance(pids, list):
        raise RuntimeError(f"the lab's reaper did not start its processes: {line.strip() or 'no answer'}")
    return reaper, [proc_id(pid) for pid in pids]


# -- the quorum device's arbiter -------------------------------------------------------
ARBITER_DIR = "arbiter"
QNETD_ETC = "/etc/corosync/qnetd"
COROSYNC_ETC = "/etc/corosync"
QDEVICE_NSSDB = "qdevice/net/nssdb"
QDEVICE_BINARIES = ("corosync-qnetd", "corosync-qnetd-certutil", "corosync-qnetd-tool",
                    "corosync-qdevice", "corosync-qdevice-net-certutil", "corosync-qdevice-tool")
# Runs argv with one directory bind-mounted, in a mount namespace of its own.
_IN_MOUNT_NS = 'mount --bind "$1" "$2" && cd "$3" && shift 3 && exec "$@"'


def arbiter_command(lab_dir: Path) -> dict:
    """The reaper's command for the arbiter: its own network and mount namespaces."""
    directory = lab_dir / ARBITER_DIR
    return {"argv": ["unshare", "--net", "--mount", "--propagation", "private", "--",
                     sys.executable, "-I", "-S", str(HERE / "arbiter.py"), str(directory)],
            "log": str(directory / "arbiter.log")}


def _with_bind(source: Path, target: str, argv: list[str], cwd: str = "/") -> None:
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _IN_MOUNT_NS,
           "sh", str(source), target, cwd, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} (with {source} on {target}) exited "
                           f"{proc.returncode}: {(proc.stderr or proc.stdout).strip()[-1000:]}")


def make_qdevice_certificates(lab_dir: Path, cluster_name: str, node_dirs: list[Path]) -> None:
    """The certificates of corosync-qnetd and both nodes' corosync-qdevice, as
    corosync-qdevice-net-certutil(8) documents them: the arbiter's CA, a certificate
    request of the first node signed by the arbiter for the cluster, and the signed
    certificate (PKCS#12) imported on every node. Each tool runs with the lab's
    directory bind-mounted over the fixed path it uses, in a mount namespace of its own."""
    arbiter = lab_dir / ARBITER_DIR / "qnetd"
    arbiter.mkdir(parents=True, exist_ok=True)
    _with_bind(arbiter, QNETD_ETC, ["corosync-qnetd-certutil", "-i"])
    ca = arbiter / "nssdb" / "qnetd-cacert.crt"
    first, *others = [d / "etc-corosync" for d in node_dirs]
    _with_bind(first, COROSYNC_ETC, ["corosync-qdevice-net-certutil", "-i", "-c", str(ca)])
    _with_bind(first, COROSYNC_ETC, ["corosync-qdevice-net-certutil", "-r", "-n", cluster_name])
    request = "qdevice-net-node.crq"
    shutil.copyfile(first / QDEVICE_NSSDB / request, arbiter / "nssdb" / request)
    _with_bind(arbiter, QNETD_ETC, ["corosync-qnetd-certutil", "-s", "-c", request,
                                    "-n", cluster_name], cwd=f"{QNETD_ETC}/nssdb")
    signed = arbiter / "nssdb" / f"cluster-{cluster_name}.crt"
    _with_bind(first, COROSYNC_ETC, ["corosync-qdevice-net-certutil", "-M", "-c", str(signed)])
    bundle = first / QDEVICE_NSSDB / "qdevice-net-node.p12"
    for other in others:
        _with_bind(other, COROSYNC_ETC, ["corosync-qdevice-net-certutil", "-i", "-c", str(ca)])
        _with_bind(other, COROSYNC_ETC, ["corosync-qdevice-net-certutil", "-m", "-c", str(bundle)])


def kill_recorded(what: str, idents: Iterable, reap: Callable[[], None] = lambda: None) -> None:
    """TERM, then KILL, the recorded processes ``idents``; wait until they are gone."""
    idents = [i for i in idents if alive(i)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in idents:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        while any(alive(i) for i in idents) and time.monotonic() < deadline:
            reap()
            time.sleep(0.005)
        if not any(alive(i) for i in idents):
            break
    reap()
    if any(alive(i) for i in idents):
        raise RuntimeError(f"{what} did not die")


def remove_client(holder: ProcId | None, reap: Callable[[], None] = lambda: None) -> None:
    """Kill every process in the network namespace of ``holder`` (the client's, the
    arbiter's), the holder included; only the holder if it has not left ours yet."""
    if not alive(holder):
        return
    netns = os.readlink(f"/proc/{holder[0]}/ns/net")
    if netns == os.readlink("/proc/self/ns/net"):
        doomed = [holder]  # still in the host's namespace: never every process of it
    else:
        doomed = [proc_id(pid) for pid in net.pids_in_netns(netns)]
    for ident in doomed:
        if alive(ident):
            os.kill(ident[0], signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(alive(i) for i in doomed):
        reap()
        if time.monotonic() > deadline:
            raise RuntimeError("client processes did not die")
        time.sleep(0.01)


def remove_cgroups(groups: Iterable[str]) -> None:
    deadline = time.monotonic() + 5.0
    for group in map(Path, groups):
        while group.exists():
            try:
                group.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
