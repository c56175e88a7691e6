"""ocf:hapack:apache -- an Apache httpd instance from its own configuration file.

The instance runs from ``config`` with a pid file of its own (given on the
command line, so the agent always knows it), which makes several instances
per node possible and leaves the distribution's default instance alone.
Start returns once the level-10 check passes; stop is graceful (SIGWINCH,
like ``-k graceful-stop``), then TERM, then KILL, within the operation's
timeout. Monitor levels: 0 = the master process is alive and listening on
``port``; 10 = mod_status's ``server-status?auto`` answers and parses;
20 = ``test_url`` (e.g. a page proxied to the application server) answers
as expected.
"""

from __future__ import annotations

import os

from hapack.ocf import Agent, ArgsError, GenericError, NotInstalled, Param
from hapack.ocf import _daemon as d
from hapack.ocf import _listen
from hapack.params import with_aliases

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.ocf.runner import Context
    from hapack.ocf._daemon import Server

NAME = "apache"

# resource-agents' apache names (deprecated aliases): README "Migrating from the stock agents"
STOCK_NAMES = {"config": ("configfile",), "binary": ("httpd",), "status_url": ("statusurl",),
               "status_regex": ("testregex",), "test_url": ("testurl",),
               "test_regex": ("testregex10",)}

PARAMS = with_aliases((
    *d.server_params(
        binary="/usr/sbin/apache2", directive="Listen",
        status_url=("URL of mod_status's machine-readable page, fetched at check level 10. "
                    "Unset: http://<address>:<port><location>?auto, where location is the "
                    "last <Location> with 'SetHandler server-status' in the configuration, "
                    "else /server-status (https when the Listen directive is https)."),
        status_regex=("Regular expression the level-10 answer must contain. Unset: the answer "
                      "must be mod_status ?auto output (BusyWorkers, IdleWorkers, Scoreboard)."),
        graceful=("Seconds the graceful stop (SIGWINCH: finish the requests in flight) may "
                  "take before TERM and then KILL; 0 skips it. Always bounded by the stop "
                  "timeout.")),
    Param("user", "Worker user",
          "User the child processes run as (passed as 'User' with -c, overriding the "
          "configuration). Unset: the configuration's User directive."),
), STOCK_NAMES)


class Params(d.ServerParams):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    user: str | None

STATUS_KEYS = ("BusyWorkers", "IdleWorkers", "Scoreboard")


def parse_status(text: str) -> dict[str, str]:
    """mod_status ?auto output as a dict; ValueError when it is something else."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith((" ", "<")):
            found[key.strip()] = value.strip()
    missing = [key for key in STATUS_KEYS if key not in found]
    if missing:
        raise ValueError(f"not mod_status ?auto output (no {', '.join(missing)}): "
                         "is the server-status handler there, with ?auto?")
    for key in ("BusyWorkers", "IdleWorkers"):
        if not found[key].isdigit():
            raise ValueError(f"mod_status {key} is {found[key]!r}, not a number")
    return found


# -- the instance ---------------------------------------------------------------

def pidfile(ctx: Context[Params]) -> str:
    return ctx.params.pidfile or d.rsc_path(ctx, "pid")


def argv(ctx: Context[Params], *tail: str) -> list[str]:
    """The server command line: our config, our pid file, then the operator's options."""
    p = ctx.params
    cmd = [p.binary, "-f", p.config, "-c", f"PidFile {pidfile(ctx)}"]
    if p.user:
        cmd += ["-c", f"User {p.user}"]
    return cmd + list(p.options or ()) + list(tail)


def endpoint(ctx: Context[Params]) -> tuple[int, str]:
    """(port, default status URL): the parameters, else the configuration's Listen."""
    p = ctx.params

    def status_path():
        found = _listen.apache_status_path(p.config)
        return found and found + "?auto"

    return d.endpoint(ctx, lambda: _listen.apache_first(p.config), status_path,
                      "/server-status?auto")


def server(ctx: Context[Params]) -> Server:
    p = ctx.params
    return d.Server(ctx, pidfile(ctx), exe=p.binary, port=endpoint(ctx)[0], marker=p.config,
                    what="apache")


def _status(ctx):
    p = ctx.params
    url = p.status_url or endpoint(ctx)[1]
    status = d.http_expect(ctx, url, p.client_timeout, p.expect_status, regex=p.status_regex,
                           parse=None if p.status_regex else parse_status)
    if not p.status_regex and status["IdleWorkers"] == "0":
        ctx.log.warning(f"{url}: no idle worker left")


def _test(ctx):
    p = ctx.params
    if p.test_url:
        d.http_expect(ctx, p.test_url, p.client_timeout, p.expect_status, regex=p.test_regex)


CHECKS = {10: _status, 20: _test}


DISTRO_RUNTIME = ('dir="/var/run/apache2/"', 'dir="/run/apache2/"')


def syntax_error(ctx: Context[Params], dump: bool = False) -> str | None:
    """The output of a failed ``-t`` configuration test, or None when it passes.

    With ``dump`` (validate-all) the test also dumps the run-time settings and
    warns when the mutexes would live in the distribution instance's run dir.
    """
    result = ctx.run(argv(ctx, "-t", *(("-D", "DUMP_RUN_CFG") if dump else ())), timeout=30)
    if not result.ok:
        return result.output() or f"exit {result.returncode}"
    if dump and any(word in result.stdout for word in DISTRO_RUNTIME):
        ctx.log.warning(f"{ctx.params.config} keeps its mutexes in the default instance's run "
                        "directory: set DefaultRuntimeDir and Mutex to a directory of its own")
    return None


# -- the verbs ----------------------------------------------------------------------

def validate(ctx: Context[Params]) -> None:
    p = ctx.params
    if ctx.action == "validate-all" and ctx.check_level < 10:
        return
    if not os.access(p.binary, os.X_OK):
        raise NotInstalled(f"apache binary {p.binary} is not installed or not executable")
    if not os.path.isfile(p.config):
        raise NotInstalled(f"configuration file {p.config} does not exist on this node")
    if p.user:
        import pwd
        try:
            pwd.getpwnam(p.user)
        except KeyError:
            raise NotInstalled(f"user {p.user} does not exist on this node") from None
    if ctx.action == "validate-all":
        error = syntax_error(ctx, dump=True)
        if error:
            raise ArgsError(f"{p.config} does not pass 'apache2 -t': {error}")


def start(ctx: Context[Params]) -> None:
    srv = server(ctx)

    def launch() -> None:
        from hapack.ocf._datadir import ensure_dir, os_errors
        with os_errors("cannot set up"):
            ensure_dir(os.path.dirname(srv.pidfile))  # never through a planted link
        result = ctx.run(argv(ctx, "-k", "start"), timeout=30)
        if not result.ok:
            error = syntax_error(ctx)
            if error:
                raise ArgsError(f"{ctx.params.config} does not pass 'apache2 -t': {error}")
            raise GenericError(f"apache -k start failed: {result.output() or result.returncode}")

    srv.start(launch, CHECKS)


def stop(ctx: Context[Params]) -> None:
    import signal
    server(ctx).stop(graceful=signal.SIGWINCH, graceful_timeout=ctx.params.graceful_timeout)


def monitor(ctx: Context[Params]) -> int:
    return server(ctx).monitor(CHECKS)


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="Apache httpd instance with its own configuration, pid file and ports",
    longdesc=("Runs one Apache httpd instance from its own configuration file, with a pid "
              "file of its own, so several instances can share a node and the distribution's "
              "default instance is never touched. Start waits until mod_status answers; stop "
              "is graceful, then TERM, then KILL, within the timeout. Monitor depth 0 checks "
              "the master process and its listening port, depth 10 mod_status, depth 20 a "
              "page through the whole chain (test_url)."),
    params=PARAMS,
    values=Params,
    actions=d.server_actions(start, stop, monitor),
    validate=validate,
)


def main() -> None:
    AGENT.run()


if __name__ == "__main__":
    main()
