"""Shared test fixtures: tiers by folder, agents as installed."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

import ci_truth

TESTS = os.path.dirname(os.path.abspath(__file__))
TIERS = ci_truth.TIERS


def pytest_configure(config):
    """Under CI a skip fails and every tier must run (see ci_truth.py)."""
    config.pluginmanager.register(ci_truth.CiTruth(config), "hapack-ci-truth")


def pytest_collection_modifyitems(config, items):
    """Every test carries the marker of its tier folder (tests/<tier>/...)."""
    for item in items:
        rel = os.path.relpath(str(item.fspath), TESTS).split(os.sep)
        if rel[0] in TIERS and not item.get_closest_marker(rel[0]):
            item.add_marker(getattr(pytest.mark, rel[0]))


@pytest.fixture(scope="session")
def installed():
    """A staged 'hapack install': returns name -> path of each agent wrapper.

    The tree is world-readable: ocf-tester runs meta-data as nobody.
    """
    root = pathlib.Path(tempfile.mkdtemp(prefix="hapack-root-"))
    root.chmod(0o755)
    subprocess.run([sys.executable, "-m", "hapack.cli", "install", "--root", str(root)],
                   check=True, capture_output=True)

    def path(name):
        for folder in ("usr/lib/ocf/resource.d/hapack", "usr/sbin"):
            candidate = root / folder / name
            if candidate.exists():
                return str(candidate)
        raise LookupError(f"{name} was not installed under {root}")

    path.root = str(root)
    path.ra_path = str(root / "usr/lib/ocf/resource.d")
    yield path
    shutil.rmtree(root, ignore_errors=True)
