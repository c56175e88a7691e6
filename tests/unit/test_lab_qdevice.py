"""The lab's quorum device, without building a lab: the arbiter's place in the plan,
the lab's corosync.conf, the node config, the CLI, and the teardown's guard."""

import subprocess
import time
from pathlib import Path

import pytest

from hapack.lab import build, cli
from hapack.lab import stack as labstack
from hapack.lab.core import Lab, LabError
from hapack.lab.naming import BLOCKS, NODES, Plan
from hapack.lab.state import alive, proc_id


@pytest.mark.parametrize("name, block", [("a", 0), ("abcdef", BLOCKS - 1), ("z9z9z9", 77)])
def test_the_arbiter_sits_on_the_bmc_network_with_its_own_names(name, block):
    plan = Plan(name, block)
    assert plan.arbiter_addr in plan.subnets["bmc"]
    assert plan.arbiter_addr not in {plan.host_bmc_addr, *map(plan.bmc_addr, NODES),
                                     *(plan.addr(n, "bmc") for n in NODES)}
    assert len(plan.arbiter_veth) <= 15 and plan.arbiter_veth in plan.interfaces
    assert len(set(plan.interfaces)) == len(plan.interfaces)
    macs = [plan.arbiter_mac, plan.arbiter_veth_mac, plan.client_mac, plan.client_veth_mac]
    macs += [f(n, link) for n in NODES for link in ("lan", "hb", "bmc")
             for f in (plan.node_mac, plan.veth_mac)]
    assert len(set(macs)) == len(macs)


def _quorum_lines(text: str) -> list[str]:
    start = text.index("quorum {")
    return [line.strip() for line in text[start:text.index("\nlogging")].splitlines()]


def test_the_labs_corosync_conf_has_the_device_instead_of_two_node():
    nodes = {"node1": ("198.18.0.11", "198.18.1.11"), "node2": ("198.18.0.12", "198.18.1.12")}
    plain = _quorum_lines(labstack.render_corosync_conf("c", nodes, 1000))
    assert "two_node: 1" in plain and "device {" not in plain
    device = labstack.QuorumDevice(host="198.18.2.30", ping="198.18.0.50")
    lines = _quorum_lines(labstack.render_corosync_conf("c", nodes, 1000, device))
    assert not [line for line in lines if line.startswith("two_node")]
    for wanted in ("device {", "model: net", "votes: 1", "host: 198.18.2.30",
                   "algorithm: ffsplit", "tie_breaker: lowest", "tls: on", "mode: sync",
                   "exec_ping: /bin/ping -q -n -c 1 -W 1 198.18.0.50"):
        assert wanted in lines, wanted
    assert sum(line.endswith("{") for line in lines) == lines.count("}")
    bare = _quorum_lines(labstack.render_corosync_conf(
        "c", nodes, 1000, labstack.QuorumDevice(host="198.18.2.30")))
    assert "heuristics {" not in bare and "host: 198.18.2.30" in bare


def test_node_config_and_the_cli_carry_the_flag(tmp_path):
    plan = Plan("q1", 3)
    assert build.node_config(plan, tmp_path, "node1", "pacemaker", [], True)["qdevice"] is True
    assert build.node_config(plan, tmp_path, "node1", "pacemaker", [])["qdevice"] is False
    args = cli.build_parser().parse_args(["up", "--qdevice"])
    assert args.qdevice is True
    assert cli.build_parser().parse_args(["up"]).qdevice is False


def test_a_quorum_device_needs_pacemaker():
    with pytest.raises(LabError, match="needs the pacemaker stack"):
        Lab(stack="none", qdevice=True)
    assert Lab(stack="pacemaker", qdevice=True).qdevice is True


def test_the_arbiter_command_gives_it_its_own_network_and_mounts(tmp_path):
    command = build.arbiter_command(tmp_path)
    argv = command["argv"]
    assert argv[:6] == ["unshare", "--net", "--mount", "--propagation", "private", "--"]
    assert argv[-2].endswith("arbiter.py") and argv[-1] == str(tmp_path / "arbiter")
    assert command["log"] == str(tmp_path / "arbiter" / "arbiter.log")


def test_removing_a_holder_still_in_our_namespace_kills_it_alone(monkeypatch):
    """A holder that has not left the host's network namespace yet (torn down right after
    it started): only the holder dies, never every process of the host's namespace."""
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    try:
        idents = [proc_id(p.pid) for p in procs]
        holder, *bystanders = idents
        monkeypatch.setattr(build.net, "pids_in_netns", lambda netns: [i[0] for i in idents])
        build.remove_client(holder, reap=lambda: [p.poll() for p in procs])
        assert not alive(holder)
        assert all(alive(i) for i in bystanders)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_the_arbiter_init_starts_qnetd_only_when_asked(tmp_path, monkeypatch):
    """arbiter.py starts corosync-qnetd once, records its pid, and starts it again only on
    SIGUSR1 (a killed arbiter stays down)."""
    from hapack.lab import arbiter
    monkeypatch.setattr(arbiter, "QNETD", ["sleep", "60"])
    monkeypatch.setattr(arbiter, "_die_with_parent", lambda: None)
    unit = arbiter.Arbiter(str(tmp_path))
    unit.start()
    first = int((tmp_path / "qnetd.pid").read_text())
    unit.start()  # running: not a second one
    assert int((tmp_path / "qnetd.pid").read_text()) == first
    unit.child.kill()
    unit.child.wait()
    unit.start()
    second = int((tmp_path / "qnetd.pid").read_text())
    assert second != first and unit.child.poll() is None
    unit.child.kill()
    unit.child.wait()
    assert (tmp_path / "qnetd.log").read_text().count("--- start") == 2
