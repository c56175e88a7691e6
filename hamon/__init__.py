"""hamon: the two-node heartbeat monitor and failover daemon (``hamon`` command).

For minimal two-node boxes without Corosync or Pacemaker: it watches the
peer over redundant UDP links and, when the primary dies, moves the VIP,
powers the primary off through its BMC (fence_bmc), promotes and mounts the
replicated partition and starts the stateful layers, driving the same OCF
agents as Pacemaker from the same stack file. See docs/hamon.md.

Modules, by responsibility:

* :mod:`~hapack.hamon.packet`, :mod:`~hapack.hamon.transport`: the heartbeat
  on the wire (HMAC-SHA256, key ids, replay window, generations, freshness)
  and its UDP and in-memory transports;
* :mod:`~hapack.hamon.membership`: per-link last-seen, loss, worst gap;
  the peer alive or dead;
* :mod:`~hapack.hamon.states`, :mod:`~hapack.hamon.snapshot`,
  :mod:`~hapack.hamon.decide`: named states with their transition table,
  the tick's snapshot, and the pure decision;
* :mod:`~hapack.hamon.world`, :mod:`~hapack.hamon.actor`,
  :mod:`~hapack.hamon.ocfexec`, :mod:`~hapack.hamon.fence`,
  :mod:`~hapack.hamon.timeline`: what the daemon remembers, carrying out a
  decision (OCF agents, fence_bmc), failover timelines;
* :mod:`~hapack.hamon.daemon`, :mod:`~hapack.hamon.control`,
  :mod:`~hapack.hamon.report`, :mod:`~hapack.hamon.events`,
  :mod:`~hapack.hamon.upstream`, :mod:`~hapack.hamon.cli`: the daemon shell,
  the control socket, status, the event log, ping targets, the command;
* :mod:`~hapack.hamon.config`: the ``[hamon]`` table of the stack file.

hamon in the two-node lab (tests, benchmark) is :mod:`hapack.lab.hamonrig`.
"""
