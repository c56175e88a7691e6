"""The ``[alerts]`` table: which cluster events are reported, and to whom.

One table for both managers: ``hapack render`` turns it into the CIB's
``<alerts>`` section (Pacemaker runs ``/usr/sbin/hapack-alert`` once per
recipient), and hamon hands the same events to the same recipients itself
(:mod:`hapack.hamon.alerts`). The sinks are :mod:`hapack.alerts`.

A webhook's URL and header values are secrets: a message about them never
quotes them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from hapack.stack.durations import format_duration
from hapack.stack.model import (
    ALERT_MARGIN_MS, ALERT_SINKS, DEFAULT_ALERT_TIMEOUT_MS, DEFAULT_COMMAND_TIMEOUT_MS,
    DEFAULT_SYSLOG_FACILITY, DEFAULT_SYSLOG_SOCKET, DEFAULT_WEBHOOK_RETRIES,
    DEFAULT_WEBHOOK_TIMEOUT_MS, SYSLOG_FACILITIES, Alerts, Recipient, _frozen_map)
from hapack.stack.reader import Reader, abs_path, choice, join, type_name, within

KEY = "alerts"
SELECTS = ("select_fencing", "select_nodes", "select_resources", "select_attributes")
#: The keys of a recipient, by sink ("sink" itself is always there).
SINK_KEYS = {
    "webhook": ("url", "headers", "headers_file", "ca_file", "timeout", "retries"),
    "syslog": ("socket", "facility"),
    "command": ("command", "timeout"),
}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")   # an HTTP token (RFC 9110)
_ATTRIBUTE = re.compile(r"^[A-Za-z0-9_#.:-]{1,100}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def read_alerts(r: Reader, raw: Any) -> Alerts | None:
    """The ``[alerts]`` table read with ``r``; None (problems in ``r``) when it is wrong."""
    t = r.table(raw, KEY, (*SELECTS, "timeout", "recipients"), required=("recipients",))
    if t is None:
        return None
    before = len(r.problems)
    flags = {name: r.value(t, KEY, name, bool, True) for name in SELECTS[:3]}
    attributes = _select_attributes(r, t)
    if not any(flags.values()) and attributes is False:
        r.problem(join(KEY, "select_fencing"), "every select_* is false: these alerts would "
                  "report nothing")
    timeout = r.value(t, KEY, "timeout", "duration", DEFAULT_ALERT_TIMEOUT_MS,
                      check=_ms_within(5000, 600_000))
    recipients = _recipients(r, t.get("recipients"))
    if len(r.problems) > before or attributes is None:   # None: a problem was reported
        return None
    alerts = Alerts(**flags, select_attributes=attributes, timeout=timeout,
                    recipients=recipients)
    _budgets(r, alerts)
    return alerts if len(r.problems) == before else None


def _select_attributes(r: Reader, t: dict) -> bool | tuple[str, ...] | None:
    raw = t.get("select_attributes", False)
    where = join(KEY, "select_attributes")
    if isinstance(raw, bool):
        return raw
    if not isinstance(raw, list) or not raw or not all(isinstance(a, str) for a in raw):
        r.problem(where, "expected true, false or a non-empty array of node attribute names, "
                  f"got {type_name(raw)}")
        return None
    for name in raw:
        if not _ATTRIBUTE.fullmatch(name):
            r.problem(where, f"{name!r} is not a node attribute name")
    return tuple(dict.fromkeys(raw))


def _ms_within(low: int, high: int):
    def check(ms: int) -> int:
        if not low <= ms <= high:
            raise ValueError(f"{format_duration(ms)} is outside {format_duration(low)}.."
                             f"{format_duration(high)}")
        return ms
    return check


def _recipients(r: Reader, raw: Any) -> tuple[Recipient, ...]:
    key = join(KEY, "recipients")
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        r.problem(key, f"expected an array of tables ([[{key}]]), got {type_name(raw)}")
        return ()
    if not raw:
        r.problem(key, "name at least one recipient (a webhook, syslog or a command)")
    found = [_recipient(r, item, join(key, i)) for i, item in enumerate(raw)]
    return tuple(f for f in found if f is not None)   # None: a problem was reported


def _recipient(r: Reader, raw: dict, key: str) -> Recipient | None:
    sink = r.value(raw, key, "sink", str, check=choice(*ALERT_SINKS))
    if sink is None:
        return None
    t = r.table(raw, key, ("sink", *SINK_KEYS[sink]),
                required={"webhook": ("url",), "command": ("command",)}.get(sink, ())) or {}
    return {"webhook": _webhook, "syslog": _syslog, "command": _command}[sink](r, t, key)


def _webhook(r: Reader, t: dict, key: str) -> Recipient:
    return Recipient(
        sink="webhook", url=r.value(t, key, "url", str, check=_url, secret=True),
        headers=_frozen_map(_headers(r, t, key)),
        headers_file=r.value(t, key, "headers_file", str, None, check=abs_path),
        ca_file=r.value(t, key, "ca_file", str, None, check=abs_path),
        retries=r.value(t, key, "retries", int, DEFAULT_WEBHOOK_RETRIES, check=within(0, 10)),
        timeout=r.value(t, key, "timeout", "duration", DEFAULT_WEBHOOK_TIMEOUT_MS,
                        check=_ms_within(100, 60_000)))


def _url(text: str) -> str:
    """An http(s) URL with a host; the messages never quote it (it may hold a secret)."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or " " in text:
        raise ValueError("expected an http:// or https:// URL with a host (the value is not "
                         "shown: it may hold a secret)")
    return text


def _headers(r: Reader, t: dict, key: str) -> dict[str, str]:
    raw = t.get("headers", {})
    where = join(key, "headers")
    if not isinstance(raw, dict):
        r.problem(where, f"expected a table of header name = value, got {type_name(raw)}")
        return {}
    out = {}
    for name, value in raw.items():
        if not _HEADER_NAME.fullmatch(name):
            r.problem(join(where, name), "is not a valid HTTP header name")
        elif not isinstance(value, str) or _CONTROL.search(value):
            r.problem(join(where, name), "expected a string without control characters "
                      "(the value is not shown: it may be secret)")
        else:
            out[name] = value
    return out


def _syslog(r: Reader, t: dict, key: str) -> Recipient:
    return Recipient(
        sink="syslog",
        socket=r.value(t, key, "socket", str, DEFAULT_SYSLOG_SOCKET, check=abs_path),
        facility=r.value(t, key, "facility", str, DEFAULT_SYSLOG_FACILITY,
                         check=choice(*SYSLOG_FACILITIES)))


def _command(r: Reader, t: dict, key: str) -> Recipient:
    raw = t.get("command")
    where = join(key, "command")
    argv: tuple[str, ...] = ()
    if not isinstance(raw, list) or not raw or not all(isinstance(a, str) for a in raw):
        r.problem(where, "expected an array of strings: the program (an absolute path) and its "
                  f"arguments, run without a shell; got {type_name(raw)}")
    elif any(_CONTROL.search(a) for a in raw):
        r.problem(where, "an argument holds a newline, NUL or other control character")
    elif not raw[0].startswith("/"):
        r.problem(where, f"{raw[0]!r} is not an absolute path (the program runs without a "
                  "shell and without PATH lookup)")
    else:
        argv = tuple(raw)
    return Recipient(sink="command", command=argv,
                     timeout=r.value(t, key, "timeout", "duration", DEFAULT_COMMAND_TIMEOUT_MS,
                                     check=_ms_within(100, 600_000)))


def _budgets(r: Reader, alerts: Alerts) -> None:
    """Each delivery fits in the time the agent keeps below Pacemaker's alert timeout."""
    for i, recipient in enumerate(alerts.recipients):
        worst = recipient.worst_case_ms
        if worst > alerts.deadline:
            what = ("timeout x (retries + 1) plus the waits between attempts"
                    if recipient.sink == "webhook" else "its timeout")
            r.problem(join(join(KEY, "recipients"), i),
                      f"one delivery may take {format_duration(worst)} ({what}), more than "
                      f"alerts.timeout ({format_duration(alerts.timeout)}) less "
                      f"{format_duration(ALERT_MARGIN_MS)}: Pacemaker would kill the alert "
                      "agent first; shorten the timeout or retries, or raise alerts.timeout")
