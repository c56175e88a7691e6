"""fence_bmc where the cluster tools look for it: stonith_admin and cluster-glue's stonith.

Both tools find agents only in fixed places (/usr/sbin for the fencer,
cluster-glue's external/ plugin directory), so the fixture puts the same
wrappers ``hapack install`` writes there, and removes what it added.
"""

import os
import shutil
import subprocess

import pytest
from lxml import etree

from requires import need_root
from hapack import install
from hapack.stonith import glue
from test_fence_sim import SimBmc, need_ipmi_sim

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "data", "fence_bmc-metadata.xml")


def _place(path, module, what):
    """Write the install wrapper at path unless one is there; True if we wrote it."""
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            if module not in handle.read():
                pytest.skip(f"{path} exists and is not hapack's {what}")
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(install.wrapper(module, what))
    os.chmod(path, 0o755)
    return True


@pytest.fixture(scope="module")
def system_agents():
    need_root()
    for tool in ("stonith_admin", "stonith"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: pacemaker-cli-utils, cluster-glue)")
    placed = []
    agent = "/usr/sbin/fence_bmc"
    plugin = os.path.join(install.glue_dir("/"), "bmc")
    for path, module, what in ((agent, "hapack.stonith.fence_bmc", "stonith:fence_bmc"),
                               (plugin, "hapack.stonith.glue",
                                "cluster-glue stonith external/bmc")):
        if _place(path, module, what):
            placed.append(path)
    yield {"agent": agent, "plugin": plugin}
    for path in placed:
        os.unlink(path)


@pytest.fixture
def bmc(tmp_path):
    need_ipmi_sim()
    with SimBmc(tmp_path / "bmc") as sim:
        yield sim


def run(*argv, env=None, timeout=120):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def test_stonith_admin_lists_the_installed_agents(system_agents):
    names = run("stonith_admin", "-I").stdout.split()
    assert "fence_bmc" in names and "external/bmc" in names


def test_stonith_admin_metadata(system_agents):
    result = run("stonith_admin", "--metadata", "-a", "fence_bmc")
    assert result.returncode == 0, result.stderr
    shown = etree.fromstring(result.stdout.encode())
    golden = etree.parse(GOLDEN).getroot()
    assert shown.xpath("//parameter/@name") == golden.xpath("//parameter/@name")
    actions = shown.xpath("//action/@name")  # the fencer adds start and stop
    assert actions[:len(golden.xpath("//action"))] == golden.xpath("//action/@name")
    assert {"start", "stop"} <= set(actions)


def test_stonith_admin_validate(system_agents, tmp_path):
    secret = "n0t-Sh0wn-4nywhere"
    ok = run("stonith_admin", "--validate", "-a", "fence_bmc", "-o", "ip=192.0.2.1",
             "-o", f"password={secret}", "-o", "pcmk_host_list=peer", "-o", "hostname=peer")
    assert ok.returncode == 0 and "succeeded" in ok.stdout, ok.stdout + ok.stderr
    loose = tmp_path / "pw"
    loose.write_text(secret)
    loose.chmod(0o644)
    bad = run("stonith_admin", "--validate", "-a", "fence_bmc", "-o", "ip=192.0.2.1",
              "-o", f"password_file={loose}")
    assert bad.returncode != 0 and "chmod 600" in bad.stdout + bad.stderr
    both = run("stonith_admin", "--validate", "-a", "fence_bmc", "-o", "ip=192.0.2.1",
               "-o", f"password={secret}", "-o", f"password_file={loose}")
    assert both.returncode != 0
    assert secret not in ok.stdout + ok.stderr + bad.stdout + bad.stderr + both.stdout + both.stderr


def test_cluster_glue_stonith_drives_external_bmc(system_agents, bmc):
    config = [f"{k}={v}" for k, v in bmc.params(hostname="peer").items()]
    glue = ["stonith", "-t", "external/bmc", *config]
    listed = run(*glue, "-l")
    assert (listed.returncode, listed.stdout.split()) == (0, ["peer"]), listed.stderr
    assert run(*glue, "-S").returncode == 0
    node = bmc.node_pid()
    off = run(*glue, "-T", "off", "peer")
    assert off.returncode == 0, off.stdout + off.stderr
    assert not bmc.powered_node_alive() and bmc.events("off")[-1][2] == node
    assert run(*glue, "-T", "on", "peer").returncode == 0 and bmc.powered_node_alive()
    before = bmc.node_pid()
    assert run(*glue, "-T", "reset", "peer").returncode == 0
    assert bmc.powered_node_alive() and bmc.node_pid() != before
    assert run(*glue, "-T", "off", "node-x").returncode != 0
    everything = " ".join([listed.stdout, listed.stderr, off.stdout, off.stderr])
    assert bmc.password not in everything


def test_cluster_glue_sees_the_plugin_parameters(system_agents):
    result = run("stonith", "-t", "external/bmc", "-n")
    assert result.returncode == 0 and result.stdout.split() == list(glue.CONFIG_NAMES)


def test_cluster_glue_passes_the_config_names_from_the_environment(system_agents, bmc):
    """``stonith -E`` (and Pacemaker's fence_legacy) export only the getconfignames names."""
    password_file = bmc.dir / "password"
    password_file.write_text(bmc.password + "\n")
    password_file.chmod(0o600)
    env = {"hostname": "peer", "ip": bmc.address, "ipport": str(bmc.port),
           "username": bmc.username, "password_file": str(password_file), "cipher": "3"}
    listed = run("stonith", "-t", "external/bmc", "-E", "-l", env=env)
    assert (listed.returncode, listed.stdout.split()) == (0, ["peer"]), listed.stderr
    off = run("stonith", "-t", "external/bmc", "-E", "-T", "off", "peer", env=env)
    assert off.returncode == 0, off.stdout + off.stderr
    assert not bmc.powered_node_alive()
