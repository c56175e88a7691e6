"""ocf:hapack:slapd -- an OpenLDAP server whose databases are on the replicated partition.

Start refuses a data directory that is not on a mounted, writable file
system, or a configuration with a database outside it; runs slapd in the
foreground (``-d``, so its log goes to a file: no syslog runs on the
nodes) as a background daemon with its own pid file, dropping to the
service user; returns once every configured suffix answers a base search.
Stop is SIGTERM (slapd shuts down cleanly), then KILL.

Monitor levels: 0 the slapd of this configuration alive and listening on
its ldap:// ports and ldapi:// sockets; 10 a base search of each suffix;
20 a probe entry added, read back and deleted. The client is built in (no
ldapsearch child); the bind password comes from a root-only file.
"""

from __future__ import annotations

import os

from hapack.ocf import Agent, ConfigError, GenericError, NotInstalled, Param
from hapack.ocf import _daemon as d
from hapack.ocf._service import (CLEAN_ENV, check_node, checked, client_timeout,
                                 common_params, log_path, pid_path, prepare_dirs,
                                 require_executable, run_path, start_server)
from hapack.ocf._ldapwire import ldapi_path, tcp_port
from hapack.ocf._slapd_conf import databases, run_files
from hapack.ocf._service import ServiceParams

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.ocf.runner import Context
    from hapack.ocf._daemon import Server

NAME = "slapd"


def services(text: str) -> tuple[str, ...]:
    urls = text.split()
    for url in urls:
        if not url.startswith(("ldap://", "ldapi://", "ldaps://")):
            raise ValueError(f"{url!r} is not an ldap://, ldaps:// or ldapi:// URL")
    if not any(url.startswith(("ldap://", "ldapi://")) for url in urls):
        raise ValueError("needs an ldap:// or ldapi:// URL for the monitor")
    return tuple(urls)


PARAMS = (
    Param("config", "Configuration",
          "slapd.conf (a file: -f) or a cn=config directory (-F) of this instance.",
          required=True, unique=True, check=d.absolute_path),
    Param("data_dir", "Data directory",
          "Directory on the replicated partition that holds every database directory of "
          "the configuration. Start refuses it when it is not on a mounted file system "
          "writable by the service user, and validate refuses a database outside it.",
          required=True, unique=True, check=d.absolute_path),
    Param("services", "Listener URLs",
          "slapd -h: space-separated ldap://, ldaps:// and ldapi:// URLs. The monitor uses "
          "the first ldap:// or ldapi:// one.", default="ldap://127.0.0.1:389/", check=services),
    Param("slapd", "slapd binary", "Path of slapd.", default="/usr/sbin/slapd",
          check=d.absolute_path),
    Param("group", "Service group", "Group slapd runs as (-g).", default="openldap"),
    Param("log_level", "Log level", "slapd -d level written to the instance's log file.",
          default="stats"),
    Param("bind_dn", "Monitor bind DN",
          "DN the monitor binds as (password from credentials_file). Unset: anonymous "
          "searches; level 20 needs a DN that may add and delete below probe_parent."),
    Param("probe_parent", "Level-20 probe parent",
          "DN under which level 20 adds and deletes its probe entry. Unset: the first "
          "suffix."),
) + common_params("openldap")


class Params(ServiceParams):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    config: str
    data_dir: str
    services: tuple[str, ...]
    slapd: str
    group: str
    log_level: str
    bind_dn: str | None
    probe_parent: str | None


# -- the configuration ----------------------------------------------------------------

def _suffixes(ctx):
    try:
        found = databases(ctx.params.config)
    except OSError as exc:
        raise NotInstalled(f"cannot read config {ctx.params.config}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"config {ctx.params.config}: {exc}") from None
    if not found:
        raise ConfigError(f"config {ctx.params.config} defines no database suffix to serve")
    return found


# -- the running server -------------------------------------------------------------

def server(ctx: Context[Params]) -> Server:
    """The instance; its pid file is the agent's own (written before slapd drops its
    privileges), not the configuration's pidfile, which slapd writes as the user.
    Level 0 requires the first TCP listener; _listening checks the others."""
    p = ctx.params
    ports = [tcp_port(url) for url in p.services if not url.startswith("ldapi:")]
    return d.Server(ctx, pid_path(ctx), exe=p.slapd, marker=p.config,
                    port=ports[0] if ports else None, log=log_path(ctx, "slapd.log"),
                    what="slapd")


def _listening(ctx):
    """Level 0 beyond _daemon's check: the ldapi:// sockets and further TCP listeners."""
    urls = ctx.params.services
    for url in urls:
        if url.startswith("ldapi://") and not os.path.exists(ldapi_path(url)):
            raise GenericError(f"slapd has no socket for {url}")
    ports = {tcp_port(url) for url in urls if not url.startswith("ldapi:")}
    if len(ports) > 1:
        from hapack.procfs import listening_ports
        pid = server(ctx).pid()
        missing = sorted(ports - listening_ports([pid]))
        if pid and missing:
            raise GenericError(f"slapd (pid {pid}) is not listening on port "
                               f"{', '.join(map(str, missing))}")


def _client(ctx):
    from hapack.ocf._ldapwire import Ldap
    p = ctx.params
    url = next(u for u in p.services if u.startswith(("ldap://", "ldapi://")))
    client = Ldap(url, client_timeout(ctx))
    if p.bind_dn:
        from hapack.ocf._secret import read_secret
        client.bind(p.bind_dn, read_secret(p.credentials_file) if p.credentials_file else "")
    return client


def _search(ctx):
    """Level 10: a base search of every suffix."""
    def search():
        client = _client(ctx)
        try:
            for suffix, _ in _suffixes(ctx):
                client.read(suffix)
            client.unbind()
        finally:
            client.close()
    checked(ctx, search)


def _probe(ctx):
    """Level 20: add, read back and delete an entry."""
    import time
    from hapack.ocf._ldapwire import ALREADY_EXISTS, NO_SUCH_OBJECT, SUCCESS
    p = ctx.params
    if not p.bind_dn:
        raise ConfigError("the level-20 monitor writes an entry: set bind_dn and credentials_file")
    dn = f"cn=hapack-probe-{ctx.instance},{p.probe_parent or _suffixes(ctx)[0][0]}"
    token = f"{ctx.node} {time.time_ns()}"
    entry = {"objectClass": ["organizationalRole"], "cn": [f"hapack-probe-{ctx.instance}"],
             "description": [token]}

    def probe():
        client = _client(ctx)
        try:
            code, diag = client.add(dn, entry)
            if code == ALREADY_EXISTS:  # left by an interrupted probe
                client.delete(dn)
                code, diag = client.add(dn, entry)
            if code != SUCCESS:
                raise GenericError(f"cannot add the probe entry {dn}: result {code} {diag}")
            if client.read(dn, ("description",)).get("description") != [token]:
                raise GenericError(f"the probe entry {dn} reads back differently")
            code, diag = client.delete(dn)
            if code not in (SUCCESS, NO_SUCH_OBJECT):
                raise GenericError(f"cannot delete the probe entry {dn}: result {code} {diag}")
            client.unbind()
        finally:
            client.close()
    checked(ctx, probe)


CHECKS = {0: _listening, 10: _search, 20: _probe}


def monitor(ctx: Context[Params]) -> int:
    return server(ctx).monitor(CHECKS)


# -- start and stop ---------------------------------------------------------------------

def command(ctx: Context[Params]) -> list[str]:
    p = ctx.params
    return [p.slapd, "-d", p.log_level, "-u", p.user, "-g", p.group,
            "-F" if os.path.isdir(p.config) else "-f", p.config, "-h", " ".join(p.services)]


def start(ctx: Context[Params]) -> None:
    srv = server(ctx)

    def launch() -> None:
        from hapack.ocf._datadir import create_file, os_errors
        # start-stop-daemon opens the log as root (slapd drops to the user itself):
        # the log directory is root's alone, so no one else can plant a link there
        prepare_dirs(ctx, log_user="root")
        with os_errors("cannot set up"):
            create_file(srv.log, root_only=True)
        d.spawn(ctx, command(ctx), srv.pidfile, srv.log, env=dict(CLEAN_ENV), cwd=run_path(ctx))

    start_server(srv, launch, CHECKS)


def stop(ctx: Context[Params]) -> None:
    import signal
    server(ctx).stop(graceful=signal.SIGTERM, graceful_timeout=ctx.deadline.left() * 0.8)
    _remove_leftovers(ctx)


def _remove_leftovers(ctx):
    """What a killed slapd leaves: its ldapi sockets, and its own pid and args files
    when the pid they name is gone (such a file may be another slapd's)."""
    from hapack.procfs import alive, read_pidfile
    paths = [ldapi_path(url) for url in ctx.params.services if url.startswith("ldapi://")]
    try:
        files = run_files(ctx.params.config)
    except (OSError, ValueError):
        files = []
    if not any(alive(read_pidfile(path)) for path in files):
        paths += files
    from hapack.ocf._datadir import remove_file
    for path in paths:
        if os.path.lexists(path):
            remove_file(path)
            ctx.log.info(f"removed the stale {path}")


def validate(ctx: Context[Params]) -> None:
    p = ctx.params
    if p.bind_dn and not p.credentials_file:
        raise ConfigError("bind_dn needs credentials_file (the bind password)")
    if ctx.action != "start" and ctx.check_level < 10:
        return
    require_executable(p.slapd, "slapd")
    import grp
    try:
        grp.getgrnam(p.group)
    except KeyError:
        raise NotInstalled(f"group {p.group} does not exist on this node") from None
    if not os.path.exists(p.config):
        raise NotInstalled(f"config {p.config} does not exist on this node")
    from hapack.ocf._datadir import inside
    for suffix, folder in _suffixes(ctx):
        if folder and not inside(folder, p.data_dir):
            raise ConfigError(f"the database of {suffix} is in {folder}, outside data_dir "
                              f"{p.data_dir}: it would not fail over with the partition")
    check_node(ctx, p.data_dir, "data_dir")


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="OpenLDAP slapd with its databases on the replicated partition",
    longdesc=("Runs slapd for one configuration (slapd.conf or cn=config) whose databases "
              "live in data_dir on the replicated partition, logging to a node-local file. "
              "Start refuses an unmounted data_dir and returns once every suffix answers. "
              "Monitor: level 0 process, ports and sockets; level 10 a base search of each "
              "suffix; level 20 a probe entry added, read and deleted (bind password from a "
              "root-only file, never on a command line). Stop: SIGTERM, then KILL."),
    params=PARAMS,
    values=Params,
    actions=d.server_actions(start, stop, monitor, start_timeout=30, stop_timeout=30),
    validate=validate,
)


def main() -> None:
    AGENT.run()


if __name__ == "__main__":
    main()
