"""fence_bmc started ahead of its request (hamon's spare): the fence-agents protocol as ever.

With ``HAPACK_FENCE_PRELOAD=<driver>`` and no arguments, fence_bmc imports the driver's
library first and only then reads its request on stdin; the request means exactly what
it means without the variable. A spare closed unused (empty stdin) does nothing.
Real interpreters, the module as installed."""

import re
import subprocess
import sys

import pytest

PRELOAD = "HAPACK_FENCE_PRELOAD"
AGENT = [sys.executable, "-m", "hapack.stonith.fence_bmc"]


def fence_bmc(stdin: str, preload: str | None, *argv: str, delay: float = 0.0):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if preload is not None:
        env[PRELOAD] = preload
    proc = subprocess.Popen(AGENT + list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    if delay:
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            pass
    out, err = proc.communicate(stdin, timeout=30)
    return proc.returncode, out, PREFIX.sub("fence_bmc: ", err)


PREFIX = re.compile(r"^\w{3} \d\d \d\d:\d\d:\d\d fence_bmc\[\d+\]: ", re.M)  # time, pid


@pytest.mark.parametrize("empty", ["", "\n", "  \n\n"])
@pytest.mark.parametrize("preload", ["ipmi", "redfish", "nonsense"])
def test_a_spare_closed_unused_does_nothing_and_exits_0(empty, preload):
    assert fence_bmc(empty, preload) == (0, "", "")


def test_without_the_variable_an_empty_request_is_still_an_error():
    rc, _, err = fence_bmc("", None)
    assert rc != 0 and err


def test_the_spare_waits_for_its_request_after_loading_the_driver():
    # still running half a second after its start: blocked on stdin, not done
    proc = subprocess.Popen(AGENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={PRELOAD: "ipmi"})
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.5)
        modules = proc.communicate("action=metadata\n", timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and "<resource-agent" in modules[0]


REQUESTS = [
    # (stdin, what is compared): every answer must equal the one without preloading
    "action=metadata\n",
    "action=validate-all\nip=198.18.0.1\nusername=admin\npassword=x\nlanplus=1\n",
    "action=validate-all\nip=198.18.0.1\ndriver=ipmi\nlanplus=0\npassword=x\n",
    "action=validate-all\ndriver=redfish\nip=198.18.0.1\nca_file=/nonexistent\npassword=x\n",
    "action=frobnicate\nip=198.18.0.1\npassword=x\n",
    "nonsense without equals\naction=validate-all\n",
    "action=status\nip=198.18.0.1\npassword=s3cret\nusername=u\nlanplus=1\npassword_file=/x\n",
    "action=status\nip=127.0.0.1\npassword=s3cret\nusername=u\nlanplus=1\nipport=9\n"
    "login_timeout=0.3\npower_timeout=1\nverbose=1\n",
]


@pytest.mark.parametrize("request_text", REQUESTS)
@pytest.mark.parametrize("preload", ["ipmi", "redfish", "unknown-driver"])
def test_a_request_means_the_same_started_ahead_or_not(request_text, preload):
    ahead = fence_bmc(request_text, preload, delay=0.2)
    assert ahead == fence_bmc(request_text, None)
    assert "s3cret" not in ahead[1] + ahead[2]


def test_arguments_win_over_the_variable():
    rc, out, _ = fence_bmc("", "ipmi", "--action", "metadata")
    assert rc == 0 and "<resource-agent" in out
