"""ocf:hapack:postgresql -- a PostgreSQL cluster whose PGDATA is on the replicated partition.

Start refuses a PGDATA that is not on a mounted, writable file system (the
partition is not mounted here) and runs ``pg_ctl start`` as the service user
with this instance's port and a node-local socket directory; it returns
once ``SELECT 1`` answers. Stop is ``pg_ctl -m fast``, then ``-m
immediate``, then TERM and KILL of every process working in PGDATA.

The instance is ``_daemon.Server`` with PostgreSQL's own identity: a
postgres process whose working directory is PGDATA. That rejects a
postmaster.pid naming a pid that belongs to another cluster here (the file
travels with the partition), and finds backends orphaned by a killed
postmaster (each runs in its own session).

The monitor speaks the protocol itself over the unix socket (no psql, the
password read from a root-only file): level 0 the postmaster alive and
listening, level 10 ``SELECT 1``, level 20 a row written, read back and
deleted in a probe table.
"""

from __future__ import annotations

import os

from hapack.ocf import Agent, GenericError, NotInstalled, Param
from hapack.ocf import _daemon as d
from hapack.params import with_aliases
from hapack.ocf._service import (CLEAN_ENV, as_user, check_node, checked,
                                 client_timeout, common_params, log_path, plain_path,
                                 prepare_dirs, require_executable, run_path, start_server)
from hapack.ocf._service import ServiceParams

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from hapack.ocf.runner import Context

NAME = "postgresql"
LOG = "postgresql.log"


def shell_free_path(text: str) -> str:
    """A path pg_ctl may put between double quotes in the shell command it runs."""
    text = plain_path(text)
    if any(char in text for char in '"$`\\'):
        raise ValueError(f"{text!r} contains a character the shell expands between double "
                         "quotes (\", $, ` or \\): pg_ctl runs the server through a shell")
    return text


def identifier(text: str) -> str:
    import re
    if not re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?", text):
        raise ValueError(f"{text!r} is not a plain lower-case SQL name (schema.table allowed)")
    return text


def _pgctl_dir(path: str) -> str:
    """pgsql's pgctl (the pg_ctl program) -> bindir (its directory)."""
    return os.path.dirname(path.rstrip("/")) or path


# resource-agents' pgsql names (deprecated aliases): README "Migrating from the stock agents"
STOCK_NAMES = {"bindir": (("pgctl",), {"pgctl": _pgctl_dir}), "user": ("pgdba",),
               "port": ("pgport",), "database": ("pgdb",)}

PARAMS = with_aliases((
    Param("pgdata", "Data directory (PGDATA)",
          "The cluster's data directory, on the replicated partition (a subdirectory of the "
          "mount, owned by the service user, mode 0700). Start refuses it when it is not on "
          "a mounted, writable file system.", required=True, unique=True,
          check=plain_path),
    Param("bindir", "PostgreSQL binaries", "Directory with pg_ctl and postgres.",
          default="/usr/lib/postgresql/15/bin", check=shell_free_path),
    Param("config", "postgresql.conf outside PGDATA",
          "Path of postgresql.conf when it is not in PGDATA (passed as -c config_file=).",
          check=plain_path),
    Param("listen_address", "TCP listen addresses",
          "listen_addresses of the server (comma-separated; the monitor uses the unix socket).",
          default="127.0.0.1"),
    Param("port", "Port", "TCP port, also the number of the unix socket.", kind="integer",
          default=5432, minimum=1, maximum=65535, unique=True),
    Param("options", "Extra server options",
          "More postgres options, e.g. '-c shared_buffers=64MB', split like a shell would "
          "(quotes group, nothing is expanded) and each word quoted for pg_ctl -o, so no "
          "part of it ever runs as a command; no secrets here.", check=d.split_options),
    Param("database", "Monitor database", "Database the monitor connects to.",
          default="postgres"),
    Param("monitor_user", "Monitor role",
          "Role the monitor logs in as, over the unix socket with the service user's ids "
          "(so peer authentication sees user; a password, if the server asks, from "
          "credentials_file). "
          "Level 20 needs it to create and write the probe table.", default="postgres"),
    Param("probe_table", "Level-20 probe table",
          "Table the level-20 monitor writes one row to, reads it back and deletes it; "
          "created when missing.", default="hapack_probe", check=identifier),
) + common_params("postgres"), STOCK_NAMES)


class Params(ServiceParams):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    pgdata: str
    bindir: str
    config: str | None
    listen_address: str
    port: int
    options: tuple[str, ...] | None
    database: str
    monitor_user: str
    probe_table: str


# -- the running server --------------------------------------------------------

def _cwd_is(pid, folder):
    try:
        return os.readlink(f"/proc/{pid}/cwd") == folder
    except OSError:
        return False


class Postmaster(d.Server):
    """``_daemon.Server`` with PostgreSQL's own notion of "this instance's process":
    a postgres process working in PGDATA (its cwd). A postmaster.pid that came with
    the partition may name a pid that is another cluster's postgres here; and the
    backends, each in its own session, are found by their cwd when orphaned."""

    def __init__(self, ctx, **kwargs):
        self.pgdata = os.path.realpath(ctx.params.pgdata)
        super().__init__(ctx, os.path.join(ctx.params.pgdata, "postmaster.pid"), **kwargs)

    def _is_ours(self, pid):
        return super()._is_ours(pid) and _cwd_is(pid, self.pgdata)

    def leftovers(self, exclude: Iterable[int] = ()) -> list[int]:
        from hapack.procfs import alive, exe, holders
        return [pid for pid, _, how in holders(self.pgdata)
                if how == "cwd" and pid not in exclude and alive(pid)
                and (exe(pid) or "").removesuffix(" (deleted)") == self.exe]


def server(ctx: Context[Params]) -> Postmaster:
    p = ctx.params
    return Postmaster(ctx, exe=os.path.join(p.bindir, "postgres"), port=p.port,
                      log=log_path(ctx, LOG), what="PostgreSQL")


def _socket(ctx):
    return run_path(ctx, f".s.PGSQL.{ctx.params.port}")


def _connect(ctx):
    from hapack.ocf._pgwire import PgConnection
    from hapack.ocf._secret import read_secret
    from hapack.ocf._service import account
    p = ctx.params
    password = read_secret(p.credentials_file) if p.credentials_file else None
    entry = account(p.user)  # peer authentication sees the service user, as with psql
    return PgConnection(_socket(ctx), p.monitor_user, p.database, password, client_timeout(ctx),
                        peer=(entry.pw_uid, entry.pw_gid))


def _select_one(ctx):
    with _connect(ctx) as conn:
        if conn.query("SELECT 1") != [["1"]]:
            raise GenericError("SELECT 1 did not return 1")


def _write_probe(ctx):
    """Insert, read back and delete one row (a committed write through the WAL)."""
    import time
    from hapack.ocf._pgwire import PgError, literal
    table = ctx.params.probe_table
    token = literal(f"{ctx.node} {ctx.instance} {time.time_ns()}")
    insert = f"INSERT INTO {table} (token) VALUES ({token})"
    with _connect(ctx) as conn:
        try:
            conn.query(insert)
        except PgError as exc:
            if exc.sqlstate != "42P01":  # undefined_table
                raise
            conn.query(f"CREATE TABLE IF NOT EXISTS {table} (token text PRIMARY KEY, "
                       "written timestamptz NOT NULL DEFAULT now())")
            conn.query(insert)
        if conn.query(f"SELECT count(*) FROM {table} WHERE token = {token}") != [["1"]]:
            raise GenericError(f"the probe row written to {table} cannot be read back")
        conn.query(f"DELETE FROM {table} WHERE token = {token} "
                   "OR written < now() - interval '1 hour'")


def _select_check(ctx):
    checked(ctx, lambda: _select_one(ctx))


def _write_check(ctx):
    checked(ctx, lambda: _write_probe(ctx))


CHECKS = {10: _select_check, 20: _write_check}


def monitor(ctx: Context[Params]) -> int:
    return server(ctx).monitor(CHECKS)


# -- start and stop --------------------------------------------------------------

def _server_options(ctx):
    """The postgres options for pg_ctl -o, which pastes them into a shell command:
    every word quoted, the operator's options as words too."""
    import shlex
    p = ctx.params
    opts = ["-p", str(p.port), "-k", run_path(ctx), "-c", f"listen_addresses={p.listen_address}"]
    if p.config:
        opts += ["-c", f"config_file={p.config}"]
    return " ".join(map(shlex.quote, [*opts, *(p.options or ())]))


def _pg_ctl(ctx, *args):
    p = ctx.params
    return as_user(p.user, [os.path.join(p.bindir, "pg_ctl"), *args, "-D", p.pgdata])


def _pg_ctl_start(ctx, seconds):
    """pg_ctl start runs the server through ``sh -c``, with -D and -l between double
    quotes: PGDATA goes in the environment instead (pg_ctl then passes no -D), and
    the log by a plain name relative to the log directory pg_ctl is started in."""
    p = ctx.params
    return as_user(p.user, ["/usr/bin/env", f"PGDATA={p.pgdata}",
                            os.path.join(p.bindir, "pg_ctl"), "start", "-w", "-t", str(seconds),
                            "-l", LOG, "-o", _server_options(ctx)])


def start(ctx: Context[Params]) -> None:
    srv = server(ctx)

    def launch() -> None:
        prepare_dirs(ctx)
        _remove_socket(ctx)
        seconds = max(1, int(ctx.deadline.left()))
        result = ctx.run(_pg_ctl_start(ctx, seconds), env=dict(CLEAN_ENV), cwd=log_path(ctx))
        if not result.ok:
            raise GenericError(f"pg_ctl start failed: {d.tail(srv.log) or result.output()}")

    start_server(srv, launch, CHECKS)


def _pg_ctl_stop(ctx, pid):
    """The graceful part: pg_ctl stop -m fast, then -m immediate, in half the time left."""
    from hapack.command import CommandError
    budget = ctx.deadline.left() * 0.5
    for mode, share in (("fast", 0.6), ("immediate", 1.0)):
        seconds = max(1, int(budget * share))
        try:
            result = ctx.run(_pg_ctl(ctx, "stop", "-m", mode, "-w", "-t", str(seconds)),
                             timeout=seconds + 1, env=dict(CLEAN_ENV))
            if result.ok:
                return
            ctx.log.warning(f"pg_ctl stop -m {mode}: {result.output()}")
        except CommandError as exc:
            ctx.log.warning(f"pg_ctl stop -m {mode}: {exc}")
        budget = ctx.deadline.left() * 0.5


def _remove_socket(ctx):
    """A killed postmaster leaves its socket and the socket's lock file (naming a pid
    that may linger as a zombie, which PostgreSQL takes for a live postmaster)."""
    from hapack.ocf._datadir import remove_file
    for path in (_socket(ctx), _socket(ctx) + ".lock"):
        if os.path.lexists(path):
            remove_file(path)
            ctx.log.info(f"removed the stale {path}")


def stop(ctx: Context[Params]) -> None:
    server(ctx).stop(graceful=_pg_ctl_stop, graceful_timeout=ctx.deadline.left())
    _remove_socket(ctx)


def validate(ctx: Context[Params]) -> None:
    p = ctx.params
    if ctx.action == "start" or ctx.check_level >= 10:
        require_executable(os.path.join(p.bindir, "pg_ctl"), "pg_ctl")
        require_executable(os.path.join(p.bindir, "postgres"), "postgres")
        if p.config and not os.path.isfile(p.config):
            raise NotInstalled(f"config {p.config} does not exist on this node")
        check_node(ctx, p.pgdata, "PGDATA")
    if ctx.action == "start":
        if not os.path.isfile(os.path.join(p.pgdata, "PG_VERSION")):
            raise NotInstalled(f"PGDATA {p.pgdata} is not an initialized cluster (no "
                               "PG_VERSION): run initdb there once, on the partition")


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="PostgreSQL with its data on the replicated partition",
    longdesc=("Runs one PostgreSQL cluster whose PGDATA is on the replicated partition, as the "
              "service user, with its own port and a node-local socket directory. Start "
              "refuses an unmounted PGDATA and returns once SELECT 1 answers; stop is pg_ctl "
              "-m fast, then -m immediate, then KILL of every process of the cluster. "
              "Monitor (PostgreSQL protocol spoken by the agent over the unix socket, password "
              "from a root-only file): level 0 the postmaster of this PGDATA alive and "
              "listening, level 10 SELECT 1, level 20 a row written, read back and deleted."),
    params=PARAMS,
    values=Params,
    actions=d.server_actions(start, stop, monitor, start_timeout=60),
    validate=validate,
)


def main() -> None:
    AGENT.run()


if __name__ == "__main__":
    main()
