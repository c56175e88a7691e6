"""Shared lab fixtures for the cluster tier: one lab per kind per session.

* ``pacemaker_lab`` / ``cluster``: Corosync + Pacemaker in both nodes (about
  5 s cold start, once per session).
* ``plain_lab`` / ``plain``: the same hosts, networks and BMCs with no stack
  (for hamon, or for faults that would disturb Pacemaker).

The function-scoped ``cluster`` and ``plain`` hand the shared lab to one test
and put it back in shape before and after it: every node powered on and
booted, thawed, links healed, BMCs reachable, the test's spawned processes
stopped (and, for Pacemaker, both nodes online with quorum). Tests that take
a lab down build their own with :func:`fresh_lab`.

Set ``HAPACK_LAB_LOGS=<dir>`` to keep every lab's logs there at teardown.

Use the fixtures here as fixtures; never import this module (every
conftest.py is imported as module ``conftest``). Plain helpers shared by
tests live in named modules such as tests/requires.py.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from hapack.lab import Lab, missing_prerequisites

BOOT_DELAY = 1.0
def need_lab(stack: str) -> None:
    problems = missing_prerequisites(stack)
    if problems:
        pytest.skip("the lab cannot run here: " + "; ".join(problems))


def keep_logs(lab: Lab) -> None:
    dest = os.environ.get("HAPACK_LAB_LOGS")
    if dest and lab.state:
        lab.collect_logs(Path(dest) / f"{lab.name}-{int(time.time())}")


@contextlib.contextmanager
def fresh_lab(**kwargs):
    """A lab of its own for one test; always torn down."""
    lab = Lab(**kwargs)
    try:
        yield lab.up()
    finally:
        keep_logs(lab)
        lab.down()


@pytest.fixture
def new_lab(lab_reaper):
    """``with new_lab(stack="none") as lab:``: a lab of the test's own, always torn down."""
    return fresh_lab


@pytest.fixture(scope="session")
def lab_reaper():
    """Remove leftovers of killed runs (labs whose owning process died) once per session."""
    need_lab("none")
    return Lab.reap_stale()


def _session_lab(stack: str):
    need_lab(stack)
    lab = Lab(stack=stack, boot_delay=BOOT_DELAY)
    start = time.monotonic()
    try:
        lab.up()
        lab.cold_start_s = time.monotonic() - start
        yield lab
    finally:
        keep_logs(lab)
        lab.down()


@pytest.fixture(scope="session")
def pacemaker_lab(lab_reaper):
    yield from _session_lab("pacemaker")


@pytest.fixture(scope="session")
def plain_lab(lab_reaper):
    yield from _session_lab("none")


def heal(lab: Lab) -> None:
    """Put a shared lab back in shape after (or before) a test that hurt it."""
    if lab.boot_delay != BOOT_DELAY:
        lab.set_boot_delay(BOOT_DELAY)
    lab.restore()


@pytest.fixture
def cluster(pacemaker_lab):
    heal(pacemaker_lab)
    yield pacemaker_lab
    heal(pacemaker_lab)


@pytest.fixture
def plain(plain_lab):
    heal(plain_lab)
    yield plain_lab
    heal(plain_lab)
