"""ocf:hapack:activemq -- an ActiveMQ 5 broker whose KahaDB store is on the replicated partition.

There is no upstream agent for ActiveMQ. This one runs the broker's Java
main directly (not Debian's /usr/bin/activemq, which forces its own base
directory and heap) with a per-instance activemq.xml, data directory and
ports, as the service user, with a clean environment.

A broker that finds its KahaDB store locked by another broker does not
fail: it waits silently in slave mode, alive but deaf. Start therefore
waits for the level-10 check, not for the process, fails at once when the
log shows the lock wait (naming the holder from /proc/locks), and fails at
the deadline otherwise, stopping the broker it started either way.

Monitor levels: 0 the JVM of this instance alive and listening on
its ports; 10 a STOMP CONNECT/CONNECTED round trip; 20 a persistent
message sent to a probe queue and received back through the store.
Stop is SIGTERM (the broker's shutdown hook stops it cleanly), then KILL.
"""

from __future__ import annotations

import os

from hapack.ocf import Agent, ConfigError, GenericError, NotInstalled, Param
from hapack.ocf import _daemon as d
from hapack.ocf._activemq_conf import check_config, generated_config, log4j_properties
from hapack.ocf._service import (CLEAN_ENV, Final, check_node, checked, client_timeout,
                                 common_params, file_size, log_path, logged,
                                 pid_path, prepare_dirs, read_since, require_executable,
                                 run_path,
                                 start_server)
from hapack.ocf._service import ServiceParams

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.ocf.runner import Context
    from hapack.ocf._daemon import Server

NAME = "activemq"
LOCKED = "is locked by another server"
JVM_FLAGS = (  # what /usr/bin/activemq passes on Java > 8
    "--add-reads=java.xml=java.logging",
    "--add-opens=java.base/java.security=ALL-UNNAMED", "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED", "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.naming/javax.naming.spi=ALL-UNNAMED",
    "--add-opens=java.rmi/sun.rmi.transport.tcp=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED")


def name(text: str) -> str:
    if not text or not all(c.isalnum() or c in "._-" for c in text):
        raise ValueError(f"{text!r} may hold only letters, digits, '.', '_' and '-'")
    return text


PARAMS = (
    Param("data_dir", "Broker data directory (activemq.data)",
          "KahaDB and the broker's temporary store, on the replicated partition. Start "
          "refuses it when it is not on a mounted file system writable by the service user.",
          required=True, unique=True, check=d.absolute_path),
    Param("config", "activemq.xml",
          "The broker's own activemq.xml. It must declare a stomp:// connector on stomp_port "
          "and keep its stores under data_dir (or ${activemq.data}). Unset: the agent writes "
          "one from broker_name, bind_address, openwire_port and stomp_port.",
          check=d.absolute_path),
    Param("broker_name", "Broker name", "brokerName of the generated configuration.",
          default="hapack", check=name),
    Param("bind_address", "Listen address", "Address the connectors listen on.",
          default="127.0.0.1"),
    Param("openwire_port", "OpenWire port",
          "Port of the OpenWire (JMS) connector; 0: none.", kind="integer", default=61616,
          minimum=0, maximum=65535),
    Param("stomp_port", "STOMP port", "Port of the STOMP connector the monitor talks to.",
          kind="integer", default=61613, minimum=1, maximum=65535, unique=True),
    Param("java", "Java binary", "The java executable.", default="/usr/bin/java",
          check=d.absolute_path),
    Param("java_opts", "JVM options", "Options for the JVM, e.g. heap sizes.",
          default="-Xms64m -Xmx512m"),
    Param("activemq_home", "ActiveMQ installation", "Directory with bin/activemq.jar and lib/.",
          default="/usr/share/activemq", check=d.absolute_path),
    Param("broker_user", "Monitor login",
          "STOMP login of the monitor (password from credentials_file) when the broker "
          "requires authentication. Unset: anonymous."),
    Param("probe_queue", "Level-20 probe queue",
          "Queue the level-20 monitor sends a persistent message to and receives it from.",
          default="hapack.probe", check=name),
) + common_params("activemq")


class Params(ServiceParams):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    data_dir: str
    config: str | None
    broker_name: str
    bind_address: str
    openwire_port: int
    stomp_port: int
    java: str
    java_opts: str
    activemq_home: str
    broker_user: str | None
    probe_queue: str


# -- the running broker ---------------------------------------------------------

def server(ctx: Context[Params], port: bool = True) -> Server:
    """The broker; level 0 requires its STOMP port, except during start (port=False),
    where the lock-wait check must come before any port check."""
    p = ctx.params
    return d.Server(ctx, pid_path(ctx), exe=p.java,
                    port=p.stomp_port if port else None,
                    marker=f"-Dactivemq.base={run_path(ctx)}", what="the broker")


def _listening(ctx, ports=None):
    """Level 0 beyond _daemon's check: the OpenWire port (a broker waiting for its
    store lock is alive but opens no port)."""
    from hapack.procfs import listening_ports
    p = ctx.params
    ports = set(filter(None, ports or (p.openwire_port,)))
    pid = server(ctx).pid()
    missing = sorted(ports - listening_ports([pid])) if pid and ports else []
    if missing:
        raise GenericError(f"the broker (pid {pid}) is running but not listening on port "
                           f"{', '.join(map(str, missing))}")


def _stomp(ctx, queue=None):
    from hapack.ocf._stomp import Stomp
    p = ctx.params
    host = "127.0.0.1" if p.bind_address in ("0.0.0.0", "::") else p.bind_address
    login = passcode = None
    if p.broker_user:
        from hapack.ocf._secret import read_secret
        login = p.broker_user
        passcode = read_secret(p.credentials_file) if p.credentials_file else ""
    client = Stomp(host, p.stomp_port, client_timeout(ctx))
    try:
        client.connect(login, passcode)
        if queue:
            import time
            body = f"hapack probe {ctx.node} {ctx.instance} {time.time_ns()}".encode()
            stale = client.round_trip(queue, body)
            if stale:
                ctx.log.info(f"drained {stale} stale probe message(s) from {queue}")
        client.disconnect()
    finally:
        client.close()


def _connect_check(ctx):
    checked(ctx, lambda: _stomp(ctx))


def _message_check(ctx):
    checked(ctx, lambda: _stomp(ctx, ctx.params.probe_queue))


CHECKS = {0: _listening, 10: _connect_check, 20: _message_check}


def monitor(ctx: Context[Params]) -> int:
    return server(ctx).monitor(CHECKS)


# -- configuration -----------------------------------------------------------------

def _write_config(ctx):
    """The config to start with: the operator's, or one generated; plus log4j 1.2.
    The conf directory is root's, mode 0755, and the files 0644 whatever the umask
    (pacemaker-execd's 0026 would leave them unreadable to the broker's user)."""
    from hapack.ocf._datadir import ensure_dir, write_file
    p = ctx.params
    conf = ensure_dir(run_path(ctx, "conf"), "root", 0o755, always=True)
    write_file(os.path.join(conf, "log4j.properties"),
               log4j_properties(log_path(ctx, "activemq.log")).encode())
    if p.config:
        return p.config
    path = os.path.join(conf, "activemq.xml")
    write_file(path, generated_config(p.broker_name, p.data_dir, p.bind_address,
                                      p.openwire_port, p.stomp_port))
    return path


def command(ctx: Context[Params], config: str) -> list[str]:
    import shlex
    p = ctx.params
    conf, tmp = run_path(ctx, "conf"), run_path(ctx, "tmp")
    return [p.java, *shlex.split(p.java_opts), *JVM_FLAGS,
            f"-Dactivemq.classpath={conf}", f"-Dactivemq.home={p.activemq_home}",
            f"-Dactivemq.base={run_path(ctx)}", f"-Dactivemq.conf={conf}",
            f"-Dactivemq.data={p.data_dir}",
            f"-Djava.io.tmpdir={tmp}", f"-Dlog4j.configuration=file:{conf}/log4j.properties",
            "-jar", os.path.join(p.activemq_home, "bin", "activemq.jar"), "start",
            f"xbean:file:{config}"]


# -- start and stop --------------------------------------------------------------------

def lock_holder(lockfile: str) -> int | None:
    """The pid holding a POSIX or flock lock on lockfile, from /proc/locks, or None."""
    try:
        inode = str(os.stat(lockfile).st_ino)
        with open("/proc/locks", encoding="ascii") as handle:
            for fields in (line.split() for line in handle):
                if len(fields) > 5 and fields[1] != "->" and fields[5].rsplit(":", 1)[-1] == inode:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


def lock_wait(text: str) -> None:
    """Final when the broker's log (since launch) shows it waiting for the store lock."""
    import re
    found = re.search(r"Database (\S+) " + LOCKED, text)
    if found is None:
        return
    holder = lock_holder(found.group(1))
    raise Final(GenericError(f"the store lock {found.group(1)} is held by another broker"
                             f"{f' (pid {holder})' if holder else ''}: this broker would wait "
                             "in slave mode; not starting it"))


def first_error(text: str) -> str:
    """The message of the first ERROR line of a broker log ('' when none)."""
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(" | ")]
        if len(fields) > 2 and fields[1] == "ERROR":
            return fields[2][:300]
    return ""


def start(ctx: Context[Params]) -> None:
    p = ctx.params
    srv, log = server(ctx, port=False), log_path(ctx, "activemq.log")
    began = file_size(log)

    def launch() -> None:
        from hapack.ocf._datadir import create_file, ensure_dir, os_errors
        prepare_dirs(ctx)
        console = log_path(ctx, "console.log")
        with os_errors("cannot set up"):
            ensure_dir(run_path(ctx, "tmp"), p.user, 0o750)
            config = _write_config(ctx)
            create_file(console, p.user)
        d.spawn(ctx, logged(command(ctx, config), console), srv.pidfile, os.devnull,
                user=p.user, env=dict(CLEAN_ENV), cwd=run_path(ctx))

    def level0(ctx) -> None:  # fail at once on a lock wait, which no port would ever show
        lock_wait(read_since(log, began))
        _listening(ctx, (p.openwire_port, p.stomp_port))

    try:
        start_server(srv, launch, {0: level0, 10: _connect_check})
    except GenericError as exc:
        error = first_error(read_since(log, began))
        raise GenericError(f"{exc}; log: {error}" if error else str(exc)) from None


def stop(ctx: Context[Params]) -> None:
    import signal
    server(ctx).stop(graceful=signal.SIGTERM, graceful_timeout=ctx.deadline.left() * 0.8)


def validate(ctx: Context[Params]) -> None:
    p = ctx.params
    import socket
    family = socket.AF_INET6 if ":" in p.bind_address else socket.AF_INET
    try:
        socket.inet_pton(family, p.bind_address)
    except OSError:
        raise ConfigError(f"bind_address {p.bind_address!r} is not an IP address") from None
    if p.openwire_port == p.stomp_port:
        raise ConfigError("openwire_port and stomp_port must differ")
    if ctx.action == "start" or ctx.check_level >= 10:
        require_executable(p.java, "java")
        if not os.path.isfile(os.path.join(p.activemq_home, "bin", "activemq.jar")):
            raise NotInstalled(f"{p.activemq_home}/bin/activemq.jar is not installed")
        if p.config:
            check_config(p.config, p.data_dir, p.stomp_port)
        check_node(ctx, p.data_dir, "data_dir")


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="ActiveMQ 5 broker with its store on the replicated partition",
    longdesc=("Runs an ActiveMQ 5 broker from its jar with a per-instance configuration, "
              "its KahaDB store in data_dir on the replicated partition, as the service "
              "user. Start returns once the broker answers STOMP and fails (stopping the "
              "broker) when the store is locked by another broker, which would otherwise "
              "wait silently in slave mode. Monitor: level 0 process and listening ports, "
              "level 10 a STOMP round trip, level 20 a persistent message through a probe "
              "queue. Stop: SIGTERM (clean broker shutdown), then KILL."),
    params=PARAMS,
    values=Params,
    actions=d.server_actions(start, stop, monitor, start_timeout=60),
    validate=validate,
)


def main() -> None:
    AGENT.run()


if __name__ == "__main__":
    main()
