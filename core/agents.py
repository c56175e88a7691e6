"""The pack's agents: one table of names and the modules that implement them.

Every consumer reads this table and nothing else: ``hapack install`` (which
executables to write), the stack file (which ``ocf:hapack:<name>`` exist, and
their declared parameters and action timeouts), the README's parameter
tables and the golden meta-data tests. A module listed here that cannot be
imported is a broken installation and raises; nothing is filtered out.
"""

from __future__ import annotations

import importlib
from typing import Any

PROVIDER = "hapack"

#: ocf:hapack:<name> -> module
OCF_AGENTS: dict[str, str] = {
    "vip": "hapack.ocf.vip",
    "partition": "hapack.ocf.partition",
    "apache": "hapack.ocf.apache",
    "nginx": "hapack.ocf.nginx",
    "tomcat": "hapack.ocf.tomcat",
    "activemq": "hapack.ocf.activemq",
    "postgresql": "hapack.ocf.postgresql",
    "slapd": "hapack.ocf.slapd",
}
#: stonith:<name> (the fencer's agents, /usr/sbin/<name>) -> module
FENCE_AGENTS: dict[str, str] = {"fence_bmc": "hapack.stonith.fence_bmc"}
#: /usr/sbin tools -> module: the partition's DRBD handlers (drbd.conf) and Pacemaker's
#: alert agent (the CIB's <alert path=...>, from the stack file's [alerts])
SBIN_TOOLS: dict[str, str] = {"hapack-drbd-handler": "hapack.ocf.partition_handler",
                              "hapack-alert": "hapack.alertagent"}
#: cluster-glue external/<name> plugins -> module
GLUE_PLUGINS: dict[str, str] = {"bmc": "hapack.stonith.glue"}
#: the commands an operator types (on root's PATH) -> module
COMMANDS: dict[str, str] = {"hapack": "hapack.cli", "hamon": "hapack.hamon.cli"}


class UnknownAgent(KeyError):
    """A name that is not one of the pack's agents; the message lists the known ones."""

    def __init__(self, name: str, known: dict[str, str]):
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:
        return f"{self.name!r} is not a hapack agent (known: {', '.join(self.known)})"


def ocf_module(name: str) -> str:
    """The module of ``ocf:hapack:<name>``; :class:`UnknownAgent` if there is none."""
    try:
        return OCF_AGENTS[name]
    except KeyError:
        raise UnknownAgent(name, OCF_AGENTS) from None


def ocf_agent(name: str) -> Any:
    """The declaration (``AGENT``) of ``ocf:hapack:<name>``: params and actions."""
    return importlib.import_module(ocf_module(name)).AGENT


def fence_agent(name: str) -> Any:
    """The declaration (``AGENT``) of the fence agent ``stonith:<name>``."""
    try:
        module = FENCE_AGENTS[name]
    except KeyError:
        raise UnknownAgent(name, FENCE_AGENTS) from None
    return importlib.import_module(module).AGENT


def params_of(name: str) -> tuple:
    """The parameter declarations of an OCF agent (``vip``) or of a module path
    (``hapack.stonith.fence_bmc``): its ``AGENT.params``, else its ``PARAMS``."""
    module = importlib.import_module(name if "." in name else ocf_module(name))
    agent = getattr(module, "AGENT", None)
    return tuple(agent.params if agent is not None and hasattr(agent, "params")
                 else module.PARAMS)
