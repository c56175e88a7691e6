"""partition: mountinfo, mount options, the superblock check, stop's escalation order, bad input."""

import errno
import io
import signal
import struct

import pytest

from hapack.ocf import OCF, _drbd, _mount, partition
from hapack.timing import Deadline

MOUNTINFO = """\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
40 22 7:3 / /srv/my\\040data rw,noatime,nodev shared:20 - ext4 /dev/loop3 rw
41 40 0:44 / /srv/my\\040data/tmp rw,nosuid - tmpfs tmpfs rw,size=1024k
42 22 7:4 / /mnt/ro rw,relatime - ext4 /dev/loop4 ro,errors=remount-ro
"""


@pytest.fixture
def mounts(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return _mount.table(str(path))


def test_mountinfo(mounts):
    data = _mount.at("/srv/my data", mounts)
    assert len(data) == 1 and data[0].dev == (7, 3) and data[0].source == "/dev/loop3"
    assert [m.point for m in _mount.below("/srv/my data", mounts)] == ["/srv/my data/tmp"]
    assert _mount.below("/srv/my", mounts) == []


@pytest.mark.parametrize("options,problems", [
    ("noatime,nodev", []),
    ("noatime,nodev,defaults,_netdev,x-systemd.automount", []),
    ("noexec", ["noexec is missing"]),
    ("dev", ["nodev is set, dev was asked for"]),
    ("sync", ["sync is missing"]),
    ("errors=continue", []),  # not shown by the kernel: cannot be compared
])
def test_mount_options(mounts, options, problems):
    assert _mount.option_problems(_mount.at("/srv/my data", mounts)[0], options) == problems


def test_a_read_only_superblock_is_a_problem(mounts):
    ro = _mount.at("/mnt/ro", mounts)[0]
    assert _mount.option_problems(ro, "") == ["the file system is read-only"]
    assert _mount.option_problems(ro, "errors=continue") == [
        "the file system is read-only", "errors=remount-ro instead of errors=continue"]


def superblock(magic=0xEF53, state=1, incompat=0x2C2):
    block = bytearray(4096)
    struct.pack_into("<HH", block, 1024 + 0x38, magic, state)
    struct.pack_into("<I", block, 1024 + 0x60, incompat)
    return bytes(block)


def test_ext_superblock_tells_whether_the_file_system_is_in_use():
    assert _mount.ext_in_use(superblock()) is False
    assert _mount.ext_in_use(superblock(incompat=0x2C6)) is True   # journal needs recovery
    assert _mount.ext_in_use(superblock(state=0)) is True          # ext2 mounted / unclean
    assert _mount.ext_in_use(superblock(magic=0)) is None          # not ext


def test_a_hung_probe_is_a_failure_not_a_hang():
    import time
    with pytest.raises(_mount.ProbeFailed, match="no answer within 0.3s"):
        _mount.bounded(lambda: time.sleep(5), 0.3)
    with pytest.raises(_mount.ProbeFailed, match="No such file"):
        _mount.bounded(lambda: _mount.read_block("/nonexistent-device"), 5)
    assert _mount.bounded(lambda: b"data", 5) == b"data"


# -- stop's order: umount, holders, TERM, KILL, umount ------------------------------

class Busy:
    """A mount point that stays busy until its holders are gone."""

    def __init__(self, monkeypatch, holders, dies_on=signal.SIGTERM):
        self.calls, self.alive, self.dies_on = [], list(holders), dies_on
        point = _mount.Mount((7, 3), "/srv/data", ["rw"], "ext4", "/dev/loop3", ["rw"],
                             id=40, parent=22)
        self.mounted = [point]
        monkeypatch.setattr(_mount, "table", lambda path=None: list(self.mounted))
        monkeypatch.setattr(_mount, "umount", self.umount)
        monkeypatch.setattr(_mount, "mount_id", lambda path, follow=False: 40)
        monkeypatch.setattr(_mount, "mount_holders", self.holders)
        monkeypatch.setattr(_mount.procfs, "escalate", self.escalate)
        monkeypatch.setattr(_mount, "kernel_users", lambda point: [])
        monkeypatch.setattr(_mount, "free", lambda device, number, deadline, log, everywhere=True: [])

    def pick(self, mounts):
        return [m for m in mounts if m.dev == (7, 3)]

    def umount(self, point):
        self.calls.append("umount")
        if self.alive:
            return errno.EBUSY
        self.mounted.clear()
        return 0

    def holders(self, mount):
        self.calls.append("holders")
        return [(pid, "java", "cwd") for pid in self.alive]

    def escalate(self, pids, deadline, log, steps):
        for sig, _ in steps:
            self.calls.append(signal.Signals(sig).name)
            if sig in (self.dies_on, signal.SIGKILL):
                self.alive = []
                return []
        return pids


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)

    info = debug = error = warning


def test_stop_tries_umount_first(monkeypatch):
    busy = Busy(monkeypatch, [])
    assert _mount.release(busy.pick, Deadline(5), Log()) == []
    assert busy.calls == ["umount"]


def test_stop_escalates_term_then_kill_then_umounts(monkeypatch):
    busy = Busy(monkeypatch, [4242], dies_on=None)
    log = Log()
    assert _mount.release(busy.pick, Deadline(5), log) == []
    assert busy.calls == ["umount", "holders", "SIGTERM", "SIGKILL", "umount"]
    assert "java[4242] (cwd)" in log.lines[0]


def test_stop_gives_up_at_the_deadline_naming_the_holders(monkeypatch):
    busy = Busy(monkeypatch, [4242])
    busy.escalate = lambda pids, deadline, log, steps: pids  # unkillable (D state)
    monkeypatch.setattr(_mount.procfs, "escalate", busy.escalate)
    left = _mount.release(busy.pick, Deadline(0.3), Log())
    assert left == [(4242, "java", "cwd")]


def test_stop_of_the_agent_demotes_only_after_the_umount(monkeypatch, fp, tmp_path):
    """drbd: umount (busy) -> TERM -> umount -> drbdadm secondary -> drbdadm down."""
    busy = Busy(monkeypatch, [4242])
    monkeypatch.setattr(_mount, "device_number", lambda device: (7, 3))
    (tmp_path / "proc-drbd").write_text("version: 9.2.8 (api:2/proto:86-122)\n")
    monkeypatch.setattr(_drbd, "PROC", str(tmp_path / "proc-drbd"))
    events = ("exists resource name:r0 role:Primary\nexists device name:r0 volume:0 minor:0 "
              "disk:UpToDate\nexists -\n")
    fp.register(["drbdsetup", "events2", "--now", "r0"], stdout=events)
    fp.register(["drbdsetup", "events2", "--now", "r0"], stdout="exists -\n")  # down: verified
    for verb in ("secondary", "down"):
        fp.register(["drbdadm", verb, "r0"],
                    callback=lambda process, verb=verb: busy.calls.append(verb))
    env = {"OCF_RESOURCE_INSTANCE": "data", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_drbd_resource": "r0", "OCF_RESKEY_device": "/dev/drbd0",
           "OCF_RESKEY_directory": "/srv/data", "OCF_RESKEY_fstype": "ext4"}
    assert partition.AGENT.execute(["stop"], env, stderr=io.StringIO()) == OCF.SUCCESS
    assert busy.calls == ["umount", "holders", "SIGTERM", "umount", "secondary", "down"]


# -- bad input --------------------------------------------------------------------------

def validate(tmp_path, **params):
    env = {"OCF_RESOURCE_INSTANCE": "data", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_backend": "shared", "OCF_RESKEY_device": "/dev/null",
           "OCF_RESKEY_directory": str(tmp_path / "mnt"), "OCF_RESKEY_fstype": "ext4"}
    env.update({k if k.startswith("OCF_") else f"OCF_RESKEY_{k}": v for k, v in params.items()})
    err = io.StringIO()
    code = partition.AGENT.execute(["validate-all"], env, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


def test_a_good_configuration_validates(tmp_path, monkeypatch):
    monkeypatch.setattr(_mount, "device_number", lambda device: (7, 3))
    assert validate(tmp_path) == (OCF.SUCCESS, "")


@pytest.mark.parametrize("params,code,words", [
    ({"backend": "nfs"}, OCF.ERR_CONFIGURED, "'nfs' is not one of: drbd, shared"),
    ({"backend": "drbd"}, OCF.ERR_CONFIGURED, "backend=drbd needs drbd_resource"),
    ({"directory": "/"}, OCF.ERR_CONFIGURED, "'/' cannot be a partition's mount point"),
    ({"directory": "srv/data"}, OCF.ERR_CONFIGURED, "not an absolute path"),
    ({"options": "noatime,ro"}, OCF.ERR_CONFIGURED, "must not contain 'ro'"),
    ({"device": "/dev/hapack-no-such-disk"}, OCF.ERR_INSTALLED, "does not exist on this node"),
    ({"device": "/dev/null"}, OCF.ERR_CONFIGURED, "/dev/null is not a block device"),
])
def test_bad_input_gets_a_reason_and_the_right_code(tmp_path, params, code, words):
    got, err = validate(tmp_path, **params)
    assert got == code and words in err


def test_an_unknown_file_system_type_is_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(_mount, "device_number", lambda device: (7, 3))
    code, err = validate(tmp_path, fstype="hapackfs")
    assert code == OCF.ERR_INSTALLED and "hapackfs is not supported" in err


@pytest.mark.parametrize("meta,words", [
    ({"OCF_RESKEY_CRM_meta_promoted_max": ""}, "must run as a promotable clone"),
    ({"OCF_RESKEY_CRM_meta_notify": "false"}, "needs notify=true"),
    ({"OCF_RESKEY_CRM_meta_promoted_max": "2"}, "promoted-max must be 1"),
    ({"OCF_RESKEY_CRM_meta_clone_node_max": "2"}, "clone-node-max must be 1"),
])
def test_pacemaker_clone_settings_are_checked(tmp_path, monkeypatch, meta, words):
    monkeypatch.setattr(_mount, "device_number", lambda device: (7, 3))
    good = {"OCF_RESKEY_crm_feature_set": "3.16.1", "OCF_RESKEY_CRM_meta_promoted_max": "1",
            "OCF_RESKEY_CRM_meta_notify": "true"}
    assert validate(tmp_path, **good)[0] == OCF.SUCCESS
    code, err = validate(tmp_path, **dict(good, **meta))
    assert code == OCF.ERR_CONFIGURED and words in err


def test_a_mount_point_inside_another_partition_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(_mount, "device_number", lambda device: (7, 3))
    (tmp_path / "hapack-partition-broker.state").write_text(f"{tmp_path}/mnt\n/dev/sdb\n")
    code, err = validate(tmp_path, directory=str(tmp_path / "mnt" / "db"))
    assert code == OCF.ERR_CONFIGURED and "partition resource broker" in err
    code, err = validate(tmp_path, directory=str(tmp_path / "mnt2"))
    assert code == OCF.SUCCESS


def test_a_vanished_device_still_mounted_is_still_ours(monkeypatch, tmp_path):
    """A LUN whose device node disappeared: stop must still unmount it, not skip it."""
    busy = Busy(monkeypatch, [])
    monkeypatch.setattr(_mount, "device_number", lambda device: None)
    env = {"OCF_RESOURCE_INSTANCE": "data", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_backend": "shared", "OCF_RESKEY_device": "/dev/loop3",
           "OCF_RESKEY_directory": "/srv/data", "OCF_RESKEY_fstype": "ext4"}
    monitor = dict(env, OCF_RESKEY_CRM_meta_interval="10000")
    err = io.StringIO()
    assert partition.AGENT.execute(["monitor"], monitor, stderr=err) == OCF.FAILED_PROMOTED
    assert "/dev/loop3 is gone" in err.getvalue()
    assert partition.AGENT.execute(["stop"], env, stderr=io.StringIO()) == OCF.SUCCESS
    assert busy.calls == ["umount"] and not busy.mounted


# -- check levels: each role runs the highest level it implements ---------------------

class LevelCtx:
    def __init__(self, requested):
        self.check_level = partition.AGENT.check_level("monitor", requested)


@pytest.mark.parametrize("requested,unpromoted,promoted", [
    (None, 0, 0), ("0", 0, 0), ("5", 0, 0), ("10", 10, 10), ("15", 10, 10), ("20", 10, 20),
    ("99", 10, 20)])
def test_check_levels_map_to_what_the_role_implements(requested, unpromoted, promoted):
    ctx = LevelCtx(requested)
    assert partition._level(ctx, "Unpromoted") == unpromoted
    assert partition._level(ctx, "Promoted") == promoted


def test_the_meta_data_advertises_the_levels_each_role_implements():
    from lxml import etree
    out = io.StringIO()
    partition.AGENT.execute(["meta-data"], {}, stdout=out)
    depths = {}
    for action in etree.fromstring(out.getvalue().encode()).iter("action"):
        if action.get("name") == "monitor":
            depths.setdefault(action.get("role"), set()).add(int(action.get("depth")))
    assert depths == {"Unpromoted": {0, 10}, "Promoted": {0, 10, 20}}


# -- every retry loop ends at the operation's deadline --------------------------------

class Overrun(Exception):
    pass


@pytest.mark.parametrize("answer", [0, errno.EINVAL, errno.ENOENT])
def test_a_mount_that_keeps_coming_back_ends_at_the_deadline(monkeypatch, answer):
    """umount 'succeeds' (or says not mounted) yet the table still shows the mount (an
    automounter, a propagation peer): the loop gives up at the deadline with a reason."""
    busy = Busy(monkeypatch, [])
    calls = []

    def umount(point):
        calls.append(point)
        if len(calls) > 2000:
            raise Overrun("the release loop ignored its deadline")
        return answer
    monkeypatch.setattr(_mount, "umount", umount)
    left = _mount.release(busy.pick, Deadline(0.3), Log())
    assert left and left[0][0] is None and "/srv/data" in left[0][1]


def test_the_device_check_ends_at_the_deadline(monkeypatch):
    """A holder that never goes (a process stuck in the kernel): named at the deadline."""
    monkeypatch.setattr(_mount, "device_holders",
                        lambda number, everywhere=True: [(77, "dd", "open device")])
    monkeypatch.setattr(_mount, "still_open", lambda device: True)
    monkeypatch.setattr(_mount.procfs, "escalate", lambda pids, deadline, log, steps: pids)
    assert _mount.free("/dev/loop3", (7, 3), Deadline(0.3), Log()) == [(77, "dd", "open device")]


def test_a_disk_probe_never_outlasts_the_operation(monkeypatch, tmp_path):
    """probe_timeout=120 in a 10 s monitor: the probe gets what is left, not 120 s."""
    asked = []

    def bounded(work, timeout):
        asked.append(timeout)
        raise _mount.ProbeFailed(f"no answer within {timeout:g}s (hung I/O?)")
    monkeypatch.setattr(_mount, "bounded", bounded)
    monkeypatch.setattr(_mount, "device_number", lambda device: (7, 3))
    env = {"OCF_RESOURCE_INSTANCE": "data", "HA_RSCTMP": str(tmp_path),
           "OCF_RESKEY_backend": "shared", "OCF_RESKEY_device": "/dev/loop3",
           "OCF_RESKEY_directory": str(tmp_path / "data"), "OCF_RESKEY_fstype": "ext4",
           "OCF_RESKEY_probe_timeout": "120", "OCF_RESKEY_CRM_meta_timeout": "10000",
           "OCF_RESKEY_CRM_meta_interval": "20000", "OCF_CHECK_LEVEL": "10"}
    (tmp_path / "hapack-partition-data.state").write_text(f"{tmp_path}/data\n/dev/loop3\n")
    err = io.StringIO()
    assert partition.AGENT.execute(["monitor"], env, stderr=err) == OCF.ERR_GENERIC
    assert asked and asked[0] <= 10 and "the operation's time left" in err.getvalue()
