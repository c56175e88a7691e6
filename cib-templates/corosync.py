"""The stack's corosync.conf, from ``corosync.conf.tmpl``.

knet with one link per ``[[links]]`` entry (link 0 first), crypto from the
shared authkey, the token and consensus from the stack file, and either
``two_node`` or, with a ``[quorum]`` table, the ``device`` section of
corosync-qdevice (model net) and no ``two_node``. Node ids follow the stack
file's node order (the primary is node 1).
"""

from __future__ import annotations

from importlib import resources
from string import Template

from hapack.stack import Quorum, Stack

TWO_NODE = """\
    # two_node: a lone survivor keeps quorum (fencing, not quorum, protects the data);
    # it implies wait_for_all: after a cold start nothing runs until both nodes met once.
    two_node: 1
"""

DEVICE = """\
    # A quorum device instead of two_node: corosync-qdevice runs on both nodes and
    # corosync-qnetd on ${host} (a third host) gives its vote to one side of a split.
    # The side without it loses quorum, stops its resources and fences no one: no
    # fence race, so no fencing delay. Start corosync-qdevice after corosync.
    device {
        model: net
${device}        net {
${net}        }
${heuristics}    }
"""


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
        cluster_name=stack.cluster.name, source=source, token=co.token, consensus=co.consensus,
        crypto_cipher=co.crypto_cipher, crypto_hash=co.crypto_hash,
        interfaces=interfaces, nodes=nodes, logging=logging, quorum=quorum_section(stack))
    return text.encode()


def _lines(indent: int, pairs) -> str:
    return "".join(f"{' ' * indent}{key}: {value}\n" for key, value in pairs if value is not None)


def quorum_section(stack: Stack) -> str:
    """The inside of corosync.conf's quorum section after its provider: two_node, or the
    quorum device of ``stack.quorum``."""
    q = stack.quorum
    if q is None:
        return TWO_NODE
    # ffsplit needs exactly one vote; lms wants corosync's default (nodes - 1)
    device = _lines(8, [("votes", 1 if q.algorithm == "ffsplit" else None),
                        ("timeout", q.timeout), ("sync_timeout", q.sync_timeout)])
    net = _lines(12, [("host", q.host), ("port", q.port), ("algorithm", q.algorithm),
                      ("tie_breaker", tie_breaker(stack, q)), ("tls", q.tls)])
    return Template(DEVICE).substitute(host=q.host, device=device, net=net,
                                       heuristics=_heuristics(q))


def tie_breaker(stack: Stack, quorum: Quorum) -> str:
    """corosync's spelling: lowest, highest or the node id of the named node."""
    if quorum.tie_breaker in ("lowest", "highest"):
        return quorum.tie_breaker
    return str(stack.node(quorum.tie_breaker).nodeid)


def _heuristics(quorum: Quorum) -> str:
    h = quorum.heuristics
    if h is None:
        return ""
    body = _lines(12, [("mode", h.mode), ("timeout", h.timeout),
                       ("sync_timeout", h.sync_timeout), ("interval", h.interval)])
    body += _lines(12, [(f"exec_{name}", command) for name, command in h.execs])
    return ("        # Heuristics: a node whose commands fail scores lower at the arbiter, so\n"
            "        # in a split the node that still reaches them gets the vote.\n"
            f"        heuristics {{\n{body}        }}\n")
