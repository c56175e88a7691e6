"""Parameters declared once.

A :class:`Param` is the single declaration of one agent parameter: its name,
kind, default, whether it is required or unique, its descriptions, and an
optional check. The same tuple of declarations drives the OCF meta-data,
``OCF_RESKEY_*`` parsing, validate-all, usage text, the README's parameter
tables and the fence agent's argv and stdin parsing.

This module is on every agent's hot path (a monitor is a fresh interpreter),
so it imports nothing beyond the standard library's core.
"""

from __future__ import annotations

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing (the monitor path)
if TYPE_CHECKING:
    from collections.abc import Callable, ItemsView, Iterable, Mapping, Sequence
    from typing import Any

KINDS = ("string", "integer", "boolean", "float", "choice")

_TRUE = frozenset(("1", "true", "yes", "on", "y"))
_FALSE = frozenset(("0", "false", "no", "off", "n"))


class ParamError(ValueError):
    """A parameter value is missing or invalid; the message names it."""

    def __init__(self, param, message):
        super().__init__(f"parameter '{param}': {message}")
        self.param = param


class MissingParam(ParamError):
    def __init__(self, param):
        super().__init__(param, "is required but not set")


def parse_bool(text: str) -> bool:
    """The one boolean parser: Pacemaker's words (crm_is_true), either way; else ValueError."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def is_true(text: "str | None") -> bool:
    """True only for a true word (``None``, empty or anything else: False), as Pacemaker
    reads its own meta-attributes and options."""
    try:
        return text is not None and parse_bool(text)
    except ValueError:
        return False


def absolute_path(text: str) -> str:
    """A parameter check: an absolute path, normalised (``//a/./b/`` -> ``/a/b``)."""
    import os.path
    if not os.path.isabs(text):
        raise ValueError(f"{text!r} is not an absolute path")
    return os.path.normpath(text)


def parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text!r} is not a finite number")
    return value


class Param:
    """One parameter of an agent, declared once.

    kind: string, integer, boolean, float (meta-data type string) or choice
    (a string from ``choices``; meta-data type string, since resource-agents'
    DTD has no select). ``check`` is an optional callable that takes the
    parsed value and returns the value to use, raising ValueError with a
    readable message. ``secret`` values are never printed or logged.
    ``aliases`` are other names accepted for the parameter, deprecated: the
    stock resource agent's name for an OCF agent (``OCF_RESKEY_<alias>``,
    warned about), fence-agents' older names for the fence agent. ``short``
    is the fence agent's one-letter command-line option (``-a`` for ``ip``).
    ``alias_forms`` maps an alias to a function turning the stock agent's value
    into this parameter's (pgsql ``pgctl=/usr/lib/postgresql/15/bin/pg_ctl`` is
    ``bindir=/usr/lib/postgresql/15/bin``).
    ``minimum``/``maximum`` bound integer and float values.
    """

    __slots__ = ("name", "shortdesc", "longdesc", "kind", "default", "required",
                 "unique", "choices", "check", "secret", "aliases", "minimum",
                 "maximum", "advanced", "short", "alias_forms")
    # set once in __init__ through object.__setattr__; declared for the type checker
    name: str
    shortdesc: str
    longdesc: str
    kind: str
    default: Any
    required: bool
    unique: bool
    choices: tuple[str, ...]
    check: Callable[[Any], Any] | None
    secret: bool
    aliases: tuple[str, ...]
    minimum: float | None
    maximum: float | None
    advanced: bool
    short: str | None
    alias_forms: dict[str, Callable[[str], str]]

    def __init__(self, name, shortdesc, longdesc="", *, kind="string", default=None,
                 required=False, unique=False, choices=(), check=None, secret=False,
                 aliases=(), minimum=None, maximum=None, advanced=False, short=None,
                 alias_forms=None):
        if kind not in KINDS:
            raise TypeError(f"{name}: unknown kind {kind!r}")
        if required and default is not None:
            raise TypeError(f"{name}: a required parameter has no default")
        if kind == "choice" and not choices:
            raise TypeError(f"{name}: a choice parameter needs choices")
        if choices and default is not None and default not in choices:
            raise TypeError(f"{name}: default {default!r} is not one of its choices")
        if short is not None and (len(short) != 1 or not short.isalnum()):
            raise TypeError(f"{name}: short option {short!r} is not one letter or digit")
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "shortdesc", shortdesc)
        set_(self, "longdesc", longdesc or shortdesc)
        set_(self, "kind", kind)
        set_(self, "default", default)
        set_(self, "required", required)
        set_(self, "unique", unique)
        set_(self, "choices", tuple(choices))
        set_(self, "check", check)
        set_(self, "secret", secret)
        set_(self, "aliases", tuple(aliases))
        set_(self, "minimum", minimum)
        set_(self, "maximum", maximum)
        set_(self, "advanced", advanced)
        set_(self, "short", short)
        set_(self, "alias_forms", dict(alias_forms or {}))
        unknown = set(self.alias_forms) - set(self.aliases)
        if unknown:
            raise TypeError(f"{name}: alias_forms for undeclared aliases {sorted(unknown)}")

    def __setattr__(self, name, value):
        raise AttributeError("Param is frozen")

    def __repr__(self):
        return f"Param({self.name!r}, kind={self.kind!r})"

    def with_aliases(self, *aliases: str, **forms: Callable[[str], str]) -> Param:
        """This declaration with more (deprecated) names, for an agent that shares it
        with others: ``common_params()``'s user is pgsql's ``pgdba``."""
        copy = object.__new__(Param)
        for slot in self.__slots__:
            object.__setattr__(copy, slot, getattr(self, slot))
        object.__setattr__(copy, "aliases", self.aliases + tuple(aliases))
        object.__setattr__(copy, "alias_forms", {**self.alias_forms, **forms})
        return copy

    @property
    def default_text(self) -> str:
        """The default as it appears in meta-data and docs ('' for none)."""
        if self.default is None:
            return ""
        if self.kind == "boolean":
            return "true" if self.default else "false"
        if self.kind == "float":
            return f"{self.default:g}"
        return str(self.default)

    def convert(self, text: str) -> Any:
        """Turn the raw string into a typed value, or raise ParamError."""
        value: Any
        try:
            if self.kind == "boolean":
                value = parse_bool(text)
            elif self.kind == "integer":
                value = parse_int(text)
            elif self.kind == "float":
                value = parse_float(text)
            else:
                value = text
            if self.choices and value not in self.choices:
                raise ValueError(f"{text!r} is not one of: {', '.join(self.choices)}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{text!r} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{text!r} is above the maximum {self.maximum}")
            if self.check is not None:
                value = self.check(value)
        except ValueError as exc:
            raise ParamError(self.name, str(exc)) from None
        return value


class Values:
    """The parsed, typed, read-only parameters handed to every verb.

    An agent declares the typed view of its parameters as a subclass with one
    annotation per declared :class:`Param` and no other body, e.g.::

        class Params(Values):
            ip: str
            nic: str | None

    and passes it to its Agent (``values=Params``): :func:`parse` then builds an
    instance of it, the verbs take ``ctx: Context[Params]``, and the type
    checker reads ``ctx.params.<name>`` against those annotations, so a
    misspelled name is an error before anything runs. The Param table stays the
    one declaration: tests/unit/test_types.py checks that every agent's
    annotations name exactly its parameters, with the type each one parses to.
    The annotations cost nothing at run time (they stay strings).
    """

    __slots__ = ("_values", "_secret")
    _values: dict[str, Any]
    _secret: frozenset[str]

    def __init__(self, values: Mapping[str, Any], secret: Iterable[str] = ()) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_secret", frozenset(secret))

    if not TYPE_CHECKING:  # hidden from the checker: it reads the subclass's annotations
        def __getattr__(self, name):
            try:
                return self._values[name]
            except KeyError:
                raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("parameters are read-only")

    def __getitem__(self, name):
        return self._values[name]

    def __contains__(self, name):
        return name in self._values

    def items(self) -> ItemsView[str, Any]:
        return self._values.items()

    def __repr__(self):
        shown = {k: ("[set]" if k in self._secret and v is not None else v)
                 for k, v in self._values.items()}
        return f"Values({shown})"

    def secrets(self) -> tuple[str, ...]:
        """The secret values that are set, for redaction."""
        return tuple(str(self._values[k]) for k in self._secret
                     if self._values.get(k) not in (None, ""))


def parse(params: Sequence[Param], raw: Mapping[str, str], *, lenient_missing: bool = False,
          into: type[Values] = Values) -> Values:
    """Parse raw strings (name -> str) against the declarations.

    Empty strings count as unset (Pacemaker passes ``param=""`` for a
    parameter that was cleared). Raises MissingParam for the first required
    parameter that is unset (unless ``lenient_missing``, which leaves it
    None) and ParamError for the first invalid value. The result is an
    ``into``: the agent's typed view (a subclass of :class:`Values`).
    """
    values: dict[str, Any] = {}
    for param in params:
        text = raw.get(param.name)
        if text is None or text == "":
            if param.required and not lenient_missing:
                raise MissingParam(param.name)
            values[param.name] = (param.convert(param.default_text)
                                  if param.check is not None and param.default is not None
                                  else param.default)
        else:
            values[param.name] = param.convert(text)
    return into(values, secret=[p.name for p in params if p.secret])


def from_environ(params: Iterable[Param], environ: Mapping[str, str],
                 prefix: str = "OCF_RESKEY_",
                 used: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """The raw values of the declared parameters from an environment.

    A parameter set under one of its aliases (the stock agent's name) counts as
    set, its value in this parameter's form (``alias_forms``); each alias found is
    appended to ``used`` as (alias, name). Set under both names to different
    values: ParamError (equal values are fine).
    """
    raw: dict[str, str] = {}
    for param in params:
        text = environ.get(prefix + param.name)
        for alias in param.aliases:
            other = environ.get(prefix + alias)
            if other is None or other == "":
                continue
            if used is not None:
                used.append((alias, param.name))
            form = param.alias_forms.get(alias)
            other = form(other) if form is not None else other
            if text is not None and text != "" and text != other:
                raise ParamError(param.name, f"set both as {param.name} and as its deprecated "
                                 f"name {alias}, to different values: keep only {param.name}")
            text = other
        if text is not None:
            raw[param.name] = text
    return raw


def with_aliases(params: Iterable[Param],
                 aliases: Mapping[str, Any]) -> tuple[Param, ...]:
    """params with more names for some: ``{"config": ("configfile",)}``; a value may be
    (names, forms) to translate the stock values."""
    result = []
    for param in params:
        extra = aliases.get(param.name)
        if extra is None:
            result.append(param)
        elif isinstance(extra, tuple) and len(extra) == 2 and isinstance(extra[1], dict):
            result.append(param.with_aliases(*extra[0], **extra[1]))
        else:
            result.append(param.with_aliases(*extra))
    return tuple(result)
