"""hamon's trust: HMAC-SHA256 with key ids, replay window, generations, freshness, the key file."""

import dataclasses
import os

import pytest

from hapack.hamon.packet import (Heartbeat, Keyring, KeyFileError, Rejected, ReplayGuard, Status,
                                 decode, encode)
from hapack.hamon.transport import Hub, MemoryTransport, next_generation

KEYS = Keyring.parse("auth 1\n1 0123456789abcdef0123\n2 fedcba9876543210fedc\n")


def heartbeat(**kw):
    fields = dict(link=0, generation=7, seq=1, ack_generation=0, ack_seq=0, link_seq=1,
                  status=Status("node1", "primary", active=True))
    fields.update(kw)
    return Heartbeat(**fields)


def pair(links=2, window=40):
    hub = Hub()
    a = MemoryTransport(hub, "node1", KEYS, 100, "node2", links, window)
    b = MemoryTransport(hub, "node2", KEYS, 200, "node1", links, window)
    return hub, a, b


def handshake(a, b):
    """Until both sides admit each other's heartbeats."""
    for _ in range(3):
        a.send(Status("node1"))
        b.receive()
        b.send(Status("node2"))
        a.receive()
    assert a.rejected["stale"] <= 2 and b.rejected["stale"] <= 2


def test_round_trip_keeps_every_field():
    hb = heartbeat(status=Status("node1", "takeover", active=True, request="takeover"))
    assert dataclasses.replace(decode(KEYS, encode(KEYS, hb)), key_id=0) == hb


@pytest.mark.parametrize("offset", [0, 8, 20, 50, -1])
def test_a_changed_byte_is_rejected(offset):
    data = bytearray(encode(KEYS, heartbeat()))
    data[offset] ^= 0x01
    with pytest.raises(Rejected) as info:
        decode(KEYS, bytes(data))
    assert info.value.reason in ("bad-mac", "malformed")


def test_forged_with_another_key_is_rejected():
    forger = Keyring.parse("auth 1\n1 not-the-real-secret-xx\n")
    with pytest.raises(Rejected) as info:
        decode(KEYS, encode(forger, heartbeat()))
    assert info.value.reason == "bad-mac"


def test_unknown_key_id_is_rejected_and_rotation_accepts_both():
    newer = Keyring.parse("auth 2\n2 fedcba9876543210fedc\n")
    assert decode(KEYS, encode(newer, heartbeat())).key_id == 2
    with pytest.raises(Rejected) as info:
        decode(Keyring.parse("1 0123456789abcdef0123\n"), encode(newer, heartbeat()))
    assert info.value.reason == "unknown-key"


def test_short_and_garbage_packets_are_malformed():
    for data in (b"", b"HAMN", os.urandom(100)):
        with pytest.raises(Rejected) as info:
            decode(KEYS, data)
        assert info.value.reason in ("malformed", "bad-mac")


def test_replay_guard_window():
    guard = ReplayGuard()
    for seq in (5, 7, 6):
        guard.check(3, seq)
        guard.accept(3, seq)
    for seq, reason in ((6, "replay"), (7, "replay")):
        with pytest.raises(Rejected, match=reason):
            guard.check(3, seq)
    guard.accept(3, 200)
    with pytest.raises(Rejected, match="replay"):
        guard.check(3, 100)  # older than the window
    with pytest.raises(Rejected, match="old-generation"):
        guard.check(2, 500)
    guard.check(4, 1)  # a restarted peer starts over


def test_handshake_then_admitted():
    hub, a, b = pair()
    handshake(a, b)
    a.send(Status("node1", "primary"))
    got = b.receive()
    assert [hb.link for hb in got] == [0, 1]
    assert got[0].status.state == "primary"


def test_replayed_packets_are_dropped_and_counted():
    hub, a, b = pair()
    handshake(a, b)
    a.send(Status("node1", "primary", active=True))
    recorded = [(link, data) for sender, link, data in hub.tap if sender == "node1"][-2:]
    assert len(b.receive()) == 2
    for link, data in recorded:
        hub.inject("node2", link, data)
    assert b.receive() == []
    assert b.rejected["replay"] == 2


def test_recorded_packets_go_stale_once_we_moved_on():
    """An old packet replayed after our restart (new generation) does not count."""
    hub, a, b = pair()
    handshake(a, b)
    a.send(Status("node1", "released", released=True))
    recorded = [(link, data) for sender, link, data in hub.tap if sender == "node1"][-2:]
    b.receive()
    restarted = MemoryTransport(hub, "node2", KEYS, 201, "node1", 2, 40)
    for link, data in recorded:
        hub.inject("node2", link, data)
    assert restarted.receive() == []
    assert restarted.rejected["stale"] == 2


def test_packets_echoing_an_old_seq_are_stale():
    hub, a, b = pair(window=4)
    handshake(a, b)
    a.send(Status("node1"))
    old = [(link, data) for sender, link, data in hub.tap if sender == "node1"][-1]
    hub.queues["node2"].clear()
    for _ in range(5):
        b.send(Status("node2"))  # b moves on; a never echoes these
    hub.queues["node1"].clear()
    before = b.rejected["stale"]
    hub.inject("node2", *old)
    assert b.receive() == []
    assert b.rejected["stale"] == before + 1


def test_a_packet_on_the_wrong_link_or_from_the_wrong_node_is_dropped():
    hub, a, b = pair()
    handshake(a, b)
    a.send(Status("node1"))
    (link0, data0), _ = hub.queues["node2"]
    hub.queues["node2"] = [(1, data0)]
    assert b.receive() == []
    assert b.rejected["wrong-link"] == 1
    impostor = MemoryTransport(hub, "node3", KEYS, 5, "node2", 2, 40)
    impostor.seq = 10_000
    impostor.send(Status("node3"))
    hub.queues["node2"] = hub.queues.pop("node2", []) + hub.queues.get("node3", [])
    assert b.receive() == []


def test_a_cut_cable_loses_packets_on_that_link_only():
    hub, a, b = pair()
    handshake(a, b)
    hub.cut.add(("node1", 0))
    a.send(Status("node1"))
    assert [hb.link for hb in b.receive()] == [1]


def write_key(path, mode, uid=0):
    path.write_text("auth 1\n1 0123456789abcdef0123\n")
    os.chmod(path, mode)
    os.chown(path, uid, 0)
    return str(path)


def test_key_file_must_be_root_only(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown the key file")
    assert Keyring.load(write_key(tmp_path / "ok", 0o600)).send_id == 1
    for name, mode, uid in (("group", 0o640, 0), ("world", 0o604, 0), ("nobody", 0o600, 65534)):
        with pytest.raises(KeyFileError, match="root only"):
            Keyring.load(write_key(tmp_path / name, mode, uid))
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "ok")
    with pytest.raises(KeyFileError):
        Keyring.load(str(link))


@pytest.mark.parametrize("text, message", [
    ("", "no keys"), ("1 short\n", "shorter than"), ("auth 3\n1 0123456789abcdef0123\n", "auth 3"),
    ("key 1 0123456789abcdef0123\n", "expected")])
def test_bad_key_files_are_refused(text, message):
    with pytest.raises(KeyFileError, match=message):
        Keyring.parse(text)


def test_generation_grows_across_restarts(tmp_path):
    path = str(tmp_path / "state" / "generation")
    first = next_generation(path)
    assert next_generation(path) == first + 1
    assert next_generation(path) == first + 2


def test_a_packet_overtaken_on_the_other_link_does_not_roll_the_status_back():
    from hapack.hamon.membership import Membership

    class Quiet:
        def info(self, message):
            pass
        warning = info
    members = Membership(["lan", "hb"], 1.2, 0.6, Quiet())
    newer = heartbeat(seq=11, link=0, ack_seq=40, status=Status("node1", "primary", active=True))
    older = heartbeat(seq=10, link=1, ack_seq=39, status=Status("node1", "secondary"))
    members.heard(newer, 1.0)
    members.heard(older, 1.01)
    view = members.view(1.02)
    assert view.status.state == "primary" and view.ack_seq == 40
    assert [link.up for link in view.links] == [True, True]
