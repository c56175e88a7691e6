"""Mounts as the partition agent sees them.

The mount table comes from /proc/self/mountinfo (no ``mount`` child). The
partition is found by its DEVICE, never by a path string: every mount whose
major:minor is the device's is ours, wherever it is and however it is
spelled (a bind mount, a second mount at another path, a mount hidden under
an over-mount). What sits on top of a mount is found through the mount tree
(parent ids), and which mount a path reaches through the mount id the
kernel reports for an ``O_PATH`` descriptor (``/proc/self/fdinfo``). umount
is one umount2(2) call, made only on a path that reaches exactly the mount
meant; the holders of a busy mount come from a /proc walk matched by mount
id (never ``fuser -m``); every disk probe runs in a forked child with its own
timeout: a hung disk is reported as a failure, not waited for (the child,
stuck in the kernel, is left behind).
"""

from __future__ import annotations

import os

from hapack import procfs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Callable
    from hapack.timing import Deadline
    from hapack.log import Logger

MOUNTINFO = "/proc/self/mountinfo"
BLOCK = 4096

# Per-mount flags the kernel always shows in mountinfo (field 6), and their opposites.
VFS_FLAGS = {"nosuid": "suid", "nodev": "dev", "noexec": "exec", "noatime": "atime",
             "nodiratime": "diratime", "relatime": "norelatime", "nosymfollow": "symfollow"}
SB_FLAGS = ("sync", "dirsync", "lazytime", "mand")  # shown in the super options
USERSPACE = ("defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users",
             "owner", "group", "rw", "async")


class Mount:
    """One line of mountinfo: ids, device, the path inside the file system (root),
    the mount point, per-mount options, type, source and super options."""

    __slots__ = ("dev", "point", "options", "fstype", "source", "super_options", "id", "parent",
                 "root")

    def __init__(self, dev, point, options, fstype, source, super_options, id=0, parent=-1,
                 root="/"):
        self.dev, self.point, self.options = dev, point, options
        self.fstype, self.source, self.super_options = fstype, source, super_options
        self.id, self.parent, self.root = id, parent, root

    @property
    def read_only(self) -> bool:
        return "ro" in self.options or "ro" in self.super_options

    def __repr__(self):
        return f"Mount({self.id} {self.dev[0]}:{self.dev[1]} {self.source} on {self.point})"


def _unescape(text):
    return (text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def table(path: str = MOUNTINFO) -> list[Mount]:
    """Every mount of this mount namespace, in mount order."""
    mounts = []
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            a, b = left.split(), right.split()
            major, minor = a[2].split(":")
            mounts.append(Mount((int(major), int(minor)), _unescape(a[4]), a[5].split(","),
                                b[0], _unescape(b[1]), b[2].split(",") if len(b) > 2 else [],
                                id=int(a[0]), parent=int(a[1]), root=_unescape(a[3])))
    return mounts


def resolve(path: str) -> str:
    """The canonical spelling of a path: symlinks, '.', '..', '//' and trailing '/' resolved
    (as far as the path exists; the rest is normalised)."""
    return os.path.realpath(path)


def at(point: str, mounts: list[Mount]) -> list[Mount]:
    """The mounts on exactly this mount point, bottom first (the last one is visible)."""
    return [m for m in mounts if m.point == point]


def below(point: str, mounts: list[Mount]) -> list[Mount]:
    """Mounts strictly below point, deepest first (the order to unmount them)."""
    prefix = point.rstrip("/") + "/"
    found = [m for m in mounts if m.point.startswith(prefix)]
    return sorted(found, key=lambda m: m.point.count("/"), reverse=True)


def device_number(device: str) -> tuple[int, int] | None:
    """(major, minor) of a block device path, or None when it is not one (or missing)."""
    import stat
    try:
        info = os.stat(device)
    except OSError:
        return None
    if not stat.S_ISBLK(info.st_mode):
        return None
    return os.major(info.st_rdev), os.minor(info.st_rdev)


def of_device(device: str, mounts: list[Mount]) -> list[Mount]:
    """Where the device is mounted in this namespace."""
    number = device_number(device)
    return [m for m in mounts if number is not None and m.dev == number]


def _fdinfo_mount_id(path):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def mount_id(path: str, follow: bool = False) -> int | None:
    """The id of the mount that path reaches (O_PATH: no open of the file system), or None."""
    flags = os.O_PATH | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        return _fdinfo_mount_id(f"/proc/self/fdinfo/{fd}")
    finally:
        os.close(fd)


def visible(point: str, mounts: list[Mount]) -> Mount | None:
    """The mount that point reaches now (the top of any stack there), or None."""
    number = mount_id(point)
    return next((m for m in mounts if m.id == number), None) if number is not None else None


def subtree(roots: list[Mount], mounts: list[Mount]) -> list[Mount]:
    """roots and every mount stacked on or below them (by parent id), deepest in the
    mount tree first: the order to unmount them."""
    children: dict[int, list[Mount]] = {}
    for mount in mounts:
        children.setdefault(mount.parent, []).append(mount)
    found, todo = {}, list(roots)
    while todo:
        mount = todo.pop()
        if mount.id not in found:
            found[mount.id] = mount
            todo.extend(c for c in children.get(mount.id, ()) if c.id != mount.id)
    depth = _depths(mounts)
    return sorted(found.values(), key=lambda m: depth.get(m.id, 0), reverse=True)


def _depths(mounts):
    by_id = {m.id: m for m in mounts}
    depths = {}
    for mount in mounts:
        depth, current, seen = 0, mount, {mount.id}
        while current.parent in by_id and current.parent not in seen:
            seen.add(current.parent)
            current = by_id[current.parent]
            depth += 1
        depths[mount.id] = depth
    return depths


def hidden_by(target: Mount, mounts: list[Mount]) -> str | None:
    """Why target cannot be reached by its mount point's path, or None when it can."""
    seen = mount_id(target.point)
    if seen == target.id:
        return None
    top = next((m for m in mounts if m.id == seen), None)
    if top is not None and top.point == target.point:
        return f"{top.source} ({top.fstype}) is mounted over it on {top.point}"
    ancestors, current = set(), target
    by_id = {m.id: m for m in mounts}
    while current.parent in by_id and current.parent not in ancestors:
        ancestors.add(current.parent)
        current = by_id[current.parent]
    covers = [m for m in mounts if m.id not in ancestors and m.id != target.id
              and _under(target.point, m.point) and m.point != target.point]
    if covers:
        cover = covers[-1]
        return f"{cover.source} ({cover.fstype}) is mounted over {cover.point}"
    return "another mount hides it"


def _under(path, point):
    return path == point or path.startswith(point.rstrip("/") + "/")


def describe(mount: Mount) -> str:
    where = mount.point if mount.root == "/" else f"{mount.point} (bind of {mount.root})"
    return where


def option_problems(mount: Mount, options: str | None) -> list[str]:
    """What in the mount differs from the wanted options (read-write is always wanted)."""
    problems = []
    if mount.read_only:
        where = "the file system" if "ro" in mount.super_options else "the mount"
        problems.append(f"{where} is read-only")
    for option in options_list(options):
        key = option.split("=", 1)[0]
        if option in VFS_FLAGS and option not in mount.options:
            problems.append(f"{option} is missing")
        elif option in VFS_FLAGS.values():
            flag = next(k for k, v in VFS_FLAGS.items() if v == option)
            if flag in mount.options:
                problems.append(f"{flag} is set, {option} was asked for")
        elif option in SB_FLAGS and option not in mount.super_options:
            problems.append(f"{option} is missing")
        elif "=" in option and key not in USERSPACE and not key.startswith("x-"):
            shown = [o for o in mount.super_options if o.split("=", 1)[0] == key]
            if shown and option not in shown:  # the kernel hides defaults; compare what it shows
                problems.append(f"{shown[0]} instead of {option}")
    return problems


def options_list(options: str | None) -> list[str]:
    return [o for o in (options or "").split(",") if o]


def fstype_known(fstype: str) -> bool:
    from hapack.command import which
    with open("/proc/filesystems", encoding="ascii") as handle:
        if fstype in (line.split()[-1] for line in handle if line.strip()):
            return True
    if which(f"mount.{fstype}", "/sbin:/usr/sbin:/bin:/usr/bin"):
        return True
    try:
        with open(f"/lib/modules/{os.uname().release}/modules.dep", encoding="utf-8") as handle:
            return f"/{fstype}.ko" in handle.read()
    except OSError:
        return False


# -- mounting and unmounting ----------------------------------------------------

def mount_argv(fstype: str, options: str, device: str, directory: str) -> list[str]:
    argv = ["mount", "-t", fstype]
    if options:
        argv += ["-o", options]
    return argv + [device, directory]


def umount(point: str) -> int:
    """umount2(point, UMOUNT_NOFOLLOW): 0, or the errno (EBUSY: still in use)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(point), 8) == 0:  # UMOUNT_NOFOLLOW
        return 0
    return ctypes.get_errno()


def release(pick: Callable, deadline: Deadline, log: Logger, term_share: float = 0.5) -> list[Any]:
    """Unmount every mount that pick(mounts) names, and everything stacked on or below
    them, within deadline; return what is left holding them ([] on success).

    Order: umount first (a busy mount is the exception); then the holders
    found by walking /proc (matched by mount id) get TERM and, for what is
    left, KILL; then umount again. Later rounds (a workload that keeps coming
    back) go straight to KILL. A mount that its path does not reach (hidden
    by a mount that is not ours to remove) is not guessed at: it is
    reported. Returns [(pid, comm, how)] of the processes still holding a
    mount, or [(None, reason, "")] when there is no process to blame.
    """
    import errno
    import time
    first, last = True, None
    while True:
        mounts = table()
        targets = subtree(pick(mounts), mounts)
        if not targets:
            return []
        target = targets[0]
        if last is not None and deadline.expired:
            return (mount_holders(target) + kernel_users(target.point)) or [
                (None, f"{target.point} is still mounted at the deadline (mounted again, "
                       "or umount had no effect)", "")]
        if target.id == last:  # unmounted, yet there again: do not spin
            time.sleep(min(0.05, deadline.left()))
        last = target.id
        cover = hidden_by(target, mounts)
        if cover:
            return [(None, f"{target.source} on {describe(target)} cannot be reached: "
                           f"{cover}", "")]
        code = umount(target.point)
        if code in (0, errno.EINVAL, errno.ENOENT):  # done, or changed meanwhile
            continue
        if code != errno.EBUSY:
            return [(None, f"umount {target.point}: {os.strerror(code)}", "")]
        holders = mount_holders(target)
        if deadline.expired:
            return _blame(target, holders)
        if not holders and kernel_users(target.point):
            return _blame(target, holders)
        if not holders:  # a process just leaving: look again shortly
            time.sleep(min(0.1, deadline.left()))
            continue
        log.warning(f"{target.point} is busy: {names(holders)}")
        steps = ((procfs.SIGTERM, term_share), (procfs.SIGKILL, 1.0)) if first else (
            (procfs.SIGKILL, 1.0),)
        first = False
        procfs.escalate([pid for pid, _, _ in holders], deadline, log, steps=steps)


def _blame(target, holders=None):
    holders = mount_holders(target) if holders is None else holders
    return holders + kernel_users(target.point) or [
        (None, f"{target.point} is busy with no process holding it (an export, a "
               "namespace's bind mount, or a kernel user?)", "")]


def names(holders: Sequence[tuple[int | None, str | None, str]]) -> str:
    """'java[4242] (open file), loop device /dev/loop9 (backing file ...)'."""
    return ", ".join(f"{comm}[{pid}] ({how})" if pid else comm  # type: ignore[misc]
                     for pid, comm, how in holders)  # no pid: comm describes it


def mount_holders(mount: Mount) -> list[tuple[int, str | None, str]]:
    """Processes using this very mount (cwd, root, exe, open or mapped files in it):
    [(pid, comm, how)]. Paths found by readlink are only a first filter (a dead disk
    does not block readlink); the mount id of the link's target decides."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        how = _uses(int(entry), mount)
        if how:
            found.append((int(entry), procfs.comm(int(entry)), how))
    return found


def _uses(pid, mount):
    base = f"/proc/{pid}"
    for what in ("cwd", "root", "exe"):
        if _link_in(f"{base}/{what}", mount, None):
            return what
    for folder, what in (("fd", "open file"), ("map_files", "mapped file")):
        try:
            entries = os.listdir(f"{base}/{folder}")
        except OSError:
            continue
        for name in entries:
            info = f"{base}/fdinfo/{name}" if folder == "fd" else None
            if _link_in(f"{base}/{folder}/{name}", mount, info):
                return what
    return None


def _link_in(link, mount, fdinfo):
    try:
        path = os.readlink(link)
    except OSError:
        return False
    if not _under(path, mount.point):
        return False
    number = _fdinfo_mount_id(fdinfo) if fdinfo else mount_id(link, follow=True)
    return number is None or number == mount.id  # unknown: counted, not ignored


def kernel_users(point: str) -> list[tuple[None, str, str]]:
    """Holders without a process: loop devices backed by a file below point, swap files."""
    import glob
    found = []
    for path in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                backing = handle.read().strip()
        except OSError:
            continue
        if _under(backing, point):
            found.append((None, f"loop device /dev/{path.split('/')[3]} (backing file "
                                f"{backing})", ""))
    try:
        with open("/proc/swaps", encoding="utf-8", errors="replace") as handle:
            swaps = [line.split()[0] for line in handle.readlines()[1:] if line.strip()]
    except OSError:
        swaps = []
    found += [(None, f"swap file {path}", "") for path in swaps if _under(path, point)]
    return found


# -- the device itself, once it is mounted nowhere here ----------------------------

def still_open(device: str) -> bool:
    """True when the block device is still claimed: mounted in some other mount
    namespace (a private copy made by unshare or a service's sandbox) or held."""
    import errno
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
    except OSError as exc:
        return exc.errno == errno.EBUSY
    return False


def device_holders(number: tuple[int, int],
                   everywhere: bool = True) -> list[tuple[int | None, str | None, str]]:
    """What holds the block device besides mounts of this namespace: processes with the
    device open, a mount in another mount namespace, a device stacked on it (dm, md).
    everywhere=False: only processes of this mount namespace (the lab's nodes share one
    kernel; another namespace there is another node)."""
    if not everywhere:
        return device_openers(number, os.readlink("/proc/self/ns/mnt"))
    found: list[tuple[int | None, str | None, str]] = [(pid, comm, "mount namespace")
                  for pid, comm in namespaces_holding(number)]
    try:
        stacked = os.listdir(f"/sys/dev/block/{number[0]}:{number[1]}/holders")
    except OSError:
        stacked = []
    found += [(None, f"/dev/{name} (stacked on it)", "") for name in stacked]
    return found + device_openers(number)


def _in_space(pid, space):
    try:
        return space is None or os.readlink(f"/proc/{pid}/ns/mnt") == space
    except OSError:
        return False


def device_openers(number: tuple[int, int],
                   space: str | None = None) -> list[tuple[int | None, str | None, str]]:
    """[(pid, comm, 'open device')]: processes (of mount namespace space, or all) that
    have the block device itself open."""
    import stat
    found: list[tuple[int | None, str | None, str]] = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me or not _in_space(entry, space):
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            link = f"/proc/{entry}/fd/{fd}"
            try:
                if not os.readlink(link).startswith("/dev/"):
                    continue
                info = os.stat(link)
            except OSError:
                continue
            if stat.S_ISBLK(info.st_mode) and (os.major(info.st_rdev),
                                               os.minor(info.st_rdev)) == number:
                found.append((int(entry), procfs.comm(int(entry)), "open device"))
                break
    return found


def free(device: str, number: tuple[int, int], deadline: Deadline, log: Logger,
         everywhere: bool = True) -> list[tuple[int | None, str | None, str]]:
    """Wait (within deadline) until nothing holds the device: processes with it open get
    TERM then KILL; a mount in another namespace or a stacked device is reported.
    Returns what is left ([] when free). everywhere=False: processes of this mount
    namespace only (see device_holders)."""
    import time
    grace = time.monotonic() + min(0.5, deadline.left())  # udev's blkid comes and goes
    first = True
    while True:
        held = device_holders(number, everywhere)
        if not held and (not everywhere or not still_open(device)):
            return []
        if deadline.expired:
            return held or [(None, "an unknown holder (claimed exclusively)", "")]
        openers = [pid for pid, _, how in held if how == "open device" and pid is not None]
        if openers and time.monotonic() >= grace:
            log.warning(f"{device} is held open: {names(held)}")
            steps = ((procfs.SIGTERM, 0.5), (procfs.SIGKILL, 1.0)) if first else (
                (procfs.SIGKILL, 1.0),)
            first = False
            procfs.escalate(openers, deadline, log, steps=steps)
        elif not openers and time.monotonic() >= grace + 0.5:
            # a namespace or a stacked device does not go away by waiting
            return held or [(None, "an unknown holder (claimed exclusively)", "")]
        else:
            time.sleep(min(0.05, deadline.left()))


def namespaces_holding(number: tuple[int, int]) -> list[tuple[int, str | None]]:
    """[(pid, comm)], one process per mount namespace that has a mount of device number."""
    found, seen = [], set()
    needle = f" {number[0]}:{number[1]} "
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            space = os.readlink(f"/proc/{entry}/ns/mnt")
            if space in seen:
                continue
            seen.add(space)
            with open(f"/proc/{entry}/mountinfo", encoding="utf-8", errors="replace") as handle:
                if any(needle in line for line in handle):
                    found.append((int(entry), procfs.comm(int(entry))))
        except OSError:
            continue
    return found


# -- bounded disk probes ---------------------------------------------------------

class ProbeFailed(Exception):
    pass


def bounded(work: Callable, timeout: float | int) -> bytes:
    """Run work() in a forked child and return what it returns (bytes or None).

    Raises ProbeFailed with the child's error, or when no answer came within
    timeout. The child's stdio goes to /dev/null so the executor does not
    wait for it; a child stuck on a hung disk is left behind for init.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(rfd)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            try:
                message = b"+" + (work() or b"")
            except OSError as exc:
                message = b"-" + (exc.strerror or str(exc)).encode(errors="replace")
            except Exception as exc:  # reported by the parent; nothing escapes the child
                message = b"-" + f"{type(exc).__name__}: {exc}".encode(errors="replace")
            os.write(wfd, message)
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        message = _read_all(rfd, timeout)
    finally:
        os.close(rfd)
    if message is None:
        raise ProbeFailed(f"no answer within {timeout:g}s (hung I/O?)")
    _reap(pid)
    if not message.startswith(b"+"):
        raise ProbeFailed(message[1:].decode(errors="replace") or "the probe process died")
    return message[1:]


def _read_all(fd, timeout):
    """Everything from fd until EOF, or None when the timeout passes first."""
    import select
    import time
    end = time.monotonic() + timeout
    chunks = []
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid):
    for _ in range(50):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        import time
        time.sleep(0.01)


def _aligned(size=BLOCK):
    import mmap
    return mmap.mmap(-1, size)


def read_block(device: str, offset: int = 0) -> bytes:
    """The block at offset read from the device itself (O_DIRECT: not from the cache)."""
    buf = _aligned()
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    try:
        if os.preadv(fd, [buf], offset) != BLOCK:
            raise OSError(0, f"short read from {device}")
    finally:
        os.close(fd)
    return bytes(buf)


def write_read_delete(path: str) -> None:
    """Write a block to path synchronously, read it back from the disk, delete it."""
    token = os.urandom(32) * (BLOCK // 32)
    buf = _aligned()
    buf.write(token)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DSYNC
    try:
        fd = os.open(path, flags | os.O_DIRECT, 0o600)
    except OSError:  # file systems without O_DIRECT
        fd = os.open(path, flags, 0o600)
    try:
        os.pwritev(fd, [buf], 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        fd = os.open(path, os.O_RDONLY)
    try:
        back = _aligned()
        os.preadv(fd, [back], 0)
    finally:
        os.close(fd)
    os.unlink(path)
    if bytes(back) != token:
        raise OSError(0, f"{path} read back different data")


# -- ext2/3/4 superblock: is the file system in use somewhere? ----------------------

EXT_MAGIC = 0xEF53
EXT_VALID_FS = 0x1
EXT_INCOMPAT_RECOVER = 0x4


def ext_in_use(block: bytes) -> bool | None:
    """From the first 4 KiB of a device: True when an ext2/3/4 file system is mounted
    read-write somewhere or was not unmounted cleanly (journal needs recovery, or
    not marked valid), False when it was released cleanly, None when not ext."""
    import struct
    sb = block[1024:2048]
    magic, state = struct.unpack_from("<HH", sb, 0x38)
    if magic != EXT_MAGIC:
        return None
    (incompat,) = struct.unpack_from("<I", sb, 0x60)
    return bool(incompat & EXT_INCOMPAT_RECOVER) or not state & EXT_VALID_FS
