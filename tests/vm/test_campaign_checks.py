"""The campaign's own parts, without a VM: the fault sequence, the promotion check, the
writer's resumption after a torn record (tests/vm/test_campaign.py runs them for real)."""

from __future__ import annotations

import random

from . import writer
from .test_campaign import KINDS, bad_promotions, sequence


def sample(t, role, disk, boot="b1"):
    return [str(t), boot, role, "Unknown", "WFConnection", disk, "DUnknown"]


def test_the_sequence_is_the_seeds_and_has_every_kind_twice():
    for seed in range(50):
        kinds = sequence(seed)
        assert kinds == sequence(seed)
        assert sorted(kinds) == sorted(KINDS * 2)
    assert len({tuple(sequence(seed)) for seed in range(50)}) > 40


def test_a_promotion_counts_only_from_an_uptodate_disk():
    for disk in ("Outdated", "Inconsistent", "Consistent", "Diskless", "DUnknown"):
        for after in (disk, "UpToDate"):
            log = [sample(1, "Secondary", disk), sample(2, "Primary", after)]
            assert bad_promotions(log), (disk, after)
    good = [sample(1, "Secondary", "UpToDate"), sample(2, "Primary", "UpToDate")]
    assert bad_promotions(good) == []
    # a reboot between two samples is no promotion; staying Primary is none either
    rebooted = [sample(1, "Secondary", "Outdated", "b1"), sample(2, "Primary", "UpToDate", "b2")]
    assert bad_promotions(rebooted) == []
    rng = random.Random(3)
    for _ in range(500):
        log = [sample(t, rng.choice(("Primary", "Secondary")),
                      rng.choice(("UpToDate", "Outdated", "Inconsistent")), rng.choice("ab"))
               for t in range(8)]
        expected = [(x, y) for x, y in zip(log, log[1:])
                    if x[1] == y[1] and x[2] == "Secondary" and y[2] == "Primary"
                    and not (x[5] == y[5] == "UpToDate")]
        assert bad_promotions(log) == expected


def test_the_writer_resumes_after_its_last_whole_record(tmp_path):
    data = tmp_path / "records"
    assert writer.resume(str(data)) == 0
    data.write_bytes(b"00000000 x\n00000001 x\n0000000")
    assert writer.resume(str(data)) == 2
    assert data.read_bytes() == b"00000000 x\n00000001 x\n"
    assert writer.resume(str(data)) == 2
