"""The pcs script run by Debian's pcs (0.11.5) against an empty CIB file, offline.

pcs checks every parameter against the agent's meta-data, so it runs in a
private mount namespace where this checkout's agents (a staged 'hapack install')
are the ones at /usr/lib/ocf/resource.d/hapack and /usr/sbin/fence_bmc: the
machine's own install is not touched and not what is checked. The CIB pcs
builds must be crm_verify clean, mean the same as 'hapack render cib'
(tests/cib_compare.py) and plan the same first transition in crm_simulate.
"""

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from lxml import etree

import cib_compare
from hapack.cib import cib as cibmod
from hapack.cib import corosync, pcs
from hapack.stack import loads
from requires import need_binary, need_root

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
LAB = ROOT / "examples" / "stack.toml"
OCF_DIR = "/usr/lib/ocf/resource.d/hapack"
FENCE_BMC = "/usr/sbin/fence_bmc"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env={"PATH": PATH, "LC_ALL": "C.UTF-8"}, **kwargs)


def load(path, text=None):
    return loads(text if text is not None else path.read_text(), str(path), check_agents=False)


@pytest.fixture(scope="module")
def staged(installed):
    """argv -> CompletedProcess, run where the staged agents are the installed ones."""
    need_root()
    need_binary("pcs", "unshare", "crm_verify", "crm_simulate")
    for target in (OCF_DIR, FENCE_BMC):
        assert os.path.exists(target), f"{target} is missing: run './run setup' first"
    binds = [(os.path.join(installed.ra_path, "hapack"), OCF_DIR),
             (installed("fence_bmc"), FENCE_BMC)]
    mounts = "; ".join(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}"
                       for src, dst in binds)

    def in_namespace(argv):
        return run(["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                    f'{mounts}; exec "$@"', "sh", *argv])
    # The namespace really shows the staged wrappers (they name this venv's interpreter).
    proc = in_namespace(["cat", os.path.join(OCF_DIR, "vip")])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == Path(installed("vip")).read_text()
    return in_namespace


def build_with_pcs(staged, tmp_path, script: str) -> bytes:
    """An empty CIB file, the script run on it by pcs; the file afterwards."""
    target = tmp_path / "cib.xml"
    empty = run(["cibadmin", "--empty"])
    assert empty.returncode == 0, empty.stderr
    target.write_text(empty.stdout)
    path = tmp_path / "stack.pcs"
    path.write_text(script)
    proc = staged(["sh", str(path), str(target)])
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Error" not in proc.stderr, proc.stderr
    return target.read_bytes()


def assert_verify_clean(cib: bytes):
    proc = run(["crm_verify", "--xml-pipe", "-V"], input=cib.decode())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def first_transition(tmp_path, cib: bytes, name: str):
    """(operation key, node, keys it waits for) of the cold start with both nodes up."""
    path, graph = tmp_path / f"{name}.xml", tmp_path / f"{name}-graph.xml"
    path.write_bytes(cib)
    proc = run(["crm_simulate", "-x", str(path), "-S", "-q", "1", "-u", "node1", "-u", "node2",
                "-G", str(graph)])
    assert proc.returncode == 0, proc.stderr
    root = etree.parse(str(graph)).getroot()
    keys = {a.get("id"): (a.get("operation_key"), a.get("on_node"))
            for a in root.iterfind("synapse/action_set/*")}
    return {(*keys[s.find("action_set/*").get("id")],
             frozenset(keys[t.get("id")] for t in s.iterfind("inputs/trigger/*")))
            for s in root.iterfind("synapse")}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_pcs_builds_the_rendered_cib(staged, tmp_path, example):
    stack = load(example)
    rendered = cibmod.render(stack, example.name)
    built = build_with_pcs(staged, tmp_path, pcs.render(stack, example.name).decode())
    assert_verify_clean(built)
    assert cib_compare.diff(rendered, built) == ""
    # What the normalisation forgave (pcs's rsc-role="Started", first-action="start"...)
    # changes nothing Pacemaker plans.
    if example.stem == "stack":
        planned = first_transition(tmp_path, rendered, "rendered")
        assert planned == first_transition(tmp_path, built, "built") and len(planned) > 20


def test_hostile_values_arrive_intact(staged, tmp_path):
    value = "/etc/it's a \"$(reboot)\" `id`; x|y & z #no"
    text = LAB.read_text().replace('config = "/etc/hapack/slapd/slapd.conf"',
                                   f"config = '''{value}'''")
    stack = load(LAB, text)
    built = build_with_pcs(staged, tmp_path, pcs.render(stack, "stack.toml").decode())
    assert etree.fromstring(built).find(
        ".//primitive[@id='slapd']/instance_attributes/nvpair[@name='config']").get(
        "value") == value
    assert cib_compare.diff(cibmod.render(stack, "stack.toml"), built) == ""


def _extended(stack) -> etree._Element:
    """The lab's CIB plus what hapack's renderer may grow: a second fencing level through a
    stock fence agent, alerts with a recipient, operation defaults."""
    cib = cibmod.build(stack, "stack.toml")
    configuration = cib.find("configuration")
    configuration.find("resources").insert(2, etree.fromstring(
        '<primitive id="pdu-node1" class="stonith" type="fence_apc">'
        '<instance_attributes id="pdu-ia"><nvpair id="p1" name="ip" value="198.18.242.30"/>'
        '<nvpair id="p2" name="username" value="apc"/>'
        '<nvpair id="p3" name="password_script" value="/etc/hapack/pdu-password"/>'
        '<nvpair id="p4" name="plug" value="1"/>'
        '<nvpair id="p5" name="pcmk_host_list" value="node1"/></instance_attributes>'
        '<operations><op id="p6" name="monitor" interval="60s" timeout="20s"/></operations>'
        '</primitive>'))
    configuration.append(etree.fromstring(
        '<fencing-topology>'
        '<fencing-level id="l1" index="1" target="node1" devices="fence-node1"/>'
        '<fencing-level id="l2" index="2" target="node1" devices="pdu-node1"/>'
        '<fencing-level id="l3" index="1" target="node2" devices="fence-node2"/>'
        '</fencing-topology>'))
    configuration.append(etree.fromstring(
        '<alerts><alert id="to-file" path="/usr/share/pacemaker/alerts/alert_file.sh.sample" '
        'description="every event, to a file"><meta_attributes id="am">'
        '<nvpair id="am1" name="timeout" value="15s"/></meta_attributes>'
        '<recipient id="to-file-log" value="/var/log/pcmk-alerts.log"/></alert></alerts>'))
    configuration.append(etree.fromstring(
        '<op_defaults><meta_attributes id="op-options">'
        '<nvpair id="o1" name="record-pending" value="true"/></meta_attributes></op_defaults>'))
    return cib


def test_fencing_levels_alerts_and_op_defaults(staged, tmp_path):
    stack = load(LAB)
    cib = _extended(stack)
    built = build_with_pcs(staged, tmp_path, pcs.from_cib(cib, stack, "stack.toml"))
    assert_verify_clean(built)
    assert cib_compare.diff(cib, built) == ""
    levels = etree.fromstring(built).findall(".//fencing-level")
    assert {(lv.get("target"), lv.get("index"), lv.get("devices")) for lv in levels} == {
        ("node1", "1", "fence-node1"), ("node1", "2", "pdu-node1"), ("node2", "1", "fence-node2")}


# -- corosync.conf ------------------------------------------------------------------------

def parse_corosync(text: str) -> dict:
    """corosync.conf as {section: [ {key: value or [subsections]} ]}, comments dropped."""
    stack, root = [], {}
    current = root
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            child = {}
            current.setdefault(line[:-1].strip(), []).append(child)
            stack.append(current)
            current = child
        elif line == "}":
            current = stack.pop()
        else:
            key, value = (part.strip() for part in line.split(":", 1))
            current[key] = value
    return root


def _comparable(conf: dict) -> dict:
    """Without logging, and without interface blocks that set nothing but their number."""
    conf = {k: v for k, v in conf.items() if k != "logging"}
    for totem in conf["totem"]:
        kept = [i for i in totem.get("interface", []) if set(i) != {"linknumber"}]
        totem.pop("interface", None)
        if kept:
            totem["interface"] = kept
    return conf


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_pcs_cluster_setup_writes_the_same_corosync_conf(tmp_path, example):
    need_root()
    need_binary("pcs")
    stack = load(example)
    out = tmp_path / "corosync.conf"
    proc = run(pcs.setup_argv(stack, str(out)))
    assert proc.returncode == 0, proc.stderr
    ours = parse_corosync(corosync.render(stack, example.name).decode())
    theirs = parse_corosync(out.read_text())
    if stack.quorum is not None:
        # pcs sets up two_node; 'pcs quorum device add' (the script's last line, on the
        # running cluster) replaces it with the device section that we render
        (quorum,) = ours["quorum"]
        assert "two_node" not in quorum and quorum.pop("device")
        quorum["two_node"] = "1"
    assert _comparable(theirs) == _comparable(ours)
    # The documented difference: pcs writes its own logging section.
    assert theirs["logging"] == [{"to_logfile": "yes", "logfile": "/var/log/corosync/corosync.log",
                                  "to_syslog": "yes", "timestamp": "on"}]
    assert theirs["logging"] != ours["logging"]
