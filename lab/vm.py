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
(:meth:`VmPair.agent`). Nothing starts DRBD: that is the agent's job.

Everything lives in one folder under ``$HAPACK_VM_RUN`` (default
``/var/tmp/hapack-vm``); :meth:`VmPair.close` ends every QEMU and ipmi_sim
it started (by pid) and removes the folder. A pair whose owning process died
is swept by the next :meth:`VmPair.start`. Use it as a context manager::

    with VmPair(vmkernel.prepare()).start() as pair:
        pair.a.sh("drbdadm up r0")
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import bmc as bmcmod
from . import vmkernel
from .bmc import Bmc
from .state import alive, global_lock, proc_id, proc_starttime, read_json, write_json

RUN_ENV = "HAPACK_VM_RUN"
DEFAULT_RUN_ROOT = Path("/var/tmp/hapack-vm")
NAMES = ("vma", "vmb")
ADDRESSES = {"vma": "198.18.0.1", "vmb": "198.18.0.2"}  # only inside the guests
PREFIX = 24
RESOURCE, DEVICE, DISK, DRBD_PORT = "r0", "/dev/drbd0", "/dev/vda", 7789
JOB, SHARE = "/hapack-vm/job", "/hapack-vm/share"
HERE = Path(__file__).resolve().parent
BINARIES = ("qemu-system-x86_64", "ipmi_sim", "ipmitool", "drbdadm", "mkfs.ext4")
BMC_USER = "admin"
# DRBD 8.4 options for ocf:hapack:partition (docs/drbd-vm.md explains each).
RECOMMENDED = {
    "net": (("protocol", "C"), ("ping-int", "1"), ("ping-timeout", "5"), ("connect-int", "1"),
            ("after-sb-0pri", "discard-zero-changes"), ("after-sb-1pri", "consensus"),
            ("after-sb-2pri", "disconnect")),
    "disk": (("on-io-error", "detach"),),
}
# Only for the tiny test disks: resync at full speed.
TEST_DISK = (("c-plan-ahead", "0"), ("resync-rate", "200M"))


class VmError(RuntimeError):
    """The VM pair could not do what it was asked."""


class GuestDown(VmError):
    """The guest is powered off (or its QEMU died) while the host waited on it."""


@dataclass(frozen=True)
class GuestResult:
    """What a command run in a guest did."""

    guest: str
    script: str
    returncode: int
    output: str  # stdout and stderr, interleaved

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class GuestCommandError(VmError):
    def __init__(self, result: GuestResult):
        super().__init__(f"{result.guest}: {result.script!r} exited {result.returncode}: "
                         f"{result.output.strip()[-2000:]}")
        self.result = result


def missing_prerequisites() -> list[str]:
    """Why a VM pair cannot run here (empty if it can)."""
    problems = [] if os.geteuid() == 0 else ["not root"]
    problems += [f"{b} not found" for b in BINARIES if shutil.which(b) is None]
    return problems


def run_root() -> Path:
    return Path(os.environ.get(RUN_ENV) or DEFAULT_RUN_ROOT)


def drbd_conf(names=NAMES, resource=RESOURCE, handler_python=sys.executable,
              disk_options=RECOMMENDED["disk"] + TEST_DISK) -> str:
    """/etc/drbd.conf of both guests (DRBD 8.4 syntax)."""
    def section(pairs):
        return " ".join(f"{key} {value};" for key, value in pairs)
    handler = f"{handler_python} -I -m hapack.ocf.partition_handler split-brain"
    hosts = "".join(f"  on {name} {{ address {ADDRESSES[name]}:{DRBD_PORT}; }}\n"
                    for name in names)
    return ("global { usage-count no; }\n"
            f"resource {resource} {{\n"
            f"  device {DEVICE};\n  disk {DISK};\n  meta-disk internal;\n"
            f"  net {{ {section(RECOMMENDED['net'])} }}\n"
            f"  disk {{ {section(disk_options)} }}\n"
            f'  handlers {{ split-brain "{handler}"; }}\n'
            f"{hosts}}}\n")


def vm_power(serial_port: int, power_on: Path) -> str:
    """lan.conf lines that make ipmi_sim a VM's power switch.

    ``startcmd`` runs at power on; power off goes over channel 15 to QEMU's
    ipmi-bmc-extern (QEMU exits at once: a hard power loss), or is a SIGTERM
    to the startcmd's process when QEMU is not connected yet. Without the
    ``serial 15 ... codec VM`` line ipmi_sim refuses chassis power control.
    """
    return (f"  serial 15 127.0.0.1 {serial_port} codec VM\n"
            f'  startcmd "{power_on}"\n'
            "  startnow false\n  poweroff_wait 2\n  kill_wait 2\n")


def free_port(kind: int) -> int:
    """A port of 127.0.0.1 free right now (kind: socket.SOCK_DGRAM or SOCK_STREAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Guest:
    """One VM: power through its BMC, commands through the mailbox."""

    def __init__(self, pair: "VmPair", name: str, index: int):
        self.pair, self.name, self.index = pair, name, index
        self.address = ADDRESSES[name]
        self.dir = pair.dir / name
        self.job = self.dir / "job"          # /hapack-vm/job inside the guest
        self.disk = self.dir / "disk.img"
        self.console = self.dir / "console.log"
        self.pidfile = self.dir / "qemu.pid"
        self.bmc_dir = self.dir / "bmc"
        self.bmc: Bmc | None = None
        self.bmc_proc: subprocess.Popen | None = None
        self.qemu = None                     # (pid, starttime) of the running QEMU
        self.boot_id = ""                    # of the boot whose agent answers
        self._seq = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Guest({self.name})"

    # -- files ---------------------------------------------------------------------

    def prepare(self, kernel: vmkernel.Kernel, mem_mib: int, disk_mib: int) -> None:
        self.job.mkdir(parents=True)
        self.bmc_dir.mkdir()
        (self.bmc_dir / "state").mkdir()
        with open(self.disk, "wb") as handle:
            handle.truncate(disk_mib << 20)
        env = {"HAPACK_NODE": self.name, "HAPACK_ADDR": f"{self.address}/{PREFIX}",
               "HAPACK_PYTHON": sys.executable, "HAPACK_AGENT": str(HERE / "vmguest.py")}
        (self.job / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        (self.job / "run.sh").write_bytes((HERE / "guest" / "run.sh").read_bytes())
        (self.job / "drbd.conf").write_text(self.pair.drbd_conf)
        os.symlink(self.pair.dir / self.peer_name / "net.sock", self.dir / "peer.sock")
        script = self.dir / "power-on.sh"
        script.write_text(self._power_on_script(kernel, mem_mib))
        script.chmod(0o755)

    @property
    def peer_name(self) -> str:
        return NAMES[1 - self.index]

    def _power_on_script(self, kernel: vmkernel.Kernel, mem_mib: int) -> str:
        stale = [self.job / "ready", self.pidfile, self.dir / "net.sock"]
        return ("#!/bin/sh\n# ipmi_sim runs this at 'chassis power on' (hapack.lab.vm)\n"
                f"cd {shlex.quote(str(self.job))} && rm -f ready.tmp cmd.* .cmd.* out.* rc.*\n"
                f"rm -f {' '.join(shlex.quote(str(p)) for p in stale)}\n"
                f"exec {shlex.join(self.qemu_argv(kernel, mem_mib))} "
                f">>{shlex.quote(str(self.dir / 'qemu.log'))} 2>&1\n")

    def qemu_argv(self, kernel: vmkernel.Kernel, mem_mib: int) -> list[str]:
        d, mac = self.dir, f"52:54:00:48:41:{self.index + 1:02x}"
        fs = "security_model=none,multidevs=remap"
        return [
            "qemu-system-x86_64", "-name", f"hapack-vm-{self.name}",
            "-accel", "tcg,tb-size=64", "-M", "q35", "-cpu", "max", "-m", str(mem_mib),
            "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
            "-chardev", f"file,id=con,path={self.console},append=on", "-serial", "chardev:con",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(kernel.initrd),
            "-append", "console=ttyS0 panic=-1 quiet",
            "-fsdev", f"local,id=root,path=/,readonly=on,{fs}",
            "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
            "-fsdev", f"local,id=job,path={self.job},{fs}",
            "-device", "virtio-9p-pci,fsdev=job,mount_tag=job",
            "-fsdev", f"local,id=share,path={self.pair.share},readonly=on,{fs}",
            "-device", "virtio-9p-pci,fsdev=share,mount_tag=share",
            "-drive", f"file={self.disk},if=none,id=d0,format=raw,cache=unsafe,discard=unmap,"
                      "detect-zeroes=unmap",
            "-device", "virtio-blk-pci,drive=d0",
            "-netdev", f"dgram,id=n0,local.type=unix,local.path={d / 'net.sock'},"
                       f"remote.type=unix,remote.path={d / 'peer.sock'}",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
            "-chardev", f"socket,id=ipmi0,host=127.0.0.1,port={self.serial_port},reconnect=1",
            "-device", "ipmi-bmc-extern,chardev=ipmi0,id=bmc0",
            "-device", "isa-ipmi-kcs,bmc=bmc0",
            "-pidfile", str(self.pidfile),
        ]

    # -- the BMC ---------------------------------------------------------------------

    def start_bmc(self) -> None:
        password_file = self.bmc_dir / "password"
        self.bmc = Bmc(node=self.name, address="127.0.0.1", port=free_port(socket.SOCK_DGRAM),
                       username=BMC_USER, password=bmcmod.new_password(),
                       password_file=str(password_file))
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.bmc.password + "\n")
        (self.bmc_dir / "lan.conf").write_text(bmcmod.render_lan_conf(
            self.bmc, f"hapack-vm-{self.name}", bmcmod.new_guid(), None,
            vm_power(self.serial_port, self.dir / "power-on.sh")))
        (self.bmc_dir / "bmc.emu").write_text(bmcmod.BMC_EMU)
        with open(self.bmc_dir / "ipmi_sim.log", "ab") as log:
            self.bmc_proc = subprocess.Popen(
                ["ipmi_sim", "-c", str(self.bmc_dir / "lan.conf"), "-f",
                 str(self.bmc_dir / "bmc.emu"), "-s", str(self.bmc_dir / "state"), "-n"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True)
        self.pair.record()
        bmcmod.wait_ready(self.bmc)

    @property
    def serial_port(self) -> int:
        return self.pair.serial_ports[self.name]

    def fence_bmc_argv(self, action: str) -> list[str]:
        """The project's ``fence_bmc`` (as installed for the pair) fencing this guest."""
        b = self.bmc
        return [str(self.pair.share / "root" / "usr" / "sbin" / "fence_bmc"), f"--ip={b.address}", f"--ipport={b.port}", f"--username={b.username}",
                f"--password-file={b.password_file}", f"--cipher={b.cipher}",
                f"--hostname={self.name}", f"--plug={self.name}", f"--action={action}"]

    def ipmi(self, *command: str) -> str:
        return bmcmod.ipmitool(self.bmc, *command)

    def power_state(self) -> str:
        """'on' or 'off', as the BMC reports it."""
        return bmcmod.parse_power_status(self.ipmi("chassis", "power", "status"))

    # -- power and boot -------------------------------------------------------------------

    def power_on(self, wait: bool = True, timeout: float = 120.0) -> None:
        """Power on through the BMC (nothing if on); wait until the agent answers."""
        if self.power_state() == "off":
            self.qemu = None
            self.ipmi("chassis", "power", "on")
        if wait:
            self.wait_ready(timeout)

    def power_off(self, timeout: float = 15.0) -> None:
        """Cut the power through the BMC (a hard power loss) and wait until QEMU is gone."""
        self.ipmi("chassis", "power", "off")
        self.wait_off(timeout)

    def wait_off(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise VmError(f"{self.name}: QEMU still runs {timeout}s after power off")
            time.sleep(0.02)

    def running(self) -> bool:
        """True while this guest's QEMU process exists."""
        if not alive(self.qemu):
            self.qemu = qemu_of(self.pidfile)
        return alive(self.qemu)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the guest's agent listens."""
        deadline = time.monotonic() + timeout
        ready = self.job / "ready"
        while not ready.exists():
            if time.monotonic() > deadline:
                raise VmError(f"{self.name} not ready after {timeout}s: {self.console_tail()}")
            if not self.running() and not self._bmc_child_alive():
                raise GuestDown(f"{self.name} is powered off: {self.console_tail()}")
            time.sleep(0.05)
        boot = ready.read_text().strip()
        if boot != self.boot_id:  # a new boot: its agent counts commands from 0
            self.boot_id, self._seq = boot, 0

    def _bmc_child_alive(self) -> bool:
        """True while ipmi_sim has a child (the power-on script or QEMU, before its pidfile)."""
        pid = self.bmc_proc.pid
        try:
            return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        except OSError:
            return False

    def console_tail(self, lines: int = 30) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "console: " + " | ".join(text.strip().splitlines()[-lines:])

    # -- commands ------------------------------------------------------------------------

    def run(self, script: str | list[str], timeout: float = 60.0) -> GuestResult:
        """Run ``script`` (sh syntax, or an argv list) in the guest; its result."""
        if isinstance(script, list):
            script = shlex.join(script)
        with self._lock:
            n = self._seq
            self._seq += 1
            tmp = self.job / f".cmd.{n}"
            tmp.write_text(json.dumps({"script": script, "timeout": timeout}))
            tmp.rename(self.job / f"cmd.{n}")
            code = self._wait_rc(n, timeout + 15.0)
            out = self.job / f"out.{n}"
            output = out.read_text(errors="replace")
            for path in (self.job / f"cmd.{n}", out, self.job / f"rc.{n}"):
                path.unlink(missing_ok=True)
        return GuestResult(self.name, script, code, output)

    def _wait_rc(self, n: int, timeout: float) -> int:
        rc = self.job / f"rc.{n}"
        deadline, poll = time.monotonic() + timeout, 0.002
        while True:
            try:
                return int(rc.read_text())
            except FileNotFoundError:
                pass
            if not self.running():
                raise GuestDown(f"{self.name} went down while running command {n}")
            if time.monotonic() > deadline:
                raise VmError(f"{self.name}: no answer to command {n} in {timeout}s")
            time.sleep(poll)
            poll = min(poll * 2, 0.02)

    def sh(self, script: str | list[str], timeout: float = 60.0) -> str:
        """Run ``script`` in the guest; its output, or GuestCommandError if it failed."""
        result = self.run(script, timeout)
        if not result.ok:
            raise GuestCommandError(result)
        return result.output

    # -- teardown ------------------------------------------------------------------------

    def kill(self) -> None:
        """End this guest's QEMU and BMC (by pid), whatever their state."""
        qemu = self.qemu if alive(self.qemu) else qemu_of(self.pidfile)
        _kill(qemu, signal.SIGKILL)
        _wait_reaped(qemu, 5.0)  # by ipmi_sim, its parent: end ipmi_sim only then
        if self.bmc_proc is not None:
            self.bmc_proc.terminate()
            try:
                self.bmc_proc.wait(5)
            except subprocess.TimeoutExpired:
                self.bmc_proc.kill()
                self.bmc_proc.wait()


def qemu_of(pidfile: Path):
    """(pid, starttime) of the QEMU that wrote ``pidfile`` and still runs, else None."""
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return proc_id(pid) if str(pidfile).encode() in cmdline else None


def _kill(ident, sig) -> None:
    if alive(ident):
        try:
            os.kill(ident[0], sig)
        except ProcessLookupError:
            pass


def _wait_reaped(ident, timeout: float) -> bool:
    """Wait until ``ident`` has left the process table (dead and reaped, not a zombie)."""
    deadline = time.monotonic() + timeout
    while ident and proc_starttime(ident[0]) == ident[1]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


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
            _kill(qemu_of(folder / name / "qemu.pid"), signal.SIGKILL)
        for bmc in state.get("bmcs", []):
            _kill(bmc, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
