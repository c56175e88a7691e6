"""Unit tests of the lab's pure helpers: naming, allocation, parsers, renderers."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Network

import pytest

from hapack.lab import bmc as bmcmod
from hapack.lab import disk, naming, observe, power, stack, state
from hapack.lab.cli import build_parser

pytestmark = pytest.mark.unit

CRM_ONLINE = """<pacemaker-result api-version="2.25" request="crm_mon -1 --output-as=xml">
  <summary>
    <stack type="corosync"/>
    <current_dc present="true" version="2.1.5" name="node2" id="2" with_quorum="true" mixed_version="false"/>
    <nodes_configured number="2"/>
  </summary>
  <nodes>
    <node name="node1" id="1" online="true" unclean="false" is_dc="false" type="member"/>
    <node name="node2" id="2" online="true" unclean="false" is_dc="true" type="member"/>
  </nodes>
  <status code="0" message="OK"/>
</pacemaker-result>"""

CRM_PEER_LOST = CRM_ONLINE.replace('name="node2" id="2" with_quorum', 'name="node1" id="1" with_quorum').replace(
    '<node name="node2" id="2" online="true" unclean="false"', '<node name="node2" id="2" online="false" unclean="true"')

CRM_NO_DC = """<pacemaker-result><summary><current_dc present="false"/></summary>
  <nodes><node name="node1" online="true"/><node name="node2" online="false"/></nodes></pacemaker-result>"""


# -- naming ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "t1a2", "abcdef", "x9"])
def test_valid_lab_names(name):
    assert naming.check_name(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "abcdefg", "A", "a-b", "a_b", "a b"])
def test_invalid_lab_names(name):
    with pytest.raises(naming.NamingError):
        naming.check_name(name)


def test_interface_names_fit_ifnamsiz_and_carry_the_prefix():
    plan = naming.Plan("abcdef", 0)
    for name in plan.interfaces:
        assert len(name) <= naming.IFNAMSIZ
        assert name.startswith("hlabcdef-")
    assert len(set(plan.interfaces)) == len(plan.interfaces)


def test_two_labs_share_no_interface_or_cgroup_name():
    one, two = naming.Plan("one", 0), naming.Plan("two", 1)
    assert not set(one.interfaces) & set(two.interfaces)
    assert {one.cgroup(n) for n in naming.NODES}.isdisjoint({two.cgroup(n) for n in naming.NODES})


def test_macs_are_fixed_unicast_local_and_unique():
    plan = naming.Plan("lab1", 3)
    macs = [plan.bridge_mac(link) for link in naming.LINKS]
    macs += [plan.node_mac(n, link) for n in naming.NODES for link in naming.LINKS]
    macs += [plan.veth_mac(n, link) for n in naming.NODES for link in naming.LINKS]
    macs += [plan.client_mac, plan.client_veth_mac]
    assert len(set(macs)) == len(macs)
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01
    assert macs == [naming.Plan("lab1", 3).bridge_mac(link) for link in naming.LINKS] + macs[3:]
    assert naming.Plan("lab2", 3).node_mac("node1", "lan") != plan.node_mac("node1", "lan")


def test_blocks_are_disjoint_and_inside_the_benchmark_range():
    seen = []
    for block in range(naming.BLOCKS):
        nets = naming.block_subnets(block)
        assert list(nets) == list(naming.LINKS)
        for net in nets.values():
            assert net.subnet_of(naming.BENCH_NET) and net.prefixlen == 24
            seen.append(net)
    assert len(set(seen)) == len(seen) == 3 * naming.BLOCKS
    with pytest.raises(naming.NamingError):
        naming.block_subnets(naming.BLOCKS)


def test_addresses_sit_in_their_subnets_and_vips_are_free():
    plan = naming.Plan("ab", 7)
    nets = plan.subnets
    taken = set()
    for node in naming.NODES:
        for link in naming.LINKS:
            assert plan.addr(node, link) in nets[link]
            taken.add(plan.addr(node, link))
        assert plan.bmc_addr(node) in nets["bmc"]
        taken.add(plan.bmc_addr(node))
    taken |= {plan.client_addr, plan.host_bmc_addr}
    assert len(taken) == 2 * 3 + 2 + 2
    vips = plan.vip_candidates()
    assert vips and all(v in nets["lan"] for v in vips) and not taken & set(vips)
    assert plan.addr("node1", "lan") == nets["lan"][11] and plan.addr("node2", "hb") == nets["hb"][12]


def test_allocation_is_stable_and_avoids_used_networks():
    block = naming.allocate_block("lab", [])
    assert block == naming.preferred_block("lab")
    used = [naming.block_subnets(block)["hb"]]
    other = naming.allocate_block("lab", used)
    assert other != block
    assert not any(naming.conflicts(n, used) for n in naming.block_subnets(other).values())


def test_allocation_ignores_wide_routes_but_not_narrow_ones():
    wide = [IPv4Network("0.0.0.0/0"), IPv4Network("198.16.0.0/12")]
    assert naming.allocate_block("lab", wide) == naming.preferred_block("lab")
    host_route = IPv4Network(f"{naming.block_subnets(naming.preferred_block('lab'))['lan'][5]}/32")
    assert naming.allocate_block("lab", [host_route]) != naming.preferred_block("lab")


def test_allocation_fails_when_the_range_is_full():
    with pytest.raises(naming.NamingError):
        naming.allocate_block("lab", [IPv4Network("198.18.0.0/15")])


def test_used_networks_from_ip_json():
    addrs = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "198.18.7.5", "prefixlen": 24}]},
             {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]}]
    routes = [{"dst": "default"}, {"dst": "198.19.3.0/24"}, {"dst": "10.1.2.3"}, {"dst": "fe80::/64"}]
    nets = naming.used_networks_from_ip_json(addrs, routes)
    assert IPv4Network("198.18.7.0/24") in nets and IPv4Network("198.19.3.0/24") in nets
    assert IPv4Network("10.1.2.3/32") in nets and IPv4Network("127.0.0.0/8") in nets
    assert len(nets) == 4


def test_links_and_nodes_are_checked():
    assert naming.check_link("all", allow_all=True) == naming.LINKS
    assert naming.check_link("hb") == ("hb",)
    with pytest.raises(naming.NamingError):
        naming.check_link("all")
    with pytest.raises(naming.NamingError):
        naming.node_index("node3")


# -- observation parsers -----------------------------------------------------
def test_parse_power_log_with_and_without_duration():
    text = ("1700000000.5\tget power\tpower:1\t0.020\n"
            "1700000001.0\tset power 0\toff\n"
            "garbage line\n"
            "notanumber\tset power 1\ton\t0.1\n")
    events = observe.parse_power_log(text)
    assert [(e.command, e.result) for e in events] == [("get power", "power:1"), ("set power 0", "off")]
    assert events[0].seconds == pytest.approx(0.02) and events[1].seconds == 0.0
    assert not events[0].is_set and events[1].is_set


def test_parse_sample_and_changes():
    lines = ["10.00 1700000000.0 0.003 ok:node1\n", "10.05 1700000000.05 0.2 error:timeout\n",
             "10.10 1700000000.1 0.2 error:timeout\n", "10.15 1700000000.15 0.004 ok:node2\n", "junk\n"]
    samples = [s for s in map(observe.parse_sample, lines) if s]
    assert len(samples) == 4
    assert samples[0].ok and samples[0].answer == "node1" and samples[1].error == "timeout"
    assert [s.result for s in observe.changes(samples)] == ["node1", "error:timeout", "node2"]


def test_parse_boot_stages():
    stages = observe.parse_boot("poweron 1.0 100.0\ninit 1.1 100.1\nup 1.5 100.5\n")
    assert [s.name for s in stages] == ["poweron", "init", "up"] and stages[-1].mono == 1.5


def test_parse_mountinfo():
    text = ("36 25 0:32 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755\n"
            "40 25 254:0 /var/tmp/x/etc-hapack /etc/hapack rw,relatime - ext4 /dev/vda rw\n"
            "41 25 7:0 / /mnt/my\\040disk rw - ext4 /dev/loop0 rw\n")
    mounts = observe.parse_mountinfo(text)
    assert [(m.target, m.fstype, m.source) for m in mounts] == [
        ("/run", "tmpfs", "tmpfs"), ("/etc/hapack", "ext4", "/dev/vda"), ("/mnt/my disk", "ext4", "/dev/loop0")]


def test_node_pid_is_the_innermost_nspid():
    status = observe.parse_status("Name:\tcorosync\nPid:\t4242\nPPid:\t4200\nNSpid:\t4242\t3\n")
    assert observe.node_pid(status) == 3 and status["Name"] == "corosync"


# -- stack -----------------------------------------------------------------
def test_parse_crm_mon_online():
    view = stack.parse_crm_mon(CRM_ONLINE)
    assert view.dc == "node2" and view.quorum
    assert view.online == {"node1", "node2"} and view.all_online(["node1", "node2"])


def test_parse_crm_mon_peer_lost():
    view = stack.parse_crm_mon(CRM_PEER_LOST)
    assert view.dc == "node1" and view.offline == {"node2"} and view.unclean == {"node2"}
    assert not view.all_online(["node1", "node2"]) and view.all_online(["node1"])


def test_parse_crm_mon_without_dc_has_no_quorum():
    view = stack.parse_crm_mon(CRM_NO_DC)
    assert view.dc is None and not view.quorum and not view.all_online(["node1"])


def test_corosync_conf_has_knet_two_links_crypto_and_two_node():
    text = stack.render_corosync_conf("hlab", {"node2": ("198.18.0.12", "198.18.1.12"),
                                               "node1": ("198.18.0.11", "198.18.1.11")}, token_ms=1500)
    for needle in ("transport: knet", "token: 1500", "consensus: 1200", "crypto_cipher: aes256",
                   "crypto_hash: sha256",
                   "two_node: 1", "cluster_name: hlab", "to_syslog: no",
                   "logfile: /var/log/cluster/corosync.log"):
        assert needle in text
    node1 = text.index("name: node1")
    assert text.index("nodeid: 1") > node1 and text.index("ring1_addr: 198.18.1.11") > node1
    assert text.index("name: node2") > text.index("ring1_addr: 198.18.1.11")
    assert text.count("{") == text.count("}")


def test_lab_corosync_conf_takes_the_stack_files_consensus_or_its_own():
    nodes = {"node1": ("198.18.0.11", "198.18.1.11"), "node2": ("198.18.0.12", "198.18.1.12")}
    for token in (200, 300, 1000, 3000):
        text = stack.render_corosync_conf("hlab", nodes, token_ms=token)
        assert f"    consensus: {token * 80 // 100}\n" in text and text.count("consensus:") == 1
    text = stack.render_corosync_conf("hlab", nodes, token_ms=500, consensus_ms=600)
    assert "    token: 500\n    consensus: 600\n" in text


def test_cib_with_options():
    empty = b'<cib epoch="1" num_updates="0" admin_epoch="0"><configuration><crm_config/><nodes/>' \
            b'<resources/><constraints/></configuration><status/></cib>'
    out = stack.cib_with_options(empty, {"dc-deadtime": "2s"}).decode()
    assert 'id="cib-bootstrap-options"' in out and 'name="dc-deadtime" value="2s"' in out


def test_authkey_is_private(tmp_path):
    key = stack.write_authkey(tmp_path / "authkey")
    assert len(key) == stack.AUTHKEY_BYTES and (tmp_path / "authkey").stat().st_mode & 0o777 == 0o400


# -- BMC -------------------------------------------------------------------
BMC = bmcmod.Bmc(node="node1", address="198.18.2.21", port=623, username="adm-node1",
                 password="0123456789ab", password_file="/x/password")


def test_ipmitool_argv_uses_cipher_3_lanplus_and_a_password_file():
    argv = BMC.ipmitool_argv("chassis", "power", "status")
    assert argv[:5] == ["ipmitool", "-I", "lanplus", "-C", "3"]
    assert "-f" in argv and "-P" not in argv and BMC.password not in argv
    assert argv[-3:] == ["chassis", "power", "status"]


def test_fence_ipmilan_params():
    params = BMC.fence_ipmilan_params()
    assert params == {"ip": "198.18.2.21", "ipport": "623", "username": "adm-node1",
                      "password": "0123456789ab", "lanplus": "1", "cipher": "3", "pcmk_host_list": "node1"}


def test_lan_conf_has_guid_hook_and_user():
    text = bmcmod.render_lan_conf(BMC, "hlab-node1", "ab" * 16, ["/usr/bin/python3", "-I", "/x/power.py", "n1"])
    assert "addr 198.18.2.21 623" in text and f"guid {'ab' * 16}" in text
    assert 'chassis_control "/usr/bin/python3 -I /x/power.py n1"' in text
    assert 'user 2 true "adm-node1" "0123456789ab" admin' in text
    with pytest.raises(bmcmod.BmcError):
        bmcmod.render_lan_conf(BMC, "x", "ab", ['/bad"path'])


def test_passwords_fit_ipmi():
    assert len(bmcmod.new_password()) <= 16 and bmcmod.new_password() != bmcmod.new_password()


def test_parse_proc_net_udp_and_choose_port():
    text = ("  sl  local_address rem_address   st\n"
            "   0: 1502C6C6:026F 00000000:0000 07\n"
            "   1: 00000000:3F66 00000000:0000 07\n")
    bound = bmcmod.parse_proc_net_udp(text)
    assert bound == {("198.198.2.21", 623), ("0.0.0.0", 16230)}
    assert bmcmod.choose_port(["198.198.2.22"], bound) == 623
    assert bmcmod.choose_port(["198.198.2.21"], bound) == 16231


def test_parse_power_status():
    assert bmcmod.parse_power_status("Chassis Power is on\n") == "on"
    assert bmcmod.parse_power_status("Chassis Power is off\n") == "off"
    with pytest.raises(bmcmod.BmcError):
        bmcmod.parse_power_status("Error: Unable to establish IPMI v2 / RMCP+ session\n")


class FakeSwitch:
    def __init__(self, on: bool):
        self.powered = on
        self.calls: list[str] = []

    def is_on(self):
        return self.powered

    def on(self):
        self.calls.append("on")
        return "on"

    def off(self):
        self.calls.append("off")
        return "off"

    def reset(self):
        self.calls.append("reset")
        return "reset"


def test_power_hook_dispatch_get(capsys):
    assert power._dispatch(FakeSwitch(True), "get", ["power", "boot"]) == "power:1 boot:default"
    assert capsys.readouterr().out == "power:1\nboot:default\n"


def test_power_hook_dispatch_set():
    switch = FakeSwitch(False)
    power._dispatch(switch, "set", ["power", "1"])
    power._dispatch(switch, "set", ["power", "0", "reset", "1", "identify", "1"])
    assert switch.calls == ["on", "off", "reset"]
    for op, args in (("set", ["power"]), ("set", ["colour", "1"]), ("get", ["colour"]), ("check", [])):
        with pytest.raises(power.PowerError):
            power._dispatch(switch, op, args)


# -- state, disk, CLI ----------------------------------------------------------
def test_process_identity_and_staleness():
    me = state.proc_id(os.getpid())
    assert state.alive(me) and not state.alive((me[0], me[1] + 1)) and not state.alive(None)
    assert not state.is_stale({"owner": None}) and not state.is_stale({"owner": list(me)})
    assert state.is_stale({"owner": [me[0], me[1] + 1]})


def test_write_json_is_atomic_and_private(tmp_path):
    path = tmp_path / "lab.json"
    state.write_json(path, {"a": [1, 2]})
    assert state.read_json(path) == {"a": [1, 2]} and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["lab.json"]


def test_parse_losetup_j():
    text = "/dev/loop3: [2049]:1234 (/var/tmp/hapack-lab/ab/disk.img)\n/dev/loop7: [2049]:1234 (/x)\n"
    assert disk.parse_losetup_j(text) == ["/dev/loop3", "/dev/loop7"]


def test_cli_parses_exec_power_and_up():
    parser = build_parser()
    args = parser.parse_args(["exec", "--name", "ab", "node1", "--", "crm_mon", "-1"])
    assert (args.name, args.node, args.argv) == ("ab", "node1", ["crm_mon", "-1"])
    args = parser.parse_args(["power", "node2", "off", "--wait"])
    assert (args.node, args.action, args.wait) == ("node2", "off", True)
    args = parser.parse_args(["up", "--stack", "none"])
    assert args.stack == "none" and args.name is None
    with pytest.raises(SystemExit):
        parser.parse_args(["power", "node3", "off"])


def test_host_bmc_address_is_the_gateway():
    plan = naming.Plan("zz", 0)
    assert plan.host_bmc_addr == IPv4Address("198.18.2.1")
