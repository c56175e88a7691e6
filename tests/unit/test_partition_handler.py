"""The DRBD handlers: fence-peer through the cluster, unfence, split-brain marker (command lines pinned)."""

import pytest
from lxml import etree

from hapack.ocf import _drbd, partition_handler as handler

CIB = """<cib><configuration><crm_config/><nodes>
  <node id="1" uname="node1"/><node id="2" uname="node2"/></nodes>
  <resources><clone id="data-clone"><meta_attributes id="m">
    <nvpair id="m1" name="promotable" value="true"/></meta_attributes>
    <primitive id="data" class="ocf" provider="hapack" type="partition">
      <instance_attributes id="ia"><nvpair id="ia1" name="drbd_resource" value="r0"/>
      </instance_attributes></primitive></clone></resources>
  <constraints>{constraints}</constraints></configuration>
  <status>{status}</status></cib>"""

ONLINE = '<node_state id="1" uname="node1" in_ccm="true" crmd="online" join="member" expected="member"/>'
FENCED = '<node_state id="1" uname="node1" in_ccm="false" crmd="offline" join="down" expected="down"/>'
LOST = '<node_state id="1" uname="node1" in_ccm="false" crmd="offline" join="member" expected="member"/>'
ONLINE_217 = '<node_state id="1" uname="node1" in_ccm="1732400000" crmd="1732400000" join="member" expected="member"/>'


def cib(status="", constraints=""):
    return CIB.format(status=status, constraints=constraints)


@pytest.mark.parametrize("status,state", [(ONLINE, "reachable"), (ONLINE_217, "reachable"),
                                          (FENCED, "fenced"), (LOST, "unknown"),
                                          ("", "unknown")])
def test_peer_state_from_the_cib(status, state):
    assert handler.peer_state(etree.fromstring(cib(status)), "node1") == state


@pytest.mark.parametrize("disk,state,result", [
    ("UpToDate", "reachable", (4, True)),
    ("Consistent", "reachable", (4, True)),
    ("UpToDate", "fenced", (7, True)),
    ("UpToDate", "unknown", (5, True)),
    ("Consistent", "fenced", (5, False)),
    ("Consistent", "unknown", (5, False)),
    ("Outdated", "reachable", (5, False)),
    ("Diskless", "fenced", (5, False)),
])
def test_fence_peer_decision(disk, state, result):
    assert handler.decide(disk, state) == result


def test_the_clone_is_found_by_its_drbd_resource():
    doc = etree.fromstring(cib())
    assert handler.find_clone(doc, "r0") == "data-clone"
    assert handler.find_clone(doc, "r1") is None


def test_the_constraint_forbids_the_promoted_role_elsewhere():
    loc = etree.fromstring(handler.constraint_xml("r0", "data-clone", "node2"))
    assert (loc.get("id"), loc.get("rsc")) == ("hapack-fence-r0-data-clone", "data-clone")
    rule = loc.find("rule")
    assert (rule.get("role"), rule.get("score")) == ("Promoted", "-INFINITY")
    expr = rule.find("expression")
    assert (expr.get("attribute"), expr.get("operation"), expr.get("value")) == (
        "#uname", "ne", "node2")


QUERY = ["cibadmin", "--query", "--local"]
EVENTS = ["drbdsetup", "events2", "--now", "r0"]


def events(disk):
    return (f"exists resource name:r0 role:Primary\nexists device name:r0 volume:0 minor:0 "
            f"disk:{disk}\nexists -\n")


@pytest.fixture
def drbd_env(monkeypatch, tmp_path):
    proc = tmp_path / "proc-drbd"
    proc.write_text("version: 9.2.8 (api:2/proto:86-122)\n")
    monkeypatch.setattr(_drbd, "PROC", str(proc))
    return {"DRBD_RESOURCE": "r0", "DRBD_MINOR": "0", "HA_LOGFACILITY": "none",
            "HAPACK_STATE_DIR": str(tmp_path)}


def test_fence_peer_places_the_constraint_and_answers_4(fp, drbd_env):
    fp.register(QUERY, stdout=cib(ONLINE))
    fp.register(EVENTS, stdout=events("UpToDate"))
    fp.register(["cibadmin", "--create", "--scope", "constraints", "--xml-text",
                 handler.constraint_xml("r0", "data-clone", "node2")])
    assert handler.main(["fence-peer", "--node", "node2"], drbd_env) == 4
    assert fp.call_count(["cibadmin", "--create", fp.any()]) == 1


def test_fence_peer_waits_for_a_lost_peer_to_be_fenced(fp, drbd_env, monkeypatch):
    monkeypatch.setattr(handler.time, "sleep", lambda seconds: None)
    fp.register(QUERY, stdout=cib(LOST))
    fp.register(QUERY, stdout=cib(FENCED))
    fp.register(EVENTS, stdout=events("UpToDate"))
    fp.register(["cibadmin", "--create", fp.any()])
    assert handler.main(["fence-peer", "--node", "node2"], drbd_env) == 7


def test_fence_peer_with_a_stale_disk_places_nothing(fp, drbd_env):
    fp.register(QUERY, stdout=cib(FENCED))
    fp.register(EVENTS, stdout=events("Consistent"))
    assert handler.main(["fence-peer", "--node", "node2"], drbd_env) == 5
    assert fp.call_count(["cibadmin", "--create", fp.any()]) == 0


def test_an_existing_constraint_is_not_placed_twice(fp, drbd_env):
    existing = handler.constraint_xml("r0", "data-clone", "node2")
    fp.register(QUERY, stdout=cib(ONLINE, existing))
    fp.register(EVENTS, stdout=events("UpToDate"))
    assert handler.main(["fence-peer", "--node", "node2"], drbd_env) == 4
    assert fp.call_count(["cibadmin", "--create", fp.any()]) == 0


def test_unfence_removes_the_constraint(fp, drbd_env):
    fp.register(QUERY, stdout=cib(ONLINE, handler.constraint_xml("r0", "data-clone", "node2")))
    fp.register(["cibadmin", "--delete", "--xml-text",
                 '<rsc_location id="hapack-fence-r0-data-clone"/>'])
    assert handler.main(["unfence-peer", "--node", "node2"], drbd_env) == 0
    assert fp.call_count(["cibadmin", "--delete", fp.any()]) == 1


def test_a_cib_that_cannot_be_read_is_a_handler_failure(fp, drbd_env):
    fp.register(QUERY, returncode=102, stderr="Could not connect to the CIB")
    assert handler.main(["fence-peer", "--node", "node2"], drbd_env) == 1


def test_split_brain_is_recorded_until_cleared(drbd_env, tmp_path):
    assert _drbd.split_brain(drbd_env, "r0") is None
    assert handler.main(["split-brain", "--node", "node2"], drbd_env) == 0
    assert "on node2" in _drbd.split_brain(drbd_env, "r0")
    assert handler.main(["clear-split-brain"], drbd_env) == 0
    assert _drbd.split_brain(drbd_env, "r0") is None
