"""Running OCF agent actions the way Pacemaker's executor does.

Each resource of the stack file (the partition, the VIP, every layer) is
one :class:`Resource`; :class:`OcfExecutor` runs one of its actions as a
subprocess through :func:`hapack.command.run`: the agent's executable under
``$OCF_ROOT/resource.d/<provider>/<type>``, the parameters as
``OCF_RESKEY_*``, the operation's timeout both as
``OCF_RESKEY_CRM_meta_timeout`` and as the subprocess deadline, and the
``ocf-exit-reason:`` line picked out of stderr.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Mapping

from hapack.ocf.runner import EXIT_REASON_PREFIX, OCF
from hapack.command import CommandError, CommandNotFound, CommandTimeout, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.stack.model import Ops, Stack

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Resource:
    name: str
    agent: str                   # ocf:provider:type
    params: Mapping[str, str]
    ops: Ops                     # milliseconds
    kind: str                    # partition | stateless | vip | stateful

    def timeout(self, action: str) -> float:
        ms = getattr(self.ops, f"{action}_timeout", None) or self.ops.monitor_timeout or 20_000
        return ms / 1000.0

    def interval(self, promoted: bool = False) -> float:
        ms = (self.ops.promoted_monitor_interval if promoted else None) or self.ops.monitor_interval
        return (ms or 10_000) / 1000.0


def stack_resources(stack: Stack) -> tuple[Resource, tuple[Resource, ...], tuple[Resource, ...]]:
    """(partition, stateless layers, stateful side in start order) of a stack."""
    partition = Resource("partition", stack.partition.agent, stack.partition.agent_params(),
                         stack.partition.ops, "partition")
    base = tuple(Resource(layer.name, layer.agent, layer.agent_params(), layer.ops, "stateless")
                 for layer in stack.stateless)
    by_name = {layer.name: layer for layer in stack.stateful}
    side = []
    for name in stack.stateful_order():
        if name == "vip":
            side.append(Resource("vip", stack.vip.agent, stack.vip.agent_params(),
                                 stack.vip.ops, "vip"))
        else:
            layer = by_name[name]
            side.append(Resource(name, layer.agent, layer.agent_params(), layer.ops, "stateful"))
    return partition, base, tuple(side)


@dataclass(frozen=True)
class Outcome:
    rc: int
    reason: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == OCF.SUCCESS

    def describe(self) -> str:
        try:
            name = OCF(self.rc).name.lower().replace("_", " ")
        except ValueError:
            name = f"exit {self.rc}"
        return f"{name}: {self.reason}" if self.reason else name


class OcfExecutor:
    """Runs agent actions on this node."""

    def __init__(self, ocf_root, node, log, rsctmp="/run/resource-agents"):
        self.ocf_root = ocf_root
        self.node = node
        self.log = log
        self.rsctmp = rsctmp

    def path(self, resource: Resource) -> str:
        _, provider, kind = resource.agent.split(":")
        return os.path.join(self.ocf_root, "resource.d", provider, kind)

    def environ(self, resource: Resource, action: str, interval_s: float = 0.0) -> dict[str, str]:
        _, provider, kind = resource.agent.split(":")
        env = {"PATH": PATH, "LANG": "C.UTF-8", "OCF_ROOT": self.ocf_root,
               "OCF_RA_VERSION_MAJOR": "1", "OCF_RA_VERSION_MINOR": "1",
               "OCF_RESOURCE_INSTANCE": resource.name, "OCF_RESOURCE_TYPE": kind,
               "OCF_RESOURCE_PROVIDER": provider, "HA_RSCTMP": self.rsctmp,
               "OCF_RESKEY_CRM_meta_timeout": str(int(resource.timeout(action) * 1000)),
               "OCF_RESKEY_CRM_meta_interval": str(int(interval_s * 1000)),
               "OCF_RESKEY_CRM_meta_on_node": self.node, "OCF_CHECK_LEVEL": "0"}
        for key in ("HA_debug", "HA_LOGFILE", "HA_DEBUGLOG"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update({f"OCF_RESKEY_{k}": str(v) for k, v in resource.params.items()})
        return env

    def run(self, resource: Resource, action: str, interval_s: float = 0.0) -> Outcome:
        """Run ``action`` (start, stop, monitor, promote, demote); never raises."""
        timeout = resource.timeout(action)
        started = time.monotonic()
        try:
            result = run([self.path(resource), action], timeout=timeout,
                         env=self.environ(resource, action, interval_s), log=self.log)
        except CommandNotFound:
            return Outcome(OCF.ERR_INSTALLED, f"{self.path(resource)} is not installed "
                           "('hapack install')", time.monotonic() - started)
        except CommandTimeout:
            return Outcome(OCF.ERR_GENERIC, f"no answer within {timeout:.0f}s",
                           time.monotonic() - started)
        except CommandError as exc:
            return Outcome(OCF.ERR_GENERIC, str(exc), time.monotonic() - started)
        return Outcome(result.returncode, exit_reason(result.stderr, result.returncode),
                       time.monotonic() - started)


#: Codes that say what runs, not that something went wrong: no reason expected.
QUIET_CODES = (OCF.SUCCESS, OCF.NOT_RUNNING, OCF.RUNNING_PROMOTED)
STDERR_TAIL = 200


def exit_reason(stderr: str | None, rc: int = OCF.SUCCESS) -> str:
    """The last ``ocf-exit-reason:`` line of an agent's stderr. A failure without one (an
    agent that died before its runner could say why: a broken wrapper, a signal) gets
    the last line of its stderr instead, so the step's event still says something."""
    lines = (stderr or "").splitlines()
    reasons = [line[len(EXIT_REASON_PREFIX):].strip() for line in lines
               if line.startswith(EXIT_REASON_PREFIX)]
    if reasons:
        return reasons[-1]
    tail = [line.strip() for line in lines if line.strip()]
    if rc in QUIET_CODES or not tail:
        return ""
    return f"no exit reason; stderr: {tail[-1][:STDERR_TAIL]}"
