"""The VM tier's own machinery without booting anything: kernel lookup, configs, the skip path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hapack.lab import bmc, vm, vmkernel, vmnode
from hapack.lab.state import proc_id

HERE = Path(__file__).resolve().parent

DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
"""


def test_the_abi_comes_from_the_meta_package():
    assert vmkernel.parse_abi(DEPENDS) == "6.1.0-56-amd64"
    with pytest.raises(vmkernel.KernelUnavailable, match="names no kernel image"):
        vmkernel.parse_abi("linux-image-amd64\n")


def test_cached_abis_sort_by_number():
    abis = ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-10-amd64"]
    assert sorted(abis, key=vmkernel.abi_sort_key)[-1] == "6.1.0-56-amd64"


def test_only_a_static_busybox_goes_into_the_initramfs(tmp_path):
    assert vmkernel.is_static(Path("/sbin/ldconfig"))  # static on Debian
    assert not vmkernel.is_static(Path("/bin/sh"))
    assert not vmkernel.is_static(tmp_path / "missing")


def test_no_kernel_and_no_fetching_says_why(tmp_path):
    with pytest.raises(vmkernel.KernelUnavailable,
                       match=r"no guest kernel in .* fetching is disabled \(HAPACK_VM_FETCH=0\)"):
        vmkernel.prepare(cache=tmp_path, fetch=False)


def test_the_guests_drbd_conf_carries_the_recommended_settings():
    conf = vm.drbd_conf()
    for option in ("protocol C;", "ping-int 1;", "ping-timeout 5;", "connect-int 1;",
                   "after-sb-0pri discard-zero-changes;", "after-sb-1pri consensus;",
                   "after-sb-2pri disconnect;", "on-io-error detach;"):
        assert option in conf
    assert f'split-brain "{sys.executable} -I -m hapack.ocf.partition_handler split-brain"' in conf
    assert "on vma { address 198.18.0.1:7789; }" in conf
    assert conf.count("{") == conf.count("}")


def test_a_vm_bmc_switches_power_through_its_startcmd():
    creds = bmc.Bmc(node="vma", address="127.0.0.1", port=16001, username="admin",
                    password="secret", password_file="/nonexistent")
    conf = bmc.render_lan_conf(creds, "hapack-vm-vma", "0" * 32, None,
                               vmnode.vm_power(16002, Path("/w/vma/power-on.sh")))
    assert "  serial 15 127.0.0.1 16002 codec VM\n" in conf
    assert '  startcmd "/w/vma/power-on.sh"\n' in conf
    assert "startnow false" in conf and "chassis_control" not in conf
    assert "    addr 127.0.0.1 16001\n" in conf


def run_tier_without_a_kernel(tmp_path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(HAPACK_VM_CACHE=str(tmp_path), HAPACK_VM_FETCH="0", **({"CI": ci} if ci else {}))
    return subprocess.run([sys.executable, "-P", "-m", "pytest", "-p", "no:cacheprovider", "-rs",
                           str(HERE / "test_agent.py"), str(HERE / "test_failover.py")],
                          env=env, capture_output=True, text=True, timeout=120,
                          cwd=HERE.parent.parent)


REASON = "the VM tier has no guest kernel: no guest kernel in {} and fetching is disabled " \
         "(HAPACK_VM_FETCH=0)"


def test_the_tier_skips_with_the_reason_when_no_kernel_can_be_had(tmp_path):
    """An empty cache and fetching disabled: outside CI every VM test skips, saying why."""
    proc = run_tier_without_a_kernel(tmp_path, None)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "3 skipped" in proc.stdout
    assert REASON.format(tmp_path) in proc.stdout
    assert not list(tmp_path.iterdir())  # nothing fetched, nothing built


def test_under_ci_a_tier_that_cannot_run_fails(tmp_path):
    """The same run under CI: the skips are errors, with the same reason."""
    proc = run_tier_without_a_kernel(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "3 errors" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]
    assert REASON.format(tmp_path) in proc.stdout


def need_vm_binaries():
    problems = vm.missing_prerequisites()
    if problems:
        pytest.skip("the VM tier cannot run here: " + "; ".join(problems))


def test_a_pair_that_cannot_boot_leaves_nothing_behind(tmp_path):
    need_vm_binaries()
    (tmp_path / "vmlinuz").write_bytes(b"not a kernel")
    (tmp_path / "initrd.gz").write_bytes(b"")
    kernel = vmkernel.Kernel("bogus", tmp_path / "vmlinuz", tmp_path / "initrd.gz")
    pair = vm.VmPair(kernel, root=tmp_path / "run")
    with pytest.raises(vm.GuestDown, match="is powered off"):
        pair.start(timeout=60)
    assert not pair.dir.exists()
    for guest in pair.guests.values():
        assert guest.bmc_proc.poll() is not None  # the BMC was ended and reaped
    assert list((tmp_path / "run").glob("pair-*")) == []


def test_sweep_ends_what_a_dead_owner_left(tmp_path):
    need_vm_binaries()
    folder = tmp_path / "pair-x"
    (folder / "vma").mkdir(parents=True)
    orphan = subprocess.Popen(["sleep", "600"])  # stands for a BMC its owner left running
    try:
        no_such_process = [1 << 22, 1]  # above any pid_max
        state = {"owner": no_such_process, "bmcs": [list(proc_id(orphan.pid))]}
        (folder / "pair.json").write_text(json.dumps(state))
        live = tmp_path / "pair-live"
        live.mkdir()
        (live / "pair.json").write_text(json.dumps({"owner": list(proc_id(os.getpid()))}))
        assert vm.sweep(tmp_path) == [folder]
        assert orphan.wait(10) == -9
        assert not folder.exists() and live.exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_each_guest_reaches_the_bmcs_only_through_its_own_user_network(tmp_path):
    """eth1: QEMU user networking whose host address is the host's loopback (where the
    BMCs listen); the guest gets an address there and no default route."""
    pair = type("Pair", (), {"dir": tmp_path, "share": tmp_path / "share",
                             "serial_ports": {"vma": 1}})()
    kernel = vmkernel.Kernel("6.1.0-1-amd64", tmp_path / "vmlinuz", tmp_path / "initrd")
    guest = vmnode.Guest(pair, "vma", 0)
    argv = guest.qemu_argv(kernel, 256)
    nets = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    user = [n for n in nets if n.startswith("user,")]
    assert len(nets) == 2 and len(user) == 1
    assert f"net={vmnode.BMC_NET}" in user[0] and f"host={vmnode.BMC_HOST}" in user[0]
    assert "ipv6=off" in user[0]
    for address in (vmnode.BMC_NET, vmnode.BMC_HOST, vmnode.BMC_GUEST):
        assert address.startswith("198.19.")  # inside 198.18.0.0/15
    script = (Path(vm.__file__).parent / "vm_run.sh").read_text()
    assert 'ip addr add "$HAPACK_BMC_ADDR" dev eth1' in script
    assert "default" not in script and "dhcp" not in script
    guest.bmc = bmc.Bmc(node="vma", address="127.0.0.1", port=4242, username="admin",
                        password="x", password_file="/p")
    seen = guest.guest_bmc()
    assert (seen.address, seen.port) == (vmnode.BMC_HOST, 4242)
    assert guest.bmc.address == "127.0.0.1"
