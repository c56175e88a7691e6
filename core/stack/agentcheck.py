"""The stack's resources against their agents' declarations.

Every ``ocf:hapack:<name>`` is looked up in the pack's one table of agents
(:mod:`hapack.agents`): an unknown name is a problem that lists the known
ones. A hapack agent's declaration is the single source of

- its operation defaults: the action timeouts (and monitor intervals) it
  declares in its meta-data, unless the stack file's ``[*.ops]`` says otherwise;
- its parameters: unknown names, missing required ones and values the
  declaration refuses are problems naming the key. A secret value (a
  password) is never quoted in a problem.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any

from hapack import agents
from hapack.stack.model import (FENCE_AGENT, FENCE_AGENT_DIR, FENCE_AGENT_NAME, FOREIGN_AGENT_OPS,
                                OPS_KEYS, Stack)
from hapack.stack.reader import Reader, join

#: A provider or type: a plain name (no '/', no leading '.' or '-', not empty).
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_SPEC_RE = re.compile(rf"^ocf:({_NAME}):({_NAME})$")
_SHORT_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def agent_spec(text: str) -> str:
    """A layer's ``agent``: a hapack agent name or a full OCF spec, as ``ocf:provider:type``.

    Provider and type become path components (``resource.d/<provider>/<type>``,
    Heartbeat's ``ocf/<provider>/<type>``): only plain names are taken.
    """
    if _SHORT_RE.fullmatch(text):
        return f"ocf:{agents.PROVIDER}:{text}"
    if not _SPEC_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not an agent: use a hapack agent name (\"postgresql\") or "
                         "a full OCF spec (\"ocf:heartbeat:pgsql\") whose provider and type are "
                         "plain names (letters, digits, '_', '.', '-'; not starting with '.' "
                         "or '-')")
    return text


def _declaration(r: Reader, key: str, spec: str) -> Any:
    """The AGENT of a hapack agent spec; None for another provider's, or on a problem."""
    _, provider, name = spec.split(":")
    if provider != agents.PROVIDER:
        return None
    try:
        return agents.ocf_agent(name)
    except agents.UnknownAgent as exc:
        r.problem(join(key, "agent"), f"{spec}: {exc}")
        return None


def declared_ops(r: Reader, key: str, spec: str, kind: str) -> dict[str, int]:
    """Operation defaults (ms) for the resource at ``key``: its agent's declared action
    timeouts and monitor intervals (another provider's agent: FOREIGN_AGENT_OPS)."""
    if spec.split(":")[1] != agents.PROVIDER:
        return dict(FOREIGN_AGENT_OPS)
    agent = _declaration(r, key, spec)
    if agent is None:
        return {}
    found: dict[str, Any] = {}
    for action in agent.actions:
        if action.name == "monitor":
            if (action.depth or 0) != 0:
                continue
            prefix = "promoted_" if action.role == "Promoted" else ""
            found.setdefault(f"{prefix}monitor_interval", action.interval * 1000)
            found.setdefault("monitor_timeout", action.timeout * 1000)
        else:
            found.setdefault(f"{action.name}_timeout", action.timeout * 1000)
    return {name: int(found[name]) for name in OPS_KEYS[kind] if name in found}


def declared_default(spec: str, name: str) -> Any:
    """The declared default of parameter ``name`` of the hapack agent ``spec``."""
    agent = agents.ocf_agent(spec.split(":")[2])
    return next(p.default for p in agent.params if p.name == name)


def check_agents(r: Reader, stack: Stack) -> None:
    """Every resource's parameters against its agent's declaration."""
    _check_params(r, "vip", stack.vip.agent, dict(stack.vip.params),
                  _without(stack.vip.agent_params(), stack.vip.params))
    _check_params(r, "partition", stack.partition.agent, dict(stack.partition.params),
                  _without(stack.partition.agent_params(), stack.partition.params))
    for i, layer in enumerate(stack.layers):
        if layer.agent_provider == agents.PROVIDER:
            _check_params(r, join("layers", i), layer.agent, dict(layer.params),
                          _without(layer.agent_params(), layer.params))
    for i, node in enumerate(stack.nodes):
        full = node.bmc.agent_params(node.name, node.fence_delay)
        owned = {k: v for k, v in _without(full, node.bmc.params).items()
                 if not k.startswith("pcmk_")}
        _check_params(r, join(join("nodes", i), "bmc"), FENCE_AGENT, dict(node.bmc.params),
                      owned)
        _check_fences(r, join(join("nodes", i), "fence"), node)


def installed_fence_agents(directory: str | None = None) -> list[str]:
    """The fence agents installed here (``fence_*`` executables in ``directory``,
    by default where Pacemaker looks)."""
    directory = directory or FENCE_AGENT_DIR
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith("fence_")
                  and os.access(os.path.join(directory, n), os.X_OK))


def _check_fences(r: Reader, key: str, node: Any) -> None:
    """A further device's agent is installed (when this machine has fence agents at all:
    a stack may be rendered away from the cluster); fence_bmc's parameters are checked
    against its declaration, as the BMC's are."""
    installed = installed_fence_agents()
    for k, device in enumerate(node.fences):
        where = join(key, k)
        if installed and device.agent not in installed and device.agent != FENCE_AGENT_NAME:
            close = difflib.get_close_matches(device.agent, installed, n=5, cutoff=0.6)
            hint = (f"did you mean {', '.join(close)}?" if close else
                    f"installed: {', '.join(installed)}")
            r.problem(join(where, "agent"), f"{device.agent} is not installed in "
                      f"{FENCE_AGENT_DIR} ({hint})")
        if device.agent == FENCE_AGENT_NAME:
            full = device.agent_params(node.name)
            owned = {n: v for n, v in _without(full, device.params).items()
                     if not n.startswith("pcmk_")}
            _check_params(r, where, FENCE_AGENT, dict(device.params), owned)


def _declared(r: Reader, key: str, spec: str) -> tuple | None:
    if spec == FENCE_AGENT:
        return tuple(agents.fence_agent(FENCE_AGENT_NAME).params)
    agent = _declaration(r, key, spec)
    return None if agent is None else tuple(agent.params)


def _check_params(r: Reader, key: str, spec: str, given: dict, owned: dict) -> None:
    declared = _declared(r, key, spec)
    if declared is None:
        return
    by_name = {p.name: p for p in declared}
    values = dict(given)
    values.update(owned)
    for name, text in values.items():
        if name.startswith("pcmk_"):
            continue
        where = join(join(key, "params"), name) if name in given else key
        param = by_name.get(name)
        if param is None:
            r.problem(where, f"{spec} has no parameter {name!r} (its parameters: "
                      f"{', '.join(by_name)})")
            continue
        try:
            param.convert(text)
        except ValueError as exc:
            r.problem(where, f"{spec} refuses the value of {name} (not shown: it is secret)"
                      if param.secret else f"{spec} refuses the value {text!r}: {exc}")
    for param in declared:
        if param.required and param.name not in values:
            r.problem(join(key, "params"), f"{spec} requires parameter {param.name!r}; add it "
                      f"to {key}.params")


def fence_aliases() -> dict[str, str]:
    """Every other name fence_bmc accepts for one of its parameters -> the parameter."""
    return {alias: p.name for p in agents.fence_agent(FENCE_AGENT_NAME).params
            for alias in p.aliases}


def _without(full: dict, given: Any) -> dict:
    return {k: v for k, v in full.items() if k not in given}
