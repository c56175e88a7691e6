"""The stack as a Pacemaker CIB, built with lxml.

Read top to bottom, this module is the configuration it writes:

    crm_config    stonith-enabled, stonith-action=off, stonith-timeout, start-failure-is-fatal,
                  priority-fencing-delay (none with a quorum device)
    rsc_defaults  resource-stickiness, migration-threshold, failure-timeout
    resources     fence-<node>     stonith:fence_bmc, one per node
                  fence-<node>-<name>  a further device per [[nodes.fence]] (any fence agent)
                  cl-partition     promotable clone of ocf:hapack:partition
                  vip              ocf:hapack:vip on its own (first in the start order), or
                                   in g-stateful after the layer vip.start_after names
                  g-stateful       group: the stateful layers, in start order
                  cl-stateless     clone of group g-stateless: the stateless layers
    constraints   loc-fence-<node>[-<name>]      -INFINITY: a device never runs on its own target
                  loc-partition-prefers-<node>   Promoted role, 50 on the primary
                  col-vip-with-partition         vip with cl-partition:Promoted, INFINITY
                  col-stateful-with-partition    g-stateful with cl-partition:Promoted, INFINITY
                  ord-promote-then-stateful      cl-partition:promote then g-stateful:start
                  ord-vip-then-stateful          vip:start then g-stateful:start
    fencing-topology  per node with [[nodes.fence]]: level 1 its BMC, then its devices
    alerts        hapack          /usr/sbin/hapack-alert, one recipient per [[alerts.recipients]]
                                  (only with an [alerts] table)

The ids are the ones crmsh gives the same objects (``<rsc>-instance_attributes-
<name>``, ``<rsc>-<op>-<interval>``, ...), so ``hapack render crm`` loaded with
``crm configure load update`` produces this very CIB. Comments explain each
choice; Pacemaker keeps XML comments in the CIB.
"""

from __future__ import annotations

from lxml import etree

from hapack.stack import (ALERT_AGENT, ALERT_ID, FENCE_AGENT, FENCE_OPS, PRIMARY_PREFERENCE,
                          STATEFUL_PRIORITY, Ops, Stack, fence_device_id, format_duration)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxml.etree import _Comment, _Element

SCHEMA = "pacemaker-3.9"   # Pacemaker 2.1.5's newest; the Promoted/Unpromoted role names need 3.7
# Pacemaker 2.1.5's feature set, as 'cibadmin --empty' writes it. The cluster keeps it up to
# date; offline tools (crm_verify, crm_simulate) need it to read fail counts per operation.
FEATURE_SET = "3.16.1"

# Ids of the objects hapack makes itself (a layer is named after itself).
PARTITION = "partition"
PARTITION_CLONE = "cl-partition"
STATEFUL_GROUP = "g-stateful"
STATELESS_GROUP = "g-stateless"
STATELESS_CLONE = "cl-stateless"
VIP = "vip"


def fence_id(node: str) -> str:
    return fence_device_id(node)


# -- the comments written into the CIB (and, as # lines, into the crm script) --------

HEADER = """\
Rendered by 'hapack render {form}' from {source} (cluster {cluster}).
Edit the stack file and render again rather than editing this configuration:
'hapack render {other}' gives the same configuration as {other_text}.
Layout (US 7,246,256): the stateless layers run hot on both nodes; the VIP and
the stateful layers run only where the replicated partition is promoted and
mounted; a failed node is powered off through its BMC before its data is taken."""

CRM_CONFIG = """\
Fencing is what makes the takeover safe: the survivor powers the failed node
off through its BMC before it promotes the partition. stonith-action=off, not
reboot: a fenced node stays down until someone looks at it (no fence loop).
start-failure-is-fatal=false: a failed start counts as one failure towards
migration-threshold, as a failed monitor does (and as hamon counts it), instead of
banning the resource from the node at once; two starts killed in a row would
otherwise leave a layer stopped on both nodes until a cleanup.{delay}"""

DELAY_ON = """
priority-fencing-delay={delay}: in a split brain both nodes try to fence each other;
fencing of the node that holds the stateful side (the higher total resource
priority) waits this long, so the active node wins the race. It must be longer
than a power-off through the BMC takes."""

DELAY_OFF = """
priority-fencing-delay is off: set a fence_delay on the primary in the stack file,
or both nodes may power each other off in a split brain."""

DELAY_QUORUM = """
No fencing delay: the quorum device settles a split (corosync-qnetd on {host},
algorithm {algorithm}). The node that does not get its vote loses quorum, stops its
resources and fences no one, so a dead node is fenced at once."""

RSC_DEFAULTS = """\
resource-stickiness={stickiness}: larger than the primary's preference ({preference}), so a
recovered node does not take the stack back. migration-threshold={threshold}: after that
many failures on a node a resource leaves it; for a stateful layer the whole stateful
side moves, the partition included.{expiry}"""

FENCE = """\
{device} powers {node} off through {node}'s BMC ({driver} {address}). It is banned
from {node} itself: the peer holds the means to cut {node}'s power.{delay}"""

FENCE_LEVEL = """\
{device} (stonith:{agent}) is fencing level {level} for {node}:
a further way to cut its power, tried only when the levels before it fail
(a BMC can die with its node). It is banned from {node} too."""

TOPOLOGY_TEXT = """\
The order in which the devices that fence a node are tried: level 1, its BMC, first;
the next level only when a device of the one before fails. A level succeeds when
every one of its devices does."""

FENCE_DELAY = """
pcmk_delay_base={delay}: fencing of {node} waits this long (static fence-race guard)."""

PARTITION_TEXT = """\
The replicated partition ({backend} {device} on {directory}) as a promotable clone:
started (unpromoted, replicating) on both nodes, promoted and mounted on one.
notify=true: the agent is told about its peer's promotions and demotions.
priority={priority}: with the stateful group, this weighs in priority-fencing-delay."""

STATEFUL_TEXT = """\
The stateful side, in start order: {order}. It stops in reverse.
Colocated with the promoted partition and started after the promotion, so on a
failover: fence, promote the partition on the survivor, then {first} first.{vip}"""

VIP_TEXT = """\
The VIP, first in the start order (the patent's: clients are redirected at once
and the layers come up behind it). On its own, not in the group: it is placed
with the promoted partition but not ordered after the promotion, so on a failover
it starts as soon as the fence is confirmed, while the partition's notify and
promote round runs (it needs no data; the layers still wait for the promotion).
It keeps Pacemaker's default requires=fencing: it never starts before the lost
node's power-off is confirmed. priority={priority}: as the stateful group."""

VIP_FIRST = """
The VIP (above) is up before them: it waits only for the fence."""

VIP_AFTER = """
The VIP starts after {layer} (stack file vip.start_after), so clients reach the
stateful side only once the layers before it answer."""

STATELESS_TEXT = """\
The stateless layers ({names}), in order, as a clone: one copy hot on each node.
They are not ordered against the stateful side, so a failover leaves them running."""

FENCE_LOCATION = "A fence device never runs on the node it fences."

PREFERENCE_TEXT = """\
The primary, {node}, is preferred for the promoted partition, and so for the
stateful side, on a cold start. The score ({preference}) is below the stickiness, so
after a failover the stack stays where it is."""

COLOCATION_TEXT = """\
The VIP and the stateful layers run only where the partition is promoted..."""

ORDER_TEXT = """\
...the stateful layers start only after it is promoted (and stop before it is demoted)..."""

VIP_ORDER_TEXT = """\
...and after the VIP (they stop before it). The VIP itself waits only for the fence."""

ALERTS_TEXT = """\
Alerts (stack file [alerts]): Pacemaker runs {agent} once per recipient,
as hacluster, for these events: {kinds}.
hapack_deadline={deadline}s keeps every delivery (webhook retries included) below
the alert timeout ({timeout})."""

RECIPIENT_TEXT = {
    "webhook": "A JSON POST to this URL ({retries} retries, {timeout}s per attempt).",
    "syslog": "One line to the syslog socket {socket}, facility {facility}.",
    "command": "This command, with the event in CRM_alert_* variables (timeout {timeout}s).",
}


# -- building ----------------------------------------------------------------------------

def _comment(parent, text: str) -> None:
    parent.append(etree.Comment(_comment_text(text)))


def _comment_text(text: str) -> str:
    body = text.replace("--", "- -").strip("\n")
    return "\n" + "\n".join(("  " + line).rstrip() for line in body.splitlines()) + "\n"


def _nvpairs(parent, tag: str, set_id: str, values: dict) -> None:
    if not values:
        return
    group = etree.SubElement(parent, tag, id=set_id)
    for name, value in values.items():
        etree.SubElement(group, "nvpair", name=name, value=str(value), id=f"{set_id}-{name}")


def _op(parent, rid: str, name: str, interval_ms: int | None, timeout_ms: int | None,
        role: str | None = None) -> None:
    interval = format_duration(interval_ms or 0)  # monitors: set from the agents' actions
    attrs = {"name": name, "interval": interval}
    if timeout_ms is not None:
        attrs["timeout"] = format_duration(timeout_ms)
    if role is not None:
        attrs["role"] = role
    attrs["id"] = f"{rid}-{name}-{interval}"
    etree.SubElement(parent, "op", attrs)


def _operations(rid: str, ops: Ops, promotable: bool = False):
    element = etree.Element("operations")
    if ops.start_timeout is not None:
        _op(element, rid, "start", 0, ops.start_timeout)
    if ops.stop_timeout is not None:
        _op(element, rid, "stop", 0, ops.stop_timeout)
    if promotable:
        _op(element, rid, "promote", 0, ops.promote_timeout)
        _op(element, rid, "demote", 0, ops.demote_timeout)
        _op(element, rid, "notify", 0, ops.notify_timeout)
        _op(element, rid, "monitor", ops.monitor_interval, ops.monitor_timeout, "Unpromoted")
        _op(element, rid, "monitor", ops.promoted_monitor_interval, ops.monitor_timeout, "Promoted")
    else:
        _op(element, rid, "monitor", ops.monitor_interval, ops.monitor_timeout)
    return element


def primitive(rid: str, agent: str, params: dict, ops: Ops, *,
              promotable: bool = False) -> _Element:
    """A <primitive> for ``agent`` ("ocf:provider:type" or "stonith:type")."""
    parts = agent.split(":")
    attrs = {"id": rid, "class": parts[0]}
    if parts[0] == "ocf":
        attrs["provider"] = parts[1]
    attrs["type"] = parts[-1]
    element = etree.Element("primitive", attrs)
    _nvpairs(element, "instance_attributes", f"{rid}-instance_attributes", params)
    element.append(_operations(rid, ops, promotable))
    return element


_FORMS = {"cib": ("crm", "a crm shell script"), "crm": ("cib", "a CIB (XML)")}


def build(stack: Stack, source: str, form: str = "cib") -> etree._Element:
    """The whole <cib> for ``stack``; ``source`` names the stack file in the header,
    ``form`` the output it is rendered for (cib or crm)."""
    cib = etree.Element("cib", {"crm_feature_set": FEATURE_SET, "validate-with": SCHEMA,
                                "admin_epoch": "0", "epoch": "1", "num_updates": "0"})
    configuration = etree.SubElement(cib, "configuration")
    other, other_text = _FORMS[form]
    _comment(configuration, HEADER.format(form=form, source=source, cluster=stack.cluster.name,
                                          other=other, other_text=other_text))
    configuration.append(_crm_config(stack))
    # Filled in by the cluster as the nodes join; their names must be corosync's.
    etree.SubElement(configuration, "nodes")
    configuration.append(_resources(stack))
    configuration.append(_constraints(stack))
    if any(node.fences for node in stack.nodes):
        configuration.append(_fencing_topology(stack))
    configuration.append(_rsc_defaults(stack))
    if stack.alerts is not None:
        configuration.append(_alerts(stack))
    etree.SubElement(cib, "status")
    return cib


def _crm_config(stack: Stack):
    fencing = stack.fencing
    element = etree.Element("crm_config")
    if stack.quorum is not None:
        delay = DELAY_QUORUM.format(host=stack.quorum.host, algorithm=stack.quorum.algorithm)
    elif fencing.priority_fencing_delay:
        delay = DELAY_ON.format(delay=format_duration(fencing.priority_fencing_delay))
    else:
        delay = DELAY_OFF
    _comment(element, CRM_CONFIG.format(delay=delay))
    options = {"stonith-enabled": "true", "stonith-action": fencing.action,
               "stonith-timeout": format_duration(fencing.timeout),
               "start-failure-is-fatal": "false"}
    if fencing.priority_fencing_delay:
        options["priority-fencing-delay"] = format_duration(fencing.priority_fencing_delay)
    _nvpairs(element, "cluster_property_set", "cib-bootstrap-options", options)
    return element


def _rsc_defaults(stack: Stack):
    cluster = stack.cluster
    element = etree.Element("rsc_defaults")
    expiry = (f"\nfailure-timeout={format_duration(cluster.failure_timeout)}: older failures are "
              "forgotten." if cluster.failure_timeout else
              "\nFailures never expire: clear them with crm_resource --cleanup.")
    _comment(element, RSC_DEFAULTS.format(stickiness=cluster.stickiness,
                                          preference=PRIMARY_PREFERENCE,
                                          threshold=cluster.migration_threshold, expiry=expiry))
    defaults: dict[str, int | str] = {"resource-stickiness": cluster.stickiness,
                "migration-threshold": cluster.migration_threshold}
    if cluster.failure_timeout:
        defaults["failure-timeout"] = format_duration(cluster.failure_timeout)
    _nvpairs(element, "meta_attributes", "rsc-options", defaults)
    return element


def _resources(stack: Stack):
    resources = etree.Element("resources")
    fence_ops = Ops(**FENCE_OPS)
    for node in stack.nodes:
        device = fence_id(node.name)
        delay = (FENCE_DELAY.format(delay=format_duration(node.fence_delay), node=node.name)
                 if node.fence_delay else "")
        _comment(resources, FENCE.format(device=device, node=node.name, driver=node.bmc.driver,
                                         address=node.bmc.address, delay=delay))
        resources.append(primitive(device, FENCE_AGENT,
                                   node.bmc.agent_params(node.name, node.fence_delay), fence_ops))
        for further in node.fences:
            _comment(resources, FENCE_LEVEL.format(device=further.device_id(node.name),
                                                   agent=further.agent, level=further.level,
                                                   node=node.name))
            resources.append(primitive(further.device_id(node.name), further.spec,
                                       further.agent_params(node.name), fence_ops))

    part = stack.partition
    _comment(resources, PARTITION_TEXT.format(backend=part.backend, device=part.device,
                                              directory=part.directory,
                                              priority=STATEFUL_PRIORITY))
    clone = etree.SubElement(resources, "clone", id=PARTITION_CLONE)
    _nvpairs(clone, "meta_attributes", f"{PARTITION_CLONE}-meta_attributes", {
        "promotable": "true", "promoted-max": 1, "promoted-node-max": 1, "clone-max": 2,
        "clone-node-max": 1, "notify": "true", "priority": STATEFUL_PRIORITY})
    clone.append(primitive(PARTITION, part.agent, part.agent_params(), part.ops, promotable=True))

    resources.extend(_stateful(stack))
    if stack.stateless:
        _comment(resources, STATELESS_TEXT.format(
            names=", ".join(layer.name for layer in stack.stateless)))
        clone = etree.SubElement(resources, "clone", id=STATELESS_CLONE)
        group = etree.SubElement(clone, "group", id=STATELESS_GROUP)
        for layer in stack.stateless:
            group.append(primitive(layer.name, layer.agent, layer.agent_params(), layer.ops))
    return resources


def vip_alone(stack: Stack) -> bool:
    """The VIP is a primitive of its own (first in the start order), not a group member."""
    return stack.vip.start_after is None


def _group_members(stack: Stack) -> tuple[str, ...]:
    order = stack.stateful_order()
    return order[1:] if vip_alone(stack) else order


def _stateful(stack: Stack) -> list:
    """The VIP (alone, when it starts first) and the group of the stateful side."""
    out: list = []
    if vip_alone(stack):
        out.append(etree.Comment(_comment_text(VIP_TEXT.format(priority=STATEFUL_PRIORITY))))
        vip = primitive(VIP, stack.vip.agent, stack.vip.agent_params(), stack.vip.ops)
        _meta(vip, {"priority": STATEFUL_PRIORITY})
        out.append(vip)
    members = _group_members(stack)
    if not members:
        return out
    vip_text = VIP_FIRST if vip_alone(stack) else VIP_AFTER.format(layer=stack.vip.start_after)
    out.append(etree.Comment(_comment_text(STATEFUL_TEXT.format(
        order=", ".join(members), first=members[0], vip=vip_text))))
    group = etree.Element("group", id=STATEFUL_GROUP)
    _nvpairs(group, "meta_attributes", f"{STATEFUL_GROUP}-meta_attributes",
             {"priority": STATEFUL_PRIORITY})
    layers = {layer.name: layer for layer in stack.stateful}
    for name in members:
        if name == VIP:
            group.append(primitive(VIP, stack.vip.agent, stack.vip.agent_params(), stack.vip.ops))
        else:
            layer = layers[name]
            group.append(primitive(name, layer.agent, layer.agent_params(), layer.ops))
    out.append(group)
    return out


def _meta(element, values: dict) -> None:
    """<meta_attributes> right after the instance attributes (where crmsh puts them)."""
    holder = etree.Element("holder")
    _nvpairs(holder, "meta_attributes", f"{element.get('id')}-meta_attributes", values)
    element.find("operations").addprevious(holder[0])


def _constraints(stack: Stack):
    constraints = etree.Element("constraints")
    _comment(constraints, FENCE_LOCATION)
    for node in stack.nodes:
        for device in (fence_id(node.name), *(d.device_id(node.name) for d in node.fences)):
            etree.SubElement(constraints, "rsc_location", id=f"loc-{device}", rsc=device,
                             score="-INFINITY", node=node.name)

    primary = stack.primary.name
    _comment(constraints, PREFERENCE_TEXT.format(node=primary, preference=PRIMARY_PREFERENCE))
    loc_id = f"loc-partition-prefers-{primary}"
    location = etree.SubElement(constraints, "rsc_location", id=loc_id, rsc=PARTITION_CLONE)
    rule = etree.SubElement(location, "rule", {"role": "Promoted",
                                               "score": str(PRIMARY_PREFERENCE),
                                               "id": f"{loc_id}-rule"})
    etree.SubElement(rule, "expression", operation="eq", attribute="#uname", value=primary,
                     id=f"{loc_id}-rule-expression")

    _comment(constraints, COLOCATION_TEXT)
    if vip_alone(stack):
        _colocation(constraints, "col-vip-with-partition", VIP)
    grouped = bool(_group_members(stack))
    if grouped:
        _colocation(constraints, "col-stateful-with-partition", STATEFUL_GROUP)
        _comment(constraints, ORDER_TEXT)
        _order(constraints, "ord-promote-then-stateful", PARTITION_CLONE, "promote")
    if grouped and vip_alone(stack):
        _comment(constraints, VIP_ORDER_TEXT)
        _order(constraints, "ord-vip-then-stateful", VIP, "start")
    return constraints


def _colocation(constraints, cid: str, rsc: str) -> None:
    etree.SubElement(constraints, "rsc_colocation", {
        "id": cid, "score": "INFINITY", "rsc": rsc, "with-rsc": PARTITION_CLONE,
        "with-rsc-role": "Promoted"})


def _order(constraints, oid: str, first: str, action: str) -> None:
    etree.SubElement(constraints, "rsc_order", {
        "id": oid, "kind": "Mandatory", "first": first, "first-action": action,
        "then": STATEFUL_GROUP, "then-action": "start"})


def _fencing_topology(stack: Stack):
    """The levels of every node with further fence devices. The ids are crmsh's for a
    fencing_topology statement: fencing, fencing-0, fencing-1, ..."""
    element = etree.Element("fencing-topology")
    _comment(element, TOPOLOGY_TEXT)
    count = 0
    for node in stack.nodes:
        if not node.fences:
            continue
        for level, devices in node.fence_topology():
            etree.SubElement(element, "fencing-level", {
                "target": node.name, "index": str(level), "devices": ",".join(devices),
                "id": "fencing" if count == 0 else f"fencing-{count - 1}"})
            count += 1
    return element


def _alerts(stack: Stack):
    """<alerts>: one alert, its options, what it selects, one recipient per sink. The ids
    and the order of children are crmsh's for the same 'alert' statement."""
    from hapack.alerts import recipient_attributes, recipient_value
    alerts = stack.alerts
    assert alerts is not None, "rendered only for a stack with [alerts]"
    element = etree.Element("alerts")
    _comment(element, ALERTS_TEXT.format(
        agent=ALERT_AGENT, kinds=", ".join(_kinds(alerts)), timeout=format_duration(alerts.timeout),
        deadline=f"{alerts.deadline / 1000:g}"))
    alert = etree.SubElement(element, "alert", id=ALERT_ID, path=ALERT_AGENT)
    _nvpairs(alert, "instance_attributes", f"{ALERT_ID}-instance_attributes", {
        "hapack_cluster": stack.cluster.name, "hapack_deadline": f"{alerts.deadline / 1000:g}"})
    _nvpairs(alert, "meta_attributes", f"{ALERT_ID}-meta_attributes",
             {"timeout": format_duration(alerts.timeout)})
    if not alerts.selects_all:
        alert.append(_select(alerts))
    for i, recipient in enumerate(alerts.recipients, 1):
        rid = f"{ALERT_ID}-recipient-{i}"
        _comment(alert, RECIPIENT_TEXT[recipient.sink].format(
            retries=recipient.retries, timeout=f"{recipient.timeout / 1000:g}",
            socket=recipient.socket, facility=recipient.facility))
        element_r = etree.SubElement(alert, "recipient", id=rid, value=recipient_value(recipient))
        _nvpairs(element_r, "instance_attributes", f"{rid}-instance_attributes",
                 recipient_attributes(recipient))
    return element


def _kinds(alerts) -> list[str]:
    kinds = [kind for kind, on in (("fencing", alerts.select_fencing),
                                   ("nodes", alerts.select_nodes),
                                   ("resources", alerts.select_resources)) if on]
    if alerts.select_attributes is True:
        kinds.append("attributes")
    elif alerts.select_attributes:
        kinds.append("attributes " + " ".join(alerts.select_attributes))
    return kinds


def _select(alerts):
    select = etree.Element("select")
    for flag in ("select_fencing", "select_nodes", "select_resources"):
        if getattr(alerts, flag):
            etree.SubElement(select, flag)
    if alerts.select_attributes:
        attributes = etree.SubElement(select, "select_attributes")
        if alerts.select_attributes is not True:
            for i, name in enumerate(alerts.select_attributes, 1):
                etree.SubElement(attributes, "attribute", id=f"{ALERT_ID}-attribute-{i}",
                                 name=name)
    return select


def render(stack: Stack, source: str) -> bytes:
    """The CIB as bytes: deterministic, pretty-printed, ending in a newline."""
    cib = build(stack, source)
    etree.indent(cib, space="  ")
    for comment in cib.iter(etree.Comment):
        indent = "  " * sum(1 for _ in comment.iterancestors())
        lines = comment.text.strip("\n").splitlines()
        comment.text = "".join(f"\n{indent}{line}" for line in lines) + f"\n{indent}"
    return etree.tostring(cib, encoding="UTF-8", xml_declaration=False) + b"\n"


def comment_lines(comment: _Comment) -> list[str]:
    """The text of a comment written by this module, one stripped line each."""
    return [line.strip() for line in comment.text.strip().splitlines()]
