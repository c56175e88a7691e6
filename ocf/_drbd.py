"""DRBD as the partition agent sees it: one state snapshot, the score table, the commands.

State comes from ``/proc/drbd`` on DRBD 8.4 (one line per minor: no child
process, which matters for a monitor every 10 s) and from
``drbdsetup events2 --now <res>`` on DRBD 9, whose /proc/drbd carries no
per-resource lines. Commands go through ``drbdadm``; drbd-utils 9 hands them
to drbdadm-84 on an 8.4 kernel, so one set of command lines serves both.

Split brain is not guessed from the connection state (StandAlone also follows
a plain ``drbdadm disconnect``): DRBD's ``split-brain`` handler
(``hapack.ocf.partition_handler split-brain``) leaves a marker that stays
until an operator has resolved the split brain and removed it.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any
    from typing import Callable

PROC = "/proc/drbd"
DRBD_MAJOR = 147
STATE_DIR = "/var/lib/hapack/partition"

# Connection states in which the peer's role and disk are known.
PEER_KNOWN = frozenset((
    "Connected", "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID",
    "SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "VerifyS", "VerifyT",
    "Ahead", "Behind"))
# Redundancy, by connection state (DRBD 8.4's cstates; DRBD 9's connection states
# fall in the same classes). Connected and online verify: the replica is there when
# the peer's disk is UpToDate. The resync handshake and the resync itself (also
# paused): redundancy being rebuilt, whatever the peer's disk says meanwhile. Every
# other state, including Ahead/Behind (replication suspended under congestion),
# WFReportParams (the handshake, peer still unknown) and any name not listed here:
# the resource runs without its replica (degraded).
REPLICATING = frozenset(("Connected", "VerifyS", "VerifyT"))
RESYNCING = frozenset((
    "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID",
    "SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT"))
# Disk states that pass on their own; the score is left as it is meanwhile.
TRANSITIONAL = frozenset(("Attaching", "Negotiating", "Detaching"))

# Local disk states with no local disk under the device (detached, or failed).
DETACHED = frozenset(("Diskless", "Failed", "Detaching"))

KEEP = "keep"  # promotion_score(): leave the current score alone
SCORE_UPTODATE = 10000     # UpToDate, and the peer's disk is known (or we are Primary)
SCORE_UPTODATE_ALONE = 1000  # UpToDate as far as we know, peer disk unknown
SCORE_CONSISTENT = 10      # consistent but maybe not the newest data


class State:
    """One look at a DRBD resource (one volume, one peer)."""

    __slots__ = ("configured", "role", "peer_role", "cstate", "disk", "peer_disk")

    def __init__(self, configured, role="Unknown", peer_role="Unknown", cstate="StandAlone",
                 disk="Diskless", peer_disk="DUnknown"):
        self.configured = configured
        self.role = role
        self.peer_role = peer_role
        self.cstate = cstate
        self.disk = disk
        self.peer_disk = peer_disk

    @property
    def connected(self) -> bool:
        return self.cstate in PEER_KNOWN

    def __repr__(self):
        if not self.configured:
            return "State(unconfigured)"
        return (f"State(cs:{self.cstate} ro:{self.role}/{self.peer_role} "
                f"ds:{self.disk}/{self.peer_disk})")

    def __eq__(self, other):
        return isinstance(other, State) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)


UNCONFIGURED = State(False)


def promotion_score(state: State, split_brain: bool = False) -> str | int | None:
    """The promotion score for this replica: an int, None (never promote here) or KEEP.

    ========================================  =========
    local disk (role, peer)                   score
    ========================================  =========
    UpToDate, Primary                         10000
    UpToDate, peer disk known                 10000
    UpToDate, peer disk unknown               1000
    Consistent                                10
    Attaching, Negotiating, Detaching         unchanged
    Outdated, Inconsistent, Diskless, other   never
    any disk, Secondary, split brain flagged  never
    ========================================  =========
    """
    if not state.configured:
        return None
    if state.disk in TRANSITIONAL:
        return KEEP
    if split_brain and state.role != "Primary":
        return None
    if state.disk == "UpToDate":
        if state.role == "Primary" or state.peer_disk != "DUnknown":
            return SCORE_UPTODATE
        return SCORE_UPTODATE_ALONE
    if state.disk == "Consistent":
        return SCORE_CONSISTENT
    return None


def without_replica(state: State) -> str | None:
    """Why this resource runs without its replica (redundancy lost), or None: it is
    degraded unless Connected (or verifying) with the peer's disk UpToDate, or resyncing."""
    if not state.configured or state.cstate in RESYNCING:
        return None
    if state.cstate in REPLICATING and state.peer_disk == "UpToDate":
        return None
    return f"cstate {state.cstate}, peer disk {state.peer_disk}"


def refuse_promotion(state: State, split_brain: bool = False) -> str | None:
    """Why this replica must not become Primary, or None. (The peer is the gate's job.)"""
    if not state.configured:
        return "the DRBD resource is not up (start it first)"
    if split_brain:
        return ("split brain was detected on this resource; resolve it by hand and remove "
                "the marker (see docs/partition.md) before promoting")
    if state.disk not in ("UpToDate", "Consistent"):
        return f"the local replica is {state.disk}: it never becomes Primary"
    return None


# -- reading the state ----------------------------------------------------------

_PROC_LINE = r"^\s*(\d+): cs:(\S+)(?:\s+ro:(\S+?)/(\S+)\s+ds:(\S+?)/(\S+))?"
# re is imported where DRBD state is parsed: it pulls in enum (~4 ms), which the
# shared backend's monitors never need.


def proc_version(text: str) -> int | None:
    """The major version in /proc/drbd ('version: 8.4.11 (api:1/...)' -> 8), or None."""
    import re
    match = re.search(r"^version:\s*(\d+)\.", text, re.M)
    return int(match.group(1)) if match else None


def parse_proc(text: str, minor: int) -> State:
    """The State of one minor from DRBD 8.4's /proc/drbd (absent or Unconfigured: not up)."""
    import re
    pattern = re.compile(_PROC_LINE)
    for line in text.splitlines():
        match = pattern.match(line)
        if not match or int(match.group(1)) != minor:
            continue
        cstate = match.group(2)
        if cstate == "Unconfigured" or match.group(3) is None:
            return UNCONFIGURED
        return State(True, role=match.group(3), peer_role=match.group(4), cstate=cstate,
                     disk=match.group(5), peer_disk=match.group(6))
    return UNCONFIGURED


def _fields(line):
    return dict(word.split(":", 1) for word in line.split()[2:] if ":" in word)


def parse_events2(text: str, volume: int = 0) -> State:
    """The State from DRBD 9's ``drbdsetup events2 --now <res>`` (first peer). A connected
    peer's replication state (SyncSource, VerifyS, Ahead, ...) stands for the connection
    state, as DRBD 8.4's cs: field shows it."""
    seen: dict[str, Any] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "exists" or words[1] == "-":
            continue
        fields = _fields(line)
        if words[1] in ("device", "peer-device") and fields.get("volume", "0") != str(volume):
            continue
        seen.setdefault(words[1], fields)
    if "resource" not in seen:  # a resource without our volume is still up: not absent
        return UNCONFIGURED
    connection = seen.get("connection", {})
    cstate = connection.get("connection", "StandAlone")
    replication = seen.get("peer-device", {}).get("replication", "Established")
    if cstate == "Connected" and replication not in ("Established", "Off"):
        cstate = replication  # a resync, a verify, Ahead/Behind: 8.4 names it in cs:
    return State(True, role=seen["resource"].get("role", "Unknown"),
                 peer_role=connection.get("role", "Unknown"),
                 cstate=cstate,
                 disk=seen.get("device", {}).get("disk", "Diskless"),
                 peer_disk=seen.get("peer-device", {}).get("peer-disk", "DUnknown"))


def minor_of(device: str) -> int | None:
    """The DRBD minor of a device path (/dev/drbd0, or a link to it), or None."""
    try:
        rdev = os.stat(device).st_rdev
        if os.major(rdev) == DRBD_MAJOR:
            return os.minor(rdev)
    except OSError:
        pass
    suffix = device.removeprefix("/dev/drbd")
    return int(suffix) if suffix != device and suffix.isdigit() else None


def read_state(run: Callable, resource: str, device: str, loaded: bool = False) -> State:
    """The State of the resource: /proc/drbd on 8.4, else (DRBD 9) ``drbdsetup events2
    --now``; ``run(argv)`` runs a command and returns its Result.

    No module loaded (no /proc/drbd): nothing of DRBD is up, unless the caller
    knows the module is loaded (``loaded``: a handler DRBD itself started),
    when drbdsetup is asked anyway. Anything that does
    not answer the question (drbdsetup missing or failing, an unreadable
    /proc/drbd, a device whose minor is unknown) raises CommandError: an
    unknown state is never "not configured".
    """
    from hapack.command import CommandError
    try:
        with open(PROC, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        if not loaded:
            return UNCONFIGURED
        text = ""
    except OSError as exc:
        raise CommandError([PROC], f"cannot read: {exc.strerror}") from None
    if proc_version(text) == 8:
        minor = minor_of(device)
        if minor is None:
            raise CommandError([PROC], f"{device} is not a DRBD device: its state is unknown")
        return parse_proc(text, minor)
    argv = events2(resource)
    result = run(argv)  # CommandNotFound, CommandTimeout: raised, not hidden
    if not result.ok:
        raise CommandError(argv, f"exit {result.returncode}: "
                                 f"{result.output() or 'no output'}; the state of {resource} "
                                 "is unknown")
    if "exists -" not in result.stdout.splitlines():  # the end of the initial dump
        raise CommandError(argv, f"incomplete output ({result.stdout.strip()[:200]!r}); the "
                                 f"state of {resource} is unknown")
    return parse_events2(result.stdout)


def role_settled(state: State) -> str | None:
    """Why a stopped or demoted resource is not safe to leave as it is, or None:
    it must be down or Secondary."""
    if state.configured and state.role != "Secondary":
        return f"the resource is still {state.role} ({state!r})"
    return None


# -- command lines --------------------------------------------------------------

def events2(resource: str) -> list[str]:
    return ["drbdsetup", "events2", "--now", resource]


def drbdadm(verb: str, resource: str) -> list[str]:
    """drbdadm <verb> <res>: up, adjust, primary, secondary, down, sh-dev."""
    return ["drbdadm", verb, resource]


MODPROBE = ["modprobe", "drbd"]


# -- split brain marker -----------------------------------------------------------

def state_dir(environ: Mapping[str, str]) -> str:
    return environ.get("HAPACK_STATE_DIR") or STATE_DIR


def split_brain_marker(environ: Mapping[str, str], resource: str) -> str:
    return os.path.join(state_dir(environ), f"{resource}.split-brain")


def split_brain(environ: Mapping[str, str], resource: str) -> str | None:
    """The marker's text when split brain was recorded for resource, else None."""
    try:
        with open(split_brain_marker(environ, resource), encoding="utf-8") as handle:
            return handle.read().strip() or "split brain"
    except FileNotFoundError:
        return None
