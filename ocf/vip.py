"""ocf:hapack:vip -- the virtual IP address (IPv4 and IPv6).

Start probes for another holder of the address, adds it over netlink and
announces it itself (gratuitous ARP or unsolicited neighbour
advertisements), the first announcement before start returns and the rest
from a short-lived background child. Monitor checks the exact address and
prefix on the exact interface and that the link is up with a few netlink
requests: no child process. pyroute2 finds the interface and prefix from
the routing table when ``nic`` or ``cidr_netmask`` is not set.
"""

from __future__ import annotations

import os

import _socket as socket  # the C module: importing 'socket' costs 2 ms per call

from hapack.ocf import OCF, Action, Agent, ConfigError, GenericError, NotInstalled, Param, PermError
from hapack.params import Values

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn
    from hapack.ocf.runner import Context

NAME = "vip"


def _family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def canonical_ip(text: str) -> str:
    text = text.strip()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except OSError:
            continue
    raise ValueError(f"{text!r} is not an IPv4 or IPv6 address")


def prefix_length(text: str) -> int:
    """'24', '/24' or a dotted IPv4 mask such as '255.255.255.0'."""
    text = text.strip().lstrip("/")
    if text.isdigit():
        value = int(text)
        if not 0 < value <= 128:
            raise ValueError(f"{text!r} is not a prefix length (1-32 for IPv4, 1-128 for IPv6)")
        return value
    try:
        mask = int.from_bytes(socket.inet_aton(text), "big")
    except OSError:
        raise ValueError(f"{text!r} is neither a prefix length nor a dotted netmask") from None
    bits = bin(mask).count("1")
    if mask != (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF or bits == 0:
        raise ValueError(f"{text!r} is not a contiguous netmask")
    return bits


def interface_name(text: str) -> str:
    if not 0 < len(text) <= 15 or any(c in text for c in "/: \t\n") or text in (".", ".."):
        raise ValueError(f"{text!r} is not a valid interface name")
    return text


def broadcast(text: str) -> str:
    if text in ("+", "-"):
        return text
    try:
        return socket.inet_ntoa(socket.inet_aton(text)) if text.count(".") == 3 else _bad(text)
    except OSError:
        return _bad(text)


def _bad(text: str) -> NoReturn:
    raise ValueError(f"{text!r} is not an IPv4 address, '+' or '-'")


def stock_forms(raw: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """IPaddr2's nic=<nic>:<label> as nic and label (the runner's translate hook)."""
    nic = raw.get("nic") or ""
    if ":" not in nic:
        return raw, []
    name, label = nic.split(":", 1)
    if raw.get("label") and raw["label"] != label:
        raise ValueError(f"nic={nic} names label {label!r} but label is {raw['label']!r}: "
                         "keep one")
    note = (f"nic={nic} is IPaddr2's form: read as nic={name} label={label}; accepted, but "
            "deprecated: set them apart")
    return {**raw, "nic": name, "label": label}, [note]


def lifetime(text: str) -> int | None:
    if text.strip().lower() in ("forever", "infinity"):
        return None
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not 'forever' or a number of seconds")
    return int(text)


PARAMS = (
    Param("ip", "The virtual IP address",
          "The IPv4 or IPv6 address to bring up, e.g. 198.18.0.100 or 2001:db8::100.",
          required=True, unique=True, check=canonical_ip),
    Param("cidr_netmask", "Prefix length",
          "Prefix length (24, or a dotted IPv4 netmask). Default: the prefix of the "
          "connected route that contains the address.", check=prefix_length),
    Param("nic", "Network interface",
          "Interface to put the address on. Default: the interface of the connected route "
          "that contains the address; it is an error when no route or more than one "
          "interface matches.", check=interface_name),
    Param("label", "IPv4 address label",
          "Label for an IPv4 address; the address is labelled '<nic>:<label>' (15 "
          "characters at most in all). IPaddr2's nic=<nic>:<label> is read as nic and "
          "label.", aliases=("iflabel",)),
    Param("broadcast", "IPv4 broadcast address",
          "Broadcast address of an IPv4 address, as IPaddr2 takes it: an address, '+' "
          "(host bits set: the default) or '-' (host bits reset). None for /31 and /32 "
          "unless given.", check=broadcast),
    Param("preferred_lft", "IPv6 preferred lifetime",
          "Preferred lifetime of an IPv6 address in seconds, or 'forever'. 0 marks the "
          "address deprecated so the node does not use it as a source address.",
          default="forever", check=lifetime),
    Param("arp_count", "Announcements after start",
          "Number of gratuitous ARPs (IPv4) or unsolicited neighbour advertisements (IPv6) "
          "sent after the address is added; the first before start returns.",
          kind="integer", default=5, minimum=0, maximum=100),
    Param("arp_interval", "Interval between announcements (ms)",
          "Milliseconds between two announcements.", kind="integer", default=200,
          minimum=10, maximum=10000),
    Param("arp_mode", "Gratuitous ARP as requests or replies",
          "IPv4 announcements as gratuitous ARP requests (request) or ARP replies (reply), "
          "for switches that learn only from replies (IPaddr2 does this with "
          "send_arp_opts=-A and arping). Both are broadcast with the address as sender and "
          "target; a reply names this interface's MAC as target too. IPv6 always sends "
          "unsolicited neighbour advertisements.",
          kind="choice", choices=("request", "reply"), default="request"),
    Param("arp_second_burst_delay", "Second burst delay (ms)",
          "When not 0, send a second burst of arp_count announcements this many "
          "milliseconds after the first, for switches that were slow to learn.",
          kind="integer", default=0, minimum=0, maximum=600000),
    Param("arp_count_refresh", "Announcements per monitor",
          "Announcements sent on every monitor, to refresh switches with long MAC-table "
          "timeouts. 0 sends none.", kind="integer", default=0, minimum=0, maximum=10),
    Param("dad_probe", "Refuse a duplicate address",
          "Before adding the address, ask the link whether another host already holds it "
          "(ARP probe, or IPv6 neighbour solicitation) and refuse to start, naming the MAC "
          "that answered. false skips the probe.", kind="boolean", default=True),
    Param("dad_timeout", "Duplicate probe wait (ms)",
          "Milliseconds to wait for an answer to the duplicate-address probe.",
          kind="integer", default=200, minimum=10, maximum=10000),
    Param("check_link", "Require the link up",
          "Monitor reports the address not running, and start fails, when the interface "
          "is down or has no carrier.", kind="boolean", default=True),
)


class Params(Values):
    """The typed view of PARAMS (see hapack.params.Values; checked against it by test_types)."""
    ip: str
    cidr_netmask: int | None
    nic: str | None
    label: str | None
    broadcast: str | None
    preferred_lft: int | None
    arp_count: int
    arp_interval: int
    arp_mode: str
    arp_second_burst_delay: int
    arp_count_refresh: int
    dad_probe: bool
    dad_timeout: int
    check_link: bool


# -- where things are -------------------------------------------------------

def _state_path(ctx, what):
    return ctx.state_path(what)


class Mark:
    """What start recorded about the entry it added: interface (name and index),
    prefix length and the kernel's creation stamp of the entry. An entry is this
    resource's only when all of them match: an address the node had before, or
    one someone else adds (even the same address deleted and added again), is
    never taken for ours. A legacy record (nic and prefix only) matches by those."""

    __slots__ = ("nic", "prefixlen", "index", "created")

    def __init__(self, nic, prefixlen, index=None, created=None):
        self.nic, self.prefixlen, self.index, self.created = nic, prefixlen, index, created

    def matches(self, entry: Any, link: Any) -> bool:
        if entry.prefixlen != self.prefixlen or link is None or link.name != self.nic:
            return False
        return self.index is None or (entry.index == self.index and entry.created == self.created)


def _read_mark(ctx):
    """The Mark recorded by start, or None when there is none. A record that cannot
    be read is an error, never "not ours": stop must not report an address gone
    that it could not judge."""
    path = _state_path(ctx, "state")
    try:
        with open(path, encoding="ascii") as handle:
            fields = handle.read().split()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GenericError(f"cannot read {path}: {exc}") from None
    try:
        if len(fields) == 2:
            return Mark(fields[0], int(fields[1]))
        nic, prefixlen, index, created = fields
        return Mark(nic, int(prefixlen), int(index), int(created))
    except ValueError:
        raise GenericError(f"{path} is not a record of this agent: {' '.join(fields)!r}"
                           ) from None


def _write_mark(ctx, mark):
    """Write the record atomically (a torn record would make the VIP unjudgeable)."""
    path = _state_path(ctx, "state")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".new", "w", encoding="ascii") as handle:
        handle.write(f"{mark.nic} {mark.prefixlen} {mark.index} {mark.created}\n")
    os.replace(path + ".new", path)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _full_label(ctx, nic):
    return f"{nic}:{ctx.params.label}" if ctx.params.label else None


# -- the checks ---------------------------------------------------------------

def _entries(ctx, nl):
    """Every entry of our address on this node: ([(addr, link)] ours, the others)."""
    mark = _read_mark(ctx)
    ours, others = [], []
    for entry in nl.find_address(ctx.params.ip, _family(ctx.params.ip)):
        link = nl.link_by_index(entry.index)
        (ours if mark is not None and mark.matches(entry, link) else others).append((entry, link))
    return ours, others


def _where(entries):
    return ", ".join(f"{link.name if link else f'interface {entry.index}'}/{entry.prefixlen}"
                     for entry, link in entries)


def _held(ctx, nl):
    """Our entry: (addr, link), or None. Raises GenericError when it is not where the
    parameters say; logs an entry of the address that this resource did not add."""
    ours, others = _entries(ctx, nl)
    if others:
        ctx.log.warning(f"{ctx.params.ip} is also on {_where(others)}, not added by this "
                        "resource: leaving it alone")
    if not ours:
        return None
    entry, link = ours[0]
    nic, prefix = ctx.params.nic or link.name, ctx.params.cidr_netmask or entry.prefixlen
    if (link.name, entry.prefixlen) != (nic, prefix):
        raise GenericError(f"{ctx.params.ip} is on {link.name}/{entry.prefixlen} but is "
                           f"configured for {nic}/{prefix}")
    return entry, link


def monitor(ctx: Context[Params]) -> int:
    from hapack.netlink import Netlink
    with Netlink() as nl:
        held = _held(ctx, nl)
        if held is None:
            return OCF.NOT_RUNNING
        entry, link = held
    if entry.dadfailed:
        raise GenericError(f"{ctx.params.ip} failed duplicate address detection on {link.name}")
    label = _full_label(ctx, link.name)
    if label and entry.family == socket.AF_INET and entry.label != label:
        raise GenericError(f"{ctx.params.ip} on {link.name} has label {entry.label!r}, "
                           f"expected {label!r}")
    if ctx.params.check_link and not link.up:
        ctx.log.warning(f"{link.name} is down or has no carrier: {ctx.params.ip} is not reachable")
        return OCF.NOT_RUNNING
    if ctx.params.arp_count_refresh and not ctx.is_probe:
        _announce(ctx, link, entry.family, count=ctx.params.arp_count_refresh)
    return OCF.SUCCESS


def validate(ctx: Context[Params]) -> None:
    p = ctx.params
    v6 = _family(p.ip) == socket.AF_INET6
    if p.cidr_netmask is not None and p.cidr_netmask > (128 if v6 else 32):
        raise ConfigError(f"cidr_netmask {p.cidr_netmask} is too long for IPv{6 if v6 else 4} "
                          f"address {p.ip}")
    if p.label and v6:
        raise ConfigError("label applies to IPv4 addresses only")
    if p.label and p.nic and len(_full_label(ctx, p.nic)) > 15:
        raise ConfigError(f"label {_full_label(ctx, p.nic)!r} is longer than 15 characters")
    if p.preferred_lft is not None and not v6:
        raise ConfigError("preferred_lft applies to IPv6 addresses only")
    if v6 and not p.nic and int(p.ip.split(":")[0] or "0", 16) & 0xFFC0 == 0xFE80:
        raise ConfigError(f"{p.ip} is link-local: set nic (no route can choose the link)")
    if ctx.action == "validate-all" and ctx.check_level >= 10:
        _target(ctx)


def _target(ctx):
    """(link, prefixlen) for a new address, from the parameters or the routes."""
    from hapack.netlink import Netlink
    p = ctx.params
    with Netlink() as nl:
        link = None
        if p.nic:
            link = nl.link(p.nic)
            if link is None:
                raise NotInstalled(f"interface {p.nic} does not exist on this node")
            if p.cidr_netmask:
                return link, p.cidr_netmask
        return _from_routes(p, nl, link)


def _from_routes(p, nl, link):
    """findif's job: the connected route containing the address decides. None, or
    several: ERR_GENERIC, as IPaddr2's findif says it (routes change; the resource may
    be tried again, here or on the peer)."""
    from hapack.netlink import connected_routes
    routes = connected_routes(p.ip)
    if link is not None:
        routes = [r for r in routes if r[1] == link.index]
        if not routes:
            raise GenericError(f"no route on {p.nic} contains {p.ip}: set cidr_netmask")
        return link, routes[0][0]
    if not routes:
        raise GenericError(f"no interface has a connected route containing {p.ip}: "
                           "set nic and cidr_netmask")
    best = {r[1] for r in routes if r[0] == routes[0][0] and r[2] == routes[0][2]}
    if len(best) > 1:
        names = ", ".join(sorted(nl.link_by_index(i).name for i in best))
        raise GenericError(f"{p.ip} matches routes on several interfaces ({names}): set nic")
    return nl.link_by_index(routes[0][1]), p.cidr_netmask or routes[0][0]


# -- the verbs ----------------------------------------------------------------

def start(ctx: Context[Params]) -> int | None:
    from hapack.netlink import Netlink
    p = ctx.params
    with Netlink() as nl:
        if _held(ctx, nl) is not None:
            ctx.log.info(f"{p.ip} is already up")
            return monitor(ctx)
        _refuse_others(ctx, _entries(ctx, nl)[1])
    link, prefixlen = _target(ctx)
    if p.check_link and not link.up:
        raise GenericError(f"{link.name} is down or has no carrier; not starting {p.ip} on it")
    family = _family(p.ip)
    from hapack.announce import probe
    if p.dad_probe:
        holder = probe(link.name, family, link.mac, p.ip, p.dad_timeout / 1000)
        if holder:
            raise GenericError(f"{p.ip} is already in use on {link.name} by {holder}; refusing "
                               "to start (dad_probe=false skips this check)")
    _add(ctx, link, prefixlen)
    if p.arp_count:
        _announce(ctx, link, family)
        if p.arp_count > 1 or p.arp_second_burst_delay:
            _spawn_announcer(ctx, link, family)
    ctx.log.info(f"{p.ip}/{prefixlen} is up on {link.name}")
    return None


def _refuse_others(ctx, others):
    """An address this node already has is not ours to take (its stop would remove it)."""
    if others:
        raise ConfigError(f"{ctx.params.ip} is already on this node ({_where(others)}) and "
                          "was not added by this resource: refusing to take over an address "
                          "the node already has")


def _add(ctx, link, prefixlen):
    """Add the address and record the entry as ours; nothing is left when that fails."""
    from hapack.netlink import Netlink
    p = ctx.params
    try:
        with Netlink() as nl:
            nl.add_address(link.index, p.ip, prefixlen, label=_full_label(ctx, link.name),
                           broadcast=_broadcast(p.ip, prefixlen, p.broadcast),
                           nodad=_family(p.ip) == socket.AF_INET6, preferred_lft=p.preferred_lft)
            added = [e for e in nl.find_address(p.ip, _family(p.ip))
                     if e.index == link.index and e.prefixlen == prefixlen]
    except OSError as exc:
        if exc.errno == 1:
            raise PermError(f"not permitted to add {p.ip} to {link.name} (needs CAP_NET_ADMIN)")
        if exc.errno == 17:  # EEXIST: someone else added it since we looked
            raise ConfigError(f"{p.ip}/{prefixlen} appeared on {link.name} while starting, "
                              "added by someone else: not taking it over") from None
        raise GenericError(f"cannot add {p.ip}/{prefixlen} to {link.name}: {exc}") from None
    try:
        if not added:
            raise OSError(f"{p.ip}/{prefixlen} is not on {link.name} after adding it")
        _write_mark(ctx, Mark(link.name, prefixlen, link.index, added[0].created))
    except OSError as exc:
        with Netlink() as nl:
            _delete(ctx, added, link, nl)
        raise GenericError(f"cannot record {p.ip} as this resource's: {exc}") from None


def _broadcast(ip, prefixlen, wanted=None):
    """The IPv4 broadcast address of ip/prefixlen: ``wanted`` when it is an address,
    host bits reset for '-', else set (none for /31, /32 then, nor for IPv6)."""
    if ":" in ip:
        return None
    if wanted not in (None, "+", "-"):
        return wanted
    if prefixlen >= 31:
        return None
    mask = 0xFFFFFFFF >> prefixlen
    base = int.from_bytes(socket.inet_aton(ip), "big")
    host = base & ~mask if wanted == "-" else base | mask
    return socket.inet_ntoa(host.to_bytes(4, "big"))


def _spawn_announcer(ctx, link, family):
    """Finish the announcements in a detached child, so start returns now."""
    pidfile = _state_path(ctx, "announcer")
    pid = os.fork()
    if pid:
        return
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the executor waits for our pipes to close
            os.dup2(devnull, fd)
        with open(pidfile, "w", encoding="ascii") as handle:
            handle.write(f"{os.getpid()} {_starttime(os.getpid())}\n")
        _announce_rest(ctx, link, family)
    finally:
        os._exit(0)


def _announce(ctx, link, family, count=1, still_ours=None):
    """Send count announcements of the VIP as configured (arp_interval, arp_mode)."""
    from hapack.announce import announce
    p = ctx.params
    announce(link.name, family, link.mac, p.ip, count=count, interval=p.arp_interval / 1000,
             still_ours=still_ours, mode=p.arp_mode)


def _announce_rest(ctx, link, family):
    import time
    from hapack.netlink import Netlink
    p = ctx.params

    def still_ours():
        try:
            with Netlink() as nl:
                return bool(_entries(ctx, nl)[0])
        except (OSError, GenericError):
            return False

    time.sleep(p.arp_interval / 1000)
    if p.arp_count > 1 and still_ours():
        _announce(ctx, link, family, count=p.arp_count - 1, still_ours=still_ours)
    if p.arp_second_burst_delay:
        time.sleep(p.arp_second_burst_delay / 1000)
        if still_ours():
            _announce(ctx, link, family, count=p.arp_count, still_ours=still_ours)
    _remove(_state_path(ctx, "announcer"))


def _starttime(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().rsplit(")", 1)[1].split()[19]


def _stop_announcer(ctx):
    path = _state_path(ctx, "announcer")
    try:
        with open(path, encoding="ascii") as handle:
            pid, started = handle.read().split()
        if _starttime(int(pid)) == started:
            os.kill(int(pid), 9)
    except (OSError, ValueError, IndexError):
        pass
    _remove(path)


def stop(ctx: Context[Params]) -> None:
    """Remove the entry this resource added, and only that one; verify it is gone."""
    from hapack.netlink import Netlink
    p = ctx.params
    _stop_announcer(ctx)
    with Netlink() as nl:
        ours, others = _entries(ctx, nl)
    if ours:
        with Netlink() as nl:
            _delete(ctx, [entry for entry, _ in ours], ours[0][1], nl)
        with Netlink() as nl:
            if _entries(ctx, nl)[0]:
                raise GenericError(f"{p.ip} is still present after removal")
    if others:
        ctx.log.info(f"leaving {p.ip} on {_where(others)}: not added by this resource")
    _remove(_state_path(ctx, "state"))


def _delete(ctx, entries, link, nl):
    ip = ctx.params.ip
    for entry in entries:
        try:
            nl.delete_address(entry.index, ip, entry.prefixlen)
        except OSError as exc:
            if exc.errno == 1:
                raise PermError(f"not permitted to remove {ip} from {link.name}")
            if exc.errno != 99:  # EADDRNOTAVAIL: already gone
                raise GenericError(f"cannot remove {ip} from {link.name}: {exc}")
        ctx.log.info(f"{ip}/{entry.prefixlen} removed from {link.name}")


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="Virtual IP address (IPv4/IPv6) with its own announcements",
    longdesc=("Manages a virtual IP address with netlink: refuses an address another host "
              "already holds, announces the address with gratuitous ARP or unsolicited "
              "neighbour advertisements, and monitors the exact address, prefix and "
              "interface and the link state without forking."),
    params=PARAMS,
    values=Params,
    actions=(
        Action("start", start, 20),
        Action("stop", stop, 20),
        Action("monitor", monitor, 20, interval=10, depth=0),
    ),
    validate=validate,
    translate=stock_forms,
)


def main() -> None:
    AGENT.run()


if __name__ == "__main__":
    main()
