"""Linux-HA Heartbeat 3 drives hapack's agents in the lab, from 'hapack render heartbeat'.

A lab without Corosync and Pacemaker (``stack="none"``); the stack file is written from
the lab's addresses (VIP, the shared disk as the partition, both BMCs) and rendered; the
rendered ``ha.d/`` goes unchanged into each node's own /etc/ha.d and Debian's heartbeat
runs in both nodes (``hapack.lab.heartbeat``):

1. node1, the primary, starts the group: the VIP, then the partition, promoted and
   mounted by its start (``promote_on_start``). Clients reach node1 through the VIP.
2. node1's power is cut through its BMC while its file system is in use (the test keeps
   its mount namespace, as a crashed machine leaves its journal needing recovery).
   node2 declares it dead, resets it through cluster-glue's ``external/bmc`` (found off,
   powered on again: node1's BMC logs both), and takes the group over: the partition's
   gate lets node2 mount only on the fence confirmation the plugin wrote.
3. node1 boots, Heartbeat starts there again: ``auto_failback off``, node2 keeps the group.
4. node2 crashes (PID 1 killed: its BMC still says on, as after a panic): node1 resets
   it through ``external/bmc``, which really powers it off first, and takes the group.

The partition is never mounted in two running nodes. The failover times (power cut or
crash until the VIP answers from the survivor) are printed; ``pytest -s`` shows them.
"""

from __future__ import annotations

import os
import threading
import time

from hapack import render
from hapack.lab.heartbeat import DATA_DIR, LAB_TIMING, PORT, Heartbeat, write_stack

TIMEOUT = 60.0


class MountWatch(threading.Thread):
    """The running nodes with the partition mounted, sampled every 20 ms."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab, self.most, self.error = lab, set(), None
        self.done = threading.Event()

    def holders(self):
        found = set()
        for node in self.lab.nodes:
            try:
                if self.lab.running(node) and any(m.target == DATA_DIR
                                                  for m in self.lab.mounts(node)):
                    found.add(node)
            except OSError:  # the node is dying as we look
                pass
        return found

    def run(self):
        try:
            while not self.done.wait(0.02):
                now = self.holders()
                if len(now) > len(self.most):
                    self.most = now
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def keep_mounted(lab, node):
    """Hold ``node``'s mount namespace: its file system stays in use after it dies."""
    return os.open(f"/proc/{lab.power_state(node)['init'][0]}/ns/mnt", os.O_RDONLY)


def power_sets(lab, node, since):
    return [e.command for e in lab.power_log(node) if e.wall >= since and e.is_set]


def missing(hb, node, offset, *needles):
    """The needles not in ``node``'s Heartbeat log after ``offset`` characters."""
    log = hb.log(node)[offset:]
    return [needle for needle in needles if needle not in log]


def fail_over(lab, hb, watch, victim, survivor, how):
    """Kill ``victim`` (``how``), wait for the survivor to hold everything; the seconds
    until the VIP answered from the survivor."""
    offset = len(hb.log(survivor))
    kept = keep_mounted(lab, victim)
    try:
        since, start = time.time(), time.monotonic()
        how(victim)
        sample = watch.wait_for(survivor, timeout=TIMEOUT, after=start)
        hb.wait_holder(survivor, TIMEOUT)
    finally:
        os.close(kept)
    assert not missing(hb, survivor, offset, f"node {victim}: is dead",
                       f"Resetting node {victim}", f"node {victim} now reset",
                       f"promotion allowed: {victim} was confirmed powered off")
    return since, sample.mono - start


def assert_installed_as_rendered(lab, cli):
    """Each node's /etc/ha.d holds the CLI's files unchanged (the key is per render)."""
    for path in (cli / "ha.d").rglob("*"):
        rel = path.relative_to(cli / "ha.d")
        if path.is_file() and rel.name != "authkeys":
            for node in lab.nodes:
                installed = lab.node_dir(node) / "etc-ha.d" / rel
                assert installed.read_bytes() == path.read_bytes(), rel
                assert installed.stat().st_mode == path.stat().st_mode, rel


def rejoin(lab, hb, node):
    """Start Heartbeat again in ``node`` (back from its fencing); wait until it settled."""
    lab.wait_booted(node)
    offset = len(hb.log(node))
    hb.start_node(node)
    lab.start_responder(node, port=PORT)
    deadline = time.monotonic() + TIMEOUT
    while missing(hb, node, offset, "Initial resource acquisition complete"):
        assert time.monotonic() < deadline, hb.log(node)[offset:]
        time.sleep(0.2)
    return offset


def test_heartbeat_runs_the_rendered_files_and_fails_over_through_the_bmc(new_lab, tmp_path):
    with new_lab(stack="none") as lab:
        stack_file = write_stack(lab, timing=LAB_TIMING)
        cli = tmp_path / "etc"
        assert render.main(["heartbeat", str(stack_file), "-o", str(cli)]) == 0
        hb = Heartbeat(lab, stack_file, LAB_TIMING)
        mounts = MountWatch(lab)
        try:
            hb.start()
            mounts.start()
            assert_installed_as_rendered(lab, cli)
            assert hb.env == {"OCF_AGENTS": "/etc/ha.d/ocf"}
            assert hb.holders() == {"node1"}
            assert not missing(hb, "node1", 0, "promotion allowed: the file system on")
            for node in lab.nodes:
                lab.start_responder(node, port=PORT)
            with lab.watch_vip(str(hb.stack.vip.address), port=PORT) as watch:
                watch.wait_for("node1", timeout=TIMEOUT)
                scenario(lab, hb, watch)
            assert mounts.error is None and len(mounts.most) == 1, mounts.most
        finally:
            mounts.done.set()
            hb.stop()


def scenario(lab, hb, watch):
    cut, seconds = fail_over(lab, hb, watch, "node1", "node2", lambda n: lab.power(n, "off"))
    print(f"\nHeartbeat (deadtime {LAB_TIMING.deadtime_ms} ms): power cut of node1 -> VIP "
          f"answered by node2 in {seconds:.2f} s")
    # the test's power-off, then Heartbeat's reset (found off: powered on)
    assert power_sets(lab, "node1", cut) == ["set power 0", "set power 1"]

    offset = rejoin(lab, hb, "node1")
    # node1 settled with nothing: node2 keeps everything (auto_failback off)
    assert not missing(hb, "node1", offset, "Status update for node node2: status active",
                       "Local Resource acquisition completed. (none)")
    assert hb.holders() == {"node2"}

    crash, seconds = fail_over(lab, hb, watch, "node2", "node1", lab.crash)
    print(f"Heartbeat: crash of node2 -> VIP answered by node1 in {seconds:.2f} s")
    # its BMC still said on: Heartbeat's reset powered it off, then on
    assert power_sets(lab, "node2", crash) == ["set power 0", "set power 1"]
