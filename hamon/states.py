"""The named states of a hamon node and the edges allowed between them.

Standard library only, and nothing else from hamon: this module is the
vocabulary the rest shares. Every change of state goes through
:meth:`StateMachine.transition`, which refuses an edge that is not in
:data:`EDGES` and logs ``old -> new: reason``.
"""

from __future__ import annotations

import enum
import time


class State(str, enum.Enum):
    STARTING = "starting"        # wait-for-all: probing, waiting to see the peer
    SECONDARY = "secondary"      # stateless layers up; the stateful side is elsewhere or nowhere
    TAKEOVER = "takeover"        # acquiring the stateful side: VIP, fence, partition, layers
    BLOCKED = "blocked"          # takeover stopped at the safety gate (fencing failed): never mount
    PRIMARY = "primary"          # holds the stateful side
    RELEASING = "releasing"      # stopping the stateful side in reverse for the peer
    FAILED = "failed"            # a stop failed: waiting to be fenced by the peer
    MAINTENANCE = "maintenance"  # hands off: nothing started, stopped or fenced
    STOPPING = "stopping"        # the daemon is shutting down: everything stops in reverse
    STOPPED = "stopped"          # the daemon may exit

    def __str__(self):
        return self.value


#: States in which this node holds, or is acquiring, the stateful side. The
#: peer learns this as the ``active`` flag of our heartbeats.
ACTIVE = frozenset({State.TAKEOVER, State.BLOCKED, State.PRIMARY, State.RELEASING, State.FAILED})

S = State
EDGES = {
    S.STARTING: {S.SECONDARY, S.PRIMARY, S.TAKEOVER, S.RELEASING, S.FAILED, S.MAINTENANCE,
                 S.STOPPING},
    S.SECONDARY: {S.TAKEOVER, S.MAINTENANCE, S.STOPPING},
    S.TAKEOVER: {S.PRIMARY, S.BLOCKED, S.SECONDARY, S.RELEASING, S.FAILED, S.MAINTENANCE,
                 S.STOPPING},
    S.BLOCKED: {S.TAKEOVER, S.SECONDARY, S.RELEASING, S.FAILED, S.MAINTENANCE, S.STOPPING},
    S.PRIMARY: {S.RELEASING, S.FAILED, S.MAINTENANCE, S.STOPPING},
    S.RELEASING: {S.SECONDARY, S.FAILED, S.MAINTENANCE, S.STOPPING},
    S.FAILED: {S.MAINTENANCE, S.STOPPED},
    S.MAINTENANCE: {S.STARTING, S.STOPPED},
    S.STOPPING: {S.STOPPED, S.FAILED},
    S.STOPPED: set(),
}


class IllegalTransition(RuntimeError):
    """An edge that is not in the table: a bug in the decision, never ignored."""


class StateMachine:
    """The current state, when it was entered, and the guarded edge to the next."""

    def __init__(self, log, on_change=None, clock=time.monotonic, state=State.STARTING):
        self.state = state
        self.since = clock()
        self._clock = clock
        self._log = log
        self._on_change = on_change

    def transition(self, to: State, reason: str) -> None:
        old = self.state
        if to not in EDGES[old]:
            allowed = ", ".join(sorted(s.value for s in EDGES[old])) or "none"
            raise IllegalTransition(f"{old} -> {to} is not allowed (from {old}: {allowed})")
        self.state = to
        self.since = self._clock()
        self._log.info(f"{old} -> {to}: {reason}")
        if self._on_change is not None:
            self._on_change(old, to, reason)

    def age(self) -> float:
        return self._clock() - self.since
