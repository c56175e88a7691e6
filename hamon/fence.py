"""Cutting the peer's power: its fence devices, level by level, as pacemaker-fenced runs them.

The peer's ways to cut its power are described once in the stack file: its
BMC (``[nodes.bmc]``, level 1, through ``fence_bmc``) and any further devices
(``[[nodes.fence]]``, levels 2.., any fence agent, e.g. a PDU's). The same
order is Pacemaker's fencing topology. :class:`Fencer` hands each device its
parameters as ``key=value`` lines on stdin (the fence-agents protocol) with
``action=off`` or ``action=status``:

* ``off`` tries the levels in order, each device with its own timeout. A level
  succeeds when every one of its devices powered the peer off: fence_bmc's
  ``off`` exits 0 only once the BMC reports the power off; another agent's
  ``off`` is then verified with its own ``status`` (exit 2, off). The first
  level that succeeds ends the fence; every level's outcome is logged; when
  all fail, :class:`FenceFailed` names each level's failure.
* ``status`` asks the levels in order until one can tell: ON if a device of
  that level reports on, OFF if all report off.

The level that verified the power off is :attr:`Fencer.verified_by`, written
with the fence confirmation (:mod:`hapack.confirm`), the evidence the
partition agent's promotion gate accepts.

The BMC (level 1) is asked the moment the peer turns late, and most of a
``fence_bmc status`` is its start (the interpreter, pyghmi: ~70 ms of ~90 ms
here, more under load). So :meth:`Fencer.prestart` keeps one ``fence_bmc``
per such device started ahead (:func:`hapack.command.start`), its driver
imported, waiting on stdin at a low priority; a request hands it the same
``key=value`` lines and raises it to normal priority, and a new one is started
in the background for the next request. A spare that died is not used (the
request then starts the agent as before); the protocol, the timeout and the
answer's meaning are unchanged.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from hapack.hamon.snapshot import Power
from hapack.command import CommandError, run, start
from hapack.stack import FENCE_AGENT_NAME, fence_device_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.command import Started
    from hapack.hamon.events import EventLog

STATUS_ON, STATUS_OFF = 0, 2
LOGIN_TIMEOUT = 5.0   # fence_bmc's own default, kept within our fence timeout
PRELOAD = "HAPACK_FENCE_PRELOAD"  # hapack.stonith.fence_bmc.PRELOAD (not imported: pyghmi-free)
SPARE_NICE = 10       # a spare's imports never compete with a takeover's agents


class FenceFailed(Exception):
    """No level confirmed (or could tell) what was asked."""


@dataclass(frozen=True)
class Device:
    """One fence device of the peer: the agent to run and its parameters."""

    name: str                 # the CIB's id: fence-<peer>[-<name>]
    agent: str                # the executable
    params: dict
    secrets: tuple = ()
    verifies_off: bool = True  # its off exits 0 only once the power is verified off
    preload: str = ""          # fence_bmc's driver: the agent may be started ahead

    @property
    def label(self) -> str:
        return f"{self.name} ({self.agent.rsplit('/', 1)[-1]})"


def peer_levels(agent: str, peer: Any) -> list[tuple[int, list[Device]]]:
    """(level, devices) of ``peer`` (a stack Node) in the order they are tried: its BMC
    through ``agent`` (fence_bmc), then its [[nodes.fence]] devices."""
    bmc = peer.bmc
    levels = {1: [Device(peer.fence_device, agent, bmc.agent_params(peer.name),
                         (bmc.password,) if bmc.password else (), preload=bmc.driver)]}
    for device in peer.fences:
        levels.setdefault(device.level, []).append(Device(
            device.device_id(peer.name), device.path, device.agent_params(peer.name),
            verifies_off=device.agent == FENCE_AGENT_NAME))
    return sorted(levels.items())


class Fencer:
    def __init__(self, agent, peer, bmc, timeout, log, levels=None):
        self.agent = agent
        self.peer = peer
        self.bmc = bmc
        self.timeout = timeout
        self.log = log
        self.levels = levels or [(1, [Device(fence_device_id(peer), agent, bmc.agent_params(peer),
                                             (bmc.password,) if bmc.password else ())])]
        self.verified_by = ""
        self._spares: dict[str, Started] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_peer(cls, agent: str, peer: Any, timeout: float, log: EventLog) -> Fencer:
        """The fencer of ``peer`` (a stack Node): every level the stack file gives it."""
        return cls(agent, peer.name, peer.bmc, timeout, log, peer_levels(agent, peer))

    def request(self, action: str, device: Device | None = None) -> str:
        device = device or self.levels[0][1][0]
        params = {k: v for k, v in device.params.items() if not k.startswith("pcmk_")}
        # as pacemaker-fenced: the target in plug unless the device names its outlet
        if "plug" not in params and "port" not in params:
            params["plug"] = self.peer
        params.update(action=action, nodename=self.peer, power_timeout=f"{self.timeout:g}",
                      login_timeout=f"{min(self.timeout, LOGIN_TIMEOUT):g}")
        return "".join(f"{k}={v}\n" for k, v in params.items())

    def _run(self, device, action):
        request, timeout = self.request(action, device), self.timeout + 5
        spare = self._take(device)
        try:
            if spare is not None:
                return spare.finish(request, timeout=timeout, secrets=device.secrets,
                                    log=self.log)
            return run([device.agent], input=request, timeout=timeout,
                       secrets=device.secrets, log=self.log)
        except CommandError as exc:
            raise FenceFailed(f"{action} of {self.peer} through {device.label}: {exc}") from None
        finally:
            if device.preload:
                threading.Thread(target=self._start, args=(device,), daemon=True,
                                 name="hamon-spare").start()

    # -- agents started ahead -------------------------------------------------------
    def prestart(self) -> None:
        """Start every preloading device's agent ahead of its first request."""
        for _, devices in self.levels:
            for device in devices:
                if device.preload:
                    self._start(device)

    def close(self) -> None:
        """End the spares (their stdin closed unused: they exit)."""
        with self._lock:
            spares, self._spares = list(self._spares.values()), {}
        for spare in spares:
            spare.cancel()

    def _start(self, device):
        with self._lock:
            if device.name in self._spares:
                return
            try:
                spare = start([device.agent], env={**os.environ, PRELOAD: device.preload})
            except CommandError as exc:
                self.log.warning(f"{device.label} could not be started ahead: {exc}")
                return
            _renice(spare.proc.pid, SPARE_NICE)
            self._spares[device.name] = spare

    def _take(self, device):
        """The device's spare if it still waits (normal priority again), else None."""
        with self._lock:
            spare = self._spares.pop(device.name, None)
        if spare is None:
            return None
        if not spare.waiting:   # died (killed, out of memory): reap it, run afresh
            spare.cancel()
            return None
        _renice(spare.proc.pid, 0)
        return spare

    def _status(self, device):
        result = self._run(device, "status")
        if result.returncode == STATUS_OFF:
            return Power.OFF
        if result.returncode == STATUS_ON:
            return Power.ON
        raise FenceFailed(f"status of {self.peer} through {device.label}: {_last_line(result)}")

    def _off(self, device):
        result = self._run(device, "off")
        if result.returncode != 0:
            raise FenceFailed(f"off of {self.peer} through {device.label}: {_last_line(result)}")
        if not device.verifies_off and self._status(device) is not Power.OFF:
            raise FenceFailed(f"off of {self.peer} through {device.label}: the agent reported "
                              "success, but its status still says on")

    def status(self) -> Any:
        """Power.ON or Power.OFF as the first level that can tell reports it;
        FenceFailed if none can."""
        failures = []
        for level, devices in self.levels:
            try:
                seen = [self._status(device) for device in devices]
            except FenceFailed as exc:
                failures.append(f"level {level}: {exc}")
                continue
            if all(power is Power.OFF for power in seen):
                self.verified_by = _how(level, devices, "status")
                return Power.OFF
            return Power.ON
        raise FenceFailed("; ".join(failures))

    def off(self) -> None:
        """Power the peer off, level by level; returns once a level verified it off,
        else FenceFailed naming every level's failure."""
        failures = []
        for level, devices in self.levels:
            try:
                for device in devices:
                    self._off(device)
            except FenceFailed as exc:
                failures.append(f"level {level}: {exc}")
                self.log.warning(f"fencing {self.peer}: level {level} failed: {exc}")
                continue
            self.verified_by = _how(level, devices, "off")
            self.log.info(f"fencing {self.peer}: level {level} "
                          f"({', '.join(d.label for d in devices)}) powered it off")
            return
        raise FenceFailed("; ".join(failures))


def _renice(pid, nice):
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:  # gone, or not ours to raise again (not root): it runs, only slower
        pass


def _how(level: int, devices: list[Device], action: str) -> str:
    return f"level {level}: " + ", ".join(f"{d.label} {action}" for d in devices)


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
