"""ocf:hapack:nginx -- an nginx instance from its own configuration file.

The pid file is the configuration's main-level ``pid`` directive when it has
one, otherwise a per-instance file the agent passes with ``-g``; messages
nginx writes before it has read its configuration go to a per-instance file
(``-e``), never to the compiled-in /var/log/nginx/error.log. Start returns
once the level-10 check passes; stop is graceful (SIGQUIT: finish the
requests in flight), then TERM, then KILL, within the operation's timeout.
Monitor levels: 0 = the master is alive and listening on ``port``;
10 = ``stub_status`` answers and parses; 20 = ``test_url`` answers.
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

NAME = "nginx"
COMPILED_PREFIX = "/usr/share/nginx"

# resource-agents' nginx names (deprecated aliases): README "Migrating from the stock agents"
STOCK_NAMES = {"config": ("configfile",), "binary": ("httpd",), "status_url": ("status10url",),
               "status_regex": ("status10regex",), "test_url": ("test20url",),
               "test_regex": ("test20regex",)}

PARAMS = with_aliases((
    *d.server_params(
        binary="/usr/sbin/nginx", directive="listen",
        status_url=("URL of the stub_status page, fetched at check level 10. Unset: "
                    "http://<address>:<port><location>, where location is the last "
                    "location block holding stub_status in the configuration, else "
                    "/nginx_status (https when the listen directive has ssl)."),
        status_regex=("Regular expression the level-10 answer must contain. Unset: the "
                      "answer must be stub_status output (Active connections, Reading, "
                      "Writing, Waiting)."),
        graceful=("Seconds the graceful stop (SIGQUIT: finish the requests in flight) may "
                  "take before TERM and then KILL; 0 skips it. Always bounded by the stop "
                  "timeout.")),
    Param("prefix", "Prefix path (-p)",
          "nginx's prefix path for relative paths in the configuration (nginx -p). Unset: "
          "the compiled-in " + COMPILED_PREFIX + ".", check=d.absolute_path),
    Param("error_log", "Early error log (-e)",
          "File for the messages nginx writes before it reads its configuration, and its "
          "error log when the configuration sets none (nginx -e). Unset: the "
          "configuration's main-level error_log, else $HA_RSCTMP/hapack-nginx-<resource>.log.",
          check=d.absolute_path),
    Param("user", "Worker user",
          "User the worker processes run as (passed with -g when the configuration has no "
          "main-level 'user' directive; it must agree with one that is there). Unset: the "
          "configuration's, else nginx's compiled-in default."),
), STOCK_NAMES)


class Params(d.ServerParams):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    prefix: str | None
    error_log: str | None
    user: str | None


# -- the configuration ------------------------------------------------------------

def main_directives(text: str) -> dict[str, list[list[str]]]:
    """Main-level (outside any block) directives: name -> list of argument lists.

    Enough of nginx's syntax for pid, user and error_log: comments, quotes,
    blocks and ';'. Files pulled in by 'include' are not read.
    """
    found, words, depth = {}, [], 0  # type: ignore[var-annotated]
    for token in _tokens(text):
        if token == "{":
            depth, words = depth + 1, []
        elif token == "}":
            depth, words = max(0, depth - 1), []
        elif token == ";":
            if depth == 0 and words:
                found.setdefault(words[0], []).append(words[1:])
            words = []
        else:
            words.append(token)
    return found


def _tokens(text):
    """Words (quotes removed), '{', '}' and ';' of an nginx configuration."""
    i, size = 0, len(text)
    while i < size:
        char = text[i]
        if char.isspace():
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            i = size if end < 0 else end
        elif char in "{};":
            yield char
            i += 1
        elif char in "\"'":
            end = i + 1
            while end < size and text[end] != char:
                end += 2 if text[end] == "\\" else 1
            yield text[i + 1:end]
            i = end + 1
        else:
            end = i
            while end < size and not text[end].isspace() and text[end] not in "{};\"'#":
                end += 1
            yield text[i:end]
            i = end


def _last(directives, name):
    values = directives.get(name)
    return values[-1][0] if values and values[-1] else None


class Layout:
    """Where this instance's pid file and early log are, and what -g must add.

    The configuration wins over the parameters (it is what nginx will do);
    disagreements are listed in ``problems`` for validate to refuse.
    """

    def __init__(self, ctx):
        p = ctx.params
        try:
            with open(p.config, encoding="utf-8", errors="replace") as handle:
                conf = main_directives(handle.read())
        except OSError:
            conf = {}
        prefix = p.prefix or COMPILED_PREFIX
        self.problems = []
        configured_pid = _last(conf, "pid")
        self.pidfile = (os.path.normpath(os.path.join(prefix, configured_pid)) if configured_pid
                        else p.pidfile or d.rsc_path(ctx, "pid"))
        if configured_pid and p.pidfile and self.pidfile != p.pidfile:
            self.problems.append(f"pidfile {p.pidfile} differs from the pid directive "
                                 f"'{configured_pid}' of {p.config}")
        configured_user = _last(conf, "user")
        if configured_user and p.user and configured_user != p.user:
            self.problems.append(f"user {p.user} differs from the user directive "
                                 f"'{configured_user}' of {p.config}")
        log = _last(conf, "error_log")
        self.config_log = (os.path.join(prefix, log) if log and log != "stderr"
                           and not log.startswith(("syslog:", "memory:")) else None)
        self.error_log = p.error_log or self.config_log or d.rsc_path(ctx, "log")
        self.globals = "".join(
            ([] if configured_pid else [f"pid {self.pidfile};"]) +
            ([f"user {p.user};"] if p.user and not configured_user else []))


def argv(ctx: Context[Params], layout: Layout, *tail: str) -> list[str]:
    p = ctx.params
    cmd = [p.binary, "-e", layout.error_log, "-c", p.config]
    if p.prefix:
        cmd += ["-p", p.prefix.rstrip("/") + "/"]
    if layout.globals:
        cmd += ["-g", layout.globals]
    return cmd + list(p.options or ()) + list(tail)


def endpoint(ctx: Context[Params]) -> tuple[int, str]:
    """(port, default status URL): the parameters, else the first listen of an http server."""
    p = ctx.params
    listens = lambda: next(iter(_listen.nginx_listens(p.config, _tokens)), None)  # noqa: E731
    return d.endpoint(ctx, listens, lambda: _listen.nginx_status_path(p.config, _tokens),
                      "/nginx_status")


def server(ctx: Context[Params], layout: Layout) -> Server:
    p = ctx.params
    return d.Server(ctx, layout.pidfile, exe=p.binary, port=endpoint(ctx)[0], marker=p.config,
                    log=layout.config_log or layout.error_log, what="nginx")


# -- checks -------------------------------------------------------------------------

def parse_stub_status(text: str) -> dict[str, int]:
    """stub_status output as a dict of ints; ValueError when it is something else.

    Active connections: 3
    server accepts handled requests
     17 15 40
    Reading: 0 Writing: 1 Waiting: 2
    """
    lines = [line.split() for line in text.splitlines() if line.strip()]
    try:
        active, head, counts, rww = lines[:4]
        if active[:2] != ["Active", "connections:"] or head[1:] != ["accepts", "handled",
                                                                    "requests"]:
            raise ValueError
        if rww[0::2] != ["Reading:", "Writing:", "Waiting:"]:
            raise ValueError
        values = [int(word) for word in (active[2], *counts, *rww[1::2])]
    except ValueError:
        values = []
    if len(values) != 7:
        raise ValueError("not stub_status output (Active connections / accepts handled "
                         "requests / Reading Writing Waiting): is 'stub_status;' there?")
    return dict(zip(("active", "accepts", "handled", "requests", "reading", "writing",
                     "waiting"), values))


def _status(ctx):
    p = ctx.params
    url = p.status_url or endpoint(ctx)[1]
    status = d.http_expect(ctx, url, p.client_timeout, p.expect_status, regex=p.status_regex,
                           parse=None if p.status_regex else parse_stub_status)
    if not p.status_regex:
        if status["accepts"] > status["handled"]:
            ctx.log.warning(f"{url}: {status['accepts'] - status['handled']} connections "
                            "dropped (worker_connections too low?)")


def _test(ctx):
    p = ctx.params
    if p.test_url:
        d.http_expect(ctx, p.test_url, p.client_timeout, p.expect_status, regex=p.test_regex)


CHECKS = {10: _status, 20: _test}


def syntax_error(ctx: Context[Params], layout: Layout) -> str | None:
    result = ctx.run(argv(ctx, layout, "-t", "-q"), timeout=30)
    return None if result.ok else (result.output() or f"exit {result.returncode}")


# -- the verbs --------------------------------------------------------------------

def validate(ctx: Context[Params]) -> None:
    p = ctx.params
    if ctx.action == "validate-all" and ctx.check_level < 10:
        return
    if not os.access(p.binary, os.X_OK):
        raise NotInstalled(f"nginx binary {p.binary} is not installed or not executable")
    if not os.path.isfile(p.config):
        raise NotInstalled(f"configuration file {p.config} does not exist on this node")
    layout = Layout(ctx)
    if layout.problems:
        raise ArgsError("; ".join(layout.problems))
    if ctx.action == "validate-all":
        error = syntax_error(ctx, layout)
        if error:
            raise ArgsError(f"{p.config} does not pass 'nginx -t': {error}")


def start(ctx: Context[Params]) -> None:
    layout = Layout(ctx)
    srv = server(ctx, layout)

    def launch() -> None:
        from hapack.ocf._datadir import ensure_dir, os_errors
        with os_errors("cannot set up"):
            for path in (srv.pidfile, layout.error_log):
                ensure_dir(os.path.dirname(path))  # never through a planted link
        result = ctx.run(argv(ctx, layout), timeout=30)
        if not result.ok:
            error = syntax_error(ctx, layout)
            if error:
                raise ArgsError(f"{ctx.params.config} does not pass 'nginx -t': {error}")
            raise GenericError(f"nginx failed to start: {result.output() or result.returncode}")

    srv.start(launch, CHECKS)


def stop(ctx: Context[Params]) -> None:
    import signal
    server(ctx, Layout(ctx)).stop(graceful=signal.SIGQUIT,
                                  graceful_timeout=ctx.params.graceful_timeout)


def monitor(ctx: Context[Params]) -> int:
    return server(ctx, Layout(ctx)).monitor(CHECKS)


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="nginx instance with its own configuration, pid file and ports",
    longdesc=("Runs one nginx instance from its own configuration file with its own pid file "
              "and early error log, so several instances can share a node and the "
              "distribution's default instance is never touched. Start waits until "
              "stub_status answers; stop is graceful (QUIT), then TERM, then KILL, within the "
              "timeout. Monitor depth 0 checks the master process and its listening port, "
              "depth 10 stub_status, depth 20 a page through the whole chain (test_url)."),
    params=PARAMS,
    values=Params,
    actions=d.server_actions(start, stop, monitor),
    validate=validate,
)


def main() -> None:
    AGENT.run()


if __name__ == "__main__":
    main()
