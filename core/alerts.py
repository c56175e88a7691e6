"""Alerts: the cluster events an operator must hear about, and the places they go.

Both managers report the same events through the same sinks, configured once
in the stack file's ``[alerts]`` table (:mod:`hapack.stack.alerttable`):

- Pacemaker runs the alert agent ``/usr/sbin/hapack-alert``
  (:mod:`hapack.alertagent`) once per recipient with the event in
  ``CRM_alert_*`` variables and the recipient's settings as ``hapack_*``
  instance attributes (:func:`recipient_attributes` writes them,
  :func:`sink_from_environ` reads them back);
- hamon maps its own events (:mod:`hapack.hamon.alerts`) and hands them to a
  :class:`Dispatcher`, whose per-sink bounded queues and worker threads mean
  that a sink that hangs never holds up the daemon.

Events (:class:`Event`; ``kind`` is Pacemaker's ``CRM_alert_kind``):

    fence_ok, fence_failed, blocked        kind fencing   (blocked: hamon's safety gate)
    node_lost, node_back                   kind node
    resource_ok, resource_failed           kind resource  (resource_ok: from hamon only when
                                                          a degraded resource recovers)
    resource_degraded                      kind resource  (hamon: a monitor says 190/191)
    takeover_started, takeover_finished    kind resource  (hamon; finished carries the timeline)
    attribute                              kind attribute (Pacemaker only)

Sinks: :class:`WebhookSink` (a JSON POST, a timeout per attempt, bounded
retries), :class:`SyslogSink` (a datagram to a unix socket, ``/dev/log``) and
:class:`CommandSink` (a program run with the event in ``CRM_alert_*`` and
``HAPACK_ALERT_*`` variables). Every sink finishes by a deadline it is given.
Nothing here prints a webhook's URL beyond its scheme, host and port, nor a
header value: :class:`AlertError` messages are redacted.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import socket as socketmod
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from hapack.command import redact_text
from hapack.stack.model import (
    DEFAULT_COMMAND_TIMEOUT_MS, DEFAULT_SYSLOG_FACILITY, DEFAULT_SYSLOG_SOCKET,
    DEFAULT_WEBHOOK_RETRIES, DEFAULT_WEBHOOK_TIMEOUT_MS, SYSLOG_FACILITIES, WEBHOOK_BACKOFF_MS,
    Alerts, Recipient)

VERSION = 1                   # of the JSON body
QUEUE_SIZE = 64               # events waiting per sink in hamon before new ones are dropped
KINDS = {"fence_ok": "fencing", "fence_failed": "fencing", "blocked": "fencing",
         "node_lost": "node", "node_back": "node",
         "resource_ok": "resource", "resource_failed": "resource",
         "resource_degraded": "resource",
         "takeover_started": "resource", "takeover_finished": "resource",
         "attribute": "attribute"}
#: CRM_alert_kind -> the [alerts] select_* flag that lets it through
SELECT = {"fencing": "select_fencing", "node": "select_nodes", "resource": "select_resources",
          "attribute": "select_attributes"}
#: syslog severities
_ERR, _WARNING, _NOTICE = 3, 4, 5
SEVERITY = {"fence_failed": _ERR, "blocked": _ERR, "resource_failed": _ERR,
            "node_lost": _WARNING, "takeover_started": _WARNING, "resource_degraded": _WARNING}


class AlertError(Exception):
    """A delivery that failed; the message never holds a secret."""


# -- the event ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One alert. ``node`` is the node it is about (the fenced node, the lost peer, the node
    a resource ran on); ``reporter`` the node that saw it."""

    event: str
    node: str
    desc: str
    source: str                        # pacemaker | hamon
    cluster: str = ""
    reporter: str = ""
    task: str = ""
    rc: int | None = None
    rsc: str = ""
    sequence: int = 0
    time: float = field(default_factory=time.time)
    #: timeline, interval, status...: more fields of the body (never replacing one above)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return KINDS[self.event]

    def body(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        body = {"version": VERSION, "source": self.source, "cluster": self.cluster,
                "reporter": self.reporter, "event": self.event, "kind": self.kind,
                "node": self.node, "desc": self.desc, "time": round(self.time, 6),
                "timestamp": iso_time(self.time), "sequence": self.sequence}
        for name in ("task", "rsc"):
            if getattr(self, name):
                body[name] = getattr(self, name)
        if self.rc is not None:
            body["rc"] = self.rc
        for name, value in self.extra.items():
            body.setdefault(name, value)
        return body

    def text(self) -> str:
        """One line for syslog."""
        what = f"{self.event} {self.rsc + ' ' if self.rsc else ''}on {self.node}"
        return (f"{self.cluster or 'hapack'}: {what}: {self.desc} "
                f"({self.source} on {self.reporter or '?'})")

    def environ(self, recipient: str = "") -> dict[str, str]:
        """The event as a command sink's environment: Pacemaker's names where they fit."""
        env = {"CRM_alert_kind": self.kind, "CRM_alert_node": self.node,
               "CRM_alert_desc": self.desc, "CRM_alert_recipient": recipient,
               "CRM_alert_node_sequence": str(self.sequence),
               "CRM_alert_timestamp": iso_time(self.time),
               "CRM_alert_timestamp_epoch": str(int(self.time)),
               "CRM_alert_timestamp_usec": str(int(self.time % 1 * 1e6)),
               "CRM_alert_task": self.task, "CRM_alert_rsc": self.rsc,
               "CRM_alert_rc": "" if self.rc is None else str(self.rc),
               "HAPACK_ALERT_EVENT": self.event, "HAPACK_ALERT_SOURCE": self.source,
               "HAPACK_ALERT_CLUSTER": self.cluster, "HAPACK_ALERT_REPORTER": self.reporter,
               "HAPACK_ALERT_JSON": json.dumps(self.body(), sort_keys=True, default=str)}
        for name in ("interval", "target_rc", "status", "nodeid", "attribute_name",
                     "attribute_value"):
            if name in self.extra:
                env[f"CRM_alert_{name}"] = str(self.extra[name])
        if "pacemaker_version" in self.extra:
            env["CRM_alert_version"] = str(self.extra["pacemaker_version"])
        return env


def iso_time(when: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when))
    return f"{stamp}.{int(when % 1 * 1e6):06d}{time.strftime('%z', time.localtime(when))}"


def selected(alerts: Alerts, event: Event) -> bool:
    """Whether ``alerts``' select_* let ``event`` through (Pacemaker filters its own)."""
    return bool(getattr(alerts, SELECT[event.kind]))


# -- sinks --------------------------------------------------------------------------------

class Sink(Protocol):
    shown: str      # what a log line may say about the sink (no secret)

    def send(self, event: Event, deadline: float) -> None:
        """Deliver ``event`` by ``deadline`` (monotonic); raise AlertError if it was not."""


def shown_url(url: str) -> str:
    """scheme://host[:port] of a URL: never its user, password, path or query."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or '?'}{port}"
    except ValueError:
        return "(an invalid URL)"


class WebhookSink:
    """POST the event as JSON; a timeout per attempt, retries after a pause, a deadline."""

    RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, *,
                 headers_file: str | None = None, ca_file: str | None = None,
                 timeout: float = DEFAULT_WEBHOOK_TIMEOUT_MS / 1000,
                 retries: int = DEFAULT_WEBHOOK_RETRIES,
                 backoff: float = WEBHOOK_BACKOFF_MS / 1000):
        from urllib.parse import unquote, urlsplit, urlunsplit
        parts = urlsplit(url)
        self.shown = f"webhook {shown_url(url)}"
        self.secrets = [url, parts.path, parts.query, *(headers or {}).values()]
        self.auth = None
        if parts.username is not None:   # user:password@ becomes a Basic header
            import base64
            user, password = unquote(parts.username), unquote(parts.password or "")
            self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            self.secrets += [parts.username, parts.password or "", self.auth]
            netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
            if ":" in (parts.hostname or ""):
                netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        self.url = urlunsplit(parts)
        self.headers = dict(headers or {})
        self.headers_file, self.ca_file = headers_file, ca_file
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def spec(self) -> tuple:
        return ("webhook", self.url, self.auth, tuple(sorted(self.headers.items())),
                self.headers_file, self.ca_file, self.timeout, self.retries)

    def send(self, event: Event, deadline: float) -> None:
        data = json.dumps(event.body(), sort_keys=True, default=str).encode()
        headers = self._headers()
        last = "no attempt before the deadline"
        for attempt in range(self.retries + 1):
            if attempt:
                pause = min(self.backoff * attempt, deadline - time.monotonic())
                if pause > 0:
                    time.sleep(pause)
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            retry, last = self._attempt(data, headers, min(self.timeout, remaining))
            if not last:
                return
            if not retry:
                break
        raise AlertError(self._redact(f"{self.shown}: {last} (after {attempt + 1} attempt(s))"))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "hapack-alert/1"}
        if self.auth:
            headers["Authorization"] = self.auth
        headers.update(self.headers)
        if self.headers_file:
            headers.update(self._file_headers(self.headers_file))
        return headers

    def _file_headers(self, path: str) -> dict[str, str]:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise AlertError(f"{self.shown}: cannot read headers_file {self.headers_file}: "
                             f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        out = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep and name.strip() and not line.lstrip().startswith("#"):
                out[name.strip()] = value.strip()
                self.secrets.append(value.strip())
        return out

    def _attempt(self, data: bytes, headers: dict, timeout: float) -> tuple[bool, str]:
        """(worth retrying, what went wrong or '' on success)."""
        import urllib.error
        import urllib.request
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        handlers: list = [urllib.request.ProxyHandler({})]   # no proxy from the environment
        if self.url.startswith("https:"):
            import ssl
            context = ssl.create_default_context(cafile=self.ca_file)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(request, timeout=timeout) as answer:
                answer.read(65536)
                return False, ""
        except urllib.error.HTTPError as exc:
            return exc.code in self.RETRY_STATUS, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return True, f"{type(reason).__name__}: {reason}"

    def _redact(self, text: str) -> str:
        return redact_text(text, [s for s in self.secrets if s and len(s) > 2])


#: kern 0 ... ftp 11, then local0-local7 are 16-23
_FACILITY_CODE = {name: code if code < 12 else code + 4
                  for code, name in enumerate(SYSLOG_FACILITIES)}


class SyslogSink:
    """One RFC 3164 line to a syslog unix socket (``/dev/log``), datagram or stream."""

    def __init__(self, path: str = DEFAULT_SYSLOG_SOCKET,
                 facility: str = DEFAULT_SYSLOG_FACILITY, ident: str = "hapack-alert"):
        self.path, self.facility, self.ident = path, facility, ident
        self.shown = f"syslog {path}"

    def spec(self) -> tuple:
        return ("syslog", self.path, self.facility)

    def line(self, event: Event) -> bytes:
        priority = _FACILITY_CODE[self.facility] * 8 + SEVERITY.get(event.event, _NOTICE)
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(event.time))
        return (f"<{priority}>{stamp} {self.ident}[{os.getpid()}]: "
                f"{event.text()}").encode("utf-8", "replace")[:8000]

    def send(self, event: Event, deadline: float) -> None:
        data = self.line(event)
        timeout = max(0.05, min(1.0, deadline - time.monotonic()))
        try:
            self._send(socketmod.SOCK_DGRAM, data, timeout)
        except OSError as exc:
            if exc.errno != 91:   # EPROTOTYPE: the socket is a stream socket
                raise AlertError(f"{self.shown}: {exc.strerror or exc}") from None
            try:
                self._send(socketmod.SOCK_STREAM, data + b"\n", timeout)
            except OSError as again:
                raise AlertError(f"{self.shown}: {again.strerror or again}") from None

    def _send(self, kind: int, data: bytes, timeout: float) -> None:
        with socketmod.socket(socketmod.AF_UNIX, kind) as sock:
            sock.settimeout(timeout)
            sock.connect(self.path)
            sock.sendall(data)


class CommandSink:
    """Run a program (argv, no shell) with the event in its environment, within a timeout."""

    def __init__(self, argv: Iterable[str], timeout: float = DEFAULT_COMMAND_TIMEOUT_MS / 1000):
        self.argv = tuple(argv)
        self.timeout = timeout
        self.shown = f"command {self.argv[0]}"

    def spec(self) -> tuple:
        return ("command", self.argv, self.timeout)

    def send(self, event: Event, deadline: float) -> None:
        from hapack.command import CommandError, run
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               **event.environ(shlex.join(self.argv))}
        budget = min(self.timeout, deadline - time.monotonic())
        if budget <= 0:
            raise AlertError(f"{self.shown}: no time left before the deadline")
        try:
            result = run(self.argv, timeout=budget, env=env)
        except CommandError as exc:
            raise AlertError(f"{self.shown}: {str(exc).rpartition(': ')[2]}") from None
        if not result.ok:
            last = (result.output().splitlines() or [""])[-1][:200]
            raise AlertError(f"{self.shown}: exit {result.returncode}{': ' + last if last else ''}")


# -- one recipient: from the stack file, to the CIB, and back -----------------------------

def sink_for(recipient: Recipient) -> Sink:
    """The sink of one ``[[alerts.recipients]]`` entry."""
    if recipient.sink == "webhook":
        assert recipient.url is not None, "a webhook recipient has a url (required)"
        return WebhookSink(recipient.url, recipient.headers, headers_file=recipient.headers_file,
                           ca_file=recipient.ca_file, timeout=recipient.timeout / 1000,
                           retries=recipient.retries)
    if recipient.sink == "syslog":
        return SyslogSink(recipient.socket, recipient.facility)
    return CommandSink(recipient.command, recipient.timeout / 1000)


def recipient_value(recipient: Recipient) -> str:
    """The CIB recipient's value (CRM_alert_recipient): the URL, the socket or the command."""
    if recipient.sink == "webhook":
        assert recipient.url is not None, "a webhook recipient has a url (required)"
        return recipient.url
    if recipient.sink == "syslog":
        return recipient.socket
    return shlex.join(recipient.command)


def recipient_attributes(recipient: Recipient) -> dict[str, str]:
    """The CIB recipient's instance attributes: the agent's environment besides the value."""
    out = {"hapack_sink": recipient.sink}
    if recipient.sink == "webhook":
        out["hapack_timeout"] = _seconds(recipient.timeout)
        out["hapack_retries"] = str(recipient.retries)
        for i, (name, value) in enumerate(recipient.headers.items(), 1):
            out[f"hapack_header_{i}"] = f"{name}: {value}"
        for key in ("headers_file", "ca_file"):
            if getattr(recipient, key):
                out[f"hapack_{key}"] = getattr(recipient, key)
    elif recipient.sink == "syslog":
        out["hapack_facility"] = recipient.facility
    else:
        out["hapack_timeout"] = _seconds(recipient.timeout)
    return out


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}"


def sink_from_environ(environ: Mapping[str, str]) -> Sink:
    """The sink Pacemaker asks for: CRM_alert_recipient and the hapack_* attributes.

    Raises AlertError (redacted) for a recipient this agent cannot use."""
    value, kind = environ.get("CRM_alert_recipient", ""), environ.get("hapack_sink", "")
    try:
        if kind == "webhook":
            headers = dict(_header(environ[name]) for name in sorted(
                (n for n in environ if n.startswith("hapack_header_")),
                key=lambda n: int(n.rpartition("_")[2]) if n.rpartition("_")[2].isdigit() else 0))
            return WebhookSink(value, headers, headers_file=environ.get("hapack_headers_file"),
                               ca_file=environ.get("hapack_ca_file"),
                               timeout=float(environ.get("hapack_timeout", _seconds(
                                   DEFAULT_WEBHOOK_TIMEOUT_MS))),
                               retries=int(environ.get("hapack_retries", DEFAULT_WEBHOOK_RETRIES)))
        if kind == "syslog":
            facility = environ.get("hapack_facility", DEFAULT_SYSLOG_FACILITY)
            if facility not in _FACILITY_CODE:
                raise ValueError(f"unknown syslog facility {facility!r}")
            return SyslogSink(value or DEFAULT_SYSLOG_SOCKET, facility)
        if kind == "command":
            return CommandSink(shlex.split(value), float(environ.get(
                "hapack_timeout", _seconds(DEFAULT_COMMAND_TIMEOUT_MS))))
    except ValueError as exc:
        secrets = [value] + [v for n, v in environ.items() if n.startswith("hapack_header_")]
        raise AlertError(redact_text(f"recipient {kind}: {exc}", secrets)) from None
    raise AlertError(f"hapack_sink is {kind!r}: expected webhook, syslog or command (render "
                     "the CIB with 'hapack render cib')")


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError("a hapack_header_N attribute is not 'Name: value'")
    return name.strip(), value.strip()


# -- never blocking: a bounded queue and a worker per sink --------------------------------

class _Lane:
    """One sink's queue and worker thread."""

    def __init__(self, sink: Sink, budget: float, size: int, log: Callable[[str], None]):
        self.sink, self.budget, self.log = sink, budget, log
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.sent = self.failed = self.dropped = 0
        self.thread = threading.Thread(target=self._run, name=f"alerts {sink.shown}",
                                       daemon=True)
        self.thread.start()

    def offer(self, event: Event | None) -> bool:
        try:
            self.queue.put_nowait(event)
            return True
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                self.log(f"alerts: {self.sink.shown} is not keeping up: {self.dropped} event(s) "
                         "dropped so far")
            return False

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            try:
                self.sink.send(event, time.monotonic() + self.budget)
                self.sent += 1
            except AlertError as exc:
                self.failed += 1
                self.log(f"alerts: {event.event} on {event.node} not delivered: {exc}")
            except Exception as exc:  # noqa: BLE001 - a sink's bug must not end the lane
                self.failed += 1
                self.log(f"alerts: {event.event} not delivered to {self.sink.shown}: internal "
                         f"error {type(exc).__name__}")


class Dispatcher:
    """Hands events to sinks without ever waiting for one.

    :meth:`submit` only puts the event on each sink's bounded queue (a full
    queue drops it and says so); each sink has its own worker thread, so a
    webhook that never answers delays neither the caller nor the other sinks.
    ``budget`` (seconds) bounds one delivery; by default the sink's worst case.
    """

    def __init__(self, sinks: Iterable[Sink], *, alerts: Alerts | None = None,
                 log: Callable[[str], None] = lambda message: None,
                 queue_size: int = QUEUE_SIZE, budgets: Iterable[float] | None = None):
        sinks = list(sinks)
        budgets = list(budgets) if budgets is not None else [_worst_case(s) for s in sinks]
        self.alerts = alerts
        self.lanes = [_Lane(sink, budget, queue_size, log) for sink, budget in zip(sinks, budgets)]

    @classmethod
    def from_alerts(cls, alerts: Alerts, log: Callable[[str], None]) -> "Dispatcher":
        return cls([sink_for(r) for r in alerts.recipients], alerts=alerts, log=log,
                   budgets=[r.worst_case_ms / 1000 + 1 for r in alerts.recipients])

    def submit(self, event: Event) -> bool:
        """Queue ``event`` for every sink, if selected; never blocks. False if any dropped it."""
        if self.alerts is not None and not selected(self.alerts, event):
            return True
        return all([lane.offer(event) for lane in self.lanes])

    def close(self, wait: float = 1.0) -> None:
        """Let the workers finish what is queued, for at most ``wait`` seconds in all."""
        deadline = time.monotonic() + wait
        for lane in self.lanes:
            lane.offer(None)
        for lane in self.lanes:
            lane.thread.join(max(0.0, deadline - time.monotonic()))

    def counts(self) -> dict[str, dict[str, int]]:
        return {lane.sink.shown: {"sent": lane.sent, "failed": lane.failed,
                                  "dropped": lane.dropped, "queued": lane.queue.qsize()}
                for lane in self.lanes}


def _worst_case(sink: Sink) -> float:
    if isinstance(sink, WebhookSink):
        return (sink.timeout * (sink.retries + 1)
                + sink.backoff * sink.retries * (sink.retries + 1) / 2 + 1)
    if isinstance(sink, CommandSink):
        return sink.timeout + 1
    return 2.0
