"""The stack file: one description of the two-node stack, loaded and checked.

An operator describes the stack once, in TOML (``docs/stack-file.md``): the
two nodes and their BMCs, the heartbeat links, the VIP, the replicated
partition and the layers in order. :func:`load` reads it into frozen, typed
objects that every consumer shares: ``hapack render`` (CIB, crm shell,
corosync.conf, Heartbeat files), hamon and the demo.

One module per job:

- :mod:`~hapack.stack.model`: the typed objects and the stack file's defaults;
- :mod:`~hapack.stack.durations`: the one duration convention (``"1.2s"``);
- :mod:`~hapack.stack.reader`: the reader that collects every problem, and value checks;
- :mod:`~hapack.stack.tables`: the stack file, table by table (``[hamon]`` included);
- :mod:`~hapack.stack.alerttable`: the ``[alerts]`` table (recipients, ``select_*``);
- :mod:`~hapack.stack.agentcheck`: the resources against their agents' declarations
  (known agents, declared operation timeouts, parameters).

Every problem is reported with the file, the key and what is wrong, all of
them at once, in one :class:`StackError`.
"""

from __future__ import annotations

import tomllib
from os import PathLike

from hapack.stack.agentcheck import check_agents as _check_agents
from hapack.stack.durations import format_duration, parse_duration
from hapack.stack.model import (  # noqa: F401  (the model's public names)
    BMC_DRIVERS, CRYPTO_CIPHERS, CRYPTO_HASHES, DEFAULT_BMC_PORT, DEFAULT_COROSYNC_LOGFILE,
    DEFAULT_CRYPTO_CIPHER, DEFAULT_CRYPTO_HASH, DEFAULT_FAILURE_TIMEOUT_MS, DEFAULT_FENCE_ACTION,
    DEFAULT_FENCING_TIMEOUT_MS, DEFAULT_HB_DEADTIME_MS, DEFAULT_HB_INITDEAD_MS,
    DEFAULT_HB_KEEPALIVE_MS, DEFAULT_HB_LOGFILE, DEFAULT_HB_UDPPORT, DEFAULT_HB_WARNTIME_MS,
    DEFAULT_MIGRATION_THRESHOLD, DEFAULT_PRIORITY_FENCING_DELAY_MS, DEFAULT_STICKINESS,
    DEFAULT_TOKEN_MS, DEFAULT_CONSENSUS_PERCENT, COROSYNC_JOIN_MS, FENCE_ACTIONS, FENCE_AGENT,
    FENCE_AGENT_NAME, FENCE_OPS, FOREIGN_AGENT_OPS,
    KINDS, OPS_KEYS, PARTITION_BACKENDS, PRIMARY_PREFERENCE, PROVIDER, RESERVED_IDS, STATEFUL_PRIORITY, Bmc,
    Cluster, Corosync, FenceDevice, Fencing, Heartbeat, Heuristics, Layer, Link, Node, Ops,
    Partition, Quorum, Stack, Vip, default_consensus, fence_device_id)
from hapack.stack.model import (  # noqa: F401  (the [alerts] table)
    ALERT_AGENT, ALERT_ID, ALERT_SINKS, Alerts, Recipient)
from hapack.stack.reader import Reader, StackError
from hapack.stack.tables import TOP_KEYS, build

__all__ = ["StackError", "Stack", "Ops", "load", "loads", "parse_duration", "format_duration",
           "Reader"]


def load(path: str | PathLike) -> Stack:
    """Read and check the stack file at ``path``; raise StackError on any problem."""
    path = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise StackError(path, [("", f"cannot read the stack file: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StackError(path, [("", "the stack file is not UTF-8 text")]) from None
    return loads(text, path)


def loads(text: str, file: str = "<stack>", *, check_agents: bool = True) -> Stack:
    """Parse and check stack-file text; ``file`` names it in error messages.

    Agents are always looked up (an unknown ``ocf:hapack:<name>`` is an error)
    and their declared timeouts are the operation defaults; ``check_agents``
    False skips only the check of parameter values against the declarations.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StackError(file, [("", f"not valid TOML: {exc}")]) from None
    reader = Reader(file)
    stack = build(reader, data, file)
    if not reader.problems and check_agents and stack is not None:
        _check_agents(reader, stack)
    reader.raise_problems()
    assert stack is not None  # None only with a problem, raised above
    return stack
