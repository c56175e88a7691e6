"""The BMC password from exactly one source: the value, a script, or a file.

``password`` comes with the request (stdin from the fencer, or the CIB);
``password_script`` is run (as an argv, no shell) and its first output line
is the password; ``password_file`` is read, and must be owned by root (or
the user running the agent) and unreadable by group and others, like an
ssh key. The password found is registered for redaction before anything
else can print it.
"""

from __future__ import annotations

import os
import shlex
import stat

from hapack.command import CommandError, run
from hapack.stonith.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.stonith.fencing import RedactingLogger, Secrets
    from hapack.stonith.fence_bmc import Params

SOURCES = ("password", "password_script", "password_file")
MAX_FILE = 65536  # a password file is one short line; read no more than this


def sources_set(values: Params) -> list[str]:
    return [name for name in SOURCES if values[name] not in (None, "")]


def check_sources(values: Params) -> str | None:
    """ConfigError unless at most one password source is set (no I/O)."""
    chosen = sources_set(values)
    if len(chosen) > 1:
        raise ConfigError(f"set only one of {', '.join(chosen)}")
    return chosen[0] if chosen else None


def resolve(values: Params, timeout: float, secrets: Secrets, log: RedactingLogger) -> str | None:
    """The password (None if no source is set); ``secrets`` gets it added."""
    source = check_sources(values)
    if source is None:
        return None
    if source == "password":
        password = values.password
    elif source == "password_script":
        password = from_script(values.password_script or "", timeout, log)  # set: source
    else:
        password = from_file(values.password_file or "")  # set: the source
    secrets.add(password)
    return password


def from_script(script: str, timeout: float, log: RedactingLogger) -> str:
    argv = shlex.split(script)
    if not argv:
        raise ConfigError("parameter 'password_script' is empty")
    try:
        result = run(argv, timeout=timeout, log=log)
    except CommandError as exc:
        raise ConfigError(f"password_script failed: {exc}") from None
    if not result.ok:
        # its output may hold the password: name the exit status only
        raise ConfigError(f"password_script {argv[0]} exited with status {result.returncode}")
    lines = result.stdout.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"password_script {argv[0]} printed no password")
    if "\ufffd" in lines[0]:  # the seam decodes what is not UTF-8 with replacements
        raise ConfigError(f"password_script {argv[0]}: the password is not valid UTF-8 text")
    return lines[0]


def check_file(path: str) -> None:
    """ConfigError unless ``path`` is a private regular file (no read)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"password_file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"password_file {path} is not a regular file")
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"password_file {path} must be owned by root (owner uid {info.st_uid})")
    if info.st_mode & 0o077:
        raise ConfigError(f"password_file {path} is accessible to group or others "
                          f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 it")


def from_file(path: str) -> str:
    """The first line of a private password file (read through no symlink)."""
    check_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            first = handle.read(MAX_FILE).split(b"\n", 1)[0].rstrip(b"\r")
    except OSError as exc:
        raise ConfigError(f"password_file {path}: cannot read it ({exc.strerror})") from None
    if not first:
        raise ConfigError(f"password_file {path} is empty")
    return decoded(first, f"password_file {path}")


def decoded(data: bytes, what: str) -> str:
    """data as UTF-8 text; ConfigError naming ``what`` (never the bytes) if it is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: the password is not valid UTF-8 text") from None
