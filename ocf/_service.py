"""What the stateful agents (activemq, postgresql, slapd) share beyond ``_daemon``.

``_daemon.Server`` runs the instance (pid identity, start until healthy,
graceful/TERM/KILL stop); this module adds what a stateful layer needs:

- the node-local parameters each of them declares (service user, run and
  log directories, the monitor's credentials file, the client timeout);
- per-instance run and log directories owned by the service user, kept off
  the replicated partition;
- commands run as the service user with its groups and a fresh environment
  (the runner's ``user=`` keeps root's group);
- protocol checks whose failures become OCF errors, and a start that gives
  up at once on an answer waiting cannot change (a store lock held by
  another server, a refused login) instead of polling to the deadline.
"""

from __future__ import annotations

import os

from hapack.ocf import ConfigError, GenericError, NotInstalled, OCFError, Param
from hapack.params import absolute_path
from hapack.params import Values

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pwd
    from typing import Callable
    from hapack.ocf.runner import Context
    from hapack.ocf.postgresql import Postmaster
    from hapack.ocf._daemon import Server

SETPRIV = "/usr/bin/setpriv"
SH = "/bin/sh"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def plain_path(text: str) -> str:
    """An absolute path without control characters: a newline or NUL in a path is a
    configuration error, never something passed on to a command."""
    if any(ord(char) < 32 or char == "\x7f" for char in text):
        raise ValueError(f"{text!r} contains a control character (newline, NUL...)")
    return absolute_path(text)


def common_params(user: str) -> tuple[Param, ...]:
    """The parameters every stateful agent declares, with its service user."""
    return (
        Param("user", "Service user",
              "The system user the server runs as; it must be able to write the data "
              "directory.", default=user),
        Param("run_dir", "Node-local run directory",
              "Pid file, sockets and generated files go to <run_dir>/<agent>-<instance>/, "
              "created at start. Keep it off the replicated partition.",
              default="/run/hapack", check=plain_path),
        Param("log_dir", "Node-local log directory",
              "The server's log goes to <log_dir>/<agent>-<instance>/, created at start.",
              default="/var/log/hapack", check=plain_path),
        Param("credentials_file", "Monitor password file",
              "A file owned by root with mode 0600 whose first line is the password the "
              "monitor uses; the password never appears on a command line, in an "
              "environment or in a log. Unset: no password.", check=plain_path),
        Param("check_timeout", "Health-check client timeout (s)",
              "Seconds one protocol round trip of the monitor may take (always bounded by "
              "the operation timeout too).", kind="integer", default=5, minimum=1, maximum=600),
    )


class ServiceParams(Values):
    """The typed view of common_params() (see hapack.params.Values)."""
    user: str
    run_dir: str
    log_dir: str
    credentials_file: str | None
    check_timeout: int


def run_path(ctx: Context[ServiceParams], *parts: str) -> str:
    name = f"{ctx.agent.name}-{ctx.instance}".replace("/", "_")
    return os.path.join(ctx.params.run_dir, name, *parts)


def pid_path(ctx: Context) -> str:
    """The pid file start-stop-daemon writes as root: in run_dir itself, which is
    root's alone, never in the instance's directory the service user owns."""
    name = f"{ctx.agent.name}-{ctx.instance}".replace("/", "_")
    return os.path.join(ctx.params.run_dir, f"{name}.pid")


def log_path(ctx: Context[ServiceParams], *parts: str) -> str:
    name = f"{ctx.agent.name}-{ctx.instance}".replace("/", "_")
    return os.path.join(ctx.params.log_dir, name, *parts)


def prepare_dirs(ctx: Context, log_user: str | None = None) -> None:
    """Create the instance's run and log directories, owned by the service user (the
    log directory by ``log_user`` instead, when given). run_dir and log_dir are root's
    alone, so the service user controls only what is inside its own directories; no
    link planted there is followed (``_datadir``)."""
    from hapack.ocf._datadir import ensure_dir, os_errors
    user = ctx.params.user
    with os_errors("cannot set up"):
        for base, mine, owner in ((ctx.params.run_dir, run_path(ctx), user),
                                  (ctx.params.log_dir, log_path(ctx), log_user or user)):
            ensure_dir(base, root_only=True)
            ensure_dir(mine, owner, 0o750)


def logged(argv: list[str], log: str) -> list[str]:
    """argv with its output appended to log by the started process itself.

    start-stop-daemon opens its --output as root, following links: in a directory
    the service user owns, a link there would have root append the server's output
    to any file. Started through this (with --chuid, and --output /dev/null), the
    server's own shell, already the service user, opens the log."""
    return [SH, "-c", 'exec >>"$0" 2>&1 || exit 1; exec "$@"', log, *argv]


def account(name: str) -> pwd.struct_passwd:
    import pwd
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise NotInstalled(f"user {name} does not exist on this node") from None


def check_node(ctx: Context[ServiceParams], data_dir: str, what: str) -> None:
    """The node checks every stateful agent makes (start, and validate-all at level
    10): the service user, the credentials file, and at start the data directory on
    a mounted file system the service user may write."""
    account(ctx.params.user)
    if ctx.params.credentials_file:
        from hapack.ocf._secret import check_secret_file
        check_secret_file(ctx.params.credentials_file)
    if ctx.action == "start":
        from hapack.ocf._datadir import require_data_dir
        require_data_dir(data_dir, ctx.params.user, what)


def require_executable(path: str, what: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise NotInstalled(f"{what} {path} is not installed (or not executable)")


def as_user(user: str, argv: list[str]) -> list[str]:
    """argv run as user, with the user's groups and a fresh minimal environment."""
    entry = account(user)
    return [SETPRIV, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups",
            "--reset-env", "--", *argv]


def client_timeout(ctx: Context) -> float:
    """Seconds one protocol round trip may take: check_timeout, within the deadline."""
    return max(0.1, min(float(ctx.params.check_timeout), ctx.deadline.left()))


class Final(Exception):
    """A start check's failure that waiting cannot change; carries the OCF error."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def checked(ctx: Context, check: Callable) -> int:
    """Run a protocol check; its failure becomes the OCF error. A refused login is
    configuration (final) during start, a failure of the service in a monitor."""
    from hapack.ocf._wire import AuthError
    from hapack.probe import ProbeError
    try:
        return check()
    except AuthError as exc:
        if ctx.action == "start":
            raise Final(ConfigError(str(exc))) from None
        raise GenericError(str(exc)) from None
    except ProbeError as exc:
        raise GenericError(str(exc)) from None


def start_server(srv: Postmaster | Server, launch: Callable, checks: dict[int, Callable]) -> None:
    """``srv.start``, except that a Final failure ends the start at once (stopping
    what this start launched) with its own error."""
    was_running = srv.pid() is not None
    try:
        srv.start(launch, checks)
    except Final as final:
        if not was_running:
            srv.ctx.log.warning(f"start failed ({final}); stopping what it started")
            try:
                srv.stop()
            except OCFError as exc:
                srv.ctx.log.error(f"cleaning up after the failed start: {exc}")
        raise final.error from None


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def read_since(path: str, offset: int, limit: int = 1 << 20) -> str:
    """What was appended to a log after offset (text; '' when unreadable). The log is
    in the service user's directory: read without following a link planted there."""
    from hapack.ocf._datadir import read_file
    return read_file(path, offset, limit).decode("utf-8", errors="replace")
