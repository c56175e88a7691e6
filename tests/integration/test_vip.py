"""ocf:hapack:vip in network namespaces: takeover seen by a client, duplicates, ocf-tester."""

import os
import subprocess
import sys
import time

import pytest

from requires import need_binary, need_root
from nslab import Segment

VIP4 = "198.18.200.100"
VIP6 = "2001:db8:c8::100"


@pytest.fixture(scope="module")
def lan():
    need_root()
    segment = Segment("v")
    try:
        hosts = {name: segment.add_host(name, index)
                 for name, index in (("a", 11), ("b", 12), ("c", 50))}
        yield hosts
    finally:
        segment.close()


@pytest.fixture
def vip(lan, installed, tmp_path):
    """Run the installed vip agent on a host; stops every VIP it started."""
    started = []

    def call(host, action, **params):
        rsctmp = tmp_path / host.name
        rsctmp.mkdir(exist_ok=True)
        env = {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf",
               "OCF_RESOURCE_INSTANCE": "vip-test", "HA_RSCTMP": str(rsctmp),
               "OCF_RESKEY_CRM_meta_timeout": "20000"}
        env.update({f"OCF_RESKEY_{k}": str(v) for k, v in params.items()})
        result = host.run(installed("vip"), action, env=env, check=False)
        if action == "start" and result.returncode == 0:
            started.append((host, params))
        return result

    yield call
    for host, params in started:
        call(host, "stop", **params)


def addresses(host):
    return host.run("ip", "-o", "addr", "show", "dev", "eth0").stdout


def wait_neighbour(client, ip, mac, timeout=5.0):
    """Poll the client's neighbour table (the client sends nothing)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if client.neighbour(ip)[0] == mac:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("ip,ping", [(VIP4, "ping"), (VIP6, "ping6")])
def test_takeover_turns_the_clients_neighbour_entry(lan, vip, ip, ping):
    a, b, client = lan["a"], lan["b"], lan["c"]
    assert vip(a, "start", ip=ip).returncode == 0
    assert vip(a, "monitor", ip=ip).returncode == 0
    # The client learns the VIP once (the only packet it sends in this test).
    client.run(ping, "-c", "1", "-W", "2", ip)
    assert client.neighbour(ip)[0] == a.mac

    assert vip(a, "stop", ip=ip).returncode == 0
    assert vip(a, "monitor", ip=ip).returncode == 7
    assert vip(b, "start", ip=ip).returncode == 0
    assert wait_neighbour(client, ip, b.mac), \
        f"client still has {client.neighbour(ip)} for {ip}, expected {b.mac}"
    assert vip(b, "stop", ip=ip).returncode == 0


@pytest.mark.parametrize("ip", [VIP4, VIP6])
def test_a_duplicate_address_is_refused_with_the_holders_mac(lan, vip, ip):
    a, b = lan["a"], lan["b"]
    assert vip(a, "start", ip=ip).returncode == 0
    result = vip(b, "start", ip=ip)
    assert result.returncode == 1
    assert f"already in use on eth0 by {a.mac}" in result.stderr
    assert ip not in addresses(b)
    assert vip(a, "monitor", ip=ip).returncode == 0  # the holder is undisturbed
    # told otherwise, it starts (the operator's call)
    assert vip(b, "start", ip=ip, dad_probe="false").returncode == 0
    assert vip(b, "stop", ip=ip).returncode == 0


def test_monitor_checks_prefix_interface_and_link(lan, vip):
    a = lan["a"]
    assert vip(a, "start", ip=VIP4, cidr_netmask=24, label="svc").returncode == 0
    assert f"{VIP4}/24" in addresses(a) and "eth0:svc" in addresses(a)
    wrong = vip(a, "monitor", ip=VIP4, cidr_netmask=25)
    assert wrong.returncode == 1 and "configured for eth0/25" in wrong.stderr
    a.run("ip", "link", "set", "eth0", "down")
    try:
        assert vip(a, "monitor", ip=VIP4, cidr_netmask=24).returncode == 7
    finally:
        a.run("ip", "link", "set", "eth0", "up")
    assert vip(a, "monitor", ip=VIP4, cidr_netmask=24).returncode == 0
    assert vip(a, "stop", ip=VIP4, cidr_netmask=24).returncode == 0
    assert VIP4 not in addresses(a)


def test_start_and_stop_are_idempotent(lan, vip):
    a = lan["a"]
    for _ in range(2):
        assert vip(a, "start", ip=VIP4).returncode == 0
    assert addresses(a).count(VIP4 + "/") == 1
    for _ in range(2):
        assert vip(a, "stop", ip=VIP4).returncode == 0
    assert VIP4 not in addresses(a)


@pytest.mark.parametrize("params,code,words", [
    ({"ip": "198.18.201.7"}, 1, "no interface has a connected route containing 198.18.201.7"),
    ({"ip": VIP4, "nic": "eth9"}, 5, "interface eth9 does not exist on this node"),
    ({"ip": VIP4, "cidr_netmask": "40"}, 6, "cidr_netmask 40 is too long for IPv4"),
    ({"ip": VIP4, "cidr_netmask": "255.0.255.0"}, 6, "is not a contiguous netmask"),
    ({"ip": VIP6, "label": "x"}, 6, "label applies to IPv4 addresses only"),
])
def test_bad_configuration_is_refused_and_leaves_nothing(lan, vip, params, code, words):
    a = lan["a"]
    result = vip(a, "start", **params)
    assert result.returncode == code
    assert words in result.stderr
    assert params["ip"] not in addresses(a)


def test_ocf_tester_passes_inside_a_namespace(lan, installed):
    need_binary("ocf-tester")
    result = lan["a"].run("ocf-tester", "-n", "vip-ocft", "-o", f"ip={VIP4}",
                          "-o", "cidr_netmask=24", installed("vip"), check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed all tests" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def system_install():
    """crm_resource only looks in OCF_ROOT: install for real (as the README's setup does)."""
    need_root()
    need_binary("crm_resource")
    subprocess.run([sys.executable, "-m", "hapack.cli", "install"], check=True,
                   capture_output=True)


def test_crm_resource_validate_rejects_a_bad_ip(system_install):
    result = subprocess.run(["crm_resource", "--validate", "--class", "ocf", "--provider", "hapack",
                             "--agent", "vip", "--option", "ip=not-an-ip"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "'not-an-ip' is not an IPv4 or IPv6 address" in result.stdout + result.stderr


def test_crm_resource_lists_the_agents(system_install):
    result = subprocess.run(["crm_resource", "--list-agents", "ocf:hapack"],
                            capture_output=True, text=True, timeout=60, check=True)
    assert "vip" in result.stdout.split()


# -- the node's own addresses are never the VIP's (issue 14 item 9) ----------------------

def entries(host):
    """{(interface, address, prefixlen)} of every global address on the host."""
    import json
    out = host.run("ip", "-j", "addr", "show").stdout
    return {(link["ifname"], info["local"], info["prefixlen"])
            for link in json.loads(out) for info in link.get("addr_info", [])
            if info.get("scope") == "global"}


@pytest.fixture
def own(lan):
    """Host a with a second interface (dum0, a veth pair inside the host) and addresses that are not the VIP's
    ("someone else's"), all removed again afterwards."""
    a = lan["a"]
    # the node's own addresses (a link down/up elsewhere in this module drops IPv6 ones)
    a.run("ip", "addr", "replace", f"{a.addrs[0]}/24", "dev", "eth0")
    a.run("ip", "addr", "replace", f"{a.addrs[1]}/64", "dev", "eth0", "nodad")
    a.run("ip", "link", "add", "dum0", "type", "veth", "peer", "name", "dum0p")
    for dev in ("dum0", "dum0p"):
        a.run("ip", "link", "set", dev, "up")
    a.run("ip", "addr", "add", "198.18.203.1/24", "dev", "dum0")
    a.run("ip", "addr", "add", "2001:db8:cb::1/64", "dev", "dum0", "nodad")
    added = []

    def add(spec, dev):
        a.run("ip", "addr", "add", spec, "dev", dev, "nodad" if ":" in spec else "noprefixroute")
        added.append((spec, dev))

    def remove(spec, dev):
        a.run("ip", "addr", "del", spec, "dev", dev)
        added.remove((spec, dev))

    add.remove = remove
    before = entries(a)
    yield a, add
    for spec, dev in added:
        a.run("ip", "addr", "del", spec, "dev", dev, check=False)
    a.run("ip", "link", "del", "dum0", check=False)
    assert entries(a) <= before | {("dum0", "198.18.203.1", 24), ("dum0", "2001:db8:cb::1", 64)}


NODE_ADDRESS_SPELLINGS = [
    # (VIP parameters equal to an address host a already has, the interface named)
    ({"ip": "198.18.200.11"}, "eth0"),
    ({"ip": "198.18.200.11", "nic": "eth0", "cidr_netmask": "24"}, "eth0"),
    ({"ip": "198.18.200.11", "nic": "eth0", "cidr_netmask": "255.255.255.0"}, "eth0"),
    ({"ip": "198.18.200.11", "nic": "eth0", "cidr_netmask": "32"}, "eth0"),
    ({"ip": "198.18.200.11", "cidr_netmask": "25", "label": "svc"}, "eth0"),
    ({"ip": "2001:DB8:C8:0::11"}, "eth0"),
    ({"ip": "2001:db8:c8:0:0:0:0:11", "nic": "eth0", "cidr_netmask": "64"}, "eth0"),
    ({"ip": "2001:db8:c8::11", "nic": "eth0", "cidr_netmask": "128"}, "eth0"),
    ({"ip": "198.18.203.1"}, "dum0"),  # on the other interface, found by route
    ({"ip": "198.18.203.1", "nic": "eth0", "cidr_netmask": "24"}, "dum0"),
    ({"ip": "2001:db8:cb::1", "nic": "dum0", "cidr_netmask": "64"}, "dum0"),
]


@pytest.mark.parametrize("params,where", NODE_ADDRESS_SPELLINGS)
def test_an_address_the_node_already_has_is_never_taken_or_removed(own, vip, params, where):
    a, _ = own
    before = entries(a)
    for action, code in (("monitor", 7), ("start", 6), ("monitor", 7), ("stop", 0),
                         ("start", 6), ("stop", 0), ("stop", 0), ("monitor", 7)):
        result = vip(a, action, **params)
        assert result.returncode == code, f"{action}: {result.stderr}"
        if action == "start":
            assert f"already on this node ({where}/" in result.stderr
            assert "not added by this resource" in result.stderr
        assert entries(a) == before, f"after {action}: {entries(a) ^ before}"


OTHERS = [  # (our VIP's parameters, someone else's entry of the same address)
    ({"ip": VIP4, "nic": "eth0", "cidr_netmask": "24"}, (f"{VIP4}/32", "eth0")),
    ({"ip": VIP4, "nic": "eth0", "cidr_netmask": "24"}, (f"{VIP4}/24", "dum0")),
    ({"ip": VIP4}, (f"{VIP4}/28", "eth0")),
    ({"ip": VIP6, "nic": "eth0", "cidr_netmask": "64"}, (f"{VIP6}/64", "dum0")),
    ({"ip": VIP6}, (f"{VIP6}/128", "dum0")),
]


@pytest.mark.parametrize("params,theirs", OTHERS)
def test_someone_elses_entry_of_the_vip_is_left_alone_before_and_after_our_start(
        own, vip, params, theirs):
    a, add = own
    base = entries(a)
    spec, dev = theirs
    mine = lambda: {e for e in entries(a) - base if e[1] == params["ip"]} - {theirs_entry}
    theirs_entry = (dev, spec.split("/")[0], int(spec.split("/")[1]))

    # added by someone else before our start: refused, and never removed by our stop
    add(spec, dev)
    for action, code in (("start", 6), ("monitor", 7), ("stop", 0), ("stop", 0)):
        assert vip(a, action, **params).returncode == code, action
        assert theirs_entry in entries(a) and not mine()
    add.remove(spec, dev)

    # added by someone else after our start: ours runs on, stop removes only ours
    assert vip(a, "start", **params).returncode == 0
    ours = mine()
    assert len(ours) == 1
    add(spec, dev)
    for action, code in (("monitor", 0), ("start", 0), ("monitor", 0)):
        assert vip(a, action, **params).returncode == code, action
        assert theirs_entry in entries(a) and mine() == ours
    for action in ("stop", "stop"):
        assert vip(a, action, **params).returncode == 0
        assert theirs_entry in entries(a) and not mine()
    assert vip(a, "start", **params).returncode == 6  # theirs is there now
    assert theirs_entry in entries(a) and not mine()
    add.remove(spec, dev)


@pytest.mark.parametrize("ip,prefix", [(VIP4, 24), (VIP6, 64)])
def test_our_entry_replaced_by_someone_elses_identical_one_is_not_ours(own, vip, ip, prefix):
    a, add = own
    params = {"ip": ip, "nic": "eth0", "cidr_netmask": prefix}
    assert vip(a, "start", **params).returncode == 0
    a.run("ip", "addr", "del", f"{ip}/{prefix}", "dev", "eth0")
    time.sleep(0.05)  # a new creation stamp (the kernel counts hundredths of a second)
    add(f"{ip}/{prefix}", "eth0")
    theirs = ("eth0", ip, prefix)
    for action, code in (("monitor", 7), ("stop", 0), ("start", 6), ("stop", 0)):
        assert vip(a, action, **params).returncode == code, action
        assert theirs in entries(a)


@pytest.mark.parametrize("params", [
    {"ip": VIP4}, {"ip": VIP4, "cidr_netmask": "32", "nic": "eth0"},
    {"ip": VIP4, "cidr_netmask": "24", "label": "svc"}, {"ip": VIP6},
    {"ip": VIP6, "cidr_netmask": "128", "nic": "dum0"}, {"ip": "198.18.203.77"}])
def test_restarts_of_the_agent_on_its_own_vip_stay_idempotent(own, vip, params):
    a, _ = own
    base = entries(a)
    sequence = ["start", "start", "monitor", "stop", "stop", "monitor", "start", "monitor",
                "start", "stop", "monitor", "stop"]
    up = False
    for action in sequence:
        result = vip(a, action, **params)
        up = {"start": True, "stop": False}.get(action, up)
        expected = 7 if action == "monitor" and not up else 0
        assert result.returncode == expected, f"{action}: {result.stderr}"
        extra = entries(a) - base
        assert base <= entries(a), f"after {action}: a node address is gone"
        assert len(extra) == (1 if up else 0) and all(e[1] == params["ip"] for e in extra)
