"""The stack file, table by table: each table read into its part of the model.

Every table goes through one :class:`~hapack.stack.reader.Reader`, which
collects the problems; :func:`build` returns the :class:`Stack` only when
there were none. The ``[hamon]`` table is read by the same reader, with the
settings hamon declares (:func:`hapack.hamon.config.read_settings`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping

from hapack.stack.alerttable import read_alerts
from hapack.stack.agentcheck import agent_spec, declared_default, declared_ops, fence_aliases
from hapack.stack.model import (
    BMC_DRIVERS, COROSYNC_JOIN_MS, CRYPTO_CIPHERS, CRYPTO_HASHES, DEFAULT_BMC_PORT,
    DEFAULT_COROSYNC_LOGFILE, DEFAULT_CRYPTO_CIPHER, DEFAULT_CRYPTO_HASH,
    DEFAULT_FAILURE_TIMEOUT_MS, DEFAULT_FENCE_ACTION,
    DEFAULT_FENCING_TIMEOUT_MS, DEFAULT_HB_DEADTIME_MS, DEFAULT_HB_INITDEAD_MS,
    DEFAULT_HB_KEEPALIVE_MS, DEFAULT_HB_LOGFILE, DEFAULT_HB_UDPPORT, DEFAULT_HB_WARNTIME_MS,
    DEFAULT_MIGRATION_THRESHOLD, DEFAULT_PRIORITY_FENCING_DELAY_MS, DEFAULT_STICKINESS,
    DEFAULT_HEURISTICS_MODE, DEFAULT_QDEVICE_ALGORITHM, DEFAULT_QDEVICE_TIE_BREAKER,
    DEFAULT_QDEVICE_TLS, DEFAULT_TOKEN_MS, FENCE_ACTIONS, HEURISTICS_MODES, HEURISTICS_PING, KINDS,
    MAX_FENCE_LEVEL, OPS_KEYS, PARTITION_BACKENDS, PRIMARY_PREFERENCE, QDEVICE_ALGORITHMS,
    QDEVICE_TIE_BREAKERS, QDEVICE_TLS, QNETD_PORT, QUORUM_PRIORITY_FENCING_DELAY_MS, RESERVED_IDS,
    Bmc, Cluster, Corosync, FenceDevice, Fencing, Heartbeat, Heuristics, Layer, Link, Node,
    Partition, Quorum, Stack, Vip, _frozen_map, default_consensus, fence_device_id)
from hapack.stack.reader import (
    Reader, abs_path, abs_path_or_empty, choice, interface, ip, ip_interface, join, node_name,
    param_name, positive_ms, resource_id, type_name, within, word)

TOP_KEYS = ("cluster", "fencing", "corosync", "quorum", "heartbeat", "nodes", "links", "vip",
            "partition", "layers", "hamon", "alerts")


def build(r: Reader, data: dict, file: str) -> Stack | None:
    """The Stack of a parsed stack file, or None when ``r`` recorded a problem."""
    r.table(data, "", TOP_KEYS, required=("cluster", "nodes", "links", "vip", "partition", "layers"))
    cluster = _cluster(r, data.get("cluster", {}))
    with_quorum = "quorum" in data
    fencing = _fencing(r, data.get("fencing", {}), with_quorum)
    corosync = _corosync(r, data.get("corosync", {}))
    heartbeat = _heartbeat(r, data.get("heartbeat", {}))
    links_raw = _array(r, data, "links")
    nodes = _nodes(r, _array(r, data, "nodes"), with_quorum) if "nodes" in data else []
    node_names = [n["name"] for n in nodes if n.get("name")]
    quorum = _quorum(r, data["quorum"], node_names) if with_quorum else None
    links = _links(r, links_raw, node_names) if "links" in data else ()
    partition = _partition(r, data["partition"], node_names) if "partition" in data else None
    layers = _layers(r, _array(r, data, "layers"), partition) if "layers" in data else ()
    vip = _vip(r, data["vip"], links, node_names, layers) if "vip" in data else None
    hamon = hamon_settings(r, data.get("hamon", {}))
    alerts = read_alerts(r, data["alerts"]) if "alerts" in data else None
    if r.problems:
        return None
    assert vip is not None and partition is not None  # required: else a problem above
    node_objs = tuple(
        Node(name=n["name"], nodeid=i + 1, bmc=n["bmc"], fence_delay=n["fence_delay"],
             fences=n["fences"], addresses=_frozen_map((link.name, link.addresses[n["name"]]) for link in links))
        for i, n in enumerate(nodes))
    return Stack(file=file, cluster=cluster, nodes=node_objs, links=links, vip=vip,
                 partition=partition, layers=layers, fencing=fencing, corosync=corosync,
                 heartbeat=heartbeat, hamon=hamon, alerts=alerts, quorum=quorum)


def hamon_settings(r: Reader, raw: object) -> Mapping[str, Any]:
    """The [hamon] table, read and checked by the same reader with hamon's own
    declarations (hamon imports this package: the import is deferred)."""
    from hapack.hamon.config import read_settings
    read_settings(r, raw)
    return _frozen_map(raw if isinstance(raw, dict) else {})


def _array(r: Reader, data: dict, key: str) -> list:
    raw = data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        r.problem(key, f"expected an array of tables ([[{key}]]), got {type_name(raw)}")
        return []
    return raw


def _cluster(r: Reader, raw) -> Cluster:
    key = "cluster"
    t = r.table(raw, key, ("name", "stickiness", "migration_threshold", "failure_timeout"),
                required=("name",)) or {}
    stickiness = r.value(t, key, "stickiness", int, DEFAULT_STICKINESS)
    if stickiness is not None and stickiness <= PRIMARY_PREFERENCE:
        r.problem(join(key, "stickiness"),
                  f"must be greater than {PRIMARY_PREFERENCE}, the primary's preference for the "
                  "stateful side; otherwise a recovered primary takes the stack back")
    return Cluster(
        name=r.value(t, key, "name", str, check=_cluster_name),
        stickiness=stickiness,
        migration_threshold=r.value(t, key, "migration_threshold", int,
                                    DEFAULT_MIGRATION_THRESHOLD, check=within(1, 1000000)),
        failure_timeout=r.value(t, key, "failure_timeout", "duration", DEFAULT_FAILURE_TIMEOUT_MS))


def _cluster_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", text):
        raise ValueError(f"{text!r} is not a valid cluster name (letters, digits, '-' and '_'; "
                         "32 characters at most)")
    return text


#: Why a fence delay is refused next to [quorum] (the problem's message, after the key).
DELAY_WITH_QUORUM = (
    "is not used with [quorum]: the quorum device settles a split (the node that does not "
    "get its vote loses quorum and fences no one), so a delay would only slow down the "
    "fencing of a really dead node, on every failover. Remove it, or set \"0s\"")


def _fencing(r: Reader, raw, with_quorum: bool = False) -> Fencing:
    key = "fencing"
    t = r.table(raw, key, ("action", "priority_fencing_delay", "timeout")) or {}
    delay = r.value(t, key, "priority_fencing_delay", "duration",
                    QUORUM_PRIORITY_FENCING_DELAY_MS if with_quorum
                    else DEFAULT_PRIORITY_FENCING_DELAY_MS)
    if with_quorum and delay:
        r.problem(join(key, "priority_fencing_delay"), DELAY_WITH_QUORUM)
    return Fencing(
        action=r.value(t, key, "action", str, DEFAULT_FENCE_ACTION, check=choice(*FENCE_ACTIONS)),
        priority_fencing_delay=delay,
        timeout=r.value(t, key, "timeout", "duration", DEFAULT_FENCING_TIMEOUT_MS,
                        check=positive_ms))


def _corosync(r: Reader, raw) -> Corosync:
    key = "corosync"
    t = r.table(raw, key, ("token", "consensus", "crypto_cipher", "crypto_hash", "syslog",
                           "logfile")) or {}
    logfile = r.value(t, key, "logfile", str, DEFAULT_COROSYNC_LOGFILE, check=abs_path_or_empty)
    token = r.value(t, key, "token", "duration", DEFAULT_TOKEN_MS, check=within(200, 600_000))
    return Corosync(
        token=token,
        consensus=r.value(t, key, "consensus", "duration", default_consensus(token or 0),
                          check=_consensus),
        crypto_cipher=r.value(t, key, "crypto_cipher", str, DEFAULT_CRYPTO_CIPHER,
                              check=choice(*CRYPTO_CIPHERS)),
        crypto_hash=r.value(t, key, "crypto_hash", str, DEFAULT_CRYPTO_HASH,
                            check=choice(*CRYPTO_HASHES)),
        syslog=r.value(t, key, "syslog", bool, True),
        logfile=logfile or None)


def _consensus(ms: int) -> int:
    """corosync refuses a consensus below its join timeout, and corosync.conf(5) calls a
    two-node consensus safe only above it (the stack file always has two nodes)."""
    if ms <= COROSYNC_JOIN_MS:
        raise ValueError(f"must be longer than corosync's join timeout ({COROSYNC_JOIN_MS}ms)")
    if ms > 720_000:
        raise ValueError(f"{ms} is outside {COROSYNC_JOIN_MS + 1}..720000")
    return ms


def _quorum(r: Reader, raw, node_names: list[str]) -> Quorum | None:
    key = "quorum"
    t = r.table(raw, key, ("host", "port", "algorithm", "tie_breaker", "tls", "timeout",
                           "sync_timeout", "heuristics"), required=("host",))
    if t is None:
        return None
    timeout = r.value(t, key, "timeout", "duration", None, check=within(1000, 120_000))
    sync_timeout = r.value(t, key, "sync_timeout", "duration", None, check=within(1000, 120_000))
    if timeout and sync_timeout and sync_timeout < timeout:
        r.problem(join(key, "sync_timeout"), "must be at least timeout")
    return Quorum(
        host=r.value(t, key, "host", str, check=_bmc_address),
        port=r.value(t, key, "port", int, QNETD_PORT, check=within(1, 65535)),
        algorithm=r.value(t, key, "algorithm", str, DEFAULT_QDEVICE_ALGORITHM,
                          check=choice(*QDEVICE_ALGORITHMS)),
        tie_breaker=r.value(t, key, "tie_breaker", str, DEFAULT_QDEVICE_TIE_BREAKER,
                            check=choice(*QDEVICE_TIE_BREAKERS, *node_names)),
        tls=r.value(t, key, "tls", str, DEFAULT_QDEVICE_TLS, check=choice(*QDEVICE_TLS)),
        timeout=timeout, sync_timeout=sync_timeout,
        heuristics=_heuristics(r, t["heuristics"], join(key, "heuristics"))
        if "heuristics" in t else None)


def _heuristics(r: Reader, raw, key: str) -> Heuristics | None:
    t = r.table(raw, key, ("mode", "ping", "exec", "timeout", "sync_timeout", "interval"))
    if t is None:
        return None
    execs: dict[str, str] = {}
    pings = t.get("ping", [])
    if not isinstance(pings, list):
        r.problem(join(key, "ping"), f"expected an array of addresses, got {type_name(pings)}")
        pings = []
    for i, _ in enumerate(pings):
        address = r.value(dict(enumerate(pings)), join(key, "ping"), i, str, check=_bmc_address)
        if address is not None:
            execs[f"ping{i + 1}"] = HEURISTICS_PING.format(address=address)
    commands = t.get("exec", {})
    if r.table(commands, join(key, "exec"), tuple(commands) if isinstance(commands, dict) else ()):
        for name in commands:
            command = r.value(commands, join(key, "exec"), name, str, check=_heuristics_command)
            if not re.fullmatch(r"[A-Za-z0-9_]{1,32}", name):
                r.problem(join(join(key, "exec"), name), "is not a valid name (letters, digits "
                          "and '_'; 32 at most)")
            elif name in execs:
                r.problem(join(join(key, "exec"), name), f"{name!r} is taken by a ping; rename it")
            elif command is not None:
                execs[name] = command
    if not execs:
        r.problem(key, "no heuristics: give ping addresses or exec commands, or remove the table")
    return Heuristics(
        mode=r.value(t, key, "mode", str, DEFAULT_HEURISTICS_MODE, check=choice(*HEURISTICS_MODES)),
        execs=tuple(execs.items()),
        timeout=r.value(t, key, "timeout", "duration", None, check=within(1000, 120_000)),
        sync_timeout=r.value(t, key, "sync_timeout", "duration", None, check=within(1000, 120_000)),
        interval=r.value(t, key, "interval", "duration", None, check=within(1000, 3_600_000)))


def _heuristics_command(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} does not start with an absolute path: corosync-qdevice runs "
                         "the command without a shell or PATH search")
    return text


def _heartbeat(r: Reader, raw) -> Heartbeat:
    key = "heartbeat"
    t = r.table(raw, key, ("keepalive", "deadtime", "warntime", "initdead", "udpport",
                           "logfile")) or {}
    hb = Heartbeat(
        keepalive=r.value(t, key, "keepalive", "duration", DEFAULT_HB_KEEPALIVE_MS, check=positive_ms),
        deadtime=r.value(t, key, "deadtime", "duration", DEFAULT_HB_DEADTIME_MS, check=positive_ms),
        warntime=r.value(t, key, "warntime", "duration", DEFAULT_HB_WARNTIME_MS, check=positive_ms),
        initdead=r.value(t, key, "initdead", "duration", DEFAULT_HB_INITDEAD_MS, check=positive_ms),
        udpport=r.value(t, key, "udpport", int, DEFAULT_HB_UDPPORT, check=within(1, 65535)),
        logfile=r.value(t, key, "logfile", str, DEFAULT_HB_LOGFILE, check=abs_path_or_empty) or None)
    if None not in (hb.keepalive, hb.deadtime) and hb.deadtime <= 2 * hb.keepalive:
        r.problem("heartbeat.deadtime", "must be more than twice keepalive (Heartbeat refuses "
                  "to start otherwise)")
    if None not in (hb.warntime, hb.deadtime) and not hb.warntime < hb.deadtime:
        r.problem("heartbeat.warntime", "must be shorter than deadtime")
    if None not in (hb.initdead, hb.deadtime) and hb.initdead < hb.deadtime:
        r.problem("heartbeat.initdead", "must be at least deadtime")
    return hb


def _nodes(r: Reader, raw: list, with_quorum: bool = False) -> list[dict]:
    if len(raw) != 2:
        r.problem("nodes", f"a stack has exactly two nodes ([[nodes]] twice), found {len(raw)}")
    out, seen = [], set()
    for i, item in enumerate(raw):
        key = join("nodes", i)
        t = r.table(item, key, ("name", "fence_delay", "bmc", "fence"), required=("name",)) or {}
        name = r.value(t, key, "name", str, check=node_name)
        if name in seen:
            r.problem(join(key, "name"), f"node {name!r} is declared twice")
        seen.add(name)
        label = f"node {name!r}" if name else "this node"
        if "bmc" not in t:
            r.problem(join(key, "bmc"),
                      f"{label} has no [nodes.bmc] table: each node must have a BMC its peer can "
                      "power it off through (the failed primary is powered off before its data "
                      "is taken over)")
            bmc = None
        else:
            bmc = _bmc(r, t["bmc"], join(key, "bmc"))
        delay = r.value(t, key, "fence_delay", "duration", 0)
        fences = _fences(r, t.get("fence", []), join(key, "fence"))
        if with_quorum and delay:
            r.problem(join(key, "fence_delay"), DELAY_WITH_QUORUM)
        out.append({"name": name, "bmc": bmc, "fence_delay": delay or 0, "fences": fences})
    _unique_fence_ids(r, out)
    return out


# -- [[nodes.fence]]: further fence devices, tried after the BMC ---------------------------

FENCE_KEYS = ("agent", "name", "level", "password_file", "params")
_FENCE_AGENT_RE = re.compile(r"^fence_[a-z0-9][a-z0-9_]*$")
#: Parameters naming the node a device powers off, or the action: hapack and the fencer
#: set them (a PDU's outlet, ``plug``/``port``, is the stack file's to give).
FENCE_TARGET = ("hostname", "nodename", "action", "pcmk_host_list", "pcmk_host_map",
                "pcmk_host_check")


def _fences(r: Reader, raw: Any, key: str) -> tuple[FenceDevice, ...]:
    """The node's [[nodes.fence]] devices, in order; levels from 2 (the BMC is 1)."""
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        r.problem(key, f"expected an array of tables ([[nodes.fence]]), got {type_name(raw)}")
        return ()
    devices: list[FenceDevice] = []
    names: dict[str, int] = {}
    level = 1
    for i, item in enumerate(raw):
        where = join(key, i)
        t = r.table(item, where, FENCE_KEYS, required=("agent",)) or {}
        agent = r.value(t, where, "agent", str, check=fence_agent_name)
        name = r.value(t, where, "name", str, (agent or "")[len("fence_"):].replace("_", "-")
                       or None, check=resource_id)
        if name in names:
            r.problem(join(where, "name"), f"another device of this node is named {name!r} "
                      f"({key}[{names[name]}]): give each device its own name")
        names.setdefault(name, i)
        level = _fence_level(r, t, where, level)
        if "password_file" in t and "password_script" in t.get("params", {}):
            r.problem(join(join(where, "params"), "password_script"),
                      f"a second source of the password: {where} already gives password_file")
        devices.append(FenceDevice(
            name=name, agent=agent, level=level,
            password_file=r.value(t, where, "password_file", str, None, check=abs_path,
                                  secret=True),
            params=_frozen_map(_fence_params(r, t, where))))
    return tuple(devices)


def fence_agent_name(text: str) -> str:
    """A fence agent's plain name (``fence_apc_snmp``): it becomes a path in /usr/sbin."""
    if not _FENCE_AGENT_RE.fullmatch(text) or len(text) > 64:
        raise ValueError(f"{text!r} is not a fence agent's name (fence_ followed by lowercase "
                         "letters, digits and '_', as installed in /usr/sbin: \"fence_ipmilan\", "
                         "\"fence_apc_snmp\")")
    return text


def _fence_level(r: Reader, t: dict, key: str, previous: int) -> int:
    """The device's level: the previous device's, or the next, never before the BMC's."""
    level = r.value(t, key, "level", int, previous + 1, check=within(2, MAX_FENCE_LEVEL))
    if level is None:
        return previous
    if level not in (previous, previous + 1):
        r.problem(join(key, "level"), f"level {level} after level {previous}: list the devices "
                  f"in the order they are tried, each at the level of the one before it (both "
                  f"must succeed) or the next, {previous + 1}")
    return level


def _fence_params(r: Reader, t: dict, key: str) -> dict[str, str]:
    """[nodes.fence.params]: the agent's parameters, without an inline password or
    the target (hapack names the node; the fencer chooses the action)."""
    params = r.params(t, key)
    for name in params:
        where = join(join(key, "params"), name)
        folded = name.lower().replace("-", "_")   # as fence-agents and Pacemaker may read it
        if "passw" in folded and not folded.endswith("_script"):
            r.problem(where, "an inline password would be stored in the CIB: give "
                      f"{join(key, 'password_file')} (a root-only file) instead")
        elif folded in FENCE_TARGET:
            r.problem(where, "names the node this device powers off or the action, which "
                      "hapack and the fencer set themselves; remove it")
    return params


def _unique_fence_ids(r: Reader, nodes: list[dict]) -> None:
    """Every fence device id once in the stack (node "a-b" and device "b" of node "a")."""
    seen: dict[str, str] = {}
    for i, node in enumerate(nodes):
        if not node["name"]:
            continue
        ids = [(join(join("nodes", i), "name"), fence_device_id(node["name"]))]
        ids += [(join(join(join("nodes", i), "fence"), k), d.device_id(node["name"]))
                for k, d in enumerate(node["fences"]) if d.name]
        for where, rid in ids:
            if rid in seen:
                r.problem(where, f"its fence device would be named {rid!r}, as {seen[rid]}'s: "
                          "rename one")
            seen.setdefault(rid, where)


def _bmc(r: Reader, raw, key: str) -> Bmc | None:
    t = r.table(raw, key, ("driver", "address", "port", "username", "password_file", "password",
                           "lanplus", "cipher", "params"), required=("address",))
    if t is None:
        return None
    driver = r.value(t, key, "driver", str, "ipmi", check=choice(*BMC_DRIVERS))
    if "password" in t and "password_file" in t:
        r.problem(join(key, "password"), "give password_file or password, not both")
    if driver == "redfish":
        for name in ("lanplus", "cipher"):
            if name in t:
                r.problem(join(key, name), "is an IPMI setting; this BMC's driver is redfish")
    address = r.value(t, key, "address", str, check=_bmc_address)
    return Bmc(
        driver=driver or "ipmi",
        address=address,
        port=r.value(t, key, "port", int, DEFAULT_BMC_PORT.get(driver, 623), check=within(1, 65535)),
        username=r.value(t, key, "username", str, None, secret=True),
        password_file=r.value(t, key, "password_file", str, None, check=abs_path, secret=True),
        password=r.value(t, key, "password", str, None, secret=True),
        lanplus=r.value(t, key, "lanplus", bool, True),
        cipher=r.value(t, key, "cipher", int, None, check=within(0, 17)),
        params=_frozen_map(_bmc_params(r, t, key)))


#: [nodes.bmc] key -> the fence_bmc parameter hapack sets from it.
BMC_KEYS = {"address": "ip", "port": "ipport", "username": "username", "password": "password",
            "password_file": "password_file", "driver": "driver", "lanplus": "lanplus",
            "cipher": "cipher"}
#: fence_bmc parameters that name the node a device powers off: hapack sets them itself.
BMC_TARGET = ("hostname", "plug", "nodename", "pcmk_host_list", "pcmk_host_map",
              "pcmk_host_argument")
#: Further spellings of the connection settings (fence-agents', the stack file's).
BMC_SPELLINGS = {"user": "username", "passwd_file": "password_file"}


def _bmc_params(r: Reader, t: dict, key: str) -> dict[str, str]:
    """[nodes.bmc.params], refusing every spelling of a setting [nodes.bmc] makes: the
    connection (address, user, password...) and the target are not to be overridden."""
    params = r.params(t, key)
    owner = {param: name for name, param in BMC_KEYS.items()}
    spelled = {**BMC_SPELLINGS, **fence_aliases(), **BMC_KEYS}
    for name in params:
        where = join(join(key, "params"), name)
        canonical = spelled.get(name, name)
        if name in BMC_TARGET or canonical in BMC_TARGET:
            r.problem(where, "names the node this device powers off, which hapack sets itself "
                      "(the node of this [nodes.bmc]); remove it")
        elif canonical in owner:
            r.problem(where, f"would override {canonical}, which hapack sets from "
                      f"{join(key, owner[canonical])}: set that instead, and remove "
                      f"{name} from {key}.params")
        elif canonical == "password_script" and ("password" in t or "password_file" in t):
            r.problem(where, f"a second source of the password: {key} already gives "
                      f"{'password' if 'password' in t else 'password_file'}")
    return params


def _bmc_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", text):
        return text
    raise ValueError(f"{text!r} is neither an IP address nor a host name")


def _links(r: Reader, raw: list, node_names: list[str]) -> tuple[Link, ...]:
    if not raw:
        r.problem("links", "describe at least one heartbeat link ([[links]]); two are better: "
                  "one link lost must not look like a dead node")
    links, seen, used = [], set(), {}  # type: ignore[var-annotated]
    for i, item in enumerate(raw):
        key = join("links", i)
        t = r.table(item, key, ("name", "interface", "addresses"),
                    required=("name", "interface", "addresses")) or {}
        name = r.value(t, key, "name", str, check=resource_id)
        if name in seen:
            r.problem(join(key, "name"), f"link {name!r} is declared twice")
        seen.add(name)
        iface = r.value(t, key, "interface", str, check=interface)
        addresses = {}
        akey = join(key, "addresses")
        raw_addr = t.get("addresses", {})
        if not isinstance(raw_addr, dict):
            r.problem(akey, f"expected a table of node name = \"address/prefix\", got "
                      f"{type_name(raw_addr)}")
            raw_addr = {}
        for node, text in raw_addr.items():
            if node_names and node not in node_names:
                r.problem(join(akey, node), f"{node!r} is not one of the nodes "
                          f"({', '.join(node_names)})")
                continue
            value = r.value(raw_addr, akey, node, str, check=ip_interface)
            if value is None:
                continue
            if value.ip in used:
                r.problem(join(akey, node), f"{value.ip} is already used by {used[value.ip]}")
            used[value.ip] = f"{node} on link {name!r}"
            addresses[node] = value
        if isinstance(t.get("addresses"), dict):
            for node in node_names:
                if node not in raw_addr:
                    r.problem(join(akey, node), f"node {node!r} has no address on link {name!r}")
        nets = {a.network for a in addresses.values()}
        if len(nets) > 1:
            shown = ", ".join(f"{n}: {a.with_prefixlen}" for n, a in addresses.items())
            r.problem(akey, f"the nodes' addresses on link {name!r} are not on one subnet ({shown})")
        ordered = {n: addresses[n] for n in node_names if n in addresses}
        links.append(Link(name=name, number=i, interface=iface, addresses=_frozen_map(ordered)))
    return tuple(links)


def _partition(r: Reader, raw, node_names: list[str]) -> Partition | None:
    key = "partition"
    t = r.table(raw, key, ("backend", "device", "directory", "fstype", "options",
                           "drbd_resource", "params", "ops"),
                required=("backend", "device", "directory", "fstype"))
    if t is None:
        return None
    backend = r.value(t, key, "backend", str, check=choice(*PARTITION_BACKENDS))
    directory = r.value(t, key, "directory", str, check=abs_path)
    if directory == "/":
        r.problem(join(key, "directory"), "the partition cannot be mounted on /")
    drbd_resource = r.value(t, key, "drbd_resource", str, None, check=_drbd_name)
    if backend == "drbd" and "drbd_resource" not in t:
        r.problem(join(key, "drbd_resource"), "is required with backend = \"drbd\" (the "
                  "resource name in drbd.conf)")
    if backend == "shared" and "drbd_resource" in t:
        r.problem(join(key, "drbd_resource"), "is only for backend = \"drbd\"")
    params = r.params(t, key)
    _no_overlap(r, key, params, ("backend", "device", "directory", "fstype", "options",
                                 "drbd_resource", "nodes"))
    return Partition(
        backend=backend, device=r.value(t, key, "device", str, check=abs_path),
        directory=directory, fstype=r.value(t, key, "fstype", str, check=word),
        options=r.value(t, key, "options", str, None, check=word),
        drbd_resource=drbd_resource, params=_frozen_map(params), nodes=tuple(node_names),
        fence_confirmed_file=params.get("fence_confirmed_file",
                                        declared_default(Partition.agent, "fence_confirmed_file")),
        ops=r.with_defaults(key, r.ops(t, key, OPS_KEYS["partition"]),
                            declared_ops(r, key, Partition.agent, "partition")))


def _drbd_name(text: str) -> str:
    if not re.fullmatch(r"[-%+./0-9:=@A-Z_a-z]+", text):
        raise ValueError(f"{text!r} is not a valid DRBD resource name")
    return text


def _no_overlap(r: Reader, key: str, params: dict, owned, source=None) -> None:
    for name in params:
        if name in owned:
            r.problem(join(join(key, "params"), name),
                      f"is set by hapack from {source or key}; remove it from {key}.params")


def _layers(r: Reader, raw: list, partition: Partition | None) -> tuple[Layer, ...]:
    if not raw:
        r.problem("layers", "describe at least one layer ([[layers]])")
    layers: list[Layer] = []
    seen: dict[str, Any] = {}
    for i, item in enumerate(raw):
        key = join("layers", i)
        t = r.table(item, key, ("name", "agent", "kind", "data_dir", "data_param", "params",
                                "ops"),
                    required=("name", "agent", "kind")) or {}
        name = r.value(t, key, "name", str, check=resource_id)
        if name in seen:
            r.problem(join(key, "name"), f"layer {name!r} is declared twice (first as "
                      f"layers[{seen[name]}]); layer names must be unique")
        elif name in RESERVED_IDS or (name or "").startswith("fence-"):
            r.problem(join(key, "name"), f"{name!r} is a name hapack uses itself; choose another")
        if name is not None:
            seen.setdefault(name, i)
        kind = r.value(t, key, "kind", str, check=choice(*KINDS))
        data_dir = r.value(t, key, "data_dir", str, None, check=abs_path)
        if kind == "stateful" and "data_dir" not in t:
            r.problem(join(key, "data_dir"), f"stateful layer {name!r} needs data_dir: the "
                      "directory on the replicated partition that holds its data")
        if kind == "stateless" and "data_dir" in t:
            r.problem(join(key, "data_dir"), f"stateless layer {name!r} keeps no data: remove "
                      "data_dir, or make the layer stateful")
        if kind == "stateful" and data_dir and partition is not None and partition.directory:
            if not partition.contains(data_dir):
                r.problem(join(key, "data_dir"), f"{data_dir} is outside the partition "
                          f"({partition.directory}): stateful layer {name!r} must keep its data "
                          "on the replicated partition, in a directory below its mount point")
            for other in layers:
                if other.data_dir and (_below_or_same(data_dir, other.data_dir)
                                       or _below_or_same(other.data_dir, data_dir)):
                    r.problem(join(key, "data_dir"), f"{data_dir} overlaps the data_dir of "
                              f"layer {other.name!r} ({other.data_dir})")
        data_param = r.value(t, key, "data_param", str, None, check=param_name)
        if data_param is not None and "data_dir" not in t:
            r.problem(join(key, "data_param"), "names the parameter that receives data_dir, "
                      "but this layer has no data_dir")
        params = r.params(t, key)
        if data_param is not None:
            _no_overlap(r, key, params, (data_param,), f"{key}.data_dir")
        agent = r.value(t, key, "agent", str, check=agent_spec)
        given = r.ops(t, key, OPS_KEYS["layer"])
        ops = r.with_defaults(key, given, declared_ops(r, key, agent, "layer")) if agent else None
        layers.append(Layer(
            name=name, agent=agent, kind=kind, data_dir=data_dir, data_param=data_param,
            params=_frozen_map(params), ops=ops))  # type: ignore[arg-type]  # None: a problem
    return tuple(layers)


def _below_or_same(path: str, other: str) -> bool:
    return path == other or path.startswith(other.rstrip("/") + "/")


def _vip(r: Reader, raw, links, node_names, layers) -> Vip | None:
    key = "vip"
    t = r.table(raw, key, ("address", "link", "start_after", "params", "ops"),
                required=("address",))
    if t is None:
        return None
    address = r.value(t, key, "address", str, check=ip)
    link_name = r.value(t, key, "link", str, None)
    start_after = r.value(t, key, "start_after", str, None)
    stateful = [layer.name for layer in layers if layer.kind == "stateful"]
    if start_after is not None and start_after not in stateful:
        r.problem(join(key, "start_after"), f"{start_after!r} is not a stateful layer "
                  f"(stateful layers: {', '.join(stateful) or 'none'}); leave start_after out to "
                  "start the VIP first")
    params = r.params(t, key)
    _no_overlap(r, key, params, ("ip", "cidr_netmask", "nic"))
    ops = r.with_defaults(key, r.ops(t, key, OPS_KEYS["vip"]), declared_ops(r, key, Vip.agent, "vip"))
    link = None
    if address is not None and links and all(lk.name for lk in links):
        if link_name is not None:
            link = next((lk for lk in links if lk.name == link_name), None)
            if link is None:
                r.problem(join(key, "link"), f"{link_name!r} is not one of the links "
                          f"({', '.join(lk.name for lk in links)})")
            elif address not in link.network:
                r.problem(join(key, "address"), f"{address} is not in link {link.name!r}'s "
                          f"subnet {link.network}")
        else:
            matches = [lk for lk in links if lk.addresses and address in lk.network]
            if not matches:
                shown = "; ".join(
                    f"{n}: " + ", ".join(str(lk.addresses[n].network) for lk in links
                                         if n in lk.addresses) for n in node_names)
                r.problem(join(key, "address"), f"{address} is outside every node's subnets "
                          f"({shown}): the VIP must be on a subnet both nodes are on")
            else:
                link = matches[0]
        if link is not None:
            for node, iface in link.addresses.items():
                if iface.ip == address:
                    r.problem(join(key, "address"), f"{address} is {node}'s own address; the "
                              "VIP must be an address no node uses")
            net = link.network
            if net.version == 4 and net.prefixlen < 31 and address in (net.network_address,
                                                                        net.broadcast_address):
                r.problem(join(key, "address"), f"{address} is the network or broadcast "
                          f"address of {net}")
    if link is None:
        return None
    return Vip(address=address, link=link.name, interface=link.interface,
               prefixlen=link.network.prefixlen, start_after=start_after,
               params=_frozen_map(params), ops=ops)


