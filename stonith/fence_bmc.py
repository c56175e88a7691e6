"""fence_bmc: fence a node by switching off its power through its BMC.

Each node's BMC is reachable from the other node; the survivor switches the
peer off and returns only once the BMC reports the power off. IPMI over LAN
(``driver=ipmi``, pyghmi) or Redfish (``driver=redfish``, pyghmi). Run by
pacemaker-fenced (``stonith:fence_bmc``, parameters on stdin), by hand
(long options), or by cluster-glue as ``external/bmc``
(:mod:`hapack.stonith.glue`). The protocol, deadlines and verification live
in :mod:`hapack.stonith.fencing` and :mod:`hapack.stonith.power`; this module
holds the parameter table and how to reach the switch.
"""

from __future__ import annotations

import io
import os
import shlex
import sys

from hapack.params import Param
from hapack.command import which
from hapack.stonith import credentials, fencing
from hapack.stonith.drivers import REGISTRY, driver_class, endpoint
from hapack.stonith.errors import ConfigError
from hapack.stonith.power import Device, Timing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO
    from hapack.stonith.fencing import Request


VERSION = "0.1.0"

LONGDESC = (
    "fence_bmc powers a cluster node off, on or through a reboot by talking to its baseboard "
    "management controller: IPMI over LAN (driver=ipmi) or Redfish over HTTPS "
    "(driver=redfish), both through pyghmi. off and reboot succeed only once the BMC reports "
    "the power off; the agent polls every stonith_status_sleep seconds, every exchange with "
    "the BMC has its own deadline (login_timeout, shell_timeout) and transient failures are "
    "retried within power_timeout. Set hostname to the node the BMC powers: list then names "
    "it (pcmk_host_check=dynamic-list works without pcmk_host_list) and a request to fence "
    "any other node is refused. Two-node clusters: avoid a fence race where both nodes shoot "
    "at once by delaying the device that fences the node that should survive, with "
    "pcmk_delay_base (e.g. 5s) on that device, or with the cluster property "
    "priority-fencing-delay (e.g. 10s) and resource priorities; the delay parameter does the "
    "same inside the agent. Prefer password_file (mode 0600) or password_script to a "
    "password in the CIB; secrets are never printed or logged.")

PARAMS = (
    Param("driver", "Protocol to the BMC.",
          kind="choice", choices=tuple(REGISTRY), default="ipmi"),
    Param("ip", "BMC address or host name", required=True, aliases=("ipaddr",), short="a"),
    Param("ipport", "BMC port (default: 623 for ipmi, 443 for redfish)",
          kind="integer", minimum=1, maximum=65535, short="u"),
    Param("username", "BMC user name", aliases=("login",), short="l"),
    Param("password", "BMC password", secret=True, aliases=("passwd",), short="p"),
    Param("password_script", "Command whose first output line is the BMC password",
          "A command line (split like a shell would, run without a shell) whose first line "
          "of output is the password.", aliases=("passwd_script",), short="S"),
    Param("password_file", "File whose first line is the BMC password",
          "A regular file owned by root and not accessible to group or others (chmod 600); "
          "its first line is the password."),
    Param("hostname", "Cluster node this BMC powers",
          "The name of the node whose power this BMC switches. list prints it, and on, off, "
          "reboot and status refuse any other target (plug/nodename)."),
    Param("lanplus", "(ipmi) Use IPMI 2.0 RMCP+ (the only protocol supported)",
          "(ipmi) IPMI 2.0 RMCP+ sessions (what ipmitool calls lanplus). Accepted for fence_ipmilan "
          "compatibility; false (IPMI 1.5, MD5 without encryption) is refused.",
          kind="boolean", default=True, short="P"),
    Param("cipher", "(ipmi) RMCP+ cipher suite: 17 or 3 (default: 17, falling back to 3)",
          "(ipmi) The cipher suite of the RMCP+ session. Unset, 17 (SHA-256) is offered first and 3 "
          "(SHA-1, AES) if the BMC refuses it; 3 skips the refused offer (faster on BMCs "
          "without suite 17, like ipmi_sim); 17 refuses to fall back.",
          kind="choice", choices=("3", "17"), short="C"),
    Param("privlvl", "(ipmi) Privilege level of the session.",
          kind="choice", choices=("callback", "user", "operator", "administrator"),
          default="administrator", short="L"),
    Param("auth", "(ipmi) IPMI 1.5 authentication type; accepted, not used",
          "(ipmi) fence_ipmilan's -A (md5, password, none): the authentication type of IPMI 1.5 "
          "sessions. Accepted so that fence_ipmilan's command lines and devices work unchanged; "
          "RMCP+ sessions (the only ones fence_bmc opens) authenticate through the cipher "
          "suite and do not use it.",
          kind="choice", choices=("md5", "password", "none"), short="A"),
    Param("hexadecimal_kg", "(ipmi) BMC key (Kg) in hexadecimal, if the BMC has one set",
          secret=True),
    Param("systems_uri", "(redfish) Path of the ComputerSystem (default: discovered)",
          "(redfish) The ComputerSystem to power, for example /redfish/v1/Systems/1 or just "
          "its last part; needed only when the service manages several systems."),
    Param("ca_file", "(redfish) PEM file of trusted CA certificates",
          "(redfish) A PEM file of certificates that the BMC's TLS certificate must chain to (with the BMC's address "
          "or name in its subjectAltName), or the BMC's own self-signed certificate. Unset, "
          "the system CA store is used."),
    Param("ssl_insecure", "(redfish) Do not verify the BMC's TLS certificate",
          kind="boolean", default=False),
)


class Params(fencing.CommonParams):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    driver: str
    ip: str
    ipport: int | None
    username: str | None
    password: str | None
    password_script: str | None
    password_file: str | None
    hostname: str | None
    lanplus: bool
    cipher: str | None
    privlvl: str
    auth: str | None
    hexadecimal_kg: str | None
    systems_uri: str | None
    ca_file: str | None
    ssl_insecure: bool


def validate(values: Params) -> None:
    """Everything that can be checked without talking to the BMC."""
    cls = driver_class(values.driver)
    cls.check(values)
    source = credentials.check_sources(values)
    if source == "password_file":
        credentials.from_file(values.password_file or "")  # readable, a first line, UTF-8
    elif source == "password_script":
        argv = shlex.split(values.password_script)
        if not argv or which(argv[0]) is None:
            raise ConfigError(f"password_script: {argv[0] if argv else ''!r} is not an "
                              "executable")


def open_device(request: Request) -> Device:
    values = request.values
    cls = driver_class(values.driver)
    timing = Timing.from_values(values)
    password = credentials.resolve(values, timing.login, request.secrets, request.log)
    where = f"{cls.protocol} BMC {endpoint(values, cls)}"
    return Device(lambda: cls.open(values, password), where, timing, request.log)


def targets(values: Params) -> list[str] | None:
    return [values.hostname] if values.hostname else None


AGENT = fencing.FenceAgent(
    "fence_bmc", version=VERSION,
    shortdesc="Fence agent for BMCs over IPMI or Redfish, with verified power-off",
    longdesc=LONGDESC, vendor_url="https://www.dmtf.org/standards/redfish",
    params=PARAMS, open_device=open_device, validate=validate, targets=targets, values=Params)


# set by a caller that starts fence_bmc ahead of its request (hamon): the driver to import
PRELOAD = "HAPACK_FENCE_PRELOAD"


def main(argv: list[str] | None = None) -> int:
    preload = os.environ.get(PRELOAD)
    if preload and not (sys.argv[1:] if argv is None else argv):
        return started_ahead(preload, sys.stdin)
    return int(fencing.run(AGENT, argv))


def started_ahead(driver: str, stdin: TextIO) -> int:
    """The request on stdin, read only after ``driver``'s library is imported.

    A caller that knows it will ask soon (hamon asks the peer's BMC the moment the
    peer turns late) starts the agent beforehand, so the interpreter, this module
    and pyghmi (most of a status call's time) are loaded before the question. The
    request is then the fence-agents protocol as ever; an empty stdin (the caller
    closed it unused) does nothing and exits 0."""
    if driver in REGISTRY:
        try:
            driver_class(driver).preload()
        except ImportError:
            pass  # the request reports it, as without preloading
    text = stdin.read()
    if not text.strip():
        return 0
    return int(fencing.run(AGENT, [], stdin=io.StringIO(text)))


if __name__ == "__main__":
    sys.exit(main())
