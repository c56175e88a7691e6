"""hapack install refuses an environment the cluster's own user cannot reach.

Pacemaker's controller runs every agent's meta-data as ``hacluster``. With the agents'
interpreter under a 0700 directory (a pyenv or venv in /root) each call fails with
"Child process was unable to execute file", the controller retries fence agents after
1 s, and a new DC waited 7 s before its first transition (campaign soak, crash of the
DC). ``hidden`` decides by the permission bits of every directory on the way, following
symbolic links hop by hop, as the kernel does for a user that is not root.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from hapack import install


@pytest.fixture
def base():
    """A directory every user can enter (pytest's tmp_path is under a 0700 one)."""
    path = tempfile.mkdtemp(prefix="hapack-reach-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def _tree(base, layout):
    """layout: relative path -> 'dir:MODE' | 'file:MODE' | 'link:TARGET'."""
    for rel, what in layout.items():
        path = os.path.join(base, rel)
        kind, arg = what.split(":", 1)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "dir":
            os.makedirs(path, exist_ok=True)
        elif kind == "file":
            with open(path, "w") as handle:
                handle.write("#!/bin/sh\n")
        else:
            os.symlink(arg, path)
    for rel, what in sorted(layout.items(), key=lambda kv: -kv[0].count("/")):
        kind, arg = what.split(":", 1)
        if kind in ("dir", "file"):
            os.chmod(os.path.join(base, rel), int(arg, 8))


# (layout, the path asked, the reason expected or None)
CASES = [
    ({"venv/bin/python3": "file:755"}, "venv/bin/python3", None),
    ({"home": "dir:700", "home/py/python3": "file:755", "venv/bin/python3": "link:../../home/py/python3"},
     "venv/bin/python3", "home is mode 0700"),
    ({"home": "dir:700", "home/py/python3": "file:755",
      "venv/bin/python3": "link:{base}/home/py/python3"}, "venv/bin/python3", "home is mode 0700"),
    ({"home": "dir:711", "home/py/python3": "file:755", "venv/bin/python3": "link:../../home/py/python3"},
     "venv/bin/python3", None),                                   # x without r is enough to pass
    ({"a/b/python3": "file:700"}, "a/b/python3", "python3 is mode 0700"),
    ({"a": "dir:750", "a/b/python3": "file:755"}, "a/b/python3", "a is mode 0750"),
    ({"l1": "link:l2", "l2": "link:real", "real": "dir:700", "real/python3": "file:755"},
     "l1/python3", "real is mode 0700"),                          # a chain of links to a dir
    ({"loop1": "link:loop2", "loop2": "link:loop1"}, "loop1/python3", "too many levels"),
    ({"v/bin/python3": "link:python3.11", "v/bin/python3.11": "link:/nonexistent-hapack/python3"},
     "v/bin/python3", "No such file"),
    ({"ok": "dir:755", "ok/sub": "dir:755", "ok/sub/x": "link:../../hid/x", "hid": "dir:700",
      "hid/x": "file:755"}, "ok/sub/x", "hid is mode 0700"),
]


@pytest.mark.parametrize("layout, asked, why", CASES)
def test_hidden_follows_every_hop(base, layout, asked, why):
    _tree(base, {k: v.replace("{base}", base) for k, v in layout.items()})
    found = install.hidden(os.path.join(base, asked))
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found, found


@pytest.mark.parametrize("layout, asked, why", CASES[:7])
def test_hidden_agrees_with_the_kernel_for_another_user(base, layout, asked, why):
    """The same layouts, executed as 'nobody': the kernel's verdict is the oracle."""
    _tree(base, {k: v.replace("{base}", base) for k, v in layout.items()})
    path = os.path.join(base, asked)
    kernel = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                             "test", "-x", path], timeout=10).returncode == 0
    assert kernel == (install.hidden(path) is None)


def test_install_refuses_an_interpreter_hacluster_cannot_reach(base, monkeypatch, tmp_path):
    _tree(base, {"root": "dir:700", "root/py/python3": "file:755",
                 "venv/bin/python3": "link:../../root/py/python3"})
    monkeypatch.setattr(install, "interpreter", lambda: os.path.join(base, "venv/bin/python3"))
    lines = []
    with pytest.raises(install.Unreachable) as err:
        install.install(str(tmp_path), "/usr/lib/ocf", out=lines.append)
    assert "hacluster" in str(err.value) and "root is mode 0700" in str(err.value)
    assert not lines and not any(tmp_path.iterdir())            # nothing half done


def test_the_cli_says_why_and_exits_1(base, tmp_path):
    python = os.path.join(base, "root/py/python3")
    _tree(base, {"root": "dir:700", "root/py": "dir:755"})
    os.symlink(os.path.realpath(sys.executable), python)
    # a venv-like interpreter whose sys.executable lies under the 0700 directory
    script = ("import sys; from hapack import install; "
              f"install.interpreter = lambda: {python!r}; "
              f"sys.exit(install.main(['--root', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done
    assert "hapack install: Pacemaker runs the agents' meta-data as the user hacluster" in done.stderr
    assert not any(tmp_path.iterdir())


def test_this_environment_is_reachable():
    """The suite's own venv (README: /usr/bin/python3 -m venv /opt/hapack/venv) passes."""
    assert install.hidden(install.interpreter()) is None
