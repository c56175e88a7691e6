"""ocf:hapack:partition -- the replicated partition: replica role and mount as one promotable resource.

Started: the replica is attached and connecting (drbd) or the shared block
device is present and readable (shared); nothing is mounted. Promoted: DRBD
Primary (drbd) and the file system mounted read-write on ``directory``.
Promotion passes the gate in ``_gate`` (never while another node may still
use the partition); stop unmounts within the operation's budget, killing the
holders it finds in /proc, and fails naming them when it cannot, so the
cluster fences. Level-0 monitors read /proc/self/mountinfo (and /proc/drbd
on DRBD 8.4) and run no child process.
"""

import os

from hapack.ocf import (OCF, Action, Agent, ConfigError, FailedPromoted, GenericError,
                        NotInstalled, OCFError, Param)
from hapack.ocf import _mount, _replica
from hapack.ocf._daemon import absolute_path
from hapack.ocf._replica import BACKENDS, probe, state_path, under_pacemaker, write_score

NAME = "partition"


def mount_point(text):
    path = absolute_path(text)
    if path == "/":
        raise ValueError("'/' cannot be a partition's mount point")
    return path


def word(text):
    if not text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} must be one word, without spaces")
    return text


DRBD_NAME_CHARS = frozenset("-%+./0123456789:=@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")


def drbd_name(text):
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
          "'/' and a directory inside another partition resource's mount are refused.",
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
    Param("promote_on_start", "Promote at start (no promotable clone)",
          "For cluster managers without promotable clones, such as Linux-HA Heartbeat's "
          "haresources: start also promotes (the promotion gate, then the mount), and a "
          "refused or failed promotion leaves the partition stopped; stop unmounts and demotes "
          "as always. Refused under Pacemaker: use a promotable clone there.",
          kind="boolean", default=False),
)


# -- mount helpers ---------------------------------------------------------------------

def _ours(ctx, mounts=None):
    """Our device's mount on the directory (the visible one), or None. Matched by
    major:minor; by the source path when the device node is gone (a vanished LUN)."""
    mounts = _mount.table() if mounts is None else mounts
    on_dir = _mount.at(ctx.params.directory, mounts)
    if not on_dir:
        return None
    number = _mount.device_number(ctx.params.device)
    top = on_dir[-1]
    if top.dev == number or (number is None and top.source == ctx.params.device):
        return top
    return None


def _check_directory(ctx, mounts):
    """Refuse a mount point that another mount uses, or our device mounted elsewhere."""
    p = ctx.params
    on_dir = _mount.at(p.directory, mounts)
    if on_dir and _ours(ctx, mounts) is None:
        raise GenericError(f"{p.directory} is already a mount point of {on_dir[-1].source}")
    inside = _mount.below(p.directory, mounts)
    if inside and not on_dir:
        raise GenericError(f"{inside[-1].point} is mounted below {p.directory}; refusing to "
                           "hide it under the partition")
    elsewhere = [m.point for m in _mount.of_device(p.device, mounts) if m.point != p.directory]
    if elsewhere:
        raise GenericError(f"{p.device} is already mounted on {', '.join(elsewhere)}")


def _fsck(ctx):
    p = ctx.params
    if p.run_fsck == "no" or (p.run_fsck == "auto" and p.fstype not in ("ext2", "vfat", "msdos")):
        return
    result = ctx.run(["fsck", "-p", "-t", p.fstype, p.device])
    if result.returncode & ~3:  # 1: errors corrected, 2: reboot advised; 4 and up: failed
        raise GenericError(f"fsck of {p.device} failed (exit {result.returncode}): "
                           f"{result.output()}")


def _mount_it(ctx):
    p = ctx.params
    if not os.path.isdir(p.directory):
        os.makedirs(p.directory, mode=0o755, exist_ok=True)
    _fsck(ctx)
    result = ctx.run(_mount.mount_argv(p.fstype, p.options, p.device, p.directory))
    if not result.ok:
        raise GenericError(f"mount {p.device} on {p.directory} failed: {result.output()}")
    mine = _ours(ctx)
    problems = _mount.option_problems(mine, p.options) if mine else ["not visible after mount"]
    if problems:
        _release(ctx)
        raise GenericError(f"{p.directory} after mount: {'; '.join(problems)}")


def _release(ctx):
    """Unmount the directory (and below) within the budget, keeping a margin for DRBD;
    then make sure no other mount namespace still has the file system mounted."""
    p = ctx.params
    deadline = ctx.deadline.sub(min(2.0, ctx.deadline.left() * 0.2))
    left = _mount.release(p.directory, deadline, ctx.log)
    if left:
        names = ", ".join(f"{comm}[{pid}] ({how})" if pid else comm for pid, comm, how in left)
        raise GenericError(f"cannot unmount {p.directory}: still held by {names}")
    from hapack.timing import Deadline, wait_until
    if wait_until(lambda: not _mount.still_open(p.device), Deadline(min(1.0, deadline.left()))):
        return
    number = _mount.device_number(p.device)
    others = _mount.namespaces_holding(number) if number else []
    names = ", ".join(f"{comm}[{pid}]" for pid, comm in others) or "an unknown holder"
    raise GenericError(f"{p.directory} is unmounted here but {p.device} is still in use "
                       f"(mounted in the mount namespace of {names}): not released")


def _level_probe(ctx, error):
    p = ctx.params
    if ctx.check_level >= 20:
        path = os.path.join(p.directory, f".hapack-probe-{ctx.instance.split(':')[0]}")
        probe(ctx, lambda: _mount.write_read_delete(path), error, f"write probe in {p.directory}")
    elif ctx.check_level >= 10:
        probe(ctx, lambda: _mount.read_block(p.device), error, f"read from {p.device}")


# -- the verbs -----------------------------------------------------------------------

def monitor(ctx):
    backend = BACKENDS[ctx.params.backend]
    look = backend.look(ctx)
    mine = _ours(ctx)
    if not backend.running(look, mine):
        return OCF.NOT_RUNNING
    if backend.promoted(look, mine):
        return _monitor_promoted(ctx, backend, look, mine)
    problem = backend.problem(ctx, look)
    if problem:
        raise GenericError(problem)
    if ctx.params.backend == "shared":  # a DRBD Secondary cannot be opened
        _level_probe(ctx, GenericError)
    write_score(ctx, backend.score(ctx, look), force=ctx.is_probe)
    _report_split_brain(ctx, backend, OCF.DEGRADED)
    return OCF.SUCCESS


def _monitor_promoted(ctx, backend, look, mine):
    p = ctx.params
    if mine is None:
        raise FailedPromoted(f"{p.drbd_resource} is Primary but {p.device} is not mounted on "
                             f"{p.directory}")
    problems = _mount.option_problems(mine, p.options)
    if _mount.device_number(p.device) is None:
        problems.insert(0, f"{p.device} is gone")
    if problems:
        raise FailedPromoted(f"{p.directory}: {'; '.join(problems)}")
    _level_probe(ctx, FailedPromoted)
    write_score(ctx, backend.score(ctx, look), force=ctx.is_probe)
    _report_split_brain(ctx, backend, OCF.DEGRADED_PROMOTED)
    return OCF.RUNNING_PROMOTED


def _report_split_brain(ctx, backend, code):
    text = backend.split_brain(ctx)
    if text:
        raise OCFError(f"split brain on {ctx.params.drbd_resource}, not resolved by the agent: "
                       f"{text}", code)


def start(ctx):
    p = ctx.params
    backend = BACKENDS[p.backend]
    _check_directory(ctx, _mount.table())
    backend.start(ctx)
    os.makedirs(os.path.dirname(state_path(ctx, "state")), exist_ok=True)
    with open(state_path(ctx, "state"), "w", encoding="utf-8") as handle:
        handle.write(f"{p.directory}\n{p.device}\n")
    write_score(ctx, backend.score(ctx, backend.look(ctx)), force=True)
    ctx.log.info(f"{p.device} is ready (not mounted)")
    if p.promote_on_start:
        try:
            promote(ctx)
        except OCFError:
            _undo_start(ctx)
            raise


def _undo_start(ctx):
    """promote_on_start: a start whose promotion failed leaves nothing started."""
    try:
        stop(ctx)
    except OCFError as exc:
        ctx.log.error(f"cannot undo the start after the failed promotion: {exc}")


def stop(ctx):
    backend = BACKENDS[ctx.params.backend]
    if _ours(ctx) is not None or _mount.below(ctx.params.directory, _mount.table()):
        _release(ctx)
    backend.stop(ctx, backend.look(ctx))
    if under_pacemaker(ctx):
        try:
            ctx.clear_promotion_score()
        except OCFError as exc:
            ctx.log.warning(str(exc))
    for suffix in ("state", "score", "notify"):
        _replica.remove(state_path(ctx, suffix))


def promote(ctx):
    p = ctx.params
    backend = BACKENDS[p.backend]
    look, mounts = backend.look(ctx), _mount.table()
    mine = _ours(ctx, mounts)
    if not backend.running(look, mine):
        raise GenericError(f"cannot promote: {p.device} is not started")
    if mine is None:
        _check_directory(ctx, mounts)
        if not backend.promoted(look, mine):
            _pass_gate(ctx, backend, look)
            backend.promote(ctx, look)
        try:
            _mount_it(ctx)
        except OCFError:
            backend.demote(ctx, backend.look(ctx))
            raise
        ctx.log.info(f"{p.device} is mounted on {p.directory}")
    write_score(ctx, backend.score(ctx, backend.look(ctx)), force=True)


def _pass_gate(ctx, backend, look):
    p = ctx.params
    refusal = backend.refuse(ctx, look)
    if refusal:
        raise GenericError(f"refusing to promote: {refusal}")
    from hapack.ocf import _gate
    notify = _gate.read_notification(state_path(ctx, "notify"))
    fenced, note = _gate.read_fence_confirmation(p.fence_confirmed_file, ctx.node)
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


def demote(ctx):
    backend = BACKENDS[ctx.params.backend]
    look = backend.look(ctx)
    if not backend.running(look, _ours(ctx)):
        return OCF.NOT_RUNNING
    _release(ctx)
    backend.demote(ctx, look)
    write_score(ctx, backend.score(ctx, backend.look(ctx)), force=True)
    return None


def notify(ctx):
    event = ctx.notify
    if event.key == "pre-promote":
        from hapack.ocf import _gate
        _gate.record_notification(state_path(ctx, "notify"), event)
    elif event.type == "post":
        backend = BACKENDS[ctx.params.backend]
        look = backend.look(ctx)
        if backend.running(look, _ours(ctx)):
            write_score(ctx, backend.score(ctx, look), force=True)


# -- validation ----------------------------------------------------------------------

def validate(ctx):
    p = ctx.params
    if p.backend == "drbd" and not p.drbd_resource:
        raise ConfigError("backend=drbd needs drbd_resource")
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
    if os.path.exists(p.directory) and not os.path.isdir(p.directory):
        raise ConfigError(f"{p.directory} exists and is not a directory")
    _check_nesting(ctx)


def _check_nesting(ctx):
    """Refuse a mount point inside (or around) another partition resource's mount point."""
    import glob
    mine = state_path(ctx, "state")
    here = ctx.params.directory.rstrip("/") + "/"
    for path in glob.glob(os.path.join(os.path.dirname(mine), "hapack-partition-*.state")):
        if path == mine:
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                other = handle.readline().strip().rstrip("/") + "/"
        except OSError:
            continue
        if other != "/" and (here.startswith(other) or other.startswith(here)):
            rsc = os.path.basename(path)[len("hapack-partition-"):-len(".state")]
            raise ConfigError(f"{ctx.params.directory} is nested with {other.rstrip('/')}, the "
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
    actions=(
        Action("start", start, 60),
        Action("stop", stop, 60),
        Action("promote", promote, 60),
        Action("demote", demote, 60),
        Action("notify", notify, 20),
        Action("monitor", monitor, 20, interval=20, depth=0, role="Unpromoted"),
        Action("monitor", monitor, 20, interval=10, depth=0, role="Promoted"),
        Action("monitor", monitor, 30, interval=60, depth=20, role="Promoted"),
    ),
    validate=validate,
)


def main():
    AGENT.run()


if __name__ == "__main__":
    main()
