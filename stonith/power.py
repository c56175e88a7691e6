"""The fencing engine: bounded BMC exchanges, retries, verified power changes.

Every exchange with the switch (a login, one status read, one control
request) runs under its own deadline: the library call runs in a daemon
thread and is abandoned when its time is up, because a BMC library may block
far longer than a fence action may take (pyghmi spends about 4 s on each
login attempt to a dead BMC and then says ``'None'``). Transient failures
(no answer, busy, session lost) are retried with a fresh login until
``power_timeout`` runs out; refusals (wrong password, unsupported command)
end the action at once.

A power change is done when the switch *reports* the requested state: the
engine polls every ``stonith_status_sleep`` seconds (25 ms by default, not
the 1 s of pyghmi's ``wait`` or fence-agents' loop) after an optional
``power_wait``.
"""

from __future__ import annotations

import threading
import time

from hapack.stonith.drivers import CYCLE, OFF, ON
from hapack.stonith.errors import BmcTimeout, PowerTimeout
from hapack.timing import Deadline

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar
    T = TypeVar("T")
    from typing import Callable
    from hapack.stonith.fencing import RedactingLogger
    from hapack.stonith.fencing import CommonParams
    from hapack.log import Logger

RETRY_PAUSE = 0.2     # first pause between a failed exchange and the next login
RETRY_PAUSE_MAX = 1.0
MIN_EXCHANGE = 0.25   # the last look at the deadline still gets this long
CLOSE_TIMEOUT = 0.5   # logging out must never hold up the result


class Timing:
    """The time budget of one action, from the parameters."""

    __slots__ = ("power_timeout", "power_wait", "poll", "login", "command")

    def __init__(self, power_timeout=20.0, power_wait=0.0, poll=0.025, login=5.0, command=3.0):
        self.power_timeout = power_timeout
        self.power_wait = power_wait
        self.poll = poll
        self.login = login
        self.command = command

    @classmethod
    def from_values(cls, values: CommonParams) -> "Timing":
        return cls(values.power_timeout, values.power_wait, values.stonith_status_sleep,
                   values.login_timeout, values.shell_timeout)


def bounded(function: Callable[[], T], seconds: float, what: str) -> T:
    """function() in a daemon thread; BmcTimeout if it runs past ``seconds``."""
    outcome: dict[str, Any] = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=what, daemon=True)
    worker.start()
    worker.join(max(seconds, 0.0))
    if worker.is_alive():
        raise BmcTimeout(f"{what}: no answer within {seconds:.1f}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def pause(seconds: float, deadline: Deadline) -> None:
    time.sleep(deadline.left(seconds))


class Device:
    """A driver behind deadlines: logs in on first use and after a failure."""

    def __init__(self, opener, where, timing, log):
        self.opener = opener      # () -> Driver, logs in
        self.where = where        # "IPMI BMC 192.0.2.1:623", for messages
        self.timing = timing
        self.log = log
        self.driver = None

    def _slice(self, limit, deadline):
        return limit if deadline is None else min(limit, max(deadline.left(), MIN_EXCHANGE))

    def _connected(self, deadline):
        if self.driver is None:
            started = time.monotonic()
            try:
                self.driver = bounded(self.opener, self._slice(self.timing.login, deadline),
                                      f"login to {self.where}")
            except BmcTimeout as exc:
                raise BmcTimeout(f"{exc} (check ip and ipport, and that the BMC is up "
                                 "and reachable)") from None
            self.log.debug(f"logged in to {self.where} in "
                           f"{(time.monotonic() - started) * 1000:.0f} ms")
        return self.driver

    def get_power(self, deadline: Deadline | None = None) -> str:
        driver = self._connected(deadline)
        return bounded(driver.get_power, self._slice(self.timing.command, deadline),
                       f"power status from {self.where}")

    def set_power(self, state: str, deadline: Deadline | None = None) -> None:
        driver = self._connected(deadline)
        bounded(lambda: driver.set_power(state), self._slice(self.timing.command, deadline),
                f"power {state} request to {self.where}")
        self.log.info(f"power {state} request accepted by {self.where}")

    def drop(self) -> None:
        """Forget the session after a failure; the next call logs in again."""
        driver, self.driver = self.driver, None
        if driver is not None:
            try:
                bounded(driver.close, CLOSE_TIMEOUT, f"logout from {self.where}")
            except Exception as exc:  # a broken session may not log out cleanly
                self.log.debug(f"logout from {self.where}: {exc}")

    close = drop


class Retries:
    """Transient failures within one deadline: log out, back off, say each new error once."""

    def __init__(self, device, deadline, log):
        self.device = device
        self.deadline = deadline
        self.log = log
        self.wait = RETRY_PAUSE
        self.error = None

    def failed(self, exc: Exception) -> None:
        """Re-raise what another try cannot fix; otherwise prepare the next try."""
        if not getattr(exc, "transient", False):
            raise exc
        if self.error is None or str(exc) != str(self.error):
            self.log.warning(f"{exc}; retrying" if not self.deadline.expired else str(exc))
        else:
            self.log.debug(f"again: {exc}")
        self.error = exc
        self.device.drop()
        pause(self.wait, self.deadline)
        self.wait = min(self.wait * 2, RETRY_PAUSE_MAX)


def ensure_power(device: Device, target: str, log: Logger | RedactingLogger,
                 deadline: Deadline | None = None) -> bool:
    """Bring the power to ``target`` (ON or OFF) and return once the switch reports it.

    Returns True if a request was sent, False if the power already was in
    that state. Raises PowerTimeout when ``deadline`` (default: a new
    ``power_timeout``) passes first, or the first non-transient FenceError.
    """
    timing = device.timing
    deadline = Deadline(timing.power_timeout) if deadline is None else deadline
    retries = Retries(device, deadline, log)
    sent = ever_sent = False
    state = None
    while True:
        try:
            state = device.get_power(deadline)
            retries.error = None
            if state == target:
                return ever_sent
            if not sent:
                device.set_power(target, deadline)
                sent = ever_sent = True
                pause(timing.power_wait, deadline)
                continue  # first look right away: some switches are instant
        except Exception as exc:
            retries.failed(exc)
            sent = False  # after a new login, look and ask again
        if deadline.expired:
            raise PowerTimeout(_timeout_text(device, target, state, retries.error))
        pause(timing.poll, deadline)


def cycle(device: Device, log: Logger | RedactingLogger) -> bool:
    """One power-cycle request (method=cycle); a powered-off node is switched on.

    The switch's acceptance is the only confirmation a cycle can have: the
    power is on before and after it.
    """
    deadline = Deadline(device.timing.power_timeout)
    retries = Retries(device, deadline, log)
    while True:
        try:
            if device.get_power(deadline) == OFF:
                log.info(f"{device.where} is off; a cycle means power on")
                return ensure_power(device, ON, log, deadline)  # within the same budget
            device.set_power(CYCLE, deadline)
            return True
        except Exception as exc:
            retries.failed(exc)
            if deadline.expired:
                raise PowerTimeout(_timeout_text(device, CYCLE, None, exc)) from None


def _timeout_text(device, target, state, last_error):
    budget = f"within power_timeout={device.timing.power_timeout:g}s"
    if last_error is None:
        return f"{device.where} still reports power {state} {budget} after the {target} request"
    return f"power {target} of {device.where} not confirmed {budget}; last error: {last_error}"
