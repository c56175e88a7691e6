"""What the slapd agent reads from slapd's configuration, slapd.conf or cn=config.

The databases (suffix and directory: the monitor searches every suffix,
validate refuses a directory outside the data directory) and slapd's own
pid and args files (removed after a killed slapd). Read on every level-10
monitor, so it avoids the modules that pull in ``re`` (shlex, glob).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _ldif_values(path, attrs):
    """{attr: [values]} of an LDIF file (folded lines, base64 values)."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read().replace("\n ", "")
    found = {a: [] for a in attrs}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name in found:
            if value.startswith(":"):
                import binascii
                value = binascii.a2b_base64(value[1:].strip()).decode()
            found[name].append(value.strip())
    return found


def words(line: str) -> list[str]:
    """A slapd.conf line split into words; double quotes group, and are removed."""
    found, word, quoted, started = [], "", False, False
    for char in line:
        if char == '"':
            quoted, started = not quoted, True
        elif char.isspace() and not quoted:
            if started:
                found.append(word)
            word, started = "", False
        else:
            word, started = word + char, True
    if quoted:
        raise ValueError(f"unbalanced quotes in {line.strip()!r}")
    return found + ([word] if started else [])


def _conf_lines(config):
    """The directives of a slapd.conf, as word lists (continuations joined, comment
    lines skipped)."""
    with open(config, encoding="utf-8") as handle:
        text = handle.read().replace("\n ", " ").replace("\n\t", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield words(line)


def databases(config: str) -> list[tuple[str, str | None]]:
    """[(suffix, directory or None)] of the databases in slapd.conf or cn=config."""
    if os.path.isdir(config):
        folder, found = os.path.join(config, "cn=config"), []
        for name in sorted(os.listdir(folder)):
            if not (name.startswith("olcDatabase=") and name.endswith(".ldif")):
                continue
            values = _ldif_values(os.path.join(folder, name), ("olcSuffix", "olcDbDirectory"))
            directory = (values["olcDbDirectory"] or [None])[0]
            found += [(suffix, directory) for suffix in values["olcSuffix"]]
        return found
    databases: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for directive in _conf_lines(config):
        key = directive[0].lower() if directive else ""
        if key == "database":
            current = {"suffix": [], "directory": None}
            databases.append(current)
        elif current is not None and len(directive) > 1 and key == "suffix":
            current["suffix"].append(directive[1])
        elif current is not None and len(directive) > 1 and key == "directory":
            current["directory"] = directive[1]
    return [(s, db["directory"]) for db in databases for s in db["suffix"]]


def run_files(config: str) -> list[str]:
    """slapd's own pidfile and argsfile, from the configuration."""
    if os.path.isdir(config):
        values = _ldif_values(os.path.join(config, "cn=config.ldif"),
                              ("olcPidFile", "olcArgsFile"))
        return values["olcPidFile"] + values["olcArgsFile"]
    return [directive[1] for directive in _conf_lines(config)
            if len(directive) > 1 and directive[0].lower() in ("pidfile", "argsfile")]
