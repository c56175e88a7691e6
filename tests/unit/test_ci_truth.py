"""Under CI a skip fails unless allow-listed, and every run prints its tier counts."""

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ci_truth

TESTS = Path(__file__).resolve().parent.parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import ci_truth

def pytest_configure(config):
    config.pluginmanager.register(ci_truth.CiTruth(config), "hapack-ci-truth")
"""

SAMPLE = """
import pytest

def test_runs():
    assert True

def test_cannot_run_here():
    pytest.skip("frobnicator is not installed")

@pytest.fixture
def frob():
    pytest.skip("no frobnicator for the fixture")

def test_needs_a_fixture_that_skips(frob):
    pass
"""


def nested(tmp_path, ci, allowlist=None):
    unit = tmp_path / "tests" / "unit"
    unit.mkdir(parents=True, exist_ok=True)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (unit / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HAPACK_SKIP_ALLOWLIST")}
    if ci is not None:
        env["CI"] = ci
    if allowlist is not None:
        (tmp_path / "allow.txt").write_text(allowlist)
        env["HAPACK_SKIP_ALLOWLIST"] = str(tmp_path / "allow.txt")
    return subprocess.run([sys.executable, "-P", "-m", "pytest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(unit)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("ci", [None, "", "false", "0", "no"])
def test_outside_ci_a_skip_is_a_skip(tmp_path, ci):
    proc = nested(tmp_path, ci)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout


@pytest.mark.parametrize("ci", ["true", "1", "yes", "TRUE"])
def test_under_ci_a_skip_fails_with_its_reason(tmp_path, ci):
    proc = nested(tmp_path, ci)
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 passed, 1 error" in proc.stdout
    assert "not on the skip allow-list (skip-allowlist.txt): frobnicator is not installed" \
        in proc.stdout
    assert "no frobnicator for the fixture" in proc.stdout


def test_an_allow_listed_skip_stays_a_skip_under_ci(tmp_path):
    allow = ("# comment\n"
             "*/test_sample.py::test_cannot_run_here   # the frobnicator is not packaged\n"
             "*::test_needs_a_fixture_that_skips  # neither is its fixture\n")
    proc = nested(tmp_path, "true", allow)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 2 skipped" in proc.stdout


def test_an_allow_list_line_without_a_reason_is_refused(tmp_path):
    proc = nested(tmp_path, "true", "*::test_cannot_run_here\n")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "has no reason" in proc.stdout + proc.stderr


def test_every_run_prints_its_tier_counts(tmp_path):
    proc = nested(tmp_path, None)
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.strip().startswith("unit "))
    assert row.split() == ["unit", "1", "passed", "0", "failed", "0", "error", "2", "skipped"]
    assert any(line.split()[:2] == ["vm", "0"] for line in lines if line.strip())


@pytest.mark.parametrize("nodeid, tier", [
    ("tests/unit/test_x.py::test_y", "unit"),
    ("tests/vm/test_agent.py::test_z[a/b]", "vm"),
    ("tests/cluster/sub/test_q.py::TestK::test_q", "cluster"),
    ("unit/test_x.py::test_y", "unit"),
    ("test_x.py::test_y", "other"),
])
def test_tier_of(nodeid, tier):
    assert ci_truth.tier_of(nodeid) == tier


def test_a_tier_without_a_passing_test_is_missing():
    truth = ci_truth.CiTruth.__new__(ci_truth.CiTruth)
    truth.counts = collections.defaultdict(collections.Counter,
                                           {t: collections.Counter(passed=1)
                                            for t in ci_truth.TIERS})
    assert truth.missing_tiers() == []
    truth.counts["vm"] = collections.Counter(skipped=3)
    assert truth.missing_tiers() == ["vm"]
