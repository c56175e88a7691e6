"""PID 1 of a lab node: ``nodeinit.py <lab dir> <node>`` (standard library only).

Runs inside the node's fresh namespaces (started by the power switch) and
boots it like a small init system:

1. hostname; private ``/sys`` (this netns's view), ``/run``, ``/dev/shm`` and
   ``/tmp`` (tmpfs); the node's persistent "disk" directories bind-mounted
   onto /etc/corosync, /etc/hapack, /var/lib/pacemaker, /var/lib/corosync,
   /var/log, /etc/ha.d, /var/lib/heartbeat, plus its own /etc/hosts;
2. the simulated POST (``boot_delay`` seconds, from ``nodes/<node>/boot_delay``);
3. network: lo, eth0 (service LAN), eth1 (heartbeat LAN), eth2 (BMC net);
4. the cluster stack, if any: ``corosync -f``, then (with a quorum device)
   ``corosync-qdevice -f``, then ``pacemakerd``;
5. the boot services of the lab (``Lab(services=...)``);
6. reaps orphans forever. It never exits: its death is the node's death.

Each stage is appended to ``nodes/<node>/boot`` as ``stage monotonic wall``.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC = 2, 4, 8, 4096, 16384
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
PACEMAKER_ENV = {"PCMK_logfile": "/var/log/pacemaker/pacemaker.log", "PCMK_logfacility": "none"}
IFACE_TIMEOUT = 10.0
COROSYNC_TIMEOUT = 20.0

_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


class Init:
    def __init__(self, lab_dir: Path, node: str):
        self.cfg = json.loads((lab_dir / "lab.json").read_text())["nodes"][node]
        self.dir = Path(self.cfg["dir"])
        self.node = node

    def stage(self, name: str) -> None:
        with open(self.dir / "boot", "a") as handle:
            handle.write(f"{name} {time.monotonic():.6f} {time.time():.6f}\n")
        print(f"[{time.strftime('%H:%M:%S')}] {self.node}: {name}", flush=True)

    def boot(self) -> None:
        self.stage("init")
        socket.sethostname(self.cfg["hostname"])
        self.filesystems()
        self.sysctl()
        self.stage("post")
        time.sleep(self.boot_delay())
        self.network()
        self.stage("network")
        if self.cfg["stack"] == "pacemaker":
            self.pacemaker()
            self.stage("stack")
        for service in self.cfg.get("services", []):
            self.start(service["name"], service["argv"], service.get("env", {}),
                       Path("/var/log/hapack") / f"{service['name']}.log")
        self.stage("up")

    def boot_delay(self) -> float:
        try:
            return max(0.0, float((self.dir / "boot_delay").read_text()))
        except (FileNotFoundError, ValueError):
            return 0.0

    def filesystems(self) -> None:
        mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
        for sub in ("lock", "crm", "resource-agents", "corosync", "hapack"):
            os.makedirs(f"/run/{sub}", exist_ok=True)
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        for source, target in self.cfg["binds"]:
            mount(source, target, None, MS_BIND)

    def sysctl(self) -> None:
        # IPv4 only: no link-local IPv6 chatter from the lab's interfaces.
        for key in ("all", "default"):
            Path(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6").write_text("1\n")

    def network(self) -> None:
        wanted = [iface["name"] for iface in self.cfg["ifaces"]]
        deadline = time.monotonic() + IFACE_TIMEOUT
        while not all(Path("/sys/class/net", name).exists() for name in wanted):
            if time.monotonic() > deadline:
                raise RuntimeError(f"interfaces {wanted} did not appear")
            time.sleep(0.01)
        lines = ["link set lo up"]
        for iface in self.cfg["ifaces"]:
            lines.append(f"addr add {iface['addr']} dev {iface['name']}")
            lines.append(f"link set {iface['name']} up")
        subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)

    def pacemaker(self) -> None:
        env = dict(BASE_ENV, **PACEMAKER_ENV)
        self.start("corosync", ["corosync", "-f"], env, Path("/var/log/cluster/corosync.stdout"))
        deadline = time.monotonic() + COROSYNC_TIMEOUT
        while subprocess.run(["corosync-cfgtool", "-s"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("corosync did not answer corosync-cfgtool -s")
            time.sleep(0.05)
        self.stage("corosync")
        if self.cfg.get("qdevice"):
            os.makedirs("/run/corosync-qdevice", exist_ok=True)
            self.start("corosync-qdevice", ["corosync-qdevice", "-f"], env,
                       Path("/var/log/cluster/corosync-qdevice.log"))
            self.stage("qdevice")
        self.start("pacemakerd", ["pacemakerd"], env, Path("/var/log/pacemaker/pacemakerd.stdout"))

    @staticmethod
    def start(name: str, argv: list[str], env: dict, log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=dict(BASE_ENV, **env), close_fds=True, cwd="/")


def reap_forever() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1.0)
        except InterruptedError:
            continue


def main(argv: list[str]) -> int:
    os.closerange(3, 65536)
    init = Init(Path(argv[0]), argv[1])
    try:
        init.boot()
    except Exception as exc:  # noqa: BLE001 - PID 1 must survive a failed boot
        init.stage(f"failed:{type(exc).__name__}")
        print(f"{init.node}: boot failed: {exc}", flush=True)
    reap_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
