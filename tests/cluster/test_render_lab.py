"""The rendered configuration loads into a running Pacemaker cluster in the lab.

The stack file is written from the lab's own addresses (``hapack.lab.heartbeat.
stack_text``: both BMCs as fence_bmc devices, the VIP, the lab's shared disk as the
partition, a Dummy as the stateless layer) and rendered with the CLI.
In a fresh Pacemaker lab each, ``hapack render cib`` goes in with ``cibadmin --replace``
(the configuration section, as docs/stack-file.md says for a cluster that has run) and
``hapack render crm`` with ``crm configure load update``. Once it runs, ``crm_verify -L``
is clean in the node, the partition is promoted and mounted on the primary only, with
the VIP up there, the fence devices run on the nodes they do not fence,
the stateless layer runs on both nodes, and a client reaches the VIP on the holder.
"""

from __future__ import annotations

import time

import pytest
from lxml import etree

from hapack import render
from hapack.stack import load
from hapack.lab.heartbeat import PORT, checkout_agents, write_stack

TIMEOUT = 90.0


def wait_for(lab, what, predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    status = lab.exec("node1", ["crm_mon", "-1", "-r", "-f"], check=False, timeout=30)
    raise AssertionError(f"timed out waiting for {what}:\n{status.stdout}")


def crm_mon(lab):
    out = lab.exec("node1", ["crm_mon", "-1", "--output-as=xml"], timeout=30).stdout
    return etree.fromstring(out.encode())


def nodes_of(doc, rid, role):
    return sorted(doc.xpath(f"//resource[@id='{rid}' and @role='{role}' and @failed='false']"
                            "/node/@name"))


def running_as_rendered(lab):
    """The holder of the stateful side once everything rendered runs, else None."""
    doc = crm_mon(lab)
    holder = nodes_of(doc, "partition", "Promoted")
    if (len(holder) == 1 and nodes_of(doc, "vip", "Started") == holder
            and nodes_of(doc, "partition", "Unpromoted") == [n for n in lab.nodes if n not in holder]
            and nodes_of(doc, "web", "Started") == list(lab.nodes)
            and nodes_of(doc, "fence-node1", "Started") == ["node2"]
            and nodes_of(doc, "fence-node2", "Started") == ["node1"]):
        return holder[0]
    return None


def check_accepted(lab, stack, watch):
    """Once the rendered stack runs: crm_verify -L clean, the partition mounted and the
    VIP up on the holder only, and a client answered by the holder through the VIP."""
    holder = wait_for(lab, "the rendered stack running", lambda: running_as_rendered(lab))
    verify = lab.exec("node1", ["crm_verify", "-L", "-VV"], check=False, timeout=60)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), \
        verify.stdout + verify.stderr
    mounts = {n: [m.target for m in lab.mounts(n) if m.source == lab.shared_disk.device]
              for n in lab.nodes}
    assert mounts == {n: (["/tmp/hapack-data"] if n == holder else []) for n in lab.nodes}
    for node in lab.nodes:
        addr = lab.exec(node, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert (f" {stack.vip.address}/24 " in addr) == (node == holder)
    watch.wait_for(holder, timeout=30, after=time.monotonic())
    return holder


def rendered(lab, form):
    """The lab's stack file rendered by the CLI: the file to load in a node."""
    stack_file = write_stack(lab, lab.shared_dir / "render" / "stack.toml")
    out = stack_file.with_name(f"stack.{form}")
    assert render.main([form, str(stack_file), "-o", str(out)]) == 0
    if form == "cib":  # a running cluster: replace its configuration section
        section = etree.fromstring(out.read_bytes()).find("configuration")
        out = stack_file.with_name("configuration.xml")
        out.write_bytes(etree.tostring(section))
    return load(stack_file), out


LOAD = {"cib": lambda path: ["cibadmin", "--replace", "--scope", "configuration",
                             "--xml-file", str(path)],
        "crm": lambda path: ["crm", "configure", "load", "update", str(path)]}


@pytest.mark.parametrize("form", ["cib", "crm"])
def test_rendered_configuration_loads_into_the_lab_cluster(new_lab, form):
    with new_lab(stack="pacemaker") as lab, checkout_agents(lab):
        stack, path = rendered(lab, form)
        lab.wait_online()
        for node in lab.nodes:  # the web tier a client sees (the stack's "web" is a Dummy)
            lab.start_responder(node, port=PORT)
        with lab.watch_vip(str(stack.vip.address), port=PORT) as watch:
            loaded = lab.exec("node1", LOAD[form](path), check=False, timeout=120)
            assert loaded.returncode == 0, loaded.stdout + loaded.stderr
            holder = check_accepted(lab, stack, watch)
        assert holder == "node1"  # the primary's preference on a cold start
