"""vip's parameter checks and the frames it sends."""

import socket
import struct

import pytest

from hapack import announce
from hapack.ocf import vip

MAC = "02:00:c6:12:c8:0b"


@pytest.mark.parametrize("text,canonical", [
    ("198.18.0.1", "198.18.0.1"), (" 198.18.0.1 ", "198.18.0.1"),
    ("2001:DB8:0::1", "2001:db8::1"), ("::ffff:198.18.0.1", "::ffff:198.18.0.1")])
def test_canonical_ip(text, canonical):
    assert vip.canonical_ip(text) == canonical


@pytest.mark.parametrize("text", ["not-an-ip", "198.18.0", "198.18.0.256", "1::2::3", ""])
def test_bad_ip(text):
    with pytest.raises(ValueError):
        vip.canonical_ip(text)


@pytest.mark.parametrize("text,bits", [("24", 24), ("/16", 16), ("255.255.255.0", 24),
                                       ("255.255.255.255", 32), ("128", 128)])
def test_prefix_length(text, bits):
    assert vip.prefix_length(text) == bits


@pytest.mark.parametrize("text", ["0", "129", "255.0.255.0", "0.0.0.0", "abc"])
def test_bad_prefix_length(text):
    with pytest.raises(ValueError):
        vip.prefix_length(text)


@pytest.mark.parametrize("name", ["", "a" * 16, "eth0:1", "a/b", "a b"])
def test_bad_interface_names(name):
    with pytest.raises(ValueError):
        vip.interface_name(name)


def test_gratuitous_arp_frame():
    frame = announce.arp_frame(MAC, "198.18.0.100", "198.18.0.100")
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == announce.mac_bytes(MAC)
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert frame[28:32] == frame[38:42] == socket.inet_aton("198.18.0.100")


def test_arp_probe_answer_names_the_holder():
    other = "02:00:c6:12:c8:0c"
    reply = announce.arp_frame(other, "198.18.0.100", "0.0.0.0", op=2)
    assert announce.parse_arp_holder(reply, "198.18.0.100", MAC) == other
    own = announce.arp_frame(MAC, "198.18.0.100", "198.18.0.100")
    assert announce.parse_arp_holder(own, "198.18.0.100", MAC) is None


def _icmp_checksum_ok(frame):
    ip6 = frame[14:54]
    src, dst, payload = ip6[8:24], ip6[24:40], frame[54:]
    pseudo = src + dst + struct.pack("!I3xB", len(payload), 58)
    return announce._checksum(pseudo + payload) == 0


def test_unsolicited_na_frame():
    frame = announce.na_frame(MAC, "2001:db8::100")
    assert frame[:6] == b"\x33\x33\x00\x00\x00\x01"
    assert frame[20] == 58 and frame[21] == 255  # ICMPv6, hop limit 255
    assert frame[54] == announce.ICMPV6_NA
    assert struct.unpack("!I", frame[58:62])[0] == announce.NA_FLAG_OVERRIDE
    assert _icmp_checksum_ok(frame)
    other = "02:00:c6:12:c8:0c"
    assert announce.parse_na_holder(announce.na_frame(other, "2001:db8::100"),
                                    "2001:db8::100", MAC) == other


def test_dad_probe_frame_goes_to_the_solicited_node_group_from_unspecified():
    frame = announce.ns_probe_frame(MAC, "2001:db8::12:3456")
    assert frame[:6] == b"\x33\x33\xff\x12\x34\x56"
    assert frame[22:38] == bytes(16)  # source ::
    assert socket.inet_ntop(socket.AF_INET6, frame[38:54]) == "ff02::1:ff12:3456"
    assert frame[54] == announce.ICMPV6_NS and _icmp_checksum_ok(frame)


# -- the one netlink module ------------------------------------------------------------

def test_netlink_is_one_module_and_the_monitor_path_does_not_import_pyroute2():
    import importlib.util
    import subprocess
    import sys
    assert importlib.util.find_spec("hapack.iproute") is None
    code = ("import sys, hapack.ocf.vip, hapack.netlink; "
            "print(sorted(m for m in sys.modules if m.startswith(('pyroute2', 'ipaddress'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sock_diag_listeners_agree_with_proc_net():
    import os
    from hapack.netlink import listening_inodes
    with socket.socket(socket.AF_INET6) as six, socket.socket() as four:
        six.bind(("::1", 0))
        six.listen()
        port = six.getsockname()[1]
        four.bind(("127.0.0.1", port))
        four.listen()
        inodes = {os.fstat(six.fileno()).st_ino, os.fstat(four.fileno()).st_ino}
        assert listening_inodes(port) == inodes
    assert listening_inodes(port) == set()


# -- which entry is the VIP's own ------------------------------------------------------

class _Entry:
    def __init__(self, index=3, prefixlen=24, created=1234):
        self.index, self.prefixlen, self.created = index, prefixlen, created


class _Link:
    def __init__(self, name="eth0"):
        self.name = name


@pytest.mark.parametrize("entry,link,ours", [
    (_Entry(), _Link(), True),
    (_Entry(created=1235), _Link(), False),      # deleted and added again by someone
    (_Entry(prefixlen=32), _Link(), False),      # another prefix
    (_Entry(index=4), _Link(), False),           # another interface
    (_Entry(), _Link("eth1"), False),            # renamed, or another interface
    (_Entry(), None, False),                     # the link went away
])
def test_only_the_entry_start_recorded_is_ours(entry, link, ours):
    assert vip.Mark("eth0", 24, 3, 1234).matches(entry, link) is ours


def _ctx(tmp_path):
    from hapack.log import NullLogger
    from hapack.ocf.runner import Context
    from hapack.params import from_environ, parse
    env = {"OCF_RESOURCE_INSTANCE": "v1", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_ip": "198.18.0.9"}
    ctx = Context(vip.AGENT, "stop", env, None, NullLogger())
    ctx.params = parse(vip.PARAMS, from_environ(vip.PARAMS, env))
    return ctx


def test_the_record_survives_a_restart_and_a_torn_one_is_an_error(tmp_path):
    from hapack.ocf import GenericError
    ctx = _ctx(tmp_path)
    assert vip._read_mark(ctx) is None
    vip._write_mark(ctx, vip.Mark("eth0", 24, 3, 1234))
    mark = vip._read_mark(_ctx(tmp_path))
    assert (mark.nic, mark.prefixlen, mark.index, mark.created) == ("eth0", 24, 3, 1234)
    legacy = tmp_path / "hapack-vip-v1.state"
    legacy.write_text("eth0 24\n")  # written by the agent before the marks
    mark = vip._read_mark(ctx)
    assert mark.matches(_Entry(index=9, created=1), _Link()) and mark.index is None
    for torn in ("eth0 24 3", "eth0", "eth0 x 3 4", ""):
        legacy.write_text(torn)
        with pytest.raises(GenericError, match="not a record of this agent"):
            vip._read_mark(ctx)
