"""ocf:hapack:partition with promote_on_start, as Heartbeat's haresources runs it (no
clone, no promote action): on a real ext4 loop device, start leaves it promoted and
mounted, stop unmounts and demotes, and the promotion gate still holds: a file system
left in use is mounted only with proof that its holder is off, and a refused start
leaves nothing started."""

import os

from hapack import confirm
from test_partition import agent, disk, reason, space  # noqa: F401  (fixtures)


def test_start_promotes_and_mounts_and_stop_releases(disk, agent, space):
    dev = disk()
    assert agent("start", dev, promote_on_start="true").returncode == 0
    assert space.mounted_at(agent.directory)
    assert agent("monitor", dev, promote_on_start="true").returncode == 8
    assert agent("start", dev, promote_on_start="true").returncode == 0  # again: no change
    assert len(space.mounted_at(agent.directory)) == 1
    assert agent("stop", dev, promote_on_start="true").returncode == 0
    assert not space.mounted_at(agent.directory)
    assert agent("monitor", dev, promote_on_start="true").returncode == 7


def test_a_refused_promotion_fails_the_start_and_leaves_it_stopped(disk, agent, space,
                                                                    tmp_path):
    dev = disk(unclean=True)  # as left by a node that crashed with it mounted
    result = agent("start", dev, promote_on_start="true")
    assert result.returncode == 1 and "journal needs recovery" in reason(result)
    assert not space.mounted_at(agent.directory)
    assert agent("monitor", dev, promote_on_start="true").returncode == 7  # not even started

    # Heartbeat's STONITH (external/bmc) confirmed the peer off: now it may be mounted
    confirm.write(str(tmp_path / "fenced"), "node2", os.uname().nodename, "external/bmc off")
    result = agent("start", dev, promote_on_start="true")
    assert result.returncode == 0, result.stderr
    assert space.mounted_at(agent.directory)
    assert agent("stop", dev, promote_on_start="true").returncode == 0
    assert not space.mounted_at(agent.directory)


def test_promote_on_start_is_refused_under_pacemaker(disk, agent, space):
    dev = disk()
    clone = {"OCF_RESKEY_crm_feature_set": "3.16.1", "OCF_RESKEY_CRM_meta_promoted_max": "1",
             "OCF_RESKEY_CRM_meta_notify": "true"}
    result = agent("start", dev, env=clone, promote_on_start="true")
    assert result.returncode == 6 and "promotable clone" in reason(result)
    assert not space.mounted_at(agent.directory)


def test_a_fence_confirmation_counts_only_for_the_peer_named_in_nodes(disk, agent, space,
                                                                      tmp_path):
    """nodes names this node and its peer: a confirmation about any other name (a third
    node, another spelling) leaves the file system unmounted; one about the peer does."""
    me = os.uname().nodename
    dev = disk(unclean=True)
    fenced = str(tmp_path / "fenced")
    for wrong in ("node3", "Node2", "node2x", "node"):
        confirm.write(fenced, wrong, me, "external/bmc off")
        result = agent("start", dev, promote_on_start="true", nodes=f"node2 {me}")
        assert result.returncode == 1, (wrong, result.stderr)
        assert f"names {wrong}, not the peer node2" in reason(result)
        assert not space.mounted_at(agent.directory)
    confirm.write(fenced, "node2", me, "external/bmc off")
    result = agent("start", dev, promote_on_start="true", nodes=f"node2 {me}")
    assert result.returncode == 0, result.stderr
    assert agent("stop", dev, promote_on_start="true", nodes=f"node2 {me}").returncode == 0


def test_nodes_must_be_this_node_and_one_peer(disk, agent, space, tmp_path):
    me = os.uname().nodename
    dev = disk(unclean=True)
    confirm.write(str(tmp_path / "fenced"), "node2", me, "external/bmc off")
    for nodes in ("node2 node3", "node2", f"{me} {me}", f"node2 {me} node3"):
        result = agent("start", dev, promote_on_start="true", nodes=nodes)
        assert result.returncode == 6, (nodes, result.stderr)
        assert not space.mounted_at(agent.directory)
