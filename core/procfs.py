"""Processes as an agent sees them, read from /proc.

Shared by every agent that runs a daemon or releases a mount: pid files,
liveness that counts zombies as dead, escalating stops inside a deadline,
the holders of a path found by walking /proc (never ``fuser -m``, which
blocks on a dead mount), and listening sockets. Standard library only; no
child processes.
"""

from __future__ import annotations

import os
import time

from hapack.timing import Deadline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from hapack.log import Logger


def read_pidfile(path: str) -> int | None:
    """The pid in a pid file, or None when the file is absent or not a pid."""
    try:
        with open(path, "rb") as handle:
            words = handle.read(64).split()
    except OSError:
        return None
    if not words or not words[0].isdigit():
        return None
    pid = int(words[0])
    return pid if pid > 1 else None


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].decode("ascii", "replace").split()
    except (OSError, IndexError):
        return None


def stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, or None when it is gone."""
    fields = stat_fields(pid)
    try:
        return fields[0], int(fields[1]), int(fields[19])  # type: ignore[index]
    except (TypeError, IndexError, ValueError):
        return None


def group_ids(pid: int) -> tuple[int, ...] | None:
    """(process group, session) of pid, or None."""
    fields = stat_fields(pid)
    try:
        return int(fields[2]), int(fields[3])  # type: ignore[index]
    except (TypeError, IndexError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    """True while the process exists and is not a zombie (or dead)."""
    if not pid:
        return False
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X", "x")


def started_after(pid: int, path: str, slack: float = 1.0) -> bool:
    """True when pid started more than ``slack`` seconds after path was last written
    (a pid file naming a pid that was reused); False when either cannot be read."""
    info = stat(pid)
    if info is None:
        return False
    try:
        mtime = os.stat(path).st_mtime
        with open("/proc/stat", "rb") as handle:
            btime = next(int(line.split()[1]) for line in handle if line.startswith(b"btime"))
        started = btime + info[2] / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, TypeError, IndexError):
        return False
    return started > mtime + slack


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def exe(pid: int) -> str | None:
    """The executable of pid (without the kernel's ' (deleted)'), or None."""
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """Direct and indirect children of pid (one /proc scan)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = stat(int(entry))
            if info is not None:
                parents.setdefault(info[1], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def signal_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(pids: list[int], deadline: Deadline, interval: float = 0.02) -> list[int]:
    """Wait until none of pids is alive; return the ones still alive."""
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or deadline.expired:
            return left
        time.sleep(min(interval, deadline.left()))
        interval = min(interval * 1.5, 0.2)


SIGTERM, SIGKILL = 15, 9  # numbers, not the signal module: it imports enum (~4 ms a call)
_SIGNAL_NAMES = {1: "HUP", 2: "INT", 9: "KILL", 15: "TERM", 18: "CONT", 19: "STOP", 28: "WINCH"}


def escalate(pids: list[int], deadline: Deadline, log: Logger | None = None,
             steps: tuple[tuple[int, float], ...] = ((SIGTERM, 0.6), (SIGKILL, 1.0))) -> list[int]:
    """Signal pids step by step until they are gone or the deadline passes.

    Each step is (signal, share): the signal is sent and the step waits for
    that share of the time left (the last step waits for all of it).
    Returns the pids still alive: the caller reports them, it does not
    pretend they stopped.
    """
    left = [pid for pid in pids if alive(pid)]
    for sig, share in steps:
        if not left:
            return []
        if log is not None:
            log.info(f"sending SIG{_SIGNAL_NAMES.get(int(sig), sig)} to {' '.join(map(str, left))}")
        signal_pids(left, sig)
        step = Deadline(deadline.left() * share)
        left = wait_gone(left, step)
    return left


def _points_into(link, path):
    return link == path or link.startswith(path.rstrip("/") + "/")


def holders(path: str) -> list[tuple[int, str | None, str]]:
    """Processes using anything at or below path: [(pid, comm, how)].

    Looks at cwd, root, exe, open files and memory-mapped files of every
    process, reading links only (a dead disk does not block readlink).
    """
    path = os.path.realpath(path)
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        how = _holding(int(entry), path)
        if how:
            found.append((int(entry), comm(int(entry)), how))
    return found


def _holding(pid, path):
    base = f"/proc/{pid}"
    for what in ("cwd", "root", "exe"):
        try:
            if _points_into(os.readlink(f"{base}/{what}"), path):
                return what
        except OSError:
            continue
    for folder, what in (("fd", "open file"), ("map_files", "mapped file")):
        try:
            names = os.listdir(f"{base}/{folder}")
        except OSError:
            continue
        for name in names:
            try:
                if _points_into(os.readlink(f"{base}/{folder}/{name}"), path):
                    return what
            except OSError:
                continue
    return None


def comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def _socket_inodes(pid):
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def _tcp_listeners():
    """(port, socket inode) of every TCP socket in LISTEN state, from /proc/net/tcp
    and tcp6 of the caller's network namespace."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "rb") as handle:
                lines = handle.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == b"0A":
                yield int(fields[1].rsplit(b":", 1)[1], 16), fields[9].decode()


def listening_inodes(port: int) -> set[int]:
    """Inodes of the sockets listening on TCP ``port`` (this network namespace)."""
    return {int(inode) for found, inode in _tcp_listeners() if found == port}


def listening_ports(pids: Iterable[int] | None = None) -> set[int]:
    """TCP ports in LISTEN state, of pids (any of them) or of anyone."""
    wanted = None
    if pids is not None:
        wanted = set()
        for pid in pids:
            wanted |= _socket_inodes(pid)
    return {port for port, inode in _tcp_listeners() if wanted is None or inode in wanted}


def holds_socket(pid: int, inodes: set[int]) -> bool:
    """Whether pid has one of the socket inodes open."""
    return bool(_socket_inodes(pid) & {str(inode) for inode in inodes})
