"""Two emulated VMs with real DRBD between them: the lab's replication tier.

The host kernel has no DRBD; Debian's kernel has DRBD 8.4. A :class:`VmPair`
boots that kernel (:mod:`hapack.lab.vmkernel`) twice under QEMU's software
emulation (TCG, no KVM needed) and gives each guest:

* the host's root file system read-only over 9p under a tmpfs overlay, so the
  guest runs the project's own code, Python and drbd-utils at the host's
  paths (writes vanish at power-off);
* its own disk for DRBD (``/dev/vda``, a sparse file, discard zeroes it);
* one NIC (``eth0``) on a private link to the other guest: QEMU datagrams
  over unix sockets, no host bridge or address. Each guest sends to a
  symlink naming the other's socket; :meth:`VmPair.cut_link` removes the
  symlinks (a pulled cable, both ways), :meth:`VmPair.heal_link` puts them back;
* a control channel from the host: :meth:`Guest.run` (a mailbox on a 9p
  share, served by :mod:`hapack.lab.vmguest`);
* its power behind its own ``ipmi_sim`` BMC on 127.0.0.1 (``startcmd`` starts
  QEMU, ``serial 15 ... codec VM`` plus QEMU's ``ipmi-bmc-extern`` let the
  BMC switch it off), so ``fence_bmc`` (:meth:`Guest.fence_bmc_argv`) and
  ipmitool power a VM off for real.

Each guest has ``/etc/drbd.conf`` with one resource (:data:`RESOURCE` on
``/dev/drbd0``, :func:`drbd_conf`, the settings recommended for
``ocf:hapack:partition`` in :data:`RECOMMENDED`), DRBD's module loaded, and the
project's agents staged by ``hapack install`` under ``/hapack-vm/share/root``
(:meth:`VmPair.agent`). Nothing starts DRBD at boot: that is the agent's job;
:meth:`VmPair.reset_drbd` makes a fresh, connected, UpToDate resource with an
empty file system for a test, and :meth:`Guest.drbd` reads its state. The
host side of one guest (power, boot, commands) is :mod:`hapack.lab.vmnode`;
docs/drbd-vm.md has the whole tour.

Everything lives in one folder under ``$HAPACK_VM_RUN`` (default
``/var/tmp/hapack-vm``); :meth:`VmPair.close` ends every QEMU and ipmi_sim
it started (by pid) and removes the folder. A pair whose owning process died
is swept by the next :meth:`VmPair.start`. Use it as a context manager::

    with VmPair(vmkernel.prepare()).start() as pair:
        pair.a.sh("drbdadm up r0")
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import vmkernel
from .state import alive, global_lock, proc_id, read_json, write_json
from .vmnode import (ADDRESSES, DEVICE, DISK, DRBD_PORT, JOB, MINOR, NAMES, RESOURCE, SHARE,
                     Guest, GuestCommandError, GuestDown, GuestResult, VmError, end_process,
                     free_port, qemu_of)

__all__ = ["ADDRESSES", "DEVICE", "DISK", "JOB", "MINOR", "NAMES", "RECOMMENDED", "RESOURCE",
           "SHARE", "Guest", "GuestCommandError", "GuestDown", "GuestResult", "VmError", "VmPair",
           "drbd_conf", "missing_prerequisites", "sweep"]

RUN_ENV = "HAPACK_VM_RUN"
DEFAULT_RUN_ROOT = Path("/var/tmp/hapack-vm")
BINARIES = ("qemu-system-x86_64", "ipmi_sim", "ipmitool", "drbdadm", "mkfs.ext4")
# DRBD 8.4 options for ocf:hapack:partition (docs/drbd-vm.md explains each).
RECOMMENDED = {
    "net": (("protocol", "C"), ("ping-int", "1"), ("ping-timeout", "5"), ("connect-int", "1"),
            ("after-sb-0pri", "discard-zero-changes"), ("after-sb-1pri", "consensus"),
            ("after-sb-2pri", "disconnect")),
    "disk": (("on-io-error", "detach"),),
}
RESET_SCRIPT = f"""
while grep -qs '^{DEVICE} ' /proc/mounts; do umount {DEVICE} || exit 1; done
drbdadm down {RESOURCE} 2>/dev/null
blkdiscard -z {DISK} || exit 1
drbdadm create-md --force {RESOURCE} >/dev/null 2>&1 && drbdadm up {RESOURCE}
"""
# Only for the tiny test disks: resync at full speed.
TEST_DISK = (("c-plan-ahead", "0"), ("resync-rate", "200M"))


def missing_prerequisites() -> list[str]:
    """Why a VM pair cannot run here (empty if it can)."""
    problems = [] if os.geteuid() == 0 else ["not root"]
    problems += [f"{b} not found" for b in BINARIES if shutil.which(b) is None]
    return problems


def run_root() -> Path:
    return Path(os.environ.get(RUN_ENV) or DEFAULT_RUN_ROOT)


def drbd_conf(names=NAMES, resource=RESOURCE, handler_python=sys.executable,
              disk_options=RECOMMENDED["disk"] + TEST_DISK, net_options=RECOMMENDED["net"]) -> str:
    """/etc/drbd.conf of both guests (DRBD 8.4 syntax)."""
    def section(pairs):
        return " ".join(f"{key} {value};" for key, value in pairs)
    handler = f"{handler_python} -I -m hapack.ocf.partition_handler split-brain"
    hosts = "".join(f"  on {name} {{ address {ADDRESSES[name]}:{DRBD_PORT}; }}\n"
                    for name in names)
    return ("global { usage-count no; }\n"
            f"resource {resource} {{\n"
            f"  device {DEVICE};\n  disk {DISK};\n  meta-disk internal;\n"
            f"  net {{ {section(net_options)} }}\n"
            f"  disk {{ {section(disk_options)} }}\n"
            f'  handlers {{ split-brain "{handler}"; }}\n'
            f"{hosts}}}\n")


class VmPair:
    """Two guests, ``a`` (vma) and ``b`` (vmb), with DRBD between them (see the module doc)."""

    def __init__(self, kernel: vmkernel.Kernel | None = None, *, mem_mib: int = 256,
                 disk_mib: int = 64, root: Path | None = None):
        self.kernel = kernel
        self.mem_mib, self.disk_mib = mem_mib, disk_mib
        self.root = run_root() if root is None else root
        self.dir: Path | None = None
        self.guests: dict[str, Guest] = {}
        self.serial_ports: dict[str, int] = {}
        self.drbd_conf = drbd_conf()

    @property
    def a(self) -> Guest:
        return self.guests[NAMES[0]]

    @property
    def b(self) -> Guest:
        return self.guests[NAMES[1]]

    @property
    def share(self) -> Path:
        """A host folder every guest sees read-only at /hapack-vm/share."""
        return self.dir / "share"

    def agent(self, name: str) -> str:
        """Path, inside the guests, of the installed OCF agent ``ocf:hapack:<name>``."""
        return f"{SHARE}/root/usr/lib/ocf/resource.d/hapack/{name}"

    def start(self, timeout: float = 120.0) -> "VmPair":
        """Build everything and boot both guests; on failure everything is removed."""
        problems = missing_prerequisites()
        if problems:
            raise VmError("a VM pair cannot run here: " + "; ".join(problems))
        kernel = self.kernel or vmkernel.prepare()
        try:
            self._build(kernel)
            for guest in self.guests.values():
                guest.start_bmc()
            for guest in self.guests.values():
                guest.power_on(wait=False)
            for guest in self.guests.values():
                guest.wait_ready(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _build(self, kernel: vmkernel.Kernel) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with global_lock(self.root):
            sweep(self.root)
            self.dir = Path(tempfile.mkdtemp(prefix="pair-", dir=self.root))
            self.dir.chmod(0o755)
            self.record()
        self.share.mkdir(mode=0o755)
        subprocess.run([sys.executable, "-m", "hapack.cli", "install", "--root",
                        str(self.share / "root")], check=True, capture_output=True)
        for index, name in enumerate(NAMES):
            self.serial_ports[name] = free_port(socket.SOCK_STREAM)
            self.guests[name] = Guest(self, name, index)
        for guest in self.guests.values():
            guest.prepare(kernel, self.mem_mib, self.disk_mib)

    def record(self) -> None:
        """pair.json: the owner and the BMC processes, for :func:`sweep`."""
        write_json(self.dir / "pair.json", {
            "owner": proc_id(os.getpid()),
            "bmcs": [proc_id(g.bmc_proc.pid) for g in self.guests.values() if g.bmc_proc]})

    def both(self, work):
        """``work(guest)`` in both guests at once; the results, a's first."""
        with ThreadPoolExecutor(len(self.guests)) as pool:
            return list(pool.map(work, self.guests.values()))

    def reset_drbd(self, fstype: str = "ext4") -> None:
        """A fresh resource: both guests on, the link up, zeroed disks, new metadata, DRBD up
        and connected, UpToDate on both without a resync, an empty file system, both Secondary.

        Whatever is mounted from the resource is unmounted first; a process still holding
        it makes this fail.
        """
        self.heal_link()
        self.both(lambda guest: guest.power_on())
        self.both(lambda guest: guest.sh(RESET_SCRIPT, timeout=60))
        self.a.wait_drbd(lambda state: state.connected)
        self.a.sh(f"drbdadm -- --clear-bitmap new-current-uuid {RESOURCE}")
        for guest in self.guests.values():
            guest.wait_drbd(lambda state: state.disk == state.peer_disk == "UpToDate")
        options = "-q -F -E nodiscard" if fstype.startswith("ext") else ""
        self.a.sh(f"drbdadm primary {RESOURCE} && mkfs.{fstype} {options} {DEVICE} && "
                  f"drbdadm secondary {RESOURCE}")

    # -- faults -------------------------------------------------------------------------

    def cut_link(self) -> None:
        """Pull the cable between the guests: neither receives what the other sends."""
        for guest in self.guests.values():
            (guest.dir / "peer.sock").unlink(missing_ok=True)

    def heal_link(self) -> None:
        for guest in self.guests.values():
            link = guest.dir / "peer.sock"
            if not link.is_symlink():
                os.symlink(self.dir / guest.peer_name / "net.sock", link)

    @property
    def link_cut(self) -> bool:
        return not all((g.dir / "peer.sock").is_symlink() for g in self.guests.values())

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """End every QEMU and BMC this pair started and remove its folder."""
        for guest in self.guests.values():
            guest.kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "VmPair":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sweep(root: Path) -> list[Path]:
    """Remove pairs whose owning process died (their QEMUs and BMCs first); what was removed."""
    removed = []
    for folder in sorted(root.glob("pair-*")):
        try:
            state = read_json(folder / "pair.json")
        except (OSError, ValueError):
            state = {}
        if alive(state.get("owner")):
            continue
        for name in NAMES:
            end_process(qemu_of(folder / name / "qemu.pid"), signal.SIGKILL)
        for bmc in state.get("bmcs", []):
            end_process(bmc, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
