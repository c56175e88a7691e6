"""hapack install puts the hapack and hamon commands on root's PATH, and takes them off."""

import os
import random
import subprocess
import sys

import pytest

from hapack import install

COMMANDS = ("hapack", "hamon")


def _stage(root):
    lines = []
    assert install.install(str(root), "/usr/lib/ocf", out=lines.append) == 0
    return lines


def _command(root, name):
    return root / install.COMMAND_DIR.lstrip("/") / name


def test_the_command_dir_is_on_roots_default_path():
    """Debian's login.defs and a root login shell both put /usr/local/sbin first."""
    with open("/etc/login.defs", encoding="utf-8") as handle:
        supath = [line.split()[1] for line in handle if line.startswith("ENV_SUPATH")]
    assert supath and install.COMMAND_DIR in supath[0].removeprefix("PATH=").split(":")
    shell = subprocess.run(["env", "-i", "HOME=/root", "bash", "-lc", "echo $PATH"],
                           capture_output=True, text=True, timeout=20, check=True)
    assert install.COMMAND_DIR in shell.stdout.strip().split(":")


def test_install_puts_both_commands_on_the_path_and_records_them(tmp_path):
    _stage(tmp_path)
    manifest = (tmp_path / install.MANIFEST.lstrip("/")).read_text()
    for name in COMMANDS:
        path = _command(tmp_path, name)
        assert os.access(path, os.X_OK), f"{path} missing"
        assert f" {install.COMMAND_DIR}/{name}\n" in manifest
    # as typed in a fresh root shell: only PATH, nothing of this process's environment
    path = f"{tmp_path}{install.COMMAND_DIR}:/usr/sbin:/usr/bin:/sbin:/bin"
    for argv, expect in ((["hapack", "--help"], "usage: hapack COMMAND"),
                         (["hapack", "install", "--help"], "--uninstall"),
                         (["hamon", "--help"], "usage: hamon"),
                         (["hamon", "keygen", "--help"], "usage: hamon keygen")):
        done = subprocess.run(["env", "-i", f"PATH={path}", *argv], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0 and expect in done.stdout, (argv, done.stderr)


def test_uninstall_takes_the_commands_off_the_path(tmp_path):
    _stage(tmp_path)
    assert install.uninstall(str(tmp_path), out=lambda line: None) == 0
    for name in COMMANDS:
        assert not _command(tmp_path, name).exists()
    assert _command(tmp_path, "").is_dir()  # /usr/local/sbin itself is not ours to remove


def test_a_foreign_command_of_the_same_name_is_reported_and_not_removed_later(tmp_path):
    foreign = _command(tmp_path, "hamon")
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho an operator's own hamon\n")
    lines = _stage(tmp_path)
    assert any(line.startswith("replacing") and line.endswith("(not installed by hapack "
                                                              "before)") for line in lines)
    foreign.write_text("#!/bin/sh\necho edited again\n")
    assert install.uninstall(str(tmp_path), out=lambda line: None) == 1
    assert foreign.read_text().endswith("edited again\n")


def test_the_debian_form_of_a_wrapper():
    text = install.wrapper("hapack.cli", "the hapack command", python="/usr/bin/python3",
                           paths=["/usr/lib/python3/dist-packages"])
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert "sys.path[:0] = ['/usr/lib/python3/dist-packages']" in text
    assert text.endswith("from hapack.cli import main\nsys.exit(main())\n")
    assert install.wrapper("hapack.cli", "x") == install.wrapper("hapack.cli", "x")


def _check(root, expected, edited, removed):
    """Invariants after every step: what is installed is exactly what the manifest says,
    apart from what the operator edited or removed since."""
    manifest = install._manifest(str(root))
    for path, text in expected.items():
        target = root / path.lstrip("/")
        if path in edited:
            assert target.exists(), f"{path}: an operator's edit was lost"
        elif path in manifest and path not in removed:
            assert target.read_text() == text and os.access(target, os.X_OK), path
        else:
            assert not target.exists(), f"{path} left behind"


@pytest.mark.parametrize("seed", range(6))
def test_install_uninstall_sequences_keep_the_path_consistent(tmp_path, seed):
    """Random runs of install, uninstall, an operator's edit or removal of a command."""
    rng = random.Random(seed)
    expected = dict(install.planned(str(tmp_path), "/usr/lib/ocf"))
    commands = [f"{install.COMMAND_DIR}/{name}" for name in COMMANDS]
    assert set(commands) <= set(expected)
    edited, removed = set(), set()
    for _ in range(12):
        step = rng.choice(("install", "uninstall", "edit", "remove"))
        path = rng.choice(commands)
        target = tmp_path / path.lstrip("/")
        if step == "install":
            _stage(tmp_path)
            edited.clear()  # install rewrites what differs
            removed.clear()
            for command in commands:
                assert os.access(tmp_path / command.lstrip("/"), os.X_OK)
        elif step == "uninstall":
            code = install.uninstall(str(tmp_path), out=lambda line: None)
            assert code == (1 if edited & set(install._manifest(str(tmp_path))) else 0)
            for command in commands:
                assert (tmp_path / command.lstrip("/")).exists() == (command in edited)
            removed.clear()
        elif step == "edit" and target.exists():
            target.write_text(f"#!/bin/sh\n# operator {rng.random()}\n")
            edited.add(path)
            removed.discard(path)
        elif step == "remove" and target.exists():
            target.unlink()
            edited.discard(path)
            removed.add(path)
        _check(tmp_path, expected, edited, removed)


def test_the_debian_changelog_version_is_the_package_version():
    checkout = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(checkout, "debian", "changelog"), encoding="utf-8") as handle:
        first = handle.readline()
    version = first.split("(")[1].split(")")[0]
    from importlib.metadata import version as installed
    assert version == installed("hapack"), "debian/changelog and setup.cfg disagree"
    assert sys.version_info >= (3, 11)
