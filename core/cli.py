"""The ``hapack`` command: one entry point, one module per subcommand.

Each subcommand lives in its own module with a ``main(argv) -> int`` and is
imported only when asked for, so ``hapack install`` does not pay for the lab
or the renderers.
"""

import importlib
import sys

SUBCOMMANDS = {
    "install": ("hapack.install", "put the agents where Pacemaker, the fencer and cluster-glue look"),
    "lab": ("hapack.lab.cli", "the two-node lab: up, status, exec, power, down"),
    "render": ("hapack.render", "render a stack file as CIB, crm shell, pcs, corosync.conf or Heartbeat files"),
    "demo": ("hapack.demo", "the two-node failover demo on this machine"),
}


def usage() -> str:
    lines = ["usage: hapack COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"hapack: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
