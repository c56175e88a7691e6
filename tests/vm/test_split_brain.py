"""Split brain on purpose: detected, reported, not resolved by the agent; the documented recovery.

The link between the guests is cut while A is Primary; B is promoted too
(a fence confirmation that was wrong: A never lost power) and both write.
When the link returns DRBD finds two Primaries (after-sb-2pri disconnect)
and drops the connection; its split-brain handler leaves the marker the
agent reports. The recovery is the one in docs/drbd-vm.md: B's changes are
discarded.
"""

from __future__ import annotations

from hapack.lab import vm
from hapack.ocf import OCF

from .drbdvm import PARAMS, exit_reason

DIR = PARAMS["directory"]
MARKER = f"/var/lib/hapack/partition/{vm.RESOURCE}.split-brain"


def split_brain(replica):
    """Both guests Primary with different data, then the link back."""
    pair = replica.pair
    a, b = pair.a, pair.b
    for guest in (a, b):
        assert replica.agent(guest, "start").ok
    assert replica.agent(a, "promote").ok
    a.sh(f"echo before > {DIR}/shared; sync")
    pair.cut_link()
    for guest in (a, b):
        guest.wait_drbd(lambda s: not s.connected)
    replica.fence_confirmed(b, "vma")  # wrong: a still runs
    assert replica.agent(b, "promote").ok
    b.sh(f"echo from-b > {DIR}/shared; echo b > {DIR}/only-b; sync")
    a.sh(f"echo from-a > {DIR}/shared; echo a > {DIR}/only-a; sync")
    pair.heal_link()


def recover(replica, victim, survivor):
    """docs/drbd-vm.md, "Recovering from a split brain": the victim's changes are discarded."""
    assert replica.agent(victim, "demote").ok
    result = replica.agent(victim, "promote")
    assert result.returncode == OCF.ERR_GENERIC  # the marker blocks it until cleared
    assert "split brain was detected" in exit_reason(result.output)
    victim.sh(f"drbdadm -- --discard-my-data connect {vm.RESOURCE}")
    survivor.sh(f"drbdadm connect {vm.RESOURCE}")
    for guest in (victim, survivor):
        guest.wait_drbd(lambda s: s.cstate == "Connected" and s.disk == s.peer_disk == "UpToDate")
        replica.clear_split_brain(guest)


def test_split_brain_is_reported_not_resolved_and_the_documented_recovery_works(replica):
    a, b = replica.pair.a, replica.pair.b
    split_brain(replica)
    for guest in (a, b):
        state = guest.wait_drbd(lambda s: s.cstate == "StandAlone")
        assert state.role == "Primary"  # nothing was demoted or discarded
        result = replica.agent(guest, "monitor")
        assert result.returncode == OCF.DEGRADED_PROMOTED, result.output
        assert "split brain on r0, not resolved by the agent" in exit_reason(result.output)
        assert f"on {guest.name}" in guest.sh(f"cat {MARKER}")
    assert a.sh(f"cat {DIR}/shared") == "from-a\n"
    assert b.sh(f"cat {DIR}/shared") == "from-b\n"

    recover(replica, victim=b, survivor=a)
    assert replica.agent(a, "monitor").returncode == OCF.RUNNING_PROMOTED
    assert replica.agent(b, "monitor").returncode == OCF.SUCCESS
    assert replica.agent(a, "demote").ok
    assert replica.agent(b, "promote").ok  # connected, the peer Secondary: allowed
    assert b.sh(f"cat {DIR}/shared") == "from-a\n"
    assert b.run(f"test -e {DIR}/only-b").returncode == 1
    assert b.sh(f"cat {DIR}/only-a") == "a\n"
