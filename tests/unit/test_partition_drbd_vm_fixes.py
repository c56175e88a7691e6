"""Bugs of the DRBD backend found on real DRBD 8.4 in the VM tier (tests/vm)."""

import os
import subprocess
import sys


def test_split_brain_handler_runs_without_stdio(tmp_path):
    """DRBD starts handlers through the kernel's usermode helper, with fds 0-2 closed.

    The handler logged to sys.stderr, None there: it recorded the split brain,
    then died on the log line and DRBD logged 'exit code 1'.
    """
    env = dict(os.environ, HAPACK_STATE_DIR=str(tmp_path), DRBD_RESOURCE="r0",
               HA_LOGFACILITY="none")
    argv = [sys.executable, "-I", "-m", "hapack.ocf.partition_handler", "split-brain"]
    code = subprocess.run(["/bin/sh", "-c", 'exec "$@" <&- >&- 2>&-', "sh", *argv],
                          env=env, timeout=30).returncode
    assert code == 0
    assert "detected" in (tmp_path / "r0.split-brain").read_text()
