"""The demo's client, run in the lab's client namespace (on the service LAN).

``python -m hapack.lab.democlient run CONFIG_FILE OUT``: until SIGTERM,

* commits one row at a time to PostgreSQL through the VIP (table
  ``cfg["table"]``, created if missing; a fresh
  autocommit ``INSERT`` per id; an id is *acknowledged* only when the server
  answered the INSERT, i.e. the commit returned). Every request has its own
  timeout (REQUEST_TIMEOUT for each INSERT from the moment it is sent,
  CONNECT_PG_TIMEOUT for a connect and its login), so a healthy connection is
  kept however long it lives. An id whose INSERT was sent but not answered is
  *in doubt* (committed or not: only the final read tells) and never reused;
  a failed connect sends no row and puts no id in doubt. After either the
  client reconnects and goes on with the next id, all through the outage;
* probes every layer on the VIP every 50 ms: ``http`` (the full chain:
  Apache -> Tomcat -> the app's health page), ``app+db`` (the same page
  saying the app reaches the database on the VIP),
  ``postgresql`` (SELECT 1), ``slapd`` (anonymous bind and a read of the
  suffix), ``activemq`` (STOMP CONNECT).

``python -m hapack.lab.democlient probe CONFIG_FILE OUT NAME [INTERVAL]``: only the
probe NAME, every INTERVAL seconds (default 0.05), until SIGTERM (the hamon
benchmark's ``postgresql`` every 20 ms: a fresh connection per try).

Events go to OUT, one JSON object a line, flushed at once: ``{"k": "ack",
"id": N, "t": WALL}`` per acknowledged row, ``{"k": "doubt", "id": N, "t":
WALL, "why": ...}`` per row in doubt, ``{"k": "down", "t": WALL, "why": ...}``
when the writer's connects start failing (no row sent), ``{"k": "probe", "name": ...,
"ok": bool, "t": WALL, "done": WALL, "why": ...}`` whenever a probe's answer changes
(``t`` when the try began, ``done`` when it was answered or failed).

``python -m hapack.lab.democlient verify CONFIG_FILE``: prints ``{"rows": [ids]}``,
every id in the table.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

INTERVAL = 0.05
TIMEOUT = 0.5            # one probe's answer
CONNECT_TIMEOUT = 0.15   # one probe's TCP connect (the LAN answers in well under 1 ms)
REQUEST_TIMEOUT = 1.0    # one INSERT, from the moment it is sent
CONNECT_PG_TIMEOUT = 1.0  # the writer's connect and login (SCRAM)


class Out:
    def __init__(self, path: str):
        self.handle = open(path, "a", encoding="utf-8", buffering=1)
        self.lock = threading.Lock()

    def emit(self, **event) -> None:
        event.setdefault("t", time.time())
        with self.lock:
            self.handle.write(json.dumps(event) + "\n")


def pg(cfg: dict, timeout: float = 1.0):
    from hapack.ocf._pgwire import PgConnection
    return PgConnection((cfg["vip"], cfg["pg_port"]), "postgres", "postgres",
                        cfg["pg_password"], timeout)


def request(conn, sql: str, timeout: float | None = None):
    """One query on ``conn`` with its own timeout, counted from now. (The wire's single
    deadline is set at the connect, for the agents' one-shot checks; a long-lived
    connection must re-arm it per request, or every query after the first second
    fails as 'no answer in time' on a healthy server.)"""
    conn.wire.end = time.monotonic() + (REQUEST_TIMEOUT if timeout is None else timeout)
    return conn.query(sql)


def connect_writer(cfg: dict, table: str):
    conn = pg(cfg, CONNECT_PG_TIMEOUT)
    try:
        request(conn, f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, "
                      "at timestamptz NOT NULL DEFAULT now())", CONNECT_PG_TIMEOUT)
    except BaseException:
        conn.wire.close()
        raise
    return conn


def commit_rows(cfg: dict, out: Out, stop: threading.Event) -> None:
    from hapack.probe import ProbeError
    conn, next_id, table, down = None, 1, cfg["table"], False
    while not stop.is_set():
        if conn is None:
            try:
                conn, down = connect_writer(cfg, table), False
            except (ProbeError, OSError) as exc:
                if not down:  # nothing sent: no id in doubt; one event per outage
                    out.emit(k="down", why=str(exc)[:200])
                down = True
                stop.wait(0.05)
                continue
        row, next_id = next_id, next_id + 1
        try:
            request(conn, f"INSERT INTO {table} (id) VALUES ({row})")
        except (ProbeError, OSError) as exc:
            out.emit(k="doubt", id=row, why=str(exc)[:200])
            conn.wire.close()
            conn = None
            stop.wait(0.05)
            continue
        out.emit(k="ack", id=row)
        stop.wait(0.02)


def http_get(host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
    """(status, body) of one GET. The connect gets a short timeout of its own
    (CONNECT_TIMEOUT), so a try that started while the VIP was still on its way does not
    hide for ``timeout`` the moment it answers; the answer gets ``timeout``.
    (Not hapack.probe.http_get: that one fails on every answer of a 'Connection: close'
    request, as http.client drops conn.sock once the response owns it.)"""
    import http.client
    import socket
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        conn.sock.settimeout(timeout)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(65536).decode("utf-8", errors="replace")
    finally:
        conn.close()


def check_http(cfg: dict) -> str:
    status, body = http_get(cfg["vip"], cfg["http_port"], cfg["path"], TIMEOUT)
    if status != 200 or not body.startswith("APP OK"):
        raise RuntimeError(f"HTTP {status}: {body.strip()[:120]}")
    return body.strip()


def check_postgresql(cfg: dict) -> str:
    with pg(cfg, TIMEOUT) as conn:
        conn.query("SELECT 1")
    return "SELECT 1"


def check_slapd(cfg: dict) -> str:
    from hapack.ocf._ldapwire import Ldap
    client = Ldap(f"ldap://{cfg['vip']}:{cfg['ldap_port']}/", TIMEOUT)
    try:
        client.bind()
        client.read(cfg.get("ldap_suffix", "dc=hapack,dc=lab"))
    finally:
        client.close()
    return "search"


def check_activemq(cfg: dict) -> str:
    from hapack.ocf._stomp import Stomp
    client = Stomp(cfg["vip"], cfg["stomp_port"], TIMEOUT)
    try:
        client.connect()
    finally:
        client.close()
    return "CONNECTED"


def check_app_db(cfg: dict) -> str:
    body = check_http(cfg)
    if not body.endswith("db=up"):
        raise RuntimeError(f"the app does not reach the database: {body}")
    return body


CHECKS = {"http": check_http, "app+db": check_app_db, "postgresql": check_postgresql, "slapd": check_slapd,
          "activemq": check_activemq}


PORTS = {"http": "http_port", "app+db": "http_port", "postgresql": "pg_port",
         "slapd": "ldap_port", "activemq": "stomp_port"}


def reach(cfg: dict, name: str) -> None:
    """A TCP connect with the short CONNECT_TIMEOUT before the protocol check (whose
    client connects with the longer TIMEOUT), for the same reason as in http_get."""
    import socket
    socket.create_connection((cfg["vip"], cfg[PORTS[name]]), timeout=CONNECT_TIMEOUT).close()


def probe_loop(name: str, cfg: dict, out: Out, stop: threading.Event,
               interval: float = INTERVAL) -> None:
    check, last = CHECKS[name], None
    while not stop.is_set():
        began = time.time()
        try:
            if name not in ("http", "app+db"):
                reach(cfg, name)
            detail, ok = check(cfg), True
        except Exception as exc:  # any failure is the answer "down"
            detail, ok = f"{type(exc).__name__}: {exc}"[:200], False
        if ok != last:
            out.emit(k="probe", name=name, ok=ok, t=began, done=time.time(), why=detail)
            last = ok
        stop.wait(max(0.0, interval - (time.time() - began)))


def run(cfg: dict, path: str, only: str | None = None, interval: float = INTERVAL) -> int:
    """The writer and every probe; with ``only``, that probe alone, every ``interval``."""
    out, stop = Out(path), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [] if only else [threading.Thread(target=commit_rows, args=(cfg, out, stop),
                                                daemon=True)]
    threads += [threading.Thread(target=probe_loop, args=(name, cfg, out, stop, interval),
                                 daemon=True) for name in ([only] if only else CHECKS)]
    for thread in threads:
        thread.start()
    out.emit(k="started")
    while not stop.is_set():
        stop.wait(0.5)
    for thread in threads:
        thread.join(timeout=5)
    out.emit(k="stopped")
    return 0


def verify(cfg: dict) -> int:
    with pg(cfg, 10.0) as conn:
        rows = conn.query(f"SELECT id FROM {cfg['table']} ORDER BY id")
    print(json.dumps({"rows": [int(r[0]) for r in rows]}))
    return 0


def main(argv: list[str]) -> int:
    command = argv[0]
    with open(argv[1], encoding="utf-8") as handle:  # a root-only file: it holds a password
        cfg = json.load(handle)
    if command == "run":
        return run(cfg, argv[2])
    if command == "probe" and len(argv) in (4, 5) and argv[3] in CHECKS:
        return run(cfg, argv[2], argv[3], float(argv[4]) if len(argv) == 5 else INTERVAL)
    if command == "verify":
        return verify(cfg)
    print("usage: democlient run CONFIG OUT | probe CONFIG OUT NAME [INTERVAL] | "
          "verify CONFIG", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
