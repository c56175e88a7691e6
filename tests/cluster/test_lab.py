"""The lab itself: two real nodes, real BMCs, real faults, and a clean teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hapack.lab import BmcError, Lab, NodeFrozen
from hapack.lab import cli
from hapack.lab.state import alive, proc_id

pytestmark = pytest.mark.cluster

NO_ANSWER = 0.3   # seconds to wait for a ping that must fail


# -- up ----------------------------------------------------------------------
def test_cold_start_gives_two_online_nodes_with_quorum(cluster):
    lab = cluster
    assert lab.cold_start_s < 60
    for node in lab.nodes:
        assert lab.ping("client", lab.addr(node, "lan"))
    views = [lab.crm_mon(node) for node in lab.nodes]
    for view in views:
        assert view.online == {"node1", "node2"} and view.quorum
    assert views[0].dc == views[1].dc is not None
    quorum = lab.exec("node1", ["corosync-quorumtool", "-s"]).stdout
    assert "2Node" in quorum and "Quorate" in quorum
    links = lab.exec("node1", ["corosync-cfgtool", "-s"]).stdout
    assert "LINK ID 0" in links and "LINK ID 1" in links


def test_nodes_look_like_separate_hosts(plain):
    lab = plain
    for node in lab.nodes:
        assert lab.exec(node, ["hostname"]).stdout.strip() == node
        mounts = {m.target: m for m in lab.mounts(node)}
        for private in ("/run", "/tmp", "/dev/shm"):
            assert mounts[private].fstype == "tmpfs"
        assert mounts["/sys"].fstype == "sysfs"
        for persistent in ("/etc/corosync", "/etc/hapack", "/var/lib/pacemaker", "/var/lib/corosync",
                           "/var/log", "/etc/hosts"):
            assert persistent in mounts
        assert sorted(lab.exec(node, ["ls", "/sys/class/net"]).stdout.split()) == ["eth0", "eth1", "eth2", "lo"]
        assert lab.shared_dir.is_dir() and lab.exec(node, ["test", "-d", str(lab.shared_dir)]).returncode == 0
    lab.exec("node1", ["sh", "-c", "echo one > /tmp/mine"])
    assert lab.exec("node2", ["test", "-e", "/tmp/mine"], check=False).returncode != 0
    assert not Path("/tmp/mine").exists()
    hosts = lab.exec("node1", ["cat", "/etc/hosts"]).stdout
    assert f"{lab.addr('node2', 'lan')}\tnode2" in hosts
    macs = lab.exec("node1", ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    assert macs == lab.plan.node_mac("node1", "lan")


def test_two_labs_never_share_a_name_or_subnet(pacemaker_lab, plain_lab):
    one, two = pacemaker_lab, plain_lab
    assert one.name != two.name
    assert not {one.subnet(l) for l in ("lan", "hb", "bmc")} & {two.subnet(l) for l in ("lan", "hb", "bmc")}
    assert not set(one.plan.interfaces) & set(two.plan.interfaces)
    assert one.cgroup("node1") != two.cgroup("node1")


# -- power -------------------------------------------------------------------
def test_bmc_power_off_makes_the_node_vanish_and_power_on_boots_it(cluster):
    lab, node = cluster, "node2"
    addr = lab.addr(node)
    lab.start_responder(node, addr, 8080)
    cables = [lab.plan.veth(node, link) for link in ("lan", "hb", "bmc")]
    boots = lab.power_state(node)["boots"]
    idents = [proc_id(p.host_pid) for p in lab.processes(node)]
    assert "corosync" in {p.name for p in lab.processes(node)}
    with lab.watch_vip(addr, 8080) as watch:
        watch.wait_for(node, timeout=5)
        off_at = time.monotonic()
        lab.power(node, "off")
        off_done = time.monotonic()
        lab.wait_gone(node, timeout=5)
        watch.wait_for("error", timeout=5, after=off_at)
        time.sleep(0.3)
    assert lab.power(node, "status") == "off"
    assert lab.processes(node) == [] and not any(alive(i) for i in idents)
    assert not any(Path("/sys/class/net", c).exists() for c in cables)
    assert not lab.ping("client", addr, timeout=NO_ANSWER)
    assert not any(s.answer == node for s in watch.since(off_done))
    assert [e.command for e in lab.power_log(node) if e.is_set][-1] == "set power 0"

    lab.power(node, "on", wait=True)
    assert lab.power(node, "status") == "on" and lab.power_state(node)["boots"] == boots + 1
    assert lab.ping("client", addr)
    lab.wait_online(timeout=60)


def test_power_off_kills_a_frozen_node_too(plain):
    lab = plain
    lab.freeze("node1")
    lab.power("node1", "off", wait=True)
    assert lab.processes("node1") == [] and not lab.frozen("node1")
    lab.power("node1", "on", wait=True)


# -- faults ------------------------------------------------------------------
def test_freeze_stops_a_node_without_killing_it_and_thaw_resumes_it(plain):
    lab, node = plain, "node1"
    addr = lab.addr(node)
    lab.start_responder(node, addr, 8080)
    before = [(p.pid, p.host_pid) for p in lab.processes(node)]
    with lab.watch_vip(addr, 8080, timeout=0.15) as watch:
        watch.wait_for(node, timeout=5)
        lab.freeze(node)
        frozen_at = time.monotonic()
        assert lab.frozen(node)
        assert watch.wait_for("error", timeout=5, after=frozen_at).error == "timeout"
        assert [(p.pid, p.host_pid) for p in lab.processes(node)] == before
        with pytest.raises(NodeFrozen):
            lab.exec(node, ["true"])
        lab.thaw(node)
        watch.wait_for(node, timeout=5, after=time.monotonic())
    assert not lab.frozen(node)
    assert [(p.pid, p.host_pid) for p in lab.processes(node)] == before


@pytest.mark.parametrize("link", ["lan", "hb"])
def test_a_cut_link_isolates_the_node_on_that_link_only(plain, link):
    lab = plain
    other = "hb" if link == "lan" else "lan"
    lab.cut_link("node1", link)
    assert not lab.ping("node2", lab.addr("node1", link), timeout=NO_ANSWER)
    assert lab.ping("node2", lab.addr("node1", other))
    assert lab.ping("node2", lab.addr("node1", "bmc"))
    assert lab.ping("client", lab.addr("node1", "lan")) == (link != "lan")
    lab.heal_link("node1", link)
    assert lab.ping("node2", lab.addr("node1", link))


def test_cutting_all_links_isolates_the_node_even_across_a_reboot(plain):
    lab = plain
    lab.cut_link("node1", "all")
    assert lab.cut_links("node1") == {"lan", "hb", "bmc"}
    for link in ("lan", "hb", "bmc"):
        assert not lab.ping("node2", lab.addr("node1", link), timeout=NO_ANSWER)
    assert not lab.ping("node1", lab.bmc("node1").address, timeout=NO_ANSWER)
    lab.power("node1", "reset", wait=True)
    assert not lab.ping("client", lab.addr("node1", "lan"), timeout=NO_ANSWER)
    lab.heal_link("node1", "all")
    for link in ("lan", "hb", "bmc"):
        assert lab.ping("node2", lab.addr("node1", link))


def test_crash_kills_the_tree_but_the_bmc_still_says_on(plain):
    lab = plain
    cables = [lab.plan.veth("node2", link) for link in ("lan", "hb", "bmc")]
    lab.crash("node2")
    assert lab.processes("node2") == [] and not lab.running("node2")
    assert not any(Path("/sys/class/net", c).exists() for c in cables)
    assert lab.power("node2", "status") == "on"
    lab.power("node2", "reset", wait=True)
    assert lab.ping("node1", lab.addr("node2", "hb"))


def test_kill_one_process_inside_a_node(plain):
    lab = plain
    lab.spawn("node2", ["sleep", "1000"])
    deadline = time.monotonic() + 5
    while "sleep" not in {p.name for p in lab.processes("node2")}:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim = lab.kill_process("node2", "sleep")
    assert victim.pid != victim.host_pid
    deadline = time.monotonic() + 5
    while any(p.pid == victim.pid for p in lab.processes("node2")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert lab.running("node2")


def test_restore_stops_background_processes_but_never_a_restarted_service(plain):
    """A daemon started again as systemd would (campaign: pacemakerd, hamon) is the node's
    own: the campaign's soak lost a cluster when restore() killed a restarted pacemakerd
    with the test's background processes and then waited for quorum forever."""
    lab = plain
    background = lab.spawn("node2", ["sleep", "1001"], name="background")
    service = lab.spawn("node2", ["sleep", "1002"], name="service", service=True)
    assert background.running and service.running
    lab.stop_background()
    assert not background.running
    assert service.running and any(p.cmdline.split()[-1:] == ["1002"] for p in lab.processes("node2"))
    lab.restore()
    assert service.running
    service.stop()
    assert not service.running


def test_an_unreachable_bmc_times_out_and_comes_back(plain):
    lab = plain
    bmc = lab.bmc("node1")
    lab.bmc_unreachable("node1")
    with pytest.raises(BmcError):
        lab.power("node1", "status")
    from_peer = lab.exec("node2", bmc.ipmitool_argv("chassis", "power", "status", timeout_s=1),
                         check=False)
    assert from_peer.returncode != 0
    lab.bmc_reachable("node1")
    assert lab.power("node1", "status") == "on"
    from_peer = lab.exec("node2", bmc.ipmitool_argv("chassis", "power", "status"))
    assert "Chassis Power is on" in from_peer.stdout


def test_the_shared_disk_is_one_ext4_device_seen_by_both_nodes(plain):
    lab = plain
    disk = lab.shared_disk
    assert disk.fstype == "ext4" and disk.device_for("node1") == disk.device_for("node2")
    lab.exec("node1", ["sh", "-c", f"mkdir -p /mnt/shared && mount {disk.device} /mnt/shared "
                                   "&& hostname > /mnt/shared/writer && umount /mnt/shared"])
    out = lab.exec("node2", ["sh", "-c", f"mkdir -p /mnt/shared && mount -o ro {disk.device} /mnt/shared "
                                         "&& cat /mnt/shared/writer; umount /mnt/shared"]).stdout
    assert out.strip() == "node1"
    assert "ext4" in lab.exec("node2", ["blkid", "-o", "value", "-s", "TYPE", disk.device]).stdout


def test_boot_services_start_on_every_boot_unlike_spawned_processes(new_lab):
    services = [{"name": "hello", "argv": Lab.responder_argv("0.0.0.0", 7000)}]
    with new_lab(stack="none", boot_delay=0, services=services) as lab:
        with lab.watch_vip(lab.addr("node2"), 7000) as watch:
            watch.wait_for("node2", timeout=5)
            lab.spawn("node2", Lab.responder_argv("0.0.0.0", 7001))
            lab.power("node2", "reset", wait=True)
            watch.wait_for("node2", timeout=5, after=time.monotonic())
        assert "listening 0.0.0.0:7000" in lab.logs("node2")["hapack/hello.log"].read_text()
        names = [p.cmdline for p in lab.processes("node2")]
        assert any("7000" in c for c in names) and not any("7001" in c for c in names)


# -- teardown ----------------------------------------------------------------
def snapshot(lab: Lab) -> dict:
    """Everything of ``lab`` that down must remove."""
    netns = set()
    for node in lab.nodes:
        init = lab.power_state(node).get("init")
        if alive(init):
            netns.add(os.readlink(f"/proc/{init[0]}/ns/net"))
    holder = lab.state["client"]["holder"]
    netns.add(os.readlink(f"/proc/{holder[0]}/ns/net"))
    pids = [tuple(i) for i in lab.state["ipmi_sim"].values()] + [tuple(holder), tuple(lab.state["reaper"])]
    for node in lab.nodes:
        pids += [proc_id(p.host_pid) for p in lab.processes(node)]
        power = lab.power_state(node)
        pids += [tuple(power[k]) for k in ("unshare", "init") if power.get(k)]
    return {"name": lab.name, "dir": lab.dir, "prefix": lab.plan.prefix, "netns": netns,
            "pids": [p for p in pids if p], "image": str(lab.shared_disk.image),
            "device": lab.shared_disk.device, "cgroup": lab.plan.cgroup("node1").rsplit("-", 1)[0]}


def assert_nothing_left(snap: dict) -> None:
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    assert not [l for l in links.splitlines() if l.startswith(snap["prefix"] + "-")], "links left"
    left_netns = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                left_netns.add(os.readlink(f"/proc/{entry}/ns/net"))
            except OSError:
                continue
    assert not snap["netns"] & left_netns, "network namespaces left"
    assert not [p for p in snap["pids"] if alive(p)], "processes left"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(snap["dir"]) not in mounts and snap["device"] not in mounts, "mounts left"
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    assert snap["image"] not in loops, "loop device left"
    for controller in os.listdir("/sys/fs/cgroup"):
        path = Path("/sys/fs/cgroup", controller)
        if path.is_dir() and not path.is_symlink():
            assert not [g for g in os.listdir(path) if g.startswith(snap["cgroup"])], f"cgroup left in {controller}"
    assert not Path(snap["dir"]).exists(), "lab dir left"
    assert snap["name"] not in Lab.names()


def test_down_leaves_nothing_behind_even_from_a_messy_lab(new_lab):
    with new_lab(stack="none", boot_delay=0) as lab:
        lab.start_responder("node1", lab.addr("node1"), 8080)
        lab.watch_vip(lab.addr("node1"), 8080).start().wait_for("node1", timeout=5)
        disk = lab.shared_disk.device
        lab.spawn("node1", ["sh", "-c", f"mkdir -p /mnt/d && mount {disk} /mnt/d && exec sleep 1000"])
        deadline = time.monotonic() + 5
        while not any(m.source == disk for m in lab.mounts("node1")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        lab.cut_link("node1", "hb")
        lab.bmc_unreachable("node2")
        lab.freeze("node2")
        snap = snapshot(lab)
        lab.down()
        assert_nothing_left(snap)
        lab.down()  # a second down is harmless
    assert_nothing_left(snap)


def test_a_lab_left_by_a_killed_run_is_found_and_removed(lab_reaper, tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from hapack.lab import Lab
        lab = Lab(stack="none", boot_delay=0).up()
        print(lab.name, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip()
        assert name, "the child did not bring its lab up"
        snap = snapshot(Lab.attach(name))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert name in Lab.names()
    assert name in Lab.reap_stale()
    assert_nothing_left(snap)


def test_cli_up_status_exec_power_down(lab_reaper, capfd):
    name = "cli" + os.urandom(1).hex()
    try:
        assert cli.main(["up", "--stack", "none", "--name", name, "--boot-delay", "0"]) == 0
        assert f"lab {name} (none) up" in capfd.readouterr().out
        snap = snapshot(Lab.attach(name))
        assert cli.main(["status", "--name", name]) == 0
        assert "node1: power on, stage up" in capfd.readouterr().out
        assert cli.main(["exec", "--name", name, "node2", "--", "hostname"]) == 0
        assert capfd.readouterr().out.strip() == "node2"
        assert cli.main(["exec", "--name", name, "node2", "--", "false"]) == 1
        assert cli.main(["power", "--name", name, "node1", "off", "--wait"]) == 0
        assert cli.main(["power", "--name", name, "node1", "status"]) == 0
        assert capfd.readouterr().out.splitlines()[-1] == "off"
        assert cli.main(["exec", "--name", name, "node1", "--", "true"]) == 1
        assert "not running" in capfd.readouterr().err
        assert cli.main(["power", "--name", name, "node1", "on", "--wait"]) == 0
        assert cli.main(["down", "--name", name]) == 0
        assert_nothing_left(snap)
        assert cli.main(["down", "--name", name]) == 1  # already gone: reported, not a crash
    finally:
        if name in Lab.names():
            Lab.attach(name).down()
