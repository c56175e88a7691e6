"""Prometheus metrics: what hamon knows, in the text exposition format 0.0.4.

Off unless the ``[hamon]`` table sets ``metrics_address`` (``"lan:9665"``:
this node's address on link ``lan``; or an address, ``"127.0.0.1:9665"``,
``"[::1]:9665"``). Names follow ClusterLabs' ha_cluster_exporter
(``ha_cluster_pacemaker_nodes``, ``…_resources``, ``…_fail_count``,
``…_migration_threshold``, ``…_stonith_enabled``) where the meaning is the
same, and are hamon's own (``hamon_…``) otherwise; docs/hamon.md lists them.

The daemon's loop calls :meth:`MetricsServer.publish` once per tick: it
reads the daemon's record (in the loop's thread, as every reader of it does)
into a frozen :class:`Reading` and replaces the server's reference to it,
one assignment, no lock. The server is one thread of its own with one
``select()`` over its connections: it turns the last reading published into
the exposition when a request is complete and never touches the daemon. A
slow or hostile client holds at most one of :data:`MAX_CLIENTS` slots for at most
:data:`CLIENT_DEADLINE` seconds and :data:`MAX_REQUEST` bytes; the loop never
waits for it. Only ``GET /metrics`` is answered (404 otherwise). Nothing that
could hold a secret (a decision's reason, a step's detail, a command's
output) is exported: names, states, counts and times only.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from hapack.hamon.daemon import Daemon

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 8192        # bytes of request line and headers
MAX_CLIENTS = 16          # connections served at once; the oldest goes for a new one
CLIENT_DEADLINE = 5.0     # seconds from accept to the answer's last byte
IP_FREEBIND = 15          # bind a link's address before it is configured (as the heartbeats)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LINK = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_EXAMPLES = '"lan:9665" (this node\'s address on link lan), "127.0.0.1:9665" or "[::1]:9665"'


class MetricsError(Exception):
    """The metrics address cannot be served (hamon refuses to start)."""


# -- the address -----------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    host: str          # an IP address, or a link's name: this node's address on that link
    port: int

    @property
    def is_link(self) -> bool:
        return not _is_ip(self.host)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_address(text: str) -> Endpoint:
    """``HOST:PORT`` with HOST an IPv4 address, ``[IPv6]`` or a link name; ValueError."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        ok = bool(sep and ":" in host and _is_ip(host))
    else:
        host, sep, port = text.rpartition(":")
        ok = bool(sep and ":" not in host and (_is_ip(host) or _LINK.fullmatch(host)))
    if not ok or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT with a port in 1..65535: write {_EXAMPLES}")
    return Endpoint(str(ipaddress.ip_address(host)) if _is_ip(host) else host, int(port))


def check_address(text: str) -> str:
    """The ``metrics_address`` check for the stack reader ("" leaves metrics off)."""
    if text:
        parse_address(text)
    return text


# -- the exposition ----------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    """One metric family: its samples as ((label, value) pairs, number)."""

    name: str
    kind: str                  # gauge | counter
    help: str
    samples: tuple = ()

    def __post_init__(self):
        if not _NAME.fullmatch(self.name) or self.kind not in ("gauge", "counter"):
            raise ValueError(f"bad metric {self.name!r} ({self.kind})")
        if (self.kind == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only they, end in _total")
        for labels, _ in self.samples:
            if not all(_LABEL.fullmatch(k) and not k.startswith("__") for k, _ in labels):
                raise ValueError(f"{self.name}: bad label name in {labels}")


def family(name: str, kind: str, help: str,
           samples: Iterable[tuple[Mapping[str, Any], float]]) -> Family:
    return Family(name, kind, help, tuple((tuple((k, str(v)) for k, v in labels.items()),
                                           value) for labels, value in samples))


def one(name: str, kind: str, help: str, value: float) -> Family:
    return family(name, kind, help, [({}, value)])


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if isinstance(value, bool) or (isinstance(value, int)):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family]) -> bytes:
    """The text exposition format 0.0.4 of ``families``."""
    lines = []
    for f in families:
        lines += [f"# HELP {f.name} {escape_help(f.help)}", f"# TYPE {f.name} {f.kind}"]
        for labels, value in f.samples:
            inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
            lines.append(f"{f.name}{{{inner}}} {number(value)}" if inner
                         else f"{f.name} {number(value)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


# -- what the daemon knows ---------------------------------------------------------------------

#: Every reason a heartbeat is dropped for (hamon.packet, hamon.transport), declared
#: here so that each counter exists, at 0, from the start.
REJECT_REASONS = ("malformed", "unknown-key", "bad-mac", "wrong-link", "wrong-node",
                  "wrong-source", "old-generation", "replay", "stale")
RESOURCE_STATUSES = ("active", "failed", "blocked")   # ha_cluster_exporter's, those hamon has


@dataclass(frozen=True)
class ResourceReading:
    name: str
    kind: str
    agent: str
    status: Any                 # hamon.snapshot.Res
    failures: int               # recent ones (within the failure timeout)
    degraded: bool = False      # its last monitor said 190/191


@dataclass(frozen=True)
class Reading:
    """What the daemon knew at the end of one tick: frozen values only, cheap to take."""

    node: str
    peer_name: str
    state: Any                  # hamon.states.State
    active: bool
    in_state: float
    uptime: float
    generation: int
    upstream: bool | None
    standby: bool
    maintenance: bool
    peer: Any                   # hamon.membership.PeerLiveness (frozen)
    power: Any                  # hamon.snapshot.Power
    send_errors: tuple
    rejected: tuple             # (reason, count)
    bmc_results: tuple          # ((Act, ok), count)
    takeovers: int
    resources: tuple            # ResourceReading
    migration_threshold: int
    failover: Mapping | None    # the last takeover's timeline (a dict never changed once kept)


def read(daemon: Daemon, saved: Mapping | None = None) -> Reading:
    """A :class:`Reading` of ``daemon``, in the daemon's loop (the only writer of its record).

    ``saved``: the last takeover's timeline kept in state_dir, used until this
    daemon has one of its own."""
    now, w, state = daemon.clock(), daemon.world, daemon.machine.state
    return Reading(
        node=daemon.config.node, peer_name=daemon.config.peer.name, state=state,
        active=w.active(state), in_state=now - daemon.machine.since,
        uptime=now - daemon.started, generation=daemon.transport.generation,
        upstream=daemon.upstream(), standby=w.standby, maintenance=w.maintenance,
        peer=daemon.membership.view(now), power=w.power,
        send_errors=tuple(daemon.transport.send_errors),
        rejected=tuple(daemon.transport.rejected.items()),
        bmc_results=tuple(w.bmc_results.items()), takeovers=w.takeovers,
        resources=tuple(ResourceReading(r.resource.name, r.resource.kind, r.resource.agent,
                                        r.status, r.recent_failures(now, w.failure_timeout),
                                        bool(r.degraded))
                        for r in w.all()),
        migration_threshold=w.migration_threshold,
        failover=w.timelines.get("takeover") or saved)


def families(r: Reading) -> tuple[Family, ...]:
    """Every metric family of a reading (in any thread: it only reads ``r``)."""
    return (*_node(r), *_nodes(r), *_links(r), *_fencing(r), *_resources(r),
            *_failover(r.failover))


def _node(r: Reading) -> list[Family]:
    from hapack.hamon.states import State
    out = [
        family("hamon_info", "gauge", "This node and its peer (value 1)",
               [({"node": r.node, "peer": r.peer_name}, 1)]),
        family("hamon_state", "gauge", "The daemon's state; one line per state, 1 for the "
               "current one", [({"state": s.value}, s is r.state) for s in State]),
        one("hamon_active", "gauge", "1 while this node holds or acquires the stateful side",
            r.active),
        one("hamon_state_seconds", "gauge", "Seconds in the current state", r.in_state),
        one("hamon_uptime_seconds", "gauge", "Seconds since the daemon started", r.uptime),
        one("hamon_generation", "gauge", "This daemon's boot generation", r.generation),
        one("hamon_takeovers_total", "counter", "Takeovers of the stateful side begun by this "
            "daemon", r.takeovers),
        one("ha_cluster_pacemaker_stonith_enabled", "gauge", "Whether fencing is enabled "
            "(always, for hamon)", 1),
    ]
    if r.upstream is not None:
        out.append(one("hamon_upstream_up", "gauge", "1 while the ping targets answer",
                       r.upstream))
    return out


def _nodes(r: Reading) -> list[Family]:
    from hapack.hamon.snapshot import Power
    from hapack.hamon.states import State
    peer, said = r.peer, r.peer.status
    me = {"online": 1, "standby": r.standby,
          "maintenance": r.state is State.MAINTENANCE or r.maintenance,
          "unclean": r.state is State.FAILED,
          "shutdown": r.state in (State.STOPPING, State.STOPPED)}
    left = said is not None and (said.leaving or said.maintenance)
    other = {"online": peer.alive, "maintenance": bool(said and said.maintenance),
             "unclean": bool(said and said.stop_failed and peer.alive)
             or (not peer.alive and not left and r.power is not Power.OFF),
             "shutdown": bool(said and said.leaving)}
    rows = [({"node": node, "type": "member", "status": k}, v)
            for node, statuses in ((r.node, me), (r.peer_name, other))
            for k, v in statuses.items()]
    return [
        family("ha_cluster_pacemaker_nodes", "gauge", "The nodes as this node sees them; one "
               "line per node and status (the peer's standby is not known here)", rows),
        family("hamon_peer_power", "gauge", "The peer's power as its BMC last said; one line "
               "per state", [({"state": p.value}, p is r.power) for p in Power]),
        one("hamon_peer_worst_gap_seconds", "gauge", "The longest gap between two heartbeats "
            "of the peer", peer.worst_gap),
    ]


def _links(r: Reading) -> list[Family]:
    views = r.peer.links
    rejected = dict.fromkeys(REJECT_REASONS, 0)
    rejected.update(r.rejected)

    def per_link(values):
        return [({"link": v.name}, x) for v, x in zip(views, values) if x is not None]
    return [
        family("hamon_link_up", "gauge", "1 while the link delivers the peer's heartbeats",
               per_link(v.up for v in views)),
        family("hamon_link_last_heartbeat_age_seconds", "gauge", "Seconds since the last "
               "heartbeat admitted on the link (+Inf: never)",
               per_link(math.inf if v.last_seen is None else v.last_seen for v in views)),
        family("hamon_link_loss_ratio", "gauge", "Heartbeats lost on the link, over its last "
               "100 sequence numbers", per_link(v.loss for v in views)),
        family("hamon_link_worst_gap_seconds", "gauge", "The longest gap between two heartbeats "
               "on the link", per_link(v.worst_gap for v in views)),
        family("hamon_heartbeats_accepted_total", "counter", "Heartbeats of the peer admitted "
               "(authentic, fresh, not replayed)", per_link(v.received for v in views)),
        family("hamon_heartbeats_rejected_total", "counter", "Packets dropped, by reason",
               [({"reason": k}, n) for k, n in rejected.items()]),
        family("hamon_heartbeat_send_errors_total", "counter", "Heartbeats that could not be "
               "sent", per_link(r.send_errors)),
    ]


def _fencing(r: Reading) -> list[Family]:
    from hapack.hamon.snapshot import Act
    results = dict(r.bmc_results)
    rows = [({"action": action, "result": result}, results.get((act, ok), 0))
            for act, action in ((Act.FENCE, "off"), (Act.POWER_STATUS, "status"))
            for ok, result in ((True, "ok"), (False, "failed"))]
    return [family("hamon_fence_attempts_total", "counter", "fence_bmc runs against the peer's "
                   "BMC, by action (off: a fence; status: a power reading) and result", rows)]


def _resources(r: Reading) -> list[Family]:
    from hapack.hamon.snapshot import Res
    rows, statuses, fails, thresholds, degraded = [], [], [], [], []
    for x in r.resources:
        status = {"active": x.status in (Res.STARTED, Res.PROMOTED),
                  "failed": x.status is Res.FAILED, "blocked": x.status is Res.STOP_FAILED}
        labels = {"node": r.node, "resource": x.name, "agent": x.agent, "role": _role(x, Res),
                  "managed": "false" if r.maintenance else "true"}
        rows += [({**labels, "status": s}, status[s]) for s in RESOURCE_STATUSES]
        statuses += [({"resource": x.name, "kind": x.kind, "status": s.value}, s is x.status)
                     for s in Res]
        fails.append(({"node": r.node, "resource": x.name}, x.failures))
        thresholds.append(({"node": r.node, "resource": x.name}, r.migration_threshold))
        degraded.append(({"node": r.node, "resource": x.name}, x.degraded))
    return [
        family("ha_cluster_pacemaker_resources", "gauge", "The resources on this node; one line "
               "per resource and status (active, failed, blocked), role as a label", rows),
        family("hamon_resource_status", "gauge", "Each resource's status as hamon knows it; one "
               "line per status", statuses),
        family("ha_cluster_pacemaker_fail_count", "gauge", "Recent failures (within the "
               "failure timeout) per resource", fails),
        family("ha_cluster_pacemaker_migration_threshold", "gauge", "Failures after which a "
               "stateful layer moves to the peer", thresholds),
        family("hamon_resource_degraded", "gauge", "1 while the resource's monitor reports it "
               "degraded (OCF 190/191: running, e.g. the partition without its replica)",
               degraded),
    ]


def _role(x: ResourceReading, Res) -> str:
    if x.status is Res.STARTED and x.kind == "partition":
        return "unpromoted"
    return {Res.STARTED: "started", Res.PROMOTED: "promoted",
            Res.STOPPED: "stopped"}.get(x.status, "unknown")


def _failover(timeline: Mapping | None) -> list[Family]:
    if not timeline or not timeline.get("steps"):
        return []
    steps = timeline["steps"]
    keyed = [({"seq": i, "step": s["step"]}, s) for i, s in enumerate(steps)]
    return [
        one("hamon_last_failover_timestamp_seconds", "gauge", "When the last takeover's origin "
            "(the peer's last heartbeat) was, Unix time", timeline["origin_wall"]),
        one("hamon_last_failover_duration_seconds", "gauge", "Seconds from the origin to the end "
            "of the last takeover", max(s["end"] or 0.0 for s in steps)),
        family("hamon_last_failover_step_start_seconds", "gauge", "When each step of the last "
               "takeover began, seconds from its origin", [(k, s["start"]) for k, s in keyed]),
        family("hamon_last_failover_step_end_seconds", "gauge", "When each step of the last "
               "takeover ended, seconds from its origin",
               [(k, s["end"]) for k, s in keyed if s["end"] is not None]),
        family("hamon_last_failover_step_ok", "gauge", "1 if the step succeeded",
               [(k, bool(s["ok"])) for k, s in keyed if s["ok"] is not None]),
    ]


# -- the server ---------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found",
            431: "Request Header Fields Too Large"}


def answer(request: bytes, body: Callable[[], bytes]) -> bytes:
    """The HTTP response to one request (its line and headers); ``body()`` renders."""
    line = request.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
    if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
        return response(400, b"bad request\n")
    if line[0] != b"GET" or line[1].split(b"?", 1)[0] != b"/metrics":
        return response(404, b"only GET /metrics here\n")
    return response(200, body(), CONTENT_TYPE)


def response(code: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


class _Client:
    __slots__ = ("sock", "deadline", "received", "out")

    def __init__(self, sock, deadline):
        self.sock, self.deadline = sock, deadline
        self.received, self.out = b"", None


class MetricsServer:
    """``GET /metrics`` on ``host:port``, served by a thread of its own.

    The socket is bound here (an OSError becomes :class:`MetricsError`, so
    ``hamon run`` refuses to start); :meth:`start` starts the thread.
    """

    def __init__(self, host: str, port: int, *, freebind: bool = False, log=None,
                 state_dir: str | None = None, clock=time.monotonic):
        self.log, self.clock = log, clock
        self.reading: Reading | None = None       # replaced, never changed, by the loop
        self.published: float | None = None
        self._saved_path = state_dir and os.path.join(state_dir, "last-takeover.json")
        self._saved: dict[str, Any] | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self.sock = _listen(host, port, freebind)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)

    @property
    def address(self) -> tuple:
        return self.sock.getsockname()[:2]

    # -- the loop's side: one assignment per tick ------------------------------------------
    def publish(self, daemon: Daemon) -> None:
        if self._saved_path:
            from hapack.hamon import timeline
            self._saved, self._saved_path = timeline.load(self._saved_path), None
        self.reading, self.published = read(daemon, self._saved), self.clock()

    # -- the server thread ----------------------------------------------------------------
    def start(self) -> "MetricsServer":
        self._thread = threading.Thread(target=self._run, name="hamon-metrics", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()

    def body(self) -> bytes:
        """The exposition of the last snapshot, with its age (a stuck loop shows)."""
        reading, published = self.reading, self.published
        age = math.inf if published is None else max(0.0, self.clock() - published)
        known = () if reading is None else families(reading)
        return render((*known, one("hamon_metrics_age_seconds", "gauge", "Seconds since the "
                                      "daemon's loop last published these metrics", age)))

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        clients: dict = {}
        try:
            while not self._stop:
                try:
                    self._round(sel, clients)
                except Exception as exc:  # noqa: BLE001 - the server must outlive a bug
                    if self.log is not None:
                        self.log.error(f"metrics server: {type(exc).__name__}: {exc}")
                    time.sleep(0.1)
        finally:
            for client in list(clients.values()):
                self._drop(sel, clients, client)
            sel.close()

    def _round(self, sel, clients) -> None:
        now = time.monotonic()
        wait = min((c.deadline for c in clients.values()), default=now + 1.0) - now
        for key, events in sel.select(max(0.0, wait)):
            if key.fileobj is self.sock:
                self._accept(sel, clients)
            elif key.fileobj is self._wake_r:
                self._wake_r.recv(64)
            elif clients.get(key.fileobj.fileno()) is key.data:  # not one dropped this round
                self._serve(sel, clients, key.data, events)
        now = time.monotonic()
        for client in [c for c in clients.values() if c.deadline <= now]:
            self._drop(sel, clients, client)

    def _accept(self, sel, clients) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:         # out of descriptors, say: the others go on
                return
            if len(clients) >= MAX_CLIENTS:
                self._drop(sel, clients, min(clients.values(), key=lambda c: c.deadline))
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + CLIENT_DEADLINE)
            clients[sock.fileno()] = client
            sel.register(sock, selectors.EVENT_READ, client)

    def _serve(self, sel, clients, client, events) -> None:
        try:
            if client.out is None:
                self._read(sel, client)
            elif events & selectors.EVENT_WRITE:
                sent = client.sock.send(client.out)
                client.out = client.out[sent:]
                if not client.out:
                    self._drop(sel, clients, client)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(sel, clients, client)

    def _read(self, sel, client) -> None:
        chunk = client.sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("closed before a whole request")
        client.received += chunk
        end = max(client.received.find(b"\r\n\r\n"), client.received.find(b"\n\n"))
        if len(client.received) > MAX_REQUEST:
            client.out = response(431, b"request too large\n")
        elif end >= 0:
            client.out = answer(client.received, self.body)
        else:
            return
        client.received = b""
        sel.modify(client.sock, selectors.EVENT_WRITE, client)

    @staticmethod
    def _drop(sel, clients, client) -> None:
        clients.pop(client.sock.fileno(), None)
        try:
            sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()


def _listen(host: str, port: int, freebind: bool) -> socket.socket:
    family_ = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family_, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if freebind and family_ == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise MetricsError(f"metrics_address: cannot listen on {where}: {exc.strerror}") from None
    return sock
