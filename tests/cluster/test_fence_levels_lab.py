"""A second fencing level on a real Pacemaker cluster: the BMC dies with its node, the PDU fences.

A lab with a PDU outlet per node (``Lab(pdu=True)``: a second ipmi_sim on the BMC network
that switches the node's power) runs the configuration ``hapack render cib`` writes from
the lab's stack file with ``[[nodes.fence]]`` (``hapack.lab.heartbeat.stack_text(pdu=True)``):
level 1 each node's BMC through hapack's fence_bmc, level 2 its PDU through Debian's stock
fence_ipmilan, its password read through ``password_script``.

The active node's BMC becomes unreachable and the node dies (a crash: its power is still
on and the PDU must really cut it; or a power cut at the source: the PDU confirms it off).
The survivor's fencer tries level 1, which fails, then level 2, which succeeds; only
then is the partition promoted and mounted on the survivor, with the VIP; the partition
is never mounted on two nodes. The fencer's log shows level 1 failing before level 2's
success, and the fence history records the node fenced.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from lxml import etree

from hapack import render
from hapack.lab import Lab, failover, missing_prerequisites
from hapack.lab.bmc import ipmitool, parse_power_status
from hapack.lab.heartbeat import DATA_DIR, PORT, checkout_agents, write_stack

TIMEOUT = 120.0
FAULTS = {"crash": lambda lab, node: (lab.crash(node), time.time())[1],
          "power cut": lambda lab, node: lab.cut_power(node)}


def crm_mon(lab, node):
    out = lab.exec(node, ["crm_mon", "-1", "--output-as=xml"], timeout=30).stdout
    return etree.fromstring(out.encode())


def nodes_of(doc, rid, role):
    return sorted(doc.xpath(f"//resource[@id='{rid}' and @role='{role}' and @failed='false']"
                            "/node/@name"))


def holder_as_seen_by(lab, node):
    """The node holding the promoted partition and the VIP, as ``node`` sees it, else None."""
    doc = crm_mon(lab, node)
    held = nodes_of(doc, "partition", "Promoted")
    return held[0] if len(held) == 1 and nodes_of(doc, "vip", "Started") == held else None


def everything_runs(lab):
    doc = crm_mon(lab, "node1")
    devices = {"fence-node1": ["node2"], "fence-node1-pdu": ["node2"],
               "fence-node2": ["node1"], "fence-node2-pdu": ["node1"]}
    return (all(nodes_of(doc, rid, "Started") == where for rid, where in devices.items())
            and nodes_of(doc, "web", "Started") == list(lab.nodes)
            and holder_as_seen_by(lab, "node1"))


def wait_for(what, predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except Exception:  # noqa: BLE001 - a node answering nothing yet
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def levels(lab_reaper):
    problems = missing_prerequisites("pacemaker")
    if problems:
        pytest.skip("the lab cannot run here: " + "; ".join(problems))
    lab = Lab(stack="pacemaker", pdu=True, boot_delay=1.0)
    try:
        lab.up()
        with checkout_agents(lab) as agents:
            stack_file = write_stack(lab, lab.shared_dir / "levels" / "stack.toml", pdu=True)
            cib = stack_file.with_name("cib.xml")
            assert render.main(["cib", str(stack_file), "-o", str(cib)]) == 0
            section = stack_file.with_name("configuration.xml")
            section.write_bytes(etree.tostring(etree.fromstring(cib.read_bytes())
                                               .find("configuration")))
            loaded = lab.exec("node1", ["cibadmin", "--replace", "--scope", "configuration",
                                        "--xml-file", str(section)], check=False, timeout=120)
            assert loaded.returncode == 0, loaded.stdout + loaded.stderr
            wait_for("the rendered stack with both fencing levels", lambda: everything_runs(lab))
            verify = lab.exec("node1", ["crm_verify", "-L", "-V"], check=False, timeout=60)
            assert verify.returncode == 0, verify.stdout + verify.stderr
            yield lab, agents
    finally:
        dest = os.environ.get("HAPACK_LAB_LOGS")
        if dest and lab.state:
            lab.collect_logs(os.path.join(dest, f"levels-{lab.name}-{int(time.time())}"))
        lab.down()


def fencer_log(lab, node, since):
    """pacemaker-fenced's lines in ``node``'s log after ``since`` (wall time)."""
    text = failover.node_log(lab, node, "pacemaker/pacemaker.log").read_text(errors="replace")
    return [line for line in text.splitlines() if "pacemaker-fenced" in line
            and (failover.log_time(line) or 0) >= since - 1]


@pytest.mark.parametrize("fault", FAULTS)
def test_bmc_unreachable_the_pdu_fences_and_the_survivor_takes_over(levels, fault):
    lab, agents = levels
    victim = holder_as_seen_by(lab, "node1")
    survivor = next(n for n in lab.nodes if n != victim)
    with failover.MountSampler(lab, DATA_DIR) as sampler:
        lab.bmc_unreachable(victim)
        t0 = FAULTS[fault](lab, victim)
        wait_for(f"{survivor} holding the stack", lambda: holder_as_seen_by(lab, survivor)
                 == survivor)
        wait_for(f"the partition mounted on {survivor}",
                 lambda: sampler.holders() == frozenset({survivor}), 30)
    assert sampler.samples and not sampler.overlaps()
    assert all(victim not in held for t, held in sampler.samples if t >= t0)
    assert not lab.running(victim)
    assert parse_power_status(ipmitool(lab.pdu(victim), "chassis", "power", "status")) == "off"

    lines = fencer_log(lab, survivor, t0)
    op = rf"Operation '(off|reboot)' \[\d+\] targeting {victim} using fence-{victim}"
    level1 = [i for i, line in enumerate(lines) if re.search(op + r" returned [1-9]", line)]
    level2 = [i for i, line in enumerate(lines) if re.search(op + r"-pdu returned 0", line)]
    assert level1 and level2 and level1[0] < level2[-1], "\n".join(lines)
    done = failover.fenced_since(lab, victim, t0)
    assert len(done) == 1, done
    promoted = failover.first_line(failover.node_log(lab, survivor, "pacemaker/pacemaker.log"),
                                   t0, rf"Result of promote operation for partition on "
                                       rf"{survivor}: ok")
    assert promoted is not None and promoted >= done[0]["wall"]
    history = lab.exec(survivor, ["stonith_admin", "--history", victim, "--verbose"],
                       check=False, timeout=30).stdout
    assert re.search(rf"(off|reboot) of {victim} successful", history), history

    # back in shape for the next fault: the victim powered on through its BMC, rejoined
    lab.restore()
    agents.bind(victim)
    lab.exec(survivor, ["crm_resource", "--cleanup"], timeout=60)
    wait_for("both nodes back with both levels", lambda: everything_runs(lab))
