"""fence_bmc's protocol: stdin and argv parsing, dispatch, exit codes, redaction.

The BMC is a fake driver behind the real engine (the seam is
``fence_bmc.driver_class``); everything else is the agent as pacemaker-fenced
runs it.
"""

import io
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from hapack.stonith import fence_bmc, fencing
from hapack.stonith.drivers import CYCLE, OFF, ON, Driver
from hapack.stonith.errors import AuthError, BmcUnreachable

SECRET = "pa55-w0rd!&<"
DATA = os.path.join(os.path.dirname(__file__), "..", "data")


class FakeBmc:
    """A BMC's state: power, how many status reads an off takes, faults."""

    def __init__(self, power=ON, off_reads=0):
        self.power = power
        self.off_reads = off_reads
        self.pending = None
        self.requests = []
        self.logins = []
        self.login_faults = []
        self.on_fault = None
        self.echo_password = False


class FakeDriver(Driver):
    protocol = "Fake"
    default_port = 9
    bmc = None

    @classmethod
    def open(cls, settings, password):
        cls.bmc.logins.append(password)
        if cls.bmc.login_faults:
            raise cls.bmc.login_faults.pop(0)
        if cls.bmc.echo_password:  # a library that quotes what it was given
            raise AuthError(f"login refused for password {password}")
        return cls()

    def get_power(self):
        bmc = self.bmc
        if bmc.pending is not None:
            bmc.pending -= 1
            if bmc.pending < 0:
                bmc.power, bmc.pending = OFF, None
        return bmc.power

    def set_power(self, state):
        self.bmc.requests.append(state)
        if state == OFF:
            self.bmc.pending = self.bmc.off_reads
        elif state == ON:
            if self.bmc.on_fault:
                raise self.bmc.on_fault
            self.bmc.power = ON


@pytest.fixture
def bmc(monkeypatch):
    fake = FakeBmc()
    monkeypatch.setattr(FakeDriver, "bmc", fake)
    monkeypatch.setattr(fence_bmc, "driver_class", lambda name: FakeDriver)
    return fake


class Run:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    @property
    def all(self):
        return self.out + self.err


def agent(stdin=None, argv=(), environ=None):
    """Run fence_bmc in-process: stdin lines (as the fencer) or argv."""
    out, err = io.StringIO(), io.StringIO()
    rc = fencing.run(fence_bmc.AGENT, argv=list(argv), stdin=io.StringIO(stdin or ""),
                     out=out, environ=environ or {}, stderr=err)
    return Run(rc, out.getvalue(), err.getvalue())


def lines(**params):
    base = {"ip": "192.0.2.1", "username": "admin", "password": SECRET,
            "power_timeout": "2", "stonith_status_sleep": "0.001"}
    base.update(params)
    return "".join(f"{k}={v}\n" for k, v in base.items() if v is not None)


# -- reading the request -------------------------------------------------------

def test_stdin_skips_comments_blanks_and_quotes_and_folds_dashes():
    raw = fencing.read_stdin(fence_bmc.AGENT, '# comment\n\n ipaddr = "192.0.2.7" \n'
                             "power-timeout=5\nlogin=root\n", log=fencing.Logger("t", {}))
    assert raw == {"ip": "192.0.2.7", "power_timeout": "5", "username": "root"}


def test_canonical_name_beats_its_alias_in_either_order():
    log = fencing.Logger("t", {})
    assert fencing.read_stdin(fence_bmc.AGENT, "plug=a\nport=b\n", log)["plug"] == "a"
    assert fencing.read_stdin(fence_bmc.AGENT, "port=b\nplug=a\n", log)["plug"] == "a"
    assert fencing.read_stdin(fence_bmc.AGENT, "port=b\n", log)["plug"] == "b"


def test_unknown_keys_and_lines_without_equals_are_warned_about_and_ignored(bmc):
    run = agent(lines(action="status", frobnicate="1") + "s3cret-typed-alone\n")
    assert run.rc == 0
    assert "ignoring unknown parameter 'frobnicate'" in run.err
    assert "has no '='" in run.err and "s3cret-typed-alone" not in run.err


def test_pacemaker_request_with_nodename_and_plug(bmc):
    run = agent(lines(action="status", nodename="peer", plug="peer", hostname="peer"))
    assert (run.rc, run.out) == (0, "Status: ON\n")


def test_argv_long_options_with_equals_space_and_flags(bmc):
    raw = fencing.read_argv(fence_bmc.AGENT, ["--ip=192.0.2.1", "--power-timeout", "3",
                                              "--ssl-insecure", "--passwd", "x"])
    assert raw == {"ip": "192.0.2.1", "power_timeout": "3", "ssl_insecure": "1",
                   "password": "x"}
    run = agent(argv=["--action=status", "--ip", "192.0.2.1", "--password", SECRET])
    assert (run.rc, run.out) == (0, "Status: ON\n")


@pytest.mark.parametrize("argv, message", [
    (["--no-such-option=1"], "unknown option --no-such-option"),
    (["--ip"], "option --ip needs a value"),
    (["--ip=192.0.2.1", "status"], "argument 2 is not an option"),
])
def test_bad_command_lines_fail_with_exit_1(argv, message):
    run = agent(argv=argv)
    assert run.rc == 1 and message in run.err


def test_help_and_version():
    assert agent(argv=["--help"]).out.startswith("usage: fence_bmc")
    assert "--password-file" in agent(argv=["--help"]).out
    assert agent(argv=["--version"]).out == f"fence_bmc {fence_bmc.VERSION}\n"


@pytest.mark.parametrize("text, action", [("OFF", "off"), ("meta-data", "metadata"),
                                          ("validate-all", "validate-all")])
def test_action_names_are_normalized(text, action):
    assert fencing.normalize_action(text) == action


def test_unknown_action_fails(bmc):
    run = agent(lines(action="explode"))
    assert run.rc == 1 and "unknown action 'explode'" in run.err
    assert bmc.logins == []


def test_default_action_is_reboot(bmc):
    run = agent(lines())
    assert run.rc == 0 and bmc.requests == [OFF, ON]


# -- exit codes and dispatch ------------------------------------------------------

def test_status_exits_0_for_on_and_2_for_off(bmc):
    assert agent(lines(action="status")).rc == fencing.Exit.SUCCESS == 0
    bmc.power = OFF
    run = agent(lines(action="status"))
    assert (run.rc, run.out) == (fencing.Exit.OFF, "Status: OFF\n")


def test_status_exits_1_when_it_cannot_tell(bmc):
    bmc.login_faults = [BmcUnreachable("no answer from BMC")]
    run = agent(lines(action="status"))
    assert run.rc == 1 and "BmcUnreachable: no answer from BMC" in run.err


def test_monitor_succeeds_whatever_the_power(bmc):
    bmc.power = OFF
    assert agent(lines(action="monitor")).rc == 0


def test_off_succeeds_only_once_the_bmc_reports_off(bmc):
    bmc.off_reads = 5
    run = agent(lines(action="off"))
    assert (run.rc, run.out) == (0, "Success: Powered OFF\n")
    assert bmc.power == OFF and bmc.pending is None and bmc.requests == [OFF]


def test_off_that_never_completes_fails_after_power_timeout(bmc):
    bmc.off_reads = 10 ** 9
    run = agent(lines(action="off", power_timeout="0.3"))
    assert run.rc == 1
    assert "PowerTimeout" in run.err and "still reports power on" in run.err


def test_off_of_a_node_already_off_sends_nothing(bmc):
    bmc.power = OFF
    run = agent(lines(action="off"))
    assert (run.rc, run.out, bmc.requests) == (0, "Success: Already OFF\n", [])


def test_on(bmc):
    bmc.power = OFF
    run = agent(lines(action="on"))
    assert (run.rc, run.out, bmc.power) == (0, "Success: Powered ON\n", ON)


def test_reboot_is_off_then_on_unless_cycle_is_asked_for(bmc):
    bmc.off_reads = 2
    assert agent(lines(action="reboot")).rc == 0
    assert bmc.requests == [OFF, ON]
    bmc.requests.clear()
    assert agent(lines(action="reboot", method="cycle")).rc == 0
    assert bmc.requests == [CYCLE]


def test_reboot_succeeds_when_off_worked_but_on_failed(bmc):
    bmc.on_fault = AuthError("operator may not power on")
    run = agent(lines(action="reboot"))
    assert run.rc == 0 and bmc.power == OFF
    assert "power on failed" in run.err and "Powered OFF" in run.out


def test_a_target_this_bmc_does_not_power_is_refused(bmc):
    run = agent(lines(action="off", hostname="node2", plug="node1"))
    assert run.rc == fencing.EXIT_CONFIG and "WrongTarget" in run.err and bmc.logins == []
    assert agent(lines(action="off", hostname="node2", plug="NODE2")).rc == 0


def test_list_names_the_node_this_bmc_powers(bmc):
    assert agent(lines(action="list", hostname="node2")).out == "node2\n"
    assert agent(lines(action="list")).out == ""
    assert bmc.logins == []


def test_delay_applies_to_off_and_reboot_only(bmc, monkeypatch):
    slept = []
    monkeypatch.setattr(fencing, "time", SimpleNamespace(sleep=slept.append))
    agent(lines(action="status", delay="7"))
    assert slept == []
    agent(lines(action="off", delay="7"))
    assert slept == [7.0]


def test_missing_required_parameter_is_a_config_error(bmc):
    run = agent("action=off\npassword=x\n")
    assert run.rc == fencing.EXIT_CONFIG and "parameter 'ip': is required" in run.err
    assert bmc.logins == []


def test_invalid_values_name_the_parameter(bmc):
    run = agent(lines(action="status", power_timeout="soon"))
    assert run.rc == 1 and "parameter 'power_timeout'" in run.err


# -- validate-all and passwords ---------------------------------------------------

def test_validate_all_checks_without_contacting_the_bmc(bmc):
    assert agent(lines(action="validate-all")).rc == 0
    run = agent(lines(action="validate-all", password_file="/etc/hostname"))
    assert run.rc == fencing.EXIT_CONFIG and "set only one of password, password_file" in run.err
    assert bmc.logins == []


def test_password_file_must_be_private(bmc, tmp_path):
    path = tmp_path / "pw"
    path.write_text(SECRET + "\n")
    path.chmod(0o644)
    run = agent(lines(action="status", password=None, password_file=path))
    assert run.rc == 1 and "chmod 600" in run.err and bmc.logins == []
    path.chmod(0o600)
    assert agent(lines(action="status", password=None, password_file=path)).rc == 0
    assert bmc.logins == [SECRET]


def test_password_script_first_line_is_the_password(bmc, tmp_path):
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\nprintf '%s\\nsecond line\\n' '{SECRET}'\n")
    script.chmod(0o700)
    assert agent(lines(action="status", password=None, password_script=script)).rc == 0
    assert bmc.logins == [SECRET]


def test_failing_password_script_does_not_show_its_output(bmc, tmp_path):
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\necho '{SECRET}'\nexit 3\n")
    script.chmod(0o700)
    run = agent(lines(action="status", password=None, password_script=script))
    assert run.rc == 1 and "exited with status 3" in run.err
    assert SECRET not in run.all


# -- redaction ---------------------------------------------------------------------

def test_the_password_never_appears_in_output_or_logs(bmc, tmp_path):
    logfile = tmp_path / "ha.log"
    bmc.echo_password = True
    env = {"HA_debug": "1", "HA_LOGFILE": str(logfile), "HA_DEBUGLOG": str(logfile)}
    run = agent(lines(action="off", verbose="1"), environ=env)
    assert run.rc == 1
    text = run.all + logfile.read_text()
    assert SECRET not in text
    assert "password [set]" in text
    assert "'password': '[set]'" in text  # the verbose request dump


def test_a_password_from_a_file_is_redacted_too(bmc, tmp_path):
    path = tmp_path / "pw"
    path.write_text("from-the-file\n")
    path.chmod(0o600)
    bmc.echo_password = True
    run = agent(lines(action="off", password=None, password_file=path))
    assert run.rc == 1 and "from-the-file" not in run.all and "[set]" in run.all


# -- meta-data --------------------------------------------------------------------

def test_metadata_matches_the_golden_file():
    with open(os.path.join(DATA, "fence_bmc-metadata.xml"), encoding="utf-8") as handle:
        golden = handle.read()
    run = agent("action=metadata\n")
    assert run.rc == 0
    assert run.out == golden, ("meta-data changed: if intended, regenerate with "
                               "python -m hapack.stonith.fence_bmc --action=metadata "
                               "> tests/data/fence_bmc-metadata.xml")


def test_metadata_has_what_the_fencer_reads():
    from lxml import etree
    doc = etree.fromstring(agent(argv=["--action=metadata"]).out.encode())
    names = doc.xpath("//parameter/@name")
    for name in ("plug", "port", "nodename", "ip", "ipaddr", "password", "delay", "driver"):
        assert name in names
    assert doc.xpath("//actions/action/@name") == list(fencing.ACTIONS)
    assert doc.xpath("//action[@name='on']/@automatic") == ["0"]
    assert doc.xpath("//parameter[@name='password']/content/@default") == []


def test_metadata_and_validate_load_neither_pyghmi_nor_lxml_needlessly():
    code = ("import sys, io\n"
            "from hapack.stonith import fence_bmc\n"
            "rc = fence_bmc.main(['--action=validate-all', '--ip=192.0.2.1'])\n"
            "print(rc, 'pyghmi' in sys.modules, 'lxml' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.split() == ["0", "False", "False"], result.stderr


def test_the_readme_parameter_table_is_up_to_date():
    from hapack import docs
    path = os.path.join(os.path.dirname(__file__), "..", "..", "stonith", "README.md")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert "<!-- params:hapack.stonith.fence_bmc -->" in text
    assert docs.render(text) == text, "run: python -m hapack.docs stonith/README.md"
