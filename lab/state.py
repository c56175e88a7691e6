"""Where a lab keeps its state on disk, and how it recognises its own processes.

Layout of one lab (``LAB_ROOT/<name>/``, visible at the same path in the
host and in the nodes, because /var/tmp is not private in a node)::

    lab.json                 what was built: plan, pids, loop device (see Lab)
    shared/                  scratch space visible in every node and the host
    disk.img                 backing file of the shared disk
    bmc/<node>/              lan.conf, bmc.emu, password, ipmi_sim.log, state/
    nodes/<node>/            power.json, power.log, console.log, boot (stage)
        etc-corosync/ etc-hapack/ var-lib-pacemaker/ var-lib-corosync/ var-log/ hosts
        spawn/               logs of processes started with Lab.spawn

A process is identified by ``(pid, starttime)`` (field 22 of
``/proc/<pid>/stat``), so a recycled pid is never taken for a lab process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

LAB_ROOT = Path(os.environ.get("HAPACK_LAB_ROOT", "/var/tmp/hapack-lab"))
STATE_FILE = "lab.json"
LOCK_FILE = ".lock"

ProcId = tuple[int, int]


def proc_starttime(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def proc_state(pid: int) -> str | None:
    """One-letter state of ``pid`` (R, S, D, Z...), None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2]


def proc_id(pid: int) -> ProcId | None:
    start = proc_starttime(pid)
    return None if start is None else (pid, start)


def alive(ident: ProcId | list | None) -> bool:
    """True if the process ``ident`` still runs (a zombie counts as dead)."""
    if not ident:
        return False
    pid, start = ident
    return proc_starttime(pid) == start and proc_state(pid) not in (None, "Z", "X")


def write_json(path: Path, data: dict, mode: int = 0o600) -> None:
    """Write ``data`` atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def global_lock(root: Path = LAB_ROOT):
    """The lock serialising subnet allocation and leftover removal between labs."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    return locked(root / LOCK_FILE)


def lab_dirs(root: Path = LAB_ROOT) -> list[Path]:
    """Directories of every lab on this machine that has a state file."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / STATE_FILE).is_file())


def read_state(lab_dir: Path) -> dict:
    return read_json(lab_dir / STATE_FILE)


def is_stale(state: dict) -> bool:
    """True for a lab whose owning process died without tearing it down.

    A lab brought up by ``hapack lab up`` has no owner and is never stale; it
    stays until ``hapack lab down``.
    """
    owner = state.get("owner")
    return bool(owner) and not alive(owner)
