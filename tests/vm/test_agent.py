"""ocf:hapack:partition (backend=drbd) on real DRBD 8.4: ocf-tester, scores, refusals."""

from __future__ import annotations

from hapack.lab import vm
from hapack.ocf import OCF

from .drbdvm import INSTANCE, PARAMS, exit_reason

SCORES = "/run/hapack-test/crm_attribute.log"


def test_ocf_tester_passes_with_its_promote_demote_sequence(replica):
    pair = replica.pair
    options = [word for k, v in PARAMS.items() for word in ("-o", f"{k}={v}")]
    result = pair.a.run(["ocf-tester", "-n", INSTANCE, *options, replica.agent_path], timeout=600)
    assert result.ok, result.output
    assert f"{replica.agent_path} passed all tests" in result.output
    # the peer stayed a connected Secondary throughout; ocf-tester ends with a stop
    assert not pair.a.drbd().configured
    assert pair.b.drbd().role == "Secondary"


def last_score(guest):
    """The last crm_attribute call of the agent: '-v <score>' or '-D'."""
    line = guest.sh(f"tail -n1 {SCORES}").split()
    assert line[:4] == [INSTANCE, "--promotion", "-l", "reboot"], line
    return " ".join(line[4:])


def score_after_monitor(replica, guest, expected_rc=OCF.SUCCESS):
    result = replica.agent(guest, "monitor", pacemaker=True)
    assert result.returncode == expected_rc, result.output
    return last_score(guest)


def refused(replica, guest, why):
    """A promotion refused for ``why``, leaving the replica Secondary and unmounted."""
    result = replica.agent(guest, "promote", pacemaker=True)
    assert result.returncode == OCF.ERR_GENERIC, result.output
    assert why in exit_reason(result.output)
    assert guest.drbd().role == "Secondary"
    assert not replica.mounted(guest)


def test_scores_follow_the_disk_state_and_bad_replicas_are_refused(replica):
    pair = replica.pair
    a, b = pair.a, pair.b
    for guest in (a, b):
        assert replica.agent(guest, "start", pacemaker=True).ok
        assert score_after_monitor(replica, guest) == "-v 10000"  # UpToDate, peer known

    assert replica.agent(a, "promote", pacemaker=True).ok
    assert score_after_monitor(replica, a, OCF.RUNNING_PROMOTED) == "-v 10000"
    refused(replica, b, "the DRBD peer is Primary")

    pair.cut_link()
    b.wait_drbd(lambda s: not s.connected)
    # without the replica: degraded in the same role, the scores as before
    assert score_after_monitor(replica, b, OCF.DEGRADED) == "-v 1000"  # UpToDate, peer unknown
    assert score_after_monitor(replica, a, OCF.DEGRADED_PROMOTED) == "-v 10000"
    result = replica.agent(a, "monitor", pacemaker=True)
    assert "r0 runs without its replica: cstate" in exit_reason(result.output), result.output

    replica.fence_confirmed(b, "vma")  # even with the peer fenced: never an Outdated replica
    b.sh(f"drbdadm outdate {vm.RESOURCE}")
    assert b.drbd().disk == "Outdated"
    assert score_after_monitor(replica, b, OCF.DEGRADED) == "-D"
    refused(replica, b, "the local replica is Outdated")

    assert replica.agent(b, "stop", pacemaker=True).ok
    b.sh(f"drbdadm create-md --force {vm.RESOURCE}")  # a new, empty replica
    assert replica.agent(b, "start", pacemaker=True, wfc_timeout=0).ok
    assert b.drbd().disk == "Inconsistent"
    assert score_after_monitor(replica, b, OCF.DEGRADED) == "-D"
    refused(replica, b, "the local replica is Inconsistent")

    pair.heal_link()  # full resync from a, then UpToDate again
    b.wait_drbd(lambda s: s.cstate == "Connected" and s.disk == "UpToDate", 60)
    assert score_after_monitor(replica, b) == "-v 10000"
