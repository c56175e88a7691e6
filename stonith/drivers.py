"""The one interface between the fencing engine and a power switch.

A driver talks to one power switch (a BMC over IPMI or Redfish; an SNMP PDU
outlet would be one more) and knows nothing about the fence protocol,
deadlines or retries: the engine (:mod:`hapack.stonith.power`) bounds every
call, retries what is transient and verifies every change. A driver:

- is built by ``Driver.open(settings, password)``, which logs in (and raises
  :class:`~hapack.stonith.errors.AuthError`, ``BmcUnreachable`` ... from
  :mod:`hapack.stonith.errors`, never its library's exceptions);
- answers ``get_power()`` with :data:`ON` or :data:`OFF`;
- sends ``set_power(state)`` with ON, OFF or :data:`CYCLE` and returns as
  soon as the switch accepted the request (no waiting);
- releases its session in ``close()``.

Drivers are imported lazily by name, so ``metadata`` and ``validate-all``
never load pyghmi.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.stonith.redfish import RedfishDriver
    from hapack.stonith.ipmi import IpmiDriver
    from hapack.stonith.fence_bmc import Params

ON, OFF, CYCLE = "on", "off", "cycle"

# driver name -> (module, class); the module is imported only when used
REGISTRY = {
    "ipmi": ("hapack.stonith.ipmi", "IpmiDriver"),
    "redfish": ("hapack.stonith.redfish", "RedfishDriver"),
}


class Driver:
    """The interface (and documentation) every driver implements."""

    #: shown in messages, e.g. "IPMI"
    protocol = "?"
    #: the port used when ``ipport`` is not set
    default_port: int | None = None

    @classmethod
    def open(cls, settings: Params, password: str | None) -> Driver:
        """Log in to the switch described by ``settings`` (typed Values)."""
        raise NotImplementedError

    @classmethod
    def check(cls, settings: Params) -> None:
        """Raise ConfigError for settings this driver cannot use (no I/O)."""

    @classmethod
    def preload(cls) -> None:
        """Import what :meth:`open` needs, ahead of the request (no I/O): for an
        agent started before its request is known (``fence_bmc`` under hamon)."""

    def get_power(self) -> str:
        raise NotImplementedError

    def set_power(self, state: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def driver_class(name: str) -> type[RedfishDriver] | type[IpmiDriver]:
    """The driver class registered as ``name`` (imports its module)."""
    module, attr = REGISTRY[name]
    return getattr(importlib.import_module(module), attr)


def endpoint(settings: Params, cls: type[RedfishDriver] | type[IpmiDriver]) -> str:
    """'address:port' of the switch, for messages."""
    port = settings.ipport if settings.ipport is not None else cls.default_port
    host = settings.ip or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
