"""A CI-sized fault campaign per manager: 12 faults in a row on the demo's full stack.

``hapack lab campaign`` in-process (``hapack.lab.campaign.Campaign``), fixed seeds
chosen so that the 12 faults include a power cut, a crash, a split, a fault during
recovery, a long freeze, a layer killed repeatedly, the cluster daemon killed on
the active node and a crash with the BMC out (``faults.schedule(seed, 12)``). The
invariants are checked the whole time; the run must end with no violation, no
acknowledged row lost, every fault converged within its bound, and the samplers
must have seen something (a witness that saw nothing proves nothing).
"""

from __future__ import annotations

import os
import time

import pytest

from hapack.lab import campaign, faults

SEEDS = {"pacemaker": 4, "hamon": 22}
FAULTS = 12
MUST_SEE = {"power-cut-active", "crash-active", "split", "double", "freeze-long",
            "layer-kill-repeated", "daemon-kill-active", "bmc-out-crash"}


def need_stack(manager: str) -> None:
    from hapack.lab import missing_prerequisites
    if os.geteuid() != 0:
        pytest.skip("needs root")
    problems = missing_prerequisites("pacemaker" if manager == "pacemaker" else "none")
    if problems:
        pytest.skip("the lab cannot run here: " + "; ".join(problems))
    from hapack.demo import missing_agents
    missing = missing_agents()
    assert not missing, f"run 'hapack install' first (./run tests does): missing {missing}"


@pytest.mark.parametrize("manager", sorted(SEEDS))
def test_a_campaign_of_twelve_faults_keeps_every_invariant(manager, lab_reaper):
    need_stack(manager)
    seed = SEEDS[manager]
    assert MUST_SEE <= {f.kind for f in faults.schedule(seed, FAULTS)}
    lines: list[str] = []
    run = campaign.Campaign(manager, FAULTS, seed, say=lines.append)
    report = None
    try:
        report = run.run()
    finally:
        dest = os.environ.get("HAPACK_LAB_LOGS")
        if dest and run.lab is not None and run.lab.state:
            run.lab.collect_logs(os.path.join(dest, f"campaign-{manager}-{int(time.time())}"))
        if run.lab is not None:
            run.lab.down()
        print("\n".join(lines))
    shown = "\n".join(lines) + "\n" + campaign.render(report)
    assert report["faults_run"] == FAULTS, shown
    assert report["violations"] == [], shown
    assert report["rows"]["lost"] == [], shown
    assert all(o["converged_s"] is not None for o in report["outcomes"]), shown
    assert report["rows"]["acknowledged"] > 20 * FAULTS, shown
    assert report["mount_samples"] > 100 and report["arp_replies"] > 100, shown
    assert sum(r["count"] for r in report["table"]) == FAULTS
    assert report["ok"], shown
