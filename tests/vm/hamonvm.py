"""hamon in both guests of a VM pair: the stack file, the daemons, what the host observes.

:class:`HamonVm` writes a stack file for the pair (the partition agent on real
DRBD, a VIP on the guests' link, a stateful ``writer`` layer that appends
fsync'd records to the partition, ``fence_bmc`` against the guests' BMCs
through their second NIC, :data:`hapack.lab.vmnode.BMC_HOST`) and starts, in a
guest that has just booted, what systemd would: the DRBD sampler
(``drbdwatch.py``) and ``hamon run``. Everything the host reads comes through
the guests' job folders, which outlive their reboots: ``hamon-events.jsonl``,
``drbd.now``/``drbd.log`` and ``acks``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from hapack.lab import vm
from hapack.lab.vmnode import BMC_HOST, PREFIX

HERE = Path(__file__).resolve().parent
HAMON = os.path.join(os.path.dirname(sys.executable), "hamon")
DIR = f"{vm.SHARE}/hamon"                  # the guests' view of share/hamon
MOUNT = "/mnt/r0"
RECORDS = f"{MOUNT}/writer/records"
VIP = "198.18.0.100"
# TCG: a fence_bmc call takes 3.5-5.5 s in an idle guest (Python and pyghmi under
# emulation), an agent call 1-3 s; under the load of parallel test runs (load average 25
# on 2 cores) heartbeats came 10 s late, a VIP start took 15 s, a promote more than 60 s and
# a fence_bmc status more than 35 s. hamon's defaults (200 ms / 1.2 s / 1 s) assume hardware.
TIMING = {"interval": "1s", "dead_time": "20s", "initdead": "60s", "fence_delay": "20s",
          "fence_timeout": "90s", "fence_retry_interval": "10s"}
OPS = {"start_timeout": "180s", "stop_timeout": "180s", "monitor_interval": "30s",
       "monitor_timeout": "90s"}
PARTITION_OPS = {**OPS, "promote_timeout": "180s", "demote_timeout": "180s",
                 "promoted_monitor_interval": "20s"}
# DRBD's net options stay the recommended ones: with ping-timeout 30 (3 s, against spurious
# disconnects under load) a crashed primary's return never reconnected (runs 4 and 6,
# docs/campaign.md); with the recommended 5 it resynced at once (run 7).
NET = ()
# The campaign's resync is slowed down so that a fault can land inside one.
RESYNC_RATE = "4M"
PIDS = "/run/hamon-vm.pids"


def toml(table: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())


def stack_text(pair: vm.VmPair, timing: dict) -> str:
    nodes = "".join(
        f'[[nodes]]\nname = "{g.name}"\n[nodes.bmc]\ndriver = "ipmi"\naddress = "{BMC_HOST}"\n'
        f'port = {g.bmc.port}\nusername = "{g.bmc.username}"\n'
        f'password_file = "{DIR}/{g.name}.password"\nlanplus = true\ncipher = {g.bmc.cipher}\n\n'
        for g in pair.guests.values())
    addresses = ", ".join(f'{n} = "{a}/{PREFIX}"' for n, a in vm.ADDRESSES.items())
    settings = {"key_file": f"{DIR}/hamon.key", "state_dir": "/var/lib/hamon",
                "event_log": f"{vm.JOB}/hamon-events.jsonl",
                "ocf_root": f"{vm.SHARE}/root/usr/lib/ocf",
                "fence_agent": f"{vm.SHARE}/root/usr/sbin/fence_bmc", **timing}
    table = toml(settings)
    return (f'[cluster]\nname = "hamon-vm"\n\n{nodes}'
            f'[[links]]\nname = "link"\ninterface = "eth0"\naddresses = {{ {addresses} }}\n\n'
            f'[vip]\naddress = "{VIP}"\n[vip.params]\narp_count = 1\ndad_timeout = 50\n'
            f'[vip.ops]\n{toml(OPS)}\n'
            f'[partition]\nbackend = "drbd"\ndevice = "{vm.DEVICE}"\ndirectory = "{MOUNT}"\n'
            f'fstype = "ext4"\ndrbd_resource = "{vm.RESOURCE}"\n[partition.ops]\n'
            f'{toml(PARTITION_OPS)}\n'
            f'[[layers]]\nname = "writer"\nagent = "ocf:heartbeat:anything"\nkind = "stateful"\n'
            f'data_dir = "{MOUNT}/writer"\n[layers.params]\nbinfile = "{sys.executable}"\n'
            f'cmdline_options = "-I {DIR}/writer.py {RECORDS} {vm.JOB}/acks"\n'
            'pidfile = "/run/hamon-writer.pid"\nlogfile = "/run/hamon-writer.log"\n'
            f'[layers.ops]\n{toml(OPS)}\n'
            f"[hamon]\n{table}")


def replace(options: tuple, changes: tuple) -> tuple:
    keys = {key for key, _ in changes}
    return tuple(o for o in options if o[0] not in keys) + changes


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class HamonVm:
    """hamon, the DRBD sampler and the writer's stack in the guests of ``pair``."""

    def __init__(self, pair: vm.VmPair, timing: dict | None = None):
        self.pair = pair
        self.dir = pair.share / "hamon"
        self.timing = dict(TIMING if timing is None else timing)

    def setup(self) -> "HamonVm":
        self.dir.mkdir(exist_ok=True)
        write_private(self.dir / "hamon.key", f"auth 1\n1 {os.urandom(32).hex()}\n")
        for guest in self.pair.guests.values():
            write_private(self.dir / f"{guest.name}.password", guest.bmc.password + "\n")
        for name in ("writer.py", "drbdwatch.py"):
            shutil.copy(HERE / name, self.dir / name)
        (self.dir / "stack.toml").write_text(stack_text(self.pair, self.timing))
        ocf = self.pair.share / "root" / "usr" / "lib" / "ocf"
        for name in ("lib", "resource.d/heartbeat"):
            if not (ocf / name).exists():
                (ocf / name).symlink_to(f"/usr/lib/ocf/{name}")
        self.set_drbd_conf(vm.drbd_conf(net_options=replace(vm.RECOMMENDED["net"], NET),
                                        disk_options=vm.RECOMMENDED["disk"] + (
            ("c-plan-ahead", "0"), ("resync-rate", RESYNC_RATE))))
        for guest in self.pair.guests.values():
            for name in ("acks", "hamon-events.jsonl", "drbd.log", "drbd.now", "hamon.log"):
                (guest.job / name).unlink(missing_ok=True)
        return self

    def set_drbd_conf(self, text: str) -> None:
        """/etc/drbd.conf of both guests, now and at their next boots."""
        for guest in self.pair.guests.values():
            (guest.job / "drbd.conf").write_text(text)
            if guest.running():
                guest.sh(f"cp {vm.JOB}/drbd.conf /etc/drbd.conf")

    def start(self, guest) -> None:
        """What systemd would start at boot: the DRBD sampler and hamon."""
        guest.sh(f"setsid {sys.executable} -I {DIR}/drbdwatch.py {vm.JOB} "
                 "</dev/null >/dev/null 2>&1 & echo $! > " + PIDS + "; "
                 f"setsid {HAMON} run --config {DIR}/stack.toml --node {guest.name} "
                 f"</dev/null >>{vm.JOB}/hamon.log 2>&1 & echo $! >> {PIDS}")

    def stop(self, guest, timeout: float = 90.0) -> None:
        """SIGTERM hamon (it stops the stack in reverse) and wait until it is gone."""
        guest.sh(f"set -- $(cat {PIDS}); kill $2; i=0; "
                 f"while kill -0 $2 2>/dev/null && [ $i -lt {int(timeout * 5)} ]; do "
                 "sleep 0.2; i=$((i+1)); done; kill $1; ! kill -0 $2 2>/dev/null",
                 timeout=timeout + 10)

    # -- what the host observes ---------------------------------------------------------

    def events(self, guest, kind: str | None = None) -> list[dict]:
        try:
            lines = (guest.job / "hamon-events.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # a line being written
        return [e for e in events if kind is None or e["event"] == kind]

    def hamon_state(self, guest) -> str:
        """The state of the guest's hamon from its last transition ('' before the first)."""
        moves = self.events(guest, "transition")
        return moves[-1]["to"] if moves else ""

    def drbd_now(self, guest, fresh: float = 2.0) -> list[str] | None:
        """[role, peer role, cstate, disk, peer disk] sampled within ``fresh`` s, else None."""
        path = guest.job / "drbd.now"
        try:
            if time.time() - path.stat().st_mtime > fresh:
                return None
            return path.read_text().split()[2:]
        except (OSError, ValueError):
            return None

    def acks(self) -> list[int]:
        """Every record number acknowledged by a writer, in either guest."""
        acked = []
        for guest in self.pair.guests.values():
            path = guest.job / "acks"
            text = path.read_text() if path.exists() else ""
            acked += [int(line) for line in text.split("\n")[:-1] if line]
        return acked

    def drbd_log(self, guest) -> list[list[str]]:
        try:
            return [line.split() for line in (guest.job / "drbd.log").read_text().splitlines()]
        except FileNotFoundError:
            return []


class PrimarySampler:
    """Samples both guests' DRBD roles every 0.1 s in a thread; two fresh Primaries are kept."""

    def __init__(self, rig: HamonVm):
        self.rig = rig
        self.samples = 0
        self.doubles: list[tuple[float, list]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="primary-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            states = [self.rig.drbd_now(g, fresh=1.0) for g in self.rig.pair.guests.values()]
            self.samples += 1
            if all(s and s[0] == "Primary" for s in states):
                self.doubles.append((time.time(), states))
            self._stop.wait(0.1)

    def __enter__(self) -> "PrimarySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
