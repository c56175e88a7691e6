"""The DRBD fence-peer handler against a real CIB (Pacemaker's tools on a CIB file).

DRBD itself cannot run here (no kernel module), so a stand-in ``drbdsetup``
on PATH reports the local disk state; cibadmin and crm_verify are the real
ones, working on a file through ``CIB_file``.
"""

import os
import subprocess
import sys

import pytest

from requires import need_binary

pytestmark = pytest.mark.skipif(os.path.exists("/proc/drbd"),
                                reason="a real DRBD module is loaded: the stand-in would lie")

RESOURCES = """<clone id="data-clone"><meta_attributes id="data-clone-meta">
  <nvpair id="data-clone-promotable" name="promotable" value="true"/>
  <nvpair id="data-clone-notify" name="notify" value="true"/></meta_attributes>
  <primitive id="data" class="ocf" provider="hapack" type="partition">
    <instance_attributes id="data-params">
      <nvpair id="data-backend" name="backend" value="drbd"/>
      <nvpair id="data-res" name="drbd_resource" value="r0"/>
      <nvpair id="data-device" name="device" value="/dev/drbd0"/>
      <nvpair id="data-dir" name="directory" value="/srv/data"/>
      <nvpair id="data-fstype" name="fstype" value="ext4"/></instance_attributes>
  </primitive></clone>"""

STATUS = {
    "online": '<node_state id="1" uname="node1" in_ccm="true" crmd="online" join="member" '
              'expected="member"/>',
    "fenced": '<node_state id="1" uname="node1" in_ccm="false" crmd="offline" join="down" '
              'expected="down"/>',
}


@pytest.fixture
def cib(tmp_path):
    need_binary("cibadmin", "crm_verify", "crm_attribute")
    path = tmp_path / "cib.xml"
    path.write_text(subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                                   check=True).stdout)
    env = dict(os.environ, CIB_file=str(path))

    def cibadmin(*args):
        return subprocess.run(["cibadmin", *args], env=env, capture_output=True, text=True,
                              check=True).stdout
    cibadmin("--create", "-o", "nodes", "--xml-text", '<node id="1" uname="node1"/>')
    cibadmin("--create", "-o", "nodes", "--xml-text", '<node id="2" uname="node2"/>')
    cibadmin("--create", "-o", "resources", "--xml-text", RESOURCES)
    subprocess.run(["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled",
                    "--update", "false"], env=env, check=True, capture_output=True)
    cibadmin.env, cibadmin.path = env, path
    return cibadmin


def handler(cib, tmp_path, disk, peer):
    """Run the fence-peer handler on node2 as DRBD would, the peer (node1) as given."""
    if peer in STATUS:
        cib("--create", "-o", "status", "--xml-text", STATUS[peer])
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "drbdsetup"
    fake.write_text("#!/bin/sh\n"
                    "echo 'exists resource name:r0 role:Primary suspended:no'\n"
                    f"echo 'exists device name:r0 volume:0 minor:0 disk:{disk} client:no'\n"
                    "echo 'exists -'\n")
    fake.chmod(0o755)
    env = dict(cib.env, DRBD_RESOURCE="r0", DRBD_MINOR="0", HA_LOGFACILITY="none",
               PATH=f"{bindir}:{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "hapack.ocf.partition_handler", "fence-peer",
                           "--node", "node2", "--timeout", "1"], env=env, capture_output=True,
                          text=True, timeout=60)


def constraints(cib):
    return cib("--query", "--scope", "constraints")


@pytest.mark.parametrize("disk,peer,code,placed", [
    ("UpToDate", "online", 4, True),
    ("UpToDate", "fenced", 7, True),
    ("UpToDate", "unknown", 5, True),
    ("Outdated", "online", 5, False),
])
def test_fence_peer_outdates_the_peer_through_the_cluster(cib, tmp_path, disk, peer, code,
                                                           placed):
    result = handler(cib, tmp_path, disk, peer)
    assert result.returncode == code, result.stderr
    assert ('id="hapack-fence-r0-data-clone"' in constraints(cib)) is placed
    verify = subprocess.run(["crm_verify", "--xml-file", str(cib.path)], capture_output=True,
                            text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr  # the constraint is valid CIB


def test_unfence_removes_the_constraint_again(cib, tmp_path):
    assert handler(cib, tmp_path, "UpToDate", "online").returncode == 4
    result = subprocess.run([sys.executable, "-m", "hapack.ocf.partition_handler",
                             "unfence-peer", "--resource", "r0", "--node", "node2"],
                            env=dict(cib.env, HA_LOGFACILITY="none"), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "hapack-fence-r0" not in constraints(cib)
