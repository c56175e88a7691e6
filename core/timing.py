"""Deadlines on the monotonic clock."""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable
    from hapack.ocf._drbd import State


class Deadline:
    """A point in monotonic time that an operation must finish by."""

    __slots__ = ("end", "seconds")

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, cap: float | int | None = None) -> float | int:
        """Seconds left (never negative), at most ``cap``."""
        left = max(0.0, self.end - time.monotonic())
        return left if cap is None else min(left, cap)

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def sub(self, seconds: float) -> "Deadline":
        """A deadline ``seconds`` earlier than this one (keeps a margin)."""
        child = Deadline(0)
        child.end = self.end - seconds
        child.seconds = max(0.0, child.end - time.monotonic())
        return child

    def __repr__(self):
        return f"Deadline(left={self.left():.2f}s)"


def wait_until(predicate: Callable, deadline: Deadline, interval: float = 0.05,
               max_interval: float = 0.5) -> State:
    """Call predicate until it returns a true value or the deadline passes.

    Returns the predicate's last value. The poll interval grows gently from
    ``interval`` to ``max_interval`` so short waits stay fast.
    """
    while True:
        value = predicate()
        if value or deadline.expired:
            return value
        time.sleep(min(interval, deadline.left()))
        interval = min(interval * 1.5, max_interval)
