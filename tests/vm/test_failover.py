"""The patent's storage failover on real replication: A loses power, B takes the partition.

A is Primary with the file system mounted and a writer appending records with
fsync; fence_bmc cuts A's power through A's BMC; B promotes through the agent
and mounts, and every record A acknowledged is there. A then powers on and
rejoins as Secondary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from hapack.ocf import OCF

from .drbdvm import PARAMS, WRITER_PID, exit_reason

WRITER = Path(__file__).with_name("writer.py")
RECORDS = f"{PARAMS['directory']}/records"
ACKS_IN_GUEST = "/hapack-vm/job/acks"


def acknowledged(path: Path) -> list[int]:
    """The record numbers in the ack file (complete lines only)."""
    text = path.read_text() if path.exists() else ""
    return [int(line) for line in text.split("\n")[:-1]]


def wait_acks(path: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(acknowledged(path)) < count:
        assert time.monotonic() < deadline, f"the writer acknowledged fewer than {count} records"
        time.sleep(0.05)


def fence_bmc(guest, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(guest.fence_bmc_argv(action), capture_output=True, text=True,
                          timeout=60)


def test_power_loss_of_the_primary_loses_no_acknowledged_record(replica):
    pair = replica.pair
    a, b = pair.a, pair.b
    assert replica.agent(b, "start").ok
    assert replica.agent(a, "start").ok
    assert replica.agent(a, "promote").ok
    # through the share: the checkout may sit under /tmp, which is the guest's own tmpfs
    shutil.copy(WRITER, pair.share / WRITER.name)
    a.sh(f"setsid {sys.executable} -I /hapack-vm/share/{WRITER.name} {RECORDS} {ACKS_IN_GUEST} "
         f"</dev/null >/dev/null 2>&1 & echo $! > {WRITER_PID}")
    wait_acks(a.job / "acks", 50)

    off = fence_bmc(a, "off")
    assert off.returncode == 0, off.stderr
    assert not a.running()
    acked = acknowledged(a.job / "acks")
    assert fence_bmc(a, "status").returncode == 2  # fence agents: 2 means off

    b.wait_drbd(lambda s: not s.connected and s.peer_role == "Unknown")
    result = replica.agent(b, "promote")  # nothing yet shows that A is off
    assert result.returncode == OCF.ERR_GENERIC
    assert "nothing shows the peer is off" in exit_reason(result.output)
    replica.fence_confirmed(b, "vma")  # as hamon does once fence_bmc confirmed
    result = replica.agent(b, "promote")
    assert result.ok, result.output
    assert replica.agent(b, "monitor").returncode == OCF.DEGRADED_PROMOTED  # A is off

    records = [int(line.split()[0]) for line in b.sh(f"cat {RECORDS}").splitlines()]
    assert records == list(range(len(records)))  # in order, none torn or missing
    assert acked and set(acked) <= set(records)

    on = fence_bmc(a, "on")
    assert on.returncode == 0, on.stderr
    a.wait_ready()
    assert replica.agent(a, "start").ok
    state = a.wait_drbd(lambda s: s.cstate == "Connected" and s.disk == "UpToDate")
    assert (state.role, state.peer_role) == ("Secondary", "Primary")
    assert replica.agent(a, "monitor").returncode == OCF.SUCCESS
