"""The lab's switches and client: bridges and a client namespace, built with ``ip``.

The host side of the lab is three Linux bridges (service LAN, heartbeat LAN,
BMC network), each with a fixed MAC: a bridge otherwise takes the lowest MAC
of its ports and changes it when a node's cable comes or goes, leaving stale
ARP entries behind (pitfall P6). Only the BMC bridge carries host addresses:
the host's own and one per BMC. IPv6 link-local addressing is off on every
lab interface, so the lab sends nothing outside 198.18.0.0/15.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from ipaddress import IPv4Network
from pathlib import Path

from .naming import CLIENT_IFACE, LINKS, Plan, used_networks_from_ip_json


class NetError(RuntimeError):
    """An ``ip`` command failed."""


def ip(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], input=input, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def ip_batch(lines: list[str], netns: str | None = None) -> None:
    prefix = ["-n", netns] if netns else []
    ip(*prefix, "-batch", "-", input="\n".join(lines) + "\n")


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_list() -> list[str]:
    out = ip("-j", "netns", "list", check=False).strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def used_networks() -> list[IPv4Network]:
    """IPv4 networks in use in the root namespace and in every named namespace."""
    nets = used_networks_from_ip_json(json.loads(ip("-j", "-4", "addr") or "[]"),
                                      json.loads(ip("-j", "-4", "route", "show", "table", "all") or "[]"))
    for netns in netns_list():
        addrs = ip("-n", netns, "-j", "-4", "addr", check=False).strip()
        nets += used_networks_from_ip_json(json.loads(addrs) if addrs else [], [])
    return nets


def create_bridges(plan: Plan, bmc_addrs: list[str]) -> None:
    lines = []
    for link in LINKS:
        bridge = plan.bridge(link)
        lines += [f"link add {bridge} address {plan.bridge_mac(link)} type bridge "
                  "stp_state 0 forward_delay 0",
                  f"link set {bridge} addrgenmode none",
                  f"link set {bridge} up"]
    prefixlen = plan.subnets["bmc"].prefixlen
    for addr in [str(plan.host_bmc_addr), *bmc_addrs]:
        lines.append(f"addr add {addr}/{prefixlen} dev {plan.bridge('bmc')}")
    ip_batch(lines)


CLIENT_HOLDER = ["unshare", "--net", "--", "sleep", "infinity"]


def wire_client(plan: Plan, holder: int) -> None:
    """Plug the client into the service LAN: ``holder`` is a process running CLIENT_HOLDER.

    Like a node, the client is an anonymous network namespace held by one
    process: it needs no ``ip netns`` name (and so no /run/netns mount) and
    vanishes with its holder.
    """
    wire_namespace(holder, "client", plan.client_veth, plan.client_veth_mac, plan.client_mac,
                   plan.bridge("lan"), f"{plan.client_addr}/{plan.subnets['lan'].prefixlen}")


def wire_arbiter(plan: Plan, holder: int) -> None:
    """Plug the arbiter (the quorum device's corosync-qnetd) into the BMC network."""
    wire_namespace(holder, "arbiter", plan.arbiter_veth, plan.arbiter_veth_mac, plan.arbiter_mac,
                   plan.bridge("bmc"), f"{plan.arbiter_addr}/{plan.subnets['bmc'].prefixlen}")


def wire_namespace(holder: int, what: str, veth: str, veth_mac: str, mac: str, bridge: str,
                   addr: str) -> None:
    """A veth from ``bridge`` into the anonymous network namespace of ``holder``, as its
    eth0 with address ``addr`` (IPv6 off, like every lab interface)."""
    wait_new_netns(holder)
    enter = ["nsenter", f"--target={holder}", "--net", "--"]
    subprocess.run(enter + ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"],
                   check=True, capture_output=True, timeout=30)
    ip_batch([f"link add {veth} address {veth_mac} type veth "
              f"peer name {CLIENT_IFACE} address {mac} netns {holder}",
              f"link set {veth} addrgenmode none",
              f"link set {veth} master {bridge} up"])
    lines = ["link set lo up", f"addr add {addr} dev {CLIENT_IFACE}", f"link set {CLIENT_IFACE} up"]
    proc = subprocess.run(enter + ["ip", "-batch", "-"], input="\n".join(lines) + "\n", text=True,
                          capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise NetError(f"{what} network: {proc.stderr.strip()}")


def wait_new_netns(pid: int, timeout: float = 5.0) -> None:
    """Wait until ``pid`` (an unshare) has left our network namespace."""
    own = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + timeout
    while os.readlink(f"/proc/{pid}/ns/net") == own:
        if time.monotonic() > deadline:
            raise NetError(f"process {pid} did not enter a new network namespace")
        time.sleep(0.002)


def pids_in_netns(netns: str) -> list[int]:
    """Host pids of every process whose network namespace is ``netns`` (``net:[inode]``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == netns:
                    pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return pids


def delete_links(names: list[str]) -> list[str]:
    """Delete the links of ``names`` that exist; return what could not be deleted."""
    failed = []
    for name in names:
        if link_exists(name):
            proc = subprocess.run(["ip", "link", "del", name], capture_output=True, text=True, timeout=30)
            if proc.returncode != 0 and link_exists(name):
                failed.append(f"{name}: {proc.stderr.strip()}")
    return failed
