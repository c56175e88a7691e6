"""``hapack demo --json`` end to end: a lab, the stack, a power cut, the row check, teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hapack.lab import Lab, missing_prerequisites


def test_demo_json_end_to_end(lab_reaper):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    problems = missing_prerequisites("pacemaker")
    if problems:
        pytest.skip("the lab cannot run here: " + "; ".join(problems))
    name = f"d{os.getpid() % 100000}"
    result = subprocess.run([sys.executable, "-m", "hapack.cli", "demo", "--json", "--name", name],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["never_mounted_twice"] is True
    assert report["rows"]["missing"] == []
    assert report["rows"]["before_cut"] >= 20
    assert report["rows"]["acknowledged"] > report["rows"]["before_cut"]  # rows after the cut too
    steps = {s["step"]: s["seconds"] for s in report["timeline"]["steps"]}
    for step in ("power cut", "peer declared lost", "fence confirmed", "partition mounted",
                 "postgresql healthy", "slapd healthy", "activemq healthy",
                 "full chain on the VIP"):
        assert steps.get(step) is not None, f"{step} missing from {steps}"
    assert steps["power cut"] == 0
    assert steps["peer declared lost"] < steps["fence confirmed"] < steps["partition mounted"]
    assert report["timeline"]["total_s"] == steps["full chain on the VIP"]
    assert report["survivor"] != report["active"]
    assert f"Started {report['survivor']}" in report["state_after"]
    # progress went to stderr, the lab is gone
    assert "cutting" in result.stderr and "tearing the lab down" in result.stderr
    assert name not in Lab.names()
