"""external/bmc: fence_bmc as a cluster-glue (Heartbeat-era) STONITH plugin.

cluster-glue runs ``<plugin dir>/bmc <op> [host]`` with every configured
parameter exported as an environment variable of the same name (see
cluster-glue's ``doc/stonith/README.external``); Pacemaker reaches such
plugins as ``stonith:external/bmc`` through ``fence_legacy``. The
parameters are fence_bmc's (``hostname`` is required here: it is what
``gethosts`` answers), and every operation goes through the same fencing
engine, so ``off`` and ``reset`` also return only once the BMC reports the
power off. Exit status 0 means success, anything else failure.

Operations: ``gethosts``, ``on <host>``, ``off <host>``, ``reset <host>``
(a reboot: verified off, then on), ``status`` (the *device*: can the BMC be
reached and read), ``getconfignames``, ``getinfo-devid``,
``getinfo-devname``, ``getinfo-devdescr``, ``getinfo-devurl``,
``getinfo-xml``.

``getconfignames`` (:data:`CONFIG_NAMES`) is all cluster-glue passes on:
``stonith -E`` and Pacemaker's ``fence_legacy`` export only these names, and
Heartbeat's ``stonith_host`` line gives their values by position, one word
each (``-`` for a parameter left unset; the last takes the rest of the line).
With ``fence_confirmed_file`` set, an ``off`` or ``reset`` after which the BMC
reported the host's power off is recorded there (:mod:`hapack.confirm`, for
this node and this boot) for the partition agent's promotion gate, as hamon
does: under Heartbeat this STONITH is what proves the failed node stopped
using the disk. A ``reset`` with ``method=cycle`` is never recorded: the
power is on before and after a cycle, nothing saw it off.
"""

from __future__ import annotations

import os
import sys

from hapack.params import Param
from hapack.stonith import fencing
from hapack.stonith.errors import ConfigError
from hapack.stonith.fence_bmc import AGENT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO
    from hapack.stonith.fencing import RawRequest, RedactingLogger, Secrets

NAME = "external/bmc"
# the fence protocol's own parameters come from the op and its argument
PROTOCOL_ONLY = ("action", "plug", "nodename", *fencing.CLI_ONLY)
ACTIONS = {"gethosts": "list", "on": "on", "off": "off", "reset": "reboot",
           "status": "monitor"}
INFO = {
    "getinfo-devid": "BMC STONITH device (IPMI or Redfish)",
    "getinfo-devname": "fence_bmc BMC power switch",
    "getinfo-devdescr": AGENT.longdesc,
    "getinfo-devurl": AGENT.vendor_url,
}
CONFIG_NAMES = ("hostname", "ip", "ipport", "username", "password_file", "driver", "lanplus",
                "cipher", "fence_confirmed_file")
UNSET = "-"  # a position on Heartbeat's stonith_host line with no value
CONFIRM = Param(
    "fence_confirmed_file", "File recording a verified power-off (for the partition agent)",
    "After an off or reset of a host whose power the BMC then reported off (never after "
    "method=cycle), record it in this file (the partition agent's fence_confirmed_file), so "
    "that the partition may be promoted once on this node although the failed node left it "
    "in use. Unset: nothing is written.")


def params() -> list[Param]:
    return [p for p in AGENT.params if p.name not in PROTOCOL_ONLY]


def _set(value):
    return value is not None and value != UNSET


def raw_from_environ(environ: dict[str, str]) -> RawRequest:
    """The declared parameters among the environment variables (exact names)."""
    raw = fencing.RawRequest()
    for param in params():
        for key in (param.name, *param.aliases):
            if _set(environ.get(key)):
                raw.put(param, key, environ[key])
    return raw


def run_op(op: str, host: str | None, environ: dict[str, str], out: TextIO, log: RedactingLogger,
           secrets: Secrets) -> int:
    if op == "getconfignames":
        out.write("\n".join(CONFIG_NAMES) + "\n")
        return 0
    if op in INFO:
        out.write(INFO[op] + "\n")
        return 0
    if op == "getinfo-xml":
        from hapack.stonith.metadata import glue_parameters_xml
        out.write(glue_parameters_xml([*params(), CONFIRM]))
        return 0
    if op not in ACTIONS:
        raise ConfigError(f"unknown operation {op!r} (one of {', '.join([*ACTIONS, *INFO])})")
    raw = raw_from_environ(environ)
    if not raw.get("hostname"):
        raise ConfigError("parameter 'hostname' (the node this BMC powers) is required")
    if op in ("on", "off", "reset"):
        if not host:
            raise ConfigError(f"{op} needs the host to fence")
        raw["plug"] = host
    raw["action"] = ACTIONS[op]
    request = fencing.build_request(AGENT, raw, log, out, secrets)
    rc = int(fencing.HANDLERS[request.action](request))
    if rc == 0 and request.verified_off and _set(environ.get(CONFIRM.name) or None):
        _confirm(environ[CONFIRM.name], host, op, log)
    return rc


def _confirm(path, host, op, log):
    """Record the verified power-off for the partition's promotion gate on this node
    (best effort: the fencing itself succeeded). Never after an unverified action
    (method=cycle): only ``request.verified_off`` leads here."""
    from hapack import confirm
    try:
        confirm.write(path, host, os.uname().nodename, f"{NAME} {op}")
        log.info(f"{host} confirmed off: recorded in {path}")
    except confirm.ConfirmationError as exc:
        log.warning(f"{host} is off, but the fence confirmation was not recorded: {exc}")


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None,
         out: TextIO | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    environ = dict(os.environ) if environ is None else environ
    out = sys.stdout if out is None else out
    secrets = fencing.Secrets()
    log = fencing.RedactingLogger(NAME, secrets, environ=environ)
    if not argv:
        log.error(f"usage: bmc {{{'|'.join([*ACTIONS, 'getconfignames', *INFO, 'getinfo-xml'])}}}"
                  " [host]")
        return 1
    op, host = argv[0], (argv[1] if len(argv) > 1 else None)
    return int(fencing.guarded(log, lambda: run_op(op, host, environ, out, log, secrets)))


if __name__ == "__main__":
    sys.exit(main())
