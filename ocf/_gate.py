"""The promotion gate of the partition agent: may this node take the partition now?

Mounting the partition while another node may still write to it corrupts it,
so promote wants positive evidence, checked in this order:

1. Pacemaker's pre-promote notification names another node as promoted (and
   not being demoted) or as being promoted too: refuse, whatever else holds.
2. DRBD connected to its peer: the peer's role decides (Primary: refuse,
   Secondary: go).
3. shared, ext2/3/4: the superblock read from the device itself says the file
   system is mounted read-write nowhere and was unmounted cleanly (the kernel
   sets the journal's needs-recovery flag at every read-write mount and
   clears it at a clean umount): go. This is the on-disk ownership marker;
   a marker file inside the file system could not serve, since reading it
   would mean mounting first.
4. Otherwise the peer must be known to be off, from either source:
   a. Pacemaker: the pre-promote notification names this node for promotion,
      no other node is promoted, and stonith-enabled is not false (Pacemaker
      then promotes only after fencing a lost node);
   b. a fence confirmation file (:mod:`hapack.confirm`: hamon or external/bmc
      writes it after the BMC reported the peer's power off): written on this
      node about another node, in this boot, at most 5 minutes old on the
      boot-time clock. Any promotion consumes it (one power-off, one
      promotion): :func:`consume_fence_confirmation`.
5. Anything else: refuse, saying what is missing.

The decision (:func:`decide`) is a pure function of an :class:`Evidence`;
the readers below collect the evidence.
"""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.ocf.runner import Context
    from typing import Any
    from hapack.ocf.runner import Notify

NOTIFY_MAX_AGE = 300.0   # seconds from pre-promote notification to promote


class Evidence:
    """What promote knows about the other nodes."""

    def __init__(self, node, backend, *, notify=None, peer_role=None, cstate=None,
                 released=None, stonith_enabled=None, fenced=None, fence_note="",
                 device=""):
        self.node = node
        self.backend = backend
        self.notify = notify            # {"promote": [...], "promoted": [...], "demote": [...]}
        self.peer_role = peer_role      # drbd: Primary, Secondary, Unknown
        self.cstate = cstate            # drbd: connection state, for messages
        self.released = released        # shared: True/False from the superblock, None: cannot tell
        self.stonith_enabled = stonith_enabled  # True, False, or None (unknown)
        self.fenced = fenced            # node named by a valid fence confirmation
        self.fence_note = fence_note    # why a fence confirmation was not valid
        self.device = device


def other_promoted(notify: dict[str, list[str] | list[str] | list[Any]], node: str) -> list[str]:
    """Other nodes Pacemaker reports promoted (not being demoted) or being promoted."""
    staying = [n for n in notify["promoted"] if n not in notify["demote"]]
    return sorted({n for n in staying + notify["promote"] if n != node})


class Decision(tuple):
    """(allowed, sentence), plus ``basis``: the evidence that allowed it (or None)."""

    def __new__(cls, allowed, why, basis=None):
        decision = super().__new__(cls, (allowed, why))
        decision.basis = basis
        return decision


def decide(ev: Evidence) -> Decision:
    """The Decision on a promotion of this node."""
    if ev.notify is not None:
        others = other_promoted(ev.notify, ev.node)
        if others:
            return Decision(False, f"Pacemaker reports {', '.join(others)} promoted or being "
                                   "promoted")
    if ev.backend == "drbd" and ev.peer_role == "Primary":
        return Decision(False, "the DRBD peer is Primary")
    if ev.backend == "drbd" and ev.peer_role == "Secondary":
        return Decision(True, "the DRBD peer is connected and Secondary", "drbd")
    if ev.backend == "shared" and ev.released:
        return Decision(True, f"the file system on {ev.device} is mounted nowhere and was "
                              "released cleanly", "disk")
    if ev.notify is not None and ev.node in ev.notify["promote"]:
        if ev.stonith_enabled:
            return Decision(True, "Pacemaker promotes this node and no other is promoted "
                                  "(it fences a lost node before promoting)", "pacemaker")
        if ev.stonith_enabled is False:
            return Decision(False, "stonith-enabled=false: without fencing, Pacemaker's view "
                                   "does not prove the peer stopped using the partition")
    if ev.fenced:
        return Decision(True, f"{ev.fenced} was confirmed powered off", "fence")
    return Decision(False, _missing(ev))


def _missing(ev):
    if ev.backend == "drbd":
        what = f"the DRBD peer's role is unknown (cs:{ev.cstate or '?'})"
    elif ev.released is None:
        what = f"the file system on {ev.device} cannot show whether another node uses it"
    else:
        what = (f"the file system on {ev.device} is in use or was not unmounted cleanly "
                "(journal needs recovery)")
    fence = f"no valid fence confirmation ({ev.fence_note})" if ev.fence_note else \
        "no fence confirmation"
    pcmk = "no pre-promote notification naming this node" if ev.notify is None or \
        ev.node not in ev.notify["promote"] else "stonith-enabled could not be read"
    return f"{what}, and nothing shows the peer is off: {pcmk}, {fence}"


# -- Pacemaker's pre-promote notification, kept for the promote that follows -----

def boot_id() -> str:
    from hapack.confirm import boot_id
    return boot_id()


def record_notification(path: str, notify: Notify) -> None:
    """Keep the sets of a pre-promote notification for the promote that follows."""
    data = {"boot": boot_id(), "t": time.monotonic(), "promote": notify.unames("promote"),
            "promoted": notify.unames("promoted"), "demote": notify.unames("demote")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def read_notification(path: str) -> dict[str, list[str]] | None:
    """The recorded pre-promote sets when recent and from this boot, else None."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        age = time.monotonic() - float(data["t"])
        if data["boot"] != boot_id() or not 0 <= age <= NOTIFY_MAX_AGE:
            return None
        return {k: list(data[k]) for k in ("promote", "promoted", "demote")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- hamon's fence confirmation ---------------------------------------------------

def read_fence_confirmation(path: str, node: str,
                            peer: str | None = None) -> tuple[str | None, str]:
    """(fenced node, note): the peer named by a valid confirmation (see
    :func:`hapack.confirm.read`), or None and why not ('' when there is none)."""
    from hapack import confirm
    found, note = confirm.read(path, node, peer)
    return (found.peer if found else None), note


def consume_fence_confirmation(path: str) -> None:
    """Any promotion uses the confirmation up; GenericError if it cannot be removed
    (the promotion must not go ahead, or the same power-off would count twice)."""
    from hapack import confirm
    from hapack.ocf import GenericError
    try:
        confirm.consume(path)
    except confirm.ConfirmationError as exc:
        raise GenericError(f"refusing to promote: {exc}") from None


# -- stonith-enabled -------------------------------------------------------------

STONITH_QUERY = ["crm_attribute", "--type", "crm_config", "--name", "stonith-enabled",
                 "--query", "--quiet"]
NOT_SET = 105  # crm_attribute: no such attribute (the default, true, applies)


def stonith_enabled(ctx: Context) -> bool | None:
    """True, False, or None when the cluster configuration cannot be read."""
    from hapack.params import is_true
    from hapack.command import CommandError
    try:
        result = ctx.run(STONITH_QUERY, timeout=5)
    except CommandError as exc:
        ctx.log.warning(f"cannot read stonith-enabled: {exc}")
        return None
    if result.returncode == NOT_SET:
        return True
    if not result.ok:
        ctx.log.warning(f"cannot read stonith-enabled: {result.output()}")
        return None
    return is_true(result.stdout)
