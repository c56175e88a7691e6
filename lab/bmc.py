"""The nodes' power supplies: one OpenIPMI ``ipmi_sim`` BMC per node.

Each BMC listens for RMCP+ (lanplus) on its own address of the lab's BMC
network (an address of the BMC bridge in the host), port 623, with its own
user and password, and a ``chassis_control`` hook (:mod:`hapack.lab.power`)
that really powers its node on and off. Talk to it with cipher suite 3:
ipmitool's default (17) stalls 10 s per call against ipmi_sim (pitfall P1).
The ``guid`` line is what makes lanplus work at all (P2).
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path

IPMI_PORT = 623
FALLBACK_PORTS = range(16230, 16330)
CIPHER = 3
BMC_EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 50 0x0a
mc_enable 0x20
"""


class BmcError(RuntimeError):
    """A BMC did not answer, or refused the command."""


@dataclass(frozen=True)
class Bmc:
    """How to reach one node's BMC; hand it to a fence agent."""

    node: str
    address: str
    port: int
    username: str
    password: str
    password_file: str
    interface: str = "lanplus"
    cipher: int = CIPHER

    def ipmitool_argv(self, *command: str, timeout_s: int = 2, retries: int = 1) -> list[str]:
        """ipmitool argv for ``command``; the password goes by file, never on argv.

        ``-N timeout_s -R retries``: an unreachable BMC fails after about
        timeout_s * (retries + 1) seconds. ``-R 0`` would mean ipmitool's own
        default (about 20 s), so retries is at least 1.
        """
        return ["ipmitool", "-I", self.interface, "-C", str(self.cipher), "-H", self.address,
                "-p", str(self.port), "-U", self.username, "-f", self.password_file,
                "-N", str(timeout_s), "-R", str(max(1, retries)), *command]

    def fence_ipmilan_params(self) -> dict[str, str]:
        """Parameters of a ``stonith:fence_ipmilan`` resource fencing this node."""
        return {"ip": self.address, "ipport": str(self.port), "username": self.username,
                "password": self.password, "lanplus": "1", "cipher": str(self.cipher),
                "pcmk_host_list": self.node}

    def to_json(self) -> dict:
        return asdict(self)


def new_password() -> str:
    """12 hex characters: within IPMI's 16-byte password limit."""
    return secrets.token_hex(6)


def new_guid() -> str:
    return secrets.token_hex(16)


def render_lan_conf(bmc: Bmc, name: str, guid: str, chassis_control: list[str] | None,
                    power: str = "") -> str:
    """ipmi_sim's lan.conf for one BMC (ipmi_sim expands nothing: literal paths).

    The power switch is a ``chassis_control`` hook, or (chassis_control None)
    the lines in ``power``: e.g. a VM's ``serial 15 ... codec VM`` and
    ``startcmd`` (:mod:`hapack.lab.vm`).
    """
    if chassis_control is not None:
        hook = shlex.join(chassis_control)
        if '"' in hook or "\\" in hook:
            raise BmcError(f"chassis_control command cannot be quoted for ipmi_sim: {hook}")
        power = f'  chassis_control "{hook}"\n'
    auths = "none md2 md5 straight"
    return (
        f'name "{name}"\n'
        "set_working_mc 0x20\n"
        "  startlan 1\n"
        f"    addr {bmc.address} {bmc.port}\n"
        "    priv_limit admin\n"
        f"    allowed_auths_callback {auths}\n"
        f"    allowed_auths_user {auths}\n"
        f"    allowed_auths_operator {auths}\n"
        f"    allowed_auths_admin {auths}\n"
        f"    guid {guid}\n"
        "  endlan\n"
        f"{power}"
        f'  user 2 true "{bmc.username}" "{bmc.password}" admin 10 {auths}\n'
    )


def parse_proc_net_udp(text: str) -> set[tuple[str, int]]:
    """Bound (address, port) pairs from /proc/net/udp."""
    bound = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 2:
            continue
        hex_addr, hex_port = fields[1].split(":")
        addr = str(IPv4Address(bytes(reversed(bytes.fromhex(hex_addr)))))
        bound.add((addr, int(hex_port, 16)))
    return bound


def choose_port(addresses: list[str], bound: set[tuple[str, int]]) -> int:
    """623 unless something (e.g. a wildcard listener) already holds it for these addresses."""
    for port in (IPMI_PORT, *FALLBACK_PORTS):
        wanted = {(addr, port) for addr in addresses} | {("0.0.0.0", port)}
        if not wanted & bound:
            return port
    raise BmcError("no free UDP port for the BMCs")


def ipmi_sim_argv(bmc_dir: Path) -> list[str]:
    return ["ipmi_sim", "-c", str(bmc_dir / "lan.conf"), "-f", str(bmc_dir / "bmc.emu"),
            "-s", str(bmc_dir / "state"), "-n"]


def ipmitool(bmc: Bmc, *command: str, timeout: float = 15.0, timeout_s: int = 2, retries: int = 1) -> str:
    """Run one ipmitool command against ``bmc``; its stdout, or BmcError.

    ``timeout_s`` and ``retries`` are ipmitool's ``-N`` and ``-R``; ``timeout``
    bounds the whole call.
    """
    argv = bmc.ipmitool_argv(*command, timeout_s=timeout_s, retries=retries)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BmcError(f"BMC of {bmc.node} ({bmc.address}:{bmc.port}): no answer in {timeout}s") from None
    if proc.returncode != 0:
        raise BmcError(f"BMC of {bmc.node} ({bmc.address}:{bmc.port}): {' '.join(command)} failed: "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def parse_power_status(text: str) -> str:
    """'on' or 'off' from ``Chassis Power is on``."""
    for line in text.splitlines():
        if line.startswith("Chassis Power is "):
            return line.rsplit(" ", 1)[1].strip()
    raise BmcError(f"unexpected ipmitool output: {text.strip()!r}")


def wait_ready(bmc: Bmc, timeout: float = 10.0) -> None:
    """Wait until the BMC's UDP socket is bound and it answers a status request."""
    deadline = time.monotonic() + timeout
    while (bmc.address, bmc.port) not in parse_proc_net_udp(Path("/proc/net/udp").read_text()):
        if time.monotonic() > deadline:
            raise BmcError(f"BMC of {bmc.node} did not bind {bmc.address}:{bmc.port}")
        time.sleep(0.01)
    while True:
        try:
            parse_power_status(ipmitool(bmc, "chassis", "power", "status", timeout=5.0))
            return
        except BmcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
