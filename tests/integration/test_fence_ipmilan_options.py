"""fence_bmc takes fence_ipmilan's command lines as typed, against a real ipmi_sim BMC.

Each command line is run twice, by the installed fence_ipmilan and by fence_bmc, against
the same BMC; the exit code and the result line must be the same (and the node's power
really changes: see test_fence_sim.py).
"""

import os
import subprocess

import pytest

from test_fence_ipmi import agent_path, bmc, fence  # noqa: F401 (fixtures)

IPMILAN = "/usr/sbin/fence_ipmilan"


def both(agent_path, argv):  # noqa: F811
    """(exit code, stdout) of fence_ipmilan and of fence_bmc for one command line."""
    theirs = fence(IPMILAN, argv=argv)
    ours = fence(agent_path, argv=argv)
    assert ours.returncode == theirs.returncode and ours.stdout == theirs.stdout, (
        argv[:2], theirs.stdout, ours.stdout, ours.stderr)
    return ours


def spellings(bmc):  # noqa: F811
    """One BMC's address, port, user, password and cipher, as operators type them."""
    a, u, l, p = bmc.address, str(bmc.port), bmc.username, bmc.password
    return {
        "short": ["-a", a, "-u", u, "-l", l, "-p", p, "-P", "-C", "3"],
        "attached": [f"-a{a}", f"-u{u}", f"-l{l}", f"-p{p}", "-P", "-C3"],
        "long": ["--ip", a, "--ipport", u, "--username", l, "--password", p, "--lanplus",
                 "--cipher", "3"],
        "long=": [f"--ip={a}", f"--ipport={u}", f"--username={l}", f"--password={p}",
                  "--lanplus", "--cipher=3", "--privlvl=administrator"],
    }


@pytest.mark.parametrize("style", ["short", "attached", "long", "long="])
def test_status_off_on_as_fence_ipmilan_is_typed(agent_path, bmc, style):  # noqa: F811
    creds = spellings(bmc)[style]
    assert both(agent_path, ["-o", "status", *creds]).stdout == "Status: ON\n"
    node = bmc.node_pid()
    result = fence(agent_path, argv=["-o", "off", *creds])
    assert (result.returncode, result.stdout) == (0, "Success: Powered OFF\n"), result.stderr
    assert not bmc.powered_node_alive() and not os.path.exists(f"/proc/{node}/cmdline")
    assert both(agent_path, [*creds, "--action=status"]).returncode == 2
    assert both(agent_path, ["-ooff", *creds]).stdout == "Success: Already OFF\n"
    result = fence(agent_path, argv=[*creds, "--action", "on"])
    assert (result.returncode, result.stdout) == (0, "Success: Powered ON\n"), result.stderr
    assert bmc.powered_node_alive()


def test_password_script_verbose_and_timing_options(agent_path, bmc, tmp_path):  # noqa: F811
    script = tmp_path / "pw"
    script.write_text(f"#!/bin/sh\necho {bmc.password}\n")
    script.chmod(0o700)
    argv = ["-o", "status", "-a", bmc.address, "-u", str(bmc.port), "-l", bmc.username,
            "-S", str(script), "-P", "-C", "3", "-L", "administrator", "-m", "onoff",
            "--power-timeout=10", "--delay", "0", "--login-timeout", "5",
            "--power-wait=0", "--shell-timeout=3"]
    assert both(agent_path, argv).stdout == "Status: ON\n"
    verbose = fence(agent_path, argv=argv + ["-vv"])
    assert verbose.returncode == 0 and "DEBUG" in verbose.stderr
    assert bmc.password not in verbose.stderr + verbose.stdout


def test_monitor_and_metadata(agent_path, bmc):  # noqa: F811
    creds = spellings(bmc)["short"]
    assert both(agent_path, ["-o", "monitor", *creds]).returncode == 0
    result = fence(agent_path, argv=["-o", "metadata"])
    assert result.returncode == 0 and '<getopt mixed="-a, --ip=[ip]"/>' in result.stdout


@pytest.mark.parametrize("argv", [["-v"], ["-o", "status", "-l", "admin", "-p", "x"]])
def test_a_command_line_without_address_fails_on_the_address_not_the_options(agent_path,
                                                                              argv):
    result = fence(agent_path, argv=argv)
    assert result.returncode != 0 and "'ip': is required" in result.stderr
    assert "not an option" not in result.stderr and "unknown option" not in result.stderr


def test_help_and_version(agent_path):
    for flag in ("-h", "--help"):
        result = fence(agent_path, argv=[flag])
        assert result.returncode == 0 and "-a, --ip" in result.stdout
    for flag in ("-V", "--version"):
        result = fence(agent_path, argv=[flag])
        assert result.returncode == 0 and result.stdout.startswith("fence_bmc ")
    assert subprocess.run([IPMILAN, "-V"], capture_output=True).returncode == 0
