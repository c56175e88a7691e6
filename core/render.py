"""``hapack render cib|crm|pcs|corosync|heartbeat STACK [-o OUT]``.

cib, crm, pcs and corosync print to stdout, or write the file OUT; heartbeat
writes a directory tree (``ha.d/...`` and ``default/heartbeat``, relative to
/etc) under OUT, which it requires. A stack file with any problem exits 2
with one ``FILE: KEY: MESSAGE`` line per problem on stderr, and nothing is
written. Files are replaced atomically.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.stack.model import Stack

EXIT_OK = 0
EXIT_USAGE = 2      # bad arguments or a bad stack file: nothing was written
EXIT_IO = 1

FORMS = ("cib", "crm", "pcs", "corosync", "heartbeat")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hapack render",
        description="Render a stack file as a Pacemaker CIB, a crm shell script, a pcs script, "
                    "corosync.conf or Linux-HA Heartbeat files (see docs/stack-file.md).")
    parser.add_argument("form", choices=FORMS, help="what to render")
    parser.add_argument("stack", help="the stack file (TOML)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="file to write (cib, crm, pcs, corosync; default: stdout) or directory "
                             "(heartbeat; required)")
    return parser


def render_text(form: str, stack: Stack, source: str) -> bytes:
    """The rendered bytes of a single-file form."""
    if form == "cib":
        from hapack.cib import cib
        return cib.render(stack, source)
    if form == "crm":
        from hapack.cib import crm
        return crm.render(stack, source)
    if form == "pcs":
        from hapack.cib import pcs
        return pcs.render(stack, source)
    from hapack.cib import corosync
    return corosync.render(stack, source)


def _write_file(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    if args.form == "heartbeat" and not args.output:
        print("hapack render heartbeat: -o DIR is required (it writes several files)",
              file=sys.stderr)
        return EXIT_USAGE

    from hapack.stack import StackError, load
    try:
        stack = load(args.stack)
    except StackError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    source = os.path.basename(args.stack)

    try:
        if args.form == "heartbeat":
            from hapack.cib import heartbeat
            for path in heartbeat.write(stack, source, args.output):
                print(path)
            return EXIT_OK
        data = render_text(args.form, stack, source)
        if args.output and args.output != "-":
            _write_file(args.output, data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    except OSError as exc:
        print(f"hapack render: {exc}", file=sys.stderr)
        return EXIT_IO
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
