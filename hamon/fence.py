"""Cutting the peer's power: fence_bmc, run as pacemaker-fenced would run it.

The peer's BMC is described once in the stack file (``[nodes.bmc]``);
:class:`Fencer` hands those parameters to ``fence_bmc`` as ``key=value``
lines on stdin (the fence-agents protocol) with ``action=off`` or
``action=status``. ``off`` exits 0 only once the BMC reports the power off.
A confirmed power-off is written to the partition agent's fence
confirmation file (:mod:`hapack.confirm`), the evidence its promotion gate
accepts.
"""

from __future__ import annotations

from hapack.hamon.snapshot import Power
from hapack.proc import CommandError, run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.hamon.events import EventLog

STATUS_ON, STATUS_OFF = 0, 2
LOGIN_TIMEOUT = 5.0   # fence_bmc's own default, kept within our fence timeout


class FenceFailed(Exception):
    """The BMC did not confirm (or could not tell) what was asked."""


class Fencer:
    def __init__(self, agent, peer, bmc, timeout, log):
        self.agent = agent
        self.peer = peer
        self.bmc = bmc
        self.timeout = timeout
        self.log = log

    def request(self, action: str) -> str:
        params = {k: v for k, v in self.bmc.agent_params(self.peer).items()
                  if not k.startswith("pcmk_")}
        params.update(action=action, nodename=self.peer, plug=self.peer,
                      power_timeout=f"{self.timeout:g}",
                      login_timeout=f"{min(self.timeout, LOGIN_TIMEOUT):g}")
        return "".join(f"{k}={v}\n" for k, v in params.items())

    def _run(self, action):
        secrets = (self.bmc.password,) if self.bmc.password else ()
        try:
            return run([self.agent], input=self.request(action), timeout=self.timeout + 5,
                       secrets=secrets, log=self.log)
        except CommandError as exc:
            raise FenceFailed(str(exc)) from None

    def status(self) -> Any:
        """Power.ON or Power.OFF as the BMC reports it; FenceFailed if it cannot tell."""
        result = self._run("status")
        if result.returncode == STATUS_OFF:
            return Power.OFF
        if result.returncode == STATUS_ON:
            return Power.ON
        raise FenceFailed(f"status of {self.peer}: {_last_line(result)}")

    def off(self) -> None:
        """Power the peer off; returns once the BMC reports it off, else FenceFailed."""
        result = self._run("off")
        if result.returncode != 0:
            raise FenceFailed(f"off of {self.peer}: {_last_line(result)}")


def _last_line(result):
    text = result.output() or f"exit {result.returncode}"
    return text.splitlines()[-1]


def record_confirmation(path: str, peer: str, node: str, how: str, log: EventLog) -> None:
    """Write the fence confirmation file for the partition's gate (:mod:`hapack.confirm`).

    An empty path disables it. A file that cannot be written is logged, not
    raised: the peer is off either way; the gate then lacks this evidence.
    """
    from hapack import confirm
    try:
        if confirm.write(path, peer, node, how):
            log.info(f"{peer} confirmed off: recorded in {path}")
    except confirm.ConfirmationError as exc:
        log.warning(f"{peer} is off, but the fence confirmation was not recorded: {exc}")
