"""hamon's fencer with real agents: a dead BMC, then a PDU through the stock fence_ipmilan.

The peer's BMC (level 1, hapack's fence_bmc as ``hapack install`` writes it) does not
answer: nothing listens on its port. Its second level is a "PDU": an ipmi_sim whose power
switch really kills the stand-in node (test_fence_sim.py), reached with Debian's own
``/usr/sbin/fence_ipmilan`` reading its password through ``password_script`` from the
stack file's ``password_file``. The fencer falls through to level 2, the node is gone,
and the level that verified it is the one recorded.
"""

import io
import os
from pathlib import Path

import pytest

from hapack.hamon.events import EventLog
from hapack.hamon.fence import Fencer, FenceFailed
from hapack.hamon.snapshot import Power
from hapack.stack import loads

from test_fence_sim import SimBmc, free_udp_port, need_ipmi_sim

ROOT = Path(__file__).resolve().parents[2]
LAB_TEXT = (ROOT / "examples" / "stack.toml").read_text()
FENCE_IPMILAN = "/usr/sbin/fence_ipmilan"


def secret_file(path: Path, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    return str(path)


def stack_with_pdu(tmp_path, bmc_port: int, pdu: SimBmc):
    """The lab example, node1's BMC on an unanswered port, its PDU the simulator."""
    bmc_file = secret_file(tmp_path / "bmc.pw", "never-used")
    pdu_file = secret_file(tmp_path / "pdu.pw", pdu.password)
    text = LAB_TEXT.replace('address = "198.18.242.21"\nport = 623', f'address = "127.0.0.1"\n'
                            f'port = {bmc_port}', 1)
    text = text.replace('"/etc/hapack/bmc/node1.password"', f'"{bmc_file}"', 1)
    text = text.replace('cipher = 3                    # ipmi_sim', f'''cipher = 3
[[nodes.fence]]
name = "pdu"
agent = "fence_ipmilan"
password_file = "{pdu_file}"
[nodes.fence.params]
ip = "{pdu.address}"
ipport = {pdu.port}
username = "{pdu.username}"
lanplus = 1
cipher = 3
# ipmi_sim''', 1)
    return loads(text, "levels.toml", check_agents=False)


@pytest.fixture
def pdu(tmp_path):
    need_ipmi_sim()
    if not os.access(FENCE_IPMILAN, os.X_OK):
        pytest.fail(f"{FENCE_IPMILAN} is missing: install Debian's fence-agents")
    with SimBmc(tmp_path / "pdu") as sim:
        yield sim


def test_a_dead_bmc_falls_through_to_the_pdu_and_the_node_is_gone(installed, pdu, tmp_path,
                                                                 request):
    stack = stack_with_pdu(tmp_path, free_udp_port("127.0.0.1"), pdu)
    out = io.StringIO()
    log = EventLog("node2", None, stream=out)
    fencer = Fencer.for_peer(installed("fence_bmc"), stack.node("node1"), 10.0, log)
    request.addfinalizer(fencer.close)        # its fence_bmc started ahead
    assert pdu.powered_node_alive()
    assert fencer.status() is Power.ON           # level 1 cannot tell; the PDU can
    assert fencer.verified_by == ""
    fencer.off()
    assert not pdu.powered_node_alive()
    assert fencer.verified_by == "level 2: fence-node1-pdu (fence_ipmilan) off"
    text = out.getvalue()
    assert "fencing node1: level 1 failed: off of node1 through fence-node1 (fence_bmc)" in text
    assert "fencing node1: level 2 (fence-node1-pdu (fence_ipmilan)) powered it off" in text
    assert pdu.password not in text
    assert fencer.status() is Power.OFF
    assert fencer.verified_by == "level 2: fence-node1-pdu (fence_ipmilan) status"


def test_when_the_pdu_is_dead_too_nothing_is_confirmed(installed, pdu, tmp_path, request):
    stack = stack_with_pdu(tmp_path, free_udp_port("127.0.0.1"), pdu)
    pdu.stop()
    fencer = Fencer.for_peer(installed("fence_bmc"), stack.node("node1"), 5.0,
                             EventLog("node2", None, stream=io.StringIO()))
    request.addfinalizer(fencer.close)
    with pytest.raises(FenceFailed) as info:
        fencer.off()
    assert "level 1: " in str(info.value) and "level 2: " in str(info.value)
    assert fencer.verified_by == ""
