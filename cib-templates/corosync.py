"""The stack's corosync.conf, from ``corosync.conf.tmpl``.

knet with one link per ``[[links]]`` entry (link 0 first), crypto from the
shared authkey, ``two_node``, the token from the stack file. Node ids follow
the stack file's node order (the primary is node 1).
"""

from __future__ import annotations

from importlib import resources
from string import Template

from hapack.stack import Stack


def _template(name: str) -> Template:
    return Template(resources.files("hapack.cib").joinpath(name).read_text(encoding="utf-8"))


def render(stack: Stack, source: str) -> bytes:
    co = stack.corosync
    interfaces = "".join(
        f"    # link {link.number}: {link.name} ({link.interface}, {link.network})\n"
        f"    interface {{\n        linknumber: {link.number}\n    }}\n"
        for link in stack.links)
    nodes = ""
    for node in stack.nodes:
        role = "primary" if node is stack.primary else "secondary"
        nodes += f"    # {node.name}: the {role}\n    node {{\n"
        nodes += f"        name: {node.name}\n        nodeid: {node.nodeid}\n"
        for link in stack.links:
            nodes += f"        ring{link.number}_addr: {node.address(link.name).ip}\n"
        nodes += "    }\n"
    logging = ""
    if co.logfile:
        logging += f"    to_logfile: yes\n    logfile: {co.logfile}\n"
    else:
        logging += "    to_logfile: no\n"
    logging += f"    to_syslog: {'yes' if co.syslog else 'no'}\n"
    logging += "    to_stderr: no\n    timestamp: hires\n"
    text = _template("corosync.conf.tmpl").substitute(
        cluster_name=stack.cluster.name, source=source, token=co.token,
        crypto_cipher=co.crypto_cipher, crypto_hash=co.crypto_hash,
        interfaces=interfaces, nodes=nodes, logging=logging)
    return text.encode()
