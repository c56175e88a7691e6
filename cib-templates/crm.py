"""The stack as a crm shell script, for ``crm configure load update FILE``.

It is written from the very CIB tree :mod:`hapack.cib.cib` builds, so the two
cannot drift apart: each XML comment becomes ``#`` lines before the statement
it explains, each element the crm statement that makes it. Only the subset
of the CIB that module writes is translated.
"""

from __future__ import annotations

import re

from lxml import etree

from hapack.cib import cib as cibmod
from hapack.stack import Stack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxml.etree import _Element

_PLAIN = re.compile(r"^[A-Za-z0-9_./:,@%+=#-]+$")
_ROLE_SCORE = {"INFINITY": "inf", "-INFINITY": "-inf"}


def quote(value: str) -> str:
    """A value as crmsh reads it back: bare if plain, else in double quotes."""
    if _PLAIN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pairs(element, tag: str) -> list[str]:
    found = element.find(tag)
    if found is None:
        return []
    return [f"{nv.get('name')}={quote(nv.get('value'))}" for nv in found.iterfind("nvpair")]


def _statement(head: str, clauses: list[str]) -> str:
    return " \\\n\t".join([head] + clauses)


def _comments(element) -> list[str]:
    """The '#' lines for the comments right before ``element``."""
    out = []
    sibling = element.getprevious()
    block: list[str] = []
    while sibling is not None and isinstance(sibling, etree._Comment):
        block.insert(0, sibling)
        sibling = sibling.getprevious()
    for comment in block:
        out += ["# " + line if line else "#" for line in cibmod.comment_lines(comment)]
    return out


def _primitive(element) -> list[str]:
    cls = element.get("class")
    agent = (f"{cls}:{element.get('provider')}:{element.get('type')}" if cls == "ocf"
             else f"{cls}:{element.get('type')}")
    clauses = []
    params = _pairs(element, "instance_attributes")
    if params:
        clauses.append("params " + " ".join(params))
    meta = _pairs(element, "meta_attributes")
    if meta:
        clauses.append("meta " + " ".join(meta))
    for op in element.iterfind("operations/op"):
        attrs = [f"{name}={quote(op.get(name))}" for name in ("interval", "timeout", "role")
                 if op.get(name) is not None]
        clauses.append(f"op {op.get('name')} " + " ".join(attrs))
    return _comments(element) + [_statement(f"primitive {element.get('id')} {agent}", clauses)]


def _group(element) -> list[str]:
    lines = []
    members = []
    for child in element.iterfind("primitive"):
        lines += _primitive(child)
        members.append(child.get("id"))
    meta = _pairs(element, "meta_attributes")
    head = f"group {element.get('id')} " + " ".join(members)
    return _comments(element) + lines + [_statement(head, ["meta " + " ".join(meta)] if meta else [])]


def _clone(element) -> list[str]:
    child = element.find("primitive")
    lines = _primitive(child) if child is not None else _group(element.find("group"))
    child = child if child is not None else element.find("group")
    meta = _pairs(element, "meta_attributes")
    head = f"clone {element.get('id')} {child.get('id')}"
    return _comments(element) + lines + [_statement(head, ["meta " + " ".join(meta)] if meta else [])]


def _score(score: str) -> str:
    return _ROLE_SCORE.get(score, score)


def _location(element) -> str:
    head = f"location {element.get('id')} {element.get('rsc')}"
    rule = element.find("rule")
    if rule is None:
        return f"{head} {_score(element.get('score'))}: {element.get('node')}"
    expression = rule.find("expression")
    role = f"role={rule.get('role')} " if rule.get("role") else ""
    return (f"{head} rule {role}{_score(rule.get('score'))}: {expression.get('attribute')} "
            f"{expression.get('operation')} {expression.get('value')}")


def _colocation(element) -> str:
    def side(rsc, role):
        return f"{rsc}:{role}" if role else rsc
    return (f"colocation {element.get('id')} {_score(element.get('score'))}: "
            f"{side(element.get('rsc'), element.get('rsc-role'))} "
            f"{side(element.get('with-rsc'), element.get('with-rsc-role'))}")


def _order(element) -> str:
    return (f"order {element.get('id')} {element.get('kind')}: "
            f"{element.get('first')}:{element.get('first-action')} "
            f"{element.get('then')}:{element.get('then-action')}")


def _fencing_topology(element) -> list[str]:
    """``fencing_topology node: level1 level2 ...``, a level's devices joined by ','
    (crmsh numbers the levels in order and ids them fencing, fencing-0, ...)."""
    comments = [c for c in element if isinstance(c, etree._Comment)]
    lines = ["# " + line if line else "#" for comment in comments
             for line in cibmod.comment_lines(comment)]
    targets: dict[str, list[str]] = {}
    for level in element.iterfind("fencing-level"):
        targets.setdefault(level.get("target"), []).append(level.get("devices"))
    clauses = [f"{target}: " + " ".join(levels) for target, levels in targets.items()]
    return lines + [_statement("fencing_topology", clauses)]
def _alert(element) -> list[str]:
    """``alert ID PATH attributes ... meta ... select ... to { VALUE attributes ... }``;
    the recipients' comments come before the statement (crmsh has none inside one)."""
    comments = _comments(element)
    clauses = []
    for tag, word in (("instance_attributes", "attributes"), ("meta_attributes", "meta")):
        pairs = _pairs(element, tag)
        if pairs:
            clauses.append(f"{word} " + " ".join(pairs))
    select = element.find("select")
    if select is not None:
        clauses.append("select " + " ".join(_selected(select)))
    for recipient in element.iterfind("recipient"):
        comments += _comments(recipient)
        pairs = _pairs(recipient, "instance_attributes")
        inner = [quote(recipient.get("value"))] + (["attributes " + " ".join(pairs)] if pairs else [])
        clauses.append("to { " + " ".join(inner) + " }")
    return comments + [_statement(f"alert {element.get('id')} {quote(element.get('path'))}",
                                  clauses)]


def _selected(select) -> list[str]:
    words = []
    for child in select:
        if not isinstance(child.tag, str):
            continue
        word = child.tag.removeprefix("select_")
        names = [a.get("name") for a in child.iterfind("attribute")]
        words.append(f"{word} {{ {' '.join(names)} }}" if names else word)
    return words


_CONSTRAINTS = {"rsc_location": _location, "rsc_colocation": _colocation, "rsc_order": _order}
_RESOURCES = {"primitive": _primitive, "group": _group, "clone": _clone}


def from_cib(cib: _Element) -> str:
    """The crm script for the configuration section of ``cib`` (an lxml element)."""
    configuration = cib.find("configuration")
    blocks = []
    header = [c for c in configuration if isinstance(c, etree._Comment)][:1]
    if header:
        blocks.append("\n".join("# " + line if line else "#"
                                for line in cibmod.comment_lines(header[0])))
    props = configuration.find("crm_config/cluster_property_set")
    blocks.append("\n".join(_comments(props) + [_statement(
        f"property {props.get('id')}:", _pairs(configuration.find("crm_config"),
                                               "cluster_property_set"))]))
    defaults = configuration.find("rsc_defaults/meta_attributes")
    blocks.append("\n".join(_comments(defaults) + [_statement(
        f"rsc_defaults {defaults.get('id')}:", _pairs(configuration.find("rsc_defaults"),
                                                      "meta_attributes"))]))
    for element in configuration.find("resources"):
        if isinstance(element, etree._Comment):
            continue
        blocks.append("\n".join(_RESOURCES[element.tag](element)))
    for element in configuration.find("constraints"):
        if isinstance(element, etree._Comment):
            continue
        blocks.append("\n".join(_comments(element) + [_CONSTRAINTS[element.tag](element)]))
    topology = configuration.find("fencing-topology")
    if topology is not None:
        blocks.append("\n".join(_fencing_topology(topology)))
    alerts = configuration.find("alerts")
    for element in (alerts if alerts is not None else ()):
        if not isinstance(element, etree._Comment):
            blocks.append("\n".join(_alert(element)))
    return "\n\n".join(blocks) + "\n"


def render(stack: Stack, source: str) -> bytes:
    """The crm shell script for ``stack``: deterministic, ending in a newline."""
    return from_cib(cibmod.build(stack, source, form="crm")).encode()
