"""arp_mode: the VIP's gratuitous ARPs as requests or as replies, captured on the wire.

A third host captures every ARP frame on the segment with a raw AF_PACKET socket while
the VIP starts (and while a monitor refreshes it); each frame's opcode and fields are
checked, and the reply is compared field by field with what resource-agents' own
send_arp sends for the same address from the same host.
"""

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from nslab import Segment
from requires import need_root
from test_vip import VIP4, VIP6, vip, wait_neighbour  # noqa: F401 (the vip fixture)

SEND_ARP = "/usr/libexec/heartbeat/send_arp"
CAPTURE = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0x0806))
end = time.monotonic() + float(sys.argv[1])
print("ready", flush=True)
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        print(s.recv(2048)[:42].hex(), flush=True)
    except TimeoutError:
        break
"""


@pytest.fixture(scope="module")
def lan():
    """Hosts a and b (VIP holders) and c (the watcher, the client) on a segment of its
    own (not test_vip's: both modules may run in one session)."""
    need_root()
    segment = Segment("w")
    try:
        yield {name: segment.add_host(name, index)
               for name, index in (("a", 11), ("b", 12), ("c", 50))}
    finally:
        segment.close()


class Capture:
    """ARP frames seen by a host while the block runs (its socket is open first)."""

    def __init__(self, host, seconds):
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", host.name, sys.executable, "-c", CAPTURE, str(seconds)],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline() == "ready\n"

    def frames(self):
        out, _ = self.process.communicate(timeout=60)
        return [bytes.fromhex(line) for line in out.split()]


def arp(frame):
    """The fields of an Ethernet ARP frame, addresses as text."""
    mac = lambda raw: raw.hex(":")  # noqa: E731
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    return {"dst": mac(frame[0:6]), "src": mac(frame[6:12]),
            "ethertype": struct.unpack_from("!H", frame, 12)[0],
            "htype": htype, "ptype": ptype, "hlen": hlen, "plen": plen, "op": op,
            "sha": mac(frame[22:28]), "spa": socket.inet_ntoa(frame[28:32]),
            "tha": mac(frame[32:38]), "tpa": socket.inet_ntoa(frame[38:42])}


def expected(mode, mac, ip):
    return {"dst": "ff:ff:ff:ff:ff:ff", "src": mac, "ethertype": 0x0806, "htype": 1,
            "ptype": 0x0800, "hlen": 6, "plen": 4, "op": {"request": 1, "reply": 2}[mode],
            "sha": mac, "spa": ip, "tha": mac if mode == "reply" else "00:00:00:00:00:00",
            "tpa": ip}


def announcements(frames, mac):
    """The gratuitous ARPs among the frames (not the RFC 5227 probe from 0.0.0.0)."""
    return [arp(f) for f in frames if arp(f)["src"] == mac and arp(f)["spa"] == VIP4]


@pytest.mark.parametrize("mode", ["request", "reply"])
def test_start_announces_in_the_configured_mode(lan, vip, mode):  # noqa: F811
    a, watcher = lan["a"], lan["c"]
    capture = Capture(watcher, 2.0)
    params = {"ip": VIP4, "arp_count": 3, "arp_interval": 100}
    if mode == "reply":
        params["arp_mode"] = "reply"
    assert vip(a, "start", **params).returncode == 0
    seen = announcements(capture.frames(), a.mac)
    assert vip(a, "stop", **params).returncode == 0
    assert seen == [expected(mode, a.mac, VIP4)] * 3


@pytest.mark.parametrize("mode", ["request", "reply"])
def test_monitor_refreshes_in_the_configured_mode(lan, vip, mode):  # noqa: F811
    a, watcher = lan["a"], lan["c"]
    params = {"ip": VIP4, "arp_count": 1, "arp_count_refresh": 2, "arp_interval": 50,
              "arp_mode": mode}
    assert vip(a, "start", **params).returncode == 0
    capture = Capture(watcher, 1.5)
    assert vip(a, "monitor", CRM_meta_interval="10000", **params).returncode == 0
    seen = announcements(capture.frames(), a.mac)
    assert vip(a, "stop", **params).returncode == 0
    assert seen == [expected(mode, a.mac, VIP4)] * 2


def test_the_reply_is_the_one_resource_agents_send_arp_sends(lan):
    """send_arp (IPaddr2's default sender) sends a request and a reply per round; hapack's
    reply must be the same frame, its request the same as send_arp's request."""
    if not os.path.exists(SEND_ARP):
        pytest.fail(f"{SEND_ARP} is missing (Debian: resource-agents)")
    a, watcher = lan["a"], lan["c"]
    capture = Capture(watcher, 1.5)
    a.run(SEND_ARP, "-i", "100", "-r", "1", "eth0", VIP4, "auto", "not_used", "not_used")
    stock = {f["op"]: f for f in announcements(capture.frames(), a.mac)}
    assert stock == {1: expected("request", a.mac, VIP4), 2: expected("reply", a.mac, VIP4)}


def test_a_client_with_an_old_entry_follows_a_reply_takeover(lan, vip):  # noqa: F811
    a, b, client = lan["a"], lan["b"], lan["c"]
    assert vip(a, "start", ip=VIP4, arp_mode="reply").returncode == 0
    client.run("ping", "-c", "1", "-W", "2", VIP4)
    assert client.neighbour(VIP4)[0] == a.mac
    assert vip(a, "stop", ip=VIP4, arp_mode="reply").returncode == 0
    assert vip(b, "start", ip=VIP4, arp_mode="reply").returncode == 0
    assert wait_neighbour(client, VIP4, b.mac), client.neighbour(VIP4)
    assert vip(b, "stop", ip=VIP4, arp_mode="reply").returncode == 0


def test_ipv6_ignores_arp_mode_and_a_bad_mode_is_refused(lan, vip):  # noqa: F811
    a = lan["a"]
    assert vip(a, "start", ip=VIP6, arp_mode="reply").returncode == 0
    assert vip(a, "stop", ip=VIP6, arp_mode="reply").returncode == 0
    result = vip(a, "start", ip=VIP4, arp_mode="garp")
    assert result.returncode == 6 and "arp_mode" in result.stderr
    assert VIP4 not in a.run("ip", "-o", "addr").stdout
