"""OCF meta-data, built with lxml from the agent's declarations.

The output claims OCF 1.1 and satisfies both validators an operator meets:
the OCF 1.1 RelaxNG schema and resource-agents' ``ra-api-1.dtd`` that
Debian's ``ocf-tester`` checks against (hence the DOCTYPE, no
``unique-group``, ``reloadable``, ``select`` or ``reload-agent``, and content
types limited to string, integer and boolean; a deprecated name is a
parameter of its own, marked in its text, not with 1.1's ``<deprecated>``,
which the DTD refuses). Imported only for the
meta-data action: lxml is not loaded on any other path.
"""

from __future__ import annotations

from lxml import etree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lxml.etree import _Element
    from hapack.params import Param
    from hapack.ocf.runner import Agent

OCF_VERSION = "1.1"
DOCTYPE = '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">'
_CONTENT_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean",
                  "float": "string", "choice": "string"}


def _desc(parent, tag, text):
    element = etree.SubElement(parent, tag, lang="en")
    element.text = text
    return element


def _seconds(value):
    return f"{value:g}s" if isinstance(value, (int, float)) else str(value)


def param_longdesc(param: Param) -> str:
    """The long description, with the allowed values spelled out."""
    text = param.longdesc
    if param.choices:
        text = f"{text} Allowed values: {', '.join(param.choices)}."
    return text


def _alias(parameters, param, alias):
    """A stock agent's name of param, as a parameter of its own marked deprecated in its
    text: OCF 1.1's <deprecated> element is not in ra-api-1.dtd, which ocf-tester
    validates against, and a DTD's internal subset cannot extend <parameter>."""
    element = etree.SubElement(parameters, "parameter", name=alias,
                               unique="1" if param.unique else "0", required="0")
    _desc(element, "longdesc", f"Deprecated: the stock agent's name of {param.name}, "
          f"accepted (with a warning) so that a configuration written for it works; "
          f"rename it to {param.name}. Both set to different values is an error.")
    _desc(element, "shortdesc", f"Deprecated name of {param.name}")
    etree.SubElement(element, "content", type=_CONTENT_TYPES[param.kind])


def metadata_tree(agent: Agent) -> _Element:
    root = etree.Element("resource-agent", name=agent.name, version=agent.version)
    etree.SubElement(root, "version").text = OCF_VERSION
    _desc(root, "longdesc", agent.longdesc)
    _desc(root, "shortdesc", agent.shortdesc)
    parameters = etree.SubElement(root, "parameters")
    for param in agent.params:
        element = etree.SubElement(parameters, "parameter", name=param.name,
                                   unique="1" if param.unique else "0",
                                   required="1" if param.required else "0")
        _desc(element, "longdesc", param_longdesc(param))
        _desc(element, "shortdesc", param.shortdesc)
        content = etree.SubElement(element, "content", type=_CONTENT_TYPES[param.kind])
        if param.default is not None and not param.secret:
            content.set("default", param.default_text)
        for alias in param.aliases:
            _alias(parameters, param, alias)
    actions = etree.SubElement(root, "actions")
    for action in agent.all_actions():
        element = etree.SubElement(actions, "action", name=action.name,
                                   timeout=_seconds(action.timeout))
        if action.interval is not None:
            element.set("interval", _seconds(action.interval))
        if action.depth is not None:
            element.set("depth", str(action.depth))
        if action.role is not None:
            element.set("role", action.role)
    return root


def metadata_xml(agent: Agent) -> str:
    body = etree.tostring(metadata_tree(agent), pretty_print=True, encoding="unicode")
    return f'<?xml version="1.0"?>\n{DOCTYPE}\n{body}'
