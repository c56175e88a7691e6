"""Pacemaker drives ocf:hapack:partition as a promotable clone with notify=true in the lab.

Pacemaker promotes one node; that node crashes while its journal is dirty;
Pacemaker fences it with fence_bmc and promotes the survivor, whose promote
passes the gate on Pacemaker's pre-promote notification (the file system is
still in use as far as the disk can tell). The partition is never mounted in
two nodes at once.

"The journal is dirty": the lab's nodes share one kernel, which would
release the file system cleanly when the crashed node's namespaces die; the
test keeps the crashed node's mount namespace open (as a crashed machine
"keeps" its mount: nobody unmounted it), so the superblock still says in use.
"""

from __future__ import annotations

import os

import pytest
from lxml import etree

from hapack import install
from test_fence_pacemaker import configure_fencing, fence_bmc_installed, started, wait_for  # noqa: F401

AGENT = "/usr/lib/ocf/resource.d/hapack/partition"
DIRECTORY = "/tmp/hapack-partition-data"


@pytest.fixture(scope="module")
def partition_installed():
    """The agent where Pacemaker looks (the nodes share /usr), as 'hapack install' writes it."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    text = install.wrapper("hapack.ocf.partition", "ocf:hapack:partition")
    placed = not os.path.exists(AGENT)
    if placed:
        os.makedirs(os.path.dirname(AGENT), exist_ok=True)
        with open(AGENT, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(AGENT, 0o755)
    yield AGENT
    manifest = install._read("/" + install.MANIFEST) or ""
    if placed and AGENT not in manifest and install._read(AGENT) == text:
        os.unlink(AGENT)  # ours, and no 'hapack install' has claimed it since


def clone_xml(lab):
    clone = etree.Element("clone", id="data-clone")
    meta = etree.SubElement(clone, "meta_attributes", id="data-clone-meta")
    for name, value in (("promotable", "true"), ("promoted-max", "1"), ("clone-max", "2"),
                        ("clone-node-max", "1"), ("notify", "true"),
                        ("resource-stickiness", "100")):
        etree.SubElement(meta, "nvpair", id=f"data-clone-{name}", name=name, value=value)
    prim = etree.SubElement(clone, "primitive", id="data",
                            **{"class": "ocf", "provider": "hapack", "type": "partition"})
    attrs = etree.SubElement(prim, "instance_attributes", id="data-params")
    disk = lab.shared_disk
    for name, value in (("backend", "shared"), ("device", disk.device_for("node1")),
                        ("directory", DIRECTORY), ("fstype", disk.fstype)):
        etree.SubElement(attrs, "nvpair", id=f"data-{name}", name=name, value=value)
    ops = etree.SubElement(prim, "operations")
    for name, interval, role in (("monitor", "10s", "Promoted"), ("monitor", "11s", "Unpromoted")):
        etree.SubElement(ops, "op", id=f"data-{name}-{interval}", name=name, interval=interval,
                         timeout="20s", role=role)
    return etree.tostring(clone, encoding="unicode")


def promoted(lab, on="node1"):
    out = lab.exec(on, ["crm_mon", "-1", "--output-as=xml"], check=False, timeout=30).stdout
    if not out:
        return []
    doc = etree.fromstring(out.encode())
    return doc.xpath("//clone[@id='data-clone']/resource[@role='Promoted' and @failed='false']"
                     "/node/@name")


def holders_of_the_partition(lab):
    device = lab.shared_disk.device_for("node1")
    return {node for node in lab.nodes for m in lab.mounts(node) if m.source == device}


def test_pacemaker_moves_the_partition_only_after_fencing(new_lab, fence_bmc_installed,
                                                          partition_installed):
    with new_lab(stack="pacemaker") as lab:
        configure_fencing(lab)
        wait_for("fence devices started",
                 lambda: started(lab, "fence-node2") and started(lab, "fence-node1"))
        lab.exec("node1", ["cibadmin", "--create", "-o", "resources", "--xml-text",
                           clone_xml(lab)])
        holder = wait_for("a promoted instance", lambda: promoted(lab), timeout=40)[0]
        survivor = "node2" if holder == "node1" else "node1"
        assert holders_of_the_partition(lab) == {holder}

        # the holder crashes with the file system mounted: keep its mount alive (dirty)
        init = lab.power_state(holder)["init"][0]
        kept = os.open(f"/proc/{init}/ns/mnt", os.O_RDONLY)
        try:
            lab.crash(holder)

            def survivor_promoted():
                assert len(holders_of_the_partition(lab)) <= 1  # checked at every poll
                return promoted(lab, survivor) == [survivor]
            assert wait_for(f"{survivor} promoted", survivor_promoted)
            wait_for("the partition mounted on the survivor",
                     lambda: holders_of_the_partition(lab) == {survivor})
            log = (lab.node_dir(survivor) / "var-log/pacemaker/pacemaker.log").read_text()
            assert "promotion allowed: Pacemaker promotes this node" in log
        finally:
            os.close(kept)
        lab.wait_booted(holder)  # fenced with reboot: back as a cluster member
        lab.wait_online()
        wait_for("both instances running", lambda: len(started_instances(lab, survivor)) == 2)
        assert promoted(lab, survivor) == [survivor]
        assert holders_of_the_partition(lab) == {survivor}


def started_instances(lab, on="node1"):
    out = lab.exec(on, ["crm_mon", "-1", "--output-as=xml"], check=False, timeout=30).stdout
    doc = etree.fromstring(out.encode()) if out else None
    return [] if doc is None else doc.xpath(
        "//clone[@id='data-clone']/resource[@active='true' and @failed='false']/node/@name")
