"""hapack: two-node failover of a layered Java middleware stack.

The OCF agents live in :mod:`hapack.ocf`, the fence agent in
:mod:`hapack.stonith`, the heartbeat daemon in :mod:`hapack.hamon`, the
two-node lab in :mod:`hapack.lab` and the CIB templates in :mod:`hapack.cib`.
Nothing here is imported at start-up by the agents beyond what they use.
"""

__version__ = "0.1.0"
