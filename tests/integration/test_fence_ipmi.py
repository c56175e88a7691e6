"""fence_bmc (driver=ipmi) as whole processes against a real ipmi_sim BMC.

The agent runs as ``hapack install`` writes it, with its parameters on
stdin as pacemaker-fenced passes them (or as long options). The BMC's power
switch really kills the stand-in node (see test_fence_sim.py), so "off"
means the node process is gone.
"""

import os
import subprocess
import time

import pytest

from test_fence_sim import SimBmc, free_udp_port, need_ipmi_sim

BOUND = 15.0  # generous upper bound for "fails fast"; speed is measured in bench/


@pytest.fixture(scope="module")
def agent_path(installed):
    return installed("fence_bmc")


@pytest.fixture
def bmc(tmp_path):
    need_ipmi_sim()
    with SimBmc(tmp_path / "bmc", off_delay=0.3) as sim:
        yield sim


def fence(agent_path, stdin="", argv=(), env=None, timeout=120):
    environ = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    environ.update(env or {})
    started = time.monotonic()
    result = subprocess.run([agent_path, *argv], input=stdin, capture_output=True, text=True,
                            timeout=timeout, env=environ)
    result.elapsed = time.monotonic() - started
    return result


def request(bmc, action, **extra):
    """What pacemaker-fenced writes on stdin for a device fencing node 'peer'."""
    return f"action={action}\nnodename=peer\nplug=peer\n" + bmc.stdin(hostname="peer", **extra)


def test_status_exits_0_when_on_and_2_when_off(agent_path, bmc):
    result = fence(agent_path, request(bmc, "status"))
    assert (result.returncode, result.stdout) == (0, "Status: ON\n"), result.stderr
    bmc.power_off_now()
    result = fence(agent_path, request(bmc, "status"))
    assert (result.returncode, result.stdout) == (2, "Status: OFF\n"), result.stderr


def test_off_returns_only_when_the_node_is_gone(agent_path, bmc):
    node = bmc.node_pid()
    result = fence(agent_path, request(bmc, "off"))
    assert (result.returncode, result.stdout) == (0, "Success: Powered OFF\n"), result.stderr
    assert not bmc.powered_node_alive()
    assert [pid for _, _, pid in bmc.events("off")] == [node]  # the delayed kill happened


def test_off_of_a_powered_off_node_succeeds_without_a_request(agent_path, bmc):
    bmc.power_off_now()
    requests = len(bmc.events("off-request"))
    result = fence(agent_path, request(bmc, "off"))
    assert (result.returncode, result.stdout) == (0, "Success: Already OFF\n")
    assert len(bmc.events("off-request")) == requests


def test_on_boots_the_node(agent_path, bmc):
    bmc.power_off_now()
    result = fence(agent_path, request(bmc, "on"))
    assert (result.returncode, result.stdout) == (0, "Success: Powered ON\n"), result.stderr
    assert bmc.powered_node_alive()


def test_reboot_powers_off_then_on(agent_path, bmc):
    before = bmc.node_pid()
    result = fence(agent_path, request(bmc, "reboot"))
    assert (result.returncode, result.stdout) == (0, "Success: Rebooted\n"), result.stderr
    kinds = [kind for _, kind, _ in bmc.events()]
    assert kinds[-3:] == ["off-request", "off", "on"]
    assert bmc.powered_node_alive() and bmc.node_pid() != before


def test_reboot_with_method_cycle_sends_one_power_cycle(agent_path, bmc):
    before = bmc.node_pid()
    result = fence(agent_path, request(bmc, "reboot", method="cycle"))
    assert (result.returncode, result.stdout) == (0, "Success: Power cycle requested\n")
    deadline = time.monotonic() + BOUND  # ipmi_sim powers on again 1 s after the off
    while not (bmc.powered_node_alive() and bmc.node_pid() != before):
        assert time.monotonic() < deadline, bmc.events()
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{before}")


def test_list_names_the_node_and_monitor_checks_the_bmc(agent_path, bmc):
    result = fence(agent_path, request(bmc, "list"))
    assert (result.returncode, result.stdout) == (0, "peer\n")
    bmc.power_off_now()
    assert fence(agent_path, request(bmc, "monitor")).returncode == 0


def test_monitor_fails_when_the_bmc_is_gone(agent_path, bmc):
    bmc.stop()
    result = fence(agent_path, request(bmc, "monitor", login_timeout=1))
    assert result.returncode == 1 and "no answer" in result.stderr


def test_long_options_work_like_stdin(agent_path, bmc):
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in bmc.params().items()]
    result = fence(agent_path, argv=["--action=status", *argv])
    assert (result.returncode, result.stdout) == (0, "Status: ON\n"), result.stderr


def test_a_wrong_password_fails_fast_and_is_never_shown(agent_path, bmc, tmp_path):
    wrong = "Wr0ng-" + bmc.password[:6]
    log = tmp_path / "ha.log"
    env = {"HA_LOGFILE": str(log), "HA_DEBUGLOG": str(log), "HA_debug": "1"}
    stdin = request(bmc, "off", verbose=1).replace(f"password={bmc.password}",
                                                   f"password={wrong}")
    result = fence(agent_path, stdin, env=env)
    assert result.returncode == 1
    assert "rejected the login of user 'admin'" in result.stderr
    assert result.elapsed < BOUND
    everything = result.stdout + result.stderr + log.read_text()
    assert wrong not in everything and bmc.password not in everything
    assert bmc.powered_node_alive() and bmc.events("off-request") == []


def test_an_unreachable_bmc_fails_within_the_deadline(agent_path, bmc):
    dead_port = free_udp_port("127.0.0.1")  # nothing listens there
    stdin = request(bmc, "off", power_timeout=2, login_timeout=1).replace(
        f"ipport={bmc.port}", f"ipport={dead_port}")
    result = fence(agent_path, stdin)
    assert result.returncode == 1
    assert result.elapsed < 2 + BOUND
    assert "PowerTimeout" in result.stderr and "no answer" in result.stderr
    assert "'None'" not in result.stderr


def test_status_of_an_unreachable_bmc_says_so_after_login_timeout(agent_path, bmc):
    stdin = request(bmc, "status", login_timeout=1).replace(
        f"ipport={bmc.port}", f"ipport={free_udp_port('127.0.0.1')}")
    result = fence(agent_path, stdin)
    assert result.returncode == 1 and "no answer within 1.0s" in result.stderr
    assert result.elapsed < BOUND


def test_cipher_17_is_not_downgraded(agent_path, bmc):
    result = fence(agent_path, request(bmc, "status", cipher=17))
    assert result.returncode == 1 and "refused the session" in result.stderr
    result = fence(agent_path, request(bmc, "status").replace("cipher=3\n", ""))
    assert result.returncode == 0  # unset: 17, then 3


def test_password_file(agent_path, bmc, tmp_path):
    path = tmp_path / "bmc.pw"
    path.write_text(bmc.password + "\n")
    path.chmod(0o600)
    stdin = request(bmc, "status").replace(f"password={bmc.password}\n",
                                           f"password_file={path}\n")
    result = fence(agent_path, stdin)
    assert result.returncode == 0, result.stderr
    path.chmod(0o640)
    result = fence(agent_path, stdin)
    assert result.returncode == 1 and "chmod 600" in result.stderr
