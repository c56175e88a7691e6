"""Where a stateful layer keeps its data: on the replicated partition only.

A data directory on the root file system means the partition is not
mounted on this node: starting there would create or use a second copy of
the data and silently fork it. :func:`require_data_dir` refuses that with
a reason an operator can act on; it never creates the directory.
Standard library only.
"""

import os
import pwd
import stat as stat_

from hapack.ocf import NotInstalled, PermError


def _unescape(field):
    """Mount points in mountinfo escape space, tab, newline and backslash in octal."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_of(path):
    """(mount point, fstype, source) of the file system holding path, or None."""
    path = os.path.realpath(path)
    best = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, tail[0], tail[1])  # the last of equal length is on top
    return best


def inside(path, folder):
    """Whether path is folder or below it (symbolic links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def user_can_write(st, user):
    """Whether user (name) may create files in a directory with this stat."""
    entry = pwd.getpwnam(user)
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        return st.st_mode & 0o300 == 0o300
    groups = {g for g in os.getgrouplist(user, entry.pw_gid)}
    if st.st_gid in groups:
        return st.st_mode & 0o030 == 0o030
    return st.st_mode & 0o003 == 0o003


def require_data_dir(path, user, what="data directory"):
    """Check that path is an existing directory on a mounted, writable file system.

    Raises NotInstalled when the partition is evidently not mounted here
    (missing directory, or one on the root file system), PermError when the
    file system is read-only or the directory not writable by ``user``.
    """
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise NotInstalled(f"{what} {path} does not exist: is the replicated partition "
                           "mounted on this node? (not creating it: an empty one would "
                           "fork the data)") from None
    if not stat_.S_ISDIR(st.st_mode):
        raise NotInstalled(f"{what} {path} is not a directory")
    if st.st_dev == os.stat("/").st_dev:
        raise NotInstalled(f"{what} {path} is on the root file system, not on a mounted "
                           "partition: mount the replicated partition first (refusing to "
                           "start on a copy that would fork the data)")
    if os.statvfs(real).f_flag & os.ST_RDONLY:
        where = mount_of(real)
        raise PermError(f"{what} {path} is on a read-only file system"
                        f"{f' ({where[0]})' if where else ''}")
    if not user_can_write(st, user):
        raise PermError(f"{what} {path} is not writable by user {user} "
                        f"(owner uid {st.st_uid}, mode {stat_.S_IMODE(st.st_mode):04o})")
    return real


def ensure_dir(path, user=None, mode=0o755):
    """Create a node-local directory (run or log dir) owned by user, if missing."""
    os.makedirs(path, mode=mode, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        st = os.stat(path)
        if (st.st_uid, st.st_gid) != (entry.pw_uid, entry.pw_gid):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return path
