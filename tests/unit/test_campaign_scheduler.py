"""The campaign's fault scheduler: reproducible from the seed, prefix-stable (so
``--seed S --faults K`` replays a run's first K faults), covering the vocabulary,
parameters within their stated ranges."""

import random

import pytest

from hapack.lab import campaign, faults


_DRAW = random.Random(99)
SEEDS = [0, 1, 7, 42, 2**31 - 1] + [_DRAW.randrange(10**9) for _ in range(20)]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_same_seed_gives_the_same_faults(seed):
    assert faults.schedule(seed, 40) == faults.schedule(seed, 40)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_shorter_run_is_the_prefix_of_a_longer_one(seed):
    longest = faults.schedule(seed, 70)
    for k in (0, 1, 5, 12, 16, 17, 33, 69):
        assert faults.schedule(seed, k) == longest[:k]


def test_different_seeds_give_different_sequences():
    sequences = {tuple(f.kind for f in faults.schedule(seed, 16)) for seed in SEEDS}
    assert len(sequences) > len(SEEDS) // 2


@pytest.mark.parametrize("seed", SEEDS)
def test_every_round_covers_the_whole_vocabulary(seed):
    n = len(faults.KINDS)
    plan = faults.schedule(seed, 3 * n)
    for start in range(0, 3 * n, n):
        assert sorted(f.kind for f in plan[start:start + n]) == sorted(faults.KINDS)
    assert len({f.kind for f in faults.schedule(seed, 12)}) == 12


@pytest.mark.parametrize("seed", SEEDS)
def test_parameters_stay_in_their_ranges(seed):
    for f in faults.schedule(seed, 64):
        p = f.params
        assert 0.5 <= p["power_on_wait"] <= 4.0
        assert p.get("role", "active") in ("active", "standby")
        if f.kind == "freeze-short":
            assert 0.2 <= p["fraction"] <= 0.6        # always under the detection time
        if f.kind == "freeze-long":
            assert 2.5 <= p["seconds"] <= 6.0         # always past it (1 s) and past the token
        if f.kind in ("layer-kill", "layer-kill-repeated"):
            assert p["layer"] in faults.LAYERS
        if f.kind == "layer-kill-repeated":
            assert p["times"] == 3                    # the stack's migration_threshold
        if f.kind == "double":
            assert p["first"] in faults.FIRST and p["second"] in faults.SECOND
            assert 0.3 <= p["delay"] <= 3.0


def test_kinds_narrow_the_vocabulary_and_unknown_ones_are_refused():
    plan = faults.schedule(3, 10, ("crash-active", "switchover"))
    assert {f.kind for f in plan} == {"crash-active", "switchover"}
    with pytest.raises(ValueError, match="no-such"):
        faults.schedule(3, 4, ("crash-active", "no-such"))
    with pytest.raises(ValueError):
        faults.schedule(3, -1)


def test_every_kind_has_an_injector_and_a_bound():
    assert set(campaign.INJECT) == set(faults.KINDS) == set(campaign.BOUNDS)
    assert set(campaign.SECONDS) == set(faults.SECOND)


def test_the_vocabulary_has_what_the_issue_asks_for():
    required = {"power-cut-active", "power-cut-standby", "crash-active", "freeze-short",
                "freeze-long", "link-cut", "split", "bmc-out", "layer-kill",
                "layer-kill-repeated", "daemon-kill-active", "daemon-kill-standby",
                "switchover", "double"}
    assert required <= set(faults.KINDS)


def test_a_fault_describes_itself_for_the_replay_line():
    f = faults.Fault(2, "freeze-long", {"role": "active", "seconds": 3.14159})
    assert f.describe() == "#3 freeze-long (role=active, seconds=3.14)"
    assert faults.Fault(**f.as_json()) == f
