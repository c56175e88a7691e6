"""The stack for Linux-HA Heartbeat 3 in its classic (haresources) mode.

Files, laid out relative to ``/etc`` (copy the tree to both nodes' /etc):

    ha.d/ha.cf                      from ha.cf.tmpl: links, timing, STONITH, nodes
    ha.d/haresources                the primary and its resource group, in start order
    ha.d/authkeys                   sha1 key (mode 0600): kept if present, else new
    ha.d/conf/OCF/<type>/<name>     OCF_RESKEY_* of each resource, read by the OCF wrapper
    ha.d/ocf/<provider>/<type>      the agent as the OCF wrapper calls it (status -> monitor)
    default/heartbeat               OCF_AGENTS=/etc/ha.d/ocf, so the wrapper finds those

Heartbeat's OCF wrapper (``/etc/ha.d/resource.d/OCF``) runs
``$OCF_AGENTS/*/<type> <action>`` and asks ``status`` (for its own monitor too),
which OCF 1.1 agents do not implement; ResourceManager decides from that answer
whether it holds a resource (skip a start, or reboot after a failed stop). Each
``ha.d/ocf/<provider>/<type>`` runs the real agent and answers ``status`` with its
``monitor``, in the words ResourceManager looks for.

The group follows the patent's order: VIP, (the fence is Heartbeat's own step
before takeover), the partition, the stateful layers. Heartbeat v1 has no
clones and no monitoring: the stateless layers are not Heartbeat's to run
(they run on both nodes all the time), and the partition runs as a plain
primitive whose start must leave it promoted and mounted.
"""

from __future__ import annotations

import os
import secrets
from importlib import resources
from string import Template

from hapack.stack import Stack

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.stack.model import Node

OCF_ROOT = "/usr/lib/ocf"
AGENTS_DIR = "/etc/ha.d/ocf"    # OCF_AGENTS: the status-answering agents below


def _template(name: str) -> Template:
    return Template(resources.files("hapack.cib").joinpath(name).read_text(encoding="utf-8"))


def _hb_time(ms: int) -> str:
    """Heartbeat reads bare numbers as seconds and accepts an 'ms' suffix."""
    return str(ms // 1000) if ms % 1000 == 0 else f"{ms}ms"


def stonith_values(stack: Stack, node: Node) -> tuple[list[str], list[str]]:
    """The words after ``external/bmc`` on the stonith_host line of the device that fences
    ``node`` (every getconfignames position, '-' if unset), and the BMC settings that
    cannot reach the plugin that way."""
    from hapack.stonith.glue import CONFIG_NAMES, UNSET
    params = node.bmc.agent_params(node.name)
    params["fence_confirmed_file"] = stack.partition.fence_confirmed_file
    values = [params.get(name) or UNSET for name in CONFIG_NAMES]
    lost = [k for k in params if k not in CONFIG_NAMES and not k.startswith("pcmk_")]
    return values, lost


def ha_cf(stack: Stack, source: str) -> str:
    hb = stack.heartbeat
    if hb.logfile:
        logging = f"logfile {hb.logfile}\nlogfacility none"
    else:
        logging = "logfacility daemon"
    ucast = []
    for link in stack.links:
        for node in stack.nodes:
            ucast.append(f"ucast {link.interface} {node.address(link.name).ip}")
    stonith = []
    for node in stack.nodes:
        values, lost = stonith_values(stack, node)
        peer = stack.peer(node.name).name
        stonith.append(f"# {peer} powers {node.name} off through {node.name}'s BMC.")
        if lost:
            stonith.append("# Not passed to external/bmc (stonith_host passes only its "
                           "getconfignames): " + ", ".join(lost) + ".")
        if node.fences:
            stonith.append("# Further fencing levels, not used by Heartbeat (cluster-glue "
                           "runs no fence-agents): "
                           + ", ".join(d.device_id(node.name) for d in node.fences) + ".")
        stonith.append(f"stonith_host {peer} external/bmc {' '.join(values)}")
    return _template("ha.cf.tmpl").substitute(
        cluster_name=stack.cluster.name, source=source, logging=logging,
        keepalive=_hb_time(hb.keepalive), deadtime=_hb_time(hb.deadtime),
        warntime=_hb_time(hb.warntime), initdead=_hb_time(hb.initdead), udpport=hb.udpport,
        link_names=", ".join(f"{link.name} ({link.interface})" for link in stack.links),
        ucast="\n".join(ucast), stonith="\n".join(stonith),
        node_lines="\n".join(f"node {node.name}" for node in stack.nodes))


def _group(stack: Stack) -> list[tuple[str, str, dict, Any]]:
    """(name, agent type, parameters, timeout ms) in Heartbeat start order:
    the CIB's order after the promotion, with the partition right before the first
    stateful layer (after the VIP when the VIP comes first, as in the patent)."""
    order = list(stack.stateful_order())
    order.insert(1 if order[0] == "vip" else 0, "partition")
    layers = {layer.name: layer for layer in stack.stateful}
    vip, part = stack.vip, stack.partition
    # the start/stop/promote/demote timeouts are set here: defaults from the agents' actions
    entries: list[tuple[str, str, dict, Any]] = []
    for name in order:
        if name == "vip":
            entries.append((name, "vip", vip.agent_params(),
                            max(vip.ops.start_timeout, vip.ops.stop_timeout)))  # type: ignore[type-var]
        elif name == "partition":  # no clone here: start promotes, stop demotes
            entries.append((name, "partition", dict(part.agent_params(), promote_on_start="true"),
                            max(part.ops.start_timeout + part.ops.promote_timeout,  # type: ignore[operator]
                                part.ops.stop_timeout + part.ops.demote_timeout)))  # type: ignore[operator]
        else:
            layer = layers[name]
            entries.append((name, layer.agent_type, layer.agent_params(),
                            max(layer.ops.start_timeout, layer.ops.stop_timeout)))  # type: ignore[type-var]
    return entries


def haresources(stack: Stack, source: str) -> str:
    entries = _group(stack)
    lines = [
        f"# haresources for the hapack stack \"{stack.cluster.name}\", rendered by "
        f"'hapack render heartbeat'",
        f"# from {source}. One group, owned by the primary ({stack.primary.name}), started left",
        "# to right and stopped right to left: " + ", ".join(e[0] for e in entries) + ".",
        "# Each OCF::<type>::<name> reads its parameters from conf/OCF/<type>/<name>.",
    ]
    if stack.stateless:
        lines.append("# Not here: the stateless layers ("
                     + ", ".join(layer.name for layer in stack.stateless)
                     + ") run on both nodes all the time, outside Heartbeat.")
    lines.append(stack.primary.name + " " + " ".join(f"OCF::{t}::{n}" for n, t, _, _ in entries))
    return "\n".join(lines) + "\n"


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def instance_file(stack: Stack, name: str, agent_type: str, params: dict, timeout_ms: int,
                  provider: str) -> str:
    lines = [f"# {name} ({provider}:{agent_type}) for Heartbeat's OCF wrapper, rendered by hapack.",
             f"OCF_ROOT={OCF_ROOT}",
             f"OCF_RESOURCE_INSTANCE={name}",
             f"OCF_RESOURCE_TYPE={agent_type}",
             f"OCF_RESOURCE_PROVIDER={provider}",
             "# Heartbeat gives actions no timeout of their own; the agent budgets this one.",
             f"OCF_RESKEY_CRM_meta_timeout={timeout_ms}"]
    lines += [f"OCF_RESKEY_{key}={_sh_quote(value)}" for key, value in params.items()]
    return "\n".join(lines) + "\n"


DEFAULT_HEARTBEAT = f"""\
# /etc/default/heartbeat, rendered by 'hapack render heartbeat'.
# Heartbeat's OCF wrapper looks for agents in $OCF_AGENTS/*/<type>; point it at the
# rendered agents that answer its 'status' (see {AGENTS_DIR}/*/*).
OCF_AGENTS={AGENTS_DIR}
"""

STATUS_AGENT = """\
#!/bin/sh
# ocf:${provider}:${type} for Heartbeat's OCF wrapper, rendered by 'hapack render heartbeat'.
# The wrapper asks 'status' (for its monitor too), which OCF agents answer as 'monitor':
# running (0, promoted 8, failed promoted 9: it still holds the resource; degraded 190,
# degraded promoted 191: it runs, e.g. the partition without its replica), stopped (7).
agent=${agent}
[ "$$1" = status ] || exec "$$agent" "$$@"
"$$agent" monitor
rc=$$?
case $$rc in
    0|8|9|190|191) echo "running (OCF $$rc)"; exit 0 ;;
    7) echo stopped; exit 3 ;;
    *) echo "failed (OCF $$rc)"; exit 1 ;;
esac
"""


def status_agent(provider: str, agent_type: str) -> str:
    return Template(STATUS_AGENT).substitute(
        provider=provider, type=agent_type,
        agent=_sh_quote(f"{OCF_ROOT}/resource.d/{provider}/{agent_type}"))


def files(stack: Stack, source: str) -> dict[str, tuple[str, int]]:
    """Relative path -> (text, mode), authkeys excluded (see :func:`authkeys`)."""
    out = {
        "ha.d/ha.cf": (ha_cf(stack, source), 0o644),
        "ha.d/haresources": (haresources(stack, source), 0o644),
        "default/heartbeat": (DEFAULT_HEARTBEAT, 0o644),
    }
    providers = {layer.name: layer.agent_provider for layer in stack.layers}
    for name, agent_type, params, timeout in _group(stack):
        provider = providers.get(name, "hapack")
        out[f"ha.d/conf/OCF/{agent_type}/{name}"] = (
            instance_file(stack, name, agent_type, params, timeout, provider), 0o600)
        out[f"ha.d/ocf/{provider}/{agent_type}"] = (status_agent(provider, agent_type), 0o755)
    return out


def authkeys(existing: str | None = None) -> str:
    """The authkeys text: ``existing`` if it is a valid one, else a fresh sha1 key."""
    lines = [line.split() for line in (existing or "").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if lines and lines[0][:1] == ["auth"] and len(lines) > 1:
        return existing or ""  # not empty: it has lines
    key = secrets.token_hex(32)
    return ("# Heartbeat message authentication (HMAC-SHA1); the same file on both nodes, "
            "mode 0600.\nauth 1\n" f"1 sha1 {key}\n")


def write(stack: Stack, source: str, out_dir: str) -> list[str]:
    """Write every file under ``out_dir``; returns the paths written."""
    written = []
    items = dict(files(stack, source))
    keys_path = os.path.join(out_dir, "ha.d", "authkeys")
    try:
        with open(keys_path, encoding="utf-8") as handle:
            existing = handle.read()
    except OSError:
        existing = None
    items["ha.d/authkeys"] = (authkeys(existing), 0o600)
    for rel, (text, mode) in items.items():
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        written.append(path)
    return written

