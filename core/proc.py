"""The one seam for external commands.

Every external command hapack runs goes through :func:`run`: an argv list
(never a shell string), a timeout on every call, secrets redacted from
anything logged or raised. Tests pin exact command lines with
pytest-subprocess, which fakes :mod:`subprocess` and so this seam.
"""

import os

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
    def ok(self):
        return self.returncode == 0

    def output(self):
        """stderr, else stdout, stripped: what to quote in an error message."""
        return (self.stderr or self.stdout or "").strip()

    def __repr__(self):
        return f"Result({self.argv!r}, rc={self.returncode})"


def redact(argv, secrets):
    """argv with every secret (whole argument or substring) replaced."""
    secrets = [s for s in secrets if s]
    if not secrets:
        return list(argv)
    out = []
    for arg in argv:
        arg = str(arg)
        for secret in secrets:
            if secret in arg:
                arg = arg.replace(secret, REDACTED)
        out.append(arg)
    return out


def redact_text(text, secrets):
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def run(argv, *, timeout, input=None, env=None, cwd=None, secrets=(), log=None,
        user=None, check=False):
    """Run argv and return a :class:`Result` (text output).

    ``timeout`` (seconds) is mandatory: no external call may hang an agent.
    ``env`` replaces the environment when given; secrets are passed on stdin
    or in files, never in argv or the environment. ``user`` runs the command
    as that user (name) with its primary group and supplementary groups,
    dropping root's in the child. With ``check`` a
    non-zero exit raises CommandError naming the output.
    """
    import subprocess  # not on the path of agents that never run a command
    argv = [str(a) for a in argv]
    shown = redact(argv, secrets)
    if log is not None:
        log.debug("running: %s" % " ".join(shown))
    kwargs = {}
    if user is not None:  # the user's own uid, primary group and groups, as login would
        import pwd
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise CommandError(shown, f"no such user {user!r}") from None
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid,
                      extra_groups=os.getgrouplist(user, entry.pw_gid))
    try:
        proc = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=max(timeout, 0.001),
            env=env, cwd=cwd, close_fds=True, stdin=None if input is not None else subprocess.DEVNULL,
            **kwargs)
    except FileNotFoundError:
        raise CommandNotFound(shown, "command not found") from None
    except subprocess.TimeoutExpired:
        raise CommandTimeout(shown, f"no answer within {timeout:.1f}s") from None
    except PermissionError as exc:
        raise CommandError(shown, str(exc)) from None
    result = Result(shown, proc.returncode, redact_text(proc.stdout or "", secrets),
                    redact_text(proc.stderr or "", secrets))
    if check and proc.returncode != 0:
        raise CommandError(shown, f"exit {proc.returncode}: {result.output()}")
    return result


def which(name, path=None):
    """The absolute path of an executable, or None (no subprocess)."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    for folder in (path or os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")).split(os.pathsep):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None
