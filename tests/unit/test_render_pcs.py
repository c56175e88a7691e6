"""hapack render pcs: the script's text, its quoting, what it refuses, and the CIB comparison.

Real pcs runs the script in tests/integration/test_pcs.py. Regenerate the golden
scripts after an intended change with
``HAPACK_REGOLD=1 .venv/bin/pytest tests/unit/test_render_pcs.py`` and review the diff.
"""

import copy
import json
import os
import random
import shlex
from pathlib import Path

import pytest
from lxml import etree

import cib_compare
from hapack import render
from hapack.cib import cib as cibmod
from hapack.cib import pcs
from hapack.stack import loads

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "render"
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
LAB = ROOT / "examples" / "stack.toml"
PREFIX = 'pcs -f "$cib" '


def load(path, text=None):
    return loads(text if text is not None else path.read_text(), str(path), check_agents=False)


def cib_of(path=LAB):
    return cibmod.build(load(path), path.name)


def pcs_lines(script: str) -> list[list[str]]:
    """The words of each pcs command of ``script``, after the fixed prefix."""
    out = []
    for line in script.splitlines():
        if line.startswith("pcs "):
            assert line.startswith(PREFIX), line
            out.append(shlex.split(line[len(PREFIX):]))
    return out


def translate(cib) -> list[list[str]]:
    return [shlex.split(line[len(PREFIX):]) for block in pcs.commands(cib) for line in block
            if line.startswith(PREFIX)]


# -- the script ---------------------------------------------------------------------------

@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_golden(example):
    golden = GOLDEN / example.stem / "stack.pcs"
    data = pcs.render(load(example), example.name)
    if os.environ.get("HAPACK_REGOLD"):
        golden.write_bytes(data)
    assert golden.read_bytes() == data, f"{golden} differs (HAPACK_REGOLD=1 to update)"


def test_same_input_same_bytes():
    assert pcs.render(load(LAB), "stack.toml") == pcs.render(load(LAB), "stack.toml")


def test_every_line_is_a_comment_a_blank_or_one_pcs_command():
    script = pcs.render(load(LAB), "stack.toml").decode()
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines.index("set -eu") < lines.index('cib=${1:?"usage: sh stack.pcs CIB_FILE"}')
    body = lines[lines.index('cib=${1:?"usage: sh stack.pcs CIB_FILE"}') + 1:]
    for line in body:
        assert line == "" or line.startswith("#") or line.startswith(PREFIX), line
    commands = pcs_lines(script)
    assert len(commands) == 21
    assert commands[0][:2] == ["property", "set"]
    assert ["resource", "clone", "partition", "cl-partition", "promotable=true"] == commands[5][:5]
    assert commands[-2] == ["constraint", "order", "promote", "cl-partition", "then", "start",
                            "g-stateful", "kind=Mandatory", "id=ord-promote-then-stateful"]
    assert commands[-1] == ["constraint", "order", "start", "vip", "then", "start",
                            "g-stateful", "kind=Mandatory", "id=ord-vip-then-stateful"]


def test_every_value_of_the_cib_reaches_the_script():
    """Each nvpair, op attribute and constraint value of the CIB is a word of a command."""
    cib = cib_of()
    words = {word for command in translate(cib) for word in command}
    for nv in cib.iter("nvpair"):
        assert f"{nv.get('name')}={nv.get('value')}" in words, nv.get("id")
    for op in cib.iter("op"):
        for name in ("interval", "timeout", "role"):
            if op.get(name):
                assert f"{name}={op.get(name)}" in words, op.get("id")
    for element in cib.find("configuration/resources").iter("primitive", "group", "clone"):
        assert element.get("id") in words


def test_comments_come_before_the_commands_they_explain():
    lines = pcs.render(load(LAB), "stack.toml").decode().splitlines()
    fence = lines.index("# A fence device never runs on the node it fences.")
    assert lines[fence + 1].startswith(PREFIX + "constraint location add loc-fence-node1 ")
    order = lines.index("# ...the stateful layers start only after it is promoted (and stop before "
                        "it is demoted)...")
    assert lines[order + 1].startswith(PREFIX + "constraint order promote cl-partition ")


HOSTILE = ["a b", "it's", 'say "hi"', "$(reboot)", "`id`", "a;b", "x|y&z", "\\n", "*", "~root",
           "#not-a-comment", "--force", "-INFINITY", "op", "meta", "a=b=c", "é ü", "{a,b}", "!"]


@pytest.mark.parametrize("seed", range(25))
def test_values_round_trip_through_the_shell_quoting(seed):
    rng = random.Random(seed)
    value = "".join(rng.choice(HOSTILE + ["/etc/x", "-", "_"]) for _ in range(rng.randint(1, 6)))
    text = LAB.read_text().replace('config = "/etc/hapack/slapd/slapd.conf"',
                                   f"config = {json.dumps(value)}")
    script = pcs.render(load(LAB, text), "stack.toml").decode()
    slapd = next(c for c in pcs_lines(script) if c[:3] == ["resource", "create", "slapd"])
    assert f"config={value}" in slapd
    assert slapd[slapd.index(f"config={value}") + 1] == "op"


# -- what has no pcs command is refused, never dropped -----------------------------------

def _add(path, xml):
    def change(cib):
        cib.find(path).append(etree.fromstring(xml))
    return change


def _set_attr(path, name, value):
    def change(cib):
        cib.find(path).set(name, value)
    return change


UNTRANSLATABLE = {
    "tags section": _add("configuration", "<tags/>"),
    "ticket": _add("configuration/constraints", '<rsc_ticket id="t" rsc="vip" ticket="T"/>'),
    "resource set": _add("configuration/constraints",
                         '<rsc_colocation id="c" score="INFINITY"><resource_set id="s">'
                         '<resource_ref id="vip"/></resource_set></rsc_colocation>'),
    "utilization": _add(".//primitive[@id='vip']", '<utilization id="u"/>'),
    "op with params": _add(".//primitive[@id='vip']/operations/op",
                           '<instance_attributes id="oi"/>'),
    "second params set": _add(".//primitive[@id='vip']", '<instance_attributes id="i2"/>'),
    "rule in a set": _add(".//primitive[@id='vip']/instance_attributes", '<rule id="r"/>'),
    "set score": _set_attr(".//primitive[@id='vip']/instance_attributes", "score", "1"),
    "location role": _set_attr(".//rsc_location[@id='loc-fence-node1']", "role", "Started"),
    "location discovery": _set_attr(".//rsc_location[@id='loc-fence-node1']",
                                    "resource-discovery", "never"),
    "primitive description": _set_attr(".//primitive[@id='vip']", "description", "d"),
    "other property set": _add("configuration/crm_config",
                               '<cluster_property_set id="other"/>'),
    "a node": _add("configuration/nodes", '<node id="1" uname="node1"/>'),
    "clone of two": _add(".//clone[@id='cl-partition']",
                         '<primitive id="p2" class="ocf" provider="hapack" type="vip"/>'),
    "colocation score-attribute": _set_attr(".//rsc_colocation", "score-attribute", "s"),
    "order require-all": _set_attr(".//rsc_order", "require-all", "false"),
    "date expression": _add(".//rsc_location/rule", '<date_expression id="d" operation="gt"/>'),
    "fencing level by attribute only": _add("configuration",
                                            '<fencing-topology><fencing-level id="l" index="1" '
                                            'devices="fence-node1"/></fencing-topology>'),
    "alert select": _add("configuration",
                         '<alerts><alert id="a" path="/bin/true"><select/></alert></alerts>'),
}


@pytest.mark.parametrize("name", UNTRANSLATABLE)
def test_what_pcs_cannot_make_is_an_error(name):
    cib = cib_of()
    UNTRANSLATABLE[name](cib)
    with pytest.raises(pcs.Untranslatable, match="no pcs command for"):
        pcs.commands(cib)


# -- fencing topology, alerts, op defaults -----------------------------------------------

def test_fencing_levels_alerts_and_op_defaults():
    cib = cib_of()
    configuration = cib.find("configuration")
    configuration.append(etree.fromstring(
        '<fencing-topology>'
        '<fencing-level id="l1" index="1" target="node1" devices="fence-node1"/>'
        '<fencing-level id="l2" index="2" target="node1" devices="pdu-a,pdu-b"/>'
        '<fencing-level id="l3" index="1" target-pattern="node[0-9]" devices="fence-node2"/>'
        '<fencing-level id="l4" index="3" target-attribute="rack" target-value="r1" '
        'devices="fence-node2"/></fencing-topology>'))
    configuration.append(etree.fromstring(
        '<alerts><alert id="to-file" path="/usr/share/pacemaker/alerts/alert_file.sh.sample" '
        'description="log it"><meta_attributes id="m"><nvpair id="m1" name="timeout" '
        'value="15s"/></meta_attributes><instance_attributes id="i"><nvpair id="i1" name="a" '
        'value="b c"/></instance_attributes><recipient id="r1" value="/var/log/alerts.log"/>'
        '</alert></alerts>'))
    configuration.append(etree.fromstring(
        '<op_defaults><meta_attributes id="op-options"><nvpair id="o1" name="timeout" '
        'value="30s"/></meta_attributes></op_defaults>'))
    commands = translate(cib)
    assert commands[2] == ["resource", "op", "defaults", "set", "create", "id=op-options",
                           "meta", "timeout=30s"]
    assert commands[-6:] == [
        ["stonith", "level", "add", "1", "node1", "fence-node1", "--force"],
        ["stonith", "level", "add", "2", "node1", "pdu-a", "pdu-b", "--force"],
        ["stonith", "level", "add", "1", "regexp%node[0-9]", "fence-node2", "--force"],
        ["stonith", "level", "add", "3", "attrib%rack=r1", "fence-node2", "--force"],
        ["alert", "create", "path=/usr/share/pacemaker/alerts/alert_file.sh.sample",
         "id=to-file", "description=log it", "options", "a=b c", "meta", "timeout=15s"],
        ["alert", "recipient", "add", "to-file", "value=/var/log/alerts.log", "id=r1"]]


def test_cluster_setup_line_for_corosync_conf():
    assert pcs.setup_argv(load(LAB), "/tmp/c.conf") == [
        "pcs", "cluster", "setup", "hapack-lab",
        "node1", "addr=198.18.240.11", "addr=198.18.241.11",
        "node2", "addr=198.18.240.12", "addr=198.18.241.12",
        "transport", "knet", "crypto", "cipher=aes256", "hash=sha256", "totem", "token=1000",
        "consensus=800", "--no-cluster-uuid", "--corosync_conf", "/tmp/c.conf"]
    script = pcs.render(load(LAB), "stack.toml").decode()
    assert "# " + shlex.join(pcs.setup_argv(load(LAB))) in script.splitlines()


# -- the command line ----------------------------------------------------------------------

def test_cli_renders_pcs(tmp_path, capsysbinary):
    assert render.main(["pcs", str(LAB)]) == 0
    assert capsysbinary.readouterr().out == pcs.render(load(LAB), LAB.name)
    bad = tmp_path / "bad.toml"
    bad.write_text(LAB.read_text().replace('kind = "stateless"', 'kind = "x"', 1))
    assert render.main(["pcs", str(bad), "-o", str(tmp_path / "out.pcs")]) == 2
    assert not (tmp_path / "out.pcs").exists()


# -- the comparison the integration test relies on ---------------------------------------

def _shuffled_with_new_ids(cib, rng):
    """``cib`` as another tool could write it: same meaning, other ids, other order."""
    other = copy.deepcopy(cib)
    for element in other.iter():
        if not isinstance(element.tag, str):
            continue
        if element.get("id") and element.tag not in cib_compare.NAMED:
            element.set("id", f"gen-{rng.randrange(10**6)}")
        unordered = [c for c in element if isinstance(c.tag, str)
                     and not cib_compare._ordered(element.tag, c.tag)]
        if element.tag not in ("group", "resources") and unordered:
            rng.shuffle(unordered)
            for child in unordered:
                element.append(child)
        attrs = list(element.attrib.items())
        rng.shuffle(attrs)
        element.attrib.clear()
        element.attrib.update(dict(attrs))
    for comment in list(other.iter(etree.Comment)):
        comment.getparent().remove(comment)
    other.set("epoch", str(rng.randrange(100)))
    for colocation in other.iter("rsc_colocation"):
        colocation.set("rsc-role", "Started")
    for order in other.iter("rsc_order"):
        order.set("kind", "Mandatory")
    return other


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_compare_ignores_ids_order_comments_and_defaults(example):
    cib = cib_of(example)
    rng = random.Random(example.stem)
    for _ in range(20):
        assert cib_compare.diff(cib, _shuffled_with_new_ids(cib, rng)) == ""


def _mutations(cib):
    """(description, mutated copy) for every change that alters meaning."""
    paths = [element for element in cib.iter() if isinstance(element.tag, str)]
    for index, element in enumerate(paths):
        for name in element.attrib:
            if cib_compare._kept(element.tag, name, element.get(name)):
                other = copy.deepcopy(cib)
                target = [e for e in other.iter() if isinstance(e.tag, str)][index]
                target.set(name, target.get(name) + "x")
                yield f"{element.tag} {name}", other
        if element.getparent() is not None and element.tag not in ("status", "nodes"):
            other = copy.deepcopy(cib)
            target = [e for e in other.iter() if isinstance(e.tag, str)][index]
            target.getparent().remove(target)
            yield f"no {element.tag} {element.get('id')}", other


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_compare_sees_every_change_of_meaning(example):
    cib = cib_of(example)
    count = 0
    for what, other in _mutations(cib):
        assert cib_compare.diff(cib, other) != "", what
        count += 1
    assert count > 200
    swapped = copy.deepcopy(cib)
    group = swapped.find(".//group[@id='g-stateful']")
    group.append(group.find("primitive"))          # the first layer last: another start order
    assert cib_compare.diff(cib, swapped) != ""
    moved = copy.deepcopy(cib)
    resources = moved.find("configuration/resources")
    resources.append(resources.find("primitive"))
    assert cib_compare.diff(cib, moved) != ""
    unrolled = copy.deepcopy(cib)
    unrolled.find(".//rsc_colocation").set("with-rsc-role", "Started")
    assert cib_compare.diff(cib, unrolled) != ""
    added = copy.deepcopy(cib)
    etree.SubElement(added.find(".//primitive[@id='vip']/instance_attributes"), "nvpair",
                     id="x", name="arp_mode", value="reply")
    assert "arp_mode" in cib_compare.diff(cib, added)
