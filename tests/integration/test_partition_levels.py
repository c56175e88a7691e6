"""ocf:hapack:partition check levels on a real ext4 loop device, as the README states them.

Level 10 reads from the device in both roles (a device that no longer
answers fails, where level 0 cannot see it); level 20 writes a probe only
into the promoted mount; an unpromoted partition asked for level 20 runs
level 10 and never writes into the unmounted mount point.
"""

import os

from test_partition import agent, disk, promoted, reason, sh, space  # noqa: F401 (fixtures)


def shrink_to_nothing(dev):
    """The device stops answering reads (capacity 0), still ours: a LUN gone bad."""
    os.truncate(dev.image, 0)
    sh("losetup", "--set-capacity", dev.device)


def restore(dev):
    os.truncate(dev.image, 64 * 1024 * 1024)
    sh("losetup", "--set-capacity", dev.device)


def test_level_10_on_an_unpromoted_partition_reads_the_device(disk, agent):
    dev = disk()
    assert agent("start", dev).returncode == 0
    assert agent("monitor", dev, level=10).returncode == 0
    shrink_to_nothing(dev)
    try:
        assert agent("monitor", dev, level=0).returncode == 0  # level 0 cannot see it
        result = agent("monitor", dev, level=10)
        assert result.returncode == 1 and f"cannot read from {dev.device}" in reason(result)
        result = agent("monitor", dev, level=20)  # unpromoted: 20 runs as 10
        assert result.returncode == 1 and f"cannot read from {dev.device}" in reason(result)
    finally:
        restore(dev)
    assert agent("stop", dev).returncode == 0


def test_level_10_on_a_promoted_partition_reads_the_device(disk, agent, space):
    dev = disk()
    promoted(agent, dev)
    assert agent("monitor", dev, level=10).returncode == 8
    shrink_to_nothing(dev)
    try:
        assert agent("monitor", dev, level=0).returncode == 8
        result = agent("monitor", dev, level=10)
        assert result.returncode == 9 and f"cannot read from {dev.device}" in reason(result)
    finally:
        restore(dev)
    assert agent("stop", dev).returncode == 0
    assert not space.mounted_at(agent.directory)


def test_level_20_never_writes_into_an_unmounted_mount_point(disk, agent, space):
    dev = disk()
    assert agent("start", dev).returncode == 0
    assert not os.path.exists(agent.directory)
    assert agent("monitor", dev, level=20).returncode == 0  # absent: nothing to write into
    assert not os.path.exists(agent.directory)
    os.makedirs(agent.directory)
    then = os.stat(agent.directory).st_mtime_ns
    assert agent("monitor", dev, level=20).returncode == 0
    assert os.stat(agent.directory).st_mtime_ns == then  # no probe created and deleted there
    assert os.listdir(agent.directory) == []
    assert agent("promote", dev).returncode == 0
    assert agent("monitor", dev, level=20).returncode == 8  # promoted: the probe runs
    assert agent("stop", dev).returncode == 0
