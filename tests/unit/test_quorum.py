"""[quorum]: a quorum device read from the stack file and rendered into corosync.conf,
the CIB and the pcs script; fence delays refused next to it."""

import random
import re
from pathlib import Path

import pytest
from lxml import etree

from hapack.cib import cib as cibmod
from hapack.cib import corosync, pcs
from hapack.stack import StackError, loads

ROOT = Path(__file__).resolve().parents[2]
LAB_TEXT = (ROOT / "examples" / "stack.toml").read_text()
QDEVICE = ROOT / "examples" / "stack-qdevice.toml"
NO_DELAY = LAB_TEXT.replace('priority_fencing_delay = "5s"', "#", 1)
QUORUM = '\n[quorum]\nhost = "198.18.242.30"\n'


def load(text):
    return loads(text, "q.toml", check_agents=False)


def problems(text):
    with pytest.raises(StackError) as info:
        load(text)
    return dict(info.value.problems)


def with_quorum(extra="", base=NO_DELAY):
    return base + QUORUM + extra


# -- a tiny corosync.conf reader: sections and key: value lines ----------------------------

def parse_conf(text: str) -> dict:
    root: dict = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.strip().startswith("exec_") else raw.strip()
        if not line:
            continue
        if line.endswith("{"):
            child: dict = {}
            stack[-1].setdefault(line[:-1].strip(), []).append(child)
            stack.append(child)
        elif line == "}":
            stack.pop()
        else:
            key, _, value = line.partition(":")
            stack[-1].setdefault(key.strip(), []).append(value.strip())
    assert len(stack) == 1, "unbalanced braces"
    return root


def quorum_of(stack) -> dict:
    conf = parse_conf(corosync.render(stack, "q.toml").decode())
    (quorum,) = conf["quorum"]
    return quorum


def crm_options(stack) -> dict:
    root = etree.fromstring(cibmod.render(stack, "q.toml"))
    return {nv.get("name"): nv.get("value")
            for nv in root.iterfind("configuration/crm_config//nvpair")}


# -- reading -----------------------------------------------------------------------------

def test_the_example_reads_into_a_quorum_device_with_no_fencing_delay():
    stack = loads(QDEVICE.read_text(), str(QDEVICE), check_agents=False)
    q = stack.quorum
    assert (q.host, q.port, q.algorithm, q.tie_breaker, q.tls) == (
        "198.19.10.30", 5403, "ffsplit", "mw1", "on")
    assert q.heuristics.mode == "sync"
    assert q.heuristics.execs == (("ping1", "/bin/ping -q -n -c 1 -W 1 198.18.10.1"),)
    assert stack.fencing.priority_fencing_delay == 0
    assert all(node.fence_delay == 0 for node in stack.nodes)


def test_without_quorum_the_default_delay_stays():
    stack = load(NO_DELAY)
    assert stack.quorum is None and stack.fencing.priority_fencing_delay == 10_000


def test_defaults():
    q = load(with_quorum()).quorum
    assert (q.port, q.algorithm, q.tie_breaker, q.tls, q.timeout, q.sync_timeout,
            q.heuristics) == (5403, "ffsplit", "lowest", "on", None, None, None)


@pytest.mark.parametrize("delay", ["1ms", "500ms", "5s", "1.5s", "2min", "1h"])
def test_a_priority_fencing_delay_next_to_quorum_is_refused(delay):
    text = with_quorum(base=LAB_TEXT.replace('"5s"', f'"{delay}"', 1))
    message = problems(text)["fencing.priority_fencing_delay"]
    assert "not used with [quorum]" in message and '"0s"' in message


@pytest.mark.parametrize("node", [0, 1])
@pytest.mark.parametrize("delay", ["1ms", "3s"])
def test_a_node_fence_delay_next_to_quorum_is_refused(node, delay):
    names = ["node1", "node2"]
    text = with_quorum().replace(f'name = "{names[node]}"\n',
                                 f'name = "{names[node]}"\nfence_delay = "{delay}"\n', 1)
    assert "not used with [quorum]" in problems(text)[f"nodes[{node}].fence_delay"]


@pytest.mark.parametrize("zero", ["0s", "0ms", "0min"])
def test_a_zero_delay_next_to_quorum_is_accepted(zero):
    stack = load(with_quorum(base=LAB_TEXT.replace('"5s"', f'"{zero}"', 1)).replace(
        'name = "node1"\n', f'name = "node1"\nfence_delay = "{zero}"\n', 1))
    assert stack.fencing.priority_fencing_delay == 0 and stack.primary.fence_delay == 0


BAD = [
    ("[quorum]\nport = 5403\n", "quorum.host", "is required"),
    ('[quorum]\nhost = "a b"\n', "quorum.host", "neither an IP address nor a host name"),
    ('[quorum]\nhost = "qnetd\\nx"\n', "quorum.host", "control character"),
    ('[quorum]\nhost = "q"\nport = 0\n', "quorum.port", "outside"),
    ('[quorum]\nhost = "q"\nalgorithm = "2nodelms"\n', "quorum.algorithm", "not one of: ffsplit, lms"),
    ('[quorum]\nhost = "q"\ntie_breaker = "node3"\n', "quorum.tie_breaker",
     "not one of: lowest, highest, node1, node2"),
    ('[quorum]\nhost = "q"\ntls = "yes"\n', "quorum.tls", "not one of: on, off, required"),
    ('[quorum]\nhost = "q"\ntimeout = 10\n', "quorum.timeout", "write the unit"),
    ('[quorum]\nhost = "q"\ntimeout = "500ms"\n', "quorum.timeout", "outside"),
    ('[quorum]\nhost = "q"\ntimeout = "20s"\nsync_timeout = "10s"\n', "quorum.sync_timeout",
     "at least timeout"),
    ('[quorum]\nhost = "q"\nvotes = 2\n', "quorum.votes", "unknown key"),
    ('[quorum]\nhost = "q"\n[quorum.heuristics]\nmode = "sync"\n', "quorum.heuristics",
     "no heuristics"),
    ('[quorum]\nhost = "q"\n[quorum.heuristics]\nmode = "off"\nping = ["198.18.240.1"]\n',
     "quorum.heuristics.mode", "not one of: sync, on"),
    ('[quorum]\nhost = "q"\n[quorum.heuristics]\nping = "198.18.240.1"\n',
     "quorum.heuristics.ping", "expected an array"),
    ('[quorum]\nhost = "q"\n[quorum.heuristics]\nping = ["198.18.240.1; reboot"]\n',
     "quorum.heuristics.ping[0]", "neither an IP address nor a host name"),
    ('[quorum]\nhost = "q"\n[quorum.heuristics]\nexec = { gw = "ping -c1 gw" }\n',
     "quorum.heuristics.exec.gw", "absolute path"),
    ('[quorum]\nhost = "q"\n[quorum.heuristics]\nexec = { "a.b" = "/bin/true" }\n',
     "quorum.heuristics.exec.a.b", "not a valid name"),
    ('[quorum]\nhost = "q"\n[quorum.heuristics]\nping = ["g"]\nexec = { ping1 = "/bin/true" }\n',
     "quorum.heuristics.exec.ping1", "taken by a ping"),
    ('[quorum]\nhost = "q"\n[quorum.heuristics]\nexec = { t = "/bin/true\\n/bin/sh" }\n',
     "quorum.heuristics.exec.t", "control character"),
    ('quorum = "q"\n', "quorum", "expected a table"),
]


@pytest.mark.parametrize("table, key, message", BAD, ids=[b[1] + ":" + b[2][:12] for b in BAD])
def test_each_mistake_in_quorum_names_key_and_problem(table, key, message):
    text = table + NO_DELAY if table.startswith("quorum =") else NO_DELAY + "\n" + table
    found = problems(text)
    assert key in found, found
    assert message in found[key]


# -- rendering ---------------------------------------------------------------------------

def test_corosync_has_the_device_and_no_two_node():
    stack = loads(QDEVICE.read_text(), str(QDEVICE), check_agents=False)
    quorum = quorum_of(stack)
    assert "two_node" not in quorum and "wait_for_all" not in quorum
    assert quorum["provider"] == ["corosync_votequorum"]
    (device,) = quorum["device"]
    assert device["model"] == ["net"] and device["votes"] == ["1"]
    (net,) = device["net"]
    assert net == {"host": ["198.19.10.30"], "port": ["5403"], "algorithm": ["ffsplit"],
                   "tie_breaker": ["1"], "tls": ["on"]}
    (heuristics,) = device["heuristics"]
    assert heuristics == {"mode": ["sync"], "exec_ping1": ["/bin/ping -q -n -c 1 -W 1 198.18.10.1"]}
    text = corosync.render(stack, "q.toml").decode()
    assert not re.search(r"^\s*two_node\s*:", text, re.M)


def test_corosync_without_quorum_keeps_two_node_and_no_device():
    quorum = quorum_of(load(NO_DELAY))
    assert quorum["two_node"] == ["1"] and "device" not in quorum


@pytest.mark.parametrize("tie, rendered", [("lowest", "lowest"), ("highest", "highest"),
                                           ("node1", "1"), ("node2", "2")])
def test_tie_breaker_is_corosyncs_spelling(tie, rendered):
    stack = load(with_quorum(f'tie_breaker = "{tie}"\n'))
    assert quorum_of(stack)["device"][0]["net"][0]["tie_breaker"] == [rendered]


def test_lms_takes_corosyncs_default_votes_and_timeouts_are_written_when_set():
    stack = load(with_quorum('algorithm = "lms"\ntimeout = "3s"\nsync_timeout = "6s"\n'))
    device = quorum_of(stack)["device"][0]
    assert "votes" not in device
    assert (device["timeout"], device["sync_timeout"]) == (["3000"], ["6000"])


def test_cib_has_no_priority_fencing_delay_with_quorum():
    stack = load(with_quorum())
    assert "priority-fencing-delay" not in crm_options(stack)
    cib = cibmod.render(stack, "q.toml").decode()
    assert "the quorum device settles a split" in cib and "set a fence_delay" not in cib


def test_pcs_script_ends_with_the_same_device():
    stack = loads(QDEVICE.read_text(), str(QDEVICE), check_agents=False)
    script = pcs.render(stack, "q.toml").decode()
    last = script.rstrip("\n").splitlines()[-1]
    assert last.startswith("# pcs quorum device add votes=1 model net host=198.19.10.30 ")
    assert pcs.device_argv(stack)[-2:] == ["mode=sync",
                                           "exec_ping1=/bin/ping -q -n -c 1 -W 1 198.18.10.1"]
    assert "quorum device" not in pcs.render(load(NO_DELAY), "q.toml").decode()


def _random_stack_text(rng: random.Random) -> tuple[str, bool, int]:
    """A stack file with or without [quorum] in one of many shapes, its quorum flag and
    the priority-fencing-delay (ms) the CIB must carry."""
    delay = rng.choice([None, "0s", "5s", "250ms"])
    base = NO_DELAY if delay is None else LAB_TEXT.replace('"5s"', f'"{delay}"', 1)
    if rng.random() < 0.5:
        return base, False, {None: 10_000, "0s": 0, "5s": 5000, "250ms": 250}[delay]
    if delay not in (None, "0s"):
        base = LAB_TEXT.replace('"5s"', '"0s"', 1)
    lines = [f'algorithm = "{rng.choice(["ffsplit", "lms"])}"',
             f'tie_breaker = "{rng.choice(["lowest", "highest", "node1", "node2"])}"',
             f'tls = "{rng.choice(["on", "off", "required"])}"', 'port = 5404',
             'timeout = "2s"']
    extra = "\n".join(rng.sample(lines, rng.randint(0, len(lines)))) + "\n"
    if rng.random() < 0.5:
        extra += '[quorum.heuristics]\nping = ["198.18.240.1", "198.18.240.50"]\n'
        extra += rng.choice(["", 'mode = "on"\ninterval = "5s"\n', 'exec = { up = "/bin/true" }\n'])
    return with_quorum(extra, base), True, 0


def test_two_node_xor_device_and_the_delay_only_without_quorum():
    rng = random.Random(17)
    for _ in range(150):
        text, quorate, delay_ms = _random_stack_text(rng)
        stack = load(text)
        quorum = quorum_of(stack)
        assert ("device" in quorum) == quorate and ("two_node" in quorum) != quorate, text
        options = crm_options(stack)
        if delay_ms:
            assert options["priority-fencing-delay"] == cibmod.format_duration(delay_ms)
        else:
            assert "priority-fencing-delay" not in options, text
        if quorate:
            net = quorum["device"][0]["net"][0]
            assert net["host"] == ["198.18.242.30"]
            assert ("votes" in quorum["device"][0]) == (net["algorithm"] == ["ffsplit"])
