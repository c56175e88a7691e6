"""Passwords from credentials files that only root can read.

A monitor's password lives in a file (first line; the trailing newline is
not part of it) owned by root with no group or other permissions. It is
read by the agent itself and spoken on the wire; it never goes to a command
line, an environment, or a log line.
"""

from __future__ import annotations

import os
import stat as stat_

from hapack.ocf import ConfigError, NotInstalled, PermError


def check_secret_file(path: str) -> os.stat_result:
    """Raise unless path is a regular file owned by root and readable by root only."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise NotInstalled(f"credentials file {path} does not exist on this node") from None
    if not stat_.S_ISREG(st.st_mode):
        raise ConfigError(f"credentials file {path} is not a regular file")
    if st.st_uid != 0:
        raise PermError(f"credentials file {path} must be owned by root (owner uid {st.st_uid})")
    if st.st_mode & 0o077:
        raise PermError(f"credentials file {path} is readable by others (mode "
                        f"{stat_.S_IMODE(st.st_mode):04o}): chmod 0600 it")
    return st


def read_secret(path: str) -> str:
    """The password in a root-only credentials file."""
    check_secret_file(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(4096)
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise ConfigError(f"credentials file {path} is empty (the password is its first line)")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:  # name no byte of it
        raise ConfigError(f"credentials file {path}: the password is not valid UTF-8 "
                          "text") from None
