"""external/bmc: cluster-glue's op/argument/environment contract on the fence engine."""

import io

import pytest
from lxml import etree

from hapack.stonith import fence_bmc, glue
from hapack.stonith.drivers import OFF, ON
from hapack.stonith.errors import AuthError

from test_fence_protocol import SECRET, FakeBmc, FakeDriver


@pytest.fixture
def bmc(monkeypatch):
    fake = FakeBmc()
    monkeypatch.setattr(FakeDriver, "bmc", fake)
    monkeypatch.setattr(fence_bmc, "driver_class", lambda name: FakeDriver)
    return fake


ENV = {"hostname": "node2", "ip": "192.0.2.1", "username": "admin", "password": SECRET,
       "power_timeout": "2", "stonith_status_sleep": "0.001",
       "PATH": "/usr/bin:/bin", "HOSTNAME": "not-a-parameter"}


def op(*argv, environ=ENV):
    out = io.StringIO()
    rc = glue.main(list(argv), environ=dict(environ), out=out)
    return rc, out.getvalue()


def test_gethosts_answers_the_hostname_without_contacting_the_bmc(bmc):
    assert op("gethosts") == (0, "node2\n")
    assert bmc.logins == []


def test_off_on_and_reset_take_the_host_argument(bmc):
    assert op("off", "node2") == (0, "Success: Powered OFF\n")
    assert bmc.power == OFF
    assert op("on", "node2")[0] == 0 and bmc.power == ON
    bmc.requests.clear()
    assert op("reset", "node2")[0] == 0
    assert bmc.requests == [OFF, ON]


def test_another_host_is_refused(bmc):
    assert op("off", "node1")[0] == 1
    assert bmc.requests == []


def test_status_is_the_device_status(bmc):
    bmc.power = OFF
    assert op("status")[0] == 0
    bmc.login_faults = [AuthError("no")]
    assert op("status")[0] == 1


def test_hostname_is_required(bmc):
    env = {k: v for k, v in ENV.items() if k != "hostname"}
    assert op("gethosts", environ=env)[0] == 1


def test_info_operations():
    assert op("getconfignames") == (0, "".join(f"{name}\n" for name in glue.CONFIG_NAMES))
    for name in ("getinfo-devid", "getinfo-devname", "getinfo-devdescr", "getinfo-devurl"):
        rc, text = op(name)
        assert rc == 0 and text.strip()
    rc, xml = op("getinfo-xml")
    names = etree.fromstring(xml.encode()).xpath("/parameters/parameter/@name")
    assert rc == 0 and "hostname" in names and "password" in names
    assert "plug" not in names and "action" not in names


def test_unknown_operation_and_no_operation_fail():
    assert op("frobnicate")[0] == 1
    assert op()[0] == 1
