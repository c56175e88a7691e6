"""Fence agent meta-data in the form pacemaker-fenced reads, built with lxml.

The layout is fence-agents' (``lib/fencing.py`` ``metadata()``): a
``<resource-agent>`` with ``shortdesc`` as an attribute, ``<parameters>``
where each parameter carries ``<getopt mixed>``, ``<content>`` and
``<shortdesc>``, an alias appears a second time as a ``deprecated="1"``
parameter that the canonical one ``obsoletes``, and ``<actions>``. The
fencer needs ``plug`` among the parameters to pass the target as
``plug=<node>``, and reads the ``<actions>`` list to learn that the agent
supports ``list``, ``status``, ``reboot`` and ``on``. Imported only for the
``metadata`` action.
"""

from __future__ import annotations

from lxml import etree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxml.etree import _Element
    from hapack.stonith.fencing import FenceAgent
    from hapack.params import Param

# fence-agents' content types: durations are "second", choices "select"
CONTENT = {"string": "string", "integer": "integer", "boolean": "boolean",
           "float": "second", "choice": "select"}
# cluster-glue's parameters end up in OCF-style meta-data: OCF types only
GLUE_CONTENT = {"string": "string", "integer": "integer", "boolean": "boolean",
                "float": "string", "choice": "string"}


def getopt(param: Param, name: str) -> str:
    """fence-agents' ``mixed`` spelling: ``-a, --ip=[ip]``, ``-P, --lanplus``."""
    short = f"-{param.short}, " if param.short and name == param.name else ""
    if param.kind == "boolean":
        return f"{short}--{name.replace('_', '-')}"
    return f"{short}--{name.replace('_', '-')}=[{param.name}]"


def _parameter(parent, param, name, alias):
    attrs = {"name": name, "unique": "1" if param.unique else "0",
             "required": "1" if param.required and not alias else "0"}
    if alias:
        attrs["deprecated"] = "1"
    elif param.aliases:
        attrs["obsoletes"] = param.aliases[0]
    element = etree.SubElement(parent, "parameter", attrs)
    etree.SubElement(element, "getopt", mixed=getopt(param, name))
    content = etree.SubElement(element, "content", type=CONTENT[param.kind])
    if param.default is not None and not param.secret:
        content.set("default", param.default_text)
    for choice in param.choices:
        etree.SubElement(content, "option", value=choice)
    short = etree.SubElement(element, "shortdesc", lang="en")
    short.text = f"Deprecated name of {param.name}: {param.shortdesc}" if alias else param.shortdesc
    if param.longdesc != param.shortdesc and not alias:
        etree.SubElement(element, "longdesc", lang="en").text = param.longdesc


def metadata_tree(agent: FenceAgent) -> _Element:
    root = etree.Element("resource-agent", name=agent.name, shortdesc=agent.shortdesc)
    etree.SubElement(root, "longdesc").text = agent.longdesc
    etree.SubElement(root, "vendor-url").text = agent.vendor_url
    parameters = etree.SubElement(root, "parameters")
    for param in agent.params:
        _parameter(parameters, param, param.name, alias=False)
        for alias in param.aliases:
            _parameter(parameters, param, alias, alias=True)
    actions = etree.SubElement(root, "actions")
    for name in agent.action_names():
        element = etree.SubElement(actions, "action", name=name)
        if name == "on":
            element.set("automatic", "0")  # no unfencing at start-up
    return root


def metadata_xml(agent: FenceAgent) -> str:
    body = etree.tostring(metadata_tree(agent), pretty_print=True, encoding="unicode")
    return f'<?xml version="1.0" ?>\n{body}'


def glue_parameters_xml(params: list[Param]) -> str:
    """The ``<parameters>`` block cluster-glue's ``getinfo-xml`` asks for."""
    root = etree.Element("parameters")
    for param in params:
        element = etree.SubElement(root, "parameter", name=param.name,
                                   unique="1" if param.unique else "0",
                                   required="1" if param.required else "0")
        content = etree.SubElement(element, "content", type=GLUE_CONTENT[param.kind])
        if param.default is not None and not param.secret:
            content.set("default", param.default_text)
        etree.SubElement(element, "shortdesc", lang="en").text = param.shortdesc
        etree.SubElement(element, "longdesc", lang="en").text = param.longdesc
    return etree.tostring(root, pretty_print=True, encoding="unicode")
