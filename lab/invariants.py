"""The campaign's invariants, as pure functions over what the samplers recorded.

Each checker takes plain records (wall times in seconds since the epoch) and
returns the violations it finds, empty when the invariant held:

* :func:`double_mounts`: mount samples ``(t, holders)`` with more than one node;
* :func:`double_vips`: ARP probes of the VIP from the client answered by more
  than one MAC for the same request;
* :func:`lost_rows`: acknowledged rows missing from the table;
* :func:`fence_loops`: a node fenced again less than ``window`` seconds after
  it rejoined (was back in its role after a reboot), with no fault injected
  in between;
* :func:`late`: faults that did not converge within their kind's bound.

:func:`explain_doubts` sorts the client's rows in doubt into the fault
windows they fell in, and tells which of them were committed after all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

FENCE_LOOP_WINDOW = 60.0


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which, when (wall time), and the evidence."""

    invariant: str
    wall: float
    detail: str

    def as_json(self) -> dict:
        return {"invariant": self.invariant, "wall": self.wall, "detail": self.detail}


def double_mounts(samples: Iterable[tuple[float, frozenset[str]]]) -> list[Violation]:
    """Every sample in which the partition was mounted on two nodes at once."""
    return [Violation("partition mounted on two nodes", t, f"holders {sorted(held)}")
            for t, held in samples if len(held) > 1]


def double_vips(replies: Iterable[tuple[int, float, str]],
                macs: dict[str, str] | None = None) -> list[Violation]:
    """``replies``: ``(request seq, wall, sender MAC)`` of every ARP reply to the
    client's request for the VIP. Two different MACs answering one request are two
    nodes holding the VIP at once. ``macs`` names known MACs (MAC -> node)."""
    by_seq: dict[int, dict[str, float]] = {}
    for seq, wall, mac in replies:
        answered = by_seq.setdefault(seq, {})
        answered[mac.lower()] = min(wall, answered.get(mac.lower(), wall))
    names = {k.lower(): v for k, v in (macs or {}).items()}
    found = []
    for seq in sorted(by_seq):
        answered = by_seq[seq]
        if len(answered) > 1:
            who = sorted(names.get(mac, mac) for mac in answered)
            found.append(Violation("VIP answered by two nodes", min(answered.values()),
                                   f"ARP request {seq} answered by {', '.join(who)}"))
    return found


def lost_rows(acked: Iterable[int], present: set[int]) -> list[int]:
    """Acknowledged row ids missing from ``present`` (must be empty)."""
    return sorted(i for i in set(acked) if i not in present)


def fence_loops(fences: Iterable[tuple[str, float]], boots: Iterable[tuple[str, float]],
                faults: Iterable[float], window: float = FENCE_LOOP_WINDOW) -> list[Violation]:
    """``fences``: ``(node, wall)`` of every power-off the cluster made (not the
    campaign's own); ``boots``: ``(node, wall)`` when a node was back in its role
    after a reboot (the campaign saw the cluster converge with it);
    ``faults``: wall times at which the campaign injected something. A fence of a
    node within ``window`` seconds of its last boot, with no injection since that
    boot, is a fence loop."""
    boots, starts = sorted(boots, key=lambda b: b[1]), sorted(faults)
    found = []
    for node, wall in sorted(fences, key=lambda f: f[1]):
        last = max((t for n, t in boots if n == node and t <= wall), default=None)
        if last is None or wall - last >= window:
            continue
        if any(last <= t <= wall for t in starts):
            continue
        found.append(Violation("fence loop", wall, f"{node} fenced {wall - last:.1f}s after it "
                                                   f"rejoined, with no fault since"))
    return found


def late(outcomes: Iterable[dict], bounds: dict[str, float]) -> list[Violation]:
    """Outcomes (``kind``, ``wall``, ``converged_s``: None if it never converged)
    beyond their kind's bound."""
    found = []
    for o in outcomes:
        bound = bounds[o["kind"]]
        took = o.get("converged_s")
        if took is None or took > bound:
            shown = "never" if took is None else f"after {took:.1f}s"
            found.append(Violation("not converged in time", o["wall"],
                                   f"fault #{o['index'] + 1} {o['kind']}: converged {shown} "
                                   f"(bound {bound:.0f}s)"))
    return found


def window_of(wall: float, starts: list[float]) -> int | None:
    """The index of the fault window (from one fault's start to the next's) of ``wall``."""
    index = None
    for i, start in enumerate(starts):
        if wall >= start:
            index = i
    return index


def explain_doubts(doubts: Iterable[dict], present: set[int], starts: list[float]) -> dict:
    """Rows in doubt per fault window: ``{index: {"rows": n, "committed": n,
    "not_committed": n, "why": {reason: n}}}``; index None: before the first fault."""
    found: dict = {}
    for d in doubts:
        entry = found.setdefault(window_of(d["t"], starts), {
            "rows": 0, "committed": 0, "not_committed": 0, "why": {}})
        entry["rows"] += 1
        entry["committed" if d["id"] in present else "not_committed"] += 1
        reason = reason_of(d.get("why", ""))
        entry["why"][reason] = entry["why"].get(reason, 0) + 1
    return found


def reason_of(why: str) -> str:
    """A short, countable reason from the client's error text."""
    lowered = why.lower()
    for key, words in (("no answer in time", ("no answer in time", "timed out")),
                       ("connection reset", ("reset",)), ("connection refused", ("refused",)),
                       ("server closed the connection", ("closed the connection",)),
                       ("no route to host", ("no route",)),
                       ("server shutting down", ("shutting down", "terminating connection")),
                       ("read-only or recovery", ("recovery", "read-only"))):
        if any(w in lowered for w in words):
            return key
    return why[:60] or "unknown"
