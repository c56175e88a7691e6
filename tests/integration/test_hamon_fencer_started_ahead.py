"""hamon's fencer with fence_bmc started ahead, against a real BMC (ipmi_sim).

The installed fence_bmc is started ahead (pyghmi imported, waiting on stdin); each
question hamon asks the peer's BMC goes to that process and must give exactly the
answer a fresh fence_bmc gives: on, off, and "cannot tell" when the BMC is gone, never
off. Across a random sequence of power changes, dead BMCs and killed spares, every
answer is checked against the simulator's own power state."""

import io
import os
import random
import re
import signal
import time

import pytest

from hapack import procfs
from hapack.hamon.events import EventLog
from hapack.hamon.fence import Fencer, FenceFailed
from hapack.hamon.snapshot import Power
from hapack.stack import loads

from test_fence_sim import SimBmc, need_ipmi_sim
from test_hamon_fencer_real_agents import LAB_TEXT, secret_file


def stack_for(tmp_path, bmc: SimBmc):
    password = secret_file(tmp_path / "bmc.pw", bmc.password)
    text = LAB_TEXT.replace('address = "198.18.242.21"\nport = 623',
                            f'address = "{bmc.address}"\nport = {bmc.port}', 1)
    text = text.replace('"/etc/hapack/bmc/node1.password"', f'"{password}"', 1)
    text = text.replace('username = "admin-node1"', f'username = "{bmc.username}"', 1)
    return loads(text, "ahead.toml", check_agents=False)


@pytest.fixture
def bmc(tmp_path):
    need_ipmi_sim()
    with SimBmc(tmp_path / "bmc") as sim:
        yield sim


@pytest.fixture
def fencer(installed, bmc, tmp_path):
    out = io.StringIO()
    f = Fencer.for_peer(installed("fence_bmc"), stack_for(tmp_path, bmc).node("node1"), 3.0,
                        EventLog("node2", None, stream=out, debug=True))
    f.out = out
    f.prestart()
    yield f
    pids = [s.proc.pid for s in f._spares.values()]
    f.close()
    assert all(not procfs.alive(p) for p in pids)
    assert bmc.password not in out.getvalue()


def served_by_spare(f, pid):
    return re.search(rf"running \(started {pid}\): \S*fence_bmc", f.out.getvalue()) is not None


def wait_spare(f):
    end = time.monotonic() + 10
    while time.monotonic() < end:
        spare = f._spares.get("fence-node1")
        if spare is not None:
            return spare
        time.sleep(0.02)
    raise AssertionError("fence_bmc was not started ahead")


def test_the_answers_of_the_bmc_come_from_the_agent_started_ahead(fencer, bmc):
    spare = wait_spare(fencer)
    assert fencer.status() is Power.ON and served_by_spare(fencer, spare.proc.pid)
    bmc.power_off_now()
    spare = wait_spare(fencer)
    assert fencer.status() is Power.OFF and served_by_spare(fencer, spare.proc.pid)
    assert fencer.verified_by == "level 1: fence-node1 (fence_bmc) status"


def test_a_bmc_gone_is_never_off_through_the_agent_started_ahead(fencer, bmc):
    bmc.power_off_now()
    spare = wait_spare(fencer)
    bmc.stop()
    with pytest.raises(FenceFailed):
        fencer.status()
    assert served_by_spare(fencer, spare.proc.pid)


def test_the_off_through_the_agent_started_ahead_powers_the_node_off(fencer, bmc):
    spare = wait_spare(fencer)
    assert bmc.powered_node_alive()
    fencer.off()
    assert not bmc.powered_node_alive() and served_by_spare(fencer, spare.proc.pid)


def test_random_power_and_spare_faults_every_answer_is_the_bmc_s_truth(fencer, bmc):
    rnd = random.Random(19)
    for step in range(14):
        move = rnd.choice(["on", "off", "kill", "frozen", "ask", "ask"])
        if move == "on":
            bmc.power_on()
        elif move == "off":
            bmc.power_off_now()
        elif move == "kill" and fencer._spares:
            os.kill(wait_spare(fencer).proc.pid, signal.SIGKILL)
        elif move == "frozen":    # the BMC stops answering, then comes back
            os.killpg(bmc.supervisor.pid, signal.SIGSTOP)
            try:
                with pytest.raises(FenceFailed):
                    fencer.status()       # unknown, never off
            finally:
                os.killpg(bmc.supervisor.pid, signal.SIGCONT)
        truth = Power.ON if bmc.powered_node_alive() else Power.OFF
        assert fencer.status() is truth, f"step {step} after {move}"
