"""``hapack-alert``: Pacemaker's alert agent for hapack (``/usr/sbin/hapack-alert``).

Pacemaker runs it once per recipient of the CIB's ``hapack`` alert
(``hapack render cib`` writes it from the stack file's ``[alerts]`` table),
as user hacluster, with the event in ``CRM_alert_*`` variables, the
recipient in ``CRM_alert_recipient`` and its settings in ``hapack_*``
instance attributes. It turns them into one :class:`hapack.alerts.Event`
and delivers it with one sink (:mod:`hapack.alerts`), finishing before
``hapack_deadline`` seconds (rendered as Pacemaker's alert timeout less a
margin; a hard timer ends it there, whatever a sink is doing).

Exit status: 0 delivered (or no recipient), 1 not delivered (one redacted
line on stderr, which Pacemaker logs), 2 not run by Pacemaker or a recipient
this agent cannot use.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Mapping, TextIO

if TYPE_CHECKING:
    import argparse

from hapack.alerts import AlertError, Event, sink_from_environ
from hapack.stack.model import ALERT_MARGIN_MS, DEFAULT_ALERT_TIMEOUT_MS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEGRADED_RC = (190, 191)  # OCF degraded, degraded promoted (a monitor's result)
DEFAULT_DEADLINE = (DEFAULT_ALERT_TIMEOUT_MS - ALERT_MARGIN_MS) / 1000
USAGE = ("hapack-alert: Pacemaker's alert agent for hapack; Pacemaker runs it with the "
         "CRM_alert_* variables set (see the [alerts] table in docs/stack-file.md)")


def event_from_crm(environ: Mapping[str, str], reporter: str = "") -> Event:
    """The event Pacemaker describes in ``CRM_alert_*`` (ValueError if it names none)."""
    kind = environ.get("CRM_alert_kind", "")
    get = environ.get
    extra = {name: get(f"CRM_alert_{name}") for name in (
        "interval", "target_rc", "status", "nodeid", "attribute_name", "attribute_value")
        if get(f"CRM_alert_{name}") not in (None, "")}
    if get("CRM_alert_version"):
        extra["pacemaker_version"] = get("CRM_alert_version")
    rc = _int(get("CRM_alert_rc"))
    if kind == "fencing":
        name = "fence_ok" if rc == 0 else "fence_failed"
    elif kind == "node":
        name = "node_back" if get("CRM_alert_desc") == "member" else "node_lost"
    elif kind == "resource":
        done = get("CRM_alert_status", "0") == "0"
        ok = done and rc == _int(get("CRM_alert_target_rc", "0"))
        name = "resource_ok" if ok else "resource_failed"
        if done and rc in DEGRADED_RC:  # running, in its role, something missing
            name = "resource_degraded"
    elif kind == "attribute":
        name = "attribute"
    else:
        raise ValueError(f"CRM_alert_kind {kind!r} is not one Pacemaker sends")
    desc = get("CRM_alert_desc", "")
    if kind == "attribute" and not desc:
        desc = f"{get('CRM_alert_attribute_name', '')}={get('CRM_alert_attribute_value', '')}"
    return Event(event=name, node=get("CRM_alert_node", ""), desc=desc, source="pacemaker",
                 cluster=get("hapack_cluster", ""), reporter=reporter, task=get("CRM_alert_task", ""),
                 rc=rc, rsc=get("CRM_alert_rsc", ""), sequence=_int(get("CRM_alert_node_sequence")) or 0,
                 time=_when(environ), extra=extra)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def _when(environ: Mapping[str, str]) -> float:
    import time
    epoch, usec = _int(environ.get("CRM_alert_timestamp_epoch")), _int(
        environ.get("CRM_alert_timestamp_usec"))
    return epoch + (usec or 0) / 1e6 if epoch else time.time()


class _Deadline(Exception):
    pass


def _expire(signum, frame):
    raise _Deadline()


def deliver(environ: Mapping[str, str], reporter: str, out: TextIO = sys.stderr) -> int:
    """Deliver the event ``environ`` describes; the exit status."""
    import time
    if not environ.get("CRM_alert_kind"):
        print(USAGE, file=out)
        return EXIT_USAGE
    if not environ.get("CRM_alert_recipient") and environ.get("hapack_sink") != "syslog":
        return EXIT_OK   # Pacemaker may run an alert that has no recipient yet
    try:
        deadline = float(environ.get("hapack_deadline") or DEFAULT_DEADLINE)
        sink = sink_from_environ(environ)
        event = event_from_crm(environ, reporter)
    except (AlertError, ValueError) as exc:
        print(f"hapack-alert: {exc}", file=out)
        return EXIT_USAGE
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, deadline + 0.5)   # whatever a sink is doing
    try:
        sink.send(event, time.monotonic() + deadline)
        return EXIT_OK
    except AlertError as exc:
        print(f"hapack-alert: {event.event} on {event.node}: {exc}", file=out)
        return EXIT_FAILED
    except _Deadline:
        print(f"hapack-alert: {event.event} on {event.node}: {sink.shown}: not done within "
              f"{deadline:g}s", file=out)
        return EXIT_FAILED
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parser() -> argparse.ArgumentParser:
    """The command line (none but --help): for the man page, hapack-alert(8)."""
    import argparse
    return argparse.ArgumentParser(
        prog="hapack-alert",
        description="Pacemaker's alert agent for hapack: delivers one cluster event "
                    "(CRM_alert_* variables) to one recipient (CRM_alert_recipient and the "
                    "hapack_* instance attributes 'hapack render cib' writes from the stack "
                    "file's [alerts] table): a webhook, syslog or a command. Exit status 0 "
                    "delivered, 1 not delivered, 2 not run by Pacemaker.")


def main(argv: list[str] | None = None) -> int:
    parser().parse_args(sys.argv[1:] if argv is None else argv)
    return deliver(os.environ, os.uname().nodename)


if __name__ == "__main__":
    sys.exit(main())
