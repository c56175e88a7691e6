"""partition, drbd backend: a replica that is not there is reported degraded (190/191).

Every DRBD 8.4 connection state x role x peer disk (x local disk) through the
agent's monitor, on a fake /proc/drbd (8.4) and on DRBD 9's events2: the
result is degraded exactly when the resource is neither Connected (or
verifying) with the peer's disk UpToDate nor resyncing; the role code is
kept; the promotion score written is the one the score table gives, as before.
"""

import io

import pytest

from hapack.ocf import OCF, _drbd, partition
from hapack.ocf._drbd import State

from test_partition_drbd import DEVICE, DIRECTORY, EVENTS, drbd_node, events  # noqa: F401

# DRBD 8.4's connection states (drbd_strings.c), spelled out here, not taken from _drbd.
HEALTHY_WHEN_PEER_UPTODATE = ["Connected", "VerifyS", "VerifyT"]
REBUILDING = ["StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID",
              "SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT"]
WITHOUT_REPLICA = ["StandAlone", "Disconnecting", "Unconnected", "Timeout", "BrokenPipe",
                   "NetworkFailure", "ProtocolError", "TearDown", "WFConnection",
                   "WFReportParams", "Ahead", "Behind",
                   "Connecting", "SomethingNew"]  # DRBD 9's; a name not known yet
CSTATES = HEALTHY_WHEN_PEER_UPTODATE + REBUILDING + WITHOUT_REPLICA
PEER_DISKS = ["UpToDate", "Outdated", "Inconsistent", "Consistent", "DUnknown", "Diskless",
              "Failed", "Attaching", "Negotiating"]
LOCAL_DISKS = ["UpToDate", "Consistent", "Outdated", "Inconsistent"]


def expected_degraded(cstate, peer_disk):
    if cstate in REBUILDING:
        return False
    return not (cstate in HEALTHY_WHEN_PEER_UPTODATE and peer_disk == "UpToDate")


def proc_84(role, cstate, disk, peer_disk):
    peer_role = "Unknown" if cstate in WITHOUT_REPLICA else "Secondary"
    return ("version: 8.4.11 (api:1/proto:86-101)\n"
            f" 0: cs:{cstate} ro:{role}/{peer_role} ds:{disk}/{peer_disk} C r-----\n"
            "    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n")


def monitor(env):
    err = io.StringIO()
    code = partition.AGENT.execute(["monitor"], dict(env), stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


PACEMAKER = {"OCF_RESKEY_crm_feature_set": "3.16.1", "OCF_RESKEY_CRM_meta_interval": "0",
             "OCF_RESKEY_CRM_meta_promoted_max": "1", "OCF_RESKEY_CRM_meta_notify": "true"}


def expect_score(fp, state):
    """The score a probe (forced) writes: the table's, untouched by degradation."""
    score = _drbd.promotion_score(state)
    argv = None
    if score is None:
        argv = ["crm_attribute", "--promotion", "-l", "reboot", "-D"]
    elif score != _drbd.KEEP:
        argv = ["crm_attribute", "--promotion", "-l", "reboot", "-v", str(score)]
    if argv:
        fp.register(argv)
    return argv


def check(role, cstate, peer_disk, code, err):
    degraded = expected_degraded(cstate, peer_disk)
    if role == "Primary":
        assert code == (OCF.DEGRADED_PROMOTED if degraded else OCF.RUNNING_PROMOTED), err
    else:
        assert code == (OCF.DEGRADED if degraded else OCF.SUCCESS), err
    if degraded:
        assert (f"ocf-exit-reason:r0 runs without its replica: cstate {cstate}, "
                f"peer disk {peer_disk}") in err
    else:
        assert "ocf-exit-reason" not in err, err


@pytest.mark.parametrize("role", ["Secondary", "Primary"])
@pytest.mark.parametrize("cstate", CSTATES)
def test_drbd84_degraded_exactly_without_the_replica(fp, drbd_node, tmp_path, role, cstate):
    env, mounted = drbd_node
    env = dict(env, **PACEMAKER)
    proc = tmp_path / "proc-drbd"
    if role == "Primary":
        mounted.append(DIRECTORY)
    for disk in LOCAL_DISKS if role == "Secondary" else ["UpToDate"]:
        for peer_disk in PEER_DISKS:
            proc.write_text(proc_84(role, cstate, disk, peer_disk))
            state = State(True, role, "x", cstate, disk, peer_disk)
            argv = expect_score(fp, state)
            before = fp.call_count(argv) if argv else 0
            code, err = monitor(env)
            check(role, cstate, peer_disk, code, err)
            if argv:  # the score table's value, written as before
                assert fp.call_count(argv) == before + 1, (role, cstate, disk, peer_disk)


@pytest.mark.parametrize("role", ["Secondary", "Primary"])
@pytest.mark.parametrize("cstate", ["Connected", "Connecting", "StandAlone"] + REBUILDING
                         + ["VerifyS", "Ahead", "Behind"])
def test_drbd9_degraded_exactly_without_the_replica(fp, drbd_node, role, cstate):
    """DRBD 9: the connection state, or a connected peer's replication state (recurring
    monitors, outside Pacemaker: no score is written)."""
    env, mounted = drbd_node
    env = dict(env, OCF_RESKEY_CRM_meta_interval="10000" if role == "Primary" else "20000")
    if role == "Primary":
        mounted.append(DIRECTORY)
    for peer_disk in PEER_DISKS:
        if cstate in ("Connecting", "StandAlone"):
            text = events(role=role, cstate=cstate, peer_role="Unknown", peer_disk=peer_disk)
        else:
            text = events(role=role, cstate="Connected", peer_disk=peer_disk).replace(
                "volume:0 peer-disk", f"volume:0 replication:"
                f"{'Established' if cstate == 'Connected' else cstate} peer-disk")
        fp.register(EVENTS, stdout=text)
        code, err = monitor(env)
        check(role, cstate, peer_disk, code, err)


def test_split_brain_is_named_before_the_missing_replica(fp, drbd_node, tmp_path):
    env, _ = drbd_node
    env = dict(env, HAPACK_STATE_DIR=str(tmp_path))
    (tmp_path / "r0.split-brain").write_text("detected on node2\n")
    fp.register(EVENTS, stdout=events(cstate="StandAlone", peer_role="Unknown",
                                      peer_disk="DUnknown"))
    code, err = monitor(env)
    assert code == OCF.DEGRADED and "split brain on r0" in err
    assert "without its replica" not in err


def test_failures_still_win_over_degraded(fp, drbd_node):
    """A degraded replica with a failure of its own reports the failure, as before."""
    env, mounted = drbd_node
    fp.register(EVENTS, stdout=events(role="Primary", cstate="WFConnection",
                                      peer_role="Unknown", peer_disk="DUnknown"))
    assert monitor(env)[0] == OCF.FAILED_PROMOTED          # Primary, not mounted
    fp.register(EVENTS, stdout=events(disk="Diskless", cstate="WFConnection",
                                      peer_role="Unknown", peer_disk="DUnknown"))
    code, err = monitor(dict(env, OCF_RESKEY_CRM_meta_interval="20000", OCF_CHECK_LEVEL="10"))
    assert code == OCF.ERR_GENERIC and "(detached)" in err
    fp.register(EVENTS, stdout="exists -\n")
    assert monitor(env)[0] == OCF.NOT_RUNNING


def test_a_degraded_replica_keeps_the_promotion_gate(fp, drbd_node):
    """Degraded is a report: an Outdated replica without its peer is still never promoted."""
    env, mounted = drbd_node
    fp.register(["drbdadm", "sh-dev", "r0"], stdout=DEVICE + "\n")
    fp.register(EVENTS, stdout=events(disk="Outdated", cstate="WFConnection",
                                      peer_role="Unknown", peer_disk="DUnknown"))
    err = io.StringIO()
    code = partition.AGENT.execute(["promote"], dict(env), stdout=io.StringIO(), stderr=err)
    assert code == OCF.ERR_GENERIC and "never becomes Primary" in err.getvalue()
    assert fp.call_count(["drbdadm", "primary", "r0"]) == 0 and not mounted


def test_the_shared_backend_has_no_replica_to_lose():
    from hapack.ocf._replica import BACKENDS
    assert BACKENDS["shared"].without_replica(None, True) is None
