"""The whole claim on a real Pacemaker cluster: failover scenarios of the example stack.

One lab for the module (two nodes, BMCs, shared disk, Corosync token 1000 ms)
with the example stack provisioned and loaded exactly as ``hapack demo``
does it (``hapack.lab.provision``): hapack's agents for the VIP, the
partition (shared backend on the lab's disk), Apache, Tomcat, PostgreSQL,
slapd and ActiveMQ, and fence_bmc against the lab's BMCs. Before each
scenario the lab is put back in shape (fenced nodes powered on and online,
failures cleaned up, the stack active, both nodes' chains warm).

During every scenario a client commits rows to PostgreSQL through the VIP
and probes every layer, and both nodes' mount tables are sampled every
50 ms. Each scenario asserts its end state, that the partition was never
mounted on two nodes at once, and that every acknowledged row is present.
"""

from __future__ import annotations

import time

import pytest

from demo_scenario import PROBES, TIMEOUT, Scenario, demo_lab, need_stack
from hapack.lab import failover, provision


@pytest.fixture(scope="module")
def stack(lab_reaper):
    need_stack()
    with demo_lab("failover") as demo:
        yield demo


@pytest.fixture
def scenario(stack, request):
    lab = stack.lab
    active = failover.recover(lab, provision.HEALTH_PATH, provision.APACHE_PORT)
    tag = request.node.name.removeprefix("test_")[:24].replace("-", "_")
    client = failover.Client(lab, stack.client_config(table=f"rows_{tag}"), tag=f"client-{tag}")
    sampler = failover.MountSampler(lab, stack.data_dir)
    with client, sampler:
        run = Scenario(lab, stack, client, sampler, active, time.time())
        client.wait_probes(PROBES, TIMEOUT)
        client.wait_acks(10, TIMEOUT)
        yield run


def fail_over(s: Scenario, fault: str, act) -> failover.Timeline:
    """``act(victim)`` (returns the fault's wall time, or None: its start) on the active
    node; the survivor must take the stack over after fencing the victim (power off)."""
    victim, survivor = s.active, s.standby
    began = time.time()
    t0 = act(victim) or began
    s.settle(survivor)
    line = failover.timeline(s.lab, fault, victim, survivor, t0, s.client, s.sampler)
    s.finish()
    assert not s.lab.running(victim)
    assert s.lab.power(victim, "status") == "off", f"{victim} was not powered off"
    assert len(s.fenced(victim)) == 1
    # the survivor mounted only after the fence was confirmed
    assert line.seconds("fence confirmed") is not None
    assert line.seconds("partition mounted") > line.seconds("fence confirmed")
    assert line.total is not None
    return line


def test_power_loss_of_the_active_node(scenario):
    fail_over(scenario, "power cut", lambda victim: failover.power_cut(scenario.lab, victim))


def test_crash_of_the_active_node_is_fenced(scenario):
    fail_over(scenario, "crash", scenario.lab.crash)


def test_a_hang_longer_than_the_token_is_fenced(scenario):
    fail_over(scenario, "freeze", scenario.lab.freeze)


def _postmaster(s: Scenario) -> int:
    pidfile = f"{s.demo.data_dir}/postgresql/postmaster.pid"
    return int(s.lab.exec(s.active, ["head", "-n", "1", pidfile]).stdout)


def _wait_restarted(s: Scenario, old_pid: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            pid = _postmaster(s)
            if pid != old_pid and s.client.probe_state("postgresql"):
                return pid
        except Exception:  # not there yet
            pass
        assert time.monotonic() < deadline, "postgresql was not restarted"
        time.sleep(0.2)


def test_a_killed_stateful_layer_restarts_in_place_then_moves_the_stateful_side(scenario):
    s = scenario
    home, other = s.active, s.standby
    pid = _postmaster(s)
    for failure in (1, 2):
        s.lab.kill_process(home, pid)
        pid = _wait_restarted(s, pid)
        # the group restarts postgresql and the layers after it, on the same node
        assert failover.wait_active(s.lab, TIMEOUT) == home, f"moved after failure {failure}"
        assert s.mounted_on() == {home}
    s.lab.kill_process(home, pid)  # the third failure reaches migration-threshold=3
    s.settle(other)
    s.finish()
    assert s.lab.running(home), "a failed layer must not get its node fenced"
    assert s.fenced(home) == [] and s.fenced(other) == []


def test_all_cluster_links_of_the_active_node_cut_it_keeps_the_stack(scenario):
    """A split: both nodes lose each other; the active node must win the fence race
    (priority-fencing-delay with the stateful side's priority) and keep the stack."""
    s = scenario
    home, other = s.active, s.standby
    run = s.lab.exec
    run(home, ["crm_attribute", "--type", "crm_config", "--name", "priority-fencing-delay",
               "--update", "5s"])
    try:
        for link in ("lan", "hb"):
            s.lab.cut_link(home, link)
        deadline = time.monotonic() + TIMEOUT
        while s.lab.running(other):
            assert time.monotonic() < deadline, f"{other} was not powered off"
            time.sleep(0.1)
        for link in ("lan", "hb"):
            s.lab.heal_link(home, link)
        assert s.lab.running(home) and s.lab.power(other, "status") == "off"
        # a VIP monitor that saw its link down may have failed: clean up, nothing moves
        run(home, ["crm_resource", "--cleanup"], timeout=60)
        s.settle(home)
        s.finish()
    finally:
        for link in ("lan", "hb"):
            s.lab.heal_link(home, link)
        run(home, ["crm_attribute", "--type", "crm_config", "--name", "priority-fencing-delay",
                   "--delete"], check=False)  # back to the demo's stack: off
    assert all(home in held or not held for _, held in s.sampler.samples)
    assert not any(other in held for _, held in s.sampler.samples)
    assert s.fenced(home) == [] and len(s.fenced(other)) == 1


def test_an_unreachable_bmc_keeps_the_partition_unmounted_until_fencing_succeeds(scenario):
    """The active node crashes while its BMC is unreachable: the survivor cannot confirm
    the power-off, so the partition stays unmounted everywhere; once the BMC answers
    again, fencing succeeds and only then is the partition mounted."""
    s = scenario
    victim, survivor = s.active, s.standby
    s.lab.bmc_unreachable(victim)
    t0 = time.time()
    s.lab.crash(victim)
    time.sleep(12)  # lost after ~2 s; fence attempts fail meanwhile
    assert s.mounted_on() == frozenset(), "mounted without a confirmed fence"
    assert failover.active_node(s.lab, survivor) != survivor
    assert s.fenced(victim) == []
    unblocked = time.time()
    s.lab.bmc_reachable(victim)
    s.settle(survivor)
    line = failover.timeline(s.lab, "crash", victim, survivor, t0, s.client, s.sampler)
    s.finish()
    assert s.sampler.first(survivor, t0) >= unblocked
    assert line.seconds("partition mounted") > line.seconds("fence confirmed")
    assert s.lab.power(victim, "status") == "off"


def test_a_planned_switchover_moves_the_stack_without_fencing(scenario):
    s = scenario
    home, other = s.active, s.standby
    s.lab.exec(other, ["crm_attribute", "--node", home, "--name", "standby", "--update", "on",
                       "--lifetime", "forever"])
    try:
        s.settle(other)
    finally:
        s.lab.exec(other, ["crm_attribute", "--node", home, "--name", "standby", "--delete",
                           "--lifetime", "forever"], check=False)
    s.finish()
    assert s.fenced(home) == [] and s.fenced(other) == []
    assert s.lab.running(home) and s.lab.running(other)
    assert failover.active_node(s.lab, other) == other  # stickiness: it stays
