"""The stack as a shell script of ``pcs -f CIB_FILE`` commands (pcs 0.11).

Like the crm script (:mod:`hapack.cib.crm`), it is written from the very CIB
tree :mod:`hapack.cib.cib` builds, so the two cannot drift apart: each XML
comment becomes ``#`` lines before the commands that make the element it
explains, each element the pcs commands that make it, in the CIB's order.
Every word is quoted with :func:`shlex.quote`, one command per line. An
element or attribute this module has no pcs command for is an error
(:class:`Untranslatable`), never left out; the one exception is an alert's
``<select>``, which pcs 0.11 cannot write: a ``cibadmin --modify`` line on the
same file (``CIB_file="$cib"``) adds it.

Ids are the CIB's wherever pcs takes one (resources, clones, constraints,
rule, defaults sets, alerts, recipients); pcs generates the others (nvpairs,
operations, expressions, fencing levels) with its own names.

The script ends with the ``pcs cluster setup`` command that writes corosync.conf
offline, as a comment: its totem, nodelist and quorum sections are
``hapack render corosync``'s, its logging section is pcs's own; with a
``[quorum]`` table, followed by the ``pcs quorum device add`` that adds the same
quorum device to the running cluster.
"""

from __future__ import annotations

import shlex

from lxml import etree

from hapack.cib import cib as cibmod
from hapack.stack import Stack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxml.etree import _Element

PCS = 'pcs -f "$cib"'   # the CIB file is the script's first argument

USAGE = """\
Usage: sh {name} CIB_FILE
CIB_FILE is edited offline; make it first ('cibadmin --empty > CIB_FILE' before
the cluster has a configuration, or 'pcs cluster cib CIB_FILE'), then load it
with 'pcs cluster cib-push CIB_FILE --config'. The hapack agents must be
installed ('hapack install'): pcs checks parameters against their meta-data."""

SETUP_TEXT = """\
corosync.conf: 'hapack render corosync' writes the stack's. pcs writes one with the
same totem, nodelist and quorum sections offline with the command below; its
logging section is pcs's own (to_syslog yes, logfile /var/log/corosync/corosync.log,
timestamp on), not the stack file's [corosync] settings."""

SELECT_TEXT = """\
pcs has no option for an alert's <select> (which events it reports): cibadmin
adds it to the same offline CIB file."""

DEVICE_TEXT = """\
The quorum device ([quorum]): pcs adds it to a running cluster (it sets up the
certificates with the arbiter, which must run 'pcs qdevice setup model net --enable
--start', and removes two_node), so after 'pcs cluster setup' and the start, run:"""

LEVEL_TEXT = """\
--force: the fencing level names a node, and this offline CIB has no nodes yet."""


class Untranslatable(ValueError):
    """A part of the CIB that this module has no pcs command for."""


def _unsupported(element, what: str = "") -> Untranslatable:
    name = element.get("id") or element.tag
    return Untranslatable(f"no pcs command for <{element.tag}> {name}{what}")


def _elements(parent) -> list:
    return [child for child in parent if not isinstance(child, etree._Comment)]


def _comments(element) -> list[str]:
    """The '#' lines for the comments right before ``element``."""
    block: list[str] = []
    sibling = element.getprevious()
    while sibling is not None and isinstance(sibling, etree._Comment):
        block.insert(0, sibling)
        sibling = sibling.getprevious()
    return [_hash(line) for comment in block for line in cibmod.comment_lines(comment)]


def _hash(line: str) -> str:
    return "# " + line if line else "#"


def _pairs(element) -> list[str]:
    """``name=value`` for each nvpair of ``element`` (a set of name/value pairs)."""
    for child in _elements(element):
        if child.tag != "nvpair" or child.get("value") is None:
            raise _unsupported(element, f": <{child.tag}> inside")
    if set(element.attrib) - {"id"}:
        raise _unsupported(element, f": attribute {sorted(set(element.attrib) - {'id'})[0]}")
    return [f"{nv.get('name')}={nv.get('value')}" for nv in element.iterfind("nvpair")]


def _set(element, tag: str) -> list[str]:
    """The pairs of ``element``'s one ``tag`` set, or none."""
    sets = element.findall(tag)
    if len(sets) > 1:
        raise _unsupported(element, f": more than one <{tag}>")
    return _pairs(sets[0]) if sets else []


def _command(*words: str) -> str:
    return " ".join([PCS] + [shlex.quote(str(word)) for word in words])


# -- resources ---------------------------------------------------------------------------

_PRIMITIVE_CHILDREN = {"instance_attributes", "meta_attributes", "operations"}
_PRIMITIVE_ATTRS = {"id", "class", "provider", "type"}


def _operations(element) -> list[str]:
    words: list[str] = []
    for op in element.iterfind("operations/*"):
        if op.tag != "op" or len(_elements(op)):
            raise _unsupported(op, " (only plain <op> elements)")
        words.append(op.get("name"))
        words += [f"{k}={v}" for k, v in op.attrib.items() if k not in ("id", "name")]
    return ["op", *words] if words else []


def _primitive(element, group: str | None = None) -> list[str]:
    kids = {child.tag for child in _elements(element)}
    if kids - _PRIMITIVE_CHILDREN or set(element.attrib) - _PRIMITIVE_ATTRS:
        raise _unsupported(element, " (only params, meta and operations)")
    cls, rid = element.get("class"), element.get("id")
    meta = _set(element, "meta_attributes")
    tail = _set(element, "instance_attributes") + _operations(element) + (
        ["meta", *meta] if meta else [])
    if cls == "stonith":
        if group:
            raise _unsupported(element, f": a fence device in group {group}")
        return _comments(element) + [_command("stonith", "create", rid, element.get("type"),
                                              *tail)]
    agent = ":".join(filter(None, (cls, element.get("provider"), element.get("type"))))
    # --no-default-ops: the operations are exactly the CIB's, none from the meta-data.
    where = ["--group", group] if group else []
    return _comments(element) + [_command("resource", "create", rid, agent, *tail,
                                          "--no-default-ops", *where)]


def _group(element) -> list[str]:
    lines = _comments(element)
    members = 0
    for child in _elements(element):
        if child.tag == "primitive":
            lines += _primitive(child, element.get("id"))
            members += 1
        elif child.tag != "meta_attributes":
            raise _unsupported(child, f" in group {element.get('id')}")
    if not members:
        raise _unsupported(element, ": a group without members")
    meta = _set(element, "meta_attributes")
    if meta:
        lines.append(_command("resource", "meta", element.get("id"), *meta))
    return lines


def _clone(element) -> list[str]:
    inner = [child for child in _elements(element) if child.tag != "meta_attributes"]
    if len(inner) != 1 or inner[0].tag not in ("primitive", "group"):
        raise _unsupported(element, ": a clone holds one primitive or group")
    lines = _comments(element) + _RESOURCES[inner[0].tag](inner[0])
    # promotable=true among the meta attributes makes it a promotable clone.
    return lines + [_command("resource", "clone", inner[0].get("id"), element.get("id"),
                             *_set(element, "meta_attributes"))]


_RESOURCES = {"primitive": _primitive, "group": _group, "clone": _clone}


# -- constraints -------------------------------------------------------------------------

def _expression(expression) -> list[str]:
    if expression.tag != "expression" or set(expression.attrib) - {
            "id", "attribute", "operation", "value", "type"}:
        raise _unsupported(expression, " (only node attribute expressions)")
    words = [expression.get("attribute"), expression.get("operation")]
    if expression.get("type"):
        words.append(expression.get("type"))
    return words + [expression.get("value")]


def _rule(rule) -> list[str]:
    expressions = _elements(rule)
    if not expressions or set(rule.attrib) - {"id", "role", "score", "boolean-op"}:
        raise _unsupported(rule)
    words: list[str] = []
    for expression in expressions:
        if words:
            words.append(rule.get("boolean-op", "and"))
        words += _expression(expression)
    options = [f"{name}={rule.get(name)}" for name in ("id", "role", "score") if rule.get(name)]
    return options + words


def _location(element) -> list[str]:
    rules = _elements(element)
    if rules:
        if len(rules) != 1 or rules[0].tag != "rule" or set(element.attrib) != {"id", "rsc"}:
            raise _unsupported(element, " (one rule, no other options)")
        return [_command("constraint", "location", element.get("rsc"), "rule",
                         f"constraint-id={element.get('id')}", *_rule(rules[0]))]
    if set(element.attrib) != {"id", "rsc", "node", "score"}:
        raise _unsupported(element, " (a node and a score)")
    # '--': a negative score would otherwise read as an option.
    return [_command("constraint", "location", "add", element.get("id"), element.get("rsc"),
                     element.get("node"), "--", element.get("score"))]


def _colocation(element) -> list[str]:
    if _elements(element) or set(element.attrib) - {
            "id", "rsc", "with-rsc", "rsc-role", "with-rsc-role", "score"}:
        raise _unsupported(element)
    role, with_role = element.get("rsc-role"), element.get("with-rsc-role")
    if element.get("score") is None:
        raise _unsupported(element, " (a score)")
    return [_command("constraint", "colocation", "add", *filter(None, (role,)), element.get("rsc"),
                     "with", *filter(None, (with_role,)), element.get("with-rsc"),
                     "--", element.get("score"), f"id={element.get('id')}")]


def _order(element) -> list[str]:
    known = {"id", "first", "then", "first-action", "then-action"}
    if _elements(element) or set(element.attrib) - known - {"kind", "symmetrical"}:
        raise _unsupported(element)
    options = [f"{k}={v}" for k, v in element.attrib.items() if k not in known]
    return [_command("constraint", "order", element.get("first-action", "start"),
                     element.get("first"), "then", element.get("then-action", "start"),
                     element.get("then"), *options, f"id={element.get('id')}")]


_CONSTRAINTS = {"rsc_location": _location, "rsc_colocation": _colocation, "rsc_order": _order}


def _constraint(element) -> list[str]:
    if element.tag not in _CONSTRAINTS:
        raise _unsupported(element)
    return _comments(element) + _CONSTRAINTS[element.tag](element)


# -- fencing topology, alerts, properties, defaults --------------------------------------

_TARGETS = (("target", "{}"), ("target-pattern", "regexp%{}"))


def _level(level) -> list[str]:
    target: str | None
    if level.get("target-attribute"):
        target = f"attrib%{level.get('target-attribute')}={level.get('target-value')}"
    else:
        target = next((form.format(level.get(key)) for key, form in _TARGETS
                       if level.get(key)), None)
    if level.tag != "fencing-level" or target is None:
        raise _unsupported(level)
    return _comments(level) + [_command("stonith", "level", "add", level.get("index"), target,
                                        *level.get("devices").split(","), "--force")]


def _fencing_topology(element) -> list[str]:
    levels = [line for level in _elements(element) for line in _level(level)]
    return [_hash(LEVEL_TEXT)] + levels if levels else []


def _options(element, allowed: tuple = ()) -> list[str]:
    """The ``description=... options ... meta ...`` words of an alert or a recipient."""
    for child in _elements(element):
        if child.tag not in ("instance_attributes", "meta_attributes", *allowed):
            raise _unsupported(child, f" in {element.tag} {element.get('id')}")
    described = [f"description={element.get('description')}"] if element.get("description") else []
    params, meta = _set(element, "instance_attributes"), _set(element, "meta_attributes")
    return described + (["options", *params] if params else []) + (["meta", *meta] if meta else [])


def _alert(alert) -> list[str]:
    if alert.tag != "alert":
        raise _unsupported(alert)
    lines = _comments(alert) + [_command("alert", "create", f"path={alert.get('path')}",
                                         f"id={alert.get('id')}",
                                         *_options(alert, ("recipient", "select")))]
    for recipient in alert.iterfind("recipient"):
        lines += _comments(recipient) + [_command(
            "alert", "recipient", "add", alert.get("id"), f"value={recipient.get('value')}",
            f"id={recipient.get('id')}", *_options(recipient))]
    select = alert.find("select")
    return lines + (_select(alert.get("id"), select) if select is not None else [])


_SELECTS = ("select_fencing", "select_nodes", "select_resources", "select_attributes")


def _select(alert_id: str, select) -> list[str]:
    """pcs has no option for an alert's <select>: cibadmin adds it to the same CIB file."""
    kids = _elements(select)
    if not kids or select.attrib or any(
            kid.tag not in _SELECTS or kid.attrib or any(
                a.tag != "attribute" or set(a.attrib) != {"id", "name"} or len(a)
                for a in _elements(kid)) for kid in kids):
        raise _unsupported(select, f" in alert {alert_id} (select_fencing, select_nodes, "
                           "select_resources, select_attributes of named attributes)")
    copy = etree.Element("alert", id=alert_id)
    clean = etree.SubElement(copy, "select")
    for kid in kids:
        into = etree.SubElement(clean, kid.tag)
        for attribute in _elements(kid):
            etree.SubElement(into, "attribute", id=attribute.get("id"), name=attribute.get("name"))
    xml = etree.tostring(copy, encoding="unicode")
    return [_hash(line) for line in SELECT_TEXT.splitlines()] + [
        f'CIB_file="$cib" cibadmin --modify --xml-text {shlex.quote(xml)}']


def _crm_config(element) -> list[str]:
    lines = []
    for props in _elements(element):
        if props.tag != "cluster_property_set" or props.get("id") != "cib-bootstrap-options":
            raise _unsupported(props, " (pcs property set writes cib-bootstrap-options only)")
        lines += _comments(props) + [_command("property", "set", *_pairs(props))]
    return lines


def _defaults(words: tuple):
    def translate(element) -> list[str]:
        lines = []
        for meta in _elements(element):
            if meta.tag != "meta_attributes":
                raise _unsupported(meta)
            lines += _comments(meta) + [_command(*words, "set", "create", f"id={meta.get('id')}",
                                                 "meta", *_pairs(meta))]
        return lines
    return translate


def _nodes(element) -> list[str]:
    if _elements(element):
        raise _unsupported(element, ": nodes are the cluster's to add")
    return []


def _each(translate):
    """One block of lines per child of a section (a blank line between them)."""
    def translate_all(element) -> list[str]:
        lines: list[str] = []
        for child in _elements(element):
            lines += ([""] if lines else []) + translate(child)
        return lines
    return translate_all


def _resource(element) -> list[str]:
    if element.tag not in _RESOURCES:
        raise _unsupported(element)
    return _RESOURCES[element.tag](element)


# The sections in the order the script makes them: properties and defaults first,
# then the resources (before the constraints naming them), fencing levels, alerts.
_SECTIONS = {
    "crm_config": _crm_config,
    "rsc_defaults": _defaults(("resource", "defaults")),
    "op_defaults": _defaults(("resource", "op", "defaults")),
    "nodes": _nodes,
    "resources": _each(_resource),
    "constraints": _each(_constraint),
    "fencing-topology": _fencing_topology,
    "alerts": _each(_alert),
}


def commands(cib: _Element) -> list[list[str]]:
    """The script's lines for each section of ``cib``'s configuration, in make order."""
    configuration = cib.find("configuration")
    present = {element.tag: element for element in _elements(configuration)}
    for tag, element in present.items():
        if tag not in _SECTIONS:
            raise _unsupported(element)
    return [_SECTIONS[tag](present[tag]) for tag in _SECTIONS if tag in present]


# -- corosync.conf -----------------------------------------------------------------------

def setup_argv(stack: Stack, corosync_conf: str = "corosync.conf") -> list[str]:
    """``pcs cluster setup`` writing corosync.conf offline, as ``hapack render corosync``
    does but for the logging section."""
    argv = ["pcs", "cluster", "setup", stack.cluster.name]
    for node in stack.nodes:
        argv.append(node.name)
        argv += [f"addr={node.address(link.name).ip}" for link in stack.links]
    co = stack.corosync
    argv += ["transport", "knet", "crypto", f"cipher={co.crypto_cipher}",
             f"hash={co.crypto_hash}", "totem", f"token={co.token}", f"consensus={co.consensus}",
             "--no-cluster-uuid", "--corosync_conf", corosync_conf]
    return argv


def device_argv(stack: Stack) -> list[str]:
    """``pcs quorum device add`` for the stack's quorum device (the same device section
    as ``hapack render corosync``)."""
    from hapack.cib import corosync
    q = stack.quorum
    assert q is not None, "called only for a stack with a [quorum] device"
    generic = [("votes", 1 if q.algorithm == "ffsplit" else None), ("timeout", q.timeout),
               ("sync_timeout", q.sync_timeout)]
    model = [("host", q.host), ("port", q.port), ("algorithm", q.algorithm),
             ("tie_breaker", corosync.tie_breaker(stack, q)), ("tls", q.tls)]
    argv = ["pcs", "quorum", "device", "add"] + _options_words(generic) + ["model", "net"]
    argv += _options_words(model)
    h = q.heuristics
    if h is not None:
        argv += ["heuristics"] + _options_words(
            [("mode", h.mode), ("timeout", h.timeout), ("sync_timeout", h.sync_timeout),
             ("interval", h.interval)] + [(f"exec_{name}", cmd) for name, cmd in h.execs])
    return argv


def _options_words(pairs) -> list[str]:
    return [f"{key}={value}" for key, value in pairs if value is not None]


# -- the script --------------------------------------------------------------------------

def from_cib(cib: _Element, stack: Stack, source: str) -> str:
    """The pcs script for ``cib`` (built from ``stack``, rendered from ``source``)."""
    name = f"{source.rsplit('.', 1)[0]}.pcs"
    header = cibmod.HEADER.format(form="pcs", source=source, cluster=stack.cluster.name,
                                  other="cib", other_text="a CIB (XML)")
    head = ["#!/bin/sh"] + [_hash(line) for line in
                            (header + "\n\n" + USAGE.format(name=name)).splitlines()]
    head += ["set -eu", f'cib=${{1:?"usage: sh {name} CIB_FILE"}}']
    blocks = ["\n".join(head)] + ["\n".join(lines) for lines in commands(cib) if lines]
    setup = [_hash(line) for line in SETUP_TEXT.splitlines()]
    blocks.append("\n".join(setup + ["# " + shlex.join(setup_argv(stack))]))
    if stack.quorum is not None:
        device = [_hash(line) for line in DEVICE_TEXT.splitlines()]
        blocks.append("\n".join(device + ["# " + shlex.join(device_argv(stack))]))
    return "\n\n".join(blocks) + "\n"


def render(stack: Stack, source: str) -> bytes:
    """The pcs script for ``stack``: deterministic, ending in a newline."""
    return from_cib(cibmod.build(stack, source), stack, source).encode()
