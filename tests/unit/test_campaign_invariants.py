"""The campaign's invariant checkers on recorded samples (no lab): each is tried on
histories that keep the invariant and on many that break it, at every position."""

import json
import random

import pytest

from hapack.lab import arpwatch, campaign, invariants

N1, N2 = "node1", "node2"
MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
MACS = {MAC1: N1, MAC2: N2}


def holders_history(rnd, n):
    """A plausible history of partition holders: one node, nobody, the other."""
    return [(1000.0 + i * 0.05, frozenset(rnd.choice([(N1,), (), (N2,)]))) for i in range(n)]


@pytest.mark.parametrize("seed", range(30))
def test_a_single_holder_at_a_time_is_never_a_double_mount(seed):
    assert invariants.double_mounts(holders_history(random.Random(seed), 300)) == []


@pytest.mark.parametrize("seed", range(30))
def test_one_sample_with_both_holders_anywhere_is_found(seed):
    rnd = random.Random(seed)
    samples = holders_history(rnd, 300)
    at = rnd.randrange(len(samples))
    samples[at] = (samples[at][0], frozenset((N1, N2)))
    found = invariants.double_mounts(samples)
    assert [v.wall for v in found] == [samples[at][0]]
    assert "node1" in found[0].detail and "node2" in found[0].detail


def arp_history(rnd, requests):
    """Replies to each request by whoever holds the VIP (or nobody), at most one node."""
    replies, holder = [], MAC1
    for seq in range(1, requests + 1):
        if rnd.random() < 0.05:
            holder = rnd.choice([MAC1, MAC2, None])
        if holder:
            replies.append((seq, 2000.0 + seq * 0.1 + 0.0003, holder))
            if rnd.random() < 0.1:   # the same node answering twice is still one node
                replies.append((seq, 2000.0 + seq * 0.1 + 0.0005, holder.upper()))
    return replies


@pytest.mark.parametrize("seed", range(30))
def test_a_vip_moving_between_nodes_is_never_a_double_vip(seed):
    assert invariants.double_vips(arp_history(random.Random(seed), 500), MACS) == []


@pytest.mark.parametrize("seed", range(30))
def test_two_macs_answering_one_request_anywhere_are_found(seed):
    rnd = random.Random(seed)
    replies = arp_history(rnd, 500)
    seq = rnd.randrange(1, 501)
    replies.append((seq, 2000.0 + seq * 0.1 + 0.0009, MAC2))
    replies.append((seq, 2000.0 + seq * 0.1 + 0.0001, MAC1))
    rnd.shuffle(replies)
    found = invariants.double_vips(replies, MACS)
    assert len(found) == 1 and f"request {seq} " in found[0].detail
    assert "node1, node2" in found[0].detail
    assert found[0].wall == 2000.0 + seq * 0.1 + 0.0001


def test_two_nodes_answering_in_consecutive_requests_is_a_move_not_a_double():
    replies = [(1, 1.0, MAC1), (2, 1.1, MAC2), (3, 1.2, MAC2)]
    assert invariants.double_vips(replies, MACS) == []


@pytest.mark.parametrize("seed", range(20))
def test_lost_rows_are_exactly_the_acknowledged_ones_missing(seed):
    rnd = random.Random(seed)
    acked = rnd.sample(range(1, 5000), 800)
    present = set(acked) | set(rnd.sample(range(5000, 6000), 50))   # plus rows in doubt
    assert invariants.lost_rows(acked, present) == []
    gone = set(rnd.sample(acked, rnd.randrange(1, 10)))
    assert invariants.lost_rows(acked, present - gone) == sorted(gone)


def test_a_fence_soon_after_a_rejoin_without_a_new_fault_is_a_loop():
    boots = [(N1, 100.0), (N2, 50.0)]
    assert invariants.fence_loops([(N1, 130.0)], boots, faults=[90.0])[0].invariant == "fence loop"
    # a new fault after the rejoin explains the fence
    assert invariants.fence_loops([(N1, 130.0)], boots, faults=[90.0, 120.0]) == []
    # a fence a minute or more after the rejoin is not a loop
    assert invariants.fence_loops([(N1, 160.0)], boots, faults=[90.0]) == []
    # the fence that took the node down before it rejoined is not a loop
    assert invariants.fence_loops([(N1, 95.0)], boots, faults=[90.0]) == []
    # the other node's boot does not count
    assert invariants.fence_loops([(N2, 130.0)], [(N1, 100.0)], faults=[]) == []


@pytest.mark.parametrize("seed", range(20))
def test_fence_loops_over_random_histories(seed):
    """A brute-force oracle: for every fence, the node's last boot before it, and any
    fault between the two."""
    rnd = random.Random(seed)
    boots = [(rnd.choice((N1, N2)), rnd.uniform(0, 1000)) for _ in range(30)]
    fences = [(rnd.choice((N1, N2)), rnd.uniform(0, 1000)) for _ in range(30)]
    faults = [rnd.uniform(0, 1000) for _ in range(15)]
    expected = 0
    for node, t in fences:
        prior = [b for n, b in boots if n == node and b <= t]
        if prior and t - max(prior) < 60 and not any(max(prior) <= f <= t for f in faults):
            expected += 1
    assert len(invariants.fence_loops(fences, boots, faults)) == expected


def test_late_and_never_converged_faults_break_their_bound():
    outcomes = [{"index": 0, "kind": "crash-active", "wall": 1.0, "converged_s": 20.0},
                {"index": 1, "kind": "crash-active", "wall": 2.0, "converged_s": 95.0},
                {"index": 2, "kind": "switchover", "wall": 3.0, "converged_s": None}]
    found = invariants.late(outcomes, {"crash-active": 90, "switchover": 90})
    assert [v.detail for v in found] == [
        "fault #2 crash-active: converged after 95.0s (bound 90s)",
        "fault #3 switchover: converged never (bound 90s)"]


def test_rows_in_doubt_are_counted_per_fault_window_with_their_reason():
    doubts = [{"id": 5, "t": 5.0, "why": "PostgreSQL at x: no answer in time"},
              {"id": 9, "t": 12.0, "why": "PostgreSQL at x: receive failed: Connection reset by peer"},
              {"id": 10, "t": 13.0, "why": "PostgreSQL at x: no answer in time"},
              {"id": 30, "t": 31.0, "why": "FATAL: terminating connection due to administrator command"}]
    found = invariants.explain_doubts(doubts, present={9}, starts=[10.0, 30.0])
    assert found[None] == {"rows": 1, "committed": 0, "not_committed": 1,
                           "why": {"no answer in time": 1}}
    assert found[0] == {"rows": 2, "committed": 1, "not_committed": 1,
                        "why": {"connection reset": 1, "no answer in time": 1}}
    assert found[1]["why"] == {"server shutting down": 1}


def test_the_client_log_is_read_as_it_grows_and_tells_when_the_stack_came_back(tmp_path):
    path = tmp_path / "client.jsonl"
    log = campaign.ClientLog(path)
    names = ("http", "postgresql")
    lines = [{"k": "probe", "name": "http", "ok": True, "t": 1.0},
             {"k": "probe", "name": "postgresql", "ok": True, "t": 1.0},
             {"k": "ack", "id": 1, "t": 1.5}]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"k": "ack", "id"')
    assert log.poll().all_up(names) and log.acks == [(1, 1.5)]
    assert log.stack_back(1.2, names) == 0.0          # nothing failed since 1.2
    with open(path, "a") as out:                       # the half line is completed later
        out.write(': 2, "t": 2.0}\n')
        for e in ({"k": "probe", "name": "http", "ok": False, "t": 3.0},
                  {"k": "doubt", "id": 3, "t": 3.1, "why": "x"},
                  {"k": "probe", "name": "postgresql", "ok": False, "t": 3.2}):
            out.write(json.dumps(e) + "\n")
    assert log.poll().acks == [(1, 1.5), (2, 2.0)] and not log.all_up(names)
    assert log.stack_back(2.5, names) is None
    with open(path, "a") as out:
        out.write(json.dumps({"k": "probe", "name": "postgresql", "ok": True, "t": 4.0}) + "\n")
        out.write(json.dumps({"k": "probe", "name": "http", "ok": True, "t": 4.5}) + "\n")
    assert log.poll().stack_back(2.5, names) == pytest.approx(2.0)
    assert [d["id"] for d in log.doubts] == [3]
    assert log.acked_between(1.0, 2.0) == [1]


def test_arp_replies_to_our_request_are_counted_and_gratuitous_arp_is_not():
    import socket
    import struct
    vip, me = "198.18.0.100", "198.18.0.50"

    def frame(op, sender_ip, target_ip, sha=b"\x02\0\0\0\0\x01"):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, socket.inet_aton(sender_ip),
                          b"\0" * 6, socket.inet_aton(target_ip))
        return b"\xff" * 6 + sha + struct.pack("!H", 0x0806) + arp

    assert arpwatch.parse_reply(frame(2, vip, me), me, vip) == MAC1
    assert arpwatch.parse_reply(frame(2, vip, vip), me, vip) is None      # gratuitous reply
    assert arpwatch.parse_reply(frame(1, vip, vip), me, vip) is None      # gratuitous request
    assert arpwatch.parse_reply(frame(2, "198.18.0.11", me), me, vip) is None
    request = arpwatch.request_frame(b"\x02\0\0\0\0\x50", me, vip)
    assert request[:6] == b"\xff" * 6 and request[12:14] == b"\x08\x06"
    assert arpwatch.parse_reply(request, me, vip) is None


# Convergence times measured per kind (docs/campaign.md: the CI runs and the development
# runs, both managers), and what finding 2 took (a freeze of the holder after which the
# survivor promoted nothing: the full stack back only after 25.0 s and 36.0 s).
MEASURED = {"power-cut-active": 20.6, "power-cut-standby": 13.5, "crash-active": 17.7,
            "crash-standby": 16.4, "freeze-short": 0.8, "freeze-long": 21.3, "split": 13.5,
            "bmc-out": 5.5, "bmc-out-crash": 21.0, "layer-kill": 11.0,
            "layer-kill-repeated": 24.6, "daemon-kill-active": 18.1,
            "daemon-kill-standby": 18.8, "switchover": 12.2, "double": 26.4}


def test_the_campaign_bounds_hold_what_was_measured_and_catch_finding_2():
    from hapack.lab import campaign
    measured = [{"index": i, "kind": k, "wall": float(i), "converged_s": s}
                for i, (k, s) in enumerate(MEASURED.items())]
    assert invariants.late(measured, campaign.BOUNDS) == []
    for took in (25.0, 36.0):
        slow = [{"index": 0, "kind": "freeze-long", "wall": 0.0, "converged_s": took}]
        assert invariants.late(slow, campaign.BOUNDS), took
