"""hapack render: golden files for the examples, determinism, and the CLI's contract.

Regenerate the golden files after an intended change with
``HAPACK_REGOLD=1 .venv/bin/pytest tests/unit/test_render.py`` and review the diff.
"""

import os
import stat
from pathlib import Path

import pytest
from lxml import etree

from hapack import render
from hapack.cib import cib as cibmod
from hapack.cib import corosync, crm, heartbeat
from hapack.stack import loads

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "render"
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
LAB = ROOT / "examples" / "stack.toml"


def load(path):
    return loads(path.read_text(), str(path), check_agents=False)


def outputs(path):
    stack = load(path)
    out = {"cib.xml": cibmod.render(stack, path.name), "stack.crm": crm.render(stack, path.name),
           "corosync.conf": corosync.render(stack, path.name)}
    for rel, (text, _) in heartbeat.files(stack, path.name).items():
        out["heartbeat/" + rel] = text.encode()
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_golden(example):
    folder = GOLDEN / example.stem
    for name, data in outputs(example).items():
        golden = folder / name
        if os.environ.get("HAPACK_REGOLD"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_bytes(data)
        assert golden.read_bytes() == data, f"{golden} differs (HAPACK_REGOLD=1 to update)"


def test_same_input_same_bytes():
    assert outputs(LAB) == outputs(LAB)


def test_cib_is_well_formed_and_commented():
    root = etree.fromstring(cibmod.render(load(LAB), "stack.toml"))
    assert root.get("validate-with") == cibmod.SCHEMA
    assert root.find("configuration/nodes") is not None and root.find("status") is not None
    assert len(list(root.iter(etree.Comment))) >= 8


def test_topology_constraints():
    root = etree.fromstring(cibmod.render(load(LAB), "stack.toml"))
    constraints = root.find("configuration/constraints")
    bans = {(c.get("rsc"), c.get("node"), c.get("score"))
            for c in constraints.iterfind("rsc_location[@node]")}
    assert bans == {("fence-node1", "node1", "-INFINITY"), ("fence-node2", "node2", "-INFINITY")}
    cols = {c.get("id"): (c.get("rsc"), c.get("with-rsc"), c.get("with-rsc-role"), c.get("score"))
            for c in constraints.iterfind("rsc_colocation")}
    assert cols == {
        "col-vip-with-partition": ("vip", "cl-partition", "Promoted", "INFINITY"),
        "col-stateful-with-partition": ("g-stateful", "cl-partition", "Promoted", "INFINITY")}
    orders = {o.get("id"): (o.get("first"), o.get("first-action"), o.get("then"),
                            o.get("then-action"), o.get("kind"))
              for o in constraints.iterfind("rsc_order")}
    assert orders == {
        "ord-promote-then-stateful": ("cl-partition", "promote", "g-stateful", "start", "Mandatory"),
        "ord-vip-then-stateful": ("vip", "start", "g-stateful", "start", "Mandatory")}
    group = root.find("configuration/resources/group[@id='g-stateful']")
    assert [p.get("id") for p in group.iterfind("primitive")] == ["activemq", "postgresql", "slapd"]
    clone = root.find("configuration/resources/clone[@id='cl-partition']")
    meta = {nv.get("name"): nv.get("value") for nv in clone.iterfind("meta_attributes/nvpair")}
    assert meta["promotable"] == "true" and meta["promoted-max"] == "1" and meta["notify"] == "true"
    props = {nv.get("name"): nv.get("value")
             for nv in root.iterfind("configuration/crm_config//nvpair")}
    assert props == {"stonith-enabled": "true", "stonith-action": "off", "stonith-timeout": "60s",
                     "priority-fencing-delay": "5s", "start-failure-is-fatal": "false"}


def test_crm_quotes_values_it_must():
    assert crm.quote("noatime") == "noatime"
    assert crm.quote("-D SSL") == '"-D SSL"'
    assert crm.quote('a "b" \\c') == '"a \\"b\\" \\\\c"'


# -- the command line -----------------------------------------------------------------

def test_cli_renders_to_stdout_and_to_a_file(tmp_path, capsysbinary):
    assert render.main(["cib", str(LAB)]) == 0
    printed = capsysbinary.readouterr().out
    out = tmp_path / "cib.xml"
    assert render.main(["cib", str(LAB), "-o", str(out)]) == 0
    assert out.read_bytes() == printed == cibmod.render(load(LAB), LAB.name)


def test_cli_bad_stack_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(LAB.read_text().replace('kind = "stateless"', 'kind = "x"', 1))
    out = tmp_path / "out.xml"
    for form in ("cib", "crm", "corosync"):
        assert render.main([form, str(bad), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{bad}: layers[0].kind: 'x' is not one of: stateless, stateful" in err
    assert not out.exists()
    assert render.main(["heartbeat", str(bad), "-o", str(tmp_path / "hb")]) == 2
    assert not (tmp_path / "hb").exists()


def test_cli_usage_errors_exit_2(capsys):
    assert render.main([]) == 2
    assert render.main(["bogus", str(LAB)]) == 2
    assert render.main(["heartbeat", str(LAB)]) == 2
    assert "-o DIR is required" in capsys.readouterr().err


def test_heartbeat_tree_modes_and_kept_authkeys(tmp_path, capsys):
    assert render.main(["heartbeat", str(LAB), "-o", str(tmp_path)]) == 0
    keys = tmp_path / "ha.d" / "authkeys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    lines = [line for line in keys.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == "auth 1" and lines[1].startswith("1 sha1 ") and len(lines[1]) == 71
    first = keys.read_text()
    assert render.main(["heartbeat", str(LAB), "-o", str(tmp_path)]) == 0
    assert keys.read_text() == first                      # re-rendering keeps the key
    instance = tmp_path / "ha.d" / "conf" / "OCF" / "postgresql" / "postgresql"
    assert stat.S_IMODE(instance.stat().st_mode) == 0o600
    assert "OCF_RESKEY_pgdata='/srv/hapack/postgresql'" in instance.read_text()
    haresources = (tmp_path / "ha.d" / "haresources").read_text().splitlines()[-1]
    assert haresources == ("node1 OCF::vip::vip OCF::partition::partition "
                           "OCF::activemq::activemq OCF::postgresql::postgresql OCF::slapd::slapd")


def test_instance_files_quote_for_the_shell():
    assert heartbeat._sh_quote("it's") == "'it'\\''s'"


@pytest.mark.parametrize("form", ["cib", "crm", "corosync", "heartbeat"])
@pytest.mark.parametrize("agent", ["postgress", "ocf:hapack:postgress", "ocf:hapack:.."])
def test_cli_misspelled_agent_exits_2_lists_the_agents_and_renders_nothing(tmp_path, capsys,
                                                                          form, agent):
    from hapack.agents import OCF_AGENTS
    bad = tmp_path / "bad.toml"
    bad.write_text(LAB.read_text().replace('agent = "postgresql"', f'agent = "{agent}"', 1))
    out = tmp_path / "out"
    assert render.main([form, str(bad), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert f"{bad}: layers[3].agent: " in captured.err and captured.out == ""
    if agent != "ocf:hapack:..":
        assert "known: " + ", ".join(OCF_AGENTS) in captured.err
    assert not out.exists()


# -- corosync's token and consensus (issue 19) -------------------------------------------

def totem(text: str) -> dict[str, str]:
    body = text[text.index("totem {"):text.index("\n}", text.index("totem {"))]
    pairs = (line.split(":", 1) for line in body.splitlines()[1:]
             if ":" in line and not line.strip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_renders_its_consensus_under_the_token(example):
    stack = load(example)
    t = totem(corosync.render(stack, example.name).decode())
    assert (int(t["token"]), int(t["consensus"])) == (stack.corosync.token, stack.corosync.consensus)
    assert 50 < int(t["consensus"]) < int(t["token"])   # corosync.conf(5)'s two-node rule


def test_a_stack_without_corosync_table_renders_the_measured_pair():
    text = LAB.read_text()
    start = text.index("[corosync]")
    stack = loads(text[:start] + text[text.index("\n\n", start) + 2:], "x.toml", check_agents=False)
    t = totem(corosync.render(stack, "x.toml").decode())
    assert (t["token"], t["consensus"]) == ("1000", "800")


@pytest.mark.parametrize("token,consensus", [("3s", None), ("200ms", None), ("1s", "1200ms"),
                                             ("500ms", "400ms"), ("10s", "51ms")])
def test_the_stack_files_pair_reaches_corosync_conf_and_pcs(token, consensus):
    from hapack.cib import pcs
    text = LAB.read_text().replace('consensus = "800ms"', "", 1).replace(
        'token = "1s"', f'token = "{token}"' + (f'\nconsensus = "{consensus}"' if consensus else ""),
        1)
    stack = loads(text, "x.toml", check_agents=False)
    t = totem(corosync.render(stack, "x.toml").decode())
    assert int(t["consensus"]) == stack.corosync.consensus
    assert t.keys() >= {"token", "consensus"} and list(t).count("consensus") == 1
    argv = pcs.setup_argv(stack)
    assert argv[argv.index("totem") + 1:argv.index("totem") + 3] == [
        f"token={stack.corosync.token}", f"consensus={stack.corosync.consensus}"]


# -- the VIP's place: alone (first, waits for the fence only) or in the group ----------

def _stack_with(start_after, stateful=True):
    text = LAB.read_text()
    if start_after is not None:
        text = text.replace('# start_after = "slapd"', f'start_after = "{start_after}"')
    return loads(text, "stack.toml", check_agents=False)


def _graph(root):
    """(placed with the promoted partition, ordered after the promotion) per resource id,
    following groups: what Pacemaker derives from the constraints."""
    constraints = root.find("configuration/constraints")
    groups = {g.get("id"): [p.get("id") for p in g.iterfind("primitive")]
              for g in root.iter("group")}
    members = lambda rid: groups.get(rid, [rid])  # noqa: E731
    placed = {m for c in constraints.iterfind("rsc_colocation")
              if c.get("with-rsc") == "cl-partition" and c.get("with-rsc-role") == "Promoted"
              and c.get("score") == "INFINITY" for m in members(c.get("rsc"))}
    after_promote = {m for o in constraints.iterfind("rsc_order")
                     if (o.get("first"), o.get("first-action"), o.get("kind")) ==
                     ("cl-partition", "promote", "Mandatory") for m in members(o.get("then"))}
    return placed, after_promote, groups


@pytest.mark.parametrize("start_after", [None, "activemq", "postgresql", "slapd"])
@pytest.mark.parametrize("form", ["cib", "crm"])
def test_every_stateful_layer_waits_for_the_promotion_and_the_vip_only_when_grouped(
        start_after, form):
    """Whatever the VIP's place, every stateful layer is placed with the promoted partition
    and ordered after its promotion; the VIP is placed with it too; it waits for the
    promotion only when it is in the group (vip.start_after); alone it keeps Pacemaker's
    default requires=fencing (no 'requires' of its own) and the stateful priority."""
    stack = _stack_with(start_after)
    root = cibmod.build(stack, "stack.toml", form)
    placed, after_promote, groups = _graph(root)
    layers = {layer.name for layer in stack.stateful}
    assert layers | {"vip"} <= placed
    assert layers <= after_promote
    assert ("vip" in after_promote) == (start_after is not None)
    assert ("vip" in groups["g-stateful"]) == (start_after is not None)
    assert not [nv for nv in root.iter("nvpair") if nv.get("name") == "requires"]
    if start_after is None:
        vip = root.find("configuration/resources/primitive[@id='vip']")
        assert vip.find("meta_attributes/nvpair[@name='priority']").get("value") == "10"
        order = root.find("configuration/constraints/rsc_order[@id='ord-vip-then-stateful']")
        assert (order.get("first"), order.get("then"), order.get("kind")) == (
            "vip", "g-stateful", "Mandatory")
    assert list(groups["g-stateful"]) == [n for n in stack.stateful_order()
                                          if n != "vip" or start_after is not None]


def test_crm_script_says_the_same_about_the_vip():
    script = crm.render(load(LAB), "stack.toml").decode()
    assert "colocation col-vip-with-partition inf: vip cl-partition:Promoted" in script
    assert "order ord-vip-then-stateful Mandatory: vip:start g-stateful:start" in script
    assert "group g-stateful activemq postgresql slapd" in script
