"""IPMI over LAN: chassis power through pyghmi's session layer.

Only two standard chassis commands are needed (Get Chassis Status, Chassis
Control; IPMI 2.0 section 28), so the driver sends them as raw commands on a
pyghmi :class:`Session` instead of going through ``pyghmi.ipmi.command``:
that skips the OEM detection round trip (Get Device ID) that ``Command``
does before every power call, and the ~50 ms import of pyghmi's OEM handlers
that every agent process would pay. What pyghmi's session does not let a
caller choose, a small subclass pins: the cipher suite (pyghmi offers 17,
then falls back to 3); a race in pyghmi's I/O thread that stalls an exchange
for up to a second is worked around (:func:`slice_io_waits`), and so is its
login registry that made every retry in a process join the first, failed
login (:func:`forget_earlier_login`). IPMI 1.5 (``lanplus=false``) is
refused: pyghmi 1.6's IPMI 1.5 login fails on Python 3 (it concatenates str
and bytes).
"""

from __future__ import annotations

import socket

from hapack.stonith.drivers import CYCLE, OFF, ON, Driver, endpoint
from hapack.stonith.errors import (AuthError, BmcError, BmcRefused, BmcUnreachable,
                                   ConfigError, StatusUnknown)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.stonith.errors import FenceError
    from hapack.stonith.fence_bmc import Params

PRIVILEGES = {"callback": 1, "user": 2, "operator": 3, "administrator": 4}
NETFN_CHASSIS = 0x00
GET_CHASSIS_STATUS = 0x01
CHASSIS_CONTROL = 0x02
CONTROL = {OFF: 0x00, ON: 0x01, CYCLE: 0x02}
# completion codes another try will not change
PERMANENT = {0xC1: "invalid command", 0xC9: "parameter out of range",
             0xCC: "invalid data field", 0xD4: "insufficient privilege",
             0xD5: "not supported in present state", 0xD6: "sub-function disabled"}
_AUTH_WORDS = ("password", "unauthorized", "username", "privilege", "invalid role")
_NO_ANSWER = ("", "none", "timeout")
IO_SLICE = 0.01


def slice_io_waits(session: Any) -> None:
    """Work around a race in pyghmi's I/O thread (1.6): wait in short slices.

    A caller registers its wait for the BMC's answer only after sending; when
    the answer comes back first (a fast BMC, a busy CPU) the I/O thread has
    already queued it, and the caller sleeps until its retransmit deadline,
    0.5 to 1 s later, before it looks at the queue. Every caller of
    ``_io_wait`` loops and checks its queue after each wake-up, so waking at
    least every ``IO_SLICE`` seconds costs nothing but a few wake-ups and
    removes those stalls (measured on ipmi_sim under load: logins of
    0.6-1.0 s in one of three processes before, none above 35 ms after).
    """
    if getattr(session._io_wait, "sliced", False):
        return
    original = session._io_wait

    def sliced(timeout, myaddr=None, evq=None):
        return original(min(timeout, IO_SLICE), myaddr, evq)

    sliced.sliced = True  # type: ignore[attr-defined]
    session._io_wait = sliced


def session_class(suite: int | str | None) -> Any:
    """pyghmi's Session with the cipher suite pinned (None: 17, then 3)."""
    from pyghmi.ipmi.private import session
    slice_io_waits(session)

    class PinnedSession(session.Session):
        pinned_suite = suite

        def _initsession(self):
            super()._initsession()
            if self.pinned_suite == 3:
                self.attemptedhash = 1  # pyghmi's marker for SHA-1 (suite 3)

        def _got_rmcp_response(self, data):
            if self.pinned_suite == 17 and data[0] == self.rmcptag and data[1] != 0:
                self.attemptedhash = 17  # report the refusal, do not fall back to 3
            return super()._got_rmcp_response(data)

    return PinnedSession


class IpmiDriver(Driver):
    protocol = "IPMI"
    default_port = 623

    def __init__(self, session, where):
        self.session = session
        self.where = where

    @classmethod
    def check(cls, settings: Params) -> None:
        if not settings.lanplus:
            raise ConfigError("lanplus=false (IPMI 1.5) is not supported: pyghmi's IPMI 1.5 "
                              "login does not work; enable IPMI 2.0 (RMCP+) on the BMC")
        if settings.hexadecimal_kg is not None:
            kg_bytes(settings.hexadecimal_kg)

    @classmethod
    def preload(cls) -> None:
        from pyghmi import exceptions  # noqa: F401
        session_class(None)

    @classmethod
    def open(cls, settings: Params, password: str | None) -> IpmiDriver:
        where = endpoint(settings, cls)
        session = session_class(settings.cipher and int(settings.cipher))
        login: dict[str, Any] = {"bmc": settings.ip, "userid": settings.username or "",
                                 "password": password or "",
                                 "port": settings.ipport or cls.default_port,
                                 "kg": kg_bytes(settings.hexadecimal_kg)}
        from pyghmi import exceptions
        forget_earlier_login(session, **login)
        try:
            opened = session(**login, privlevel=PRIVILEGES[settings.privlvl], keepalive=False)
        except exceptions.IpmiException as exc:
            raise login_error(str(exc), where, settings.username) from None
        except socket.gaierror as exc:
            raise ConfigError(f"cannot resolve BMC address {settings.ip!r}: {exc.strerror}") from None
        except OSError as exc:
            raise BmcUnreachable(f"BMC {where} (IPMI): {exc.strerror or exc}") from None
        if opened.broken or not opened.logged:
            # a login joining one that failed returns a broken session quietly
            # (forget_earlier_login prevents that; this says so if it ever happens)
            raise login_error(str(getattr(opened, "errormsg", "")), where, settings.username)
        return cls(opened, where)

    def get_power(self) -> str:
        data = self._command(GET_CHASSIS_STATUS, (), "get chassis status")
        if not data:
            raise StatusUnknown(f"BMC {self.where} sent an empty chassis status")
        return ON if data[0] & 0x01 else OFF

    def set_power(self, state: str) -> None:
        self._command(CHASSIS_CONTROL, (CONTROL[state],), f"chassis power {state}")

    def close(self) -> None:
        self.session.logout()

    def _command(self, command, data, what):
        from pyghmi import exceptions
        try:
            response = self.session.raw_command(netfn=NETFN_CHASSIS, command=command, data=data)
        except exceptions.IpmiException as exc:
            raise command_error(str(exc), self.where, what) from None
        if response is None:
            raise BmcUnreachable(f"no answer from BMC {self.where} to {what}")
        code = response.get("code", 0)
        if "error" in response or code:
            text = response.get("error") or f"completion code 0x{code:02x}"
            if code in PERMANENT:
                raise BmcRefused(f"BMC {self.where} refused {what}: {text} (0x{code:02x})")
            raise BmcError(f"BMC {self.where} failed {what}: {text}")
        return response.get("data", b"")


def forget_earlier_login(session: Any, bmc: str, userid: str, password: str, port: int,
                         kg: bytes | None) -> None:
    """Make the next login a new one: never join one an earlier login left behind.

    pyghmi (1.6) files a login in ``Session.initting_sessions`` under (bmc,
    userid, password, port, kg) with the credentials as str, and deletes it
    with them as bytes: the entry stays for the life of the process, and
    every later ``Session()`` with the same credentials joins that first
    session instead of logging in. Once that one has failed or been logged
    out (also one abandoned at its deadline by power.bounded that fails
    later), every retry of the action "fails" at once without a packet sent,
    also after the BMC is back.
    The earlier session is left alone otherwise: a login still running in an
    abandoned thread keeps its socket, which pyghmi then keeps apart from the
    new session's.
    """
    session.initting_sessions.pop((bmc, userid, password, port, kg), None)


def kg_bytes(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ConfigError("parameter 'hexadecimal_kg': not a hexadecimal string") from None


def login_error(text: str, where: str,
                user: str | None) -> BmcUnreachable | AuthError | BmcError | BmcRefused:
    """The FenceError for a failed pyghmi login (its texts are all we get)."""
    lowered = text.strip().lower()
    if lowered in _NO_ANSWER or "timeout" in lowered or "timed out" in lowered:
        return BmcUnreachable(f"no answer from BMC {where} to the IPMI login "
                              "(check ip, ipport and that IPMI over LAN is enabled)")
    if any(word in lowered for word in _AUTH_WORDS):
        return AuthError(f"BMC {where} rejected the login of user {user or ''!r}: {text} "
                         "(check username, password and privlvl)")
    if "cipher" in lowered or "algorithm" in lowered:
        return BmcRefused(f"BMC {where} refused the session: {text} (check cipher and lanplus)")
    return BmcError(f"IPMI login to BMC {where} failed: {text}")


def command_error(text: str, where: str, what: str) -> FenceError:
    lowered = text.strip().lower()
    if lowered in _NO_ANSWER or "timeout" in lowered or "no longer connected" in lowered:
        return BmcUnreachable(f"BMC {where} stopped answering ({what})")
    return BmcError(f"BMC {where} failed {what}: {text}")
