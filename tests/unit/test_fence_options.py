"""fence_bmc takes fence_ipmilan's command lines: its short and long options, getopt rules.

The reference is the installed fence_ipmilan itself: its meta-data names every option
(``<getopt mixed="-a, --ip=[ip]"/>``); each one fence_bmc claims to accept must be
accepted under the same letter and long name, with the value going to the same
parameter. The spellings are getopt's: ``-a HOST``, ``-aHOST``, ``--ip HOST``,
``--ip=HOST``, clustered flags, unique abbreviations of long names.
"""

import itertools
import random
import re
import shutil
import subprocess

import pytest

from hapack.stonith import fence_bmc, fencing
from hapack.stonith.errors import ConfigError
from test_fence_protocol import SECRET, agent, bmc  # noqa: F401 (the fixture)

AGENT = fence_bmc.AGENT
# fence_ipmilan's options that fence_bmc refuses, and why (README "fence_bmc and
# fence_ipmilan"): each one would change what is powered or how, silently.
REFUSED = {
    "target": "IPMI bridging to another controller: a different machine would be powered",
    "ipmitool_path": "no ipmitool: fence_bmc speaks IPMI itself (pyghmi)",
    "use_sudo": "no third-party program is run", "sudo": "no third-party program is run",
    "sudo_path": "no third-party program is run",
    "retry_on": "power on is retried within power_timeout",
    "disable_timeout": "every BMC exchange keeps its deadline",
    "plug_separator": "one plug per request",
    "port_as_ip": "the BMC address is ip, never the plug",
}
# fence_ipmilan's name -> fence_bmc's parameter, where they differ
RENAMED = {"ipaddr": "ip", "login": "username", "passwd": "password",
           "passwd_script": "password_script", "port": "plug", "debug": "debug_file",
           "ipmitool_timeout": "shell_timeout"}


def ipmilan_options():
    """(name, short letter or None, long name, takes a value) from fence_ipmilan's meta-data."""
    from lxml import etree
    path = shutil.which("fence_ipmilan") or "/usr/sbin/fence_ipmilan"
    text = subprocess.run([path, "-o", "metadata"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    options = []
    for param in etree.fromstring(text.encode()).iter("parameter"):
        mixed = param.find("getopt").get("mixed")
        match = re.fullmatch(r"(?:-(\w), )?--([\w.-]+)(=\[.*\])?", mixed)
        assert match, mixed
        valued = param.find("content").get("type") != "boolean"  # --verbose-level has no =[]
        options.append((param.get("name"), match.group(1), match.group(2), valued))
    return options


OPTIONS = ipmilan_options()


def test_the_reference_is_fence_ipmilans_full_option_table():
    names = {name for name, *_ in OPTIONS}
    assert {"ip", "username", "password", "lanplus", "cipher", "privlvl", "action", "plug",
            "verbose", "verbose_level", "ipport", "delay", "power_timeout", "help",
            "version", "password_script", "method", "auth"} <= names
    assert set(REFUSED) <= names


@pytest.mark.parametrize("name, short, long, valued",
                         [o for o in OPTIONS if o[0] not in REFUSED],
                         ids=[o[0] for o in OPTIONS if o[0] not in REFUSED])
def test_every_option_of_fence_ipmilan_is_accepted_under_its_names(name, short, long,
                                                                    valued):
    param = AGENT.param(RENAMED.get(name, name))
    assert param is not None, f"fence_bmc has no parameter for fence_ipmilan's {name}"
    assert AGENT.long_option(long) is param
    if short is not None:
        assert AGENT.shorts.get(short) is param, f"-{short} is not {param.name}"
    assert (param.kind != "boolean") == valued, f"--{long}: a flag in one, valued in the other"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_refused_ones_are_refused_with_a_clear_message(name):
    long = next(long for n, _, long, _ in OPTIONS if n == name)
    with pytest.raises(ConfigError, match=f"unknown option --{re.escape(long)}"):
        fencing.read_argv(AGENT, [f"--{long}=1"])


VALUED = [("a", "ip", "192.0.2.7"), ("l", "username", "admin"), ("p", "password", SECRET),
          ("S", "password_script", "/bin/echo x"), ("o", "action", "status"),
          ("n", "plug", "peer"), ("C", "cipher", "3"), ("L", "privlvl", "operator"),
          ("u", "ipport", "6230"), ("m", "method", "cycle"), ("D", "debug_file", "/tmp/d"),
          ("A", "auth", "md5")]


def spellings(short, long, value):
    """Every way getopt lets an operator give one valued option."""
    yield [f"-{short}", value]
    if not value.startswith("-"):
        yield [f"-{short}{value}"]
    yield [f"--{long}", value]
    yield [f"--{long}={value}"]
    yield [f"--{long.replace('_', '-')}={value}"]


@pytest.mark.parametrize("short, name, value", VALUED, ids=[v[1] for v in VALUED])
def test_each_spelling_of_a_valued_option_gives_the_same_value(short, name, value):
    long = next(long for n, _, long, _ in OPTIONS if RENAMED.get(n, n) == name)
    for argv in spellings(short, long, value):
        assert fencing.read_argv(AGENT, argv) == {name: value}, argv


def test_random_command_lines_in_any_spelling_and_order_parse_alike():
    rng = random.Random(18)
    flags = [("P", "lanplus"), ("v", "verbose"), ("q", "quiet")]
    for _ in range(400):
        chosen = rng.sample(VALUED, rng.randint(1, len(VALUED)))
        argv, expected = [], {}
        for short, name, value in chosen:
            long = next(long for n, _, long, _ in OPTIONS if RENAMED.get(n, n) == name)
            argv.append(rng.choice(list(spellings(short, long, value))))
            expected[name] = value
        for short, name in rng.sample(flags, rng.randint(0, len(flags))):
            argv.append([rng.choice([f"-{short}", f"--{name}"])])
            expected[name] = "1"
        rng.shuffle(argv)
        flat = list(itertools.chain.from_iterable(argv))
        raw = dict(fencing.read_argv(AGENT, flat))
        verbose = sum(a == "-v" for a in flat)
        if verbose:
            expected["verbose_level"] = str(verbose)
        assert raw == expected, flat


@pytest.mark.parametrize("argv, level", [
    (["-v"], "1"), (["-vv"], "2"), (["-v", "-v", "-v"], "3"), (["-Pvv"], "2"),
    (["-vvv", "--verbose-level=1"], "1"), (["--verbose-level", "0", "-v"], "0"),
])
def test_v_flags_are_counted_into_verbose_level(argv, level):
    assert fencing.read_argv(AGENT, argv)["verbose_level"] == level


def test_clustered_flags_end_with_a_valued_option_taking_the_rest():
    assert fencing.read_argv(AGENT, ["-Pvostatus"]) == {
        "lanplus": "1", "verbose": "1", "action": "status", "verbose_level": "1"}
    assert fencing.read_argv(AGENT, ["-Po", "off"])["action"] == "off"


def test_unique_abbreviations_of_long_names_work_and_ambiguous_ones_are_refused():
    assert fencing.read_argv(AGENT, ["--user=admin", "--act", "off"]) == {
        "username": "admin", "action": "off"}
    with pytest.raises(ConfigError, match="ambiguous"):
        fencing.read_argv(AGENT, ["--pass=x"])  # password, password_script, password_file


@pytest.mark.parametrize("argv, message", [
    (["-x"], "unknown option -x"), (["-a"], "option -a needs a value"),
    (["-vz"], "unknown option -z"), (["-a", "h", "stray"], "argument 5 is not an option"),
    (["-"], "argument 3 is not an option"), ([SECRET], "argument 3 is not an option"),
])
def test_bad_short_options_are_refused_and_never_echo_a_value(argv, message):
    run = agent(argv=["-p", SECRET] + argv)
    assert run.rc == 1 and message in run.err and SECRET not in run.all


def test_a_password_given_attached_is_never_echoed(bmc):  # noqa: F811
    run = agent(argv=["-ostatus", "-a192.0.2.1", f"-p{SECRET}", "-vv"])
    assert (run.rc, run.out) == (0, "Status: ON\n"), run.err
    assert SECRET not in run.all and "DEBUG" in run.err


def test_help_version_and_metadata_as_fence_ipmilan_spells_them():
    for argv in (["-h"], ["--help"], ["-a", "x", "-h"]):
        assert agent(argv=argv).out.startswith("usage: fence_bmc"), argv
    for argv in (["-V"], ["--version"]):
        assert agent(argv=argv).out == f"fence_bmc {fence_bmc.VERSION}\n"
    assert agent(argv=["-o", "metadata"]).out.startswith("<?xml")
    assert "-a, --ip" in agent(argv=["-h"]).out.replace("-a, --ip, --ipaddr", "-a, --ip")


def test_v_alone_is_an_option_the_missing_address_is_the_error():
    run = agent(argv=["-v"])
    assert run.rc == 2 and "parameter 'ip': is required" in run.err


def test_quiet_keeps_stderr_empty_and_verbose_overrides_it():
    base = ["-o", "status", "-p", SECRET]  # no -a: a configuration error, logged
    loud, quiet = agent(argv=base), agent(argv=base + ["-q"])
    assert loud.rc == quiet.rc == 1 and "ERROR" in loud.err and quiet.err == ""
    assert "ERROR" in agent(argv=base + ["-q", "-v"]).err


def test_debug_file_gets_the_debug_lines_not_stderr(bmc, tmp_path):  # noqa: F811
    path = tmp_path / "debug.log"
    run = agent(argv=["-o", "status", "-a", "192.0.2.1", "-p", SECRET, "-D", str(path)])
    assert run.rc == 0 and "DEBUG" not in run.err
    text = path.read_text()
    assert "DEBUG" in text and SECRET not in text


def test_short_letters_are_fence_ipmilans():
    theirs = {short: RENAMED.get(name, name) for name, short, _, _ in OPTIONS if short}
    ours = {p.short: p.name for p in AGENT.params if p.short}
    assert ours == {s: n for s, n in theirs.items() if n not in REFUSED}
