"""A pytest plugin that keeps the suite honest under CI (registered by conftest.py).

* Under ``CI`` (any value but empty, ``0``, ``false`` or ``no``) a skipped test is a
  failure, unless its node id matches a line of the allow-list
  (``tests/skip-allowlist.txt``, or ``$HAPACK_SKIP_ALLOWLIST``): a skip hides a missing
  install step as well as it hides a failure.
* Under ``CI``, a whole-suite run (no ``-m``, ``-k`` or paths) in which a tier has no
  passing test fails: every tier must really run.
* Every run ends with its counts per tier (from the folder: tests/<tier>/...).

The allow-list holds one ``fnmatch`` pattern of node ids per line, then ``#`` and the
reason, which is required::

    tests/integration/test_fence_redfish.py::*   # no Redfish emulator can be had here
"""

from __future__ import annotations

import collections
import fnmatch
import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "cluster", "vm")
ALLOWLIST = TESTS / "skip-allowlist.txt"
OUTCOMES = ("passed", "failed", "error", "skipped")


def strict() -> bool:
    """True under CI: skips fail, and every tier must run."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def parse_allowlist(text: str) -> list[tuple[str, str]]:
    """(pattern, reason) per line; a line without a reason is an error."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        pattern, _, reason = line.partition("#")
        pattern, reason = pattern.strip(), reason.strip()
        if not pattern:
            continue
        if not reason:
            raise pytest.UsageError(f"skip allow-list line {number}: {pattern!r} has no "
                                    "reason (write it after '#')")
        entries.append((pattern, reason))
    return entries


def load_allowlist() -> list[tuple[str, str]]:
    path = Path(os.environ.get("HAPACK_SKIP_ALLOWLIST", ALLOWLIST))
    return parse_allowlist(path.read_text()) if path.exists() else []


def allowed(nodeid: str, entries: list[tuple[str, str]]) -> bool:
    return any(fnmatch.fnmatchcase(nodeid, pattern) for pattern, _ in entries)


def tier_of(nodeid: str) -> str:
    """The tier folder a node id lives in ('other' outside tests/<tier>/)."""
    parts = nodeid.split("::", 1)[0].split("/")
    for i, part in enumerate(parts[:-1]):
        if part == "tests" and parts[i + 1] in TIERS:
            return parts[i + 1]
    return next((p for p in parts[:-1] if p in TIERS), "other")


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def whole_suite(config: pytest.Config) -> bool:
    """No -m, -k or explicit paths: the run the README's test command makes."""
    if config.option.markexpr or config.option.keyword:
        return False
    return not config.args or all(Path(a).resolve() == TESTS for a in config.args)


class CiTruth:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.strict = strict()
        self.entries = load_allowlist()
        self.counts: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if (self.strict and report.skipped and not hasattr(report, "wasxfail")
                and not allowed(item.nodeid, self.entries)):
            report.outcome = "failed"
            report.longrepr = (f"skipped under CI, and not on the skip allow-list "
                               f"({ALLOWLIST.name}): {skip_reason(report)}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        tier = self.counts[tier_of(report.nodeid)]
        if report.when == "call" or report.outcome != "passed":
            if report.outcome == "failed" and report.when != "call":
                tier["error"] += 1
            else:
                tier[report.outcome] += 1

    def missing_tiers(self) -> list[str]:
        return [t for t in TIERS if self.counts[t]["passed"] == 0]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.strict and whole_suite(self.config) and self.missing_tiers():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        write = terminalreporter.write_line
        terminalreporter.section("tiers")
        for tier in (*TIERS, "other"):
            counts = self.counts.get(tier)
            if counts or tier != "other":
                counts = counts or collections.Counter()
                write(f"  {tier:<12}" + "  ".join(f"{counts[o]:>4} {o}" for o in OUTCOMES))
        if self.strict and whole_suite(self.config):
            for tier in self.missing_tiers():
                write(f"  tier {tier} had no passing test under CI: the run fails", red=True)
