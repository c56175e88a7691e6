"""The one seam for external commands.

Every external command hapack runs goes through :func:`run`: an argv list
(never a shell string), a timeout on every call, secrets redacted from
anything logged or raised. Tests pin exact command lines with
pytest-subprocess, which fakes :mod:`subprocess` and so this seam.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from collections.abc import Mapping, Sequence
    import subprocess
    from collections.abc import Iterable

REDACTED = "[set]"


class CommandError(Exception):
    """An external command could not run or did not finish in time."""

    def __init__(self, argv, message):
        super().__init__(f"{' '.join(argv)}: {message}")
        self.argv = argv


class CommandNotFound(CommandError):
    pass


class CommandTimeout(CommandError):
    pass


class Result:
    __slots__ = ("argv", "returncode", "stdout", "stderr")

    def __init__(self, argv, returncode, stdout, stderr):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def output(self) -> str:
        """stderr, else stdout, stripped: what to quote in an error message."""
        return (self.stderr or self.stdout or "").strip()

    def __repr__(self):
        return f"Result({self.argv!r}, rc={self.returncode})"


def _word(char):
    return char.isalnum() or char == "_"


def _whole(text, start, secret):
    """The secret at text[start:] is a whole value: no word character joins it on a side
    where the secret itself ends in one ("admin" is not redacted inside "administrator")."""
    end = start + len(secret)
    if _word(secret[0]) and start > 0 and _word(text[start - 1]):
        return False
    return not (_word(secret[-1]) and end < len(text) and _word(text[end]))


def _spans(text, secrets):
    for secret in secrets:
        start = text.find(secret)
        while start != -1:
            if _whole(text, start, secret):
                yield start, start + len(secret)
            start = text.find(secret, start + 1)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """text with every whole occurrence of a secret replaced by ``[set]``.

    Whole values only: a password ``admin`` is redacted in ``user admin``,
    ``password=admin`` or ``'admin'``, never inside ``administrator``.
    Overlapping occurrences of several secrets become one ``[set]``.
    """
    secrets = [s for s in set(secrets) if s]
    if not secrets or not text:
        return text
    out, pos = [], 0
    for start, end in sorted(_spans(text, secrets), key=lambda span: (span[0], -span[1])):
        if start < pos:  # overlaps the previous redaction: widen it
            pos = max(pos, end)
            continue
        out += [text[pos:start], REDACTED]
        pos = end
    return "".join(out) + text[pos:]


def redact(argv: list[str], secrets: Iterable[str]) -> list[str]:
    """argv with every secret replaced where it is a whole element or a whole
    token of one (``--password=admin``), never inside a longer word."""
    return [redact_text(str(arg), secrets) for arg in argv]


def run(argv: Sequence[str], *, timeout: float | None, input: str | bytes | None = None,
        env: Mapping[str, str] | None = None, cwd: str | None = None,
        secrets: Iterable[str] = (), log: Any = None, user: str | None = None,
        check: bool = False) -> Result:
    """Run argv and return a :class:`Result` (text output).

    ``timeout`` (seconds) is mandatory: no external call may hang an agent.
    The command runs in a session and process group of its own; when the
    timeout passes, the whole group is killed (children and grandchildren
    included), so nothing it started outlives the deadline. Output that is
    not UTF-8 is decoded with replacement characters (never an exception).
    ``env`` replaces the environment when given; secrets are passed on stdin
    or in files, never in argv or the environment. ``user`` runs the command
    as that user (name) with its primary group and supplementary groups,
    dropping root's in the child. With ``check`` a
    non-zero exit raises CommandError naming the output.
    """
    argv = [str(a) for a in argv]
    shown = redact(argv, secrets)
    if log is not None:
        log.debug("running: %s" % " ".join(shown))
    proc = _popen(argv, shown, input is not None, env, cwd, user)
    return _finish(proc, shown, input, timeout, secrets, check)


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          cwd: str | None = None, user: str | None = None) -> Started:
    """Start argv ahead of its input: it runs (imports, initialises) and then waits
    on stdin until :meth:`Started.finish` hands it its input (or :meth:`Started.cancel`
    closes it). The command runs as under :func:`run`: own session and process group,
    the same timeout and redaction when finished. For a program whose start-up is
    the slow part and whose input is known only later (a fence agent's request)."""
    argv = [str(a) for a in argv]
    return Started(_popen(argv, argv, True, env, cwd, user), argv)


class Started:
    """A command started by :func:`start`, waiting for its input."""

    def __init__(self, proc: subprocess.Popen, argv: list[str]) -> None:
        self.proc = proc
        self.argv = argv

    @property
    def waiting(self) -> bool:
        """Still running, its input not given yet (it may still be initialising)."""
        return self.proc.poll() is None and not self.proc.stdin.closed  # type: ignore[union-attr]

    def finish(self, input: str, *, timeout: float, secrets: Iterable[str] = (),
               log: Any = None, check: bool = False) -> Result:
        """Hand it ``input`` (stdin is closed after it) and wait as :func:`run` does."""
        shown = redact(self.argv, secrets)
        if log is not None:
            log.debug("running (started %s): %s" % (self.proc.pid, " ".join(shown)))
        return _finish(self.proc, shown, input, timeout, secrets, check)

    def cancel(self, timeout: float = 1.0) -> None:
        """Close its stdin (a program that reads nothing exits); kill its group if it
        has not exited within ``timeout``."""
        import subprocess
        try:
            if self.proc.stdin is None or self.proc.stdin.closed:
                self.proc.wait(timeout)
            else:
                self.proc.communicate("", timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            self.proc.wait()


def _popen(argv, shown, stdin_pipe, env, cwd, user):
    import subprocess  # not on the path of agents that never run a command
    kwargs = _user_kwargs(user, shown) if user is not None else {}
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
            env=env, cwd=cwd, close_fds=True, start_new_session=True, **kwargs)
    except FileNotFoundError:
        raise CommandNotFound(shown, "command not found") from None
    except PermissionError as exc:
        raise CommandError(shown, str(exc)) from None


def _finish(proc, shown, input, timeout, secrets, check):
    stdout, stderr = _communicate(proc, input, timeout, shown)
    result = Result(shown, proc.returncode, redact_text(stdout or "", secrets),
                    redact_text(stderr or "", secrets))
    if check and proc.returncode != 0:
        raise CommandError(shown, f"exit {proc.returncode}: {result.output()}")
    return result


def _user_kwargs(user, shown):
    """The user's own uid, primary group and groups, as login would."""
    import pwd
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise CommandError(shown, f"no such user {user!r}") from None
    return {"user": entry.pw_uid, "group": entry.pw_gid,
            "extra_groups": os.getgrouplist(user, entry.pw_gid)}


AFTER_KILL = 2.0  # seconds to collect the output of a killed group


def _communicate(proc, input, timeout, shown):
    """(stdout, stderr) of proc; on timeout its whole process group is killed first."""
    import subprocess
    try:
        return proc.communicate(input, timeout=max(timeout, 0.001))
    except subprocess.TimeoutExpired:
        pass
    kill_group(proc)
    try:
        proc.communicate(timeout=AFTER_KILL)
    except subprocess.TimeoutExpired:  # a descendant left the group and holds the pipes
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
    raise CommandTimeout(shown, f"no answer within {timeout:.1f}s")


SIGKILL = 9  # the number, not the signal module: it imports enum


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group that proc leads (and proc itself).

    Only a group led by our own, not yet reaped child with that pid is
    signalled, never a group the pid does not lead (a test double's pid, say).
    """
    if _leads_own_group(proc.pid):
        try:
            os.killpg(proc.pid, SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()


def _leads_own_group(pid) -> bool:
    from hapack.procfs import group_ids, stat
    if not isinstance(pid, int) or pid <= 1:
        return False
    info, ids = stat(pid), group_ids(pid)
    return info is not None and ids is not None and info[1] == os.getpid() and ids[0] == pid


def which(name: str, path: str | None = None) -> str | None:
    """The absolute path of an executable, or None (no subprocess)."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    for folder in (path or os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")).split(os.pathsep):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None
