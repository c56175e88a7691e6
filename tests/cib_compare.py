"""Two CIBs compared for meaning: equal in everything but generated ids.

A plain module (like requires.py) used by the pcs tests. ``canonical`` makes a
normalised copy of a CIB, ``diff`` a unified diff of two such copies ('' when
they mean the same). What is normalised, and why it does not change what
Pacemaker does:

- comments, whitespace and the status section (run-time state) are dropped;
- the bookkeeping attributes of <cib> (epoch, num_updates, who wrote it last);
- ids that a tool generates (nvpairs, their sets, operations, rules,
  expressions, fencing levels); ids an operator names and refers to
  (resources, constraints, alerts, recipients) are kept;
- attributes spelled out at their documented default (``ATTRIBUTE_DEFAULTS``):
  pcs writes ``rsc-role="Started"`` on a colocation, ``first-action="start"``
  on an order. Pacemaker 2.1 reads an absent role and "Started" the same
  (pcmk__new_colocation), and an absent action as "start";
- children whose order carries no meaning are sorted (nvpairs, operations,
  constraints, sets); the order of resources and of a group's members is kept.
"""

from __future__ import annotations

import difflib

from lxml import etree

CIB_BOOKKEEPING = {"epoch", "num_updates", "admin_epoch", "cib-last-written", "update-origin",
                   "update-client", "update-user", "have-quorum", "dc-uuid", "execution-date"}
NAMED = {"primitive", "group", "clone", "bundle", "template", "rsc_location", "rsc_colocation",
         "rsc_order", "rsc_ticket", "alert", "recipient"}
ATTRIBUTE_DEFAULTS = {
    "rsc_colocation": {"rsc-role": "Started", "with-rsc-role": "Started"},
    "rsc_order": {"first-action": "start", "then-action": "start", "kind": "Mandatory"},
}
# (parent tag, child tag) whose order is part of the configuration; "*": any child
ORDERED = {("group", "primitive"), ("resources", "*")}


def _kept(tag: str, name: str, value: str) -> bool:
    if tag == "cib" and name in CIB_BOOKKEEPING:
        return False
    if name == "id" and tag not in NAMED:
        return False
    return ATTRIBUTE_DEFAULTS.get(tag, {}).get(name) != value


def _ordered(parent: str, child: str) -> bool:
    return (parent, child) in ORDERED or (parent, "*") in ORDERED


def _canon(element) -> etree._Element:
    attrs = sorted((k, v) for k, v in element.attrib.items() if _kept(element.tag, k, v))
    copy = etree.Element(element.tag)
    for name, value in attrs:
        copy.set(name, value)
    children = [c for c in element if isinstance(c.tag, str) and c.tag != "status"]
    keyed = []
    for position, child in enumerate(children):
        canon = _canon(child)
        key = ((0, position, b"") if _ordered(element.tag, child.tag)
               else (1, 0, etree.tostring(canon)))
        keyed.append((key, canon))
    for _, canon in sorted(keyed, key=lambda pair: pair[0]):
        copy.append(canon)
    return copy


def canonical(cib) -> etree._Element:
    """A normalised copy of ``cib`` (an lxml element or XML bytes)."""
    if isinstance(cib, (bytes, str)):
        cib = etree.fromstring(cib if isinstance(cib, bytes) else cib.encode())
    return _canon(cib)


def _lines(cib) -> list[str]:
    canon = canonical(cib)
    etree.indent(canon, space="  ")
    return etree.tostring(canon, encoding="unicode").splitlines()


def diff(expected, actual) -> str:
    """'' when the two CIBs mean the same; else a unified diff of their canonical forms."""
    return "\n".join(difflib.unified_diff(_lines(expected), _lines(actual), "expected",
                                          "actual", lineterm=""))
