"""The VM tier's vocabulary: the partition agent run in a guest, DRBD's state, a fresh replica.

A :class:`Replica` drives ``ocf:hapack:partition`` (backend=drbd, as staged
by ``hapack install``) inside the guests of a booted :class:`VmPair` and
resets the guests to one known state before each test: no writer, no state
of the agent, and a fresh resource (:meth:`VmPair.reset_drbd`).
"""

from __future__ import annotations

import shlex
import sys

from hapack.lab import vm

PARAMS = {"drbd_resource": vm.RESOURCE, "device": vm.DEVICE, "directory": "/mnt/r0",
          "fstype": "ext4"}
INSTANCE = "p0"
# What Pacemaker adds for a promotable clone with notifications (scores are then written).
PACEMAKER = {"OCF_RESKEY_crm_feature_set": "3.16.2", "OCF_RESKEY_CRM_meta_promotable": "true",
             "OCF_RESKEY_CRM_meta_notify": "true", "OCF_RESKEY_CRM_meta_clone_max": "2",
             "OCF_RESKEY_CRM_meta_promoted_max": "1"}
FENCE_FILE = "/run/hapack/fence-confirmed"
# hamon's write after a verified power-off, in the guest (its boot id, its node name)
WRITE_CONFIRMATION = ("import os, sys\nfrom hapack import confirm\n"
                      "confirm.write(sys.argv[1], sys.argv[2], os.uname().nodename, 'fence_bmc off')")
WRITER_PID = "/run/hapack-test-writer.pid"
STATE_FILES = "/var/lib/hapack/partition /run/hapack /run/resource-agents/hapack-partition-*"
CLEAN = f"""
[ -f {WRITER_PID} ] && kill -9 "$(cat {WRITER_PID})" 2>/dev/null; rm -f {WRITER_PID}
rm -rf {STATE_FILES} /run/hapack-test
"""


def exit_reason(output: str) -> str:
    return " ".join(line.split(":", 1)[1] for line in output.splitlines()
                    if line.startswith("ocf-exit-reason:"))


class Replica:
    """The partition agent and DRBD in the guests of ``pair``."""

    def __init__(self, pair: vm.VmPair):
        self.pair = pair
        self.agent_path = pair.agent("partition")

    def agent(self, guest, action, *, pacemaker=False, timeout=90, **params):
        """Run the agent's ``action`` in ``guest``; the GuestResult (output has the exit reason)."""
        env = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": INSTANCE,
               "OCF_RESKEY_CRM_meta_timeout": str(int(timeout * 1000))}
        env.update({f"OCF_RESKEY_{k}": str(v) for k, v in {**PARAMS, **params}.items()})
        if pacemaker:
            env.update(PACEMAKER, PATH=f"{vm.SHARE}/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), self.agent_path, action]
        return guest.run(argv, timeout=timeout)

    def fence_confirmed(self, guest, node):
        """What hamon writes after fence_bmc confirmed ``node`` powered off."""
        guest.sh(f"mkdir -p {FENCE_FILE.rsplit('/', 1)[0]}")
        guest.sh([sys.executable, "-I", "-c", WRITE_CONFIRMATION, FENCE_FILE, node])

    def clear_split_brain(self, guest):
        guest.sh([sys.executable, "-I", "-m", "hapack.ocf.partition_handler",
                  "clear-split-brain", "--resource", vm.RESOURCE])

    def mounted(self, guest) -> bool:
        return guest.run(f"mountpoint -q {shlex.quote(PARAMS['directory'])}").ok

    # -- the known state before each test ------------------------------------------

    def reset(self):
        """No writer, no agent state, and a fresh resource (:meth:`VmPair.reset_drbd`)."""
        pair = self.pair
        for guest in pair.guests.values():
            if guest.running():
                guest.sh(CLEAN)
        (pair.a.job / "acks").unlink(missing_ok=True)
        pair.reset_drbd()
