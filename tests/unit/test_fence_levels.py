"""Fencing levels: [[nodes.fence]] read, checked and rendered as Pacemaker's fencing topology.

A node whose BMC dies with it cannot be fenced through its BMC alone: each node may list
further fence devices (any fence agent, e.g. a PDU's), tried in order after its BMC. The
stack file refuses every spelling of an inline password or of the target, badly formed
agent names and levels out of order, and never echoes a secret; the CIB, the crm script
and the pcs script all carry one device per entry, banned from its node, and the same
levels.
"""

import random
import re
from pathlib import Path

import pytest
from lxml import etree

from hapack.cib import cib as cibmod
from hapack.cib import crm, heartbeat, pcs
from hapack.stack import StackError, loads
from hapack.stack import agentcheck
ROOT = Path(__file__).resolve().parents[2]
LAB_TEXT = (ROOT / "examples" / "stack.toml").read_text()

NODE1_BMC = 'cipher = 3                    # ipmi_sim does not answer "Get Channel Cipher Suites"\n'
SECRET = "Sup3rS3cret-pw"


def edited(old, new, text=LAB_TEXT):
    assert old in text, old
    return text.replace(old, new, 1)


def with_fences(node1: str = "", node2: str = "") -> str:
    """The lab example with ``node1``/``node2`` appended after each node's [nodes.bmc]."""
    text = edited(NODE1_BMC, NODE1_BMC + node1)
    marker = "cipher = 3\n\n# Heartbeat links"
    return edited(marker, "cipher = 3\n" + node2 + "\n# Heartbeat links", text)


PDU = """
[[nodes.fence]]
name = "pdu"
agent = "fence_apc_snmp"
password_file = "/etc/hapack/pdu.password"
[nodes.fence.params]
ip = "198.18.242.5"
plug = "3"
username = "fence"
"""


def load(text, check_agents=False):
    return loads(text, "levels.toml", check_agents=check_agents)


def problems(text, check_agents=False):
    with pytest.raises(StackError) as info:
        load(text, check_agents)
    return info.value


# -- reading -------------------------------------------------------------------------------

def test_a_pdu_is_level_2_after_the_bmc_with_its_password_out_of_the_cib():
    stack = load(with_fences(PDU))
    node1, node2 = stack.nodes
    (pdu,) = node1.fences
    assert (pdu.name, pdu.agent, pdu.level, pdu.spec) == ("pdu", "fence_apc_snmp", 2,
                                                          "stonith:fence_apc_snmp")
    assert pdu.path == "/usr/sbin/fence_apc_snmp"
    assert pdu.agent_params("node1") == {
        "ip": "198.18.242.5", "plug": "3", "username": "fence",
        "password_script": "/bin/cat /etc/hapack/pdu.password", "pcmk_host_list": "node1"}
    assert node1.fence_topology() == ((1, ("fence-node1",)), (2, ("fence-node1-pdu",)))
    assert node2.fences == () and node2.fence_topology() == ((1, ("fence-node2",)),)


def test_levels_default_to_the_next_and_a_shared_level_means_both_devices():
    text = with_fences("""
[[nodes.fence]]
name = "pdu-a"
agent = "fence_apc_snmp"
[[nodes.fence]]
name = "pdu-b"
agent = "fence_apc_snmp"
level = 2
[[nodes.fence]]
agent = "fence_ipmilan"
""")
    node1 = load(text).nodes[0]
    assert [(d.name, d.level) for d in node1.fences] == [("pdu-a", 2), ("pdu-b", 2),
                                                        ("ipmilan", 3)]
    assert node1.fence_topology() == ((1, ("fence-node1",)),
                                      (2, ("fence-node1-pdu-a", "fence-node1-pdu-b")),
                                      (3, ("fence-node1-ipmilan",)))


def test_a_password_file_with_spaces_reaches_the_script_quoted():
    text = with_fences(PDU.replace("/etc/hapack/pdu.password", "/etc/hapack/my pdu's.pw"))
    params = load(text).nodes[0].fences[0].agent_params("node1")
    assert params["password_script"] == "/bin/cat '/etc/hapack/my pdu'\"'\"'s.pw'"


def test_fence_bmc_as_a_further_device_gets_its_password_file_and_hostname():
    text = with_fences("""
[[nodes.fence]]
name = "bmc2"
agent = "fence_bmc"
password_file = "/etc/hapack/bmc2.pw"
[nodes.fence.params]
ip = "198.18.243.21"
username = "admin"
cipher = 3
""")
    device = load(text, check_agents=True).nodes[0].fences[0]
    assert device.agent_params("node1") == {
        "ip": "198.18.243.21", "username": "admin", "cipher": "3", "hostname": "node1",
        "password_file": "/etc/hapack/bmc2.pw", "pcmk_host_list": "node1"}
    bad = problems(edited('[nodes.fence.params]\n', '[nodes.fence.params]\nbogus = 1\n', text),
                   check_agents=True)
    assert bad.key == "nodes[0].fence[0].params.bogus"


# -- refusals, over many spellings ------------------------------------------------------------

PASSWORD_NAMES = ("password", "passwd", "snmp_priv_passwd", "PASSWORD", "Password",
                  "passwd_x", "my_password", "snmp-priv-passwd", "Passwd")
TARGET_NAMES = ("hostname", "nodename", "action", "pcmk_host_list", "pcmk_host_map",
                "pcmk_host_check", "HOSTNAME", "pcmk-host-list", "Action")


@pytest.mark.parametrize("name", PASSWORD_NAMES)
@pytest.mark.parametrize("value", [SECRET, "x'y", "12345678", SECRET + " trailing"])
def test_an_inline_password_is_refused_and_never_echoed(name, value):
    text = with_fences(PDU + f'{name} = "{value}"\n')
    error = problems(text)
    assert any(k == f"nodes[0].fence[0].params.{name}" and "password_file" in m
               for k, m in error.problems), error.problems
    assert value not in str(error)


def test_password_script_is_allowed_alone_but_not_next_to_a_password_file():
    script = PDU.replace('password_file = "/etc/hapack/pdu.password"\n', "") \
        + 'password_script = "/usr/local/bin/pdu-password"\n'
    assert load(with_fences(script)).nodes[0].fences[0].params["password_script"] \
        == "/usr/local/bin/pdu-password"
    error = problems(with_fences(PDU + 'password_script = "/usr/local/bin/pdu-password"\n'))
    assert error.key == "nodes[0].fence[0].params.password_script"
    assert "second source of the password" in error.message


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_the_target_and_the_action_are_hapacks_to_set(name):
    error = problems(with_fences(PDU + f'{name} = "node2"\n'))
    assert error.key == f"nodes[0].fence[0].params.{name}"
    assert "names the node" in error.message


@pytest.mark.parametrize("agent", [
    "ipmilan", "fence_", "Fence_ipmilan", "fence_IPMI", "fence_ipmi lan", "fence_../x",
    "fence_a/b", "/usr/sbin/fence_ipmilan", "stonith:fence_ipmilan", "fence-ipmilan",
    "fence_ipmilan\n", "fence_" + "x" * 80, "", "fence_x;rm"])
def test_an_agent_must_be_a_plain_fence_agent_name(agent):
    text = with_fences(f'\n[[nodes.fence]]\nagent = {agent!r}\n'.replace("'", '"')
                       if "\n" not in agent else '\n[[nodes.fence]]\nagent = "fence_x\\n"\n')
    error = problems(text)
    assert error.key in ("nodes[0].fence[0].agent", "nodes[0].fence[0].name")


@pytest.mark.parametrize("value", ['"/etc/pdu\\npw"', '"relative/pw"', "3", '"/etc/\\u0000"'])
def test_a_bad_password_file_is_refused_without_quoting_it(value):
    text = with_fences(PDU.replace('"/etc/hapack/pdu.password"', value))
    error = problems(text)
    assert error.key == "nodes[0].fence[0].password_file"
    assert "relative/pw" not in str(error) and "/etc/pdu" not in str(error)


def test_a_value_with_a_control_character_is_refused():
    error = problems(with_fences(PDU + 'community = "pub\\nlic"\n'))
    assert error.key == "nodes[0].fence[0].params.community"
    assert "pub" not in error.message


@pytest.mark.parametrize("levels, ok", [
    ((2,), True), ((2, 2), True), ((2, 3), True), ((2, 2, 3, 3, 4), True), ((None, 3), True),
    ((3,), False), ((1,), False), ((0,), False), ((2, 4), False), ((3, 2), False),
    ((2, 3, 2), False), ((10,), False), ((2, 3, 4, 5, 6, 7, 8, 9, 10), False),
])
def test_levels_come_in_order_from_2_to_9(levels, ok):
    devices = "".join(f'\n[[nodes.fence]]\nname = "d{i}"\nagent = "fence_ipmilan"\n'
                      + (f"level = {level}\n" if level is not None else "")
                      for i, level in enumerate(levels))
    text = with_fences(devices)
    if ok:
        got = [d.level for d in load(text).nodes[0].fences]
        assert got == sorted(got) and got[0] == 2
    else:
        assert "level" in problems(text).key


def test_level_must_be_an_integer():
    error = problems(with_fences('\n[[nodes.fence]]\nagent = "fence_ipmilan"\nlevel = "2"\n'))
    assert error.key == "nodes[0].fence[0].level"


def test_two_devices_of_a_node_need_their_own_names():
    text = with_fences('\n[[nodes.fence]]\nagent = "fence_ipmilan"\n' * 2)
    error = problems(text)
    assert error.key == "nodes[0].fence[1].name" and "ipmilan" in error.message


def test_device_ids_never_collide_across_nodes():
    text = with_fences('\n[[nodes.fence]]\nname = "b"\nagent = "fence_ipmilan"\n')
    text = text.replace('name = "node2"', 'name = "node1-b"') \
        .replace("node2 = ", "node1-b = ").replace("node2.password", "x.password")
    error = problems(text)
    assert "fence-node1-b" in error.message


def test_fence_must_be_an_array_of_tables_and_unknown_keys_are_named():
    text = edited('name = "node1"\n', 'name = "node1"\nfence = "fence_ipmilan"\n')
    assert problems(text).key == "nodes[0].fence"
    error = problems(with_fences('\n[[nodes.fence]]\nagent = "fence_ipmilan"\ntimeout = "5s"\n'))
    assert error.key == "nodes[0].fence[0].timeout"
    assert problems(with_fences('\n[[nodes.fence]]\nname = "x"\n')).key == "nodes[0].fence[0].agent"


def test_a_misspelled_agent_names_the_installed_ones(tmp_path, monkeypatch):
    for name in ("fence_ipmilan", "fence_ipmilanplus", "fence_apc_snmp"):
        path = tmp_path / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    (tmp_path / "fence_notexec").write_text("")
    monkeypatch.setattr(agentcheck, "FENCE_AGENT_DIR", str(tmp_path))
    text = with_fences('\n[[nodes.fence]]\nagent = "fence_ipmilam"\n')
    error = problems(text, check_agents=True)
    assert error.key == "nodes[0].fence[0].agent"
    assert "did you mean fence_ipmilan" in error.message
    error = problems(with_fences('\n[[nodes.fence]]\nagent = "fence_zzz"\n'), check_agents=True)
    assert "installed: fence_apc_snmp, fence_ipmilan, fence_ipmilanplus" in error.message
    assert load(with_fences('\n[[nodes.fence]]\nagent = "fence_apc_snmp"\n'), True)
    # rendering away from the cluster (no fence agent installed here): not checked
    monkeypatch.setattr(agentcheck, "FENCE_AGENT_DIR", str(tmp_path / "none"))
    assert load(text, check_agents=True)


def test_random_fence_tables_never_leak_a_secret_or_half_load():
    """Seeded random [[nodes.fence]] tables: each loads into exactly what it says, or is
    refused as a whole; no refusal ever quotes the secret."""
    rng = random.Random(18)
    names = ["ip", "plug", "username", "password", "passwd", "community", "hostname",
             "action", "pcmk_host_list", "pcmk_delay_base", "password_script", "ipport"]
    for _ in range(300):
        chosen = rng.sample(names, rng.randint(0, 4))
        params = "".join(f'{n} = "{SECRET}"\n' for n in chosen)
        has_file = rng.random() < 0.5
        device = ('\n[[nodes.fence]]\nagent = "fence_ipmilan"\n'
                  + ('password_file = "/etc/pw"\n' if has_file else "")
                  + "[nodes.fence.params]\n" + params)
        text = with_fences(device)
        refused = {"password", "passwd", "hostname", "action", "pcmk_host_list"}
        bad = bool(refused & set(chosen)) or (has_file and "password_script" in chosen)
        try:
            stack = load(text)
        except StackError as exc:
            assert bad, (chosen, has_file, exc.problems)
            assert SECRET not in str(exc)
            continue
        assert not bad, chosen
        out = stack.nodes[0].fences[0].agent_params("node1")
        assert out["pcmk_host_list"] == "node1"
        assert all(out[n] == SECRET for n in chosen)
        cib = cibmod.render(stack, "s.toml").decode()
        assert cib.count('<fencing-level') == 2


# -- rendering --------------------------------------------------------------------------------

def rendered(text):
    stack = load(text)
    return stack, etree.fromstring(cibmod.render(stack, "levels.toml"))


def test_the_cib_has_one_banned_primitive_per_device_and_the_levels():
    stack, cib = rendered(with_fences(PDU, PDU.replace('"3"', '"4"')))
    pdu = cib.find(".//primitive[@id='fence-node1-pdu']")
    assert (pdu.get("class"), pdu.get("type")) == ("stonith", "fence_apc_snmp")
    pairs = {nv.get("name"): nv.get("value") for nv in pdu.iterfind(".//nvpair")}
    assert pairs["password_script"] == "/bin/cat /etc/hapack/pdu.password"
    assert "password" not in pairs and pairs["pcmk_host_list"] == "node1"
    bans = {(c.get("rsc"), c.get("node"), c.get("score"))
            for c in cib.iterfind(".//rsc_location[@node]")}
    assert bans == {("fence-node1", "node1", "-INFINITY"), ("fence-node1-pdu", "node1", "-INFINITY"),
                    ("fence-node2", "node2", "-INFINITY"), ("fence-node2-pdu", "node2", "-INFINITY")}
    levels = [(lv.get("target"), lv.get("index"), lv.get("devices"), lv.get("id"))
              for lv in cib.iterfind(".//fencing-topology/fencing-level")]
    assert levels == [("node1", "1", "fence-node1", "fencing"),
                      ("node1", "2", "fence-node1-pdu", "fencing-0"),
                      ("node2", "1", "fence-node2", "fencing-1"),
                      ("node2", "2", "fence-node2-pdu", "fencing-2")]


def test_without_further_devices_there_is_no_topology():
    _, cib = rendered(LAB_TEXT)
    assert cib.find(".//fencing-topology") is None


def test_a_shared_level_lists_both_devices_in_every_form():
    text = with_fences(PDU + PDU.replace('name = "pdu"', 'name = "pdu-b"\nlevel = 2'))
    stack, cib = rendered(text)
    level = cib.find(".//fencing-level[@index='2']")
    assert level.get("devices") == "fence-node1-pdu,fence-node1-pdu-b"
    script = crm.render(stack, "levels.toml").decode()
    assert re.search(r"fencing_topology \\\n\tnode1: fence-node1 fence-node1-pdu,fence-node1-pdu-b\n",
                     script), script
    lines = pcs.render(stack, "levels.toml").decode().splitlines()
    assert "pcs -f \"$cib\" stonith level add 2 node1 fence-node1-pdu fence-node1-pdu-b --force" in lines
    assert "pcs -f \"$cib\" stonith create fence-node1-pdu-b fence_apc_snmp ip=198.18.242.5 plug=3 " \
        "username=fence 'password_script=/bin/cat /etc/hapack/pdu.password' " \
        "pcmk_host_list=node1 op monitor interval=60s timeout=20s" in lines


def test_heartbeat_says_the_further_levels_are_not_used():
    stack = load(with_fences(PDU))
    text = heartbeat.ha_cf(stack, "levels.toml")
    assert "not used by Heartbeat (cluster-glue runs no fence-agents): fence-node1-pdu." in text
