"""What the slapd agent reads from slapd's configuration, slapd.conf or cn=config.

The databases (suffix and directory: the monitor searches every suffix,
validate refuses a directory outside the data directory) and slapd's own
pid and args files (removed after a killed slapd). Standard library only.
"""

import os


def _ldif_values(path, attrs):
    """{attr: [values]} of an LDIF file (folded lines, base64 values)."""
    import base64
    with open(path, encoding="utf-8") as handle:
        text = handle.read().replace("\n ", "")
    found = {a: [] for a in attrs}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name in found:
            found[name].append(base64.b64decode(value[1:].strip()).decode()
                               if value.startswith(":") else value.strip())
    return found


def _conf_lines(config):
    """The directives of a slapd.conf, as word lists (continuations joined)."""
    import shlex
    with open(config, encoding="utf-8") as handle:
        text = handle.read().replace("\n ", " ").replace("\n\t", " ")
    for line in text.splitlines():
        if line.strip():
            yield shlex.split(line, comments=True) or [""]


def databases(config):
    """[(suffix, directory or None)] of the databases in slapd.conf or cn=config."""
    if os.path.isdir(config):
        import glob
        found = []
        for path in sorted(glob.glob(os.path.join(config, "cn=config", "olcDatabase=*.ldif"))):
            values = _ldif_values(path, ("olcSuffix", "olcDbDirectory"))
            folder = (values["olcDbDirectory"] or [None])[0]
            found += [(suffix, folder) for suffix in values["olcSuffix"]]
        return found
    databases, current = [], None
    for words in _conf_lines(config):
        key = words[0].lower()
        if key == "database":
            current = {"suffix": [], "directory": None}
            databases.append(current)
        elif current is not None and len(words) > 1 and key == "suffix":
            current["suffix"].append(words[1])
        elif current is not None and len(words) > 1 and key == "directory":
            current["directory"] = words[1]
    return [(s, db["directory"]) for db in databases for s in db["suffix"]]


def run_files(config):
    """slapd's own pidfile and argsfile, from the configuration."""
    if os.path.isdir(config):
        values = _ldif_values(os.path.join(config, "cn=config.ldif"),
                              ("olcPidFile", "olcArgsFile"))
        return values["olcPidFile"] + values["olcArgsFile"]
    return [words[1] for words in _conf_lines(config)
            if len(words) > 1 and words[0].lower() in ("pidfile", "argsfile")]
