"""hamon's fence_bmc started ahead (Fencer.prestart): faster, and the answer never changes.

A preloading device (the peer's BMC through fence_bmc) keeps one agent started ahead,
waiting on stdin at a low priority; a request is handed to it and a new one is started
for the next request. Whatever happens to the spare (killed, exited, closed), every
answer is the answer of the process that received that request, and nothing is left
running after ``close()``. The agent here is a small script that records its start and
each request with its pid and priority (the real fence_bmc against ipmi_sim is in
tests/integration/test_hamon_fencer_started_ahead.py)."""

import io
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from hapack import procfs
from hapack.hamon.events import EventLog
from hapack.hamon.fence import SPARE_NICE, Device, Fencer, FenceFailed
from hapack.hamon.snapshot import Power

AGENT = """#!/usr/bin/python3 -IS
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
def note(**what):
    with open(os.path.join(here, "calls.log"), "a") as log:
        log.write(json.dumps(dict(pid=os.getpid(), **what)) + "\\n")
note(event="start", preload=os.environ.get("HAPACK_FENCE_PRELOAD"),
     nice=os.getpriority(os.PRIO_PROCESS, 0))
text = sys.stdin.read()
if not text.strip():
    note(event="unused")
    sys.exit(0)
params = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
answers = json.load(open(os.path.join(here, "answers.json")))
rc = answers[params["action"]]
note(event="request", action=params["action"], rc=rc, nice=os.getpriority(os.PRIO_PROCESS, 0),
     password=params.get("password"))
if rc == "hang":
    time.sleep(60)
print("Success" if rc in (0, 2) else "Failed: no answer")
sys.exit(rc)
"""
SECRET = "pw-9Zq"


class Agent:
    def __init__(self, folder: Path):
        self.dir = folder
        self.path = folder / "fence_bmc"
        self.path.write_text(AGENT)
        self.path.chmod(0o755)
        self.answer(status=0, off=0)

    def answer(self, **rcs) -> None:
        (self.dir / "answers.json").write_text(json.dumps(rcs))

    def notes(self, event=None) -> list[dict]:
        try:
            lines = (self.dir / "calls.log").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [n for n in map(json.loads, lines) if event is None or n["event"] == event]


@pytest.fixture
def agent(tmp_path):
    return Agent(tmp_path)


@pytest.fixture
def made(agent):
    fencers = []

    def make(preload="ipmi", timeout=5.0, devices=1):
        levels = [(1, [Device(f"fence-node1-{i}", str(agent.path), {"ip": "198.18.0.1",
                                                                    "password": SECRET},
                              (SECRET,), preload=preload) for i in range(devices)])]
        log = EventLog("node2", None, stream=io.StringIO(), debug=True)
        f = Fencer(str(agent.path), "node1", None, timeout, log, levels)
        fencers.append(f)
        return f
    yield make
    for f in fencers:
        f.close()
    for note in agent.notes("start"):   # nothing outlives close()
        assert _gone_soon(note["pid"]), f"agent {note['pid']} still running"


def _gone_soon(pid, seconds=3.0):
    end = time.monotonic() + seconds
    while procfs.alive(pid) and time.monotonic() < end:
        time.sleep(0.01)
    return not procfs.alive(pid)


def _spare(f, agent, device=None):
    """Wait until the fencer holds a started spare (it is started in the background)."""
    name = device or f.levels[0][1][0].name
    end = time.monotonic() + 5
    while time.monotonic() < end:
        spare = f._spares.get(name)
        if spare is not None and any(n["pid"] == spare.proc.pid for n in agent.notes("start")):
            return spare
        time.sleep(0.01)
    raise AssertionError("no spare started")


def test_prestart_starts_the_agent_ahead_with_its_driver_and_a_low_priority(agent, made):
    f = made()
    f.prestart()
    spare = _spare(f, agent)
    [start] = agent.notes("start")
    assert (start["pid"], start["preload"], start["nice"]) == (spare.proc.pid, "ipmi", SPARE_NICE)
    assert agent.notes("request") == []


def test_the_request_goes_to_the_agent_started_ahead_at_normal_priority(agent, made):
    f = made()
    f.prestart()
    spare = _spare(f, agent)
    agent.answer(status=2)
    assert f.status() is Power.OFF
    [request] = agent.notes("request")
    assert request["pid"] == spare.proc.pid and request["nice"] == 0
    assert request["password"] == SECRET            # the same key=value request


def test_each_request_leaves_a_new_spare_for_the_next(agent, made):
    f = made()
    f.prestart()
    served = []
    for _ in range(4):
        spare = _spare(f, agent)
        f.status()
        served.append(agent.notes("request")[-1]["pid"])
        assert served[-1] == spare.proc.pid
    assert len(set(served)) == 4


def test_without_a_driver_to_preload_nothing_is_started_ahead(agent, made):
    f = made(preload="")
    f.prestart()
    f.status()
    time.sleep(0.3)
    assert f._spares == {} and len(agent.notes("start")) == 1


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "exited"])
def test_a_spare_that_died_is_not_used_and_the_request_still_gets_its_answer(agent, made, how):
    f = made()
    f.prestart()
    spare = _spare(f, agent)
    if how == "exited":
        spare.proc.stdin.close()      # as if it had read an empty request
    else:
        os.kill(spare.proc.pid, getattr(signal, how))
    assert _gone_soon(spare.proc.pid)
    agent.answer(status=2)
    assert f.status() is Power.OFF
    [request] = agent.notes("request")
    assert request["pid"] != spare.proc.pid


def test_close_ends_the_spare_unused(agent, made):
    f = made(devices=2)
    f.prestart()
    spares = [_spare(f, agent, d.name) for d in f.levels[0][1]]
    f.close()
    assert all(s.proc.returncode == 0 for s in spares)
    assert len(agent.notes("unused")) == 2 and agent.notes("request") == []


def test_a_spare_that_hangs_is_killed_at_the_timeout_and_nothing_is_confirmed(agent, made):
    f = made(timeout=0.2)     # the request's timeout is fence_timeout + 5 s
    f.timeout = -4.7          # ... brought down to 0.3 s for the test
    f.prestart()
    spare = _spare(f, agent)
    agent.answer(status="hang")
    with pytest.raises(FenceFailed):
        f.status()
    assert _gone_soon(spare.proc.pid)


OUTCOMES = {0: Power.ON, 2: Power.OFF, 1: FenceFailed}


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_every_answer_is_its_own_process_s_answer(agent, made, seed):
    """Requests, answers, dead spares and restarts in a random order: after every step the
    result is what the process that got the request said, no request is lost or served
    twice, and at most one spare per device is alive."""
    rnd = random.Random(seed)
    f = made()
    f.prestart()
    for step in range(25):
        move = rnd.choice(["status", "status", "off", "kill", "close", "answer"])
        if move == "answer":
            agent.answer(status=rnd.choice([0, 1, 2]), off=rnd.choice([0, 1]))
        elif move == "kill":
            spare = f._spares.get("fence-node1-0")
            if spare is not None:
                os.kill(spare.proc.pid, signal.SIGKILL)
        elif move == "close":
            f.close()
            if rnd.random() < 0.5:
                f.prestart()
        else:
            before = len(agent.notes("request"))
            try:
                got = f.status() if move == "status" else (f.off() or "off done")
            except FenceFailed:
                got = FenceFailed
            requests = agent.notes("request")
            assert len(requests) == before + 1, f"step {step}: {move} not served exactly once"
            rc = requests[-1]["rc"]
            want = OUTCOMES[rc] if move == "status" else ("off done" if rc == 0 else FenceFailed)
            assert got == want, f"seed {seed} step {step}: {move} answered {rc}, got {got}"
        alive = [n["pid"] for n in agent.notes("start") if procfs.alive(n["pid"])
                 and n["pid"] not in {r["pid"] for r in agent.notes("request")}
                 and n["pid"] not in {u["pid"] for u in agent.notes("unused")}]
        time.sleep(0.05)
        assert len([p for p in alive if procfs.alive(p)]) <= 1, f"step {step}: spares {alive}"
