"""The timeline of one failover: each step with its start and end.

Times are kept on the monotonic clock and shown relative to the timeline's
origin: for a failover, the last heartbeat heard from the lost peer, so the
figures read as "how long after the peer went silent". The wall-clock time
of the origin is kept once, for humans and logs.
"""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Timeline:
    def __init__(self, kind, reason, origin, clock=time.monotonic):
        self.kind = kind              # takeover | release
        self.reason = reason
        self.origin = origin          # monotonic
        self.wall = time.time() - (clock() - origin)
        self.steps = []
        self.outcome = None           # None while running; then a sentence
        self._clock = clock

    def begin(self, name: str) -> dict[str, str | float | None]:
        step = {"step": name, "start": self._clock() - self.origin, "end": None, "ok": None,
                "detail": ""}
        self.steps.append(step)
        return step

    def end(self, step: dict[str, str | float | None], ok: bool, detail: str = "") -> None:
        step.update(end=self._clock() - self.origin, ok=bool(ok), detail=detail)

    def add(self, name: str, started: float, ended: float, ok: bool, detail: str = "") -> None:
        """A step that ran from ``started`` to ``ended`` (monotonic)."""
        self.steps.append({"step": name, "start": started - self.origin,
                           "end": ended - self.origin, "ok": bool(ok), "detail": detail})

    def mark(self, name: str, detail: str = "") -> None:
        """A point in time (detection, a state change): a step of no length."""
        step = self.begin(name)
        self.end(step, True, detail)

    def close(self, outcome: str) -> None:
        self.outcome = outcome
        self.mark("end", outcome)

    def to_dict(self) -> dict[str, str | float | list[dict[str, str | float | bool]]]:
        return {"kind": self.kind, "reason": self.reason, "origin_wall": self.wall,
                "origin": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.wall))
                + f".{int(self.wall % 1 * 1000):03d}",
                "outcome": self.outcome, "steps": [dict(s) for s in self.steps]}

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1)
        os.replace(tmp, path)


def load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def render(data: dict[str, Any]) -> list[str]:
    """A timeline (dict) as text lines."""
    head = f"{data['kind']} at {data['origin']}: {data['reason']}"
    lines = [head]
    for step in data["steps"]:
        end = "running" if step["end"] is None else f"{step['end']:8.3f}s"
        mark = {True: "ok", False: "FAILED", None: ".."}[step["ok"]]
        detail = f"  {step['detail']}" if step["detail"] else ""
        lines.append(f"  {step['start']:8.3f}s {end:>9}  {step['step']:<24} {mark}{detail}")
    return lines
