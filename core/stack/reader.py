"""Reading a parsed TOML document table by table, collecting every problem.

:class:`Reader` gives typed access to the tables of a stack file and records
a problem (key, message) instead of raising, so that a stack file with
several mistakes is reported in one go, as one :class:`StackError`. Every
table is read through it, ``[hamon]`` included (:mod:`hapack.hamon.config`).
The value checks used with :meth:`Reader.value` are here too.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Any, Callable, Iterable

from hapack.stack.durations import EXAMPLE, parse_duration
from hapack.stack.model import Ops

_PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_NODE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_IFACE_RE = re.compile(r"^[^/:\s]{1,15}$")
#: Characters no value may hold: they would end a line of an agent's input, a
#: Heartbeat file or a shell command (NUL, CR, LF and the other C0 controls, DEL).
_CONTROL = frozenset(chr(c) for c in range(32)) | {"\x7f"}
_MISSING = object()


class StackError(ValueError):
    """A stack file that cannot be used.

    ``problems`` is a tuple of (key, message); ``key`` is a dotted TOML path
    such as ``layers[2].data_dir`` ('' for the file as a whole). ``file``,
    ``key`` and ``message`` are those of the first problem. ``str()`` gives
    one line per problem: ``FILE: KEY: MESSAGE``.
    """

    def __init__(self, file: str, problems: Iterable[tuple[str, str]]):
        self.file = str(file)
        self.problems = tuple(problems)
        self.key, self.message = self.problems[0]
        super().__init__("\n".join(
            f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}"
            for key, message in self.problems))


class Reader:
    """Typed access to the parsed TOML that records problems instead of raising."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[tuple[str, str]] = []

    def problem(self, key: str, message: str) -> None:
        if (key, message) not in self.problems:
            self.problems.append((key, message))

    def raise_problems(self) -> None:
        """Raise the StackError of every problem recorded, if any."""
        if self.problems:
            raise StackError(self.file, self.problems)

    def table(self, data: Any, key: str, allowed: Iterable[str],
              required: Iterable[str] = ()) -> dict | None:
        """``data`` as a dict, with unknown keys and missing required keys reported."""
        if not isinstance(data, dict):
            self.problem(key, f"expected a table, got {type_name(data)}")
            return None
        allowed = tuple(allowed)
        for name in data:
            if name not in allowed:
                self.problem(join(key, name), f"unknown key (known keys here: {', '.join(allowed)})")
        for name in required:
            if name not in data:
                self.problem(join(key, name), "is required")
        return data

    def value(self, table: dict, key: str, name: str | int, kind: Any, default: Any = _MISSING,
              check: Callable[[Any], Any] | None = None, *, secret: bool = False) -> Any:
        """One scalar: kind is str, int, bool or 'duration' (whole ms). None on a problem.

        Strings never hold control characters (newline, CR, NUL...). A
        ``secret`` value is never quoted in a message.
        """
        path = join(key, name)
        if name not in table:
            if default is _MISSING:
                self.problem(path, "is required")
                return None
            return default
        try:
            value = _typed(table[name], kind, secret)
            return value if check is None else check(value)
        except ValueError as exc:
            self.problem(path, "the value is refused (not shown: it is secret)" if secret
                         and not str(exc).startswith("expected") else str(exc))
            return None

    def params(self, table: dict, key: str) -> dict[str, str]:
        """A [*.params] table: agent parameter name -> value, as OCF strings."""
        raw = table.get("params", {})
        path = join(key, "params")
        if not isinstance(raw, dict):
            self.problem(path, f"expected a table, got {type_name(raw)}")
            return {}
        out = {}
        for name, value in raw.items():
            where = join(path, name)
            if not _PARAM_RE.fullmatch(name):
                self.problem(where, "is not a valid parameter name")
            elif isinstance(value, bool):
                out[name] = "true" if value else "false"
            elif isinstance(value, int):
                out[name] = str(value)
            elif isinstance(value, str):
                if _CONTROL.intersection(value):
                    self.problem(where, "a parameter value cannot hold a newline, carriage "
                                 "return, NUL or other control character")
                else:
                    out[name] = value
            else:
                self.problem(where, f"expected a string, integer or boolean, got {type_name(value)}")
        return out

    def ops(self, table: dict, key: str, allowed: Iterable[str]) -> dict[str, int]:
        """The [*.ops] durations the stack file gives (ms); defaults are applied by
        :meth:`with_defaults`, once the agent, and so its declared timeouts, is known."""
        raw = table.get("ops", {})
        path = join(key, "ops")
        if self.table(raw, path, allowed) is None:
            return {}
        given = {name: self.value(raw, path, name, "duration", check=positive_ms)
                 for name in allowed if name in raw}
        return {name: ms for name, ms in given.items() if ms is not None}

    def with_defaults(self, key: str, given: dict[str, int], defaults: dict[str, int]) -> Ops:
        values = dict(defaults)
        values.update(given)
        if (values.get("promoted_monitor_interval") is not None
                and values["promoted_monitor_interval"] == values.get("monitor_interval")):
            self.problem(join(join(key, "ops"), "promoted_monitor_interval"),
                         "must differ from monitor_interval (Pacemaker tells the two monitors "
                         "apart by their interval)")
        return Ops(**values)


_KIND_NAMES = {str: "a string", int: "an integer", bool: "a boolean (true or false)"}


def _typed(raw: Any, kind: Any, secret: bool) -> Any:
    if kind == "duration":
        if not isinstance(raw, str):
            raise ValueError(f"expected a duration string with its unit, such as {EXAMPLE}, "
                             f"got {type_name(raw)}: write the unit")
        return parse_duration(raw)
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise ValueError(f"expected {_KIND_NAMES[kind]}, got {type_name(raw)}")
    if kind is str and _CONTROL.intersection(raw):
        raise ValueError("expected a string without newline, carriage return, NUL or other "
                         "control characters" if secret else
                         f"{raw!r} holds a newline, carriage return, NUL or other control "
                         "character")
    return raw


def type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def join(key: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{key}[{name}]"
    return f"{key}.{name}" if key else str(name)


# -- value checks for Reader.value: each returns the value or raises ValueError ------

def positive_ms(value: int) -> int:
    if value <= 0:
        raise ValueError("must be longer than 0")
    return value


def resource_id(text: str) -> str:
    if not _ID_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid name (a letter, then letters, digits, '-' "
                         "or '_'; 63 characters at most)")
    return text


def node_name(text: str) -> str:
    if not _NODE_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid node name (the node's host name: letters, "
                         "digits and '-')")
    return text


def interface(text: str) -> str:
    if not _IFACE_RE.fullmatch(text) or text in (".", ".."):
        raise ValueError(f"{text!r} is not a valid interface name")
    return text


def param_name(text: str) -> str:
    if not _PARAM_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid parameter name")
    return text


def abs_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    norm = posixpath.normpath(text)
    return "/" + norm.lstrip("/")


def abs_path_or_empty(text: str) -> str:
    return abs_path(text) if text else ""


def word(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} must be one word (no spaces)")
    return text


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def ip_interface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if "/" not in text:
        raise ValueError(f"{text!r} has no prefix length: write the node's address with its "
                         "prefix, e.g. \"198.18.240.11/24\"")
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an address with a prefix length") from None


def choice(*choices: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{text!r} is not one of: {', '.join(choices)}")
        return text
    return check


def within(low: float, high: float | None = None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value < low or (high is not None and value > high):
            raise ValueError(f"{value} is outside {low}..{high if high is not None else ''}")
        return value
    return check
