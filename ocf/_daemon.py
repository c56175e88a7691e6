"""Shared machinery for agents that run one server process per instance.

Used by the apache, nginx and tomcat agents; meant for any agent whose
resource is "a server with a pid file and a health check" (a broker, a
directory, a database). The API is small and kept stable:

``Server(ctx, pidfile, exe=None, port=None, marker=None, log=None, what="server")``
    One instance as the agent sees it. ``exe`` is the executable the
    process must be (guards against a reused pid; also identifies
    leftovers), ``port`` the TCP port it must listen on, ``marker`` a word
    that appears in the command line of the instance's processes and of no
    other's (e.g. the config file path), ``log`` a file
    whose last lines explain a failed start.

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
    ``ctx.deadline``. Zombies count as stopped. The pid
    file is removed. Raises GenericError naming the pids that survived KILL.

``spawn(ctx, argv, pidfile, output, user=None, env=None, cwd=None)``
    Start a server that stays in the foreground as a detached daemon
    (start-stop-daemon --background --make-pidfile --output): the pid file
    is written by root before the program runs as ``user``.

``http_expect(ctx, url, timeout, status=200, regex=None, parse=None)``
    One HTTP GET bounded by ``timeout`` and the deadline; GenericError when
    the status differs, ``regex`` does not match the body or ``parse(body)``
    raises ValueError. Returns ``parse(body)``, or the body.
    ``http_get(url, timeout)`` is the bare GET: (status, body).

``rsc_path(ctx, suffix)``
    A per-instance runtime path under ``$HA_RSCTMP`` (default
    /run/resource-agents): ``hapack-<agent>-<instance>.<suffix>``.

``check_params(...)``, ``stop_params(...)``, ``server_params(...)``
    The parameter declarations the HTTP-checked agents share.

``split_options(text)``, ``regex(text)``, ``url(text)``, ``absolute_path(text)``
    Param checks.
"""

import os
import signal

from hapack import process
from hapack.ocf import OCF, GenericError, OCFError, Param
from hapack.proc import CommandError
from hapack.timing import Deadline

RSCTMP = "/run/resource-agents"


# -- parameter checks and shared declarations ----------------------------------

def split_options(text):
    """Extra command-line options, split like a shell would (no expansion)."""
    import shlex
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} cannot be split into arguments: {exc}") from None


def regex(text):
    import re
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a valid regular expression: {exc}") from None
    return text


def url(text):
    if not text.startswith(("http://", "https://")) or len(text) < 10:
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    return text


def absolute_path(text):
    if not os.path.isabs(text):
        raise ValueError(f"{text!r} is not an absolute path")
    return os.path.normpath(text)


def check_params(*, port, status_url, status_regex):
    """address, port, status_url, status_regex, test_url, test_regex,
    expect_status and client_timeout, with the agent's own defaults and texts."""
    return (
        Param("address", "Address for the checks",
              "IP address the health checks connect to (the server must listen there).",
              default="127.0.0.1"),
        Param("port", "Port for the checks",
              "TCP port the server listens on: level 0 requires the server's main process "
              "to listen on it, and the default status URL uses it.",
              kind="integer", default=port, minimum=1, maximum=65535),
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


def stop_params(*, graceful):
    """pidfile and graceful_timeout."""
    return (
        Param("pidfile", "Pid file",
              "Pid file of the instance. Unset: a per-instance file under $HA_RSCTMP "
              "(/run/resource-agents/hapack-<agent>-<resource>.pid).", check=absolute_path),
        Param("graceful_timeout", "Graceful stop phase (s)", graceful,
              kind="float", default=5.0, minimum=0.0, maximum=3600.0),
    )


def server_params(*, binary, port, status_url, status_regex, graceful):
    """The parameters apache and nginx share, in meta-data order (config comes first)."""
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
        *check_params(port=port, status_url=status_url, status_regex=status_regex),
    )


def rsc_path(ctx, suffix):
    base = ctx.environ.get("HA_RSCTMP") or RSCTMP
    name = ctx.instance.replace("/", "_")
    return os.path.join(base, f"hapack-{ctx.agent.name}-{name}.{suffix}")


def default_url(p, path):
    host = f"[{p.address}]" if ":" in p.address else p.address
    return f"http://{host}:{p.port}{path}"


# -- checks ---------------------------------------------------------------------

def http_expect(ctx, url, timeout, status=200, regex=None, parse=None):
    """GET url; raise GenericError unless it answers as expected.

    Returns ``parse(body)`` when ``parse`` is given (it raises ValueError on
    a bad page), else the body.
    """
    limit = ctx.deadline.left(timeout)
    if limit <= 0:
        raise GenericError(f"no time left to check {url}")
    got, body = http_get(url, limit)
    if got != status:
        raise GenericError(f"{url} answered HTTP {got}, expected {status}")
    if regex is not None:
        import re
        if re.search(regex, body) is None:
            raise GenericError(f"{url}: the answer does not contain /{regex}/: {_excerpt(body)}")
    if parse is None:
        return body
    try:
        return parse(body)
    except ValueError as exc:
        raise GenericError(f"{url}: {exc}") from None


def http_get(url, timeout, max_body=1 << 20):
    """(status, body) of an HTTP/1.0 GET; ``timeout`` bounds the whole exchange.

    Used instead of hapack.probe.http_get, which fails on every answer (it
    reads ``conn.sock`` after http.client has handed the closed connection's
    socket to the response). A raw socket also keeps http.client and email
    out of every monitor. HTTPS is not verified: this is a health check.
    """
    import socket
    import time
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    end = time.monotonic() + timeout
    default = 443 if parts.scheme == "https" else 80
    host, port = parts.hostname, parts.port or default
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nUser-Agent: hapack\r\n"
               "Accept: */*\r\n\r\n").encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if parts.scheme == "https":
                sock = _tls(sock, host)
            sock.sendall(request)
            data = _read_all(sock, end, max_body)
    except (TimeoutError, socket.timeout):
        raise GenericError(f"{url}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise GenericError(f"{url}: cannot connect to {host}:{port}: "
                           f"{exc.strerror or exc}") from None
    return _parse_response(url, data)


def _tls(sock, host):
    import ssl
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(sock, server_hostname=host)


def _read_all(sock, end, max_body):
    import time
    data = b""
    while len(data) < max_body:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def parse_response(data):
    """(status, body text) of a raw HTTP answer; ValueError when it is not one."""
    head, _, body = data.partition(b"\r\n\r\n")
    words = head.split(b"\r\n", 1)[0].split()
    if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
        raise ValueError(f"not an HTTP answer: {_excerpt(head.decode('latin-1'))}")
    return int(words[1]), body.decode("utf-8", errors="replace")


def _parse_response(url, data):
    if not data:
        raise GenericError(f"{url}: the server closed the connection without answering")
    try:
        return parse_response(data)
    except ValueError as exc:
        raise GenericError(f"{url}: {exc}") from None


def _excerpt(text, limit=80):
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def tail(path, lines=3, width=200):
    """The last non-empty lines of a file (their last ``width`` characters), joined
    with ' | ' ('' when unreadable)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    found = [line.strip()[-width:] for line in text.splitlines() if line.strip()]
    return " | ".join(found[-lines:])


# -- starting a foreground server --------------------------------------------------

def spawn(ctx, argv, pidfile, output, user=None, env=None, cwd=None):
    """Run argv detached in the background; its pid goes to pidfile, its output to output."""
    os.makedirs(os.path.dirname(pidfile), exist_ok=True)
    cmd = ["start-stop-daemon", "--start", "--background", "--make-pidfile",
           "--pidfile", pidfile, "--output", output, "--chdir", cwd or "/"]
    if user:
        cmd += ["--chuid", user]
    cmd += ["--startas", argv[0], "--", *argv[1:]]
    result = ctx.run(cmd, timeout=10, env=env)
    if not result.ok:
        raise GenericError(f"cannot start {argv[0]}: {result.output() or f'exit {result.returncode}'}")


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
        """The process is this server's: its executable matches and it is
        not younger than the pid file (a reused pid started later)."""
        if self.exe is not None:
            link = process.exe(pid)
            if link is not None and link.removesuffix(" (deleted)") != self.exe:
                return False  # an unreadable link (other namespace) cannot judge
        return not _younger_than(pid, self.pidfile)

    def pid(self):
        pid = process.read_pidfile(self.pidfile)
        if pid is None or not process.alive(pid) or not self._is_ours(pid):
            return None
        return pid

    def check_process(self):
        """Level 0: the live pid listening on the port; None when not running."""
        pid = self.pid()
        if pid is None:
            return None
        if self.port is not None and self.port not in process.listening_ports([pid]):
            raise GenericError(f"{self.what} (pid {pid}) is running but not listening "
                               f"on port {self.port}")
        return pid

    def monitor(self, checks):
        if self.check_process() is None:
            return OCF.NOT_RUNNING
        self._run_checks(checks, self.ctx.check_level)
        return OCF.SUCCESS

    def _run_checks(self, checks, level):
        for depth in sorted(checks):
            if depth <= level:
                checks[depth](self.ctx)

    # start ---------------------------------------------------------------------------

    def start(self, launch, checks):
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
        interval = 0.05
        while True:
            if self._dead_after_start(started):
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

    def _dead_after_start(self, started):
        """The pid file names a pid that is gone (the server died while starting)."""
        pid = process.read_pidfile(self.pidfile)
        return started and pid is not None and not process.alive(pid)

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

    def leftovers(self, exclude=()):
        """Processes of this instance outside the live main process's tree.

        E.g. workers orphaned by a SIGKILLed master. A process counts when its
        process group or session is the pid recorded in the pid file (even a
        dead one: Linux does not reuse a pid while a group bears it), or when
        its executable is ``exe`` and its command line has ``marker`` as a
        word. No guessing by name.
        """
        recorded = process.read_pidfile(self.pidfile)
        if recorded is None and (self.exe is None or self.marker is None):
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in exclude or int(entry) == os.getpid():
                continue
            pid = int(entry)
            if process.alive(pid) and (self._in_group(pid, recorded) or self._marked(pid)):
                found.append(pid)
        return found

    def _in_group(self, pid, leader):
        if leader is None or pid == leader:
            return False
        ids = _group_ids(pid)
        return ids is not None and leader in ids and self._is_ours(pid)

    def _marked(self, pid):
        if self.exe is None or self.marker is None:
            return False
        if (process.exe(pid) or "").removesuffix(" (deleted)") != self.exe:
            return False
        joined = " ".join(process.cmdline(pid))
        return self.marker in joined.split() or (" " in self.marker and self.marker in joined)

    def _pids(self):
        pid = self.pid()
        tree = [pid, *process.children(pid)] if pid else []
        return tree + self.leftovers(exclude=tree)

    def stop(self, graceful=None, graceful_timeout=0.0):
        ctx = self.ctx
        pids = self._pids()
        if not pids:
            _remove(self.pidfile)
            ctx.log.info(f"{self.what} is not running")
            return
        process.signal_pids(pids, signal.SIGCONT)
        main = self.pid()
        if graceful is not None and graceful_timeout > 0 and main:
            budget = Deadline(min(graceful_timeout, ctx.deadline.left() * 0.5))
            if self._graceful(graceful, main) is not False:
                pids = process.wait_gone(pids, budget)
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
        if callable(graceful):
            return graceful(self.ctx, pid)
        self.ctx.log.info(f"sending {signal.Signals(graceful).name} to {pid} (graceful stop)")
        process.signal_pids([pid], graceful)
        return True

    def _terminate(self, pids, deadline, term_wait=10.0):
        """TERM (waiting at most term_wait s), then KILL, within deadline; the survivors."""
        pids = [pid for pid in pids if process.alive(pid)]
        if not pids:
            return []
        process.signal_pids(pids, signal.SIGCONT)
        term = Deadline(min(deadline.left() * 0.6, term_wait))
        left = process.escalate(pids, term, self.ctx.log, steps=((signal.SIGTERM, 1.0),))
        if left:
            left = process.escalate(left, deadline, self.ctx.log, steps=((signal.SIGKILL, 1.0),))
        return left


def _younger_than(pid, path, slack=1.0):
    """True when pid started more than ``slack`` seconds after path was last written."""
    try:
        mtime = os.stat(path).st_mtime
        info = process.stat(pid)
        with open("/proc/stat", encoding="ascii") as handle:
            btime = next(int(line.split()[1]) for line in handle if line.startswith("btime"))
    except (OSError, StopIteration, ValueError):
        return False
    if info is None:
        return False
    return btime + info[2] / os.sysconf("SC_CLK_TCK") > mtime + slack


def _group_ids(pid):
    """(process group, session) of pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[2]), int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
