"""partition, drbd backend: the score table, DRBD 8.4/9 parsing, the pinned command lines."""

import io
import os

import pytest

from hapack.ocf import OCF, _drbd, _mount, partition
from hapack.ocf._drbd import State

PROC_84 = """version: 8.4.11 (api:1/proto:86-101)
srcversion: 211FB288A383ED945B83420
 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----
    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
 1: cs:StandAlone ro:Secondary/Unknown ds:Outdated/DUnknown   r-----
    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0
 2: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----
	[==>.................] sync'ed: 15.6% (54304/64344)K
 3: cs:Unconfigured
"""

EVENTS2_9 = """exists resource name:r0 role:Secondary suspended:no force-io-failures:no may_promote:no promotion_score:10102
exists connection name:r0 peer-node-id:1 conn-name:b connection:Connected role:Primary
exists device name:r0 volume:0 minor:0 backing_dev:/dev/vdb disk:UpToDate client:no quorum:yes open:no
exists peer-device name:r0 peer-node-id:1 conn-name:b volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
exists -
"""


# -- the score table ------------------------------------------------------------

@pytest.mark.parametrize("role,cstate,disk,peer_disk,split,score", [
    ("Primary", "Connected", "UpToDate", "UpToDate", False, 10000),
    ("Secondary", "Connected", "UpToDate", "UpToDate", False, 10000),
    ("Secondary", "Connected", "UpToDate", "Outdated", False, 10000),
    ("Secondary", "WFConnection", "UpToDate", "DUnknown", False, 1000),
    ("Primary", "WFConnection", "UpToDate", "DUnknown", False, 10000),
    ("Secondary", "WFConnection", "Consistent", "DUnknown", False, 10),
    ("Secondary", "Connected", "Outdated", "UpToDate", False, None),
    ("Secondary", "SyncTarget", "Inconsistent", "UpToDate", False, None),
    ("Primary", "Connected", "Diskless", "UpToDate", False, None),
    ("Secondary", "Connected", "Failed", "UpToDate", False, None),
    ("Secondary", "Connected", "Negotiating", "UpToDate", False, _drbd.KEEP),
    ("Secondary", "Connected", "Attaching", "DUnknown", False, _drbd.KEEP),
    ("Secondary", "StandAlone", "UpToDate", "DUnknown", True, None),
    ("Secondary", "StandAlone", "Consistent", "DUnknown", True, None),
    ("Primary", "StandAlone", "UpToDate", "DUnknown", True, 10000),
])
def test_score_follows_the_disk_state(role, cstate, disk, peer_disk, split, score):
    state = State(True, role=role, peer_role="Unknown", cstate=cstate, disk=disk,
                  peer_disk=peer_disk)
    assert _drbd.promotion_score(state, split) == score


def test_an_unconfigured_resource_has_no_score():
    assert _drbd.promotion_score(_drbd.UNCONFIGURED) is None


@pytest.mark.parametrize("disk", ["Outdated", "Inconsistent", "Diskless", "Failed", "DUnknown"])
def test_a_stale_replica_is_never_promoted(disk):
    state = State(True, role="Secondary", cstate="WFConnection", disk=disk)
    assert "never becomes Primary" in _drbd.refuse_promotion(state)


def test_split_brain_refuses_promotion_even_when_up_to_date():
    state = State(True, role="Secondary", cstate="StandAlone", disk="UpToDate")
    assert _drbd.refuse_promotion(state) is None
    assert "split brain" in _drbd.refuse_promotion(state, split_brain=True)


# -- parsing ------------------------------------------------------------------------

def test_proc_drbd_84():
    assert _drbd.proc_version(PROC_84) == 8
    assert _drbd.parse_proc(PROC_84, 0) == State(True, "Primary", "Secondary", "Connected",
                                                 "UpToDate", "UpToDate")
    one = _drbd.parse_proc(PROC_84, 1)
    assert (one.cstate, one.peer_role, one.disk, one.connected) == (
        "StandAlone", "Unknown", "Outdated", False)
    two = _drbd.parse_proc(PROC_84, 2)
    assert (two.peer_role, two.disk, two.connected) == ("Primary", "Inconsistent", True)
    assert not _drbd.parse_proc(PROC_84, 3).configured
    assert not _drbd.parse_proc(PROC_84, 7).configured


def test_events2_drbd_9():
    state = _drbd.parse_events2(EVENTS2_9)
    assert state == State(True, "Secondary", "Primary", "Connected", "UpToDate", "UpToDate")
    assert not _drbd.parse_events2("exists -\n").configured
    alone = _drbd.parse_events2(
        "exists resource name:r0 role:Primary suspended:no\n"
        "exists device name:r0 volume:0 minor:0 disk:UpToDate client:no\nexists -\n")
    assert (alone.peer_role, alone.cstate, alone.peer_disk) == ("Unknown", "StandAlone",
                                                                 "DUnknown")


def test_proc_drbd_9_has_no_resource_lines():
    assert _drbd.proc_version("version: 9.2.8 (api:2/proto:86-122)\n") == 9


def test_minor_from_the_device_name():
    assert _drbd.minor_of("/dev/drbd12") == 12
    assert _drbd.minor_of("/dev/sdx") is None


# -- command lines, pinned (no DRBD module here: /proc/drbd is absent) -------------

DEVICE = "/dev/drbd0"
DIRECTORY = "/srv/hapack-test-data"


def events(role="Secondary", peer_role="Secondary", cstate="Connected", disk="UpToDate",
           peer_disk="UpToDate"):
    return (f"exists resource name:r0 role:{role} suspended:no\n"
            f"exists connection name:r0 peer-node-id:1 conn-name:b connection:{cstate} "
            f"role:{peer_role}\n"
            f"exists device name:r0 volume:0 minor:0 disk:{disk} client:no\n"
            f"exists peer-device name:r0 peer-node-id:1 conn-name:b volume:0 "
            f"peer-disk:{peer_disk}\nexists -\n")


@pytest.fixture
def drbd_node(monkeypatch, tmp_path):
    """A fake DRBD node: /dev/drbd0 is a block device, mounts follow the commands."""
    mounted = []
    proc = tmp_path / "proc-drbd"
    proc.write_text("version: 9.2.8 (api:2/proto:86-122)\n")  # DRBD 9: state from events2
    monkeypatch.setattr(_drbd, "PROC", str(proc))
    monkeypatch.setattr(_mount, "device_number",
                        lambda device: (147, 0) if device == DEVICE else None)

    def table(path=None):
        return [_mount.Mount((147, 0), DIRECTORY, ["rw", "noatime"], "ext4", DEVICE, ["rw"],
                             id=40 + i, parent=1) for i, _ in enumerate(mounted)]
    monkeypatch.setattr(_mount, "table", table)
    monkeypatch.setattr(_mount, "resolve", lambda path: path)
    monkeypatch.setattr(_mount, "mount_id", lambda path, follow=False:
                        39 + len(mounted) if mounted and path == DIRECTORY else 1)
    monkeypatch.setattr(_mount, "free", lambda device, number, deadline, log, everywhere=True: [])
    monkeypatch.setattr("hapack.command.which", lambda name, path=None: f"/sbin/{name}")
    monkeypatch.setattr(_mount, "umount", lambda point: mounted.clear() or 0)
    env = {"OCF_RESOURCE_INSTANCE": "data", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_drbd_resource": "r0", "OCF_RESKEY_device": DEVICE,
           "OCF_RESKEY_directory": DIRECTORY, "OCF_RESKEY_fstype": "ext4",
           "OCF_RESKEY_options": "noatime", "OCF_RESKEY_wfc_timeout": "1",
           "OCF_RESKEY_fence_confirmed_file": ""}
    return env, mounted


def run(env, action, **extra):
    err = io.StringIO()
    code = partition.AGENT.execute([action], dict(env, **extra), stdout=io.StringIO(),
                                   stderr=err)
    return code, err.getvalue()


SH_DEV = ["drbdadm", "sh-dev", "r0"]
EVENTS = ["drbdsetup", "events2", "--now", "r0"]


def module_not_loaded(fp):
    """No /proc/drbd until modprobe drbd ran."""
    proc = _drbd.PROC
    text = open(proc).read()
    os.unlink(proc)
    fp.register(["modprobe", "drbd"], callback=lambda process: open(proc, "w").write(text))


def test_start_brings_the_resource_up(fp, drbd_node):
    env, _ = drbd_node
    fp.register(SH_DEV, stdout=DEVICE + "\n")
    module_not_loaded(fp)
    fp.register(EVENTS, stdout="exists -\n")
    fp.register(["drbdadm", "up", "r0"])
    fp.register(EVENTS, stdout=events(), occurrences=5)
    assert run(env, "start")[0] == OCF.SUCCESS
    assert fp.call_count(["drbdadm", "up", "r0"]) == 1
    assert fp.call_count(["modprobe", "drbd"]) == 1


def test_start_reconnects_a_standalone_resource(fp, drbd_node):
    env, _ = drbd_node
    fp.register(SH_DEV, stdout=DEVICE + "\n")
    fp.register(EVENTS, stdout=events(cstate="StandAlone", peer_role="Unknown",
                                      peer_disk="DUnknown"))
    fp.register(["drbdadm", "adjust", "r0"])
    fp.register(EVENTS, stdout=events(), occurrences=5)
    assert run(env, "start")[0] == OCF.SUCCESS
    assert fp.call_count(["drbdadm", "adjust", "r0"]) == 1
    assert fp.call_count(["modprobe", "drbd"]) == 0  # loaded already


def test_promote_makes_primary_then_mounts(fp, drbd_node):
    env, mounted = drbd_node
    fp.register(SH_DEV, stdout=DEVICE + "\n")
    fp.register(EVENTS, stdout=events())
    fp.register(["drbdadm", "primary", "r0"])
    fp.register(["mount", "-t", "ext4", "-o", "noatime", DEVICE, DIRECTORY],
                callback=lambda process: mounted.append(DIRECTORY))
    fp.register(EVENTS, stdout=events(role="Primary"))
    import os
    os.makedirs(DIRECTORY, exist_ok=True)
    try:
        assert run(env, "promote") == (OCF.SUCCESS, "")
    finally:
        os.rmdir(DIRECTORY)
    assert mounted == [DIRECTORY]


@pytest.mark.parametrize("state,words", [
    ({"peer_role": "Primary"}, "the DRBD peer is Primary"),
    ({"disk": "Outdated", "peer_role": "Unknown", "cstate": "Connecting", "peer_disk": "DUnknown"},
     "Outdated: it never becomes Primary"),
    ({"disk": "Inconsistent", "peer_role": "Primary", "cstate": "SyncTarget"},
     "Inconsistent: it never becomes Primary"),
    ({"peer_role": "Unknown", "cstate": "Connecting", "peer_disk": "DUnknown"},
     "role is unknown (cs:Connecting)"),
])
def test_promote_refusals(fp, drbd_node, state, words):
    env, mounted = drbd_node
    fp.register(SH_DEV, stdout=DEVICE + "\n")
    fp.register(EVENTS, stdout=events(**state))
    code, err = run(env, "promote")
    assert code == OCF.ERR_GENERIC and words in err
    assert fp.call_count(["drbdadm", "primary", "r0"]) == 0 and not mounted


def test_a_failed_mount_demotes_again(fp, drbd_node):
    env, mounted = drbd_node
    fp.register(SH_DEV, stdout=DEVICE + "\n")
    fp.register(EVENTS, stdout=events())
    fp.register(["drbdadm", "primary", "r0"])
    fp.register(["mount", "-t", "ext4", "-o", "noatime", DEVICE, DIRECTORY], returncode=32,
                stderr="mount: wrong fs type")
    fp.register(EVENTS, stdout=events(role="Primary"))
    fp.register(["drbdadm", "secondary", "r0"])
    import os
    os.makedirs(DIRECTORY, exist_ok=True)
    try:
        code, err = run(env, "promote")
    finally:
        os.rmdir(DIRECTORY)
    assert code == OCF.ERR_GENERIC and "wrong fs type" in err
    assert fp.call_count(["drbdadm", "secondary", "r0"]) == 1


def test_stop_unmounts_then_demotes_then_downs(fp, drbd_node):
    env, mounted = drbd_node
    mounted.append(DIRECTORY)
    order = []
    fp.register(EVENTS, stdout=events(role="Primary"))
    fp.register(["drbdadm", "secondary", "r0"], callback=lambda p: order.append("secondary"))
    fp.register(["drbdadm", "down", "r0"], callback=lambda p: order.append("down"))
    fp.register(EVENTS, stdout="exists -\n")
    assert run(env, "stop")[0] == OCF.SUCCESS
    assert not mounted and order == ["secondary", "down"]


@pytest.mark.parametrize("after,ok", [("exists -\n", True), (events(role="Secondary"), True),
                                      (events(role="Primary"), False)])
def test_stop_verifies_the_resource_is_secondary_or_down(fp, drbd_node, after, ok):
    env, _ = drbd_node
    fp.register(EVENTS, stdout=events(role="Primary"))
    fp.register(["drbdadm", "secondary", "r0"])
    fp.register(["drbdadm", "down", "r0"])
    fp.register(EVENTS, stdout=after)
    code, err = run(env, "stop")
    assert code == (OCF.SUCCESS if ok else OCF.ERR_GENERIC)
    assert ok or "stop of r0 not verified: the resource is still Primary" in err


def test_demote_verifies_the_resource_is_secondary(fp, drbd_node):
    env, _ = drbd_node
    fp.register(EVENTS, stdout=events(role="Primary"))
    fp.register(["drbdadm", "secondary", "r0"])  # exit 0, yet still Primary
    fp.register(EVENTS, stdout=events(role="Primary"))
    code, err = run(env, "demote")
    assert code == OCF.ERR_GENERIC and "demote of r0 not verified" in err


FAILING = [dict(returncode=10, stderr="r0: No such resource"),
           dict(returncode=20, stderr="Could not connect to 'drbd' generic netlink family"),
           dict(returncode=0, stdout="exists resource name:r0 role:Primary\n")]  # cut short


@pytest.mark.parametrize("failure", FAILING)
@pytest.mark.parametrize("interval", ["0", "20000"])
def test_a_failing_drbdsetup_is_an_error_never_not_running(fp, drbd_node, failure, interval):
    env, _ = drbd_node
    fp.register(EVENTS, **failure)
    code, err = run(env, "monitor", OCF_RESKEY_CRM_meta_interval=interval)
    assert code == OCF.ERR_GENERIC and "the state of r0 is unknown" in err


@pytest.mark.parametrize("failure", FAILING)
def test_stop_with_the_state_unknown_fails(fp, drbd_node, failure):
    env, _ = drbd_node
    fp.register(EVENTS, **failure)
    code, err = run(env, "stop")
    assert code == OCF.ERR_GENERIC and "r0" in err
    assert fp.call_count(["drbdadm", "down", "r0"]) == 0


@pytest.mark.parametrize("report", [dict(stdout="exists -\n"), dict(stdout=events()),
                                    dict(stdout=events(role="Unknown", disk="Diskless"))]
                         + FAILING)
def test_a_mounted_partition_is_running_whatever_drbd_reports(fp, drbd_node, report):
    env, mounted = drbd_node
    mounted.append(DIRECTORY)
    fp.register(EVENTS, **report)
    code, err = run(env, "monitor", OCF_RESKEY_CRM_meta_interval="10000")
    assert code == OCF.FAILED_PROMOTED, err


def test_monitor_reports_the_role(fp, drbd_node):
    env, mounted = drbd_node
    fp.register(EVENTS, stdout=events())
    assert run(env, "monitor")[0] == OCF.SUCCESS
    fp.register(EVENTS, stdout=events(role="Primary"))
    assert run(env, "monitor")[0] == OCF.FAILED_PROMOTED  # Primary, not mounted
    mounted.append(DIRECTORY)
    fp.register(EVENTS, stdout=events(role="Primary"))
    assert run(env, "monitor")[0] == OCF.RUNNING_PROMOTED
    fp.register(EVENTS, stdout="exists -\n")  # down: DRBD 9 lists nothing
    mounted.clear()
    assert run(env, "monitor")[0] == OCF.NOT_RUNNING


def test_split_brain_is_reported_not_resolved(fp, drbd_node, tmp_path):
    env, _ = drbd_node
    env = dict(env, HAPACK_STATE_DIR=str(tmp_path))
    (tmp_path / "r0.split-brain").write_text("detected 2026-11-24 on node2\n")
    fp.register(EVENTS, stdout=events(cstate="StandAlone", peer_role="Unknown",
                                      peer_disk="DUnknown"))
    code, err = run(env, "monitor")
    assert code == OCF.DEGRADED and "split brain on r0" in err
    fp.register(SH_DEV, stdout=DEVICE + "\n")
    fp.register(EVENTS, stdout=events(cstate="StandAlone", peer_role="Unknown",
                                      peer_disk="DUnknown"))
    code, err = run(env, "promote")
    assert code == OCF.ERR_GENERIC and "split brain" in err
    assert fp.call_count(["drbdadm", "primary", "r0"]) == 0


def test_scores_are_written_through_crm_attribute(fp, drbd_node):
    env, _ = drbd_node
    env = dict(env, OCF_RESKEY_crm_feature_set="3.16.1", OCF_RESKEY_CRM_meta_interval="20000")
    score = ["crm_attribute", "--promotion", "-l", "reboot", "-v", "10000"]
    query = ["crm_attribute", "--promotion", "-l", "reboot", "-G", "-q"]
    fp.register(EVENTS, stdout=events())
    fp.register(query, returncode=105)   # not in the CIB yet
    fp.register(["crm_attribute", "--promotion", "-l", "reboot", "-D"])
    fp.register(score)
    assert run(env, "monitor")[0] == OCF.SUCCESS
    fp.register(EVENTS, stdout=events())
    fp.register(query, stdout="10000\n")
    assert run(env, "monitor")[0] == OCF.SUCCESS  # the CIB has it: not written again
    assert fp.call_count(score) == 1
    fp.register(EVENTS, stdout=events())
    fp.register(query, returncode=1, stderr="cannot connect")   # unknown: written
    fp.register(score)
    assert run(env, "monitor")[0] == OCF.SUCCESS
    assert fp.call_count(score) == 2
    fp.register(EVENTS, stdout=events())
    fp.register(score)
    probe = dict(env, OCF_RESKEY_CRM_meta_interval="0")
    assert run(probe, "monitor")[0] == OCF.SUCCESS  # a probe (after a restart) rewrites it
    assert fp.call_count(score) == 3
    fp.register(EVENTS, stdout=events(disk="Outdated"))
    fp.register(query, stdout="10000\n")
    fp.register(["crm_attribute", "--promotion", "-l", "reboot", "-D"])
    assert run(env, "monitor")[0] == OCF.SUCCESS
    assert fp.call_count(["crm_attribute", "--promotion", "-l", "reboot", "-D"]) == 2


def test_no_module_is_down_but_anything_unknown_is_an_error(monkeypatch, tmp_path):
    """Only a missing /proc/drbd (no module) means 'not up'; drbdsetup missing, hung or
    failing leaves the state unknown, which is an error, never 'not configured'."""
    from hapack.command import CommandError, CommandNotFound, CommandTimeout, Result
    monkeypatch.setattr(_drbd, "PROC", str(tmp_path / "none"))

    def never(argv):
        raise AssertionError("no command when the module is not loaded")
    assert _drbd.read_state(never, "r0", DEVICE) is _drbd.UNCONFIGURED
    proc = tmp_path / "proc-drbd"
    proc.write_text("version: 9.2.8 (api:2/proto:86-122)\n")
    monkeypatch.setattr(_drbd, "PROC", str(proc))

    def missing(argv):
        raise CommandNotFound(argv, "command not found")

    def hung(argv):
        raise CommandTimeout(argv, "no answer within 10.0s")
    for run in (missing, hung):
        with pytest.raises(CommandError):
            _drbd.read_state(run, "r0", DEVICE)
    failing = lambda argv: Result(argv, 20, "", "Could not connect to 'drbd' generic netlink")
    with pytest.raises(CommandError, match="exit 20: Could not connect"):
        _drbd.read_state(failing, "r0", DEVICE)
    cut = lambda argv: Result(argv, 0, "exists resource name:r0 role:Primary\n", "")
    with pytest.raises(CommandError, match="incomplete output"):
        _drbd.read_state(cut, "r0", DEVICE)
    proc.write_text("version: 8.4.11 (api:1/proto:86-101)\n")
    with pytest.raises(CommandError, match="not a DRBD device"):
        _drbd.read_state(never, "r0", "/dev/sdx")


def test_validate_checks_the_drbd_configuration(fp, drbd_node):
    env, _ = drbd_node
    fp.register(SH_DEV, returncode=10, stderr="'r0' not defined in your config (for this host)")
    code, err = run(env, "validate-all")
    assert code == OCF.ERR_INSTALLED and "not defined in your config" in err
    fp.register(SH_DEV, stdout="/dev/drbd1\n")
    code, err = run(env, "validate-all")
    assert code == OCF.ERR_CONFIGURED and "not the device of DRBD resource r0" in err
    fp.register(SH_DEV, stdout=DEVICE + "\n")
    assert run(env, "validate-all")[0] == OCF.SUCCESS


# -- check levels with DRBD: level 10 sees a detached disk -----------------------------

@pytest.mark.parametrize("disk", sorted(_drbd.DETACHED))
def test_level_10_reports_a_detached_disk_in_both_roles(fp, drbd_node, disk):
    env, mounted = drbd_node
    monitor = dict(env, OCF_RESKEY_CRM_meta_interval="20000")
    fp.register(EVENTS, stdout=events(disk=disk), occurrences=2)
    assert run(monitor, "monitor", OCF_CHECK_LEVEL="0")[0] == OCF.SUCCESS
    code, err = run(monitor, "monitor", OCF_CHECK_LEVEL="10")
    assert code == OCF.ERR_GENERIC and f"local disk of r0 is {disk} (detached)" in err
    mounted.append(DIRECTORY)
    fp.register(EVENTS, stdout=events(role="Primary", disk=disk), occurrences=2)
    code, err = run(monitor, "monitor", OCF_CHECK_LEVEL="20")
    assert code == OCF.FAILED_PROMOTED and "(detached)" in err
