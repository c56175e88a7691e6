"""The VM tier's vocabulary: the partition agent run in a guest, DRBD's state, a fresh replica.

A :class:`Replica` drives ``ocf:hapack:partition`` (backend=drbd, as staged
by ``hapack install``) inside the guests of a booted :class:`VmPair` and
resets the resource to one known state before each test: both guests on,
the link up, zeroed disks with fresh metadata, DRBD up, connected,
UpToDate/UpToDate without a resync, an empty ext4 on it, both Secondary.
"""

from __future__ import annotations

import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from hapack.lab import vm
from hapack.ocf import _drbd

PARAMS = {"drbd_resource": vm.RESOURCE, "device": vm.DEVICE, "directory": "/mnt/r0",
          "fstype": "ext4"}
INSTANCE = "p0"
# What Pacemaker adds for a promotable clone with notifications (scores are then written).
PACEMAKER = {"OCF_RESKEY_crm_feature_set": "3.16.2", "OCF_RESKEY_CRM_meta_promotable": "true",
             "OCF_RESKEY_CRM_meta_notify": "true", "OCF_RESKEY_CRM_meta_clone_max": "2",
             "OCF_RESKEY_CRM_meta_promoted_max": "1"}
FENCE_FILE = "/run/hapack/fence-confirmed"
WRITER_PID = "/run/hapack-test-writer.pid"
STATE_FILES = "/var/lib/hapack/partition /run/hapack /run/resource-agents/hapack-partition-*"
CLEAN = f"""
[ -f {WRITER_PID} ] && kill -9 "$(cat {WRITER_PID})" 2>/dev/null; rm -f {WRITER_PID}
umount /mnt/r0 2>/dev/null; drbdadm down {vm.RESOURCE} 2>/dev/null
rm -rf {STATE_FILES} /run/hapack-test
blkdiscard -z {vm.DISK}
drbdadm create-md --force {vm.RESOURCE} >/dev/null 2>&1 && drbdadm up {vm.RESOURCE}
"""


def exit_reason(output: str) -> str:
    return " ".join(line.split(":", 1)[1] for line in output.splitlines()
                    if line.startswith("ocf-exit-reason:"))


def both(pair, work):
    """work(guest) on both guests at once; their results, a first."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(work, (pair.a, pair.b)))


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

    def state(self, guest) -> _drbd.State:
        return _drbd.parse_proc(guest.sh(f"cat {_drbd.PROC}"), 0)

    def wait_state(self, guest, predicate, timeout=30.0) -> _drbd.State:
        """Poll /proc/drbd in ``guest`` until predicate(state) holds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(guest)
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{guest.name}: still {state} after {timeout}s")
            time.sleep(0.1)

    def fence_confirmed(self, guest, node):
        """What hamon writes after fence_bmc confirmed ``node`` powered off."""
        guest.sh(f"mkdir -p {FENCE_FILE.rsplit('/', 1)[0]} && echo {node} > {FENCE_FILE}")

    def clear_split_brain(self, guest):
        guest.sh([sys.executable, "-I", "-m", "hapack.ocf.partition_handler",
                  "clear-split-brain", "--resource", vm.RESOURCE])

    def mounted(self, guest) -> bool:
        return guest.run(f"mountpoint -q {shlex.quote(PARAMS['directory'])}").ok

    # -- the known state before each test ------------------------------------------

    def reset(self):
        pair = self.pair
        pair.heal_link()
        both(pair, lambda g: g.power_on())
        (pair.a.job / "acks").unlink(missing_ok=True)
        both(pair, lambda g: g.sh(CLEAN, timeout=60))
        self.wait_state(pair.a, lambda s: s.connected)
        pair.a.sh(f"drbdadm -- --clear-bitmap new-current-uuid {vm.RESOURCE}")
        for guest in (pair.a, pair.b):
            self.wait_state(guest, lambda s: s.disk == s.peer_disk == "UpToDate")
        pair.a.sh(f"drbdadm primary {vm.RESOURCE} && mkfs.ext4 -q -F -E nodiscard {vm.DEVICE}"
                  f" && drbdadm secondary {vm.RESOURCE}")
