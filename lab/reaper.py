"""The lab's own init: ``reaper.py`` (standard library only).

A child subreaper (PR_SET_CHILD_SUBREAPER) that starts the lab's long-lived
host processes (the ipmi_sim BMCs and the client namespace's holder), then
reaps every process orphaned below it as soon as it dies: above all the
``unshare`` power cords of the nodes, whose parent (the BMC's hook) exits
at once. Without it they would wait for the host's PID 1, which may reap
late, or never.

Protocol: one JSON line on stdin, a list of ``{"argv": [...], "log": path or
null}``; one JSON line on stdout, the list of their pids; then stdout is
closed and the reaper loops until killed.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def start(commands: list[dict]) -> list[int]:
    pids = []
    for command in commands:
        log = open(command["log"], "ab") if command.get("log") else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(command["argv"], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        pids.append(proc.pid)
    return pids


def reap_forever() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        signal.sigtimedwait({signal.SIGCHLD}, 1.0)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break


def main() -> int:
    os.closerange(3, 65536)
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(json.dumps({"error": "prctl(PR_SET_CHILD_SUBREAPER) failed"}), flush=True)
        return 1
    commands = json.loads(sys.stdin.readline())
    print(json.dumps(start(commands)), flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    reap_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
