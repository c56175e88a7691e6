"""Durations in the stack file: one convention, written with their unit.

Every duration in the stack file, in every table (``[hamon]`` included), is a
string with its unit: ``"500ms"``, ``"1.2s"``, ``"10s"``, ``"2min"`` (or
``"2m"``), ``"1h"``. A bare number is refused (its unit would be a guess):
:func:`parse_duration` is the one parser, :func:`format_duration` writes them
back as Pacemaker reads them. Inside hapack a duration is whole milliseconds.
"""

from __future__ import annotations

import re
from fractions import Fraction

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}
EXAMPLE = '"10s" or "500ms"'


def parse_duration(text: str) -> int:
    """'500ms', '1.2s', '10s', '2min' (or '2m'), '1h' -> milliseconds.

    Raises ValueError, saying to write the unit, for anything else: a bare
    number, an unknown unit, or a value that is not whole milliseconds.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string with its unit, such as {EXAMPLE}, got "
                         f"{type(text).__name__} {text!r}: write the unit")
    match = _DURATION_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration: write a number and its unit (ms, s, "
                         f"min, h), e.g. {EXAMPLE}")
    ms = Fraction(match.group(1)) * _UNIT_MS[match.group(2)]
    if ms.denominator != 1:
        raise ValueError(f"{text!r} is not a whole number of milliseconds")
    return int(ms)


def format_duration(ms: int) -> str:
    """Milliseconds as Pacemaker writes them: '10s', '2min', '500ms'."""
    if ms and ms % 60_000 == 0 and ms >= 120_000:
        return f"{ms // 60_000}min"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
