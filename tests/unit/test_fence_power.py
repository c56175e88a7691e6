"""The fencing engine: bounded exchanges, retries within power_timeout, verification."""

import time

import pytest

from hapack.log import NullLogger
from hapack.stonith import power
from hapack.stonith.drivers import CYCLE, OFF, ON
from hapack.stonith.errors import (AuthError, BmcError, BmcRefused, BmcTimeout,
                                   BmcUnreachable, PowerTimeout)

FAST = dict(poll=0.001, login=0.5, command=0.5)


class Switch:
    """A scripted driver: ``script`` maps a call name to a list of outcomes."""

    def __init__(self, power_state=ON, **script):
        self.power = power_state
        self.script = script
        self.calls = []
        self.logins = 0

    def _next(self, name):
        self.calls.append(name)
        queue = self.script.get(name) or []
        outcome = queue.pop(0) if queue else None
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            return outcome()
        return outcome

    def open(self):
        self.logins += 1
        self._next("open")
        return self

    def get_power(self):
        state = self._next("get_power")
        return state or self.power

    def set_power(self, state):
        self._next(f"set_{state}")
        if state != CYCLE:
            self.power = state

    def close(self):
        self._next("close")


def device(switch, power_timeout=2.0, **timing):
    values = dict(FAST, **timing)
    return power.Device(switch.open, "test BMC", power.Timing(power_timeout, **values),
                        NullLogger())


def test_bounded_returns_the_value_and_reraises_errors():
    assert power.bounded(lambda: 42, 1.0, "answer") == 42
    with pytest.raises(AuthError):
        power.bounded(lambda: (_ for _ in ()).throw(AuthError("no")), 1.0, "x")


def test_bounded_abandons_a_call_that_hangs():
    started = time.monotonic()
    with pytest.raises(BmcTimeout, match="login to x: no answer within 0.1s"):
        power.bounded(lambda: time.sleep(30), 0.1, "login to x")
    assert time.monotonic() - started < 10  # not the 30 s of the call


def test_off_polls_until_the_switch_reports_off():
    switch = Switch(get_power=[ON, ON, ON, ON])  # still on for three polls after the request
    assert power.ensure_power(device(switch), OFF, NullLogger()) is True
    assert switch.calls.count("set_off") == 1
    assert switch.calls.count("get_power") == 5 and switch.power == OFF


def test_already_off_sends_nothing():
    switch = Switch(OFF)
    assert power.ensure_power(device(switch), OFF, NullLogger()) is False
    assert "set_off" not in switch.calls


def test_never_off_is_a_power_timeout():
    switch = Switch(get_power=[ON] * 10 ** 6)
    with pytest.raises(PowerTimeout, match="still reports power on"):
        power.ensure_power(device(switch, power_timeout=0.2), OFF, NullLogger())


def test_transient_failures_are_retried_with_a_new_login():
    switch = Switch(open=[BmcUnreachable("no answer"), None, None],
                    get_power=[ON, BmcError("node busy")])
    assert power.ensure_power(device(switch), OFF, NullLogger()) is True
    assert switch.logins == 3 and switch.power == OFF


def test_refusals_end_the_action_at_once():
    for error in (AuthError("bad password"), BmcRefused("invalid data field")):
        switch = Switch(open=[error])
        with pytest.raises(type(error)):
            power.ensure_power(device(switch), OFF, NullLogger())
        assert switch.logins == 1


def test_a_dead_bmc_fails_within_power_timeout():
    switch = Switch(open=[lambda: time.sleep(30)] * 100)
    started = time.monotonic()
    with pytest.raises(PowerTimeout, match="no answer within"):
        power.ensure_power(device(switch, power_timeout=0.6, login=0.2), OFF, NullLogger())
    assert time.monotonic() - started < 10  # generous: the bound is about 0.85 s


def test_the_request_is_sent_again_after_a_new_login():
    # the first request is lost with the session; after the new login the
    # switch still reports on, so the request must be repeated
    switch = Switch(get_power=[ON, BmcUnreachable("lost session"), ON])
    requests = []
    obey = switch.set_power

    def set_power(state):
        requests.append(state)
        if len(requests) == 2:
            obey(state)

    switch.set_power = set_power
    assert power.ensure_power(device(switch), OFF, NullLogger()) is True
    assert requests == [OFF, OFF] and switch.logins == 2 and switch.power == OFF


def test_cycle_is_one_request_and_an_off_node_is_switched_on():
    switch = Switch(ON)
    assert power.cycle(device(switch), NullLogger()) is True
    assert switch.calls.count("set_cycle") == 1
    switch = Switch(OFF)
    power.cycle(device(switch), NullLogger())
    assert "set_cycle" not in switch.calls and switch.power == ON


def test_drop_never_raises_even_when_logout_hangs():
    switch = Switch(close=[lambda: time.sleep(30)])
    dev = device(switch)
    dev.get_power()
    started = time.monotonic()
    dev.drop()
    assert dev.driver is None and time.monotonic() - started < 10
