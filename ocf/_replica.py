"""The replica under the partition's mount, for the partition agent: a shared LUN or DRBD.

Each backend answers the same questions (running? promoted? what score?)
and does the replica's part of start, promote, demote and stop; the agent
does the mount. Also here: the agent's state files in $HA_RSCTMP, the
promotion score writer (only under Pacemaker; when the score changed, or
the CIB lost it)
and the bounded disk probe.
"""

from __future__ import annotations

import os

from hapack.ocf import ConfigError, GenericError, NotInstalled, OCFError
from hapack.ocf import _drbd, _mount

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from typing import Callable
    from hapack.ocf._mount import Mount
    from hapack.ocf._gate import Evidence
    from hapack.ocf._drbd import State
    from hapack.ocf.runner import Context, FailedPromoted

SHARED_SCORE = 1000  # shared backend: the device is present (and was readable at start)


# -- state kept between calls ------------------------------------------------------

def state_path(ctx: Context, suffix: str) -> str:
    """$HA_RSCTMP/hapack-partition-<resource>.<suffix>; the clone number is dropped."""
    return ctx.state_path(suffix, per_clone=False)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def under_pacemaker(ctx: Context) -> bool:
    return "OCF_RESKEY_crm_feature_set" in ctx.environ


def write_score(ctx: Context, score: str | int | None, force: bool = False,
                verify: bool = False) -> None:
    """Write the promotion score when it changed (always when forced); Pacemaker only.

    ``verify`` (recurring monitors): the CIB's value is read back and a missing or
    different one written again. The attribute manager can lose a node's transient
    attributes around a peer's rejoin while still holding the value itself, so the
    cache alone would never write it again (campaign finding 2)."""
    if score == _drbd.KEEP or not under_pacemaker(ctx):
        return
    cache = state_path(ctx, "score")
    text = "none" if score is None else str(score)
    if not force and verify:
        seen = ctx.promotion_score()
        if seen == ("" if score is None else text):
            _remember(cache, text)
            return
        if seen == "" and score is not None:
            _lost(ctx, text)
        force = True
    if not force and _remembered(cache) == text:
        return
    try:
        if score is None:
            ctx.clear_promotion_score()
        else:
            ctx.set_promotion_score(score)
    except OCFError as exc:  # retried at the next monitor; not a failure of the resource
        ctx.log.error(str(exc))
        return
    _remember(cache, text)


def _lost(ctx, text):
    """The CIB has no score here: the attribute manager may still hold ours and take the
    same value again as no change, so it forgets it first (nothing changes in the CIB)."""
    ctx.log.warning(f"promotion score {text} missing from the CIB: writing it again")
    try:
        ctx.clear_promotion_score()
    except OCFError as exc:
        ctx.log.warning(str(exc))


def _remembered(cache):
    try:
        with open(cache, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _remember(cache, text):
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, "w", encoding="ascii") as handle:
        handle.write(text + "\n")


# -- the bounded disk probe ----------------------------------------------------------

def probe(ctx: Context, work: Callable, error: type[OCFError], what: str) -> Any:
    """work() in a child, bounded by probe_timeout and by the operation's deadline."""
    timeout = min(float(ctx.params.probe_timeout), ctx.deadline.left())
    if timeout <= 0:
        raise error(f"{what}: no time left before the operation's deadline")
    try:
        return _mount.bounded(work, timeout)
    except _mount.ProbeFailed as exc:
        capped = "" if timeout >= ctx.params.probe_timeout else " (the operation's time left)"
        raise error(f"{what}: {exc}{capped}") from None


def read_device(ctx: Context, error: type[OCFError]) -> None:
    """Level 10: one block read from the device itself (O_DIRECT), bounded."""
    device = ctx.params.device
    probe(ctx, lambda: _mount.read_block(device), error, f"cannot read from {device}")


# -- backends ------------------------------------------------------------------------

class Shared:
    """A block device all nodes see. Started: present and readable; promoted: mounted."""

    def look(self, ctx: Context) -> bool:
        return os.path.exists(state_path(ctx, "state"))

    def running(self, look: bool, mine: Mount | None) -> bool:
        return look or mine is not None

    def promoted(self, look: bool, mine: Mount | None) -> bool:
        return mine is not None

    def role_problem(self, ctx: Context, look: bool) -> None:
        return None

    def check_disk(self, ctx: Context, look: bool, error: type[GenericError],
                   promoted: bool) -> None:
        """Level 10: the device answers a read."""
        read_device(ctx, error)

    def problem(self, ctx: Context, look: bool) -> str | None:
        if _mount.device_number(ctx.params.device) is None:
            return f"{ctx.params.device} is gone or no longer a block device"
        return None

    def score(self, ctx: Context, look: bool) -> int | None:
        return SHARED_SCORE if self.problem(ctx, look) is None else None

    def split_brain(self, ctx: Context) -> str | None:
        return None

    def without_replica(self, ctx: Context, look: bool) -> None:
        return None  # one device every node sees: no replica to lose

    def start(self, ctx: Context) -> None:
        read_device(ctx, GenericError)

    def refuse(self, ctx: Context, look: Any) -> str | None:
        return None

    def add_evidence(self, ctx: Context, look: Any, ev: Evidence) -> None:
        block = probe(ctx, lambda: _mount.read_block(ctx.params.device), GenericError,
                      f"cannot read {ctx.params.device}")
        in_use = _mount.ext_in_use(block) if ctx.params.fstype.startswith("ext") else None
        ev.released = None if in_use is None else not in_use

    def promote(self, ctx: Context, look: bool) -> None:
        pass

    def demote(self, ctx: Context, look: bool) -> None:
        pass

    stop = demote


class Drbd:
    """A DRBD resource. Started: up (attached, connecting); promoted: Primary."""

    def look(self, ctx: Context) -> State:
        """The DRBD state; an unknown state raises CommandError (exit 1), never 'down'."""
        return _drbd.read_state(lambda argv: ctx.run(argv, timeout=10),
                                ctx.params.drbd_resource, ctx.params.device)

    def running(self, look: State, mine: Mount | None) -> bool:
        return look.configured or mine is not None  # mounted: running, whatever DRBD says

    def promoted(self, look: State, mine: Mount | None) -> bool:
        return look.role == "Primary"

    def role_problem(self, ctx: Context, look: State) -> str | None:
        """A mounted partition whose DRBD resource is not Primary: DRBD's report is wrong."""
        if look.role != "Primary":
            return f"DRBD reports {ctx.params.drbd_resource} {look!r}, not Primary"
        return None

    def check_disk(self, ctx: Context, look: State,
                   error: type[GenericError] | type[FailedPromoted], promoted: bool) -> None:
        """Level 10: the local disk is attached (a Diskless Primary reads from the peer);
        promoted, the device answers a read too (a Secondary cannot be opened)."""
        if look.disk in _drbd.DETACHED:
            raise error(f"the local disk of {ctx.params.drbd_resource} is {look.disk} "
                        "(detached): the replica is not on this node")
        if promoted:
            read_device(ctx, error)

    def problem(self, ctx: Context, look: State) -> None:
        return None

    def score(self, ctx: Context, look: State) -> str | int | None:
        return _drbd.promotion_score(look, bool(self.split_brain(ctx)))

    def split_brain(self, ctx: Context) -> str | None:
        return _drbd.split_brain(ctx.environ, ctx.params.drbd_resource)

    def without_replica(self, ctx: Context, look: State) -> str | None:
        """Why the resource runs without its replica, naming the state, or None."""
        why = _drbd.without_replica(look)
        return f"{ctx.params.drbd_resource} runs without its replica: {why}" if why else None

    def _adm(self, ctx, verb, error=GenericError):
        result = ctx.run(_drbd.drbdadm(verb, ctx.params.drbd_resource))
        if not result.ok:
            raise error(f"drbdadm {verb} {ctx.params.drbd_resource} failed: "
                        f"{result.output() or f'exit {result.returncode}'}")

    def start(self, ctx: Context) -> None:
        if not os.path.exists(_drbd.PROC):
            result = ctx.run(_drbd.MODPROBE, timeout=30)
            if not result.ok:
                raise NotInstalled(f"cannot load the drbd kernel module: {result.output()}")
        look = self.look(ctx)
        if not look.configured:
            self._adm(ctx, "up")
        elif look.disk == "Diskless" or not look.connected:
            self._adm(ctx, "adjust")
        from hapack.timing import Deadline, wait_until
        wait = Deadline(min(ctx.params.wfc_timeout, ctx.deadline.left()))
        def connected():
            state = self.look(ctx)
            return state if state.connected else None

        look = wait_until(connected, wait) or self.look(ctx)
        ctx.log.info(f"{ctx.params.drbd_resource} is up: {look}")

    def refuse(self, ctx: Context, look: State) -> str | None:
        return _drbd.refuse_promotion(look, bool(self.split_brain(ctx)))

    def add_evidence(self, ctx: Context, look: State, ev: Evidence) -> None:
        ev.peer_role, ev.cstate = look.peer_role, look.cstate

    def promote(self, ctx: Context, look: State) -> None:
        if look.role != "Primary":
            self._adm(ctx, "primary")

    def demote(self, ctx: Context, look: State) -> None:
        if look.configured and look.role != "Secondary":
            self._adm(ctx, "secondary")
            self._settled(ctx, "demote")

    def stop(self, ctx: Context, look: State) -> None:
        if look.configured:
            if look.role != "Secondary":
                self._adm(ctx, "secondary")
            self._adm(ctx, "down")
            self._settled(ctx, "stop")

    def _settled(self, ctx, verb):
        """Afterwards the resource must be Secondary or down, as DRBD itself reports."""
        problem = _drbd.role_settled(self.look(ctx))
        if problem:
            raise GenericError(f"{verb} of {ctx.params.drbd_resource} not verified: {problem}")


BACKENDS: dict[str, Any] = {"shared": Shared(), "drbd": Drbd()}


def check_drbd_config(ctx: Context) -> None:
    p = ctx.params
    from hapack.command import which
    if which("drbdadm") is None:
        raise NotInstalled("drbdadm is not installed (drbd-utils)")
    result = ctx.run(_drbd.drbdadm("sh-dev", p.drbd_resource), timeout=10)
    if not result.ok:
        raise NotInstalled(f"DRBD resource {p.drbd_resource} is not configured on this node: "
                           f"{result.output()}")
    configured = result.stdout.strip()
    if configured and os.path.realpath(configured) != os.path.realpath(p.device):
        raise ConfigError(f"device {p.device} is not the device of DRBD resource "
                          f"{p.drbd_resource} ({configured})")
