"""The lab BMC's power hook: ``get power`` answered by sh from the power flag, the same
answer and the same power-log line as hapack.lab.power gives; everything else goes to
power.py unchanged. Real sh, the module's own writer of the flag."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hapack.lab import observe
from hapack.lab.power import PowerSwitch, hook_script

RECORDER = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/argv"
"""


@pytest.fixture
def node(tmp_path):
    lab = tmp_path / "lab dir"
    node_dir = lab / "nodes" / "node1"
    node_dir.mkdir(parents=True)
    (lab / "lab.json").write_text(json.dumps({"nodes": {"node1": {"dir": str(node_dir)}}}))
    script = tmp_path / "power.sh"
    script.write_text(hook_script(sys.executable, lab, "node1", node_dir))
    return lab, node_dir, script


def hook(script, *args):
    return subprocess.run(["/bin/sh", str(script), *args], capture_output=True, text=True,
                          timeout=10)


def switch_says(lab):
    """power.py's answer: (rc, stdout); a flag it cannot read is an error, never off."""
    try:
        return 0, f"power:{int(PowerSwitch(lab, 'node1').is_on())}"
    except ValueError:
        return 1, ""


def states(rnd):
    """Power flags as PowerSwitch writes them, and some it never would."""
    yield None                                     # no file: off
    yield ""                                       # empty file
    yield '{"on": tr'                              # torn
    yield "{}\n"
    for _ in range(40):
        state = {"on": rnd.choice([True, False])}
        for key in rnd.sample(["boots", "init", "off_since", "since", "unshare", "reason_on"],
                              rnd.randint(0, 6)):
            state[key] = rnd.choice([1, [12, 345], 1796314972.28, True, False, "on"])
        yield json.dumps(state, sort_keys=True) + "\n"


@pytest.mark.parametrize("seed", range(3))
def test_get_power_is_the_same_answer_as_the_power_switch_gives(node, seed):
    lab, node_dir, script = node
    for text in states(random.Random(seed)):
        flag = node_dir / "power.json"
        if text is None:
            flag.unlink(missing_ok=True)
        else:
            flag.write_text(text)
        got = hook(script, "get", "power")
        assert (got.returncode, got.stdout.strip()) == switch_says(lab), text


def test_each_answer_is_a_line_of_the_power_log_as_the_module_writes_it(node):
    lab, node_dir, script = node
    (node_dir / "power.json").write_text(json.dumps({"on": True}, sort_keys=True) + "\n")
    hook(script, "get", "power")
    (node_dir / "power.json").unlink()
    hook(script, "get", "power")
    events = observe.parse_power_log((node_dir / "power.log").read_text())
    assert [(e.command, e.result) for e in events] == [("get power", "power:1"),
                                                       ("get power", "power:0")]
    assert events[0].wall <= events[1].wall


@pytest.mark.parametrize("args", [["set", "power", "0"], ["set", "power", "1"],
                                  ["set", "reset", "1"], ["get", "power", "boot"],
                                  ["get", "boot"], ["get"], ["get", "power", "x y"]])
def test_everything_else_goes_to_power_py_with_its_arguments(node, tmp_path, args):
    lab, node_dir, _ = node
    python = tmp_path / "python"
    python.write_text(RECORDER)
    python.chmod(0o755)
    script = tmp_path / "recording.sh"
    script.write_text(hook_script(str(python), lab, "node1", node_dir))
    hook(script, *args)
    recorded = (tmp_path / "argv").read_text().splitlines()
    assert recorded[:2] == ["-I", "-S"] and recorded[2].endswith("/hapack/lab/power.py")
    assert recorded[3:] == [str(lab), "node1", *args]


@pytest.mark.parametrize("on", [True, False, None])
def test_get_power_of_a_flag_power_py_wrote_starts_no_interpreter(node, tmp_path, on):
    lab, node_dir, _ = node
    if on is not None:
        (node_dir / "power.json").write_text(json.dumps({"boots": 3, "on": on}, sort_keys=True)
                                             + "\n")
    python = tmp_path / "python"
    python.write_text(RECORDER)
    python.chmod(0o755)
    script = tmp_path / "recording.sh"
    script.write_text(hook_script(str(python), lab, "node1", node_dir))
    assert hook(script, "get", "power").stdout == f"power:{int(bool(on))}\n"
    assert not (tmp_path / "argv").exists()
