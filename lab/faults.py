"""The campaign's fault vocabulary and its seeded scheduler (no lab needed here).

:func:`schedule` draws ``n`` faults from a seed. The draw is a *shuffle bag*:
faults come in rounds, each round a random permutation of the whole
vocabulary, so any 16 consecutive faults of a round cover every kind and a
short run (CI: 12) sees 12 different kinds. Every fault's parameters come
from its own generator, seeded with ``(seed, index)``: ``schedule(s, k)`` is
always the first ``k`` faults of ``schedule(s, n)``, which is how
``--seed S --faults K`` replays a run up to its K-th fault.

A fault names its target by *role* (``active``: the node holding the
stateful side when the fault starts; ``standby``: the other one); the
campaign resolves roles at injection time.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

# kind -> what it does (the docs' table is generated from the same words)
KINDS: dict[str, str] = {
    "power-cut-active": "power cut of the active node through its BMC",
    "power-cut-standby": "power cut of the standby node through its BMC",
    "crash-active": "the active node's kernel dies (PID 1 killed; BMC still says on)",
    "crash-standby": "the standby node's kernel dies",
    "freeze-short": "a node frozen for less than the failure detection time, then thawed",
    "freeze-long": "a node frozen for longer than the detection time, then thawed if still on",
    "link-cut": "one cluster link (lan or hb) of one node cut, then healed",
    "split": "every link of one node cut (lan and hb: a split), then healed",
    "bmc-out": "one node's BMC unreachable, then back (nothing else)",
    "bmc-out-crash": "the active node's BMC unreachable, then the active node crashes; BMC back later",
    "layer-kill": "one stateful layer's main process killed on the active node",
    "layer-kill-repeated": "one stateful layer killed again after each restart (migration threshold)",
    "daemon-kill-active": "the cluster daemon killed on the active node",
    "daemon-kill-standby": "the cluster daemon killed on the standby node",
    "switchover": "a planned switchover (operator command)",
    "double": "a failure of the active node, then a second fault while the failover runs",
}

LAYERS = ("postgresql", "slapd", "activemq")
# The second fault of a "double", landing on the survivor (or the victim) mid-failover.
SECOND = ("layer-kill", "freeze-short", "power-cut-survivor", "link-cut-hb", "victim-back-early")
FIRST = ("power-cut-active", "crash-active", "freeze-long")


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: ``index`` (0-based), ``kind`` and its drawn parameters."""

    index: int
    kind: str
    params: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.params.items()))
        return f"#{self.index + 1} {self.kind}" + (f" ({shown})" if shown else "")


def _short(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _params(kind: str, rnd: random.Random) -> dict:
    """The parameters of one fault of ``kind``: durations in seconds, targets by role."""
    params = {"power_on_wait": round(rnd.uniform(0.5, 4.0), 2)}
    role = rnd.choice(("active", "standby"))
    extra = {
        "freeze-short": lambda: {"role": role, "fraction": round(rnd.uniform(0.2, 0.6), 2)},
        "freeze-long": lambda: {"role": role, "seconds": round(rnd.uniform(2.5, 6.0), 2)},
        "link-cut": lambda: {"role": role, "link": rnd.choice(("lan", "hb")),
                             "heal_after": round(rnd.uniform(2.0, 6.0), 2)},
        "split": lambda: {"role": role, "heal_after": round(rnd.uniform(3.0, 8.0), 2)},
        "bmc-out": lambda: {"role": role, "back_after": round(rnd.uniform(3.0, 10.0), 2)},
        "bmc-out-crash": lambda: {"back_after": round(rnd.uniform(4.0, 10.0), 2)},
        "layer-kill": lambda: {"layer": rnd.choice(LAYERS)},
        "layer-kill-repeated": lambda: {"layer": rnd.choice(LAYERS), "times": 3},
        "daemon-kill-active": lambda: {"daemon": rnd.randrange(2),
                                       "restart_after": round(rnd.uniform(1.0, 4.0), 2)},
        "daemon-kill-standby": lambda: {"daemon": rnd.randrange(2),
                                        "restart_after": round(rnd.uniform(1.0, 4.0), 2)},
        "double": lambda: {"first": rnd.choice(FIRST), "second": rnd.choice(SECOND),
                           "delay": round(rnd.uniform(0.3, 3.0), 2),
                           "seconds": round(rnd.uniform(3.0, 5.0), 2),
                           "layer": rnd.choice(LAYERS), "fraction": round(rnd.uniform(0.2, 0.6), 2)},
    }.get(kind)
    return params | (extra() if extra else {})


def schedule(seed: int, n: int, kinds: tuple[str, ...] | None = None) -> list[Fault]:
    """``n`` faults drawn from ``seed`` (see the module docstring); ``kinds`` narrows
    the vocabulary (default: all of it)."""
    vocabulary = list(kinds or KINDS)
    unknown = [k for k in vocabulary if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s): {', '.join(unknown)}")
    if n < 0:
        raise ValueError("the number of faults must be >= 0")
    faults: list[Fault] = []
    for index in range(n):
        rnd = random.Random(f"{seed}:{index}")
        round_no, slot = divmod(index, len(vocabulary))
        order = list(vocabulary)
        random.Random(f"{seed}:round:{round_no}").shuffle(order)
        kind = order[slot]
        faults.append(Fault(index, kind, _params(kind, rnd)))
    return faults
