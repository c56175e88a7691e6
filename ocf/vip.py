"""ocf:hapack:vip -- the virtual IP address (IPv4 and IPv6).

Start probes for another holder of the address, adds it over netlink and
announces it itself (gratuitous ARP or unsolicited neighbour
advertisements), the first announcement before start returns and the rest
from a short-lived background child. Monitor checks the exact address and
prefix on the exact interface and that the link is up with a few netlink
requests: no child process. pyroute2 finds the interface and prefix from
the routing table when ``nic`` or ``cidr_netmask`` is not set.
"""

import os

import _socket as socket  # the C module: importing 'socket' costs 2 ms per call

from hapack.ocf import OCF, Action, Agent, ConfigError, GenericError, NotInstalled, Param, PermError

NAME = "vip"


def _family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def canonical_ip(text):
    text = text.strip()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except OSError:
            continue
    raise ValueError(f"{text!r} is not an IPv4 or IPv6 address")


def prefix_length(text):
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


def interface_name(text):
    if not 0 < len(text) <= 15 or any(c in text for c in "/: \t\n") or text in (".", ".."):
        raise ValueError(f"{text!r} is not a valid interface name")
    return text


def lifetime(text):
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
          "characters at most in all)."),
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


# -- where things are -------------------------------------------------------

def _rsctmp(ctx):
    return ctx.environ.get("HA_RSCTMP") or "/run/resource-agents"


def _state_path(ctx, what):
    return os.path.join(_rsctmp(ctx), f"hapack-vip-{ctx.instance}.{what}")


def _read_state(ctx):
    """(nic, prefixlen) recorded by start, or (None, None)."""
    try:
        with open(_state_path(ctx, "state"), encoding="ascii") as handle:
            nic, prefix = handle.read().split()
        return nic, int(prefix)
    except (OSError, ValueError):
        return None, None


def _write_state(ctx, nic, prefixlen):
    os.makedirs(_rsctmp(ctx), exist_ok=True)
    with open(_state_path(ctx, "state"), "w", encoding="ascii") as handle:
        handle.write(f"{nic} {prefixlen}\n")


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _full_label(ctx, nic):
    return f"{nic}:{ctx.params.label}" if ctx.params.label else None


# -- the checks ---------------------------------------------------------------

def _held(ctx, nl):
    """The entry holding our address where expected: (addr, link), or None.

    Raises GenericError when the address is here but not as configured.
    """
    ip = ctx.params.ip
    entries = nl.find_address(ip, _family(ip))
    if not entries:
        return None
    nic, prefix = _read_state(ctx)
    nic = ctx.params.nic or nic
    prefix = ctx.params.cidr_netmask or prefix
    found = []
    for entry in entries:
        link = nl.link_by_index(entry.index)
        if link is None:
            continue
        if (nic is None or link.name == nic) and (prefix is None or entry.prefixlen == prefix):
            return entry, link
        found.append(f"{link.name}/{entry.prefixlen}")
    raise GenericError(f"{ip} is on {', '.join(found)} but is configured for "
                       f"{nic or 'any interface'}/{prefix or 'any prefix'}")


def monitor(ctx):
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
        from hapack.announce import announce
        announce(link.name, entry.family, link.mac, ctx.params.ip,
                 count=ctx.params.arp_count_refresh, interval=ctx.params.arp_interval / 1000)
    return OCF.SUCCESS


def validate(ctx):
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
    """findif's job: the connected route containing the address decides."""
    from hapack.iproute import IPRoute
    with IPRoute() as ipr:
        routes = ipr.connected_routes(p.ip)
    if link is not None:
        routes = [r for r in routes if r[1] == link.index]
        if not routes:
            raise NotInstalled(f"no route on {p.nic} contains {p.ip}: set cidr_netmask")
        return link, routes[0][0]
    if not routes:
        raise NotInstalled(f"no interface has a connected route containing {p.ip}: "
                           "set nic and cidr_netmask")
    best = {r[1] for r in routes if r[0] == routes[0][0] and r[2] == routes[0][2]}
    if len(best) > 1:
        names = ", ".join(sorted(nl.link_by_index(i).name for i in best))
        raise NotInstalled(f"{p.ip} matches routes on several interfaces ({names}): set nic")
    return nl.link_by_index(routes[0][1]), p.cidr_netmask or routes[0][0]


# -- the verbs ----------------------------------------------------------------

def start(ctx):
    from hapack.netlink import Netlink
    p = ctx.params
    with Netlink() as nl:
        if _held(ctx, nl) is not None:
            ctx.log.info(f"{p.ip} is already up")
            return monitor(ctx)
    link, prefixlen = _target(ctx)
    if p.check_link and not link.up:
        raise GenericError(f"{link.name} is down or has no carrier; not starting {p.ip} on it")
    family = _family(p.ip)
    from hapack.announce import announce, probe
    if p.dad_probe:
        holder = probe(link.name, family, link.mac, p.ip, p.dad_timeout / 1000)
        if holder:
            raise GenericError(f"{p.ip} is already in use on {link.name} by {holder}; refusing "
                               "to start (dad_probe=false skips this check)")
    try:
        with Netlink() as nl:
            nl.add_address(link.index, p.ip, prefixlen, label=_full_label(ctx, link.name),
                           broadcast=_broadcast(p.ip, prefixlen), nodad=family == socket.AF_INET6,
                           preferred_lft=p.preferred_lft)
    except OSError as exc:
        if exc.errno == 1:
            raise PermError(f"not permitted to add {p.ip} to {link.name} (needs CAP_NET_ADMIN)")
        if exc.errno != 17:  # EEXIST: a concurrent start added it
            raise GenericError(f"cannot add {p.ip}/{prefixlen} to {link.name}: {exc}") from None
    _write_state(ctx, link.name, prefixlen)
    if p.arp_count:
        announce(link.name, family, link.mac, p.ip)
        if p.arp_count > 1 or p.arp_second_burst_delay:
            _spawn_announcer(ctx, link, family)
    ctx.log.info(f"{p.ip}/{prefixlen} is up on {link.name}")


def _broadcast(ip, prefixlen):
    """The IPv4 broadcast address of ip/prefixlen (none for /31, /32, IPv6)."""
    if ":" in ip or prefixlen >= 31:
        return None
    host = int.from_bytes(socket.inet_aton(ip), "big") | (0xFFFFFFFF >> prefixlen)
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


def _announce_rest(ctx, link, family):
    import time
    from hapack.announce import announce
    from hapack.netlink import Netlink
    p = ctx.params

    def still_ours():
        with Netlink() as nl:
            return any(a.index == link.index for a in nl.find_address(p.ip, family))

    time.sleep(p.arp_interval / 1000)
    if p.arp_count > 1 and still_ours():
        announce(link.name, family, link.mac, p.ip, count=p.arp_count - 1,
                 interval=p.arp_interval / 1000, still_ours=still_ours)
    if p.arp_second_burst_delay:
        time.sleep(p.arp_second_burst_delay / 1000)
        if still_ours():
            announce(link.name, family, link.mac, p.ip, count=p.arp_count,
                     interval=p.arp_interval / 1000, still_ours=still_ours)
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


def stop(ctx):
    from hapack.netlink import Netlink
    p = ctx.params
    _stop_announcer(ctx)
    with Netlink() as nl:
        held = _held_for_stop(ctx, nl)
    if held:
        with Netlink() as nl:
            for entry, link in held:
                try:
                    nl.delete_address(entry.index, p.ip, entry.prefixlen)
                except OSError as exc:
                    if exc.errno == 1:
                        raise PermError(f"not permitted to remove {p.ip} from {link.name}")
                    if exc.errno != 99:  # EADDRNOTAVAIL: already gone
                        raise GenericError(f"cannot remove {p.ip} from {link.name}: {exc}")
                ctx.log.info(f"{p.ip}/{entry.prefixlen} removed from {link.name}")
        with Netlink() as nl:
            if _held_for_stop(ctx, nl):
                raise GenericError(f"{p.ip} is still present after removal")
    _remove(_state_path(ctx, "state"))


def _held_for_stop(ctx, nl):
    """Every entry of our address on the configured (or recorded) interface."""
    nic = ctx.params.nic or _read_state(ctx)[0]
    held = []
    for entry in nl.find_address(ctx.params.ip, _family(ctx.params.ip)):
        link = nl.link_by_index(entry.index)
        if link is not None and (nic is None or link.name == nic):
            held.append((entry, link))
    return held


AGENT = Agent(
    NAME, version="1.0",
    shortdesc="Virtual IP address (IPv4/IPv6) with its own announcements",
    longdesc=("Manages a virtual IP address with netlink: refuses an address another host "
              "already holds, announces the address with gratuitous ARP or unsolicited "
              "neighbour advertisements, and monitors the exact address, prefix and "
              "interface and the link state without forking."),
    params=PARAMS,
    actions=(
        Action("start", start, 20),
        Action("stop", stop, 20),
        Action("monitor", monitor, 20, interval=10, depth=0),
    ),
    validate=validate,
)


def main():
    AGENT.run()


if __name__ == "__main__":
    main()
