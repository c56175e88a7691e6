"""Mounts as the partition agent sees them.

The mount table comes from /proc/self/mountinfo (no ``mount`` child), a
mount's device is matched by major:minor (no path canonicalisation), umount
is one umount2(2) call, the holders of a busy mount come from a /proc walk
(hapack.process.holders, never ``fuser -m``), and every disk probe runs in
a forked child with its own timeout: a hung disk is reported as a failure,
not waited for (the child, stuck in the kernel, is left behind).
"""

import os

from hapack import process

MOUNTINFO = "/proc/self/mountinfo"
BLOCK = 4096

# Per-mount flags the kernel always shows in mountinfo (field 6), and their opposites.
VFS_FLAGS = {"nosuid": "suid", "nodev": "dev", "noexec": "exec", "noatime": "atime",
             "nodiratime": "diratime", "relatime": "norelatime", "nosymfollow": "symfollow"}
SB_FLAGS = ("sync", "dirsync", "lazytime", "mand")  # shown in the super options
USERSPACE = ("defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users",
             "owner", "group", "rw", "async")


class Mount:
    __slots__ = ("dev", "point", "options", "fstype", "source", "super_options")

    def __init__(self, dev, point, options, fstype, source, super_options):
        self.dev, self.point, self.options = dev, point, options
        self.fstype, self.source, self.super_options = fstype, source, super_options

    @property
    def read_only(self):
        return "ro" in self.options or "ro" in self.super_options


def _unescape(text):
    return (text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def table(path=MOUNTINFO):
    """Every mount of this mount namespace, in mount order."""
    mounts = []
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            a, b = left.split(), right.split()
            major, minor = a[2].split(":")
            mounts.append(Mount((int(major), int(minor)), _unescape(a[4]), a[5].split(","),
                                b[0], _unescape(b[1]), b[2].split(",") if len(b) > 2 else []))
    return mounts


def at(point, mounts):
    """The mounts on exactly this mount point, bottom first (the last one is visible)."""
    return [m for m in mounts if m.point == point]


def below(point, mounts):
    """Mounts strictly below point, deepest first (the order to unmount them)."""
    prefix = point.rstrip("/") + "/"
    found = [m for m in mounts if m.point.startswith(prefix)]
    return sorted(found, key=lambda m: m.point.count("/"), reverse=True)


def device_number(device):
    """(major, minor) of a block device path, or None when it is not one (or missing)."""
    import stat
    try:
        info = os.stat(device)
    except OSError:
        return None
    if not stat.S_ISBLK(info.st_mode):
        return None
    return os.major(info.st_rdev), os.minor(info.st_rdev)


def of_device(device, mounts):
    """Where the device is mounted in this namespace."""
    number = device_number(device)
    return [m for m in mounts if number is not None and m.dev == number]


def option_problems(mount, options):
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


def options_list(options):
    return [o for o in (options or "").split(",") if o]


def fstype_known(fstype):
    from hapack.proc import which
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

def mount_argv(fstype, options, device, directory):
    argv = ["mount", "-t", fstype]
    if options:
        argv += ["-o", options]
    return argv + [device, directory]


def umount(point):
    """umount2(point, UMOUNT_NOFOLLOW): 0, or the errno (EBUSY: still in use)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(point), 8) == 0:  # UMOUNT_NOFOLLOW
        return 0
    return ctypes.get_errno()


def release(point, deadline, log, term_share=0.5):
    """Unmount everything on and below point within deadline; return the holders left.

    Order: umount first (a busy mount is the exception); then the holders
    found by walking /proc get TERM and, for what is left, KILL; then
    umount again. Later rounds (a workload that keeps coming back) go
    straight to KILL. Returns [] on success, else [(pid, comm, how)] of the
    processes still holding the mount, or [(None, reason, "")] when the
    kernel refuses without a process to blame.
    """
    import errno
    first = True
    while True:
        mounts = table()
        targets = below(point, mounts) + list(reversed(at(point, mounts)))
        if not targets:
            return []
        code = umount(targets[0].point)
        if code in (0, errno.EINVAL, errno.ENOENT):
            continue  # unmounted (or gone meanwhile): next one
        if code != errno.EBUSY:
            return [(None, f"umount {targets[0].point}: {os.strerror(code)}", "")]
        holders = process.holders(targets[0].point)
        if deadline.expired:
            return holders or [(None, f"{targets[0].point} is busy with no process holding it "
                                      "(a loop device, swap file, export or bind mount?)", "")]
        if not holders:  # a process just leaving, or a kernel user: look again shortly
            import time
            time.sleep(min(0.1, deadline.left()))
            continue
        names = ", ".join(f"{comm}[{pid}] ({how})" for pid, comm, how in holders)
        log.warning(f"{targets[0].point} is busy: {names}")
        steps = ((process.SIGTERM, term_share), (process.SIGKILL, 1.0)) if first else (
            (process.SIGKILL, 1.0),)
        first = False
        process.escalate([pid for pid, _, _ in holders], deadline, log, steps=steps)


def still_open(device):
    """True when the block device is still claimed: mounted in some other mount
    namespace (a private copy made by unshare or a service's sandbox) or held."""
    import errno
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
    except OSError as exc:
        return exc.errno == errno.EBUSY
    return False


def namespaces_holding(number):
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
                    found.append((int(entry), process.comm(int(entry))))
        except OSError:
            continue
    return found


# -- bounded disk probes ---------------------------------------------------------

class ProbeFailed(Exception):
    pass


def bounded(work, timeout):
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


def read_block(device, offset=0):
    """The block at offset read from the device itself (O_DIRECT: not from the cache)."""
    buf = _aligned()
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    try:
        if os.preadv(fd, [buf], offset) != BLOCK:
            raise OSError(0, f"short read from {device}")
    finally:
        os.close(fd)
    return bytes(buf)


def write_read_delete(path):
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


def ext_in_use(block):
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
