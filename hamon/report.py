"""What ``hamon status`` shows, and the operator's commands, served on the control socket.

:func:`handle` runs in the daemon's loop (no locks needed): ``status``
returns :func:`status_of`, a plain dict; ``standby``, ``takeover`` and
``maintenance`` set the operator's wishes that the next decision reads;
``cleanup`` forgets this node's failures of one resource or of all (as
``crm_resource --cleanup`` clears fail counts), so a layer given up at
``migration_threshold`` may run again and the node is eligible again.
:func:`render` turns a status dict into the text ``hamon status`` prints.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from hapack.hamon import timeline as tl
from hapack.hamon.states import State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from hapack.hamon.daemon import Daemon

COMMANDS = ("status", "standby", "takeover", "maintenance", "cleanup")


def handle(daemon: Daemon, request: dict[str, Any]) -> dict[str, Any]:
    cmd = request.get("cmd")
    w = daemon.world
    if cmd == "status":
        return {"ok": True, "status": status_of(daemon)}
    if cmd in ("standby", "maintenance"):
        on = request.get("on", True)
        if not isinstance(on, bool):
            return {"ok": False, "error": f"{cmd}: 'on' must be true or false"}
        if cmd == "maintenance":
            daemon.set_maintenance(on)
        else:
            w.standby = on
        daemon.log.event("command", f"operator: {cmd} {'on' if on else 'off'}", command=cmd, on=on)
        return {"ok": True, "message": f"{cmd} {'on' if on else 'off'}" + _standby_note(daemon, cmd, on)}
    if cmd == "takeover":
        if daemon.machine.state is State.PRIMARY:
            return {"ok": True, "message": "already primary"}
        w.takeover_requested, w.standby = daemon.clock(), False
        daemon.log.event("command", "operator: takeover", command=cmd)
        return {"ok": True, "message": f"takeover requested (state {daemon.machine.state})"}
    if cmd == "cleanup":
        return cleanup(daemon, request.get("resource"))
    return {"ok": False, "error": f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})"}


def _standby_note(daemon, cmd, on):
    """For ``standby on`` on the holder: that the peer cannot take the side now, and why."""
    from hapack.hamon.decide import peer_objection
    if cmd != "standby" or not on or daemon.machine.state is not State.PRIMARY:
        return ""
    why = peer_objection(daemon.snapshot(daemon.clock()))
    return f"; {daemon.config.peer.name} cannot take the stateful side now ({why}): it stays " \
           "here until it can" if why else ""


def cleanup(daemon: Daemon, name: Any = None) -> dict[str, Any]:
    """Forget the failures of resource ``name`` (every resource when None) on this node.

    Only the failure history goes: what runs where is still decided by the same rules
    (the gate, the roles), so a layer left stopped at the threshold starts again where
    the stateful side is held, and nowhere else."""
    w = daemon.world
    if name is not None and name not in w.by_name:
        return {"ok": False, "error": f"cleanup: no resource {name!r} (known: "
                                      f"{', '.join(w.by_name)})"}
    cleared = {}
    for r in ([w.by_name[name]] if name is not None else w.all()):
        if r.failures:
            cleared[r.resource.name] = len(r.failures)
            r.failures.clear()
    text = ", ".join(f"{n} ({k})" for n, k in cleared.items()) or "nothing to forget"
    daemon.log.event("command", f"operator: cleanup {name or 'all'}: failures forgotten: {text}",
                     command="cleanup", resource=name, cleared=cleared)
    return {"ok": True, "message": f"failures forgotten on {daemon.config.node}: {text}"}


def status_of(daemon: Daemon) -> dict[str, Any]:
    now, w, peer = daemon.clock(), daemon.world, daemon.membership.view(daemon.clock())
    return {
        "node": daemon.config.node, "state": daemon.machine.state.value,
        "in_state": round(daemon.machine.age(), 3), "uptime": round(now - daemon.started, 3),
        "decision": daemon.reason, "busy": ", ".join(filter(None, (w.busy for w in daemon.workers.values()))),
        "generation": daemon.transport.generation, "standby": w.standby,
        "maintenance": w.maintenance, "upstream": daemon.upstream(),
        "peer": {"name": daemon.config.peer.name, "alive": peer.alive,
                 "silent_for": round(peer.silent_for, 3) if peer.ever_seen else None,
                 "said": asdict(peer.status) if peer.status else None,
                 "generation": peer.generation, "worst_gap": round(peer.worst_gap, 3),
                 "power": w.power.value, "fence_attempts": w.fence_attempts},
        "links": [{"name": v.name, "up": v.up, "received": v.received,
                   "last_seen": None if v.last_seen is None else round(v.last_seen, 3),
                   "loss": None if v.loss is None else round(v.loss, 4),
                   "worst_gap": round(v.worst_gap, 3)} for v in peer.links],
        "rejected": dict(daemon.transport.rejected),
        "resources": [{"name": r.resource.name, "kind": r.resource.kind,
                       "status": r.status.value, "failures": len(r.failures), "last": r.last,
                       "degraded": r.degraded}
                      for r in w.all()],
        "failover": _timeline(daemon, "takeover"), "release": _timeline(daemon, "release"),
    }


def _timeline(daemon, kind):
    w = daemon.world
    if w.timeline is not None and w.timeline.kind == kind:
        return w.timeline.to_dict()
    return w.timelines.get(kind) or tl.load(os.path.join(daemon.s.state_dir, f"last-{kind}.json"))


def _age(seconds):
    return "never" if seconds is None else f"{seconds * 1000:.0f}ms ago"


def render(st: dict[str, Any]) -> str:
    peer = st["peer"]
    lines = [f"node {st['node']}: {st['state']} for {st['in_state']:.1f}s"
             + (" (standby)" if st["standby"] else "")
             + (" (maintenance)" if st["maintenance"] else ""),
             f"  now: {st['decision']}" + (f" [running: {st['busy']}]" if st["busy"] else ""),
             f"peer {peer['name']}: {'alive' if peer['alive'] else 'SILENT'}, last heard "
             f"{_age(peer['silent_for'])}, says {(peer['said'] or {}).get('state', '?')}, "
             f"power {peer['power']}, worst gap {peer['worst_gap'] * 1000:.0f}ms"]
    if st["upstream"] is not None:
        lines.append(f"upstream: {'up' if st['upstream'] else 'DOWN'}")
    lines.append("links:")
    for link in st["links"]:
        loss = "-" if link["loss"] is None else f"{link['loss'] * 100:.1f}%"
        lines.append(f"  {link['name']:<10} {'up' if link['up'] else 'DOWN':<5} last seen "
                     f"{_age(link['last_seen']):<14} loss {loss:<6} worst gap "
                     f"{link['worst_gap'] * 1000:.0f}ms  ({link['received']} received)")
    if st["rejected"]:
        lines.append("rejected packets: " + ", ".join(f"{k} {v}" for k, v in
                                                        sorted(st["rejected"].items())))
    lines.append("resources:")
    for r in st["resources"]:
        lines.append(f"  {r['name']:<12} {r['kind']:<10} {r['status']:<11} failures "
                     f"{r['failures']}  {r['last']}")
        if r.get("degraded"):
            lines.append(f"  {'':<12} DEGRADED: {r['degraded']}")
    for key, title in (("failover", "last failover"), ("release", "last release")):
        if st.get(key):
            lines.append(f"{title}:")
            lines += ["  " + line for line in tl.render(st[key])]
    return "\n".join(lines)
