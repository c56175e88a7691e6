"""One VM of the replication tier, seen from the host: power, boot, commands.

A :class:`Guest` is built by :class:`hapack.lab.vm.VmPair` (see there for
the tour). Its QEMU is started by its BMC (``ipmi_sim`` runs the guest's
``power-on.sh`` as ``startcmd``) and found again by its pidfile; commands
go through the mailbox on the guest's 9p job folder, answered by
:mod:`hapack.lab.vmguest` inside the guest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hapack.ocf import _drbd
from hapack.procfs import children

from . import bmc as bmcmod
from . import vmkernel
from .bmc import Bmc
from .state import alive, proc_id, proc_starttime

NAMES = ("vma", "vmb")
ADDRESSES = {"vma": "198.18.0.1", "vmb": "198.18.0.2"}  # only inside the guests
PREFIX = 24
# The guests' path to the BMCs (eth1, QEMU user networking, one private net per guest):
# QEMU maps every address of BMC_NET but its DNS to the host's loopback, so BMC_HOST:<port>
# in a guest is 127.0.0.1:<port> on the host, where the BMCs listen. No route leaves BMC_NET.
BMC_NET, BMC_HOST, BMC_GUEST = "198.19.0.0/24", "198.19.0.2", "198.19.0.15/24"
RESOURCE, DEVICE, MINOR, DISK, DRBD_PORT = "r0", "/dev/drbd0", 0, "/dev/vda", 7789
JOB, SHARE = "/hapack-vm/job", "/hapack-vm/share"
HERE = Path(__file__).resolve().parent
BMC_USER = "admin"


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
               "HAPACK_BMC_ADDR": BMC_GUEST,
               "HAPACK_PYTHON": sys.executable, "HAPACK_AGENT": str(HERE / "vmguest.py")}
        (self.job / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
        (self.job / "run.sh").write_bytes((HERE / "vm_run.sh").read_bytes())
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
            "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=",  # no iPXE: -0.3 s
            # eth1: the BMCs (see BMC_HOST); restrict=on would block the host's loopback too
            "-netdev", f"user,id=n1,net={BMC_NET},host={BMC_HOST},restrict=off,ipv4=on,"
                       "ipv6=off",
            "-device", f"virtio-net-pci,netdev=n1,mac={mac[:-5]}42:{self.index + 1:02x},"
                       "romfile=",
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
        return [str(self.pair.share / "root" / "usr" / "sbin" / "fence_bmc"),
                f"--ip={b.address}", f"--ipport={b.port}", f"--username={b.username}",
                f"--password-file={b.password_file}", f"--cipher={b.cipher}",
                f"--hostname={self.name}", f"--plug={self.name}", f"--action={action}"]

    def guest_bmc(self) -> Bmc:
        """This guest's BMC as the other guest reaches it (through its eth1, see BMC_HOST)."""
        assert self.bmc is not None, "the BMC is not started"
        return dataclasses.replace(self.bmc, address=BMC_HOST)

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
        """Wait until the guest's agent listens.

        ``ready`` counts only once this boot's QEMU runs: the power-on script
        removes the previous boot's file before it starts QEMU.
        """
        deadline = time.monotonic() + timeout
        ready = self.job / "ready"
        while not (self.running() and ready.exists()):
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
        return bool(children(self.bmc_proc.pid))

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

    def drbd(self) -> _drbd.State:
        """The resource's state from the guest's /proc/drbd."""
        return _drbd.parse_proc(self.sh(f"cat {_drbd.PROC}"), MINOR)

    def wait_drbd(self, predicate, timeout: float = 30.0) -> _drbd.State:
        """Poll the resource's state until ``predicate(state)`` holds; the state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.drbd()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise VmError(f"{self.name}: DRBD still {state} after {timeout}s")
            time.sleep(0.1)

    # -- teardown ------------------------------------------------------------------------

    def kill(self) -> None:
        """End this guest's QEMU (or the power-on script about to start it) and BMC, by pid."""
        started = [proc_id(pid) for pid in children(self.bmc_proc.pid)] if self.bmc_proc else []
        victims = [ident for ident in (qemu_of(self.pidfile), *started) if ident]
        for ident in victims:
            end_process(ident, signal.SIGKILL)
        for ident in victims:  # reaped by ipmi_sim, their parent: end ipmi_sim only then
            _wait_reaped(ident, 5.0)
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


def end_process(ident, sig) -> None:
    """Send ``sig`` to ``ident`` (pid, starttime) if that process still runs."""
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
