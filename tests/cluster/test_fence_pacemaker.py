"""A two-node Pacemaker cluster in the lab fences a powered-off peer with fence_bmc.

Each node's BMC (the lab's ipmi_sim, on the BMC network both nodes reach)
gets one ``stonith:fence_bmc`` device that may not run on the node it
fences, configured the way stonith/README.md tells operators to: ``hostname``
naming the node (with ``pcmk_host_list`` on one device, the agent's ``list``
for the other), the password in a root-only file,
cipher suite 3, and ``pcmk_delay_base`` on the device that fences the
preferred survivor (node1) as the two-node fence-race guard. Pulling
node2's power makes node1 fence it (``stonith-action=reboot``: the verified
off finds it off, then powers it on), which ``stonith_admin --history``
records, and node2 boots and rejoins.
"""

from __future__ import annotations

import os
import time

import pytest
from lxml import etree

from hapack import install
from hapack.lab.stack import fence_device_xml

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def fence_bmc_installed():
    """/usr/sbin/fence_bmc as 'hapack install' writes it (the nodes share /usr/sbin)."""
    path = "/usr/sbin/fence_bmc"
    if os.geteuid() != 0:
        pytest.skip("needs root")
    placed = False
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(install.wrapper("hapack.stonith.fence_bmc", "stonith:fence_bmc"))
        os.chmod(path, 0o755)
        placed = True
    with open(path, encoding="utf-8", errors="replace") as handle:
        if "hapack.stonith.fence_bmc" not in handle.read():
            pytest.skip(f"{path} is not hapack's fence_bmc")
    yield path
    if placed:
        os.unlink(path)


def configure_fencing(lab):
    run = lab.exec
    run("node1", ["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled",
                  "--update", "true"])
    # node1 should win a fence race: the device that fences it waits; it finds its
    # target through the agent's list (dynamic-list), fence-node2 has a static list
    for node, delay, host_list in (("node1", "2s", False), ("node2", None, True)):
        run("node1", ["cibadmin", "--create", "-o", "resources",
                      "--xml-text", fence_device_xml(lab, node, delay, host_list)])
        run("node1", ["cibadmin", "--create", "-o", "constraints", "--xml-text",
                      f'<rsc_location id="loc-fence-{node}" rsc="fence-{node}" '
                      f'node="{node}" score="-INFINITY"/>'])


def started(lab, rid):
    out = lab.exec("node1", ["crm_mon", "-1", "--output-as=xml"], timeout=30).stdout
    doc = etree.fromstring(out.encode())
    return doc.xpath(f"//resource[@id='{rid}' and @role='Started' and @failed='false']/node/@name")


def wait_for(what, predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def fence_events(lab, target):
    result = lab.exec("node1", ["stonith_admin", "--history", target, "--output-as=xml"],
                      check=False, timeout=30)
    if result.returncode != 0:
        return []
    doc = etree.fromstring(result.stdout.encode())
    return [event.attrib for event in doc.iter("fence_event")]


def test_pacemaker_fences_a_powered_off_peer_with_fence_bmc(new_lab, fence_bmc_installed):
    with new_lab(stack="pacemaker") as lab:
        configure_fencing(lab)
        assert wait_for("fence-node2 started on node1", lambda: started(lab, "fence-node2")) \
            == ["node1"]
        assert wait_for("fence-node1 started on node2", lambda: started(lab, "fence-node1")) \
            == ["node2"]
        listed = lab.exec("node1", ["stonith_admin", "--list", "node2"]).stdout
        assert "fence-node2" in listed and "fence-node1" not in listed
        listed = lab.exec("node2", ["stonith_admin", "--list", "node1"]).stdout
        assert "fence-node1" in listed  # found through fence_bmc's list action

        lab.power("node2", "off", wait=True)  # the peer loses its power

        events = wait_for("a successful fencing of node2 in the history", lambda: [
            e for e in fence_events(lab, "node2") if e.get("status") == "success"])
        event = events[0]
        assert event["target"] == "node2" and event["action"] == "reboot"
        assert event.get("delegate", event.get("executioner", "node1")) == "node1"
        shown = lab.exec("node1", ["stonith_admin", "--history", "node2"]).stdout
        assert "node2" in shown and "successful" in shown.lower()

        lab.wait_booted("node2")  # the reboot's power on brought it back
        lab.wait_online()
        pacemaker_log = (lab.node_dir("node1") / "var-log/pacemaker/pacemaker.log").read_text()
        assert "targeting node2 using fence-node2 returned 0" in pacemaker_log
        assert lab.bmc("node2").password not in pacemaker_log
