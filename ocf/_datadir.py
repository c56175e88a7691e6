"""Where a layer keeps its data and its files, and how root touches them.

A data directory on the root file system means the partition is not
mounted on this node: starting there would create or use a second copy of
the data and silently fork it. :func:`require_data_dir` refuses that with
a reason an operator can act on; it never creates the directory.

The agents run as root and set up directories that a service user owns
(run and log directories, Tomcat's logs/ and webapps/). Every directory
set-up, chown, chmod and file write of an agent goes through the
primitives here, so root never follows a symbolic link a service user
planted: paths are walked one component at a time from ``/`` with
``O_NOFOLLOW`` opens relative to directory descriptors; a symbolic link is
followed only where no one but root could have put it (a directory only
root may write, or a root-owned link in a root-owned sticky directory such
as /tmp); ownership and modes are changed on descriptors (fchown, fchmod);
files are written to a fresh temporary name and renamed into place, never
written through an existing name. Anything else is refused with
:class:`PermError` naming the link. Standard library only.
"""

from __future__ import annotations

import os
import pwd
import stat as stat_

from hapack.ocf import GenericError, NotInstalled, PermError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40


def _unescape(field):
    """Mount points in mountinfo escape space, tab, newline and backslash in octal."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_of(path: str) -> tuple[str, str, str] | None:
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


def inside(path: str, folder: str) -> bool:
    """Whether path is folder or below it (symbolic links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def user_can_write(st: os.stat_result, user: str) -> bool:
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


def require_data_dir(path: str, user: str, what: str = "data directory") -> Any:
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


# -- root in directories a service user owns --------------------------------------

def _root_only(st):
    """No one but root may add, remove or rename entries of this directory."""
    return st.st_uid == 0 and not st.st_mode & 0o022


def _entry_is_roots(parent, entry):
    """The entry (lstat) can only have been put in place by root: its directory is
    root-only, or root-owned and sticky (like /tmp) with a root-owned entry."""
    if _root_only(parent):
        return True
    return (parent.st_uid == 0 and bool(parent.st_mode & stat_.S_ISVTX)
            and entry.st_uid == 0)


def _owner_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _parts(path):
    if not os.path.isabs(path) or "\0" in path:
        raise PermError(f"{path!r} is not an absolute path")
    return [part for part in path.split("/") if part not in ("", ".")]


def open_dir(path: str, create: bool = False, root_only: bool = False) -> int:
    """A descriptor (O_DIRECTORY) of path, reached from / without following a
    symbolic link that someone other than root could have planted. Missing
    components are created (root, 0755) when ``create``. With ``root_only``
    every directory on the way, and path itself, must be root's alone (so that
    a later open by name, e.g. by a child program, cannot be redirected)."""
    parts, done, links = _parts(path), "/", 0
    fd = os.open("/", _DIR)
    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                raise PermError(f"{path}: '..' in a path root walks")
            parent = os.fstat(fd)
            try:
                child = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                _mkdir(fd, name)
                child = os.open(name, _DIR, dir_fd=fd)
            except OSError as exc:
                target = _followable(fd, parent, name, os.path.join(done, name), exc)
                links += 1
                if links > _MAX_LINKS:
                    raise PermError(f"{path}: too many symbolic links") from None
                parts = _parts(os.path.normpath(os.path.join(done, target))) + parts
                os.close(fd)
                fd, done = os.open("/", _DIR), "/"
                continue
            os.close(fd)
            fd, done = child, os.path.join(done, name)
            if root_only and not _entry_is_roots(parent, os.fstat(fd)):
                raise PermError(f"{done} may be replaced by {_owner_name(parent.st_uid)} or "
                                f"others: root does not open {path} by name")
        if root_only and not _root_only(os.fstat(fd)):
            raise PermError(f"{path} is writable by {_owner_name(os.fstat(fd).st_uid)} or "
                            "others: root does not open files by name there")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _mkdir(fd, name):
    try:
        os.mkdir(name, 0o755, dir_fd=fd)
    except FileExistsError:
        pass


def _followable(fd, parent, name, where, error):
    """The target of the symbolic link name (in directory fd), when root may follow it;
    PermError when a service user could have planted it; error when it is no link."""
    try:
        entry = os.lstat(name, dir_fd=fd)
    except OSError:
        raise error from None
    if not stat_.S_ISLNK(entry.st_mode):
        if isinstance(error, NotADirectoryError):
            raise NotADirectoryError(error.errno, f"{where} is not a directory") from None
        raise error
    if not _entry_is_roots(parent, entry):
        raise PermError(f"{where} is a symbolic link in a directory "
                        f"{_owner_name(parent.st_uid)} (or others) can write: root does not "
                        "follow it") from None
    return os.readlink(name, dir_fd=fd)


def _account(user):
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def ensure_dir(path: str, user: str | None = None, mode: int = 0o755, root_only: bool = False,
               always: bool = False) -> str:
    """Create a node-local directory (run or log dir) with mode, if missing, and give
    it to user (when not None; "root" takes it back); ``always`` sets mode on an
    existing one too. Never through a link a service user planted (see
    :func:`open_dir`); with ``root_only`` path and every directory above it must be
    root's alone."""
    path = os.path.normpath(path)
    head, name = os.path.split(path)
    fd = open_dir(head, create=True, root_only=root_only)
    try:
        os.mkdir(name, 0o700, dir_fd=fd)
        created = True
    except FileExistsError:
        created = False
    finally:
        os.close(fd)
    child = open_dir(path)
    try:
        _own(child, user, mode if created or always else None)
    finally:
        os.close(child)
    if root_only:
        os.close(open_dir(path, root_only=True))
    return path


def _own(fd, user, mode):
    """fchown to user (unless None) and fchmod to mode (unless None)."""
    if user is not None:
        uid, gid = _account(user)
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
    if mode is not None:
        os.fchmod(fd, mode)


def write_file(path: str, data: bytes, mode: int = 0o644, user: str | None = None) -> None:
    """Write data (bytes) to path, mode and owner set on the new file's descriptor:
    a fresh temporary file renamed over the name, so an existing name (a planted link,
    a hard link) is replaced, never written through."""
    head, name = os.path.split(path)
    fd = open_dir(head)
    tmp = f".{name}.{os.getpid()}.new"
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as handle:
                _own(handle.fileno(), user, mode)
                handle.write(data)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            _unlink_at(fd, tmp)
            raise
    finally:
        os.close(fd)


def create_file(path: str, user: str | None = None, mode: int = 0o640,
                root_only: bool = False) -> str:
    """Make sure path is a plain file (created owned by user with mode when missing):
    a symbolic link, a hard link or anything but a regular file there is refused.
    ``root_only``: its directories must be root's alone (see :func:`open_dir`)."""
    head, name = os.path.split(path)
    fd = open_dir(head, root_only=root_only)
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        try:
            out, created = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd), True
        except FileExistsError:
            out, created = _open_existing(fd, name, flags, path), False
    finally:
        os.close(fd)
    try:
        st = os.fstat(out)
        if not stat_.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise PermError(f"{path} is not a plain file of its own (a link, or a special "
                            "file): root does not write to it")
        if created:
            _own(out, user, mode)
    finally:
        os.close(out)
    return path


def _open_existing(fd, name, flags, path):
    try:
        return os.open(name, flags, dir_fd=fd)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: O_NOFOLLOW met a symbolic link
            raise PermError(f"{path} is a symbolic link: root does not write through it"
                            ) from None
        raise


def _unlink_at(fd, name):
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass


def remove_file(path: str) -> None:
    """Unlink path (its last component, never what a link points to), if present."""
    head, name = os.path.split(path)
    try:
        fd = open_dir(head)
    except FileNotFoundError:
        return
    try:
        _unlink_at(fd, name)
    finally:
        os.close(fd)


def read_file(path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
    """Up to limit bytes of path from offset (from 0 when the file is shorter; a
    negative offset counts from the end), read without following a link a service
    user planted; b'' when it cannot be read."""
    try:
        fd = open_dir(os.path.dirname(path))
    except OSError:
        return b""
    try:
        src = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                      | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return b""
    finally:
        os.close(fd)
    with os.fdopen(src, "rb") as handle:
        if not stat_.S_ISREG(os.fstat(src).st_mode):
            return b""
        size = os.fstat(src).st_size
        handle.seek(max(0, size + offset) if offset < 0 else offset if offset <= size else 0)
        return handle.read(limit)


class os_errors:
    """``with os_errors("cannot write"):`` turns an OSError into a GenericError that
    names the file (a PermError from ``_datadir`` passes through as it is)."""

    def __init__(self, doing):
        self.doing = doing

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, OSError):
            what = f" {exc.filename}" if exc.filename else ""
            raise GenericError(f"{self.doing}{what}: {exc.strerror or exc}") from None
        return False
