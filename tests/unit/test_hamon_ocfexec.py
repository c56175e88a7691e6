"""hamon's OCF executor: what a failed step says (campaign finding 3: a Tomcat monitor and
stop that failed as a bare 'err generic', nothing to tell why)."""

import os
import stat

import pytest

from hapack.hamon.ocfexec import OcfExecutor, Resource, exit_reason
from hapack.stack.model import Ops


def agent(tmp_path, body):
    """An executable agent ocf:test:thing under a fresh OCF root."""
    path = tmp_path / "resource.d" / "test" / "thing"
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return OcfExecutor(str(tmp_path), "node1", log=None, rsctmp=str(tmp_path / "run"))


THING = Resource("thing", "ocf:test:thing", {}, Ops(), "stateful")


def test_the_exit_reason_of_a_failed_action_is_in_the_outcome(tmp_path):
    ocf = agent(tmp_path, "echo 'thing ERROR: x' >&2; echo 'ocf-exit-reason:pid file gone' >&2\n"
                          "exit 1\n")
    out = ocf.run(THING, "stop")
    assert (out.rc, out.reason) == (1, "pid file gone")
    assert out.describe() == "err generic: pid file gone"


@pytest.mark.parametrize("body, said", [
    ("echo 'Traceback (most recent call last):' >&2; echo 'ImportError: no hapack' >&2; exit 1",
     "ImportError: no hapack"),
    ("echo 'sh: 1: /opt/venv/bin/python: not found' >&2; exit 5", "/opt/venv/bin/python: not found"),
    ("echo 'dying' >&2; kill -9 $$", "dying"),
])
def test_a_failure_without_an_exit_reason_says_what_stderr_said(tmp_path, body, said):
    out = agent(tmp_path, body + "\n").run(THING, "monitor")
    assert out.rc not in (0, 7, 8)
    assert out.reason.startswith("no exit reason; stderr: ") and said in out.reason, out
    assert said in out.describe()


@pytest.mark.parametrize("rc", [0, 7, 8])
def test_a_success_or_a_state_says_nothing_of_its_stderr(rc):
    assert exit_reason("thing INFO: all fine\n", rc) == ""


def test_only_the_last_reason_and_a_bounded_tail():
    assert exit_reason("ocf-exit-reason:first\nocf-exit-reason: second \n", 1) == "second"
    assert len(exit_reason("x" * 5000 + "\n", 1)) < 300
    assert exit_reason("", 1) == "" and exit_reason(None, 1) == ""
