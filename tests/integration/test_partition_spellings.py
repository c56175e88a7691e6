"""ocf:hapack:partition tells the truth whatever the spelling or layout of its paths.

Property-style: one real ext4 loop device in a private mount namespace,
configured through many spellings of the same ``directory`` (symlinked
parents, ``//``, trailing ``/``, ``.`` and ``..``) and of the same
``device`` (a symlink as /dev/disk/by-* would be, ``//dev/...``), and
driven through fixed and seeded random sequences of start, promote,
monitor, demote and stop mixed with what real servers do to a mount: a
tmpfs over the directory, a tmpfs over its parent, a bind mount elsewhere,
a second mount of the device at another path, processes holding it. After
EVERY step, checked against the kernel (mountinfo and stat through
/proc/<pid>/root, an O_EXCL open of the device), not against the agent:

(a) monitor's exit code matches the device's real state: 8 when our file
    system is what the directory shows, 9 when the device is mounted
    anywhere else in the namespace (hidden, bind, other path), else 0 when
    started and 7 when not;
(b) an action that returned non-zero left no new mount of the device;
(c) stop or demote returned 0 => the device is mounted nowhere in the
    namespace, nothing holds it (O_EXCL), and no process is on it.
"""

import os
import random
import stat
import subprocess
import sys

import pytest

from requires import need_binary, need_root
from test_partition import Disk, Space

AGENT = [sys.executable, "-m", "hapack.ocf.partition"]
EXT4_ROOT_INODE = 2


class World:
    """The namespace, the device, the spellings, and the disturbances made so far."""

    def __init__(self, tmp, space, dev, directory, device):
        self.tmp, self.space, self.dev = tmp, space, dev
        self.directory, self.device = directory, device
        info = os.stat(dev.device)
        self.number = (os.major(info.st_rdev), os.minor(info.st_rdev))
        self.busy, self.loops = [], []
        self.log = []

    @property
    def where(self):
        """What the spelling resolves to now (the symlinks live outside the namespace's
        own mounts, so resolving them here is resolving them there)."""
        return os.path.realpath(self.directory)

    # -- the kernel's view, independent of the agent -------------------------------

    def ns_path(self, path):
        return f"/proc/{self.space.holder.pid}/root{path}"

    def our_mounts(self):
        """{mount id: mount point} of our device in the namespace."""
        found = {}
        with open(f"/proc/{self.space.holder.pid}/mountinfo", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if tuple(map(int, fields[2].split(":"))) == self.number:
                    found[int(fields[0])] = fields[4]
        return found

    def shown_at_directory(self):
        """True when the directory shows our file system's root (ext4 inode 2)."""
        try:
            info = os.stat(self.ns_path(self.where))
        except OSError:
            return False
        return (os.major(info.st_dev), os.minor(info.st_dev)) == self.number and \
            info.st_ino == EXT4_ROOT_INODE

    def device_free(self):
        try:
            os.close(os.open(self.dev.device, os.O_RDONLY | os.O_EXCL))
        except OSError:
            return False
        return True

    def processes_on_device(self):
        on = []
        for proc in self.busy:
            if proc.poll() is not None:
                continue
            try:
                info = os.stat(f"/proc/{proc.pid}/cwd")
            except OSError:
                continue
            if (os.major(info.st_dev), os.minor(info.st_dev)) == self.number:
                on.append(proc.pid)
        return on

    def started(self):
        return os.path.exists(os.path.join(self.tmp, "rsctmp", "hapack-partition-data.state"))

    # -- the agent ----------------------------------------------------------------

    def call(self, action, level=0):
        env = {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf",
               "OCF_RESOURCE_INSTANCE": "data", "HA_RSCTMP": os.path.join(self.tmp, "rsctmp"),
               "OCF_RESKEY_CRM_meta_timeout": "20000",
               "OCF_RESKEY_CRM_meta_interval": "10000" if action == "monitor" else "0",
               "OCF_RESKEY_backend": "shared", "OCF_RESKEY_device": self.device,
               "OCF_RESKEY_directory": self.directory, "OCF_RESKEY_fstype": "ext4",
               "OCF_RESKEY_fence_confirmed_file": "", "OCF_CHECK_LEVEL": str(level)}
        result = subprocess.run(self.space.argv(AGENT + [action]), env=env,
                                capture_output=True, text=True, timeout=120)
        reason = " ".join(l for l in result.stderr.splitlines() if "ocf-exit-reason" in l)
        self.log.append(f"{action}(level {level}) -> {result.returncode} {reason}")
        return result.returncode

    # -- disturbances, as an administrator or a service would make them -----------

    def tmpfs_over(self, path):
        if os.path.isdir(self.ns_path(path)):
            self.space.run("mount", "-t", "tmpfs", "-o", "size=1m", "hapack-over", path,
                           check=False)

    def disturb(self, what):
        self.log.append(f"disturb: {what}")
        tmp, space = self.tmp, self.space
        if what == "overmount":
            self.tmpfs_over(self.where)
        elif what == "overmount_parent":
            self.tmpfs_over(os.path.dirname(self.where))
        elif what == "bind":
            os.makedirs(os.path.join(tmp, "bind"), exist_ok=True)
            if os.path.isdir(self.ns_path(self.where)):
                space.run("mount", "--bind", self.where, os.path.join(tmp, "bind"), check=False)
        elif what == "second":
            os.makedirs(os.path.join(tmp, "second"), exist_ok=True)
            space.run("mount", "-t", "ext4", self.dev.device, os.path.join(tmp, "second"),
                      check=False)
        elif what in ("busy", "busy_file"):
            target = self.where if what == "busy" else os.path.join(tmp, "second")
            hold = "exec 3>>hold" if what == "busy_file" else ":"
            self.busy.append(space.popen(
                ["sh", "-c", f"cd {target} 2>/dev/null || exit 0; {hold}; exec sleep 600"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        elif what == "bind_sub":
            os.makedirs(os.path.join(tmp, "bindsub"), exist_ok=True)
            sub = os.path.join(self.where, "sub")
            space.run("mkdir", "-p", sub, check=False)
            space.run("mount", "--bind", sub, os.path.join(tmp, "bindsub"), check=False)
        elif what == "loop_on_it":  # a loop device backed by a file in the partition
            image = os.path.join(self.where, "inner.img")
            space.run("truncate", "-s", "1M", image, check=False)
            made = space.run("losetup", "--find", "--show", image, check=False)
            if made.returncode == 0:
                self.loops.append(made.stdout.strip())
        elif what == "repoint":  # /srv -> /data becomes /srv -> /data2 (or back)
            link = os.path.join(tmp, "link")
            target = os.path.join(tmp, "real2" if os.readlink(link).endswith("real") else "real")
            os.unlink(link)
            os.symlink(target, link)
        elif what == "clear":
            self.clear()

    def clear(self):
        """Remove what the disturbances left (not the agent's mounts)."""
        for proc in self.busy:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for loop in self.loops:
            subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)
        self.loops = []
        for _ in range(10):
            tops = [p for p in self.tmpfs_points()]
            if not tops:
                break
            for point in reversed(tops):
                self.space.run("umount", point, check=False)

    def tmpfs_points(self):
        with open(f"/proc/{self.space.holder.pid}/mountinfo", encoding="utf-8") as handle:
            return [line.split()[4] for line in handle if " - tmpfs hapack-over " in line]

    def close(self):
        for proc in self.busy:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for loop in self.loops:
            subprocess.run(["losetup", "-d", loop], capture_output=True, check=False)

    # -- the invariants -------------------------------------------------------------

    def check(self, action, code, before):
        history = "\n".join(self.log[-12:])
        after = self.our_mounts()
        if code != 0:  # (b)
            assert set(after) <= set(before), \
                f"{action} failed ({code}) and left a new mount {after}\n{history}"
        if action in ("stop", "demote") and code == 0:  # (c)
            assert not after, f"{action} returned 0 with the device mounted: {after}\n{history}"
            assert self.device_free(), f"{action} returned 0, device held\n{history}"
            assert not self.processes_on_device(), f"{action} returned 0, in use\n{history}"
        if action == "promote" and code == 0:
            assert self.shown_at_directory(), f"promote returned 0, not shown\n{history}"

    def expected_monitor(self):
        if self.shown_at_directory():
            return 8
        if self.our_mounts():
            return 9
        return 0 if self.started() else 7

    def step(self, action, level=0):
        before = self.our_mounts()
        code = self.call(action, level)
        self.check(action, code, before)
        expected = self.expected_monitor()  # (a), after every step
        got = self.call("monitor", level)
        assert got == expected, (f"monitor {got}, the device's state says {expected} "
                                 f"(mounts {self.our_mounts()})\n" + "\n".join(self.log[-12:]))
        return code


def directory_spellings(tmp):
    return [f"{tmp}/real/data", f"/{tmp}/real/data", f"{tmp}/real/data/",
            f"{tmp}/real/./data", f"{tmp}/real/other/../data", f"{tmp}/link/data",
            f"{tmp}/link2//data/", f"/{tmp}/link/../link/./data", f"{tmp}/datalink/"]


def device_spellings(tmp, dev):
    name = os.path.basename(dev.device)
    return [dev.device, f"{tmp}/by-id/hapack-disk", f"/{dev.device}", f"/dev/../dev/{name}"]


@pytest.fixture
def world(tmp_path):
    need_root()
    need_binary("unshare", "nsenter", "mkfs.ext4", "losetup", "debugfs")
    tmp = str(tmp_path)
    for folder in ("real", "real/other", "real2", "rsctmp", "by-id"):
        os.makedirs(os.path.join(tmp, folder))
    os.symlink(os.path.join(tmp, "real"), os.path.join(tmp, "link"))
    os.symlink(os.path.join(tmp, "real", "data"), os.path.join(tmp, "datalink"))
    os.symlink(os.path.join(tmp, "link"), os.path.join(tmp, "link2"))
    space = Space()
    dev = None
    made = []
    try:
        dev = Disk(tmp, 0)
        os.symlink(dev.device, os.path.join(tmp, "by-id", "hapack-disk"))

        def make(directory, device):
            made.append(World(tmp, space, dev, directory, device))
            return made[-1]
        make.spellings = (directory_spellings(tmp), device_spellings(tmp, dev))
        yield make
    finally:
        for item in made:
            item.close()
        space.close(tmp)
        if dev is not None:
            dev.close()


def test_the_spellings_resolve_to_one_directory(tmp_path):
    tmp = str(tmp_path)
    os.makedirs(os.path.join(tmp, "real", "other"))
    os.symlink(os.path.join(tmp, "real"), os.path.join(tmp, "link"))
    os.symlink(os.path.join(tmp, "link"), os.path.join(tmp, "link2"))
    os.symlink(os.path.join(tmp, "real", "data"), os.path.join(tmp, "datalink"))
    assert {os.path.realpath(d) for d in directory_spellings(tmp)} == {f"{tmp}/real/data"}


FIXED = ["start", "promote", "promote", "demote", "promote", ("disturb", "bind"), "demote",
         "promote", ("disturb", "second"), ("disturb", "busy"), "stop", "start", "promote",
         ("disturb", "overmount"), "promote", "demote", "stop", "stop"]


@pytest.mark.parametrize("index", range(9))
def test_every_spelling_through_a_fixed_sequence(world, index):
    directories, devices = world.spellings
    w = world(directories[index], devices[index % len(devices)])
    assert w.call("monitor") == 7
    for step in FIXED:
        if isinstance(step, tuple):
            w.disturb(step[1])
            assert w.call("monitor") == w.expected_monitor(), "\n".join(w.log[-12:])
        else:
            w.step(step)
    assert not w.our_mounts() and w.device_free()


ACTIONS = ["start", "start", "promote", "promote", "promote", "demote", "stop", "monitor"]
DISTURBANCES = ["overmount", "overmount_parent", "bind", "bind_sub", "second", "busy",
                "busy_file", "loop_on_it", "repoint", "clear"]


@pytest.mark.parametrize("seed", range(12))
def test_seeded_random_sequences(world, seed):
    rng = random.Random(seed)
    directories, devices = world.spellings
    w = world(rng.choice(directories), rng.choice(devices))
    w.log.append(f"seed {seed}: directory={w.directory} device={w.device}")
    for _ in range(14):
        if rng.random() < 0.3:
            w.disturb(rng.choice(DISTURBANCES))
            assert w.call("monitor") == w.expected_monitor(), "\n".join(w.log[-12:])
        else:
            w.step(rng.choice(ACTIONS), rng.choice((0, 10, 20)))
    w.disturb("clear")
    assert w.step("stop") == 0
