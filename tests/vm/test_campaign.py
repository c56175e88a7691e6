"""A fault campaign on real DRBD under hamon: both guests run hamon, the partition agent
(backend drbd), a writer layer with fsync'd records, and fence_bmc against the guests' BMCs.

A seeded sequence of faults (:data:`KINDS`, each twice) hits the pair one after
the other, with no reset in between: power cut of the primary, its crash
(kernel panic, power left on: hamon fences it), the link between the guests cut
(heartbeat and replication share it: a split; the holder fences the other) and
healed, the secondary's power cut and its return with a resync, and the
primary's power cut while the returning secondary is still the resync's target.
After each fault the host powers on whatever is off, waits until the pair has
converged (one hamon primary with DRBD Primary, the other secondary, Connected,
UpToDate on both, the writer acknowledging again) and checks:

* every record acknowledged after its fsync is on the partition, records in order;
* DRBD reported no split brain (its kernel log, the split-brain handler's marker);
* no promotion of a disk that was not UpToDate (the guests' DRBD samples);
* never two Primaries (both guests sampled every 0.1 s throughout).
"""

from __future__ import annotations

import random
import shutil
import time

import pytest

from hapack.lab import vm

from .conftest import BOOT_TIMEOUT
from .hamonvm import MOUNT, RECORDS, HamonVm, PrimarySampler

SEED = 16
KINDS = ("power_primary", "crash_primary", "link_cut", "secondary_return", "during_resync")
CONVERGE = 420.0
MARKER = f"/var/lib/hapack/partition/{vm.RESOURCE}.split-brain"
BALLAST = f"{MOUNT}/ballast"


def sequence(seed: int, rounds: int = 2) -> list[str]:
    kinds = list(KINDS) * rounds
    random.Random(seed).shuffle(kinds)
    return kinds


class Campaign:
    def __init__(self, rig: HamonVm, rng: random.Random):
        self.rig, self.pair, self.rng = rig, rig.pair, rng
        self.rows: list[dict] = []
        self.offs: dict[str, int] = {}

    # -- the pair's roles ---------------------------------------------------------------

    def roles(self):
        """(primary, secondary) Guests once converged, else None."""
        rig = self.rig
        states = {g: (rig.hamon_state(g), rig.drbd_now(g)) for g in self.pair.guests.values()}
        primary = [g for g, (h, d) in states.items() if h == "primary" and d and d[0] == "Primary"]
        secondary = [g for g, (h, d) in states.items()
                     if h == "secondary" and d and d[0] == "Secondary"]
        if len(primary) != 1 or len(secondary) != 1:
            return None
        d = states[primary[0]][1]
        if d[2] != "Connected" or d[3] != "UpToDate" or d[4] != "UpToDate":
            return None
        return primary[0], secondary[0]

    def wait_converged(self, timeout: float = CONVERGE):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = self.roles()
            if roles and self.writing():
                return roles
            time.sleep(0.5)
        raise AssertionError(f"not converged within {timeout}s: " + self.describe())

    def writing(self, within: float = 3.0) -> bool:
        before = len(self.rig.acks())
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if len(self.rig.acks()) > before:
                return True
            time.sleep(0.2)
        return False

    def describe(self) -> str:
        return "; ".join(f"{g.name}: running={g.running()} hamon={self.rig.hamon_state(g)!r} "
                         f"drbd={self.rig.drbd_now(g)}" for g in self.pair.guests.values())

    def confirmed_offs(self, guest) -> int:
        """How often the other guest's hamon has recorded ``guest``'s power off (after its
        BMC's "off" or its own fence: "<guest> confirmed off")."""
        other = self.other(guest)
        return sum(f"{guest.name} confirmed off" in (e.get("message") or "")
                   for e in self.rig.events(other))

    def other(self, guest):
        return next(g for g in self.pair.guests.values() if g is not guest)

    def mark_off(self, *guests) -> None:
        """Before a fault that may power ``guests`` off: what their peer has confirmed so far."""
        for guest in guests:
            self.offs[guest.name] = self.confirmed_offs(guest)

    def power_on(self, guest) -> None:
        """Power ``guest`` on as an operator does: only once its peer has settled its loss
        (confirmed its power off, by its BMC's word or its own fence). Earlier, a fence
        still on its way (a slow fence_bmc in a TCG guest) would kill the booting node."""
        other, before = self.other(guest), self.offs.pop(guest.name, None)
        if before is not None and other.running():
            self.wait_for(lambda: self.confirmed_offs(guest) > before, 300,
                          f"{other.name} to confirm {guest.name} off")
        guest.power_on(timeout=BOOT_TIMEOUT)
        self.rig.start(guest)

    # -- the faults: each returns what happened, once the cluster was left to act --------

    def power_primary(self, primary, secondary) -> str:
        self.mark_off(primary)
        primary.power_off()
        self.wait_for(lambda: self.rig.hamon_state(secondary) == "primary", 300, "takeover")
        self.power_on(primary)
        return f"{secondary.name} took over"

    def crash_primary(self, primary, secondary) -> str:
        # panic=0: the panicked kernel hangs with the power on (the guests boot with
        # panic=-1, which ends QEMU under -no-reboot: a power loss, not a crash)
        self.mark_off(primary)
        primary.run("echo 0 > /proc/sys/kernel/panic; "
                    "(sleep 0.5; echo c > /proc/sysrq-trigger) </dev/null >/dev/null 2>&1 &",
                    timeout=10)
        primary.wait_off(timeout=300)  # fenced by the peer's hamon through the BMC
        self.wait_for(lambda: self.rig.hamon_state(secondary) == "primary", 300, "takeover")
        self.power_on(primary)
        return f"{primary.name} fenced, {secondary.name} took over"

    def link_cut(self, primary, secondary) -> str:
        self.mark_off(primary, secondary)
        self.pair.cut_link()
        try:
            self.wait_for(lambda: not primary.running() or not secondary.running(), 300,
                          "a node fenced")
            time.sleep(self.rng.uniform(0, 3))
        finally:
            self.pair.heal_link()
        fenced = [g for g in (primary, secondary) if not g.running()]
        for guest in fenced:
            self.power_on(guest)
        return "fenced: " + ",".join(g.name for g in fenced)

    def secondary_return(self, primary, secondary) -> str:
        self.mark_off(secondary)
        secondary.power_off()
        time.sleep(self.rng.uniform(2, 6))  # the primary writes on alone
        self.power_on(secondary)
        self.wait_for(lambda: self.synced_after_return(secondary), 300, "resync")
        return f"{secondary.name} resynced"

    def during_resync(self, primary, secondary) -> str:
        self.mark_off(secondary)
        secondary.power_off()
        primary.sh(f"dd if=/dev/zero of={BALLAST} bs=1M count=24 conv=notrunc,fsync 2>&1",
                   timeout=120)
        self.power_on(secondary)
        # after the boot: hamon's probe and the partition's start (30-60 s under load)
        self.wait_for(lambda: (self.rig.drbd_now(secondary) or [""] * 5)[2] == "SyncTarget",
                      300, "resync started")
        self.mark_off(primary)
        primary.power_off()
        time.sleep(60 + self.rng.uniform(0, 10))  # the Inconsistent secondary alone
        alone = self.rig.drbd_now(secondary)
        self.power_on(primary)
        return f"{secondary.name} alone: {' '.join(alone or ['?'])}"

    def synced_after_return(self, guest) -> bool:
        now = self.rig.drbd_now(guest)
        return bool(now and now[2] == "Connected" and now[3] == "UpToDate")

    @staticmethod
    def wait_for(predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s")
            time.sleep(0.2)

    # -- the invariants ---------------------------------------------------------------

    def check(self, primary, secondary, sampler: PrimarySampler) -> dict:
        acked = self.rig.acks()
        count = int(primary.sh(
            f"awk '$1 + 0 != NR - 1 {{ print \"BAD\", NR, $0; exit 1 }} END {{ print NR }}' "
            f"{RECORDS}").split()[-1])
        assert not acked or max(acked) < count, f"acknowledged {max(acked)}, on disk {count}"
        for guest in (primary, secondary):
            split = guest.run(f"test -e {MARKER} || dmesg | grep -q 'Split-Brain detected'")
            assert not split.ok, f"{guest.name}: DRBD reported a split brain"
            bad = bad_promotions(self.rig.drbd_log(guest))
            assert not bad, f"{guest.name} promoted a disk that was not UpToDate: {bad}"
        assert not sampler.doubles, f"two Primaries sampled: {sampler.doubles[:3]}"
        return {"acked": len(set(acked)), "records": count}


def bad_promotions(log: list[list[str]]) -> list:
    """Samples (time boot role peer cstate disk pdisk) where a guest became Primary with a
    disk other than UpToDate, or had been sampled so just before."""
    bad = []
    for before, after in zip(log, log[1:]):
        if before[1] == after[1] and before[2] != "Primary" and after[2] == "Primary":
            if not before[5] == after[5] == "UpToDate":
                bad.append((before, after))
    return bad


def keep_logs(pair) -> None:
    """The guests' hamon logs, events and DRBD samples, to $HAPACK_VM_RUN/campaign-logs."""
    out = vm.run_root() / "campaign-logs"
    shutil.rmtree(out, ignore_errors=True)
    for guest in pair.guests.values():
        (out / guest.name).mkdir(parents=True)
        for name in ("hamon.log", "hamon-events.jsonl", "drbd.log", "acks"):
            if (guest.job / name).exists():
                shutil.copy(guest.job / name, out / guest.name / name)


@pytest.fixture
def hamon_pair(replica):
    rig = HamonVm(replica.pair).setup()
    pair = replica.pair
    try:
        for guest in pair.guests.values():
            rig.start(guest)
        yield rig
    finally:
        keep_logs(pair)
        pair.heal_link()
        for guest in pair.guests.values():
            if not guest.running():
                guest.power_on()
            else:
                rig.stop(guest)
        rig.set_drbd_conf(pair.drbd_conf)
        for guest in pair.guests.values():
            guest.sh(f"umount {MOUNT} 2>/dev/null; drbdadm down {vm.RESOURCE}; true")


def test_a_seeded_fault_campaign_under_hamon_loses_nothing_and_never_promotes_a_stale_disk(
        hamon_pair):
    rig = hamon_pair
    campaign = Campaign(rig, random.Random(SEED))
    with PrimarySampler(rig) as sampler:
        primary, secondary = campaign.wait_converged()
        for number, kind in enumerate(sequence(SEED), 1):
            started = time.monotonic()
            outcome = getattr(campaign, kind)(primary, secondary)
            primary, secondary = campaign.wait_converged()
            row = {"n": number, "fault": kind, "outcome": outcome,
                   "converged_s": round(time.monotonic() - started, 1), "primary": primary.name,
                   **campaign.check(primary, secondary, sampler)}
            campaign.rows.append(row)
            print("campaign", row, flush=True)
    assert sampler.samples > 100
