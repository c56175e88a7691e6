"""ocf:hapack:partition on the lab's two nodes and their shared disk, driven the way hamon drives it.

The invariant checked after every step: the partition's file system is
mounted in at most one node. A node that hangs while holding it keeps it:
the other node's promotion is refused until the hung node is gone and
fenced (power confirmed off through its BMC).

Note: in the lab both nodes share one kernel, which releases the file
system cleanly when a node's namespaces die; a real crashed node leaves the
journal dirty, which the integration tests cover (the fence confirmation is
then required).
"""

import sys

DIRECTORY = "/tmp/hapack-partition-data"


def agent(lab, node, action, level=0, **params):
    env = {"OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "data",
           "OCF_RESKEY_CRM_meta_timeout": "20000", "OCF_RESKEY_backend": "shared",
           "OCF_RESKEY_device": lab.shared_disk.device_for(node),
           "OCF_RESKEY_directory": DIRECTORY, "OCF_RESKEY_fstype": lab.shared_disk.fstype,
           "OCF_CHECK_LEVEL": str(level)}
    env.update({f"OCF_RESKEY_{k}": str(v) for k, v in params.items()})
    return lab.exec(node, [sys.executable, "-m", "hapack.ocf.partition", action], env=env,
                    check=False)


def holders_of_the_partition(lab):
    """The nodes in which the partition's file system is mounted."""
    device = lab.shared_disk.device_for(lab.nodes[0])
    return {node for node in lab.nodes
            for mount in lab.mounts(node) if mount.source == device}


def test_the_partition_is_never_mounted_on_two_nodes(plain):
    lab = plain
    node1, node2 = lab.nodes
    try:
        for node in (node1, node2):
            assert agent(lab, node, "start").returncode == 0
        assert holders_of_the_partition(lab) == set()

        assert agent(lab, node1, "promote").returncode == 0
        assert holders_of_the_partition(lab) == {node1}
        refused = agent(lab, node2, "promote")
        assert refused.returncode == 1 and "in use" in refused.stderr
        assert holders_of_the_partition(lab) == {node1}

        # switchover: a clean demote releases it, the peer takes it without fencing
        assert agent(lab, node1, "demote").returncode == 0
        assert holders_of_the_partition(lab) == set()
        assert agent(lab, node2, "promote").returncode == 0
        assert holders_of_the_partition(lab) == {node2}
        assert agent(lab, node2, "monitor", level=20).returncode == 8

        # node2 hangs while holding it: node1 must not take it
        lab.spawn(node2, ["sh", "-c", f"cd {DIRECTORY} && exec sleep 600"], name="holder")
        lab.freeze(node2)
        refused = agent(lab, node1, "promote")
        assert refused.returncode == 1 and "nothing shows the peer is off" in refused.stderr
        assert holders_of_the_partition(lab) == {node2}

        # node2 dies and is fenced (power off confirmed by its BMC); hamon says so
        lab.crash(node2)
        lab.power(node2, "off", wait=True)
        assert lab.power(node2, "status") == "off"
        lab.exec(node1, ["sh", "-c", f"mkdir -p /run/hapack && echo {node2} > "
                                     "/run/hapack/fence-confirmed"])
        assert agent(lab, node1, "promote").returncode == 0
        assert holders_of_the_partition(lab) == {node1}
        assert agent(lab, node1, "monitor", level=20).returncode == 8
    finally:
        for node in lab.nodes:
            if lab.running(node) and not lab.frozen(node):
                agent(lab, node, "stop")
    assert holders_of_the_partition(lab) == set()
