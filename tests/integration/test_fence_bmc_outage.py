"""A BMC that stops answering for a while during a fence, then comes back.

The campaign soak (fault ``bmc-out-crash``) saw one ``fence_bmc off`` keep
failing every login for the rest of its ``power_timeout`` after the BMC was
back, while the next process logged in at once. Cause: pyghmi 1.6 files a
login under (bmc, userid, password, port, kg) in ``Session.initting_sessions``
with the credentials as str and deletes the entry with them as bytes, so the
entry stays for the life of the process, and every later ``Session()`` with
the same credentials joins that first session: a failed (broken) one makes
every retry fail at once, without a packet sent.

Here the BMC is a real ipmi_sim (see test_fence_sim.py) stopped with SIGSTOP
and resumed with SIGCONT (its port stays bound, its requests go unanswered,
as when the lab takes the BMC's address away). Over a seeded set of outages
(shorter than one login attempt, several attempts, across the retry pauses)
starting before the agent, during its login and after its off request, the
same ``fence_bmc off`` process must confirm the power off before its (large)
``power_timeout``; speed is not asserted.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from test_fence_ipmi import request
from test_fence_sim import SimBmc, need_ipmi_sim

POWER_TIMEOUT = 45  # far beyond any outage here plus one login_timeout and a pause
LOGIN_TIMEOUT = 5   # the default


@pytest.fixture(scope="module")
def agent_path(installed):
    return installed("fence_bmc")


class Outage:
    """The simulator's process group stopped (no answers, port kept) and resumed."""

    def __init__(self, bmc):
        self.group = bmc.supervisor.pid  # start_new_session: the group of ipmi_sim too
        self.frozen = False
        self.out_at = self.back_at = None

    def begin(self):
        os.killpg(self.group, signal.SIGSTOP)
        self.frozen = True
        self.out_at = time.time()

    def end(self):
        if self.frozen:
            os.killpg(self.group, signal.SIGCONT)
            self.frozen = False
            self.back_at = time.time()


def timings(seed, count):
    """(start, length, off_delay): start < 0 means the BMC is out before the agent starts."""
    rng = random.Random(seed)
    fixed = [(-0.5, 0.3, 0.0),    # shorter than one login attempt, before the first login
             (-0.2, 7.0, 0.0),    # longer than the first login (pyghmi gives up after 4-6 s)
             (0.0, 9.3, 0.0),     # as in the soak's fault #64
             (0.6, 6.0, 1.5)]     # after the off request, while the engine polls the power
    drawn = []
    for _ in range(count):
        off_delay = rng.choice((0.0, 0.5, 1.5))  # a later start still meets the action
        drawn.append((round(rng.uniform(-0.5, 0.1 + off_delay * 0.7), 2),
                      round(rng.uniform(0.2, 9.0), 2), off_delay))
    return fixed + drawn


@pytest.mark.parametrize("start,length,off_delay", timings(seed=64, count=4))
def test_one_fence_process_powers_off_once_the_bmc_is_back(agent_path, tmp_path, start,
                                                          length, off_delay):
    need_ipmi_sim()
    with SimBmc(tmp_path / "bmc", off_delay=off_delay) as bmc:
        node = bmc.node_pid()
        outage = Outage(bmc)
        try:
            result = fence_through_outage(agent_path, bmc, outage, start, length)
        finally:
            outage.end()
        detail = (f"outage {length}s from {start}s, off_delay {off_delay}: "
                  f"rc {result.returncode}\n{result.stderr}\nevents {bmc.events()}")
        assert outage.out_at < result.ended, detail  # the outage met the action
        assert (result.returncode, result.stdout) == (0, "Success: Powered OFF\n"), detail
        assert "PowerTimeout" not in result.stderr, detail
        assert not bmc.powered_node_alive(), detail
        assert node in [pid for _, _, pid in bmc.events("off")], detail


def fence_through_outage(agent_path, bmc, outage, start, length):
    stdin = request(bmc, "off", power_timeout=POWER_TIMEOUT, login_timeout=LOGIN_TIMEOUT)
    environ = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    if start < 0:
        outage.begin()
        time.sleep(-start)
    agent = subprocess.Popen([agent_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=environ)
    timer = threading.Thread(target=schedule, args=(outage, max(start, 0.0), length,
                                                    start < 0))
    timer.start()
    try:
        stdout, stderr = agent.communicate(stdin, timeout=POWER_TIMEOUT + 60)
        ended = time.time()
    finally:
        timer.join()
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    result = subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr)
    result.ended = ended
    return result


def schedule(outage, start, length, begun):
    if not begun:
        time.sleep(start)
        outage.begin()
    time.sleep(length)
    outage.end()


# -- the driver: every login of a process is a login ---------------------------------

LOGINS = r"""
import os, signal, sys
from types import SimpleNamespace
from hapack.stonith.errors import BmcUnreachable
from hapack.stonith.ipmi import IpmiDriver
ip, port, group = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
settings = SimpleNamespace(ip=ip, ipport=port, username="admin", cipher="3", lanplus=True,
                           privlvl="administrator", hexadecimal_kg=None)
password = sys.stdin.readline().strip()
for step in sys.argv[4:]:
    if step == "out":
        os.killpg(group, signal.SIGSTOP)
        try:
            IpmiDriver.open(settings, password)
            print("logged in to a stopped BMC")
        except BmcUnreachable:
            print("unreachable")
        finally:
            os.killpg(group, signal.SIGCONT)
    else:
        driver = IpmiDriver.open(settings, password)
        print(driver.get_power())
        driver.close()
"""


@pytest.mark.parametrize("steps,expected", [
    (["login", "login", "login"], ["on", "on", "on"]),   # after a logout
    (["out", "login"], ["unreachable", "on"]),            # after a failed login
    (["login", "out", "login"], ["on", "unreachable", "on"]),
])
def test_each_login_in_one_process_is_a_new_login(tmp_path, steps, expected):
    need_ipmi_sim()
    with SimBmc(tmp_path / "bmc") as bmc:
        try:
            result = subprocess.run(
                [sys.executable, "-c", LOGINS, bmc.address, str(bmc.port),
                 str(bmc.supervisor.pid), *steps], input=bmc.password + "\n",
                capture_output=True, text=True, timeout=120)
        finally:
            os.killpg(bmc.supervisor.pid, signal.SIGCONT)
        assert result.stdout.split() == expected, result.stderr
        assert bmc.password not in result.stdout + result.stderr
