"""A strict reader of the Prometheus text exposition format 0.0.4, for the tests.

Stricter than Prometheus itself: every family has exactly one ``# HELP`` and
one ``# TYPE`` line, before its samples and in that order; a sample belongs
to the family declared last; no family is declared twice and no sample
(name and labels) appears twice; label values use only the three escapes
the format has; counters end in ``_total``; the text ends with a newline.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
HELP = re.compile(rf"^# HELP ({NAME}) (.*)$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")
SAMPLE = re.compile(rf"^({NAME})(?:\{{(.*)\}})? (\S+)$")
PAIR = re.compile(rf'({LABEL})="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')
FLOAT = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
VALUE = re.compile(rf"^(?:{FLOAT}|\+Inf|-Inf|NaN)$")


class ExpositionError(AssertionError):
    pass


@dataclass
class Family:
    name: str
    help: str
    kind: str = ""
    samples: dict = field(default_factory=dict)   # frozenset(labels.items()) -> value


def unescape(text: str, escapes: dict) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            pair = text[i:i + 2]
            if pair not in escapes:
                raise ExpositionError(f"bad escape {pair!r} in {text!r}")
            out.append(escapes[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


LABEL_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
HELP_ESCAPES = {"\\\\": "\\", "\\n": "\n"}


def labels_of(text: str) -> dict:
    labels, pos = {}, 0
    while pos < len(text):
        match = PAIR.match(text, pos)
        if not match:
            raise ExpositionError(f"bad labels at {text[pos:]!r}")
        name = match[1]
        if name in labels or name.startswith("__"):
            raise ExpositionError(f"label {name!r} repeated or reserved")
        labels[name] = unescape(match[2], LABEL_ESCAPES)
        pos = match.end()
        if match[3] == "," and pos == len(text):
            raise ExpositionError("trailing comma in labels")
    return labels


def value_of(text: str) -> float:
    if not VALUE.match(text):
        raise ExpositionError(f"bad value {text!r}")
    return {"+Inf": math.inf, "-Inf": -math.inf}.get(text, float(text))


def parse(text: str) -> dict:
    """name -> :class:`Family`; ExpositionError on anything not allowed."""
    if not text.endswith("\n"):
        raise ExpositionError("the text does not end with a newline")
    families, current = {}, None
    for number, line in enumerate(text[:-1].split("\n"), 1):
        try:
            current = _line(line, families, current)
        except ExpositionError as exc:
            raise ExpositionError(f"line {number}: {exc}: {line!r}") from None
    for f in families.values():
        if not f.kind:
            raise ExpositionError(f"{f.name}: no TYPE")
    return families


def _line(line, families, current):
    if match := HELP.match(line):
        if match[1] in families:
            raise ExpositionError("family declared twice")
        families[match[1]] = Family(match[1], unescape(match[2], HELP_ESCAPES))
        return families[match[1]]
    if match := TYPE.match(line):
        if current is None or current.name != match[1] or current.kind or current.samples:
            raise ExpositionError("TYPE not right after its HELP")
        if (match[2] == "counter") != match[1].endswith("_total"):
            raise ExpositionError("counters, and only they, end in _total")
        current.kind = match[2]
        return current
    match = SAMPLE.match(line)
    if not match or line.startswith("#"):
        raise ExpositionError("neither HELP, TYPE nor a sample")
    if current is None or match[1] != current.name or not current.kind:
        raise ExpositionError("a sample outside its family")
    key = frozenset(labels_of(match[2] or "").items())
    if key in current.samples:
        raise ExpositionError("sample repeated")
    current.samples[key] = value_of(match[3])
    return current


def value(families: dict, name: str, **labels) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = select(families, name, **labels)
    if len(found) != 1:
        raise AssertionError(f"{name}{labels}: {len(found)} samples: {found}")
    return next(iter(found.values()))


def select(families: dict, name: str, **labels) -> dict:
    """{labels (dict items as a frozenset): value} of ``name`` matching ``labels``."""
    want = {k: str(v) for k, v in labels.items()}
    return {k: v for k, v in families[name].samples.items() if want.items() <= dict(k).items()}
