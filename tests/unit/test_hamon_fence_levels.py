"""hamon fences its peer through the same levels as Pacemaker's fencing topology.

Level 1 is the peer's BMC (fence_bmc), then its [[nodes.fence]] devices, each run as a
whole process with its own timeout. The first level whose devices all verified the
power off ends the fence; every level's outcome is logged; the level that verified it
is what the fence confirmation records. The fake agents here are small scripts standing
in for fence agents (the real fence_bmc and fence_ipmilan against ipmi_sim are in
tests/integration/test_hamon_fencer_real_agents.py): they record each call and answer as told.
"""

import io
import json
import random
from pathlib import Path

import pytest

from hapack.hamon.events import EventLog
from hapack.hamon.fence import Device, Fencer, FenceFailed, peer_levels
from hapack.hamon.snapshot import Power
from hapack.stack import loads

ROOT = Path(__file__).resolve().parents[2]
LAB_TEXT = (ROOT / "examples" / "stack.toml").read_text()

# A fence agent stand-in: reads key=value lines, records "<name> <action>" in calls.log,
# answers from answers.json: {"<name>": {"off": rc, "status": rc}} (rc 0 on, 2 off).
FAKE = """#!/usr/bin/python3 -IS
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
name = os.path.basename(sys.argv[0])
params = dict(line.split("=", 1) for line in sys.stdin.read().splitlines() if "=" in line)
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(json.dumps([name, params["action"], params]) + "\\n")
answers = json.load(open(os.path.join(here, "answers.json")))
rc = answers.get(name, {}).get(params["action"], 1)
print("Success" if rc in (0, 2) else "Failed: no answer", file=sys.stdout if rc != 1 else sys.stderr)
sys.exit(rc)
"""


class Agents:
    def __init__(self, folder: Path):
        self.dir = folder
        self.answers = {}

    def make(self, name: str) -> str:
        path = self.dir / name
        path.write_text(FAKE)
        path.chmod(0o755)
        return str(path)

    def answer(self, name: str, off: int = 0, status: int = 2) -> None:
        self.answers[name] = {"off": off, "status": status}
        (self.dir / "answers.json").write_text(json.dumps(self.answers))

    def calls(self) -> list[tuple[str, str]]:
        try:
            lines = (self.dir / "calls.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [tuple(json.loads(line)[:2]) for line in lines]

    def params(self) -> list[dict]:
        return [json.loads(line)[2] for line in (self.dir / "calls.log").read_text().splitlines()]

    def reset(self) -> None:
        (self.dir / "calls.log").unlink(missing_ok=True)


@pytest.fixture
def agents(tmp_path):
    folder = tmp_path / "agents"
    folder.mkdir()
    a = Agents(folder)
    a.answer("none")
    return a


def fencer(agents, layout, stream=None):
    """A Fencer of peer 'node1' whose levels are ``layout``: [[(name, verifies_off)...]...]."""
    levels = [(i + 1, [Device(name, agents.make(name), {"ip": "198.18.0.1"},
                              verifies_off=verifies) for name, verifies in devices])
              for i, devices in enumerate(layout)]
    log = EventLog("node2", None, stream=stream if stream is not None else io.StringIO())
    return Fencer(levels[0][1][0].agent, "node1", None, 5.0, log, levels)


def test_an_unreachable_bmc_falls_through_to_the_pdu_which_verifies_the_off(agents):
    out = io.StringIO()
    f = fencer(agents, [[("bmc", True)], [("pdu", False)]], out)
    agents.answer("bmc", off=1, status=1)
    agents.answer("pdu", off=0, status=2)
    f.off()
    assert agents.calls() == [("bmc", "off"), ("pdu", "off"), ("pdu", "status")]
    assert f.verified_by == "level 2: pdu (pdu) off"
    log = out.getvalue()
    assert "level 1 failed: off of node1 through bmc (bmc): Failed: no answer" in log
    assert "level 2 (pdu (pdu)) powered it off" in log
    assert log.index("level 1 failed") < log.index("level 2 (pdu")


def test_a_working_bmc_ends_the_fence_and_the_pdu_is_never_touched(agents):
    f = fencer(agents, [[("bmc", True)], [("pdu", False)]])
    agents.answer("bmc")
    agents.answer("pdu")
    f.off()
    assert agents.calls() == [("bmc", "off")]   # fence_bmc's off is itself verified
    assert f.verified_by == "level 1: bmc (bmc) off"


def test_an_agent_that_reports_off_but_still_says_on_does_not_count(agents):
    f = fencer(agents, [[("bmc", True)], [("liar", False)]])
    agents.answer("bmc", off=1, status=1)
    agents.answer("liar", off=0, status=0)
    with pytest.raises(FenceFailed) as info:
        f.off()
    assert "level 1: off of node1 through bmc" in str(info.value)
    assert "level 2: off of node1 through liar (liar): the agent reported success, but its " \
        "status still says on" in str(info.value)
    assert f.verified_by == ""


def test_status_asks_the_next_level_only_when_one_cannot_tell(agents):
    f = fencer(agents, [[("bmc", True)], [("pdu-a", False), ("pdu-b", False)]])
    agents.answer("bmc", status=1)
    agents.answer("pdu-a", status=2)
    agents.answer("pdu-b", status=2)
    assert f.status() is Power.OFF
    assert f.verified_by == "level 2: pdu-a (pdu-a) status, pdu-b (pdu-b) status"
    agents.answer("pdu-b", status=0)   # one feed still on: the peer may be on
    assert f.status() is Power.ON
    agents.answer("bmc", status=0)
    agents.reset()
    assert f.status() is Power.ON and agents.calls() == [("bmc", "status")]
    agents.answer("bmc", status=1)
    agents.answer("pdu-a", status=1)
    with pytest.raises(FenceFailed):
        f.status()


def test_the_request_names_the_target_unless_the_device_names_its_outlet():
    text = LAB_TEXT.replace('cipher = 3                    # ipmi_sim', '''cipher = 3
[[nodes.fence]]
name = "pdu"
agent = "fence_apc_snmp"
password_file = "/etc/hapack/pdu.pw"
[nodes.fence.params]
ip = "198.18.242.5"
plug = "3"
pcmk_delay_base = "2s"
[[nodes.fence]]
name = "ipmi2"
agent = "fence_ipmilan"
level = 2
# ipmi_sim''', 1)
    node1 = loads(text, "s.toml", check_agents=False).nodes[0]
    levels = peer_levels("/opt/x/fence_bmc", node1)
    assert [(lv, [(d.name, d.agent, d.verifies_off) for d in ds]) for lv, ds in levels] == [
        (1, [("fence-node1", "/opt/x/fence_bmc", True)]),
        (2, [("fence-node1-pdu", "/usr/sbin/fence_apc_snmp", False),
             ("fence-node1-ipmi2", "/usr/sbin/fence_ipmilan", False)])]
    f = Fencer.for_peer("/opt/x/fence_bmc", node1, 7.0, EventLog("node2", None, io.StringIO()))
    pdu = dict(line.split("=", 1) for line in f.request("off", levels[1][1][0]).splitlines())
    assert pdu == {"ip": "198.18.242.5", "plug": "3",
                   "password_script": "/bin/cat /etc/hapack/pdu.pw", "action": "off",
                   "nodename": "node1", "power_timeout": "7", "login_timeout": "5"}
    ipmi2 = dict(line.split("=", 1) for line in f.request("status", levels[1][1][1]).splitlines())
    assert ipmi2["plug"] == "node1" and ipmi2["action"] == "status"
    bmc = dict(line.split("=", 1) for line in f.request("off").splitlines())
    assert bmc["hostname"] == "node1" and bmc["plug"] == "node1" and "pcmk_host_list" not in bmc


def test_random_layouts_and_answers_keep_the_level_order(agents):
    """Seeded random levels (1-4, 1-2 devices each) and answers: off succeeds exactly when a
    level has every device off and verified, the first such level is the one recorded,
    nothing after it runs, a level stops at its first failing device, and each failed
    level is logged once, in order."""
    rng = random.Random(1818)
    for trial in range(60):
        layout = [[(f"d{trial}-{lv}-{k}", lv == 0) for k in range(rng.randint(1, 2))]
                  for lv in range(rng.randint(1, 4))]
        answers = {}
        for devices in layout:
            for name, _ in devices:
                answers[name] = (rng.choice([0, 0, 1]), rng.choice([0, 1, 2, 2]))
                agents.answer(name, *answers[name])
        agents.reset()
        out = io.StringIO()
        f = fencer(agents, layout, out)
        expected_calls, winner, failed = [], None, []
        for lv, devices in enumerate(layout, start=1):
            ok = True
            for name, verifies in devices:
                off, status = answers[name]
                expected_calls.append((name, "off"))
                if off != 0:
                    ok = False
                    break
                if not verifies:
                    expected_calls.append((name, "status"))
                    if status != 2:
                        ok = False
                        break
            if ok:
                winner = lv
                break
            failed.append(lv)
        if winner is None:
            with pytest.raises(FenceFailed) as info:
                f.off()
            assert [part.split(":")[0] for part in str(info.value).split("; ")] == \
                [f"level {lv}" for lv in failed]
        else:
            f.off()
            assert f.verified_by.startswith(f"level {winner}: ")
        assert agents.calls() == expected_calls, (layout, answers)
        log = out.getvalue()
        assert [int(line.split("level ")[1].split()[0]) for line in log.splitlines()
                if " failed: " in line] == failed
