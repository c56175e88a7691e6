"""external/bmc as Heartbeat's stonith_host reaches it: every setting by position, in
getconfignames order ('-' for one left unset), and the fence confirmation for the
partition's promotion gate after a verified power-off."""

import io

import os

import pytest
from lxml import etree

from hapack.ocf import _gate
from hapack.stonith import glue
from hapack.stonith.drivers import OFF, ON
from hapack.stonith.errors import AuthError

from test_fence_glue import bmc  # noqa: F401  (the fake BMC fixture)
from test_fence_protocol import SECRET


def positional(line):
    """The environment cluster-glue builds from a stonith_host line's values
    (stonith1_compat_string_to_NVpair: one word per name, the last takes the rest)."""
    words = line.split(None, len(glue.CONFIG_NAMES) - 1)
    assert len(words) == len(glue.CONFIG_NAMES), "cluster-glue refuses a short line"
    return dict(zip(glue.CONFIG_NAMES, words))


def op(environ, *argv):
    out = io.StringIO()
    rc = glue.main(list(argv), environ=dict(environ, power_timeout="2",
                                            stonith_status_sleep="0.001"), out=out)
    return rc, out.getvalue()


def test_every_connection_setting_has_a_position():
    assert glue.CONFIG_NAMES[:2] == ("hostname", "ip")
    for name in ("ipport", "username", "password_file", "driver", "lanplus", "cipher"):
        assert name in glue.CONFIG_NAMES
    assert "password" not in glue.CONFIG_NAMES  # ha.cf is world-readable
    declared = {p.name for p in glue.params()} | {glue.CONFIRM.name}
    assert set(glue.CONFIG_NAMES) <= declared


def test_unset_positions_are_not_parameters():
    env = positional("node2 192.0.2.1 - admin - - - - -")
    raw = glue.raw_from_environ(env)
    assert dict(raw) == {"hostname": "node2", "ip": "192.0.2.1", "username": "admin"}


def test_a_positional_line_reaches_the_bmc(bmc, tmp_path):
    password = tmp_path / "pw"
    password.write_text(SECRET + "\n")
    password.chmod(0o600)
    env = positional(f"node2 192.0.2.1 6230 admin {password} ipmi 1 3 -")
    assert op(env, "off", "node2")[0] == 0
    assert bmc.power == OFF and bmc.logins[-1] == SECRET  # read from password_file
    assert not (tmp_path / "confirmed").exists()


@pytest.mark.parametrize("action", ["off", "reset"])
def test_a_verified_power_off_is_recorded_for_the_gate(bmc, tmp_path, action):
    password = tmp_path / "pw"
    password.write_text(SECRET + "\n")
    password.chmod(0o600)
    confirmed = tmp_path / "run" / "fence-confirmed"
    env = positional(f"node2 192.0.2.1 - admin {password} - - - {confirmed}")
    assert op(env, action, "node2")[0] == 0
    fenced, note = _gate.read_fence_confirmation(str(confirmed), os.uname().nodename)
    assert (fenced, note) == ("node2", "")  # for this node (the one that fenced), this boot


def test_nothing_is_recorded_without_a_verified_power_off(bmc, tmp_path):
    confirmed = tmp_path / "fence-confirmed"
    env = {"hostname": "node2", "ip": "192.0.2.1", "username": "admin", "password": SECRET,
           "fence_confirmed_file": str(confirmed)}
    assert op(env, "on", "node2")[0] == 0 and bmc.power == ON
    assert op(env, "status")[0] == 0
    bmc.login_faults = [AuthError("no")] * 10
    assert op(env, "off", "node2")[0] != 0
    assert op(env, "off", "node1")[0] != 0  # not this BMC's node
    assert not confirmed.exists()


def test_getinfo_xml_describes_the_confirmation_file():
    rc, xml = op({}, "getinfo-xml")
    names = etree.fromstring(xml.encode()).xpath("/parameters/parameter/@name")
    assert rc == 0 and "fence_confirmed_file" in names
