"""ocf:hapack:partition -- the replicated partition: replica role and mount as one promotable resource.

Started: the replica is attached and connecting (drbd) or the shared block
device is present and readable (shared); nothing is mounted. Promoted: DRBD
Primary (drbd) and the file system mounted read-write on ``directory``.
Promotion passes the gate in ``_gate`` (never while another node may still
use the partition); stop unmounts within the operation's budget, killing the
holders it finds in /proc, and fails naming them when it cannot, so the
cluster fences. Level-0 monitors read /proc/self/mountinfo (and /proc/drbd
on DRBD 8.4) and run no child process.

The partition is found by its device (major:minor), never by a path string:
``directory`` is resolved as the kernel spells it, "promoted" means our
device's file system is the mount that directory reaches, and stop or demote
succeed only once the device is mounted nowhere in this mount namespace (bind
mounts, other paths, under an over-mount) and nothing else holds it.
"""

from __future__ import annotations

import os

from hapack.ocf import (OCF, Action, Agent, ConfigError, FailedPromoted, GenericError,
                        NotInstalled, OCFError, Param)
from hapack.ocf import _mount, _replica
from hapack.ocf._replica import BACKENDS, probe, state_path, under_pacemaker, write_score
from hapack.command import CommandError
from hapack.params import Values, absolute_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.ocf.runner import Context

NAME = "partition"


def mount_point(text: str) -> str:
    path = absolute_path(text)
    if path == "/":
        raise ValueError("'/' cannot be a partition's mount point")
    return path


def word(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} must be one word, without spaces")
    return text


DRBD_NAME_CHARS = frozenset("-%+./0123456789:=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")


def drbd_name(text: str) -> str:
    if not text or not set(text) <= DRBD_NAME_CHARS:
        raise ValueError(f"{text!r} is not a DRBD resource name")
    return text


PARAMS = (
    Param("backend", "Replication backend",
          "drbd: a DRBD resource (role, connection and disk state through drbdadm/drbdsetup). "
          "shared: a block device every node sees (a SAN LUN); promotion is then gated on "
          "cluster knowledge and the file system's on-disk state.",
          kind="choice", choices=("drbd", "shared"), default="drbd"),
    Param("drbd_resource", "DRBD resource name",
          "The resource's name in the DRBD configuration (backend=drbd).", unique=True,
          check=drbd_name),
    Param("device", "Block device to mount",
          "The block device holding the file system: /dev/drbdN for drbd (the minor path; "
          "by-res links need udev), the LUN for shared.", required=True, check=absolute_path),
    Param("directory", "Mount point",
          "Where the file system is mounted on the promoted node; created when absent. "
          "Resolved as the kernel does (symlinked parents, '//', '..'); the mount is found "
          "by the device, whatever the spelling. '/' and a directory inside another "
          "partition resource's mount are refused.",
          required=True, unique=True, check=mount_point),
    Param("fstype", "File system type", "e.g. ext4 or xfs.", required=True, check=word),
    Param("options", "Mount options",
          "Comma-separated mount options. Level-0 monitors check the ones the kernel shows "
          "(nosuid, nodev, noexec, noatime, relatime, sync, ...); 'ro' is refused.",
          check=word),
    Param("run_fsck", "Check the file system before mounting",
          "auto: fsck -p for file systems without a journal (ext2, vfat); force: always; "
          "no: never.", kind="choice", choices=("auto", "force", "no"), default="auto"),
    Param("probe_timeout", "Disk probe timeout (s)",
          "Seconds a level-10 read or level-20 write-read-delete may take before the disk "
          "counts as hung (reported as a failure, not waited for).", kind="integer",
          default=5, minimum=1, maximum=120),
    Param("wfc_timeout", "Wait for connection (s)",
          "backend=drbd: seconds start waits for the peer to connect; start succeeds "
          "without it (the peer may be down). 0 does not wait.", kind="integer", default=5,
          minimum=0, maximum=600),
    Param("fence_confirmed_file", "Fence confirmation file",
          "Where hamon or external/bmc records a power-off of the peer verified through its "
          "BMC (on this node, this boot). A promotion not otherwise proven safe accepts it "
          "for 5 minutes; any promotion consumes it. Empty disables it.",
          default="/run/hapack/fence-confirmed"),
    Param("nodes", "The cluster's nodes",
          "The two node names, space separated (the stack file renders them). When set, a "
          "fence confirmation counts only if it names the one that is not this node, and "
          "this node must be one of them.", default=""),
    Param("promote_on_start", "Promote at start (no promotable clone)",
          "For cluster managers without promotable clones, such as Linux-HA Heartbeat's "
          "haresources: start also promotes (the promotion gate, then the mount), and a "
          "refused or failed promotion leaves the partition stopped; stop unmounts and demotes "
          "as always. Refused under Pacemaker: use a promotable clone there.",
          kind="boolean", default=False),
)


class Params(Values):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    backend: str
    drbd_resource: str | None
    device: str
    directory: str
    fstype: str
    options: str | None
    run_fsck: str
    probe_timeout: int
    wfc_timeout: int
    fence_confirmed_file: str
    nodes: str
    promote_on_start: bool


# -- where the partition is: decided by the device, never by a path string ----------

def _directory(ctx):
    """directory as the kernel spells it: symlinks, '//', '.', '..', trailing '/' resolved."""
    return _mount.resolve(ctx.params.directory)


def _of_device(ctx, mounts):
    """Every mount of our device in this namespace, by major:minor (by the source path
    only when the device node is gone: a vanished LUN)."""
    device = ctx.params.device
    number = _mount.device_number(device)
    if number is not None:
        return [m for m in mounts if m.dev == number]
    sources = {device, os.path.realpath(device)}
    return [m for m in mounts if m.source in sources]


def _placement(ctx, mounts=None):
    """(mine, stray, where): mine is our device's whole file system as the mount that
    ``where`` reaches now, or None; stray are the other mounts of our device
    (bind mounts, other paths, a mount hidden under an over-mount)."""
    mounts = _mount.table() if mounts is None else mounts
    where = _directory(ctx)
    ours = _of_device(ctx, mounts)
    mine = None
    if ours:
        top = _mount.visible(where, mounts)
        if top in ours and top.point == where and top.root == "/":
            mine = top
    return mine, [m for m in ours if m is not mine], where


def _stray_reason(ctx, stray, where, mounts, verb="is mounted on"):
    parts = []
    for mount in stray:
        cover = _mount.hidden_by(mount, mounts) if mount.point == where else None
        parts.append(f"{_mount.describe(mount)}{f' (hidden: {cover})' if cover else ''}")
    return f"{ctx.params.device} {verb} {', '.join(parts)}, not visibly on {where}"


def _check_directory(ctx, mounts):
    """Refuse our device mounted anywhere but visibly on directory, and a directory
    that another mount uses."""
    mine, stray, where = _placement(ctx, mounts)
    if mine is not None:  # already there (bind mounts of it are harmless meanwhile)
        return
    if stray:
        raise GenericError(_stray_reason(ctx, stray, where, mounts, "is already mounted on"))
    top = _mount.visible(where, mounts)
    if top is not None and top.point == where:
        raise GenericError(f"{where} is already a mount point of {top.source}")
    inside = _mount.below(where, mounts)
    if inside:
        raise GenericError(f"{inside[-1].point} is mounted below {where}; refusing to "
                           "hide it under the partition")


def _fsck(ctx):
    p = ctx.params
    if p.run_fsck == "no" or (p.run_fsck == "auto" and p.fstype not in ("ext2", "vfat", "msdos")):
        return
    result = ctx.run(["fsck", "-p", "-t", p.fstype, p.device])
    if result.returncode & ~3:  # 1: errors corrected, 2: reboot advised; 4 and up: failed
        raise GenericError(f"fsck of {p.device} failed (exit {result.returncode}): "
                           f"{result.output()}")


def _mount_it(ctx, where):
    p = ctx.params
    try:
        os.makedirs(where, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise GenericError(f"cannot create the mount point {where}: {exc.strerror}") from None
    _fsck(ctx)
    result = ctx.run(_mount.mount_argv(p.fstype, p.options, p.device, where))
    if not result.ok:
        raise GenericError(f"mount {p.device} on {where} failed: {result.output()}")
    mounts = _mount.table()
    mine, stray, _ = _placement(ctx, mounts)
    if mine is None:
        raise GenericError(f"{p.device} is not visible on {where} after mount"
                           + (f" ({_stray_reason(ctx, stray, where, mounts)})" if stray else ""))
    problems = _mount.option_problems(mine, p.options)
    if problems:
        raise GenericError(f"{where} after mount: {'; '.join(problems)}")


def _release(ctx):
    """Unmount every mount of our device in this namespace (and what is stacked on or
    below them) within the budget, keeping a margin for DRBD; then make sure nothing
    else holds the device: no other mount namespace, no process, no stacked device."""
    p = ctx.params
    deadline = ctx.deadline.sub(min(2.0, ctx.deadline.left() * 0.2))
    marker = state_path(ctx, "held")  # a release that failed: check everywhere again
    had = bool(_of_device(ctx, _mount.table())) or os.path.exists(marker)
    left = _mount.release(lambda mounts: _of_device(ctx, mounts), deadline, ctx.log)
    if left:
        raise GenericError(f"cannot unmount {p.device} from {_directory(ctx)}: still held by "
                           f"{_mount.names(left)}")
    number = _mount.device_number(p.device)
    if number is None:
        return
    # Mounted here: it must now be free everywhere on this kernel (a copy in another
    # namespace keeps it mounted). Not mounted here: only this namespace's processes
    # count (the lab's nodes are namespaces of one kernel: the peer may hold it).
    left = _mount.free(p.device, number, deadline, ctx.log, everywhere=had)
    _mark(marker, bool(left))
    if left:
        held = ", ".join(f"mounted in the mount namespace of {comm}[{pid}]"
                         if how == "mount namespace" else _mount.names([(pid, comm, how)])
                         for pid, comm, how in left)
        raise GenericError(f"{p.device} is unmounted here but still in use ({held}): "
                           "not released")


def _mark(path, on):
    if not on:
        _replica.remove(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="ascii") as handle:
        handle.write("the device was still held after the partition's umount\n")


def _look(ctx, backend, mounted):
    """The backend's state; when it cannot be known, a mounted partition is a failed
    promoted one (9) and an unmounted one an error (1): never 'not running'."""
    try:
        return backend.look(ctx)
    except (CommandError, OCFError) as exc:
        if mounted:
            raise FailedPromoted(f"{ctx.params.device} is mounted but its state is unknown: "
                                 f"{exc}") from None
        raise GenericError(str(exc)) from None


# -- check levels ----------------------------------------------------------------------

def _level(ctx, role):
    """The level to run for this role: the highest monitor depth the agent declares for
    the role at or below the requested one (Unpromoted has no level 20: no mount)."""
    depths = [a.depth or 0 for a in AGENT.actions
              if a.name == "monitor" and a.role in (None, role)]
    return max([d for d in depths if d <= ctx.check_level], default=0)


def _deep_checks(ctx, backend, look, role, error):
    level = _level(ctx, role)
    if level >= 10:
        backend.check_disk(ctx, look, error, role == "Promoted")
    if level >= 20:
        path = os.path.join(_directory(ctx), f".hapack-probe-{ctx.instance.split(':')[0]}")
        probe(ctx, lambda: _mount.write_read_delete(path), error,
              f"write probe in {_directory(ctx)}")


# -- the verbs -----------------------------------------------------------------------

def monitor(ctx: Context[Params]) -> int:
    backend = BACKENDS[ctx.params.backend]
    mounts = _mount.table()
    mine, stray, where = _placement(ctx, mounts)
    if mine is None and stray:
        raise FailedPromoted(_stray_reason(ctx, stray, where, mounts))
    look = _look(ctx, backend, mine is not None)
    if not backend.running(look, mine):
        return OCF.NOT_RUNNING
    if mine is not None or backend.promoted(look, mine):
        return _monitor_promoted(ctx, backend, look, mine)
    problem = backend.problem(ctx, look)
    if problem:
        raise GenericError(problem)
    _deep_checks(ctx, backend, look, "Unpromoted", GenericError)
    write_score(ctx, backend.score(ctx, look), force=ctx.is_probe, verify=True)
    _report_degraded(ctx, backend, look, OCF.DEGRADED)
    return OCF.SUCCESS


def _monitor_promoted(ctx, backend, look, mine):
    p = ctx.params
    if mine is None:
        raise FailedPromoted(f"{p.drbd_resource} is Primary but {p.device} is not mounted on "
                             f"{_directory(ctx)}")
    problems = _mount.option_problems(mine, p.options)
    if _mount.device_number(p.device) is None:
        problems.insert(0, f"{p.device} is gone")
    role = backend.role_problem(ctx, look)
    if role:
        problems.insert(0, role)
    if problems:
        raise FailedPromoted(f"{_directory(ctx)}: {'; '.join(problems)}")
    _deep_checks(ctx, backend, look, "Promoted", FailedPromoted)
    write_score(ctx, backend.score(ctx, look), force=ctx.is_probe, verify=True)
    _report_degraded(ctx, backend, look, OCF.DEGRADED_PROMOTED)
    return OCF.RUNNING_PROMOTED


def _report_degraded(ctx, backend, look, code):
    """Last, once the role is known and every check passed: degraded (190 or 191, the
    role kept) while split brain is recorded or the replica is not there."""
    text = backend.split_brain(ctx)
    if text:
        raise OCFError(f"split brain on {ctx.params.drbd_resource}, not resolved by the agent: "
                       f"{text}", code)
    why = backend.without_replica(ctx, look)
    if why:
        raise OCFError(why, code)


def start(ctx: Context[Params]) -> None:
    p = ctx.params
    backend = BACKENDS[p.backend]
    _check_directory(ctx, _mount.table())
    backend.start(ctx)
    os.makedirs(os.path.dirname(state_path(ctx, "state")), exist_ok=True)
    with open(state_path(ctx, "state"), "w", encoding="utf-8") as handle:
        handle.write(f"{_directory(ctx)}\n{p.device}\n")
    write_score(ctx, backend.score(ctx, backend.look(ctx)), force=True)
    ctx.log.info(f"{p.device} is ready (not mounted)")
    if p.promote_on_start:
        try:
            promote(ctx)
        except OCFError as exc:
            _undo(ctx, exc, stop)


def _undo(ctx, exc, verb):
    """A failed start or promotion leaves nothing behind; if undoing fails too, the
    reason says so (the cluster then stops the resource, or fences)."""
    try:
        verb(ctx)
    except (OCFError, CommandError) as undo:
        raise GenericError(f"{exc}; undoing it failed: {undo}") from exc
    raise exc


def stop(ctx: Context[Params]) -> None:
    backend = BACKENDS[ctx.params.backend]
    _release(ctx)
    backend.stop(ctx, _look(ctx, backend, False))
    if under_pacemaker(ctx):
        try:
            ctx.clear_promotion_score()
        except OCFError as exc:
            ctx.log.warning(str(exc))
    for suffix in ("state", "score", "notify"):
        _replica.remove(state_path(ctx, suffix))


def promote(ctx: Context[Params]) -> None:
    p = ctx.params
    backend = BACKENDS[p.backend]
    mounts = _mount.table()
    mine, _, where = _placement(ctx, mounts)
    look = _look(ctx, backend, mine is not None)
    if not backend.running(look, mine):
        raise GenericError(f"cannot promote: {p.device} is not started")
    if mine is None:
        _check_directory(ctx, mounts)
        if not backend.promoted(look, mine):
            _pass_gate(ctx, backend, look)
            backend.promote(ctx, look)
        try:
            _mount_it(ctx, where)
        except OCFError as exc:
            _undo(ctx, exc, _undo_promote)
        ctx.log.info(f"{p.device} is mounted on {where}")
    else:
        problem = backend.role_problem(ctx, look)
        if problem:
            raise GenericError(f"{where} is mounted but {problem}")
    write_score(ctx, backend.score(ctx, backend.look(ctx)), force=True)


def _peer(ctx):
    """The other node of ``nodes`` (None when unset): the only one a fence confirmation
    may name."""
    names = ctx.params.nodes.split()
    if not names:
        return None
    others = [n for n in names if n != ctx.node]
    if len(names) != 2 or len(set(names)) != 2 or len(others) != 1:
        raise ConfigError(f"nodes={ctx.params.nodes!r} must name this node ({ctx.node}) "
                          "and its one peer")
    return others[0]


def _undo_promote(ctx):
    backend = BACKENDS[ctx.params.backend]
    _release(ctx)
    backend.demote(ctx, backend.look(ctx))


def _pass_gate(ctx, backend, look):
    p = ctx.params
    refusal = backend.refuse(ctx, look)
    if refusal:
        raise GenericError(f"refusing to promote: {refusal}")
    from hapack.ocf import _gate
    notify = _gate.read_notification(state_path(ctx, "notify"))
    fenced, note = _gate.read_fence_confirmation(p.fence_confirmed_file, ctx.node,
                                                 _peer(ctx))
    ev = _gate.Evidence(ctx.node, p.backend, notify=notify, fenced=fenced, fence_note=note,
                        device=p.device)
    backend.add_evidence(ctx, look, ev)
    if notify is not None and ctx.node in notify["promote"]:
        ev.stonith_enabled = _gate.stonith_enabled(ctx)
    decision = _gate.decide(ev)
    allowed, why = decision
    if not allowed:
        raise GenericError(f"refusing to promote: {why}")
    _gate.consume_fence_confirmation(p.fence_confirmed_file)  # whatever the basis
    ctx.log.info(f"promotion allowed: {why}")
    _replica.remove(state_path(ctx, "notify"))  # one notification, one promotion


def demote(ctx: Context[Params]) -> int | None:
    backend = BACKENDS[ctx.params.backend]
    mine, stray, _ = _placement(ctx)
    _release(ctx)
    look = _look(ctx, backend, False)
    if not backend.running(look, None) and mine is None and not stray:
        return OCF.NOT_RUNNING
    backend.demote(ctx, look)
    write_score(ctx, backend.score(ctx, backend.look(ctx)), force=True)
    return None


def notify(ctx: Context[Params]) -> None:
    event = ctx.notify
    if event.key == "pre-promote":
        from hapack.ocf import _gate
        _gate.record_notification(state_path(ctx, "notify"), event)
    elif event.type == "post":
        backend = BACKENDS[ctx.params.backend]
        mine = _placement(ctx)[0]
        try:
            look = backend.look(ctx)
        except CommandError as exc:  # the score waits for the next monitor
            ctx.log.warning(f"promotion score not updated: {exc}")
            return
        if backend.running(look, mine):
            write_score(ctx, backend.score(ctx, look), force=True)


# -- validation ----------------------------------------------------------------------

def validate(ctx: Context[Params]) -> None:
    p = ctx.params
    if p.backend == "drbd" and not p.drbd_resource:
        raise ConfigError("backend=drbd needs drbd_resource")
    if p.nodes and (len(p.nodes.split()) != 2 or len(set(p.nodes.split())) != 2):
        raise ConfigError(f"nodes={p.nodes!r} must be the two node names, space separated")
    if "ro" in _mount.options_list(p.options):
        raise ConfigError("options must not contain 'ro': the promoted partition is read-write")
    if under_pacemaker(ctx):
        if p.promote_on_start:
            raise ConfigError("promote_on_start is for cluster managers without promotable "
                              "clones (Heartbeat); under Pacemaker use a promotable clone")
        _check_clone(ctx)
    if ctx.action != "validate-all" or ctx.check_level >= 10:
        _check_node(ctx)


def _check_clone(ctx):
    """Pacemaker passes promoted_max (and the legacy master_max) to promotable clones only."""
    meta = ctx.meta
    promoted_max = meta.get("promoted_max") or meta.get("master_max")
    if not promoted_max:
        raise ConfigError(f"{NAME} must run as a promotable clone (promotable=true)")
    if not ctx.notify_enabled:
        raise ConfigError(f"{NAME} needs notify=true on its clone: the promotion gate reads "
                          "Pacemaker's pre-promote notification")
    if int(promoted_max) > 1:
        raise ConfigError("promoted-max must be 1: the partition is mounted on one node only")
    if int(meta.get("clone_node_max", "1") or 1) > 1:
        raise ConfigError("clone-node-max must be 1")


def _check_node(ctx):
    """What this node must have: the device (or DRBD resource), the file system, a free spot."""
    p = ctx.params
    if p.backend == "shared":
        if not os.path.exists(p.device):
            raise NotInstalled(f"{p.device} does not exist on this node")
        if _mount.device_number(p.device) is None:
            raise ConfigError(f"{p.device} is not a block device")
    else:
        _replica.check_drbd_config(ctx)
    if not _mount.fstype_known(p.fstype):
        raise NotInstalled(f"file system type {p.fstype} is not supported by this kernel")
    _check_mount_point(ctx)
    _check_nesting(ctx)


def _check_mount_point(ctx):
    """directory resolved (symlinks, '//', '..'): not '/', a directory or absent."""
    given, where = ctx.params.directory, _directory(ctx)
    spelled = given if where == given else f"{given} (resolved: {where})"
    if where == "/":
        raise ConfigError(f"{spelled} is '/': it cannot be a partition's mount point")
    if os.path.islink(where):
        raise ConfigError(f"{spelled} is a symbolic link that does not resolve (a loop?)")
    if os.path.lexists(where) and not os.path.isdir(where):
        raise ConfigError(f"{spelled} exists and is not a directory")


def _check_nesting(ctx):
    """Refuse a mount point inside (or around) another partition resource's mount point."""
    import glob
    mine = state_path(ctx, "state")
    here = _directory(ctx).rstrip("/") + "/"
    for path in glob.glob(os.path.join(os.path.dirname(mine), "hapack-partition-*.state")):
        if path == mine:
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                other = _mount.resolve(handle.readline().strip()).rstrip("/") + "/"
        except OSError:
            continue
        if other != "/" and (here.startswith(other) or other.startswith(here)):
            rsc = os.path.basename(path)[len("hapack-partition-"):-len(".state")]
            raise ConfigError(f"{here.rstrip('/')} is nested with {other.rstrip('/')}, the "
                              f"mount point of partition resource {rsc}")


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="Replicated partition: DRBD role or shared LUN, and its mount, as one promotable resource",
    longdesc=("Manages the partition the stateful layers keep their data on. Started: the "
              "replica is attached and connected (drbd) or the shared device is present "
              "(shared), not mounted. Promoted: Primary and mounted read-write. Promotion "
              "scores follow the DRBD disk state (UpToDate high, Consistent low, anything "
              "else never). Promotion is refused while another node may still use the "
              "partition. Stop unmounts within the operation timeout, killing the processes "
              "that hold the mount (found in /proc), and fails naming them when it cannot. "
              "Must run as a promotable clone with notify=true under Pacemaker; without "
              "clones (Heartbeat's haresources) set promote_on_start."),
    params=PARAMS,
    values=Params,
    actions=(
        Action("start", start, 60),
        Action("stop", stop, 60),
        Action("promote", promote, 60),
        Action("demote", demote, 60),
        Action("notify", notify, 20),
        Action("monitor", monitor, 20, interval=20, depth=0, role="Unpromoted"),
        Action("monitor", monitor, 30, interval=45, depth=10, role="Unpromoted"),
        Action("monitor", monitor, 20, interval=10, depth=0, role="Promoted"),
        Action("monitor", monitor, 30, interval=30, depth=10, role="Promoted"),
        Action("monitor", monitor, 30, interval=60, depth=20, role="Promoted"),
    ),
    validate=validate,
)


def main() -> None:
    AGENT.run()


if __name__ == "__main__":
    main()
