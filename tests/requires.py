"""What a test needs from the machine; skips with the reason when it is missing.

A plain module (not conftest.py): tests import it by name, and a second
conftest.py elsewhere in the tree can never shadow it.
"""

import os
import shutil

import pytest


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, mounts, raw sockets)")


def need_binary(*names):
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed (see .ci/packages.txt)")
