"""The mailbox agent inside a VM-tier guest (standard library only).

``python3 -I vmguest.py <job dir>`` runs as the guest's last process. The job
folder is a 9p share of a host folder (no cache, so both sides see each
other's files at once). The host (:class:`hapack.lab.vm.Guest`) writes
``cmd.N`` atomically (a JSON object: ``script``, ``timeout``); the agent runs
the script with ``/bin/sh -c`` in its own session, output to ``out.N``, and
renames ``rc.N.tmp`` to ``rc.N`` holding the exit status (124: killed at the
timeout). Commands run one at a time, in order. ``ready`` holds the boot id
once the agent listens; the host's power-on script removes it with every
``cmd``/``out``/``rc`` file, so numbering starts at 0 on every boot.
"""

import json
import os
import signal
import subprocess
import sys
import time

POLL = 0.02
KILLED = 124


def run_one(job, n):
    with open(os.path.join(job, f"cmd.{n}"), encoding="utf-8") as handle:
        request = json.load(handle)
    with open(os.path.join(job, f"out.{n}"), "wb") as out:
        proc = subprocess.Popen(["/bin/sh", "-c", request["script"]], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd="/")
        try:
            code = proc.wait(timeout=request.get("timeout"))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = KILLED
    tmp = os.path.join(job, f"rc.{n}.tmp")
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{code}\n")
    os.rename(tmp, os.path.join(job, f"rc.{n}"))


def main(job):
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
        boot = handle.read().strip()
    with open(os.path.join(job, "ready.tmp"), "w", encoding="ascii") as handle:
        handle.write(boot + "\n")
    os.rename(os.path.join(job, "ready.tmp"), os.path.join(job, "ready"))
    n = 0
    while True:
        if os.path.exists(os.path.join(job, f"cmd.{n}")):
            run_one(job, n)
            n += 1
        else:
            time.sleep(POLL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
