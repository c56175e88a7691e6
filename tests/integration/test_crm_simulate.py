"""The rendered CIB against Pacemaker 2.1.5's own scheduler, offline.

crm_verify checks the configuration; crm_simulate plays failures on it. A
"running" cluster is made from the rendered CIB the way the live one would
be: both nodes up with quorum, the partition agent's promotion score
(``master-partition``) set on both, transitions simulated until nothing is
left to do. Each scenario then injects one fault and the assertions read
crm_simulate's XML output and its transition graph (which action waits for
which), not just its exit code.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from hapack import stack as stackmod
from hapack.cib import cib as cibmod
from hapack.cib import crm as crmmod

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
LAB = ROOT / "examples" / "stack.toml"
PROMOTION_SCORE = "10000"   # what a partition with UpToDate data on both sides advertises

pytestmark = pytest.mark.skipif(shutil.which("crm_simulate") is None,
                                reason="Pacemaker CLI tools are not installed")


# -- helpers: a simulated cluster ---------------------------------------------------

def run(argv, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)


def load(path):
    # The agents' own parameter checks are the unit tests' business (tests/unit/test_stack.py).
    return stackmod.loads(path.read_text(), str(path), check_agents=False)


def render(path=LAB, **vip):
    stack = load(path)
    if vip:
        stack = _with_vip(stack, **vip)
    return stack, cibmod.render(stack, path.name)


def _with_vip(stack, **changes):
    from dataclasses import replace
    return replace(stack, vip=replace(stack.vip, **changes))


class Cluster:
    """A CIB file with a status section, driven through crm_simulate."""

    def __init__(self, tmp_path: Path, cib: bytes):
        self.dir = tmp_path
        self.path = tmp_path / "cib-0.xml"
        self.path.write_bytes(cib)
        self.step = 0

    def _next(self):
        self.step += 1
        return self.dir / f"cib-{self.step}.xml"

    def simulate(self, *events):
        """One transition from the current state with ``events`` injected.

        Returns (result XML element, graph) and moves to the resulting state."""
        out, graph = self._next(), self.dir / f"graph-{self.step}.xml"
        proc = run(["crm_simulate", "-x", str(self.path), "-S", "--output-as=xml",
                    "-O", str(out), "-G", str(graph), *events])
        assert proc.returncode == 0, proc.stderr
        self.path = out
        return etree.fromstring(proc.stdout.encode()), Graph(graph)

    def inject(self, *events):
        """Record ``events`` in the status without running the transition they cause."""
        out = self._next()
        proc = run(["crm_simulate", "-x", str(self.path), "-R", "-Q", "-O", str(out), *events])
        assert proc.returncode == 0, proc.stderr
        self.path = out

    def settle(self, limit=6):
        for _ in range(limit):
            result, _ = self.simulate()
            if not result.findall("actions/*"):
                return result
        raise AssertionError("the cluster did not settle")

    def edit(self, change):
        tree = etree.parse(str(self.path))
        change(tree.getroot())
        out = self._next()
        tree.write(str(out))
        self.path = out

    def set_promotion_scores(self):
        def change(root):
            for state in root.iterfind("status/node_state"):
                node = state.get("id")
                attrs = state.find("transient_attributes")
                if attrs is None:
                    attrs = etree.SubElement(state, "transient_attributes", id=node)
                    etree.SubElement(attrs, "instance_attributes", id=f"status-{node}")
                ia = attrs.find("instance_attributes")
                if ia.find("nvpair[@name='master-partition']") is None:
                    etree.SubElement(ia, "nvpair", id=f"status-{node}-master-partition",
                                     name="master-partition", value=PROMOTION_SCORE)
        self.edit(change)

    def standby(self, node):
        def change(root):
            entry = root.find(f"configuration/nodes/node[@uname='{node}']")
            attrs = etree.SubElement(entry, "instance_attributes", id=f"nodes-{node}")
            etree.SubElement(attrs, "nvpair", id=f"nodes-{node}-standby", name="standby",
                             value="on")
        self.edit(change)


class Graph:
    """A transition graph: which action waits for which."""

    def __init__(self, path: Path):
        root = etree.parse(str(path)).getroot()
        self.attrib = dict(root.attrib)   # the scheduler's instructions to the controller
        self.actions = {}     # id -> (key, node, element)
        self.inputs = {}      # id -> ids it waits for
        for synapse in root.iterfind("synapse"):
            action = synapse.find("action_set/*")
            aid = action.get("id")
            key = action.get("operation_key")
            self.actions[aid] = (key, action.get("on_node"), action)
            self.inputs[aid] = {t.get("id") for t in synapse.iterfind("inputs/trigger/*")}

    def find(self, key, node=None):
        found = [aid for aid, (k, n, _) in self.actions.items()
                 if k == key and (node is None or n == node)]
        assert found, f"no action {key} on {node} in the graph: {sorted(self.keys())}"
        return found[0]

    def keys(self):
        return {(k, n) for k, n, _ in self.actions.values()}

    def has(self, key, node=None):
        return any(k == key and (node is None or n == node) for k, n, _ in self.actions.values())

    def waits_for(self, later, earlier):
        """True if action ``later`` (transitively) waits for ``earlier``."""
        seen, todo = set(), [later]
        while todo:
            for dep in self.inputs.get(todo.pop(), ()):
                if dep == earlier:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return False

    def chain(self, *steps):
        """Each (key, node) step waits for the one before it."""
        ids = [self.find(key, node) for key, node in steps]
        for earlier, later, e_step, l_step in zip(ids, ids[1:], steps, steps[1:]):
            assert self.waits_for(later, earlier), f"{l_step} does not wait for {e_step}"

    def resource_ops(self, node, tasks=("start", "stop", "promote", "demote")):
        """(key) of real resource actions of these tasks on ``node``."""
        return sorted(k for k, n, a in self.actions.values()
                      if a.tag == "rsc_op" and n == node and a.get("operation") in tasks)


def running(tmp_path, cib: bytes) -> Cluster:
    """Both nodes up with quorum, promotion scores set, every transition done."""
    cluster = Cluster(tmp_path, cib)
    cluster.simulate("-q", "1", "-u", "node1", "-u", "node2")
    cluster.set_promotion_scores()
    cluster.settle()
    return cluster


def placement(result):
    """resource id -> (role, node) for the resources active in ``result``'s status."""
    out = {}
    for rsc in result.iterfind("cluster_status//resource"):
        for node in rsc.iterfind("node"):
            out.setdefault(rsc.get("id"), set()).add((rsc.get("role"), node.get("name")))
    return out


def summary(result):
    return [dict(a.attrib) for a in result.findall("actions/*")]


STATEFUL = ("activemq", "postgresql", "slapd")
STATELESS = ("apache", "tomcat")


# -- crm_verify, crmsh, cibadmin, corosync ---------------------------------------------

@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_crm_verify_is_clean(tmp_path, example):
    _, cib = render(example)
    proc = run(["crm_verify", "--xml-pipe", "-V"], input=cib.decode())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    # With quorum (as in a live cluster), even the verbose check has nothing to say.
    quorate = cib.replace(b"<cib ", b'<cib have-quorum="1" ', 1)
    proc = run(["crm_verify", "--xml-pipe", "-VVV"], input=quorate.decode())
    assert proc.returncode == 0
    assert "warning" not in proc.stderr and "error" not in proc.stderr, proc.stderr


@pytest.mark.skipif(shutil.which("crm") is None, reason="crmsh is not installed")
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_crm_script_builds_the_same_cib(tmp_path, example):
    stack = load(example)
    script = tmp_path / "stack.crm"
    script.write_bytes(crmmod.render(stack, example.name))
    target = tmp_path / "cib.xml"
    target.write_text(run(["cibadmin", "--empty"]).stdout)
    # -F: the agents are not installed here, so crmsh finds no meta-data to check against.
    proc = run(["crm", "-F", "configure", "load", "update", str(script)],
               env={"CIB_file": str(target), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr.replace("got no meta-data", "").replace(
        "no such resource agent", "") or _only_metadata_errors(proc.stderr), proc.stderr
    rendered = etree.fromstring(cibmod.render(stack, example.name))
    assert canonical(etree.parse(str(target)).getroot()) == canonical(rendered)


def _only_metadata_errors(stderr):
    return all("meta-data" in line or "no such resource agent" in line
               for line in stderr.splitlines() if "ERROR" in line)


def canonical(cib):
    """The configuration without comments, top-level objects in id order."""
    configuration = cib.find("configuration")

    def norm(element):
        children = [c for c in element if not isinstance(c, etree._Comment)]
        if element.tag in ("resources", "constraints"):
            children.sort(key=lambda c: c.get("id"))
        return (element.tag, tuple(sorted(element.attrib.items())),
                tuple(norm(c) for c in children))
    return {c.tag: norm(c) for c in configuration if not isinstance(c, etree._Comment)}


def test_cibadmin_replace_loads_the_cib(tmp_path):
    _, cib = render()
    target = tmp_path / "cib.xml"
    target.write_text(run(["cibadmin", "--empty"]).stdout)
    rendered = tmp_path / "rendered.xml"
    rendered.write_bytes(cib)
    env = {"CIB_file": str(target), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = run(["cibadmin", "--replace", "--xml-file", str(rendered)], env=env)
    assert proc.returncode == 0, proc.stderr
    # On a running cluster (whose epoch has moved on), replace the configuration section.
    section = tmp_path / "configuration.xml"
    section.write_bytes(etree.tostring(etree.fromstring(cib).find("configuration")))
    proc = run(["cibadmin", "--replace", "--scope", "configuration", "--xml-file", str(section)],
               env=env)
    assert proc.returncode == 0, proc.stderr
    assert canonical(etree.parse(str(target)).getroot()) == canonical(etree.fromstring(cib))


@pytest.mark.skipif(shutil.which("corosync") is None, reason="corosync is not installed")
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_corosync_accepts_the_config(tmp_path, example):
    from hapack.cib import corosync
    stack = load(example)
    text = corosync.render(stack, example.name).decode()
    key = tmp_path / "authkey"
    key.write_bytes(b"k" * 128)
    key.chmod(0o400)
    text = text.replace(f"logfile: {stack.corosync.logfile}", f"logfile: {tmp_path}/c.log")
    text = text.replace("    transport: knet\n", f"    transport: knet\n    keyfile: {key}\n")
    # corosync -t wants this host in the nodelist: the primary's addresses become loopback ones.
    for i, link in enumerate(stack.links):
        text = text.replace(f"ring{link.number}_addr: {stack.primary.address(link.name).ip}\n",
                            f"ring{link.number}_addr: 127.0.0.{i + 1}\n")
    conf = tmp_path / "corosync.conf"
    conf.write_text(text)
    proc = run(["corosync", "-t", "-c", str(conf)])
    assert proc.returncode == 0, (proc.stdout, proc.stderr,
                                  (tmp_path / "c.log").read_text() if (tmp_path / "c.log").exists()
                                  else "")


# -- the patent's failover, as Pacemaker schedules it -----------------------------------

def test_everything_runs_where_the_patent_puts_it(tmp_path):
    cluster = running(tmp_path, render()[1])
    result, _ = cluster.simulate()
    where = placement(result)
    assert where["partition"] == {("Promoted", "node1"), ("Unpromoted", "node2")}
    for name in ("vip", *STATEFUL):
        assert where[name] == {("Started", "node1")}, name
    for name in STATELESS:
        assert where[name] == {("Started", "node1"), ("Started", "node2")}, name
    assert where["fence-node1"] == {("Started", "node2")}
    assert where["fence-node2"] == {("Started", "node1")}


def test_primary_fails_fence_then_vip_while_promoting_then_layers_in_order(tmp_path):
    cluster = running(tmp_path, render()[1])
    result, graph = cluster.simulate("--node-fail", "node1")
    assert {"task": "Fence (off)", "node": "node1",
            "reason": "peer is no longer part of the cluster"} in summary(result)
    graph.chain(("stonith-node1-off", "node1"),
                ("partition_promote_0", "node2"),
                ("activemq_start_0", "node2"),
                ("postgresql_start_0", "node2"),
                ("slapd_start_0", "node2"))
    # the VIP waits for the fence, then starts while the partition's notify and promote
    # round runs; the layers wait for both
    graph.chain(("stonith-node1-off", "node1"), ("vip_start_0", "node2"),
                ("activemq_start_0", "node2"))
    vip, promote = graph.find("vip_start_0", "node2"), graph.find("partition_promote_0", "node2")
    assert not graph.waits_for(vip, promote)
    assert not graph.waits_for(vip, graph.find("partition_pre_notify_promote_0"))
    # the stateless copies on the survivor are left alone
    assert not [k for k in graph.resource_ops("node2") if k.split("_")[0] in STATELESS]
    # fencing the node that holds the stateful side waits priority-fencing-delay
    fence = graph.actions[graph.find("stonith-node1-off")][2]
    assert fence.find("attributes").get("CRM_meta_priority_fencing_delay") == "5"
    assert fence.find("attributes").get("CRM_meta_stonith_action") == "off"
    after = placement(cluster.settle())
    assert after["partition"] == {("Promoted", "node2")}
    for name in ("vip", *STATEFUL):
        assert after[name] == {("Started", "node2")}
    for name in STATELESS:
        assert after[name] == {("Started", "node2")}


def test_secondary_fails_it_is_fenced_and_nothing_else_moves(tmp_path):
    cluster = running(tmp_path, render()[1])
    result, graph = cluster.simulate("--node-fail", "node2")
    assert [a for a in summary(result) if a.get("task", "").startswith("Fence")] == [
        {"task": "Fence (off)", "node": "node2",
         "reason": "peer is no longer part of the cluster"}]
    assert graph.resource_ops("node1") == []
    fence = graph.actions[graph.find("stonith-node2-off")][2]
    assert fence.find("attributes").get("CRM_meta_priority_fencing_delay") == "0"
    after = placement(cluster.settle())
    assert after["partition"] == {("Promoted", "node1")}
    for name in ("vip", *STATEFUL):
        assert after[name] == {("Started", "node1")}


def test_a_stateful_layer_failing_repeatedly_moves_the_stateful_side(tmp_path):
    stack, cib = render()
    cluster = running(tmp_path, cib)
    for _ in range(stack.cluster.migration_threshold - 1):
        cluster.inject("-i", "postgresql_monitor_10000@node1=1")
        result, graph = cluster.simulate()
        assert graph.resource_ops("node2") == []          # recovered in place
        assert graph.has("postgresql_start_0", "node1")
    cluster.inject("-i", "postgresql_monitor_10000@node1=1")
    result, graph = cluster.simulate()
    assert not [a for a in summary(result) if a.get("task", "").startswith("Fence")]
    # stop in reverse on node1, demote there, then promote on node2 and start in order
    graph.chain(("slapd_stop_0", "node1"), ("postgresql_stop_0", "node1"),
                ("activemq_stop_0", "node1"),
                ("partition_demote_0", "node1"), ("partition_promote_0", "node2"),
                ("activemq_start_0", "node2"),
                ("postgresql_start_0", "node2"), ("slapd_start_0", "node2"))
    graph.chain(("activemq_stop_0", "node1"), ("vip_stop_0", "node1"), ("vip_start_0", "node2"),
                ("activemq_start_0", "node2"))
    assert not [k for k in graph.resource_ops("node1") + graph.resource_ops("node2")
                if k.split("_")[0] in STATELESS]
    after = placement(cluster.settle())
    assert after["partition"] == {("Promoted", "node2"), ("Unpromoted", "node1")}


def _monitor_ms(cib: bytes, layer: str) -> int:
    op = etree.fromstring(cib).find(f".//primitive[@id='{layer}']/operations/op[@name='monitor']")
    value = op.get("interval")
    return int(value[:-2]) if value.endswith("ms") else int(value.rstrip("s")) * 1000


@pytest.mark.parametrize("layer", STATEFUL)
@pytest.mark.parametrize("monitors", [1, 2])
def test_a_failed_start_counts_once_towards_the_threshold_like_a_failed_monitor(tmp_path, layer,
                                                                                monitors):
    """A layer killed during its recovery start (the campaign's layer-kill-repeated) is
    retried in place until migration-threshold failures in all, monitor and start
    failures alike, then the stateful side moves; with Pacemaker's default
    start-failure-is-fatal=true one failed start banned it from the node at once, and
    two in a row (one per node) left it stopped everywhere until a cleanup.

    The fail count of a failed start is raised by the controller, by the amount the
    scheduler writes into each transition graph (``failed-start-offset``: "INFINITY"
    under start-failure-is-fatal=true, else "1"); crm_simulate itself always adds 1, so
    the offset is checked in every graph, and the placements follow from it."""
    stack, cib = render()
    cluster = running(tmp_path, cib)
    threshold = stack.cluster.migration_threshold
    monitor = f"{layer}_monitor_{_monitor_ms(cib, layer)}@node1=1"
    for failures in range(1, threshold):
        if failures <= monitors:
            cluster.inject("-i", monitor)
        result, graph = cluster.simulate("-F", f"{layer}_start_0@node1=1")
        assert graph.attrib["failed-start-offset"] == "1"
        assert graph.resource_ops("node2") == [], f"moved after {failures} failures"
        assert graph.has(f"{layer}_start_0", "node1")
    result, graph = cluster.simulate()
    assert graph.has("partition_promote_0", "node2") and graph.has(f"{layer}_start_0", "node2")
    after = placement(cluster.settle())
    assert after[layer] == {("Started", "node2")}
    assert after["partition"] == {("Promoted", "node2"), ("Unpromoted", "node1")}


def test_primary_standby_is_a_clean_switchover(tmp_path):
    cluster = running(tmp_path, render()[1])
    cluster.standby("node1")
    result, graph = cluster.simulate()
    assert not [a for a in summary(result) if a.get("task", "").startswith("Fence")]
    assert not [k for k, _ in graph.keys() if k and k.startswith("stonith")]
    graph.chain(("slapd_stop_0", "node1"), ("partition_demote_0", "node1"),
                ("partition_promote_0", "node2"), ("activemq_start_0", "node2"),
                ("slapd_start_0", "node2"))
    graph.chain(("slapd_stop_0", "node1"), ("vip_stop_0", "node1"), ("vip_start_0", "node2"),
                ("activemq_start_0", "node2"))
    after = placement(cluster.settle())
    assert after["partition"] == {("Promoted", "node2")}
    for name in ("vip", *STATEFUL):
        assert after[name] == {("Started", "node2")}


def test_recovered_primary_does_not_take_the_stack_back(tmp_path):
    cluster = running(tmp_path, render()[1])
    cluster.simulate("--node-fail", "node1")
    cluster.settle()
    cluster.simulate("-u", "node1")
    cluster.set_promotion_scores()
    after = placement(cluster.settle())
    assert after["partition"] == {("Promoted", "node2"), ("Unpromoted", "node1")}
    for name in ("vip", *STATEFUL):
        assert after[name] == {("Started", "node2")}
    for name in STATELESS:
        assert after[name] == {("Started", "node1"), ("Started", "node2")}


def test_vip_start_after_a_layer(tmp_path):
    cluster = running(tmp_path, render(start_after="postgresql")[1])
    _, graph = cluster.simulate("--node-fail", "node1")
    graph.chain(("partition_promote_0", "node2"), ("activemq_start_0", "node2"),
                ("postgresql_start_0", "node2"), ("vip_start_0", "node2"),
                ("slapd_start_0", "node2"))


# -- the orderings every transition keeps, whatever the VIP's place -------------------

def _scenarios(stack):
    threshold = stack.cluster.migration_threshold
    yield "node1 lost", [("--node-fail", "node1")]
    yield "node2 lost", [("--node-fail", "node2")]
    yield "node1 standby", ["standby node1"]
    for layer in ("vip", *STATEFUL):
        yield f"{layer} fails {threshold} times", [
            ("-i", f"{layer}_monitor_10000@node1=1")] * threshold


def _other(node):
    return "node2" if node == "node1" else "node1"


def _check_orderings(graph, layers, vip_alone=False):
    """In one transition graph: nothing that holds the stateful side or the VIP starts on
    a node before the other node's fence, if it is fenced; each stateful layer starts
    after the promotion on its node; the VIP and the partition are never started or
    promoted on a node before they are stopped or demoted on the other one."""
    for aid, (key, node, element) in graph.actions.items():
        if element.tag != "rsc_op" or key is None:
            continue
        name, task = key.rsplit("_", 2)[0], element.get("operation")
        if task not in ("start", "promote") or name not in ("vip", "partition", *layers):
            continue
        other = _other(node)
        if graph.has(f"stonith-{other}-off"):
            assert graph.waits_for(aid, graph.find(f"stonith-{other}-off")), (key, node)
        if name in layers and graph.has("partition_promote_0", node):
            assert graph.waits_for(aid, graph.find("partition_promote_0", node)), (key, node)
        if vip_alone and name == "vip" and graph.has("partition_promote_0", node):
            assert not graph.waits_for(aid, graph.find("partition_promote_0", node)), key
        first = {"vip": "vip_stop_0", "partition": "partition_demote_0"}.get(name)
        if first and (task == "promote" or name == "vip") and graph.has(first, other):
            assert graph.waits_for(aid, graph.find(first, other)), (key, node, first)


@pytest.mark.parametrize("start_after", [None, "postgresql", "slapd"])
def test_no_transition_starts_the_stateful_side_before_the_fence_or_the_vip_twice(
        tmp_path, start_after):
    """Every scenario, every transition until the cluster settles, for the VIP alone
    (first) and in the group: the orderings of :func:`_check_orderings` hold, and the VIP
    alone never waits for the partition's promotion."""
    stack, cib = render(**({"start_after": start_after} if start_after else {}))
    checked = 0
    for name, events in _scenarios(stack):
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        cluster = running(folder, cib)
        for event in events:
            if event == "standby node1":
                cluster.standby("node1")
                continue
            if event[0] == "-i":       # a failed monitor, then the transition it causes
                cluster.inject(*event)
                event = ()
            _, graph = cluster.simulate(*event)
            _check_orderings(graph, STATEFUL, start_after is None)
            checked += 1
        for _ in range(4):
            result, graph = cluster.simulate()
            _check_orderings(graph, STATEFUL, start_after is None)
            if not result.findall("actions/*"):
                break
        where = placement(result)
        promoted = [n for role, n in where.get("partition", ()) if role == "Promoted"]
        assert len(promoted) <= 1, (name, where)
        assert len(where.get("vip", ())) <= 1, (name, where)
        for layer in STATEFUL:
            assert {n for _, n in where.get(layer, ())} <= set(promoted), (name, layer, where)
    assert checked >= 6


def test_requires_quorum_would_start_the_vip_before_the_fence(tmp_path):
    """Why the VIP keeps requires=fencing (docs/demo.md, "The VIP before the fence?"):
    with requires=quorum and no ordering against the stateful group, Pacemaker 2.1.5's
    scheduler starts the VIP on the survivor without waiting for the lost node's fence
    (its stop there becomes a pseudo-action not ordered after the fencing:
    order_stop_vs_fencing), so in a split both nodes would hold it. With the rendered
    CIB it waits for the fence; requires=quorum alone does not change that while the
    group is ordered after the VIP (the VIP's implied stop follows the group's)."""
    _, cib = render()

    def variant(requires, keep_order):
        root = etree.fromstring(cib)
        if requires:
            meta = root.find(".//primitive[@id='vip']/meta_attributes")
            etree.SubElement(meta, "nvpair", id="vip-meta_attributes-requires", name="requires",
                             value=requires)
        if not keep_order:
            order = root.find(".//rsc_order[@id='ord-vip-then-stateful']")
            order.getparent().remove(order)
        return etree.tostring(root)

    def vip_waits_for_the_fence(name, data):
        folder = tmp_path / name
        folder.mkdir()
        _, graph = running(folder, data).simulate("--node-fail", "node1")
        return graph.waits_for(graph.find("vip_start_0", "node2"), graph.find("stonith-node1-off"))

    assert vip_waits_for_the_fence("rendered", cib)
    assert vip_waits_for_the_fence("quorum-ordered", variant("quorum", True))
    assert not vip_waits_for_the_fence("quorum-alone", variant("quorum", False))
    assert not vip_waits_for_the_fence("nothing-alone", variant("nothing", False))
    assert vip_waits_for_the_fence("fencing-alone", variant(None, False))



# -- a degraded partition (no replica): reported, never recovered ----------------------
#
# The result is written into the status as the controller records it: the existing
# lrm_rsc_op keeps its transition key, whose target rc is 8 for the promoted monitor,
# 0 for the unpromoted one and 7 for a probe. (crm_simulate's ``-i`` records every
# injected result against target 0: a promoted monitor's plain 8 then reads as a failure
# too, so it cannot tell how 191 is treated.)

def _monitor_result(node, rc, probe=False):
    """A CIB edit: the partition's monitor on ``node`` returned ``rc`` (``probe``: its
    history is that one probe result, as after a restart of the cluster stack)."""
    def change(root):
        history = root.find(f"status/node_state[@uname='{node}']//lrm_resource[@id='partition']")
        ops = history.findall("lrm_rsc_op")
        op = next(o for o in ops if o.get("operation") == "monitor")
        if probe:
            digest = next(o for o in ops if o.get("interval") == "0").get("op-digest")
            for old in ops:
                history.remove(old)
            uuid = op.get("transition-key").split(":", 3)[3]
            op.attrib.update({"id": "partition_last_0", "operation_key": "partition_monitor_0",
                              "interval": "0", "op-digest": digest,
                              "transition-key": f"1:-1:7:{uuid}"})
            history.append(op)
        key = op.get("transition-key")
        op.attrib.update({"rc-code": str(rc), "transition-magic": f"0:{rc};{key}",
                          "call-id": str(int(op.get("call-id")) + 100),
                          "exit-reason": "r0 runs without its replica: cstate WFConnection, "
                                         "peer disk DUnknown" if rc in (190, 191) else ""})
    return change


def _moves(result, graph):
    fences = [a for a in summary(result) if a.get("task", "").startswith("Fence")]
    return fences + graph.resource_ops("node1") + graph.resource_ops("node2")


@pytest.mark.parametrize("results", [{"node1": 191}, {"node2": 190},
                                     {"node1": 191, "node2": 190}])
def test_a_degraded_partition_keeps_its_roles_and_nothing_moves(tmp_path, results):
    """The partition's monitor says 191 on the promoted node and 190 on the unpromoted
    one while DRBD runs without its replica: Pacemaker 2.1.5 takes them as running in
    that role (no recovery, stop, demote or fence), report after report, and when the
    replica is back (8 and 0 again)."""
    cluster = running(tmp_path, render()[1])
    before = placement(cluster.settle())
    for _ in range(4):   # more reports than migration-threshold failures
        for node, rc in results.items():
            cluster.edit(_monitor_result(node, rc))
        result, graph = cluster.simulate()
        assert _moves(result, graph) == []
        assert placement(result) == before
    assert placement(cluster.settle()) == before
    for node, rc in results.items():
        cluster.edit(_monitor_result(node, {191: 8, 190: 0}[rc]))
    result, graph = cluster.simulate()
    assert _moves(result, graph) == [] and placement(result) == before


@pytest.mark.parametrize("node,rc", [("node1", 1), ("node1", 190), ("node2", 1),
                                     ("node2", 191)])
def test_the_same_edit_with_a_failure_or_the_wrong_role_is_recovered(tmp_path, node, rc):
    """The control: the edit reaches the scheduler. A failure, or a degraded result in the
    other role (190 from the promoted node, 191 from the unpromoted one), is acted on."""
    cluster = running(tmp_path, render()[1])
    cluster.edit(_monitor_result(node, rc))
    result, graph = cluster.simulate()
    assert [k for k in graph.resource_ops(node) if k.startswith("partition")] != []


@pytest.mark.parametrize("codes,moves", [((8, 0), False), ((191, 190), False),
                                         ((191, 0), False), ((8, 190), False),
                                         ((7, 7), True)])
def test_probes_find_a_degraded_partition_in_its_role(tmp_path, codes, moves):
    """After a restart of the cluster stack the probes say 191 (node1) and 190 (node2):
    node1 is taken as promoted, node2 as unpromoted, as with 8 and 0; nothing is started,
    stopped, promoted or demoted. (7, 7), the control: the partition is started again."""
    cluster = running(tmp_path, render()[1])
    before = placement(cluster.settle())
    for node, rc in zip(("node1", "node2"), codes):
        cluster.edit(_monitor_result(node, rc, probe=True))
    result, graph = cluster.simulate()
    assert bool(_moves(result, graph)) is moves
    assert placement(cluster.settle()) == before
