"""hamon's alerts: its events, as :mod:`hapack.alerts` events, to the ``[alerts]`` recipients.

:class:`HamonAlerts` listens to the :class:`~hapack.hamon.events.EventLog`
(every record the daemon logs passes through it) and translates the few that
an operator must hear about:

    record                                   alert
    peer, alive false                        node_lost (the peer)
    peer, alive true, after a node_lost      node_back
    step "fence" ok / failed                 fence_ok / fence_failed (task off)
    step "power-status" reporting off        fence_ok (task status: the BMC confirms it off),
                                             once until the peer is back (often before
                                             node_lost: hamon asks the BMC of a late peer)
    step "power-status" failed               fence_failed (task status)
    step "<verb> <resource>" failed          resource_failed
    degraded, degraded true                  resource_degraded (a monitor or probe said
                                             190/191: running without something, e.g.
                                             the partition without its replica)
    degraded, degraded false                 resource_ok (it is no longer degraded)
    transition to takeover                   takeover_started (also the first acquisition
                                             after a cold start)
    transition to blocked                    blocked
    timeline of a takeover                   takeover_finished, with the timeline

Translation and :meth:`hapack.alerts.Dispatcher.submit` only put the event on
bounded queues: the daemon's loop never waits for a sink, and a listener
error is swallowed after being counted (the alert path never stops hamon).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from hapack.alerts import Dispatcher, Event

RESOURCE_VERBS = ("start", "stop", "promote", "demote", "monitor", "restart", "probe")


class HamonAlerts:
    """The EventLog listener: hamon records in, alert events out."""

    def __init__(self, config: Any, submit: Callable[[Event], bool]):
        self.node = config.node
        self.peer = config.peer.name
        self.cluster = config.stack.cluster.name
        self.submit = submit
        self.sequence = 0
        self.lost = False
        self.confirmed = False     # a power-status "off" was reported for this loss
        self.errors = 0

    def __call__(self, record: dict) -> None:
        try:
            event = self.translate(record)
            if event is not None:
                self.submit(event)
        except Exception:  # noqa: BLE001 - the alert path never stops the daemon
            self.errors += 1

    def translate(self, record: dict) -> Event | None:
        kind = record.get("event")
        if kind == "peer":
            return self._peer(record)
        if kind == "step":
            return self._step(record)
        if kind == "transition":
            return self._transition(record)
        if kind == "degraded":
            name = "resource_degraded" if record.get("degraded") else "resource_ok"
            return self._event(name, self.node, record.get("message", ""), task="monitor",
                               rsc=record.get("resource", ""), rc=record.get("rc"))
        if kind == "timeline" and (record.get("timeline") or {}).get("kind") == "takeover":
            timeline = record["timeline"]
            return self._event("takeover_finished", self.node, record.get("message", ""),
                               task="takeover", time_=timeline.get("origin_wall"),
                               extra={"timeline": timeline})
        return None

    def _event(self, name: str, node: str, desc: str, *, task: str = "", rsc: str = "",
               rc: int | None = None, time_: float | None = None,
               extra: dict | None = None) -> Event:
        self.sequence += 1
        return Event(event=name, node=node, desc=desc, source="hamon", cluster=self.cluster,
                     reporter=self.node, task=task, rc=rc, rsc=rsc, sequence=self.sequence,
                     time=time.time() if time_ is None else time_, extra=extra or {})

    def _peer(self, record: dict) -> Event | None:
        if not record.get("alive"):
            self.lost = True
            return self._event("node_lost", self.peer, record.get("message", ""))
        if self.lost:
            self.lost, self.confirmed = False, False
            return self._event("node_back", self.peer, record.get("message", ""))
        return None

    def _step(self, record: dict) -> Event | None:
        step, ok, detail = record.get("step", ""), record.get("ok"), record.get("detail", "")
        if step == "fence":
            name = "fence_ok" if ok else "fence_failed"
            return self._event(name, self.peer, detail, task="off", rc=0 if ok else 1)
        if step == "power-status":
            if not ok:
                return self._event("fence_failed", self.peer, detail, task="status", rc=1)
            if "off" in detail and not self.confirmed:
                self.confirmed = True
                return self._event("fence_ok", self.peer, detail, task="status", rc=0)
            return None
        verb, _, resource = step.partition(" ")
        if not ok and verb in RESOURCE_VERBS and resource:
            return self._event("resource_failed", self.node, detail, task=verb, rsc=resource,
                               rc=1)
        return None

    def _transition(self, record: dict) -> Event | None:
        to, old = record.get("to"), record.get("old")
        if to == "takeover" and old != "blocked":
            return self._event("takeover_started", self.node, record.get("reason", ""),
                               task="takeover")
        if to == "blocked":
            return self._event("blocked", self.peer, record.get("reason", ""), task="fence")
        return None


def start(config: Any, log: Any) -> Dispatcher | None:
    """Alerts for the daemon, if the stack file has an ``[alerts]`` table: the
    dispatcher (close it at exit), with its listener added to ``log``."""
    alerts = config.stack.alerts
    if alerts is None:
        return None
    dispatcher = Dispatcher.from_alerts(alerts, log.warning)
    log.listeners.append(HamonAlerts(config, dispatcher.submit))
    return dispatcher
