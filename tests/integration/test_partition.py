"""ocf:hapack:partition, shared backend, on a real ext4 loop device.

ocf-tester with its promote/demote sequence, the mount and its options, a
busy mount released by stop (TERM, then KILL for a holder that ignores
TERM), a stop that cannot finish (a writer stuck on a frozen file system)
failing with the holder named, level 20 catching a read-only remount and a
hung disk within its own timeout, and the promotion gate on a file system
that was not released cleanly.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from hapack import confirm
from requires import need_binary, need_root

AGENT = [sys.executable, "-m", "hapack.ocf.partition"]


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


class Space:
    """A private mount namespace for this test's mounts.

    Other engineers' labs create mount namespaces all the time; a namespace
    made while one of our file systems is mounted in the root namespace gets
    a private copy of that mount and keeps the file system busy after our
    umount. Mounting only in a namespace of our own avoids that.
    """

    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                        "sleep", "infinity"])
        mine = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == mine:
            assert time.monotonic() < deadline, "unshare did not make a mount namespace"
            time.sleep(0.01)

    def argv(self, argv):
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--", *map(str, argv)]

    def run(self, *argv, check=True):
        return sh(*self.argv(argv), check=check)

    def popen(self, argv, **kwargs):
        return subprocess.Popen(self.argv(argv), **kwargs)

    def mounts(self):
        with open(f"/proc/{self.holder.pid}/mountinfo", encoding="utf-8") as handle:
            return [line.split()[4].replace("\\040", " ") for line in handle]

    def mounted_at(self, path):
        return [point for point in self.mounts() if point == os.path.realpath(path)]

    def unmount_below(self, folder):
        for point in reversed(self.mounts()):
            if point.startswith(folder):
                self.run("fsfreeze", "-u", point, check=False)
                self.run("umount", point, check=False)

    def close(self, folder):
        self.unmount_below(folder)
        self.holder.kill()
        self.holder.wait()


class Disk:
    """A sparse image, ext4, on a loop device; detached (ours only) at close."""

    def __init__(self, folder, index, unclean=False):
        self.image = os.path.join(folder, f"disk{index}.img")
        with open(self.image, "wb") as handle:
            handle.truncate(64 * 1024 * 1024)
        sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard", self.image)
        if unclean:  # as left by a node that crashed with it mounted
            sh("debugfs", "-w", "-R", "feature needs_recovery", self.image)
        self.device = sh("losetup", "--find", "--show", self.image).stdout.strip()

    def close(self):
        for line in sh("losetup", "-j", self.image).stdout.splitlines():
            sh("losetup", "-d", line.split(":")[0], check=False)
        os.unlink(self.image)


@pytest.fixture
def space(tmp_path):
    need_root()
    need_binary("unshare", "nsenter")
    made = Space()
    try:
        yield made
    finally:
        made.close(str(tmp_path))


@pytest.fixture
def disk(tmp_path, space):
    need_binary("mkfs.ext4", "losetup", "debugfs", "fsfreeze")
    made = []

    def make(unclean=False):
        made.append(Disk(str(tmp_path), len(made), unclean))
        return made[-1]
    try:
        yield make
    finally:
        space.unmount_below(str(tmp_path))
        for item in made:
            item.close()


@pytest.fixture
def agent(tmp_path, space):
    """agent(action, disk, level=None, env=None, **params) -> CompletedProcess, in our namespace."""
    rsctmp = tmp_path / "rsctmp"
    rsctmp.mkdir()

    def call(action, dev, level=None, env=None, **params):
        full = {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf",
                "OCF_RESOURCE_INSTANCE": "data", "HA_RSCTMP": str(rsctmp),
                "OCF_RESKEY_CRM_meta_timeout": "20000", "OCF_RESKEY_CRM_meta_interval": "10000",
                "OCF_RESKEY_backend": "shared", "OCF_RESKEY_device": dev.device,
                "OCF_RESKEY_directory": str(tmp_path / "data"), "OCF_RESKEY_fstype": "ext4",
                "OCF_RESKEY_fence_confirmed_file": str(tmp_path / "fenced")}
        full.update({f"OCF_RESKEY_{k}": str(v) for k, v in params.items()})
        if level is not None:
            full["OCF_CHECK_LEVEL"] = str(level)
        full.update(env or {})
        return subprocess.run(space.argv(AGENT + [action]), env=full, capture_output=True,
                              text=True, timeout=120)
    call.directory = str(tmp_path / "data")
    return call


def promoted(agent, dev):
    """Start and promote: the partition mounted in our namespace."""
    assert agent("start", dev).returncode == 0
    result = agent("promote", dev)
    assert result.returncode == 0, result.stderr


def reason(result):
    return " ".join(line for line in result.stderr.splitlines() if "ocf-exit-reason" in line)


# -- the OCF contract ------------------------------------------------------------------

def test_ocf_tester_passes(disk, installed, tmp_path, space):
    need_binary("ocf-tester")
    dev = disk()
    env = dict(os.environ, HA_RSCTMP=str(tmp_path))
    result = subprocess.run(space.argv(
        ["ocf-tester", "-n", "part-test", "-o", "backend=shared", "-o", f"device={dev.device}",
         "-o", f"directory={tmp_path / 'data'}", "-o", "fstype=ext4", "-o", "options=noatime",
         "-o", "fence_confirmed_file=", installed("partition")]),
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed all tests" in result.stdout
    assert not space.mounted_at(tmp_path / "data")


def test_started_is_not_mounted_and_promoted_is_mounted_read_write(disk, agent, space):
    dev = disk()
    assert agent("monitor", dev).returncode == 7
    assert agent("start", dev, options="noatime,nodev").returncode == 0
    assert agent("monitor", dev).returncode == 0
    assert not space.mounted_at(agent.directory)
    assert agent("promote", dev, options="noatime,nodev").returncode == 0
    assert os.path.isdir(agent.directory) and space.mounted_at(agent.directory)
    with open(f"/proc/{space.holder.pid}/mountinfo", encoding="utf-8") as handle:
        line = next(l for l in handle if l.split()[4] == agent.directory)
    assert "rw" in line.split()[5] and "noatime" in line.split()[5] and "nodev" in line.split()[5]
    for level in (0, 10, 20):
        assert agent("monitor", dev, level=level, options="noatime,nodev").returncode == 8
    assert agent("monitor", dev, options="noatime,noexec").returncode == 9  # options differ
    assert agent("promote", dev).returncode == 0  # again: already promoted
    assert agent("demote", dev).returncode == 0
    assert not space.mounted_at(agent.directory)
    assert agent("monitor", dev).returncode == 0
    assert agent("stop", dev).returncode == 0
    assert agent("monitor", dev).returncode == 7
    assert agent("stop", dev).returncode == 0


def test_bad_input_on_a_real_node(disk, agent, tmp_path):
    dev = disk()

    class Fake:
        device = str(tmp_path / "not-a-device")
    open(Fake.device, "w").close()
    result = agent("start", Fake)
    assert result.returncode == 6 and "is not a block device" in reason(result)
    Fake.device = "/dev/hapack-missing-disk"
    result = agent("start", Fake)
    assert result.returncode == 5 and "does not exist on this node" in reason(result)
    assert agent("monitor", Fake, env={"OCF_RESKEY_CRM_meta_interval": "0"}).returncode == 7
    result = agent("start", dev, directory="/")
    assert result.returncode == 6 and "'/' cannot be" in reason(result)


def test_a_directory_used_by_another_mount_is_refused(disk, agent, space):
    dev, other = disk(), disk()
    os.makedirs(agent.directory)
    space.run("mount", other.device, agent.directory)
    result = agent("start", dev)
    assert result.returncode == 1 and f"already a mount point of {other.device}" in reason(result)


# -- stop within the budget -----------------------------------------------------------

IGNORE_TERM = ("import signal, sys, time\n"
               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
               "f = open(sys.argv[1], 'w'); print('ready', flush=True); time.sleep(600)\n")


def test_stop_kills_the_holders_and_releases_the_mount(disk, agent, space):
    dev = disk()
    promoted(agent, dev)
    polite = space.popen(["sh", "-c", f"cd {agent.directory} && exec sleep 600"])
    stubborn = space.popen([sys.executable, "-c", IGNORE_TERM,
                            os.path.join(agent.directory, "journal")],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout.readline().strip() == "ready"
        assert space.run("umount", agent.directory, check=False).returncode != 0  # busy
        started = time.monotonic()
        result = agent("stop", dev, env={"OCF_RESKEY_CRM_meta_timeout": "20000"})
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 20
        assert polite.wait(timeout=5) == -signal.SIGTERM
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert not space.mounted_at(agent.directory)
        assert "busy" in result.stderr and str(stubborn.pid) in result.stderr
    finally:
        for proc in (polite, stubborn):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


WRITER = ("import os, sys, time\n"
          "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
          "print('ready', flush=True); time.sleep(1)\n"
          "os.write(fd, b'x' * 65536); os.fsync(fd)\n")


def test_a_stop_that_cannot_finish_names_the_holders(disk, agent, space):
    dev = disk()
    promoted(agent, dev)
    writer = space.popen([sys.executable, "-c", WRITER, os.path.join(agent.directory, "f")],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        space.run("fsfreeze", "-f", agent.directory)  # the writer hangs in the kernel: unkillable
        time.sleep(1.5)
        started = time.monotonic()
        result = agent("stop", dev, env={"OCF_RESKEY_CRM_meta_timeout": "6000"})
        assert time.monotonic() - started < 15  # within the budget, not a hang
        assert result.returncode == 1
        assert f"still held by python3[{writer.pid}]" in reason(result) or \
            f"[{writer.pid}]" in reason(result)
        assert space.mounted_at(agent.directory)  # nothing pretended
    finally:
        space.run("fsfreeze", "-u", agent.directory, check=False)
        writer.wait(timeout=10)
    assert agent("stop", dev).returncode == 0
    assert not space.mounted_at(agent.directory)


# -- deeper monitors ------------------------------------------------------------------

def test_level_20_detects_a_read_only_remount(disk, agent, space):
    dev = disk()
    promoted(agent, dev)
    space.run("mount", "-o", "remount,ro", agent.directory)
    result = agent("monitor", dev, level=20)
    assert result.returncode == 9 and "read-only" in reason(result)
    assert agent("demote", dev).returncode == 0


def test_level_20_reports_a_hung_disk_within_its_own_timeout(disk, agent, space):
    dev = disk()
    promoted(agent, dev)
    space.run("fsfreeze", "-f", agent.directory)
    try:
        assert agent("monitor", dev, level=0).returncode == 8
        started = time.monotonic()
        result = agent("monitor", dev, level=20, probe_timeout=1)
        assert time.monotonic() - started < 10
        assert result.returncode == 9 and "no answer within 1s" in reason(result)
    finally:
        space.run("fsfreeze", "-u", agent.directory)
    time.sleep(0.5)  # the probe child left behind finishes after the thaw
    assert agent("monitor", dev, level=20).returncode == 8
    assert agent("stop", dev).returncode == 0


# -- the promotion gate ----------------------------------------------------------------

def test_an_unclean_file_system_needs_proof_that_the_peer_is_off(disk, agent, tmp_path, space):
    dev = disk(unclean=True)
    assert agent("start", dev).returncode == 0
    result = agent("promote", dev)
    assert result.returncode == 1 and "journal needs recovery" in reason(result)
    assert not space.mounted_at(agent.directory)

    fenced = tmp_path / "fenced"
    stale = confirm.render("node2", os.uname().nodename, "fence_bmc off", confirm.boot_id(),
                           confirm.now() - confirm.MAX_AGE - 60)
    fenced.write_text(stale)
    fenced.chmod(0o600)
    result = agent("promote", dev)
    assert result.returncode == 1 and "old" in reason(result)

    # hamon: node2 confirmed powered off just now (on this node, this boot)
    confirm.write(str(fenced), "node2", os.uname().nodename, "fence_bmc off")
    result = agent("promote", dev)
    assert result.returncode == 0, result.stderr
    assert space.mounted_at(agent.directory)
    assert not fenced.exists()  # used up: one power-off, one promotion
    assert agent("stop", dev).returncode == 0


def test_any_promotion_uses_the_fence_confirmation_up(disk, agent, tmp_path, space):
    dev = disk()  # released cleanly: the disk alone allows the promotion
    fenced = tmp_path / "fenced"
    confirm.write(str(fenced), "node2", os.uname().nodename, "fence_bmc off")
    assert agent("start", dev).returncode == 0
    assert agent("promote", dev).returncode == 0
    assert not fenced.exists()  # a later promotion cannot lean on this old power-off
    assert agent("stop", dev).returncode == 0


def pacemaker_env(tmp_path, stonith):
    cib = tmp_path / "cib.xml"
    cib.write_text(sh("cibadmin", "--empty").stdout)
    env = {"CIB_file": str(cib), "OCF_RESKEY_crm_feature_set": "3.16.1",
           "OCF_RESKEY_CRM_meta_promoted_max": "1", "OCF_RESKEY_CRM_meta_notify": "true",
           "OCF_RESKEY_CRM_meta_on_node": "node1"}
    if stonith is not None:
        sh("crm_attribute", "--type", "crm_config", "--name", "stonith-enabled", "--update",
           stonith)
    return env


PRE_PROMOTE = {"OCF_RESKEY_CRM_meta_notify_type": "pre",
               "OCF_RESKEY_CRM_meta_notify_operation": "promote",
               "OCF_RESKEY_CRM_meta_notify_promote_resource": "data:0",
               "OCF_RESKEY_CRM_meta_notify_promote_uname": "node1"}


@pytest.mark.parametrize("stonith,allowed", [("false", False), ("true", True)])
def test_pacemakers_pre_promote_notification_opens_the_gate(disk, agent, tmp_path, monkeypatch,
                                                            stonith, allowed):
    need_binary("cibadmin", "crm_attribute")
    dev = disk(unclean=True)
    env = pacemaker_env(tmp_path, None)
    monkeypatch.setenv("CIB_file", env["CIB_file"])
    sh("crm_attribute", "--type", "crm_config", "--name", "stonith-enabled", "--update", stonith)
    assert agent("start", dev, env=env).returncode == 0
    assert agent("promote", dev, env=env).returncode == 1  # no notification yet
    assert agent("notify", dev, env=dict(env, **PRE_PROMOTE)).returncode == 0
    result = agent("promote", dev, env=env)
    assert (result.returncode == 0) is allowed, result.stderr
    if not allowed:
        assert "stonith-enabled=false" in reason(result)
    assert agent("stop", dev, env=env).returncode == 0


def test_pacemaker_reporting_the_peer_promoted_is_refused(disk, agent, tmp_path, monkeypatch, space):
    dev = disk()  # even a clean file system
    env = pacemaker_env(tmp_path, None)
    monkeypatch.setenv("CIB_file", env["CIB_file"])
    assert agent("start", dev, env=env).returncode == 0
    peer = dict(PRE_PROMOTE, OCF_RESKEY_CRM_meta_notify_master_resource="data:1",
                OCF_RESKEY_CRM_meta_notify_master_uname="node2")
    assert agent("notify", dev, env=dict(env, **peer)).returncode == 0
    result = agent("promote", dev, env=env)
    assert result.returncode == 1 and "Pacemaker reports node2 promoted" in reason(result)
    assert not space.mounted_at(agent.directory)
    assert agent("stop", dev, env=env).returncode == 0


def test_the_device_mounted_elsewhere_on_this_node_is_refused(disk, agent, tmp_path, space):
    dev = disk()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert agent("start", dev).returncode == 0
    space.run("mount", dev.device, str(elsewhere))
    result = agent("promote", dev)
    assert result.returncode == 1 and "already mounted on" in reason(result)


def test_a_copy_of_the_mount_in_another_namespace_is_not_a_release(disk, agent, space):
    """A namespace made while the partition was mounted (unshare, a sandboxed service) keeps
    the file system mounted after our umount: demote must say so, not report success."""
    dev = disk()
    promoted(agent, dev)
    copy = space.popen(["unshare", "--mount", "--propagation", "private", "sleep", "600"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{copy.pid}/ns/mnt") == os.readlink(
                f"/proc/{space.holder.pid}/ns/mnt"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        result = agent("demote", dev)
        assert result.returncode == 1
        assert f"mounted in the mount namespace of sleep[{copy.pid}]" in reason(result)
        for action in ("demote", "stop"):  # nothing mounted here now, still not released
            result = agent(action, dev)
            assert result.returncode == 1
            assert f"mounted in the mount namespace of sleep[{copy.pid}]" in reason(result)
    finally:
        copy.kill()
        copy.wait()
    assert agent("demote", dev).returncode == 0
    assert agent("promote", dev).returncode == 0  # released cleanly now
    assert agent("stop", dev).returncode == 0


def test_the_peer_of_a_shared_kernel_lab_may_hold_the_device(disk, agent, space, tmp_path):
    """The lab's nodes are mount namespaces of one kernel: a partition that never mounted
    the device here stops cleanly while another namespace (the peer) has it mounted."""
    dev = disk()
    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    peer = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"mount {dev.device} {peer_dir} && echo ready && exec sleep 600"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "ready"
        assert agent("start", dev).returncode == 0
        assert agent("monitor", dev).returncode == 0
        assert agent("stop", dev).returncode == 0
    finally:
        peer.kill()
        peer.wait()


# -- the promotion score: written again when the CIB lost it (campaign finding 2) ----------

def cib_score(env):
    found = subprocess.run(["crm_attribute", "--promotion=data", "-l", "reboot", "-G", "-q"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, CIB_file=env["CIB_file"]))
    return found.stdout.strip() if found.returncode == 0 else None


def lose_score(env):
    """What the attribute manager did to the survivor around its peer's rejoin."""
    subprocess.run(["cibadmin", "-D", "--xpath", "//transient_attributes//nvpair[@name='master-data']"],
                   check=True, timeout=60, env=dict(os.environ, CIB_file=env["CIB_file"]))


@pytest.mark.parametrize("role", ["Unpromoted", "Promoted"])
def test_a_recurring_monitor_writes_the_score_again_when_the_cib_lost_it(disk, agent, tmp_path,
                                                                         monkeypatch, role):
    need_binary("cibadmin", "crm_attribute")
    dev = disk()
    env = pacemaker_env(tmp_path, None)
    monkeypatch.setenv("CIB_file", env["CIB_file"])
    sh("crm_attribute", "--type", "crm_config", "--name", "stonith-enabled", "--update", "true")
    uname = os.uname().nodename   # crm_attribute's own node, with a CIB file
    for section, xml in (("nodes", f'<node id="1" uname="{uname}"/>'),
                         ("status", f'<node_state id="1" uname="{uname}"/>')):
        sh("cibadmin", "-C", "-o", section, "-X", xml)
    env["OCF_RESKEY_CRM_meta_on_node"] = uname
    assert agent("start", dev, env=env).returncode == 0
    if role == "Promoted":
        open(tmp_path / "fenced", "w").close()
        note = dict(env, **PRE_PROMOTE)
        note["OCF_RESKEY_CRM_meta_notify_promote_uname"] = uname
        assert agent("notify", dev, env=note).returncode == 0
        result = agent("promote", dev, env=env)
        assert result.returncode == 0, result.stderr
    expected = 0 if role == "Unpromoted" else 8
    try:
        assert cib_score(env) == "1000"
        for _ in range(3):
            assert agent("monitor", dev, env=env).returncode == expected
            assert cib_score(env) == "1000"
            lose_score(env)
            assert cib_score(env) is None
            result = agent("monitor", dev, env=env)
            assert result.returncode == expected, result.stderr
            assert cib_score(env) == "1000", result.stderr
            assert "missing from the CIB" in result.stderr
    finally:
        agent("stop", dev, env=env)
