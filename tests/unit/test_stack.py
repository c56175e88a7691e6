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
    """hapack.ocf.fakedb, in the agent registry, declaring one required and one integer
    parameter and its own action timeouts."""
    from hapack import agents
    from hapack.ocf import Action
    name = "hapack.ocf.fakedb"
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.AGENT = types.SimpleNamespace(params=(
        Param("datadir", "data", required=True),
        Param("port", "port", kind="integer", minimum=1, maximum=65535)), actions=(
        Action("start", None, 75), Action("stop", None, 45),
        Action("monitor", None, 25, interval=15, depth=0),
        Action("monitor", None, 50, interval=60, depth=20)))
    monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(agents.OCF_AGENTS, "fakedb", name)
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


def test_the_declared_timeouts_are_the_op_defaults(fake_agent):
    stack = load_text(LAB_TEXT + FAKE_LAYER + 'data_param = "datadir"\n', check_agents=True)
    assert stack.layers[-1].ops == stackmod.Ops(start_timeout=75_000, stop_timeout=45_000,
                                                monitor_interval=15_000, monitor_timeout=25_000)
    text = LAB_TEXT + FAKE_LAYER + '[layers.ops]\nstart_timeout = "3min"\n'
    assert load_text(text).layers[-1].ops.start_timeout == 180_000


# -- one registry of agents: an unknown hapack agent is an error ------------------------

@pytest.mark.parametrize("agent", ["notwrittenyet", "postgres", "ocf:hapack:tomcat9",
                                   "ocf:hapack:Tomcat", "slapd_"])
@pytest.mark.parametrize("check_agents", [True, False])
def test_an_unknown_hapack_agent_is_an_error_listing_the_known_ones(agent, check_agents):
    from hapack.agents import OCF_AGENTS
    found = dict(problems(edited('agent = "slapd"', f'agent = "{agent}"'), check_agents))
    message = found["layers[4].agent"]
    assert "is not a hapack agent" in message
    assert all(name in message for name in OCF_AGENTS)


def test_another_providers_agent_is_not_looked_up():
    stack = load_text(edited('agent = "slapd"', 'agent = "ocf:heartbeat:slapd"'))
    assert stack.layers[4].ops == stackmod.Ops(**stackmod.FOREIGN_AGENT_OPS)


# -- every default declared once: operation timeouts are the agents' own ---------------

def _declared(agent_name, action, depth=0, role=None):
    from hapack.agents import ocf_agent
    return next(a for a in ocf_agent(agent_name).actions if a.name == action
                and (a.depth or 0) == depth and a.role in (role, None))


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.stem)
def test_op_defaults_are_each_agents_declared_timeouts(example):
    """Tomcat declares a 120 s start: the stack file must not cut it to 60 s."""
    stack = stackmod.load(example)
    resources = [(stack.vip.agent, stack.vip.ops, {}), (stack.partition.agent, stack.partition.ops, {})]
    resources += [(layer.agent, layer.ops, layer.name) for layer in stack.layers]
    text = example.read_text()
    for agent, ops, name in resources:
        kind = agent.split(":")[2]
        if name and f'name = "{name}"' in text and "[layers.ops]" in text.split(
                f'name = "{name}"', 1)[1].split("[[layers]]", 1)[0]:
            continue    # the stack file sets this layer's timings itself
        for action in ("start", "stop"):
            assert getattr(ops, f"{action}_timeout") == _declared(kind, action).timeout * 1000, (
                agent, action)
        assert ops.monitor_interval == _declared(kind, "monitor", role="Unpromoted").interval * 1000


def test_tomcat_start_renders_its_declared_120s_and_the_runner_gets_them():
    from hapack.cib import cib as cibmod
    from hapack.ocf.tomcat import AGENT
    stack = stackmod.load(LAB)
    cib = cibmod.render(stack, "stack.toml").decode()
    assert '<op name="start" interval="0s" timeout="2min" id="tomcat-start-0s"/>' in cib
    tomcat = next(layer for layer in stack.layers if layer.name == "tomcat")
    timeout = AGENT.timeout_for("start", str(tomcat.ops.start_timeout))
    assert timeout - AGENT.margin(timeout) > 115     # not ~58 s


# -- 14.8: nothing in the stack file escapes or overrides -------------------------------

BAD_SPECS = ["ocf:..:x", "ocf:.:x", "ocf:x:..", "ocf:x:.", "ocf:-x:y", "ocf:x:-y", "ocf:x/y:z",
             "ocf:x:y/z", "ocf::z", "ocf:x:", "ocf:x:y\x00", "ocf:.hidden:y", "ocf:x:.hidden",
             "ocf:../../etc:passwd", "../x", ".", "..", "-x", "", "ocf:x:y:z", "ocf:x:y z",
             "ocf:x:y\n", "/usr/bin/x", "ocf:x\\y:z"]


@pytest.mark.parametrize("spec", BAD_SPECS, ids=repr)
def test_agent_providers_and_types_are_plain_names(spec):
    text = edited('agent = "slapd"', "agent = " + _toml_string(spec))
    found = dict(problems(text))
    assert "layers[4].agent" in found, found
    message = found["layers[4].agent"]
    assert "not an agent" in message or "control character" in message, message


def _toml_string(text):
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                         for c in text) + '"'


BMC_OVERRIDES = ["address", "ip", "ipaddr", "user", "username", "login", "password", "passwd",
                 "password_file", "passwd_file", "port", "ipport", "driver", "lanplus", "cipher",
                 "hostname", "plug", "nodename", "pcmk_host_list", "pcmk_host_map"]


@pytest.mark.parametrize("check_agents", [True, False])
@pytest.mark.parametrize("key", BMC_OVERRIDES)
@pytest.mark.parametrize("node", [0, 1])
def test_bmc_params_never_override_the_connection_or_the_target(key, node, check_agents):
    anchor = "cipher = 3"
    at = LAB_TEXT.index(anchor) if node == 0 else LAB_TEXT.rindex(anchor)
    text = (LAB_TEXT[:at + len(anchor)] + f'\n\n[nodes.bmc.params]\n{key} = "198.18.0.66"\n'
            + LAB_TEXT[at + len(anchor):])
    found = dict(problems(text, check_agents))
    where = f"nodes[{node}].bmc.params.{key}"
    assert where in found, found
    assert "override" in found[where] or "sets itself" in found[where]


def test_password_script_is_a_second_password_source_only_next_to_one():
    text = LAB_TEXT.replace("cipher = 3", 'cipher = 3\n\n[nodes.bmc.params]\n'
                            'password_script = "/usr/local/bin/bmc-pass"', 1)
    assert "nodes[0].bmc.params.password_script" in dict(problems(text))
    no_file = text.replace('password_file = "/etc/hapack/bmc/node1.password"\n', "", 1)
    assert load_text(no_file).nodes[0].bmc.params == {"password_script": "/usr/local/bin/bmc-pass"}


SECRET_PARTS = ("Tr0ub4dor", "horse-battery")
BREAKS = ["\n", "\r", "\r\n", "\x00", "\n\n", "\x1b", "\t"]


@pytest.mark.parametrize("brk", BREAKS, ids=repr)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("field", ["username", "password", "password_file"])
def test_bmc_credentials_with_line_breaks_are_refused_and_never_echoed(field, where, brk):
    a, b = SECRET_PARTS
    value = {"start": brk + a + b, "middle": a + brk + b, "end": a + b + brk}[where]
    if field == "password_file":
        value = "/etc/hapack/" + value
    text = LAB_TEXT.replace('password_file = "/etc/hapack/bmc/node1.password"\n',
                            'password_file = "/etc/hapack/bmc/node1.password"\n'
                            if field == "username" else "", 1)
    text = text.replace('username = "admin"\n', "" if field == "username" else
                        'username = "admin"\n', 1)
    text = text.replace("cipher = 3", f"cipher = 3\n{field} = {_toml_string(value)}", 1)
    with pytest.raises(StackError) as info:
        load_text(text)
    assert info.value.key == f"nodes[0].bmc.{field}", info.value.problems
    shown = str(info.value) + repr(info.value.problems)
    assert a not in shown and b not in shown and "Tr0" not in shown


@pytest.mark.parametrize("brk", BREAKS[:-1], ids=repr)
@pytest.mark.parametrize("param", ["options", "config", "bindir", "listen_address"])
def test_postgresql_values_cannot_reach_a_shell_line(param, brk):
    text = edited('data_param = "pgdata"         # the agent parameter that receives data_dir',
                  f'data_param = "pgdata"\n\n[layers.params]\n{param} = '
                  + _toml_string(f"-c a=1{brk}touch /tmp/pwned"))
    assert f"layers[3].params.{param}" in dict(problems(text))


@pytest.mark.parametrize("brk", BREAKS[:-1], ids=repr)
@pytest.mark.parametrize("key,old", [
    ("data_dir", 'data_dir = "/srv/hapack/postgresql"'),
    ("device", 'device = "/dev/drbd0"'),
    ("directory", 'directory = "/srv/hapack"'),
])
def test_paths_hold_no_line_breaks(key, old, brk):
    value = old.split('"')[1] + brk + "x"
    found = dict(problems(edited(old, f"{key} = {_toml_string(value)}")))
    assert any(k.endswith(key) for k in found), found


# -- 15.7: one duration convention, the unit written ------------------------------------

DURATION_KEYS = [
    ("cluster", 'failure_timeout = "10min"', "failure_timeout"),
    ("fencing", 'priority_fencing_delay = "5s"', "priority_fencing_delay"),
    ("fencing", 'timeout = "60s"', "timeout"),
    ("corosync", 'token = "1s"', "token"),
    ("heartbeat", 'keepalive = "500ms"', "keepalive"),
    ("heartbeat", 'deadtime = "5s"', "deadtime"),
    ("heartbeat", 'warntime = "2s"', "warntime"),
    ("heartbeat", 'initdead = "20s"', "initdead"),
]


@pytest.mark.parametrize("bare", ["5", "5000", "1.5", "0"])
@pytest.mark.parametrize("table,line,key", DURATION_KEYS)
def test_bare_numbers_are_refused_with_a_word_about_the_unit(table, line, key, bare):
    found = dict(problems(edited(line, f"{key} = {bare}")))
    assert "write the unit" in found[f"{table}.{key}"]


@pytest.mark.parametrize("where", ["vip", "partition", "layers[0]", "nodes"])
def test_bare_numbers_are_refused_in_ops_and_fence_delay(where):
    if where == "nodes":
        text, key = edited('name = "node1"', 'name = "node1"\nfence_delay = 5'), "nodes[0].fence_delay"
    elif where == "layers[0]":
        text = edited('port = 8080', 'port = 8080\n\n[layers.ops]\nstop_timeout = 90')
        key = "layers[0].ops.stop_timeout"
    else:
        text = LAB_TEXT + f"\n[{where}.ops]\nstart_timeout = 90\n"
        key = f"{where}.ops.start_timeout"
    assert "write the unit" in dict(problems(text))[key]


def test_bare_numbers_are_refused_in_hamon():
    found = dict(problems(LAB_TEXT + '\n[hamon]\ndead_time = 1.2\n'))
    assert "write the unit" in found["hamon.dead_time"]


@pytest.mark.parametrize("text,ms", [("1.2s", 1200), ("0.5s", 500), ("1.5min", 90_000),
                                     ("0.25h", 900_000), ("200ms", 200), ("2.0s", 2000)])
def test_decimal_durations(text, ms):
    assert stackmod.parse_duration(text) == ms


@pytest.mark.parametrize("text", ["0.5ms", "1.2345s", "1,2s", "1.s", ".5s", "1.2", "5", "s",
                                  "-1s", "1e3ms", "1 2s", "10sec", "1d"])
def test_not_durations(text):
    with pytest.raises(ValueError):
        stackmod.parse_duration(text)


# -- 15.5: the [hamon] table goes through the same reader --------------------------------

def test_hamon_table_problems_come_with_the_rest():
    text = edited('kind = "stateless"', 'kind = "x"') + '\n[hamon]\nintervall = "1s"\nport = "x"\n'
    keys = {k for k, _ in problems(text)}
    assert {"layers[0].kind", "hamon.intervall", "hamon.port"} <= keys


def test_hamon_policy_and_settings_share_their_defaults():
    import dataclasses
    from hapack.hamon.config import Config, Settings
    from hapack.hamon.snapshot import Policy
    from hapack.hamon.world import policy_of
    stack = stackmod.load(LAB)
    assert policy_of(Config(stack, "node1", Settings())) == dataclasses.replace(
        Policy(), migration_threshold=stack.cluster.migration_threshold)
    assert Policy().migration_threshold == stackmod.DEFAULT_MIGRATION_THRESHOLD


# -- names end where they seem to: '$' in a pattern let a trailing newline through --------

@pytest.mark.parametrize("old,new,key", [
    ('name = "tomcat"', 'name = "tomcat\\n"', "layers[1].name"),
    ('name = "hapack-lab"', 'name = "hapack-lab\\n"', "cluster.name"),
    ('name = "node1"', 'name = "node1\\n"', "nodes[0].name"),
    ('interface = "eth1"', 'interface = "eth1\\n"', "links[1].interface"),
    ('drbd_resource = "hapack"', 'drbd_resource = "hapack\\n"', "partition.drbd_resource"),
    ('address = "198.18.242.21"', 'address = "bmc1.example\\n"', "nodes[0].bmc.address"),
    ('data_param = "data_dir"', 'data_param = "data_dir\\n"', "layers[2].data_param"),
    ('agent = "slapd"', 'agent = "slapd\\n"', "layers[4].agent"),
])
def test_a_trailing_newline_is_no_part_of_a_name(old, new, key):
    assert key in dict(problems(edited(old, new)))


# -- corosync's token and consensus: the two-node rule (issue 19) -------------------------

def corosync_table(*lines):
    """The lab example with its [corosync] table replaced by ``lines``."""
    start = LAB_TEXT.index("[corosync]")
    end = LAB_TEXT.index("\n\n", start) + 2
    return LAB_TEXT[:start] + "\n".join(("[corosync]",) + lines) + "\n\n" + LAB_TEXT[end:]


def test_two_node_default_pair_is_token_1000_and_consensus_800():
    co = load_text(corosync_table()).corosync
    assert (co.token, co.consensus) == (1000, 800)
    assert stackmod.DEFAULT_TOKEN_MS == 1000


def test_the_example_sets_the_pair_it_measured():
    assert (load_text(LAB_TEXT).corosync.token, load_text(LAB_TEXT).corosync.consensus) == (
        1000, 800)


@pytest.mark.parametrize("seed", range(5))
def test_default_consensus_is_below_the_token_and_above_the_join_timeout(seed):
    import random
    rnd = random.Random(seed)
    for token in [200, 201, 250, 999, 1000, 3000, 600_000] + [
            rnd.randint(200, 600_000) for _ in range(200)]:
        spelled = rnd.choice([f"{token}ms", f"{token / 1000:g}s"])
        if stackmod.parse_duration(spelled) != token:
            spelled = f"{token}ms"
        co = load_text(corosync_table(f'token = "{spelled}"')).corosync
        assert co.token == token
        assert stackmod.COROSYNC_JOIN_MS < co.consensus < co.token, (token, co.consensus)
        assert co.consensus == token * stackmod.DEFAULT_CONSENSUS_PERCENT // 100


@pytest.mark.parametrize("spelled,ms", [("800ms", 800), ("1.2s", 1200), ("51ms", 51),
                                        ("3600ms", 3600), ("12min", 720_000)])
def test_an_explicit_consensus_is_kept_as_written(spelled, ms):
    co = load_text(corosync_table('token = "1s"', f'consensus = "{spelled}"')).corosync
    assert (co.token, co.consensus) == (1000, ms)


@pytest.mark.parametrize("spelled", ["50ms", "30ms", "1ms", "0ms", "0s", "721s", "13min"])
def test_a_consensus_corosync_would_refuse_is_named(spelled):
    found = dict(problems(corosync_table('token = "1s"', f'consensus = "{spelled}"')))
    assert "corosync.consensus" in found
    assert "join timeout" in found["corosync.consensus"] or "outside" in found["corosync.consensus"]


def test_a_bare_consensus_number_asks_for_the_unit():
    found = dict(problems(corosync_table('token = "1s"', "consensus = 800")))
    assert "write the unit" in found["corosync.consensus"]


@pytest.mark.parametrize("consensus", ['"80ms"', '"5s"', '"51ms"'])
def test_a_refused_token_reports_the_token_not_the_consensus(consensus):
    found = dict(problems(corosync_table('token = "100ms"', f"consensus = {consensus}")))
    assert "corosync.token" in found and "corosync.consensus" not in found
