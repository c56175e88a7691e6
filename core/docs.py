"""Generate the README's parameter tables from the agents' declarations.

    python -m hapack.docs README.md           # rewrite the tables in place
    python -m hapack.docs --check README.md   # exit 1 if they are out of date

A table sits between ``<!-- params:NAME -->`` and ``<!-- /params:NAME -->``
where NAME is an OCF agent (``vip``) or a module path (``hapack.stonith.fence_bmc``);
the module's ``AGENT.params`` or ``PARAMS`` are the single source
(:mod:`hapack.agents` maps agent names to modules). A parameter's other names
(deprecated aliases) and its fence-agent option letter follow its name.
"""

from __future__ import annotations

import re
import sys

from hapack.agents import params_of

MARKER = re.compile(r"(<!-- params:(?P<name>[\w.]+) -->\n)(?P<body>.*?)(<!-- /params:(?P=name) -->)",
                    re.DOTALL)


def _cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def _names(param) -> str:
    """``ip`` with its command-line letter and its other (deprecated) names."""
    extra = ([f"`-{param.short}`"] if param.short else []) + [f"`{a}`" for a in param.aliases]
    return f"`{param.name}`" + (f" ({', '.join(extra)})" if extra else "")


def table(name: str) -> str:
    rows = ["| parameter | default | description |", "|---|---|---|"]
    for param in params_of(name):
        if param.required:
            default = "*required*"
        elif param.secret or param.default is None:
            default = ""
        else:
            default = f"`{param.default_text}`"
        text = param.longdesc
        if param.choices:
            text += f" One of: {', '.join(param.choices)}."
        rows.append(f"| {_names(param)} | {default} | {_cell(text)} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    return MARKER.sub(lambda m: m.group(1) + table(m.group("name")) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"] or ["README.md"]
    stale = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        new = render(text)
        if new != text:
            stale.append(path)
            if not check:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(new)
    if check and stale:
        print(f"parameter tables out of date in {', '.join(stale)}: run python -m hapack.docs",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
