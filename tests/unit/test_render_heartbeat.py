"""hapack render heartbeat, as Heartbeat itself reads it: stonith_host lines with every
external/bmc setting in getconfignames order, the partition promoted by its start, and
agents that answer the OCF wrapper's 'status'."""

import os
import subprocess
from pathlib import Path

import pytest

from hapack.cib import heartbeat
from hapack.log import NullLogger
from hapack.stack import loads
from hapack.stonith import fence_bmc, fencing, glue

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "examples" / "stack.toml"
OCF_WRAPPER = "/etc/ha.d/resource.d/OCF"


def lab_stack(edit=lambda text: text):
    return loads(edit(LAB.read_text()), "stack.toml", check_agents=False)


def stonith_lines(stack):
    text = heartbeat.ha_cf(stack, "stack.toml")
    return [line.split(None, 3) for line in text.splitlines() if line.startswith("stonith_host")]


def glue_environ(words):
    """What cluster-glue (stonith1_compat_string_to_NVpair) makes of the values: one word
    per getconfignames name, the last one taking the rest of the line."""
    values = words.split(None, len(glue.CONFIG_NAMES) - 1)
    assert len(values) == len(glue.CONFIG_NAMES), "cluster-glue refuses a short line"
    return dict(zip(glue.CONFIG_NAMES, values))


def test_stonith_host_gives_external_bmc_every_setting():
    lines = stonith_lines(lab_stack())
    assert [(who, plugin) for _, who, plugin, _ in lines] == [
        ("node2", "external/bmc"), ("node1", "external/bmc")]
    env = glue_environ(lines[0][3])
    raw = glue.raw_from_environ(env)
    raw.update(action="off", plug="node1")
    values = fencing.build_request(fence_bmc.AGENT, raw, NullLogger(), None,
                                    fencing.Secrets()).values
    assert (values.hostname, values.ip, values.ipport, values.username, values.password_file,
            values.driver, values.lanplus, values.cipher) == (
        "node1", "198.18.242.21", 623, "admin", "/etc/hapack/bmc/node1.password", "ipmi",
        True, "3")  # cipher is a choice of 3 or 17
    assert env["fence_confirmed_file"] == "/run/hapack/fence-confirmed"


def test_unset_settings_keep_their_position_and_lost_ones_are_named():
    def edit(text):
        return (text.replace('password_file = "/etc/hapack/bmc/node2.password"', 'password = "pw"')
                .replace("cipher = 3\n\n# Heartbeat links", "\n# Heartbeat links")
                .replace('drbd_resource = "hapack"', 'drbd_resource = "hapack"\n\n'
                         '[partition.params]\nfence_confirmed_file = ""'))
    stack = lab_stack(edit)
    assert stack.nodes[1].bmc.cipher is None and stack.nodes[1].bmc.password == "pw"
    line = stonith_lines(stack)[1]
    env = glue_environ(line[3])
    assert env["password_file"] == env["cipher"] == env["fence_confirmed_file"] == glue.UNSET
    raw = glue.raw_from_environ(env)
    assert "cipher" not in raw and "password_file" not in raw and raw["username"] == "admin"
    text = heartbeat.ha_cf(stack, "stack.toml")
    assert "# Not passed to external/bmc (stonith_host passes only its getconfignames): " \
           "password." in text
    assert "pw" not in text.split()  # ha.cf is world-readable


def test_the_partition_is_promoted_by_its_start():
    files = heartbeat.files(lab_stack(), "stack.toml")
    text, mode = files["ha.d/conf/OCF/partition/partition"]
    assert "OCF_RESKEY_promote_on_start='true'" in text and mode == 0o600
    assert "promote_on_start" not in files["ha.d/conf/OCF/vip/vip"][0]


@pytest.fixture
def wrapped(tmp_path):
    """Debian's OCF wrapper in front of a rendered status agent whose real agent is a fake
    that exits with $FAKE_RC (and logs its arguments)."""
    if not os.access(OCF_WRAPPER, os.X_OK):
        pytest.skip("Debian's heartbeat package is not installed")
    fake = tmp_path / "fake-agent"
    fake.write_text('#!/bin/sh\necho "$@" >> "$FAKE_LOG"\nexit "$FAKE_RC"\n')
    fake.chmod(0o755)
    shim = tmp_path / "ocf" / "hapack" / "vip"
    shim.parent.mkdir(parents=True)
    text = heartbeat.status_agent("hapack", "vip")
    assert "'/usr/lib/ocf/resource.d/hapack/vip'" in text
    shim.write_text(text.replace("'/usr/lib/ocf/resource.d/hapack/vip'", f"'{fake}'"))
    shim.chmod(0o755)
    conf = tmp_path / "conf" / "OCF" / "vip" / "vip"
    conf.parent.mkdir(parents=True)
    conf.write_text("OCF_RESKEY_ip='192.0.2.9'\n")

    def call(operation, rc):
        env = {"PATH": os.environ["PATH"], "HA_DIR": str(tmp_path), "FAKE_RC": str(rc),
               "OCF_AGENTS": str(tmp_path / "ocf"), "FAKE_LOG": str(tmp_path / "log"),
               "HA_LOGFACILITY": "none", "HA_LOGFILE": str(tmp_path / "ha-log")}
        return subprocess.run([OCF_WRAPPER, "vip", "vip", operation], env=env,
                              capture_output=True, text=True, timeout=30)
    call.log = tmp_path / "log"
    return call


@pytest.mark.parametrize("rc,owned", [(0, True), (8, True), (9, True), (190, True), (191, True),
                                      (7, False), (1, False), (6, False)])
def test_status_through_the_ocf_wrapper_is_the_agents_monitor(wrapped, rc, owned):
    result = wrapped("status", rc)
    assert wrapped.log.read_text() == "monitor\n"
    # ResourceManager's we_own_resource: "running" (and no "not running") means held
    said = result.stdout.lower()
    assert ("running" in said and "not running" not in said) == owned
    assert (result.returncode == 0) == owned


def test_other_actions_go_to_the_agent_unchanged(wrapped):
    assert wrapped("start", 0).returncode == 0
    assert wrapped("stop", 5).returncode == 5
    assert wrapped.log.read_text() == "start\nstop\n"
