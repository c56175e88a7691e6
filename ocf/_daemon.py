"""Shared machinery for agents that run one server process per instance.

Used by the apache, nginx and tomcat agents; meant for any agent whose
resource is "a server with a pid file and a health check" (a broker, a
directory, a database). The API is small and kept stable:

``Server(ctx, pidfile, exe=None, port=None, marker=None, log=None, what="server")``
    One instance as the agent sees it. ``exe`` is the executable the
    process must be (guards against a reused pid; also identifies
    leftovers), ``port`` the TCP port it must listen on (its main process
    holds the listening socket), ``marker`` a word that appears in the
    command line of the instance's processes and of no other's (e.g. the
    config file path), ``log`` a file whose last lines explain a failed start.
    A pid counts as the instance's only if the process is not younger than
    the pid file and, with ``exe``, runs that executable.

``srv.pid()``
    The live pid from the pid file: None when the file is missing, the
    process is gone or a zombie, or the pid now belongs to another program.

``srv.monitor(checks)``
    Level 0 (the process is alive and listening on ``port``), then every
    check in ``checks`` (a dict level -> callable(ctx)) whose level is at or
    below ``ctx.check_level``, in order. Returns ``OCF.NOT_RUNNING`` when
    there is no process; a failing check raises GenericError (rc 1).

``srv.start(launch, checks)``
    Succeeds at once when the instance already runs and passes its checks.
    Otherwise clears stale pid files and leftover processes of this
    instance, calls ``launch()`` and returns only when levels 0 and 10 pass,
    polling within ``ctx.deadline`` (a few seconds are kept back). On failure
    it stops whatever it started, removes the pid file and raises with the
    last check failure and the tail of ``log``: nothing is left half done.

``srv.stop(graceful=None, graceful_timeout=0)``
    SIGCONT (a frozen server cannot act on TERM), then ``graceful`` (a
    signal number sent to the main pid, or a callable(ctx, pid) that returns
    False when it could not ask) for up to ``graceful_timeout`` seconds, then
    TERM (at most 10 s) and KILL to the whole tree (and leftovers) within
    ``ctx.deadline``. Zombies count as stopped. The pid file is removed.
    Raises GenericError naming the pids that survived KILL.

``srv.leftovers()``
    Processes of the instance outside the main process's tree: the group of
    a dead (or still ours) recorded pid, and ``exe`` + ``marker`` matches.

``spawn(ctx, argv, pidfile, output, user=None, env=None, cwd=None)``
    Start a server that stays in the foreground as a detached daemon
    (start-stop-daemon --background --make-pidfile --output): the pid file
    is written by root before the program runs as ``user``.

``http_expect(ctx, url, timeout, status=200, regex=None, parse=None)``
    (from ``_http``) One HTTP GET bounded by ``timeout`` and the deadline;
    GenericError when the status differs, ``regex`` does not match the body
    or ``parse(body)`` raises ValueError. Returns ``parse(body)``, or the
    body. ``http_get(url, timeout)`` is the bare GET: (status, body).

The monitor path imports nothing heavy (no signal/enum, socket, re, urllib):
every monitor is a fresh interpreter. Start and stop import what they need.

``rsc_path(ctx, suffix)``
    A per-instance runtime path under ``$HA_RSCTMP`` (default
    /run/resource-agents): ``hapack-<agent>-<instance>.<suffix>``.

``check_params(...)``, ``stop_params(...)``, ``server_params(...)``, ``server_actions(...)``
    The parameter and action declarations the HTTP-checked agents share.

``split_options(text)``, ``regex(text)``, ``url(text)``, ``absolute_path(text)``
    Param checks.
"""

from __future__ import annotations

import os

from hapack import netlink
from hapack.ocf import OCF, Action, GenericError, OCFError, Param, _datadir
from hapack.params import Values, absolute_path  # noqa: F401  (part of the API)
from hapack.ocf._http import http_expect, http_get, split_url  # noqa: F401  (part of the API)
from hapack.command import CommandError
from hapack.procfs import (alive as _alive, exe as _exe, group_ids as _group_ids,
                            holds_socket, listening_inodes, read_pidfile as _read_pid,
                            started_after as _younger_than)
from hapack.timing import Deadline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Callable
    from hapack.ocf import _listen
    from hapack.ocf.runner import Context


# -- parameter checks and shared declarations ----------------------------------

def split_options(text: str) -> tuple[str, ...]:
    """Extra command-line options, split like a shell would (no expansion)."""
    import shlex
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} cannot be split into arguments: {exc}") from None


def regex(text: str) -> str:
    import re
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a valid regular expression: {exc}") from None
    return text


def url(text: str) -> str:
    split_url(text)
    return text


PORT_TEXT = ("TCP port the server listens on: level 0 requires the server's main process "
             "to listen on it, and the default status URL uses it.")
FROM_CONFIG = (" Unset: the port of the configuration's first {directive} directive (includes "
               "read in place), as the stock agent finds it, else 80; see README 'Ports and "
               "URLs from the configuration'.")


def check_params(*, port: int | None, status_url: str, status_regex: str,
                 directive: str | None = None) -> tuple[Param, ...]:
    """address, port, status_url, status_regex, test_url, test_regex,
    expect_status and client_timeout, with the agent's own defaults and texts.
    ``directive`` (Listen, listen): port and address unset come from the configuration."""
    address = (("IP address the health checks connect to. Unset: the address of the "
                f"{directive} directive the port comes from when it names one, else "
                "127.0.0.1 (::1 for [::]).", None) if directive else
               ("IP address the health checks connect to (the server must listen there).",
                "127.0.0.1"))
    return (
        Param("address", "Address for the checks", address[0], default=address[1]),
        Param("port", "Port for the checks",
              PORT_TEXT + (FROM_CONFIG.format(directive=directive) if directive else ""),
              kind="integer", default=None if directive else port, minimum=1, maximum=65535),
        Param("status_url", "Level-10 URL", status_url, check=url),
        Param("status_regex", "Level-10 expected body", status_regex, check=regex),
        Param("test_url", "Level-20 URL",
              "URL fetched at check level 20, e.g. an application's health page reached "
              "through the whole chain. Unset: level 20 checks the same as level 10.",
              check=url),
        Param("test_regex", "Level-20 expected body",
              "Regular expression the level-20 answer must contain (searched anywhere).",
              check=regex),
        Param("expect_status", "Expected HTTP status",
              "HTTP status the level-10 and level-20 requests must answer with.",
              kind="integer", default=200, minimum=100, maximum=599),
        Param("client_timeout", "HTTP client timeout (s)",
              "Seconds one health request may take, connect to last byte. A hung server "
              "fails the check after this long.",
              kind="float", default=5.0, minimum=0.1, maximum=300.0),
    )


def stop_params(*, graceful: str) -> tuple[Param, ...]:
    """pidfile and graceful_timeout."""
    return (
        Param("pidfile", "Pid file",
              "Pid file of the instance. Unset: a per-instance file under $HA_RSCTMP "
              "(/run/resource-agents/hapack-<agent>-<resource>.pid). Where the agent starts "
              "the server through start-stop-daemon (tomcat), root writes it: its directory "
              "must be writable by root alone.", check=absolute_path),
        Param("graceful_timeout", "Graceful stop phase (s)", graceful,
              kind="float", default=5.0, minimum=0.0, maximum=3600.0),
    )


def server_params(*, binary: str, directive: str, status_url: str, status_regex: str,
                  graceful: str) -> tuple[Param, ...]:
    """The parameters apache and nginx share, in meta-data order (config comes first);
    the port comes from the configuration's ``directive`` unless set."""
    return (
        Param("config", "Configuration file",
              "Absolute path of the instance's own configuration file.",
              required=True, unique=True, check=absolute_path),
        Param("binary", "Server binary", "Path of the server executable.", default=binary,
              check=absolute_path),
        Param("options", "Extra command-line options",
              "Extra options for the server command line, split like a shell would "
              "(no expansion), e.g. '-D SSL'.", check=split_options),
        *stop_params(graceful=graceful),
        *check_params(port=None, status_url=status_url, status_regex=status_regex,
                      directive=directive),
    )


class _Checks(Values):
    """check_params() but address and port, whose types depend on ``directive``."""
    status_url: str | None
    status_regex: str | None
    test_url: str | None
    test_regex: str | None
    expect_status: int
    client_timeout: float


class CheckParams(_Checks):
    """The typed view of check_params() with a fixed default port (see hapack.params.Values)."""
    address: str
    port: int


class StopParams(Values):
    """The typed view of stop_params()."""
    pidfile: str | None
    graceful_timeout: float


class ServerParams(StopParams, _Checks):
    """The typed view of server_params(): address and port unset come from the configuration."""
    address: str | None
    port: int | None
    config: str
    binary: str
    options: tuple[str, ...] | None


def server_actions(start: Callable, stop: Callable, monitor: Callable, *, start_timeout: int = 40,
                   stop_timeout: int = 60) -> tuple[Action, ...]:
    """start, stop, and monitor at depth 0 every 10 s, 10 every 30 s, 20 every 60 s."""
    return (Action("start", start, start_timeout), Action("stop", stop, stop_timeout),
            Action("monitor", monitor, 30, interval=10, depth=0),
            Action("monitor", monitor, 30, interval=30, depth=10),
            Action("monitor", monitor, 40, interval=60, depth=20))


def rsc_path(ctx: Context, suffix: str) -> str:
    return ctx.state_path(suffix)


def default_url(p: CheckParams, path: str) -> str:
    host = f"[{p.address}]" if ":" in p.address else p.address
    return f"http://{host}:{p.port}{path}"


def endpoint(ctx: Context[ServerParams], first_listen: Callable[[], _listen.Listen | None],
             status_path: Callable[[], str | None], default_path: str) -> tuple[int, str]:
    """(port, default status URL) of a web server: ``port``/``address`` when set, else the
    configuration's first listening socket (``first_listen()``); the status location
    the configuration maps (``status_path()``), else ``default_path``."""
    found = getattr(ctx, "_endpoint", None)
    if found is None:
        from hapack.ocf import _listen
        p = ctx.params
        try:
            listen = None if p.port else first_listen()
            path = default_path if p.status_url else (status_path() or default_path)
        except ValueError as exc:
            raise OCFError(f"{p.config}: {exc}", OCF.ERR_CONFIGURED) from None
        listen = listen or _listen.Listen(None, p.port or 80)
        found = ctx._endpoint = (listen.port, _listen.url(listen, p.address, path))
    return found


# -- logs ---------------------------------------------------------------------------

def tail(path: str | None, lines: int = 3, width: int = 200) -> str:
    """The last non-empty lines of a file (their last ``width`` characters), joined
    with ' | ' ('' when unreadable). Read as root into an exit reason, so never
    through a link the service user planted (:func:`_datadir.read_file`)."""
    if not path:
        return ""
    text = _datadir.read_file(path, offset=-8192, limit=8192).decode("utf-8", errors="replace")
    found = [line.strip()[-width:] for line in text.splitlines() if line.strip()]
    return " | ".join(found[-lines:])


# -- starting a foreground server --------------------------------------------------

def spawn(ctx: Context, argv: list[str], pidfile: str, output: str, user: str | None = None,
          env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
    """Run argv detached in the background; its pid goes to pidfile, its output to output."""
    _datadir.ensure_dir(os.path.dirname(pidfile), root_only=True)
    cmd = ["start-stop-daemon", "--start", "--background", "--make-pidfile",
           "--pidfile", pidfile, "--output", output, "--chdir", cwd or "/"]
    if user:
        cmd += ["--chuid", user]
    cmd += ["--startas", argv[0], "--", *argv[1:]]
    result = ctx.run(cmd, timeout=10, env=env)
    if not result.ok:
        raise GenericError(f"cannot start {argv[0]}: {result.output() or f'exit {result.returncode}'}")


# -- listening sockets ---------------------------------------------------------------

def _listening_inodes(port):
    """Inodes of the TCP sockets listening on port: one sock_diag dump per family
    (:func:`hapack.netlink.listening_inodes`), /proc/net/tcp{,6} when netlink
    is not available."""
    try:
        return netlink.listening_inodes(port)
    except OSError:
        return listening_inodes(port)


def _listens(pid, port):
    """Whether pid holds a socket listening on TCP port (this network namespace)."""
    inodes = _listening_inodes(port)
    return bool(inodes) and holds_socket(pid, inodes)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the instance ------------------------------------------------------------------

class Server:
    """One server instance: pid file, process identity, port, log."""

    def __init__(self, ctx, pidfile, *, exe=None, port=None, marker=None, log=None,
                 what="server"):
        self.ctx = ctx
        self.pidfile = pidfile
        self.exe = os.path.realpath(exe) if exe else None
        self.port = port
        self.marker = marker
        self.log = log
        self.what = what

    # level 0 ---------------------------------------------------------------------

    def _is_ours(self, pid):
        """The process is this server's: its executable matches (when readable: not
        across namespaces) and it is not younger than the pid file (a reused pid)."""
        if self.exe is not None:
            link = _exe(pid)
            if link is not None and link != self.exe:
                return False
        return not _younger_than(pid, self.pidfile)

    def pid(self) -> int | None:
        pid = _read_pid(self.pidfile)
        if pid is None or not _alive(pid) or not self._is_ours(pid):
            return None
        return pid

    def check_process(self) -> int | None:
        """Level 0: the live pid listening on the port; None when not running."""
        pid = self.pid()
        if pid is None:
            return None
        if self.port is not None and not _listens(pid, self.port):
            raise GenericError(f"{self.what} (pid {pid}) is running but not listening "
                               f"on port {self.port}")
        return pid

    def monitor(self, checks: Mapping[int, Callable[..., Any]]) -> int:
        if self.check_process() is None:
            return OCF.NOT_RUNNING
        self._run_checks(checks, self.ctx.check_level)
        return OCF.SUCCESS

    def _run_checks(self, checks, level):
        for depth in sorted(checks):
            if depth <= level:
                checks[depth](self.ctx)

    # start ---------------------------------------------------------------------------

    def start(self, launch: Callable, checks: dict[int, Callable]) -> None:
        ctx = self.ctx
        if self.pid() is not None:
            ctx.log.info(f"{self.what} is already running")
            self._wait_healthy(checks, ctx.deadline, started=False)
            return
        self._clear_stale()
        reserve = min(5.0, ctx.deadline.left() * 0.2)
        try:
            launch()
            self._wait_healthy(checks, ctx.deadline.sub(reserve), started=True)
        except (OCFError, CommandError) as exc:
            self._abort(exc)
            if isinstance(exc, CommandError):
                raise GenericError(str(exc)) from None
            raise
        ctx.log.info(f"{self.what} is up (pid {self.pid()})")

    def _wait_healthy(self, checks, deadline, started):
        import time
        interval = 0.01
        while True:
            if started and self._died():
                reason = f"{self.what} exited during start"
                break
            try:
                if self.check_process() is None:
                    raise GenericError(f"no live {self.what} process in {self.pidfile}")
                self._run_checks(checks, 10)
                return
            except OCFError as exc:
                reason = str(exc)
            if deadline.expired:
                break
            time.sleep(min(interval, deadline.left()))
            interval = min(interval * 1.5, 0.5)
        log = tail(self.log)
        raise GenericError(f"{self.what} did not become healthy: {reason}"
                           + (f"; log: {log}" if log else ""))

    def _died(self):
        """The pid file names a pid that is gone (the server died while starting)."""
        pid = _read_pid(self.pidfile)
        return pid is not None and not _alive(pid)

    def _abort(self, exc):
        self.ctx.log.warning(f"start failed ({exc}); cleaning up")
        try:
            self._terminate(self._pids(), self.ctx.deadline)
        finally:
            _remove(self.pidfile)

    def _clear_stale(self):
        found = self.leftovers()
        if found:
            self.ctx.log.warning(f"leftover processes of this instance: "
                                 f"{' '.join(map(str, found))}; stopping them")
            survivors = self._terminate(found, self.ctx.deadline.sub(self.ctx.deadline.left() * 0.7),
                                        term_wait=1.0)
            if survivors:
                raise GenericError(f"leftover processes {survivors} of this instance survived KILL")
        if os.path.exists(self.pidfile):
            self.ctx.log.info(f"removing stale pid file {self.pidfile}")
            _remove(self.pidfile)

    # stop --------------------------------------------------------------------------

    def leftovers(self, exclude: list[int] | tuple[Any, ...] = ()) -> list[int]:
        """Processes of this instance outside the live main process's tree.

        E.g. workers orphaned by a SIGKILLed master. A process counts when its
        process group or session is the pid recorded in the pid file and that
        pid is ours or gone (Linux does not reuse a pid while a group bears
        it, so a dead leader's group is still the instance's), or when its
        executable is ``exe`` and its command line has ``marker`` as a word.
        No guessing by name.
        """
        recorded = _read_pid(self.pidfile)
        if recorded is not None and _alive(recorded) and not self._is_ours(recorded):
            recorded = None  # the pid now leads someone else's group
        if recorded is None and (self.exe is None or self.marker is None):
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in exclude or int(entry) == os.getpid():
                continue
            pid = int(entry)
            if _alive(pid) and (self._in_group(pid, recorded) or self._marked(pid)):
                found.append(pid)
        return found

    def _in_group(self, pid, leader):
        if leader is None or pid == leader:
            return False
        ids = _group_ids(pid)
        if ids is None or leader not in ids:
            return False
        exe = _exe(pid) if self.exe is not None else None
        return exe is None or exe == self.exe

    def _marked(self, pid):
        if self.exe is None or self.marker is None or _exe(pid) != self.exe:
            return False
        from hapack.procfs import cmdline
        joined = " ".join(cmdline(pid))
        return self.marker in joined.split() or (" " in self.marker and self.marker in joined)

    def _pids(self):
        from hapack.procfs import children
        pid = self.pid()
        tree = [pid, *children(pid)] if pid else []
        return tree + self.leftovers(exclude=tree)

    def stop(self, graceful: int | Callable[..., Any] | None = None,
             graceful_timeout: float = 0.0) -> None:
        import signal
        from hapack.procfs import signal_pids, wait_gone
        ctx = self.ctx
        pids = self._pids()
        if not pids:
            _remove(self.pidfile)
            ctx.log.info(f"{self.what} is not running")
            return
        signal_pids(pids, signal.SIGCONT)
        main = self.pid()
        if graceful is not None and graceful_timeout > 0 and main:
            budget = Deadline(min(graceful_timeout, ctx.deadline.left() * 0.5))
            if self._graceful(graceful, main) is not False:
                pids = wait_gone(pids, budget)
                if pids:
                    ctx.log.info(f"graceful stop did not finish within {budget.seconds:.1f}s")
        survivors = self._terminate(pids, ctx.deadline, term_wait=10.0 if main else 1.0)
        if survivors:
            raise GenericError(f"{self.what} processes {' '.join(map(str, survivors))} are "
                               "still alive after SIGKILL")
        _remove(self.pidfile)
        ctx.log.info(f"{self.what} stopped")

    def _graceful(self, graceful, pid):
        """Ask pid to stop; False when that could not even be asked."""
        import signal
        if callable(graceful):
            return graceful(self.ctx, pid)
        self.ctx.log.info(f"sending {signal.Signals(graceful).name} to {pid} (graceful stop)")
        try:
            os.kill(pid, graceful)
        except ProcessLookupError:
            pass
        return True

    def _terminate(self, pids, deadline, term_wait=10.0):
        """TERM (waiting at most term_wait s), then KILL, within deadline; the survivors."""
        import signal
        from hapack.procfs import escalate, signal_pids
        pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            return []
        signal_pids(pids, signal.SIGCONT)
        term = Deadline(min(deadline.left() * 0.6, term_wait))
        left = escalate(pids, term, self.ctx.log, steps=((signal.SIGTERM, 1.0),))
        if left:
            left = escalate(left, deadline, self.ctx.log, steps=((signal.SIGKILL, 1.0),))
        return left
