"""ocf:hapack:tomcat -- a Java application server instance (Tomcat, or any command).

The instance is a directory (CATALINA_BASE) of its own; the server runs in
the foreground as an unprivileged user, detached by start-stop-daemon, which
writes the pid file as root before the program starts, so the pid file
never depends on the server. ``flavor=tomcat`` runs ``catalina.sh run`` of
``catalina_home`` and, by default, checks a tiny health page the agent puts
into the instance (``webapps/hapack-health/ping.jsp``: it goes through the
connector, the servlet pipeline and Jasper). ``flavor=command`` runs any
server that stays in the foreground (another Jakarta EE server, Jetty...)
from ``start_command`` with the same contract: pid file, port, health URL,
graceful stop (``stop_command`` or SIGTERM), then TERM, then KILL.
Monitor levels: 0 = the JVM is alive and listening on ``port``;
10 = ``status_url``; 20 = ``test_url``, the application's own health URL.
"""

from __future__ import annotations

import os

from hapack.ocf import Agent, ArgsError, ConfigError, GenericError, NotInstalled, Param
from hapack.ocf import _daemon as d
from hapack.params import with_aliases
from hapack.command import CommandError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pwd
    from hapack.ocf.runner import Context
    from hapack.ocf._daemon import Server

NAME = "tomcat"
HEALTH_APP = "hapack-health"
HEALTH_PAGE = '<%@ page contentType="text/plain" %>PONG <%= application.getServerInfo() %>\n'
EXIT_ON_INIT_FAILURE = "-Dorg.apache.catalina.startup.EXIT_ON_INIT_FAILURE=true"

# resource-agents' tomcat names (deprecated aliases): README "Migrating from the stock agents"
STOCK_NAMES = {"user": ("tomcat_user",), "status_url": ("statusurl",),
               "pidfile": ("catalina_pid",), "output_log": ("catalina_out",)}

PARAMS = with_aliases((
    Param("catalina_base", "Instance directory (CATALINA_BASE)",
          "Absolute path of the instance: conf/, logs/, temp/, work/, webapps/. It is the "
          "server's working directory and is exported as CATALINA_BASE.",
          required=True, unique=True, check=d.absolute_path),
    Param("flavor", "Server kind",
          "tomcat: run catalina.sh run of catalina_home. command: run start_command (any "
          "server that stays in the foreground), with status_url required.",
          kind="choice", choices=("tomcat", "command"), default="tomcat"),
    Param("catalina_home", "Tomcat installation (CATALINA_HOME)",
          "Where Tomcat is installed (bin/catalina.sh, lib/).", default="/usr/share/tomcat10",
          check=d.absolute_path),
    Param("java_home", "JAVA_HOME",
          "Java installation to run. Unset: /usr/lib/jvm/default-java, else the java on PATH.",
          check=d.absolute_path),
    Param("java_opts", "JVM options (JAVA_OPTS)",
          "Options for the JVM, e.g. '-Xms64m -Xmx256m'.", default="-Djava.awt.headless=true"),
    Param("catalina_opts", "Server options (CATALINA_OPTS)",
          "Options for the server's JVM only (not for tools such as configtest). The tomcat "
          "flavor adds " + EXIT_ON_INIT_FAILURE + " so a port clash fails the start at once."),
    Param("user", "User", "Unprivileged user the server runs as.", default="tomcat"),
    Param("start_command", "Start command (flavor=command)",
          "Command line of a server that stays in the foreground, split like a shell would "
          "(no expansion). Runs as user in catalina_base with JAVA_HOME, JAVA_OPTS, "
          "CATALINA_OPTS and CATALINA_BASE set.", check=d.split_options),
    Param("stop_command", "Graceful stop command",
          "Command line that asks the server to stop (e.g. catalina.sh stop with a shutdown "
          "port), run as user with the same environment. Unset: SIGTERM, which runs the "
          "JVM's shutdown hooks (Tomcat stops cleanly).", check=d.split_options),
    Param("output_log", "Console log",
          "File that receives the server's standard output and error. Unset: "
          "<catalina_base>/logs/catalina.out.", check=d.absolute_path),
    *d.stop_params(graceful=("Seconds the graceful stop (stop_command, or SIGTERM) may take "
                             "before SIGKILL. Always bounded by the stop timeout.")),
    *d.check_params(
        port=8080,
        status_url=("URL fetched at check level 10. Unset (tomcat flavor): "
                    "http://<address>:<port>/" + HEALTH_APP + "/ping.jsp, a page the agent "
                    "creates in <catalina_base>/webapps when it is missing."),
        status_regex=("Regular expression the level-10 answer must contain. Unset: PONG for "
                      "the agent's health page; only the HTTP status for other URLs.")),
), STOCK_NAMES)


class Params(d.StopParams, d.CheckParams):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    catalina_base: str
    flavor: str
    catalina_home: str
    java_home: str | None
    java_opts: str
    catalina_opts: str | None
    user: str
    start_command: tuple[str, ...] | None
    stop_command: tuple[str, ...] | None
    output_log: str | None


# -- the instance -------------------------------------------------------------------

def java_home(ctx: Context[Params]) -> str:
    if ctx.params.java_home:
        return ctx.params.java_home
    if os.path.isdir("/usr/lib/jvm/default-java"):
        return "/usr/lib/jvm/default-java"
    from hapack.command import which
    java = which("java")
    return os.path.dirname(os.path.dirname(os.path.realpath(java))) if java else "/usr"


def pidfile(ctx: Context[Params]) -> str:
    return ctx.params.pidfile or d.rsc_path(ctx, "pid")


def output_log(ctx: Context[Params]) -> str:
    return ctx.params.output_log or os.path.join(ctx.params.catalina_base, "logs", "catalina.out")


def server(ctx: Context[Params]) -> Server:
    p = ctx.params
    tomcat = p.flavor == "tomcat"
    return d.Server(ctx, pidfile(ctx), port=p.port, log=output_log(ctx), what=p.flavor,
                    exe=os.path.join(java_home(ctx), "bin", "java") if tomcat else None,
                    marker=f"-Dcatalina.base={p.catalina_base}" if tomcat else None)


def environment(ctx: Context[Params], extra_opts: str = "") -> dict[str, str]:
    p = ctx.params
    opts = " ".join(filter(None, (extra_opts, p.catalina_opts or "")))
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": ctx.environ.get("LANG", "C.UTF-8"), "JAVA_HOME": java_home(ctx),
            "JAVA_OPTS": p.java_opts or "", "CATALINA_OPTS": opts,
            "CATALINA_HOME": p.catalina_home, "CATALINA_BASE": p.catalina_base,
            "CATALINA_TMPDIR": os.path.join(p.catalina_base, "temp")}


def command(ctx: Context[Params]) -> list[str]:
    p = ctx.params
    if p.flavor == "command":
        return list(p.start_command or ())  # validate: set for flavor=command
    return [os.path.join(p.catalina_home, "bin", "catalina.sh"), "run"]


def status_url(ctx: Context[Params]) -> str:
    p = ctx.params
    return p.status_url or d.default_url(p, f"/{HEALTH_APP}/ping.jsp")


def pong(body: str) -> None:
    """The agent's health page: 'PONG <server info>'."""
    if not body.startswith("PONG"):
        raise ValueError(f"the health page answered {body[:40]!r}, not PONG")


def _status(ctx):
    p = ctx.params
    default_page = not (p.status_regex or p.status_url)
    d.http_expect(ctx, status_url(ctx), p.client_timeout, p.expect_status,
                  regex=p.status_regex, parse=pong if default_page else None)


def _test(ctx):
    p = ctx.params
    if p.test_url:
        d.http_expect(ctx, p.test_url, p.client_timeout, p.expect_status, regex=p.test_regex)


CHECKS = {10: _status, 20: _test}


# -- local environment ----------------------------------------------------------------

def account(user: str) -> pwd.struct_passwd:
    import pwd
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise NotInstalled(f"user {user} does not exist on this node") from None


def _owned_dir(path, pw):
    """An existing directory the user may write, or a new one owned by the user."""
    from hapack.ocf._datadir import ensure_dir, open_dir, user_can_write
    try:
        fd = open_dir(path)
    except FileNotFoundError:
        ensure_dir(path, pw.pw_name, 0o750)
        return
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not user_can_write(st, pw.pw_name):
        raise NotInstalled(f"{path} is not writable by {pw.pw_name}")


def prepare(ctx: Context[Params], pw: pwd.struct_passwd) -> None:
    """Create what the instance needs and may lack: logs/, temp/, work/, the console
    log, the health page. The instance belongs to the server's user: nothing here
    follows a link planted in it (``_datadir``)."""
    from hapack.ocf._datadir import create_file, os_errors
    p = ctx.params
    with os_errors("cannot set up the instance:"):
        for sub in ("logs", "temp", "work"):
            _owned_dir(os.path.join(p.catalina_base, sub), pw)
        log = output_log(ctx)
        _owned_dir(os.path.dirname(log), pw)
        create_file(log, pw.pw_name)
        if p.flavor == "tomcat" and not p.status_url:
            _health_page(p.catalina_base, pw)


def _health_page(base, pw):
    from hapack.ocf._datadir import ensure_dir, open_dir, write_file
    webapps = os.path.join(base, "webapps")
    try:
        os.close(open_dir(webapps))
    except FileNotFoundError:
        raise ArgsError(f"{webapps} does not exist: create it, or set status_url to a page "
                        "of the instance") from None
    app = os.path.join(webapps, HEALTH_APP)
    page = os.path.join(app, "ping.jsp")
    if os.path.isfile(page):
        return
    ensure_dir(app, pw.pw_name, 0o755)
    write_file(page, HEALTH_PAGE.encode(), 0o644, pw.pw_name)


# -- the verbs ---------------------------------------------------------------------------

def validate(ctx: Context[Params]) -> None:
    p = ctx.params
    tomcat = p.flavor == "tomcat"
    if not tomcat and not (p.start_command and p.status_url):
        raise ConfigError("flavor=command needs start_command and status_url")
    if ctx.action == "validate-all" and ctx.check_level < 10:
        return
    java = os.path.join(java_home(ctx), "bin", "java")
    if not os.access(java, os.X_OK):
        raise NotInstalled(f"Java is not installed: {java} is missing (set java_home)")
    if tomcat:
        for rel in ("bin/catalina.sh", "bin/bootstrap.jar"):
            if not os.path.isfile(os.path.join(p.catalina_home, rel)):
                raise NotInstalled(f"Tomcat is not installed in {p.catalina_home} (no {rel})")
    else:
        from hapack.command import which
        program = p.start_command[0] if p.start_command else ""  # set: checked above
        if which(program) is None:
            raise NotInstalled(f"start_command {program} is not executable")
    conf = os.path.join(p.catalina_base, "conf", "server.xml") if tomcat else p.catalina_base
    if not os.path.exists(conf):
        raise NotInstalled(f"instance {p.catalina_base} has no {os.path.relpath(conf, p.catalina_base)}"
                           if tomcat else f"instance directory {p.catalina_base} does not exist")
    if account(p.user).pw_uid == 0 and tomcat:
        ctx.log.warning("running Tomcat as root: its SecurityListener, if configured, refuses")
    if ctx.action == "validate-all" and tomcat:
        _configtest(ctx)


def _configtest(ctx):
    """catalina.sh configtest: parses server.xml in a JVM, as the user."""
    script = os.path.join(ctx.params.catalina_home, "bin", "catalina.sh")
    result = ctx.run([script, "configtest"], timeout=60, env=environment(ctx),
                     user=ctx.params.user, cwd=ctx.params.catalina_base)
    if not result.ok:
        lines = (result.stderr + result.stdout).splitlines()
        severe = [line for line in lines if "SEVERE" in line or "Exception" in line]
        raise ArgsError(f"{ctx.params.catalina_base} fails catalina.sh configtest: "
                        f"{(severe or lines or ['exit ' + str(result.returncode)])[-1]}")


def start(ctx: Context[Params]) -> None:
    p = ctx.params
    pw = account(p.user)
    srv = server(ctx)

    def launch() -> None:
        from hapack.ocf._service import logged
        prepare(ctx, pw)
        extra = EXIT_ON_INIT_FAILURE if p.flavor == "tomcat" else ""
        env = dict(environment(ctx, extra), HOME=pw.pw_dir, USER=p.user)
        d.spawn(ctx, logged(command(ctx), output_log(ctx)), srv.pidfile, os.devnull,
                user=p.user, env=env, cwd=p.catalina_base)

    srv.start(launch, CHECKS)


def _stop_command(ctx, pid):
    p = ctx.params
    ctx.log.info(f"running stop_command for pid {pid}")
    try:
        result = ctx.run(list(p.stop_command), timeout=p.graceful_timeout, env=environment(ctx),
                         user=p.user, cwd=p.catalina_base)
    except CommandError as exc:  # the escalation that follows still stops the server
        ctx.log.warning(f"stop_command failed: {exc}")
        return False
    if not result.ok:
        ctx.log.warning(f"stop_command exited {result.returncode}: {result.output()}")
        return False
    return True


def stop(ctx: Context[Params]) -> None:
    import signal
    p = ctx.params
    graceful = _stop_command if p.stop_command else signal.SIGTERM
    server(ctx).stop(graceful=graceful, graceful_timeout=p.graceful_timeout)


def monitor(ctx: Context[Params]) -> int:
    return server(ctx).monitor(CHECKS)


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="Java application server instance (Tomcat, or any foreground command)",
    longdesc=("Runs one application server instance from its own directory (CATALINA_BASE) "
              "as an unprivileged user, with a pid file of its own, so several instances can "
              "share a node. Start waits until the health page answers (JVM start takes "
              "seconds); stop is graceful (stop_command or SIGTERM), then KILL, within the "
              "timeout. Monitor depth 0 checks the JVM and its listening port, depth 10 the "
              "health page, depth 20 the application's own health URL (test_url)."),
    params=PARAMS,
    values=Params,
    actions=d.server_actions(start, stop, monitor, start_timeout=120),
    validate=validate,
)


def main() -> None:
    AGENT.run()


if __name__ == "__main__":
    main()
