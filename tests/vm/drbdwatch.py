"""Samples DRBD's state in a guest every 0.1 s (standard library and hapack only).

Run inside a guest: ``python3 -I drbdwatch.py <job dir>``. It rewrites
``drbd.now`` (one line: time, role, peer role, connection, disk, peer disk)
at every sample, so the host can tell a fresh sample from the last one of a
guest that lost power (the file's modification time is the host's), and
appends every change to ``drbd.log`` with the boot id, which outlives the
guest's reboots (the job folder is a host folder).
"""

import os
import sys
import time

from hapack.ocf import _drbd


def sample():
    try:
        with open(_drbd.PROC, encoding="ascii", errors="replace") as handle:
            state = _drbd.parse_proc(handle.read(), 0)
    except OSError:
        return ("Secondary", "Unknown", "Unconfigured", "Diskless", "DUnknown")
    if not state.configured:
        return ("Secondary", "Unknown", "Unconfigured", "Diskless", "DUnknown")
    return (state.role, state.peer_role, state.cstate, state.disk, state.peer_disk)


def main(job):
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
        boot = handle.read().strip()[:8]
    now, tmp = os.path.join(job, "drbd.now"), os.path.join(job, ".drbd.now")
    last = None
    with open(os.path.join(job, "drbd.log"), "a", encoding="ascii", buffering=1) as log:
        while True:
            state = sample()
            line = f"{time.time():.3f} {boot} {' '.join(state)}\n"
            if state != last:
                log.write(line)
                last = state
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(line)
            os.rename(tmp, now)
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
