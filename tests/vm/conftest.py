"""VM tier fixtures: one booted VM pair per session, a fresh DRBD replica per test.

The tier skips, with the reason, only when it cannot run here: a missing
binary (qemu-system-x86, ipmi_sim, drbd-utils, see .ci/packages.txt), not
root, or no guest kernel (not cached and the download failed, or fetching
disabled with HAPACK_VM_FETCH=0). A pair that fails to boot is an error.
"""

from __future__ import annotations

import pytest

from hapack.lab import vm, vmkernel

from .drbdvm import Replica

# Booting takes 12-17 s on an idle 2-core machine; under the load of parallel test runs
# (load average 15-20) the first boot took more than 120 s.
BOOT_TIMEOUT = 300.0
SHIM = """#!/bin/sh
# crm_attribute stand-in (no Pacemaker in the guests): record the call.
mkdir -p /run/hapack-test
echo "$OCF_RESOURCE_INSTANCE $*" >> /run/hapack-test/crm_attribute.log
"""


@pytest.fixture(scope="session")
def vm_kernel():
    problems = vm.missing_prerequisites()
    if problems:
        pytest.skip("the VM tier cannot run here: " + "; ".join(problems))
    try:
        return vmkernel.prepare()
    except vmkernel.KernelUnavailable as exc:
        pytest.skip(f"the VM tier has no guest kernel: {exc}")


@pytest.fixture(scope="session")
def vm_pair(vm_kernel):
    pair = vm.VmPair(vm_kernel)
    pair.start(timeout=BOOT_TIMEOUT)
    try:
        (pair.share / "bin").mkdir()
        shim = pair.share / "bin" / "crm_attribute"
        shim.write_text(SHIM)
        shim.chmod(0o755)
        yield pair
    finally:
        pair.close()


@pytest.fixture
def replica(vm_pair, request):
    """Both guests on, DRBD connected and UpToDate on both, an empty ext4, nothing promoted."""
    replica = Replica(vm_pair)
    replica.reset()
    yield replica
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for guest in vm_pair.guests.values():
            log = guest.run("dmesg | tail -40").output if guest.running() else \
                guest.console_tail(60)
            print(f"--- {guest.name}:\n{log}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
