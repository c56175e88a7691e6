"""A real ipmi_sim BMC whose power switch really kills a stand-in node, and its tests.

:class:`SimBmc` runs OpenIPMI's ``ipmi_sim`` on loopback (its own UDP port,
its own random password, cipher suite 3, the ``guid`` RMCP+ needs) with a
``chassis_control`` hook that starts a ``sleep`` process as the "node" on
power on and SIGKILLs it on power off, optionally ``off_delay`` seconds
later, as a real chassis takes a moment to lose power. The BMC reports power
on exactly while that process lives. Every start and kill is logged with a
wall-clock stamp in ``power.log`` (the benchmark reads them).

ipmi_sim and everything its hook starts run under a small supervisor that
is a child subreaper: a killed node is reaped at once (this container's PID 1
reaps nothing) and whatever is left when the BMC stops is killed with it;
the supervisor also stops when the process that started it dies.
The fence tests (test_fence_ipmi.py) and bench/bench_fence.py use this
class; the tests here prove the simulation is faithful.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

EMU = ("mc_setbmc 0x20\n"
       "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n"
       "mc_enable 0x20\n")

HOOK = r"""#!/bin/bash
# chassis_control hook: get power | set power 0|1 | set reset 1
D=%(dir)s
# ipmi_sim does not set FD_CLOEXEC: keep its sockets out of the node
for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done
stamp() { echo "$(date +%%s.%%N) $*" >> $D/power.log; }
alive() {
  [ -s $D/node.pid ] || return 1
  local st
  st=$(cut -d' ' -f3 /proc/$(<$D/node.pid)/stat 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
power_on() {
  alive && return 0
  setsid sleep 86400 </dev/null >/dev/null 2>&1 &
  echo $! > $D/node.pid
  stamp on $!
}
power_off() {
  alive || return 0
  local pid=$(<$D/node.pid) delay=$(<$D/off_delay)
  stamp off-request $pid
  if [ "$delay" = 0 ]; then
    kill -KILL $pid; stamp off $pid
  else
    ( sleep $delay; kill -KILL $pid; stamp off $pid ) </dev/null >/dev/null 2>&1 &
  fi
}
case $1 in
  get) shift; for p in "$@"; do case $p in
         power) alive && echo power:1 || echo power:0;;
         boot) echo boot:default;;
         *) echo "Invalid parameter: $p"; exit 1;; esac; done;;
  set) shift; while [ $# -gt 0 ]; do p=$1; v=$2; shift 2; case $p in
         power) if [ "$v" = 1 ]; then power_on; else power_off; fi;;
         reset) power_off; power_on;;
         boot|identify|shutdown) ;;
         *) echo "Invalid parameter: $p"; exit 1;; esac; done;;
  *) exit 1;;
esac
exit 0
"""

SUPERVISOR = r"""
import ctypes, os, signal, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
signal.signal(signal.SIGTERM, lambda *_: sim.terminate())
libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: the test runner died
sim = subprocess.Popen(sys.argv[1:])
while True:
    pid, _ = os.wait()  # reaps killed nodes as they die
    if pid == sim.pid:
        break
for entry in os.listdir("/proc"):  # the BMC is gone: so is the power of what it started
    try:
        with open(f"/proc/{entry}/stat") as stat:
            ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        continue
    if ppid == os.getpid():
        os.kill(int(entry), signal.SIGKILL)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def free_udp_port(address):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def udp_bound(address, port):
    wanted = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/udp", encoding="ascii") as table:
        return any(line.split()[1] == wanted for line in table.readlines()[1:])


class SimBmc:
    """One ipmi_sim BMC on loopback powering one ``sleep`` node."""

    username = "admin"

    def __init__(self, workdir, *, address="127.0.0.1", off_delay=0.0, powered=True):
        self.dir = Path(workdir)
        self.address = address
        self.port = None
        self.password = secrets.token_hex(6)  # IPMI passwords are at most 16 bytes
        self.powered = powered
        self.supervisor = None
        self.set_off_delay(off_delay)

    # -- life cycle ---------------------------------------------------------
    def start(self, timeout=10.0):
        self.port = free_udp_port(self.address)
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        hook = self.dir / "power.sh"
        hook.write_text(HOOK % {"dir": self.dir})
        hook.chmod(0o755)
        (self.dir / "bmc.emu").write_text(EMU)
        (self.dir / "lan.conf").write_text(self._lan_conf(hook))
        log = open(self.dir / "ipmi_sim.log", "ab")
        self.supervisor = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, "ipmi_sim", "-c", str(self.dir / "lan.conf"),
             "-f", str(self.dir / "bmc.emu"), "-s", str(self.dir / "state"), "-n"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not udp_bound(self.address, self.port):
            if self.supervisor.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ipmi_sim did not start: {self.read('ipmi_sim.log')}")
            time.sleep(0.02)
        if self.powered:
            try:
                self.power_on()
            except BaseException:
                self.stop()
                raise
        return self

    def _lan_conf(self, hook):
        auths = "none md2 md5 straight"
        return (f'name "fence{self.port}"\nset_working_mc 0x20\n  startlan 1\n'
                f"    addr {self.address} {self.port}\n    priv_limit admin\n"
                + "".join(f"    allowed_auths_{level} {auths}\n"
                          for level in ("callback", "user", "operator", "admin"))
                + f"    guid {secrets.token_hex(16)}\n  endlan\n"
                f'  chassis_control "{hook}"\n'
                f'  user 2 true "{self.username}" "{self.password}" admin 10 {auths}\n')

    def stop(self):
        """Stop the BMC and everything it powers (only our own processes)."""
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.terminate()
            try:
                self.supervisor.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.supervisor.pid, signal.SIGKILL)
                self.supervisor.wait(10)
        if self.powered_node_alive() and self._node_is_our_sleep():  # the supervisor missed it
            os.kill(self.node_pid(), signal.SIGKILL)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the node -----------------------------------------------------------
    def read(self, name):
        try:
            return (self.dir / name).read_text()
        except FileNotFoundError:
            return ""

    def node_pid(self):
        text = self.read("node.pid").strip()
        return int(text) if text else None

    def powered_node_alive(self):
        """The node process exists and is not a zombie (what the BMC reports as on)."""
        return self._node_state() not in (None, "Z", "X")

    def _node_state(self):
        try:
            return Path(f"/proc/{self.node_pid()}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None

    def _node_is_our_sleep(self):
        try:
            return Path(f"/proc/{self.node_pid()}/cmdline").read_bytes().startswith(b"sleep\0")
        except (FileNotFoundError, ProcessLookupError):
            return False

    def set_off_delay(self, seconds):
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "off_delay").write_text("0\n" if not seconds else f"{seconds:g}\n")

    def power_on(self):
        """Power on through the BMC (so the node runs under the supervisor)."""
        result = self.ipmitool("chassis", "power", "on")
        if result.returncode != 0 or not self.powered_node_alive():
            raise RuntimeError(f"power on failed: {result.stderr or result.stdout} "
                               f"(node {self.node_pid()}: {self._node_state()})")

    def power_off_now(self):
        delay = self.read("off_delay")
        self.set_off_delay(0)
        try:
            self.ipmitool("chassis", "power", "off")
        finally:
            (self.dir / "off_delay").write_text(delay)

    def events(self, kind=None):
        """(wall-clock time, kind, pid) of every power event, oldest first."""
        rows = [line.split() for line in self.read("power.log").splitlines() if line.strip()]
        return [(float(t), k, int(p)) for t, k, p in rows if kind in (None, k)]

    # -- what an agent needs ----------------------------------------------------
    def params(self, **extra):
        params = {"ip": self.address, "ipport": str(self.port), "username": self.username,
                  "password": self.password, "cipher": "3"}
        params.update({k: str(v) for k, v in extra.items()})
        return params

    def stdin(self, **extra):
        return "".join(f"{k}={v}\n" for k, v in self.params(**extra).items())

    def ipmitool(self, *command):
        return subprocess.run(
            ["ipmitool", "-I", "lanplus", "-C", "3", "-H", self.address, "-p", str(self.port),
             "-U", self.username, "-E", *command], capture_output=True, text=True, timeout=30,
            env=dict(os.environ, IPMI_PASSWORD=self.password))


def need_ipmi_sim():
    for name in ("ipmi_sim", "ipmitool"):
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed (Debian: openipmi, ipmitool)")


@pytest.fixture
def fence_sim_bmc(tmp_path):
    need_ipmi_sim()
    with SimBmc(tmp_path / "bmc") as bmc:
        yield bmc


# -- the simulation is faithful ------------------------------------------------------

def test_the_bmc_reports_the_power_of_the_node(fence_sim_bmc):
    bmc = fence_sim_bmc
    assert bmc.powered_node_alive()
    assert "Chassis Power is on" in bmc.ipmitool("chassis", "power", "status").stdout


def test_power_off_over_ipmi_kills_the_node_and_power_on_starts_a_new_one(fence_sim_bmc):
    bmc = fence_sim_bmc
    first = bmc.node_pid()
    assert bmc.ipmitool("chassis", "power", "off").returncode == 0
    assert not bmc.powered_node_alive()
    assert not Path(f"/proc/{first}").exists()  # reaped, not a zombie
    assert "Chassis Power is off" in bmc.ipmitool("chassis", "power", "status").stdout
    assert bmc.ipmitool("chassis", "power", "on").returncode == 0
    assert bmc.powered_node_alive() and bmc.node_pid() != first
    assert [kind for _, kind, _ in bmc.events()] == ["on", "off-request", "off", "on"]


def test_a_delayed_off_keeps_the_power_on_for_a_while(fence_sim_bmc):
    bmc = fence_sim_bmc
    bmc.set_off_delay(1.0)
    bmc.ipmitool("chassis", "power", "off")
    assert "Chassis Power is on" in bmc.ipmitool("chassis", "power", "status").stdout
    deadline = time.monotonic() + 15
    while bmc.powered_node_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Chassis Power is off" in bmc.ipmitool("chassis", "power", "status").stdout


def test_stopping_the_bmc_leaves_nothing_running(tmp_path):
    need_ipmi_sim()
    bmc = SimBmc(tmp_path / "bmc").start()
    node, supervisor = bmc.node_pid(), bmc.supervisor.pid
    bmc.stop()
    assert not Path(f"/proc/{node}").exists() or not bmc.powered_node_alive()
    assert not Path(f"/proc/{supervisor}").exists()
    assert not udp_bound(bmc.address, bmc.port)
