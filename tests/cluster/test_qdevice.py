"""A quorum device on a real Pacemaker cluster: splits, the arbiter's loss, a power cut.

One lab for the module with a quorum device (``Lab(qdevice=True)``): an arbiter
namespace on the BMC network running Debian's corosync-qnetd, corosync-qdevice
in both nodes (ffsplit, a heuristic that pings the client on the service LAN),
no two_node. The example stack is provisioned as ``hapack demo`` does it, its
stack file with a ``[quorum]`` table, so the CIB is rendered with no fencing
delay at all: no priority-fencing-delay, no pcmk_delay_base/max.

During every scenario a client commits rows through the VIP and both nodes'
mount tables are sampled every 50 ms: the partition is never mounted on two
nodes at once and every acknowledged row is kept.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
from lxml import etree

from hapack.lab import Lab, failover, missing_prerequisites, provision

PROBES = ("http", "postgresql", "slapd", "activemq")
TIMEOUT = 120.0
CLUSTER_LINKS = ("lan", "hb")   # the BMC (management) network, and the arbiter on it, stay


def need_stack():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    problems = missing_prerequisites("pacemaker", qdevice=True)
    if problems:
        pytest.skip("the lab cannot run here: " + "; ".join(problems))
    from hapack.demo import missing_agents
    missing = missing_agents()
    assert not missing, f"run 'hapack install' first (./run tests does): missing {missing}"


@pytest.fixture(scope="module")
def stack(lab_reaper):
    need_stack()
    lab = Lab(stack="pacemaker", token_ms=1000, disk_mb=400, boot_delay=1.0, qdevice=True)
    try:
        lab.up()
        demo = provision.provision(lab)
        failover.wait_active(lab, timeout=180)
        failover.warm_chains(lab, provision.HEALTH_PATH, provision.APACHE_PORT)
        yield demo
    finally:
        dest = os.environ.get("HAPACK_LAB_LOGS")
        if dest and lab.state:
            lab.collect_logs(os.path.join(dest, f"qdevice-{lab.name}-{int(time.time())}"))
        lab.down()


@dataclass
class Scenario:
    lab: Lab
    demo: provision.DemoStack
    client: failover.Client
    sampler: failover.MountSampler
    active: str
    started: float

    @property
    def standby(self) -> str:
        return next(n for n in self.lab.nodes if n != self.active)

    def settle(self, node: str) -> None:
        assert failover.wait_active(self.lab, TIMEOUT, node=node) == node
        self.client.wait_probes(PROBES, TIMEOUT)
        self.client.wait_acks(10, TIMEOUT)

    def finish(self) -> None:
        self.client.stop()
        self.sampler.stop()
        assert self.sampler.samples, "no mount samples taken"
        assert not self.sampler.overlaps(), \
            f"the partition was mounted on two nodes at once: {self.sampler.overlaps()[:5]}"
        assert len(self.client.acked()) >= 20, "the client committed too few rows to mean anything"
        assert self.client.lost() == [], "acknowledged rows are missing"

    def fenced(self, target: str) -> list[dict]:
        return failover.fenced_since(self.lab, target, self.started)

    def quorate(self, node: str) -> bool | None:
        """Pacemaker's view of quorum on ``node`` (None: it does not answer)."""
        doc = failover.crm_xml(self.lab, node)
        dc = None if doc is None else doc.find("summary/current_dc")
        return None if dc is None else dc.get("with_quorum") == "true"


@pytest.fixture
def scenario(stack, request):
    lab = stack.lab
    active = failover.recover(lab, provision.HEALTH_PATH, provision.APACHE_PORT)
    lab.wait_arbiter_votes()
    tag = request.node.name.removeprefix("test_")[:24].replace("-", "_")
    client = failover.Client(lab, stack.client_config(table=f"rows_{tag}"), tag=f"client-{tag}")
    sampler = failover.MountSampler(lab, stack.data_dir)
    with client, sampler:
        run = Scenario(lab, stack, client, sampler, active, time.time())
        client.wait_probes(PROBES, TIMEOUT)
        client.wait_acks(10, TIMEOUT)
        yield run


def no_fencing_delay(lab: Lab, node: str) -> None:
    """Neither priority-fencing-delay nor a per-device delay is configured."""
    cib = etree.fromstring(lab.exec(node, ["cibadmin", "--query", "--scope", "configuration"]).stdout)
    names = {nv.get("name"): nv.get("value") for nv in cib.iter("nvpair")}
    assert names.get("priority-fencing-delay", "0") in ("0", "0s"), names
    assert not {"pcmk_delay_base", "pcmk_delay_max", "delay"} & set(names), names


NON_PRIMARY = "This node is within the non-primary component"


def lost_quorum(lab: Lab, node: str, since: float) -> float | None:
    """When corosync on ``node`` last said it lost quorum after ``since`` (wall time)."""
    return failover.first_line(failover.node_log(lab, node, "cluster/corosync.log"), since,
                               NON_PRIMARY)


def wait_powered_off(lab: Lab, node: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while lab.running(node):
        assert time.monotonic() < deadline, f"{node} was not powered off"
        time.sleep(0.1)


def cut(lab: Lab, node: str) -> None:
    for link in CLUSTER_LINKS:
        lab.cut_link(node, link)


def heal(lab: Lab, node: str) -> None:
    for link in CLUSTER_LINKS:
        lab.heal_link(node, link)


def test_the_lab_runs_the_rendered_quorum_device_and_no_two_node(stack):
    """The running corosync.conf has the quorum device the stack file renders; both
    nodes count three votes (theirs and the arbiter's)."""
    from hapack.cib import corosync
    from hapack.stack import load
    lab = stack.lab
    rendered = corosync.render(load(stack.stack_file), "stack.toml").decode()
    running = lab.corosync_conf
    for line in (f"host: {lab.arbiter_addr}", "algorithm: ffsplit", "votes: 1",
                 f"exec_ping1: /bin/ping -q -n -c 1 -W 1 {lab.client_addr}"):
        assert line in rendered, line
    assert f"exec_ping: /bin/ping -q -n -c 1 -W 1 {lab.client_addr}" in running
    for text in (rendered, running):
        assert "device {" in text and not any(
            line.strip().startswith("two_node") for line in text.splitlines())
    for node in lab.nodes:
        out = lab.exec(node, ["corosync-quorumtool", "-s"]).stdout
        assert "Flags:            Quorate Qdevice" in out, out
        assert [l.split(":")[1].strip() for l in out.splitlines()
                if l.startswith("Total votes")] == ["3"], out
    assert lab.arbiter_votes() == {1: "ACK", 2: "ACK"}
    no_fencing_delay(lab, lab.nodes[0])


def test_split_with_the_standby_cut_off_the_active_node_keeps_the_stack(scenario):
    """Every link between the nodes cut at the standby; both still reach the arbiter.
    The standby fails its heuristic and gets no vote: it loses quorum and fences no one;
    the active node keeps quorum and the stack, and fences the standby at once."""
    s = scenario
    home, other = s.active, s.standby
    no_fencing_delay(s.lab, home)
    t0 = time.time()
    cut(s.lab, other)
    try:
        wait_powered_off(s.lab, other)
        heal(s.lab, other)
        assert s.lab.running(home) and s.lab.power(other, "status") == "off"
        s.lab.exec(home, ["crm_resource", "--cleanup"], timeout=60)
        s.settle(home)
        assert s.quorate(home) is True
        s.finish()
    finally:
        heal(s.lab, other)
    assert not any(other in held for _, held in s.sampler.samples)
    assert s.fenced(home) == [] and len(s.fenced(other)) == 1
    assert lost_quorum(s.lab, other, t0) is not None and lost_quorum(s.lab, home, t0) is None


def test_split_with_the_active_node_cut_off_the_standby_takes_over(scenario):
    """Every link between the nodes cut at the active node, whose service LAN is so gone
    too: its heuristic fails, the arbiter votes for the standby. The cut node loses
    quorum and stops its resources; the standby fences it and takes the stack over,
    with no fencing delay and no fence race: exactly one node is fenced."""
    s = scenario
    home, other = s.active, s.standby
    no_fencing_delay(s.lab, other)
    t0 = time.time()
    cut(s.lab, home)
    try:
        s.settle(other)
        wait_powered_off(s.lab, home)
        heal(s.lab, home)
        assert s.quorate(other) is True
        line = failover.timeline(s.lab, "cut", home, other, t0, s.client, s.sampler)
        s.finish()
    finally:
        heal(s.lab, home)
    assert line.seconds("partition mounted") > line.seconds("fence confirmed")
    assert s.fenced(other) == [] and len(s.fenced(home)) == 1
    assert s.lab.running(other) and s.lab.power(home, "status") == "off"
    assert lost_quorum(s.lab, home, t0) is not None and lost_quorum(s.lab, other, t0) is None


def test_the_arbiter_down_the_cluster_keeps_running(scenario):
    """corosync-qnetd killed (by pid): both nodes keep quorum with their own two votes
    of three; nothing moves, nothing is fenced."""
    s = scenario
    home, other = s.active, s.standby
    s.lab.arbiter_stop()
    try:
        assert not s.lab.arbiter_running()
        # corosync-qdevice notices the lost connection within its timeout (10 s)
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            for node in s.lab.nodes:
                assert s.quorate(node) is True, f"{node} lost quorum with the arbiter down"
            time.sleep(1.0)
        for node in s.lab.nodes:
            out = s.lab.exec(node, ["corosync-quorumtool", "-s"]).stdout
            assert "Quorate:          Yes" in out, out
        assert failover.active_node(s.lab, home) == home
        s.client.wait_acks(10, TIMEOUT)
        s.finish()
    finally:
        if not s.lab.arbiter_running():
            s.lab.arbiter_start()
    assert s.lab.running(home) and s.lab.running(other)
    assert s.fenced(home) == [] and s.fenced(other) == []
    assert {n for _, held in s.sampler.samples for n in held} == {home}
    assert all(lost_quorum(s.lab, n, s.started) is None for n in s.lab.nodes)


def test_power_cut_of_the_active_node_fails_over(scenario):
    """The active node loses power: the survivor gets the arbiter's vote, fences the
    dead node at once (no delay) and takes the stack over."""
    s = scenario
    victim, survivor = s.active, s.standby
    t0 = failover.power_cut(s.lab, victim)
    s.settle(survivor)
    line = failover.timeline(s.lab, "power cut", victim, survivor, t0, s.client, s.sampler)
    s.finish()
    assert s.quorate(survivor) is True
    assert s.lab.power(victim, "status") == "off"
    assert len(s.fenced(victim)) == 1 and s.fenced(survivor) == []
    assert line.seconds("partition mounted") > line.seconds("fence confirmed")
    assert line.total is not None
