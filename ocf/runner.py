"""The OCF agent runner: dispatch, exit codes, probes, deadlines, check levels.

An agent module declares its parameters and actions in one :class:`Agent`
and calls ``AGENT.run()`` from ``main()``. The runner owns everything the OCF
contract asks of every agent:

- exit codes as :class:`OCF`; exceptions carry their code (:class:`OCFError`
  and subclasses) and only :meth:`Agent.run` turns one into an
  ``ocf-exit-reason:`` line and an exit status;
- probe rules: a monitor with interval 0 or unset reports NOT_RUNNING for a
  resource it cannot even check (missing software or configuration), never
  ERR_INSTALLED or ERR_CONFIGURED; a missing required parameter gives
  ERR_CONFIGURED on start and validate-all, SUCCESS on stop and NOT_RUNNING on
  a probe;
- an internal deadline from ``OCF_RESKEY_CRM_meta_timeout`` with a margin;
- ``OCF_CHECK_LEVEL`` 0/10/20 with fallback to the next lower level the agent
  implements;
- promotion scores through ``crm_attribute --promotion`` (lifetime reboot);
- notify variables parsed into one :class:`Notify`.
"""

from __future__ import annotations

import os
import sys

from hapack.log import ERROR, Logger
from hapack.params import MissingParam, ParamError, Values, from_environ, is_true, parse
from hapack.command import CommandError, run as run_command
from hapack.timing import Deadline

# Context is generic in the agent's typed parameters (Context[Params], see
# Values) for the type checker only: typing is not imported at run
# time (a monitor is a fresh interpreter) and Context[...] is Context there.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Generic, TextIO, TypeVar
    from hapack.command import Result

    P = TypeVar("P", bound=Values, covariant=True)

    class _Generic(Generic[P]):
        pass
else:
    P = None

    class _Generic:
        def __class_getitem__(cls, item):
            return cls

EXIT_REASON_PREFIX = "ocf-exit-reason:"
RSCTMP = "/run/resource-agents"     # $HA_RSCTMP when the cluster manager sets none


class _Code(int):
    """One OCF exit code: an int that knows its name."""

    name: str

    def __new__(cls, value, name):
        code = int.__new__(cls, value)
        code.name = name
        return code

    def __repr__(self):
        return f"<OCF.{self.name}: {int(self)}>"

    __str__ = __repr__


class _Codes(type):
    """The enumeration behaviour of OCF: OCF(7) is OCF.NOT_RUNNING, iteration."""

    def __new__(mcs, name, bases, namespace):
        members = {k: _Code(v, k) for k, v in namespace.items() if isinstance(v, int)}
        namespace.update(members)
        cls = super().__new__(mcs, name, bases, namespace)
        cls._by_value = {int(code): code for code in members.values()}
        return cls

    def __call__(cls, value):
        try:
            return cls._by_value[int(value)]
        except KeyError:
            raise ValueError(f"{value!r} is not an OCF exit code") from None

    def __iter__(cls):
        return iter(cls._by_value.values())


CRM_EX_NOSUCH = 105   # crm_attribute's exit code for "no such attribute"


class OCF(metaclass=_Codes):
    """The OCF exit codes, an enumeration of named ints.

    Not enum.IntEnum: importing enum costs about 3 ms, a fifth of a whole
    monitor call, and every monitor is a fresh interpreter.
    """

    if TYPE_CHECKING:  # what OCF(7) returns (the checker does not read _Codes.__call__)
        def __new__(cls, value: int) -> _Code: ...  # type: ignore[misc]

    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_PERM = 4
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7
    RUNNING_PROMOTED = 8
    FAILED_PROMOTED = 9
    DEGRADED = 190
    DEGRADED_PROMOTED = 191


class OCFError(Exception):
    """An error that ends the action with ``code`` and an exit reason."""

    code = OCF.ERR_GENERIC

    def __init__(self, reason, code=None):
        super().__init__(reason)
        if code is not None:
            self.code = OCF(code)


class GenericError(OCFError):
    code = OCF.ERR_GENERIC


class ArgsError(OCFError):
    code = OCF.ERR_ARGS


class PermError(OCFError):
    code = OCF.ERR_PERM


class NotInstalled(OCFError):
    code = OCF.ERR_INSTALLED


class ConfigError(OCFError):
    code = OCF.ERR_CONFIGURED


class NotRunning(OCFError):
    code = OCF.NOT_RUNNING


class FailedPromoted(OCFError):
    code = OCF.FAILED_PROMOTED


class Action:
    """An action of the agent: the verb, its handler and its meta-data hints.

    Several Action entries may share a name (monitor at depths 0, 10 and 20,
    or per role); they share the handler. ``timeout`` and ``interval`` are
    seconds.
    """

    __slots__ = ("name", "handler", "timeout", "interval", "depth", "role")

    def __init__(self, name, handler, timeout, *, interval=None, depth=None, role=None):
        self.name = name
        self.handler = handler
        self.timeout = timeout
        self.interval = interval
        self.depth = depth
        self.role = role


class Notify:
    """Pacemaker's notification variables, parsed once.

    Each of start, stop, active, promote, demote, promoted, unpromoted is a
    list of (resource, uname) pairs; ``inactive`` is a list of resources.
    The deprecated master/slave names fill in when the new ones are absent.
    """

    SETS = ("start", "stop", "active", "promote", "demote", "promoted", "unpromoted")
    ALIASES = {"promoted": "master", "unpromoted": "slave"}

    def __init__(self, environ):
        meta = "OCF_RESKEY_CRM_meta_notify_"

        def words(name, kind):
            text = environ.get(f"{meta}{name}_{kind}")
            if text is None and name in self.ALIASES:
                text = environ.get(f"{meta}{self.ALIASES[name]}_{kind}")
            return (text or "").split()

        self.type = environ.get(meta + "type", "")
        self.operation = environ.get(meta + "operation", "")
        for name in self.SETS:
            resources, unames = words(name, "resource"), words(name, "uname")
            unames += [""] * (len(resources) - len(unames))
            setattr(self, name, list(zip(resources, unames)))
        self.inactive = words("inactive", "resource")
        self.all_unames = words("all", "uname")
        self.available_unames = words("available", "uname")

    def unames(self, name: str) -> list[str]:
        """The node names of one set, e.g. ``notify.unames("promoted")``."""
        return [uname for _, uname in getattr(self, name) if uname]

    @property
    def key(self) -> str:
        """e.g. 'pre-promote', 'post-start'."""
        return f"{self.type}-{self.operation}"


class Context(_Generic[P]):
    """What a verb gets: typed parameters and the operation's circumstances.

    ``params`` is the agent's typed view of its parameters: a verb declares
    ``ctx: Context[Params]`` and the type checker knows every ``ctx.params`` name.
    """

    def __init__(self, agent: Agent, action: str, environ: Mapping[str, str], params: P,
                 log: Logger) -> None:
        self.agent = agent
        self.action = action
        self.environ = environ
        self.params = params
        self.log = log
        self.instance = environ.get("OCF_RESOURCE_INSTANCE", agent.name)
        self.meta = {k[len("OCF_RESKEY_CRM_meta_"):]: v for k, v in environ.items()
                     if k.startswith("OCF_RESKEY_CRM_meta_")}
        self.interval_ms = _int_or(self.meta.get("interval"), 0)
        self.timeout = agent.timeout_for(action, self.meta.get("timeout"))
        self.deadline = Deadline(self.timeout - agent.margin(self.timeout))
        self.check_level = agent.check_level(action, environ.get("OCF_CHECK_LEVEL"))
        self._notify: Notify | None = None
        # a web server's (port, default status URL), found once per run (_daemon.endpoint)
        self._endpoint: tuple[int, str] | None = None

    @property
    def is_probe(self) -> bool:
        """A monitor with interval 0 or unset (crm_resource --force-check)."""
        return self.action == "monitor" and self.interval_ms == 0

    @property
    def node(self) -> str:
        return self.meta.get("on_node") or os.uname().nodename

    @property
    def notify(self) -> Notify:
        if self._notify is None:
            self._notify = Notify(self.environ)
        return self._notify

    @property
    def notify_enabled(self) -> bool:
        return is_true(self.meta.get("notify"))

    def state_path(self, suffix: str, *, per_clone: bool = True) -> str:
        """This instance's state file: ``$HA_RSCTMP/hapack-<agent>-<instance>.<suffix>``.

        The one place the path is made: ``/`` in the instance becomes ``_``;
        ``per_clone=False`` drops the clone number (``rsc:1`` -> ``rsc``), for
        state that belongs to the resource on this node whatever its instance.
        """
        base = self.environ.get("HA_RSCTMP") or RSCTMP
        instance = self.instance if per_clone else self.instance.split(":")[0]
        return os.path.join(base, f"hapack-{self.agent.name}-{instance.replace('/', '_')}.{suffix}")

    def run(self, argv: list[str], *, timeout: float | None = None, **kwargs: Any) -> Result:
        """Run a command through the seam, bounded by the operation deadline."""
        left = self.deadline.left()
        timeout = left if timeout is None else min(timeout, left)
        kwargs.setdefault("secrets", self.params.secrets() if self.params else ())
        return run_command(argv, timeout=timeout, log=self.log, **kwargs)

    def set_promotion_score(self, score: int | str) -> None:
        """Write this node's promotion score (transient, lifetime reboot)."""
        argv = ["crm_attribute", "--promotion", "-l", "reboot", "-v", str(score)]
        self._promotion(argv, f"set promotion score {score}")

    def clear_promotion_score(self) -> None:
        self._promotion(["crm_attribute", "--promotion", "-l", "reboot", "-D"],
                        "clear promotion score")

    def promotion_score(self) -> str | None:
        """This node's promotion score as the CIB has it: its text, "" when the CIB has
        none, None when it cannot be read.

        Read under the resource's name without the clone instance (``partition``, not
        ``partition:0``): Pacemaker's attribute manager stores the score a clone instance
        sets as ``master-partition``, but ``crm_attribute -G`` reads the CIB itself and
        would look for ``master-partition:0`` (Pacemaker 2.1.5, seen in the lab)."""
        env = dict(self.environ, OCF_RESOURCE_INSTANCE=self.instance.split(":")[0])
        argv = ["crm_attribute", "--promotion", "-l", "reboot", "-G", "-q"]
        try:
            result = self.run(argv, timeout=min(5.0, self.deadline.left()), env=env)
        except CommandError:
            return None
        if result.ok:
            return result.stdout.strip()
        return "" if result.returncode == CRM_EX_NOSUCH else None

    def _promotion(self, argv, what):
        env = dict(self.environ, OCF_RESOURCE_INSTANCE=self.instance)
        try:
            result = self.run(argv, timeout=min(5.0, self.deadline.left()), env=env)
        except CommandError as exc:
            raise GenericError(f"cannot {what}: {exc}") from None
        if not result.ok:
            raise GenericError(f"cannot {what}: {result.output()}")
        self.log.debug(what)


def _int_or(text, default):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


class Agent:
    """The declaration of an OCF agent and its entry point."""

    def __init__(self, name, *, version, shortdesc, longdesc, params, actions,
                 validate=None, translate=None, values: type[Values] = Values):
        """``translate(raw) -> (raw, notes)`` turns a stock agent's value forms into
        this agent's (IPaddr2's ``nic=eth0:label``) before parsing; each note is
        warned about like a deprecated name. ``values`` is the class parse() builds:
        the agent's typed view of its parameters (canonical names only: aliases are
        mapped to their parameter before parsing)."""
        self.name = name
        self.translate = translate
        self.version = version
        self.shortdesc = shortdesc
        self.longdesc = longdesc
        self.params = tuple(params)
        self.actions = tuple(actions)
        self.validate = validate
        self.values = values
        names = [n for p in self.params for n in (p.name, *p.aliases)]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise TypeError(f"{name}: parameters declared twice: {sorted(duplicates)}")
        self.handlers: dict[str, Callable[..., Any]] = {}
        for action in self.actions:
            self.handlers.setdefault(action.name, action.handler)
        for required in ("start", "stop", "monitor"):
            if required not in self.handlers:
                raise TypeError(f"{name}: the {required} action is mandatory")

    # -- declarations used by the runner and the meta-data ------------------

    def all_actions(self) -> tuple[Action, ...]:
        """The declared actions plus validate-all and meta-data."""
        extra = []
        if "validate-all" not in self.handlers:
            extra.append(Action("validate-all", None, 20))
        extra.append(Action("meta-data", None, 5))
        return self.actions + tuple(extra)

    def depths(self) -> list[int]:
        found = sorted({a.depth or 0 for a in self.actions if a.name == "monitor"})
        return found or [0]

    def timeout_for(self, action: str, meta_timeout: str | None) -> float:
        """Seconds the cluster gives this operation."""
        ms = _int_or(meta_timeout, 0)
        if ms > 0:
            return ms / 1000.0
        hints = [a.timeout for a in self.all_actions() if a.name == action]
        return float(hints[0]) if hints else 20.0

    @staticmethod
    def margin(timeout: float) -> float:
        """Time kept back from the cluster's timeout to report a result."""
        return min(2.0, timeout * 0.1)

    def check_level(self, action: str, requested: str | None) -> int:
        """The level to run: the highest implemented one at or below the request."""
        if requested in (None, ""):
            level = 10 if action == "validate-all" else 0
        else:
            level = _int_or(requested.strip(), 0)
        if action != "monitor":
            return level
        supported = [d for d in self.depths() if d <= level]
        return supported[-1] if supported else 0

    # -- entry point --------------------------------------------------------

    def usage(self) -> str:
        verbs = sorted(set(self.handlers) | {"validate-all", "meta-data", "usage"})
        lines = [f"usage: {self.name} {{{'|'.join(verbs)}}}", "", "parameters (OCF_RESKEY_<name>):"]
        for param in self.params:
            flags = " (required)" if param.required else (
                f" (default: {param.default_text})" if param.default is not None and not param.secret else "")
            lines.append(f"  {param.name:<22} {param.shortdesc}{flags}")
        return "\n".join(lines)

    def run(self, argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
        """Run one action and exit with its code."""
        sys.exit(self.execute(sys.argv[1:] if argv is None else argv,
                              os.environ if environ is None else environ))

    def execute(self, argv: list[str], environ: Mapping[str, str], stdout: TextIO | None = None,
                stderr: TextIO | None = None) -> int:
        """Run one action and return its exit code (no sys.exit)."""
        stdout = stdout or sys.stdout
        stderr = stderr or sys.stderr
        if not argv:
            stderr.write(self.usage() + "\n")
            return OCF.ERR_ARGS
        action = argv[0]  # extra arguments are ignored, as the spec asks
        if action in ("-h", "--help", "usage", "help"):
            stdout.write(self.usage() + "\n")
            return OCF.SUCCESS
        if action == "meta-data":
            from hapack.ocf.metadata import metadata_xml
            stdout.write(metadata_xml(self))
            return OCF.SUCCESS
        if action not in self.handlers and action != "validate-all":
            stderr.write(self.usage() + "\n")
            return self._exit(stderr, None, OCF.ERR_UNIMPLEMENTED,
                              f"action '{action}' is not implemented by {self.name}")
        log = Logger(f"{self.name}({environ.get('OCF_RESOURCE_INSTANCE', self.name)})", environ, stderr)
        ctx: Context[Any] | None = None
        try:
            ctx = Context(self, action, environ, None, log)
            ctx.params = self._params(ctx, environ)
            if ctx.params is None:  # missing required parameter on stop or probe
                return self._missing_result(ctx)
            return OCF(self._dispatch(ctx))
        except OCFError as exc:
            return self._exit(stderr, log, self._code_for(ctx, exc), str(exc))
        except CommandError as exc:
            return self._exit(stderr, log, self._code_for(ctx, GenericError(str(exc))), str(exc))
        except Exception as exc:  # the one place that turns the unexpected into a code
            import traceback
            log.error(traceback.format_exc().rstrip())
            return self._exit(stderr, log, OCF.ERR_GENERIC,
                              f"internal error in {self.name} {action}: {type(exc).__name__}: {exc}")

    def _params(self, ctx, environ):
        try:
            raw = self._raw(ctx, environ)
            return parse(self.params, raw, into=self.values)
        except MissingParam as exc:
            if ctx.action == "stop" or ctx.is_probe:
                ctx.log.warning(f"{exc}; nothing can be running with this configuration")
                return None
            raise ConfigError(str(exc)) from None
        except ParamError as exc:
            raise ConfigError(str(exc)) from None

    def _raw(self, ctx, environ):
        """The raw parameters, stock names and value forms translated, each warned about
        once (this run)."""
        used: list[tuple[str, str]] = []
        raw = from_environ(self.params, environ, used=used)
        notes = [f"parameter {alias} is the stock agent's name of {name}: accepted, but "
                 f"deprecated; rename it to {name}" for alias, name in used]
        if self.translate is not None:
            try:
                raw, more = self.translate(raw)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            notes += more
        for note in notes:
            ctx.log.warning(note)
        return raw

    def _missing_result(self, ctx):
        return OCF.SUCCESS if ctx.action == "stop" else OCF.NOT_RUNNING

    def _dispatch(self, ctx):
        if ctx.action == "validate-all":
            handler = self.handlers.get("validate-all") or self.validate
        else:
            handler = self.handlers[ctx.action]
            if self.validate is not None and ctx.action in ("start", "promote"):
                self.validate(ctx)
        result = handler(ctx) if handler is not None else None
        return OCF.SUCCESS if result is None else result

    @staticmethod
    def _code_for(ctx, exc):
        """Apply the probe and stop rules to an error's code."""
        code = exc.code
        if ctx is not None and ctx.is_probe and code in (OCF.ERR_INSTALLED, OCF.ERR_CONFIGURED):
            ctx.log.info(f"probe: {exc}; reporting not running")
            return OCF.NOT_RUNNING
        return code

    @staticmethod
    def _exit(stderr, log, code, reason):
        if code in (OCF.SUCCESS, OCF.NOT_RUNNING, OCF.RUNNING_PROMOTED):
            if log is not None:
                log.info(reason)
            return code
        reason = " ".join(reason.split())  # one line, as Pacemaker reads it
        if log is not None:
            log.log(ERROR, reason, stderr=False)
        stderr.write(f"{EXIT_REASON_PREFIX}{reason}\n")
        stderr.flush()
        return code
