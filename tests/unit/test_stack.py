"""hapack.stack: the stack file read into typed objects, and every mistake named."""

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest

from hapack import stack as stackmod
from hapack.params import Param
from hapack.stack import StackError, loads

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "examples" / "stack.toml"
LAB_TEXT = LAB.read_text()


def load_text(text, check_agents=False):
    return loads(text, "bad.toml", check_agents=check_agents)


def problems(text, check_agents=False):
    with pytest.raises(StackError) as info:
        load_text(text, check_agents)
    assert str(info.value).startswith("bad.toml: ")
    return info.value.problems


def edited(old, new, text=LAB_TEXT):
    assert old in text, old
    return text.replace(old, new, 1)


# -- the example, as the API hands it out ----------------------------------------------

def test_lab_example_loads_into_typed_objects():
    stack = load_text(LAB_TEXT)
    assert [n.name for n in stack.nodes] == ["node1", "node2"]
    assert stack.primary.name == "node1" and stack.secondary.name == "node2"
    assert stack.peer("node1").name == "node2"
    assert [n.nodeid for n in stack.nodes] == [1, 2]
    assert str(stack.primary.address("hb")) == "198.18.241.11/24"
    assert [link.number for link in stack.links] == [0, 1]
    assert (stack.vip.link, stack.vip.interface, stack.vip.prefixlen) == ("lan", "eth0", 24)
    assert [layer.name for layer in stack.stateless] == ["apache", "tomcat"]
    assert [layer.name for layer in stack.stateful] == ["activemq", "postgresql", "slapd"]
    assert stack.stateful_order() == ("vip", "activemq", "postgresql", "slapd")
    assert stack.corosync.token == 1000 and stack.fencing.priority_fencing_delay == 5000
    assert stack.layers[3].agent == "ocf:hapack:postgresql"
    assert stack.layers[3].agent_params() == {"pgdata": "/srv/hapack/postgresql"}
    with pytest.raises(Exception):
        stack.primary.name = "x"


def test_examples_pass_the_agents_that_exist():
    for path in sorted((ROOT / "examples").glob("*.toml")):
        stackmod.load(path)


def test_defaults_apply_when_keys_are_left_out():
    text = LAB_TEXT
    for block in ("[fencing]", "[corosync]", "[heartbeat]"):
        start = text.index(block)
        text = text[:start] + text[text.index("\n\n", start) + 2:]
    stack = load_text(text)
    assert stack.corosync.token == stackmod.DEFAULT_TOKEN_MS
    assert stack.corosync.syslog is True
    assert stack.fencing.action == "off"
    assert stack.fencing.priority_fencing_delay == stackmod.DEFAULT_PRIORITY_FENCING_DELAY_MS
    assert stack.heartbeat.deadtime == stackmod.DEFAULT_HB_DEADTIME_MS
    assert stack.layers[0].ops.stop_timeout == stackmod.DEFAULT_OPS["layer"]["stop_timeout"]


def test_vip_start_after_moves_it_in_the_order():
    stack = load_text(edited('# start_after = "slapd"', 'start_after = "postgresql"'))
    assert stack.stateful_order() == ("activemq", "postgresql", "vip", "slapd")


@pytest.mark.parametrize("text,ms", [("500ms", 500), ("10s", 10_000), ("2min", 120_000),
                                     ("2m", 120_000), ("1h", 3_600_000)])
def test_durations(text, ms):
    assert stackmod.parse_duration(text) == ms


def test_duration_formatting():
    assert [stackmod.format_duration(ms) for ms in (500, 10_000, 60_000, 120_000, 90_000)] == [
        "500ms", "10s", "60s", "2min", "90s"]


# -- mistakes: each names the key and says what is wrong ------------------------------

MISTAKES = [
    ("unknown key", ('name = "hapack-lab"', 'name = "hapack-lab"\ncolour = "blue"'),
     "cluster.colour", "unknown key"),
    ("wrong type", ("port = 623", 'port = "623"'), "nodes[0].bmc.port",
     "expected an integer, got a string"),
    ("bad duration", ('token = "1s"', "token = 1000"), "corosync.token", "duration string"),
    ("duplicate layer", ('name = "tomcat"', 'name = "apache"'), "layers[1].name",
     "'apache' is declared twice"),
    ("data dir outside the partition", ('data_dir = "/srv/hapack/slapd"',
                                         'data_dir = "/var/lib/ldap"'),
     "layers[4].data_dir", "is outside the partition (/srv/hapack)"),
    ("data dir is the mount point", ('data_dir = "/srv/hapack/slapd"', 'data_dir = "/srv/hapack"'),
     "layers[4].data_dir", "is outside the partition"),
    ("stateful layer without data dir", ('data_dir = "/srv/hapack/slapd"\n', ""),
     "layers[4].data_dir", "needs data_dir"),
    ("vip outside every subnet", ('address = "198.18.240.100"', 'address = "198.18.9.100"'),
     "vip.address", "is outside every node's subnets"),
    ("vip is a node's address", ('address = "198.18.240.100"', 'address = "198.18.240.12"'),
     "vip.address", "node2's own address"),
    ("unknown kind", ('kind = "stateless"', 'kind = "sometimes"'), "layers[0].kind",
     "not one of: stateless, stateful"),
    ("start_after a stateless layer", ('# start_after = "slapd"', 'start_after = "tomcat"'),
     "vip.start_after", "not a stateful layer"),
    ("drbd without its resource", ('drbd_resource = "hapack"\n', ""), "partition.drbd_resource",
     "is required with backend"),
    ("subnets differ on a link", ('node2 = "198.18.241.12/24"', 'node2 = "198.18.99.12/24"'),
     "links[1].addresses", "not on one subnet"),
    ("address without prefix", ('node1 = "198.18.241.11/24"', 'node1 = "198.18.241.11"'),
     "links[1].addresses.node1", "has no prefix length"),
    ("unknown node on a link", ('node2 = "198.18.241.12/24"', 'node3 = "198.18.241.12/24"'),
     "links[1].addresses.node3", "is not one of the nodes"),
    ("reserved name", ('name = "tomcat"', 'name = "vip"'), "layers[1].name",
     "a name hapack uses itself"),
    ("stickiness below the preference", ("stickiness = 100", "stickiness = 20"),
     "cluster.stickiness", "must be greater than 50"),
    ("param owned by hapack", ("arp_count = 5", 'nic = "eth9"'), "vip.params.nic",
     "is set by hapack"),
    ("heartbeat deadtime", ('deadtime = "5s"', 'deadtime = "1s"'), "heartbeat.deadtime",
     "more than twice keepalive"),
]


@pytest.mark.parametrize("change,key,message", [m[1:] for m in MISTAKES],
                         ids=[m[0] for m in MISTAKES])
def test_each_mistake_names_key_and_problem(change, key, message):
    found = problems(edited(*change))
    assert any(k == key and message in m for k, m in found), found


def test_node_without_bmc():
    start = LAB_TEXT.index("[nodes.bmc]", LAB_TEXT.index('name = "node2"'))
    end = LAB_TEXT.index("[[links]]")
    text = LAB_TEXT[:start] + LAB_TEXT[end:]
    found = problems(text)
    assert ("nodes[1].bmc" in [k for k, _ in found])
    assert any("has no [nodes.bmc] table" in m for _, m in found)


def test_three_nodes():
    text = LAB_TEXT.replace("[[links]]", '[[nodes]]\nname = "node3"\n\n[[links]]', 1)
    assert any(k == "nodes" and "exactly two nodes" in m for k, m in problems(text))


def test_not_toml():
    found = problems("[cluster\nname=")
    assert found[0][0] == "" and "not valid TOML" in found[0][1]


def test_every_problem_is_reported_at_once():
    text = edited("port = 623", 'port = "x"', edited('kind = "stateless"', 'kind = "x"'))
    keys = {k for k, _ in problems(text)}
    assert {"nodes[0].bmc.port", "layers[0].kind"} <= keys


def test_load_names_a_missing_file(tmp_path):
    with pytest.raises(StackError) as info:
        stackmod.load(tmp_path / "none.toml")
    assert "cannot read the stack file" in str(info.value)


# -- agent parameters against the agent's declaration ----------------------------------

@pytest.fixture
def fake_agent(monkeypatch):
    """An importable hapack.ocf.fakedb declaring one required and one integer parameter."""
    name = "hapack.ocf.fakedb"
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.AGENT = types.SimpleNamespace(params=(
        Param("datadir", "data", required=True),
        Param("port", "port", kind="integer", minimum=1, maximum=65535)))
    monkeypatch.setitem(sys.modules, name, module)
    return name


FAKE_LAYER = '''
[[layers]]
name = "db2"
agent = "fakedb"
kind = "stateful"
data_dir = "/srv/hapack/db2"
'''


def test_agent_params_are_checked_when_the_agent_exists(fake_agent):
    stack = load_text(LAB_TEXT + FAKE_LAYER + 'data_param = "datadir"\n', check_agents=True)
    assert stack.layers[-1].agent_params() == {"datadir": "/srv/hapack/db2"}


def test_missing_required_agent_param(fake_agent):
    found = problems(LAB_TEXT + FAKE_LAYER, check_agents=True)
    assert ("layers[5].params", "ocf:hapack:fakedb requires parameter 'datadir'; add it to "
            "layers[5].params") in found


def test_unknown_and_invalid_agent_params(fake_agent):
    text = LAB_TEXT + FAKE_LAYER + ('data_param = "datadir"\n[layers.params]\nport = 0\n'
                                    'colour = "red"\n')
    found = dict(problems(text, check_agents=True))
    assert "has no parameter 'colour'" in found["layers[5].params.colour"]
    assert "refuses the value '0'" in found["layers[5].params.port"]


def test_agents_not_written_yet_are_skipped():
    text = LAB_TEXT.replace('agent = "slapd"', 'agent = "notwrittenyet"')
    assert load_text(text, check_agents=True).layers[-1].agent == "ocf:hapack:notwrittenyet"
