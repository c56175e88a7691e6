"""``launch.py LOG -- ARGV...``: start ARGV as a daemon of the current PID namespace.

Standard library only; ``Lab.spawn`` runs it inside a node through nsenter.
It forks; the child starts a session, sends stdout and stderr to LOG and
execs ARGV; the parent prints the child's pid and exits at once. The child
is so an orphan of the node, adopted and reaped by the node's PID 1, as a
daemon started on a real host would be. (A process whose parent stays
outside the node, like nsenter's own child, keeps the dying node's PID
namespace alive until the host reaps it, which can take a second.)
"""

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: launch.py LOG -- ARGV...", file=sys.stderr)
        return 2
    log, command = argv[0], argv[2:]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setsid()
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.write(write_end, str(os.getpid()).encode())
        os.close(write_end)
        os.closerange(3, 65536)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"launch: cannot run {command[0]}: {exc}\n".encode())
        os._exit(127)
    os.close(write_end)
    child = os.read(read_end, 32).decode()
    print(child, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
