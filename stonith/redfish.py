"""Redfish over HTTPS through pyghmi's Redfish client.

Requests use HTTP basic auth, never a Redfish session (see
:func:`basic_auth`). The ComputerSystem is discovered from the service root (``systems_uri`` picks
one when a manager has several). Certificates are verified by default:
without ``ca_file`` against the system's CA store with the host name
checked (pyghmi's own verification); with ``ca_file`` against the CA
certificates in that file, or by an exact match with a (self-signed)
certificate listed there; ``ssl_insecure`` turns verification off.
"""

from __future__ import annotations

import ipaddress
import ssl

from hapack.stonith.drivers import CYCLE, OFF, ON, Driver, endpoint
from hapack.stonith.errors import (AuthError, BmcError, BmcRefused, BmcUnreachable,
                                   ConfigError, StatusUnknown, UntrustedCertificate)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.stonith.errors import FenceError
    from typing import Callable
    from hapack.stonith.fence_bmc import Params

# pyghmi's names for the Redfish ResetType it sends (On, ForceOff, ForceRestart)
REQUEST = {ON: "on", OFF: "off", CYCLE: "reset"}


class RedfishDriver(Driver):
    protocol = "Redfish"
    default_port = 443

    def __init__(self, command, where):
        self.command = command
        self.where = where

    @classmethod
    def check(cls, settings: Params) -> None:
        if settings.ssl_insecure and settings.ca_file:
            raise ConfigError("set either ca_file or ssl_insecure, not both")
        if settings.ca_file:
            load_certificates(settings.ca_file)

    @classmethod
    def preload(cls) -> None:
        from pyghmi import exceptions  # noqa: F401
        from pyghmi.redfish import command  # noqa: F401

    @classmethod
    def open(cls, settings: Params, password: str | None) -> RedfishDriver:
        from pyghmi import exceptions
        from pyghmi.redfish import command
        where = endpoint(settings, cls)
        try:
            opened = basic_auth(command.Command)(
                settings.ip, settings.username or "", password or "", verifier(settings),
                sysurl=settings.systems_uri, port=settings.ipport or cls.default_port)
        except (UntrustedCertificate, ConfigError):
            raise
        except exceptions.UnrecognizedCertificate:
            raise UntrustedCertificate(f"the TLS certificate of {where} is not trusted") from None
        except ssl.SSLCertVerificationError as exc:
            raise UntrustedCertificate(f"the TLS certificate of {where} is not trusted: "
                                       f"{exc.verify_message} (set ca_file)") from None
        except exceptions.PyghmiException as exc:
            raise open_error(str(exc), where, settings.username) from None
        except (OSError, ssl.SSLError) as exc:
            raise BmcUnreachable(f"Redfish service {where}: {exc.strerror or exc}") from None
        if not opened.sysurl or not opened.powerurl:
            raise no_system(opened, settings, where)
        return cls(opened, where)

    def get_power(self) -> str:
        state = self._call(self.command.get_power, "get power state").get("powerstate")
        if state == "off":
            return OFF
        if state in ("on", "poweringon", "poweringoff", "paused"):
            return ON  # anything but Off still draws power
        raise StatusUnknown(f"Redfish service {self.where} reports PowerState {state!r}")

    def set_power(self, state: str) -> None:
        self._call(lambda: self.command.set_power(REQUEST[state]), f"power {state}")

    def close(self) -> None:
        self.command.wc.close()

    def _call(self, function, what):
        from pyghmi import exceptions
        try:
            return function()
        except exceptions.RedfishError as exc:
            raise BmcRefused(f"Redfish service {self.where} refused {what}: {exc}") from None
        except exceptions.PyghmiException as exc:
            raise BmcError(f"Redfish service {self.where} failed {what}: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            raise BmcUnreachable(f"Redfish service {self.where} ({what}): {exc}") from None


def basic_auth(command_class: Any) -> Any:
    """pyghmi's Command without a Redfish session: HTTP basic auth on every request.

    pyghmi logs in to the SessionService when the service has one but never
    deletes the session; with a monitor every minute the BMC's few session
    slots fill up and the next fence fails. fence_redfish uses basic auth
    throughout, and so does this.
    """

    class BasicAuthCommand(command_class):
        def _get_session_token(self, wc):
            return None

    return BasicAuthCommand


def no_system(opened: Any, settings: Params, where: str) -> FenceError:
    """Why pyghmi found no ComputerSystem with a reset action (it only says None)."""
    path = settings.systems_uri or "/redfish/v1/Systems"
    status = opened.wc.grab_json_response_with_status(path)[1]
    if status in (401, 403):
        return AuthError(f"Redfish service {where} rejected the login of user "
                         f"{settings.username!r}")
    if status == 404:
        return ConfigError(f"systems_uri {path!r} not found on Redfish service {where}")
    return BmcRefused(f"Redfish service {where} shows no computer system with a reset action "
                      f"at {path} (HTTP {status})")


def open_error(text: str, where: str, user: str | None) -> FenceError:
    if "Access Denied" in text or "401" in text:
        return AuthError(f"Redfish service {where} rejected the login of user {user!r}")
    if "sysurl" in text:
        return ConfigError(f"Redfish service {where}: {text} (set systems_uri)")
    return BmcError(f"Redfish service {where}: {text}")


def load_certificates(path: str) -> Any:
    from cryptography import x509
    try:
        with open(path, "rb") as handle:
            return x509.load_pem_x509_certificates(handle.read())
    except OSError as exc:
        raise ConfigError(f"parameter 'ca_file': cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"parameter 'ca_file': {path} holds no PEM certificate") from None


def verifier(settings: Params) -> Callable | None:
    """pyghmi's verifycallback: None means the system store and host name check."""
    if settings.ssl_insecure:
        return lambda der: True
    if not settings.ca_file:
        return None
    return CaVerifier(load_certificates(settings.ca_file), settings.ip)


class CaVerifier:
    """Checks the BMC's certificate (DER) against a CA file and the BMC's name."""

    def __init__(self, certificates, host):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding
        try:
            from cryptography.x509.verification import PolicyBuilder, Store
        except ImportError:
            raise ConfigError("ca_file needs the Python package cryptography 42 or later "
                              "(x509.verification)") from None
        self.pinned = {cert.public_bytes(Encoding.DER) for cert in certificates}
        try:
            name = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            name = x509.DNSName(host)
        self.host = host
        self.verifier = PolicyBuilder().store(Store(certificates)).build_server_verifier(name)

    def __call__(self, der):
        if der in self.pinned:
            return True  # the BMC's own (self-signed) certificate, listed in ca_file
        from cryptography import x509
        from cryptography.x509.verification import VerificationError
        try:
            self.verifier.verify(x509.load_der_x509_certificate(der), [])
        except (VerificationError, ValueError) as exc:
            raise UntrustedCertificate(f"the TLS certificate of {self.host} does not verify "
                                       f"against ca_file: {exc}") from None
        return True
