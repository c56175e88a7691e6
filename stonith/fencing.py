"""The fence agent protocol, once for every hapack fence agent.

fence-agents' convention, as pacemaker-fenced drives it: with no arguments
the agent reads ``key=value`` lines on stdin (``#`` comments and blank
lines skipped, surrounding quotes stripped, ``-`` and ``_`` alike, unknown
keys warned about and ignored); with arguments it takes the same parameters
as long options (``--power-timeout=5``, ``--lanplus``). Every name comes
from the agent's :class:`~hapack.params.Param` declarations, with
:data:`COMMON` (action, plug, nodename, delay, timeouts) added here.

Actions: on, off, reboot, status, monitor, list, metadata, validate-all.
Exit codes (:class:`Exit`): 0 success (status: power on), 1 failure or
"cannot tell", 2 status: power off. Exceptions from
:mod:`hapack.stonith.errors` carry the meaning; :func:`run` is the only
place that turns one into a message and an exit code. Secrets (password,
Kg, the password a script or file produced) are redacted from every log
line and message.
"""

from __future__ import annotations

import enum
import sys
import time

from hapack.log import WARNING, Logger
from hapack.params import Param, ParamError, Values, is_true, parse
from hapack.command import redact_text
from hapack.stonith import power
from hapack.stonith.drivers import OFF, ON
from hapack.stonith.errors import ConfigError, FenceError, WrongTarget

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, TextIO


class Exit(enum.IntEnum):
    SUCCESS = 0   # done; status and monitor: the power is on
    ERROR = 1     # failed; status: cannot tell
    OFF = 2       # status and monitor: the power is off


# A configuration error exits 2 like any hapack command given bad input,
# except where 2 already means "the power is off": status and monitor (and a
# request whose action is unknown, which may have been a status) exit 1.
EXIT_CONFIG = 2
POWER_READING = ("status", "monitor")


def config_exit(action: str | None) -> int:
    """The exit code of a configuration error in a request for ``action``."""
    return Exit.ERROR if action is None or action in POWER_READING else EXIT_CONFIG


ACTIONS = ("on", "off", "reboot", "status", "monitor", "list", "metadata", "validate-all")
ACTION_ALIASES = {"meta-data": "metadata", "validate_all": "validate-all"}
FENCING_ACTIONS = ("off", "reboot")   # the ones ``delay`` applies to


def _positive(value: float) -> float:
    if value < 0:
        raise ValueError(f"{value:g} is negative")
    return value


def _poll(value: float) -> float:
    if value <= 0:
        raise ValueError("must be above 0")
    return value


COMMON = (
    Param("action", "Fencing action", "The action: on, off, reboot, status, monitor, list, "
          "metadata or validate-all. Pacemaker passes it; do not set it in the CIB.",
          default="reboot", aliases=("option",), short="o"),
    Param("plug", "Target node (Pacemaker fills it in)",
          "The node to fence, as Pacemaker passes it (the pcmk_host_map alias or the node "
          "name). When hostname is set, a plug naming another node is refused.",
          aliases=("port",), short="n"),
    Param("nodename", "Node to fence, as the cluster names it (Pacemaker passes it)",
          "Pacemaker passes the cluster name of the target here; it is used when plug is unset."),
    Param("delay", "Wait this many seconds before off or reboot",
          "Seconds to wait before an off or reboot, as fence-agents do. In a two-node cluster "
          "both nodes may try to fence each other at once; delaying the device that fences the "
          "node that should survive lets that node shoot first. The Pacemaker way is "
          "pcmk_delay_base on that device (or pcmk_delay_max for a random delay), or the "
          "cluster property priority-fencing-delay together with resource priorities; set "
          "only one of these mechanisms.",
          kind="float", default=0.0, check=_positive),
    Param("power_timeout", "Seconds for one power change, verification and retries included",
          "Budget for one power change: logins, the request, retries after transient failures "
          "and polling until the BMC reports the new state. Keep delay plus twice this (reboot) "
          "below Pacemaker's pcmk_reboot_timeout (default: stonith-timeout, 60s).",
          kind="float", default=20.0, check=_poll),
    Param("power_wait", "Seconds to wait after a power request before the first status poll",
          kind="float", default=0.0, check=_positive),
    Param("stonith_status_sleep", "Seconds between status polls while waiting for a power change",
          kind="float", default=0.025, check=_poll),
    Param("login_timeout", "Deadline in seconds for one login to the BMC",
          "Each login attempt is abandoned after this long (a dead BMC would otherwise hold "
          "pyghmi for about 4s per attempt); power changes log in again within power_timeout.",
          kind="float", default=5.0, check=_poll),
    Param("shell_timeout", "Deadline in seconds for one command exchange with the BMC",
          "Each command exchange with the BMC is abandoned after this long. fence_ipmilan's "
          "ipmitool_timeout (seconds for one IPMI operation) is accepted as its other name.",
          kind="float", default=3.0, check=_poll, aliases=("ipmitool_timeout",)),
    Param("method", "Reboot method: onoff (verified off, then on) or cycle",
          "onoff (default) powers off, waits until the BMC reports off, then powers on: the "
          "fencing is confirmed. cycle sends a single power-cycle request, whose acceptance is "
          "the only confirmation (the power is on before and after); use it only on request.",
          kind="choice", choices=("onoff", "cycle"), default="onoff", short="m"),
    Param("verbose", "Log every step (debug) to stderr and the HA logs",
          "Log every step (debug) to stderr and the HA logs. On the command line -v may be "
          "repeated (-vv), as for fence-agents; any level above 0 logs everything.",
          kind="boolean", default=False, short="v"),
    Param("verbose_level", "Level of debugging detail (default: the number of -v given)",
          "fence-agents' verbosity level: unset, the number of -v flags on the command line "
          "(or 1 when verbose is set); 1 or more logs every step.",
          kind="integer", minimum=0),
    Param("debug_file", "Also write every step (debug) to this file",
          "Append every log line, debug included, to this file (fence-agents' --debug-file).",
          aliases=("debug",), short="D"),
    Param("quiet", "Do not log to stderr (unless verbose)",
          "No log lines on stderr; the result line on stdout, the HA logs, the debug file and "
          "verbose are unaffected.", kind="boolean", default=False, short="q"),
    Param("help", "Print the options and exit", kind="boolean", default=False, short="h"),
    Param("version", "Print the version and exit", kind="boolean", default=False, short="V"),
)

CLI_ONLY = ("help", "version")   # not read from stdin: the fencer never asks for them


class CommonParams(Values):
    """The typed view of COMMON (see hapack.params.Values); an agent's own view extends it."""
    action: str
    plug: str | None
    nodename: str | None
    delay: float
    power_timeout: float
    power_wait: float
    stonith_status_sleep: float
    login_timeout: float
    shell_timeout: float
    method: str
    verbose: bool
    verbose_level: int | None
    debug_file: str | None
    quiet: bool
    help: bool
    version: bool


def fold(name: str) -> str:
    return name.strip().lower().replace("-", "_")


class FenceAgent:
    """A fence agent: its declarations and the few verbs the protocol cannot know.

    ``open_device(request) -> power.Device`` builds the engine's device for
    the request (resolving the password into ``request.secrets``);
    ``validate(values)`` raises ConfigError for unusable parameters without
    contacting the device; ``targets(values)`` lists the node names the
    device powers, or returns None when it accepts any target.
    """

    def __init__(self, name, *, version, shortdesc, longdesc, vendor_url, params,
                 open_device, validate, targets, values: type[CommonParams] = CommonParams):
        self.name = name
        self.version = version
        self.shortdesc = shortdesc
        self.longdesc = longdesc
        self.vendor_url = vendor_url
        self.params = tuple(params) + COMMON
        self.open_device = open_device
        self.validate = validate
        self.targets = targets
        self.values = values  # the class parse() builds: the agent's typed view
        self.names: dict[str, Param] = {}
        self.shorts: dict[str, Param] = {}
        for param in self.params:
            for key in (param.name, *param.aliases):
                if fold(key) in self.names:
                    raise TypeError(f"{name}: parameter name {key!r} declared twice")
                self.names[fold(key)] = param
            if param.short is not None:
                if param.short in self.shorts:
                    raise TypeError(f"{name}: short option -{param.short} declared twice")
                self.shorts[param.short] = param

    def action_names(self) -> tuple[str, ...]:
        return ACTIONS

    def param(self, key: str) -> Param | None:
        return self.names.get(fold(key))

    def long_option(self, key: str) -> Param | None:
        """The parameter of a long option: its name, an alias, or a unique prefix of
        them (getopt's abbreviations: ``--user`` is ``--username``)."""
        exact = self.param(key)
        if exact is not None:
            return exact
        found = {id(p): p for name, p in self.names.items() if name.startswith(fold(key))}
        if len(found) > 1:
            names = ", ".join(sorted(p.name for p in found.values()))
            raise ConfigError(f"option --{key} is ambiguous ({names})")
        return next(iter(found.values()), None)


class Secrets(set):
    """Strings never to be shown; a logger and messages redact them."""

    def redact(self, text: str) -> str:
        return redact_text(str(text), sorted(self, key=len, reverse=True))


class RedactingLogger(Logger):
    """The agent's logger: secrets redacted; on stderr, debug lines only when verbose
    and nothing when quiet (unless verbose)."""

    def __init__(self, tag, secrets, environ=None, stderr=None):
        super().__init__(tag, environ=environ, stderr=stderr)
        self.secrets = secrets
        self.verbose = self.debugging
        self.quiet = False

    def log(self, level: int, message: str, stderr: bool = True) -> None:
        shown = self.verbose or (not self.quiet and level >= WARNING)
        super().log(level, self.secrets.redact(message), stderr and shown)


# -- reading the request -----------------------------------------------------

class RawRequest(dict):
    """Canonical name -> text, where a canonical name beats its aliases."""

    def __init__(self):
        super().__init__()
        self.by_alias = set()

    def put(self, param: Param, key: str, value: str) -> None:
        is_alias = fold(key) != param.name
        if is_alias and param.name in self and param.name not in self.by_alias:
            return  # the canonical name was given: it wins
        self[param.name] = value
        (self.by_alias.add if is_alias else self.by_alias.discard)(param.name)


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def read_stdin(agent: FenceAgent, text: str, log: RedactingLogger | Logger) -> RawRequest:
    """The raw parameters from ``key=value`` lines."""
    raw = RawRequest()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        param = agent.param(key)
        if not sep:
            log.warning(f"stdin line {number} has no '=': ignored")  # never echo it: a secret?
        elif param is None:
            log.warning(f"ignoring unknown parameter {key.strip()[:40]!r}")
        else:
            raw.put(param, key, _unquote(value))
    return raw


def read_argv(agent: FenceAgent, argv: list[str]) -> RawRequest:
    """The raw parameters from a command line, with fence-agents' getopt rules:
    ``--name=value``, ``--name value``, ``--flag``, unique abbreviations of long
    names, short options ``-a HOST`` and ``-aHOST``, clustered flags ``-Pv``, and
    ``-v`` counted (``-vvv``) into verbose_level unless that is given."""
    raw = RawRequest()
    args = list(argv)
    verbose = 0
    while args:
        position = len(argv) - len(args) + 1
        arg = args.pop(0)
        if arg.startswith("--") and arg != "--":
            _read_long(agent, arg[2:], args, raw)
        elif arg.startswith("-") and arg not in ("-", "--"):
            verbose += _read_short(agent, arg[1:], args, raw)
        else:
            # not echoed: a stray word may be a password that lost its option
            raise ConfigError(f"argument {position} is not an option (use -o ACTION, "
                              "--name=value or --name value)")
    if verbose and "verbose_level" not in raw:
        raw.put(agent.names["verbose_level"], "verbose_level", str(verbose))
    return raw


def _read_long(agent, text, args, raw):
    key, sep, value = text.partition("=")
    param = agent.long_option(key)
    if param is None:
        raise ConfigError(f"unknown option --{key} (see --help)")
    if not sep:
        if param.kind == "boolean":
            value = "1"
        elif args:
            value = args.pop(0)
        else:
            raise ConfigError(f"option --{key} needs a value")
    raw.put(param, key if agent.param(key) is param else param.name, value)


def _read_short(agent, letters, args, raw):
    """One ``-xyz`` argument; the number of ``-v`` in it."""
    verbose = 0
    while letters:
        letter, letters = letters[0], letters[1:]
        param = agent.shorts.get(letter)
        if param is None:
            raise ConfigError(f"unknown option -{letter} (see --help)")
        if param.kind == "boolean":
            raw.put(param, param.name, "1")
            verbose += param.name == "verbose"
            continue
        if not letters and not args:
            raise ConfigError(f"option -{letter} needs a value")
        value, letters = (letters, "") if letters else (args.pop(0), "")
        raw.put(param, param.name, value)
    return verbose


def usage(agent: FenceAgent) -> str:
    lines = [f"usage: {agent.name} -o ACTION [-a IP -l USER -p PASSWORD ...]",
             f"       {agent.name} --action=ACTION [--name=value ...]",
             f"       {agent.name} < key=value lines (as pacemaker-fenced runs it)",
             f"actions: {', '.join(ACTIONS)}", "", "parameters:"]
    for param in agent.params:
        names = ", ".join(([f"-{param.short}"] if param.short else [])
                          + [f"--{n.replace('_', '-')}" for n in (param.name, *param.aliases)])
        default = "" if param.default is None or param.secret else f" (default {param.default_text})"
        lines.append(f"  {names}: {param.shortdesc}{default}")
    return "\n".join(lines) + "\n"


# -- the request ---------------------------------------------------------------

class Request:
    """One run of the agent: the action, typed parameters, sinks, secrets."""

    def __init__(self, agent, action, values, log, out, secrets):
        self.agent = agent
        self.action = action
        self.values = values
        self.log = log
        self.out = out
        self.secrets = secrets
        self.verified_off = False  # the switch reported the target's power off

    @property
    def target(self) -> str | None:
        return self.values.plug or self.values.nodename

    def say(self, line: str) -> None:
        self.out.write(self.secrets.redact(line) + "\n")
        self.out.flush()

    def check_target(self) -> None:
        names = self.agent.targets(self.values)
        target = self.target
        if names is None or not target:
            return
        if target.lower() not in (name.lower() for name in names):
            raise WrongTarget(f"this device powers {', '.join(names)}, not {target!r} "
                              "(check hostname, pcmk_host_list or pcmk_host_map)")


def normalize_action(text: str) -> str:
    action = ACTION_ALIASES.get(text.strip().lower(), text.strip().lower())
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {text!r} (one of {', '.join(ACTIONS)})")
    return action


def configure_log(log: RedactingLogger, raw: RawRequest) -> None:
    """verbose, verbose_level, quiet and debug_file as fence-agents read them; from the
    raw request, before any value is checked, so that errors are logged as asked."""
    try:
        level = int(raw.get("verbose_level") or "")
    except ValueError:
        level = None
    asked = is_true(raw.get("verbose")) if level is None else level > 0
    log.verbose = log.verbose or asked
    log.quiet = is_true(raw.get("quiet"))
    if raw.get("debug_file"):
        log.debuglog = raw["debug_file"]
    log.debugging = log.verbose or bool(log.debuglog)


def build_request(agent: FenceAgent, raw: RawRequest, log: RedactingLogger | Logger,
                  out: TextIO | None, secrets: Secrets) -> Request:
    for param in agent.params:
        if param.secret and raw.get(param.name):
            secrets.add(raw[param.name])
    action = normalize_action(raw.get("action") or "reboot")
    raw["action"] = action
    try:
        values = parse(agent.params, raw, into=agent.values)
        assert isinstance(values, CommonParams)  # into= an agent's view of COMMON
    except ParamError as exc:
        raise ConfigError(str(exc)) from None
    log.debug(f"{action} with {values!r}")
    return Request(agent, action, values, log, out, secrets)


# -- the actions -----------------------------------------------------------------

def _device(request):
    request.agent.validate(request.values)
    return request.agent.open_device(request)


def do_status(request: Request) -> Exit:
    request.check_target()
    device = _device(request)
    try:
        state = device.get_power()
    finally:
        device.close()
    request.say(f"Status: {state.upper()}")
    return Exit.SUCCESS if state == ON else Exit.OFF


def do_monitor(request: Request) -> Exit:
    device = _device(request)
    try:
        state = device.get_power()
    finally:
        device.close()
    request.log.debug(f"monitor: {device.where} answers, power {state}")
    return Exit.SUCCESS


def do_list(request: Request) -> Exit:
    request.agent.validate(request.values)
    for name in request.agent.targets(request.values) or ():
        request.say(name)
    return Exit.SUCCESS


def fence_delay(request: Request) -> None:
    seconds = request.values.delay
    if seconds > 0:
        request.log.info(f"delaying {request.action} of {request.target or 'the node'} "
                         f"by {seconds:g}s (delay)")
        time.sleep(seconds)


def do_power(request: Request, target: str) -> Exit:
    device = _device(request)
    try:
        changed = power.ensure_power(device, target, request.log)
    finally:
        device.close()
    request.verified_off = target == OFF
    word = "Powered" if changed else "Already"
    request.say(f"Success: {word} {target.upper()}")
    return Exit.SUCCESS


def do_on(request: Request) -> Exit:
    request.check_target()
    return do_power(request, ON)


def do_off(request: Request) -> Exit:
    request.check_target()
    fence_delay(request)
    return do_power(request, OFF)


def do_reboot(request: Request) -> Exit:
    request.check_target()
    fence_delay(request)
    device = _device(request)
    try:
        if request.values.method == "cycle":
            power.cycle(device, request.log)
            request.say("Success: Power cycle requested")
            return Exit.SUCCESS
        power.ensure_power(device, OFF, request.log)
        request.verified_off = True
        request.log.info(f"{device.where} reports power off; powering on")
        try:
            power.ensure_power(device, ON, request.log)
        except FenceError as exc:
            # the node is fenced: its power was seen off (fence-agents do the same)
            request.log.warning(f"power off confirmed but power on failed: {exc}")
            request.say("Success: Powered OFF (power on failed)")
            return Exit.SUCCESS
    finally:
        device.close()
    request.say("Success: Rebooted")
    return Exit.SUCCESS


def do_validate(request: Request) -> Exit:
    request.agent.validate(request.values)
    request.log.debug("parameters are valid")
    return Exit.SUCCESS


HANDLERS = {"status": do_status, "monitor": do_monitor, "list": do_list, "on": do_on,
            "off": do_off, "reboot": do_reboot, "validate-all": do_validate}


# -- the entry point -------------------------------------------------------------

def run(agent: FenceAgent, argv: list[str] | None = None, stdin: TextIO | None = None,
        out: TextIO | None = None, environ: dict[str, str] | None = None,
        stderr: TextIO | None = None) -> int | Exit:
    """Run one request; the exit code. Never raises for a failed action."""
    argv = sys.argv[1:] if argv is None else argv
    out = sys.stdout if out is None else out
    secrets = Secrets()
    log = RedactingLogger(agent.name, secrets, environ=environ, stderr=stderr)
    return guarded(log, lambda: _run(agent, argv, stdin, out, log, secrets))


def _run(agent, argv, stdin, out, log, secrets):
    raw = read_argv(agent, argv) if argv else read_stdin(agent, (stdin or sys.stdin).read(), log)
    configure_log(log, raw)
    if argv and is_true(raw.get("help")):
        out.write(usage(agent))
        return Exit.SUCCESS
    if argv and is_true(raw.get("version")):
        out.write(f"{agent.name} {agent.version}\n")
        return Exit.SUCCESS
    action = normalize_action(raw.get("action") or "reboot")
    if action == "metadata":
        from hapack.stonith.metadata import metadata_xml
        out.write(metadata_xml(agent))
        return Exit.SUCCESS
    try:
        request = build_request(agent, raw, log, out, secrets)
        return HANDLERS[request.action](request)
    except ConfigError as exc:
        exc.exit_code = config_exit(action)
        raise


def guarded(log: RedactingLogger, function: Callable) -> int | Exit:
    """function()'s exit code; a FenceError (or a bug) becomes a logged error and 1."""
    try:
        return function()
    except FenceError as exc:
        log.error(f"{type(exc).__name__}: {exc}")
        return getattr(exc, "exit_code", Exit.ERROR)
    except Exception as exc:  # a bug: say what, never a traceback that may hold a secret
        log.error(f"internal error: {type(exc).__name__}: {exc}")
        return Exit.ERROR
