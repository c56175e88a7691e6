"""Alerts in the lab, on both managers: a webhook receiver in the client namespace
(lab/alertreceiver.py) gets the events the stack file's [alerts] table selects.

* Pacemaker, with the rendered CIB's <alerts> (the checkout's /usr/sbin/hapack-alert bound
  in the nodes by checkout_agents): a power cut of the holder gives node_lost, fence_ok and
  the promotion on the survivor; a crash with the BMC unreachable gives fence_failed.
* hamon (the rig): a power cut gives node_lost, fence_ok, takeover_started and
  takeover_finished with its timeline, while a second webhook that never answers is also
  configured; a crash with the BMC unreachable gives fence_failed, then blocked.

Times are printed (speed is measured here, not asserted beyond generous bounds).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from lxml import etree

from hapack import render
from hapack.lab.hamonrig import Rig
from hapack.lab.alertreceiver import AlertReceiver
from hapack.lab.heartbeat import PORT, checkout_agents, write_stack

NODE1, NODE2 = "node1", "node2"
FAST_FENCE = "power_timeout = 5\nlogin_timeout = 2\n"   # a dead BMC fails a fence in ~5 s


def alerts_table(*urls, timeout="2s", retries=1):
    out = "\n[alerts]\n"
    for url in urls:
        out += (f'[[alerts.recipients]]\nsink = "webhook"\nurl = "{url}"\n'
                f'timeout = "{timeout}"\nretries = {retries}\n')
    return out


def with_fence_params(text, params):
    """The lab's stack text with [nodes.bmc.params] for both BMCs."""
    return text.replace("lanplus = true\ncipher = 3\n",
                        f"lanplus = true\ncipher = 3\n[nodes.bmc.params]\n{params}")


# -- Pacemaker --------------------------------------------------------------------------

def load_rendered(lab, extra, bmc_params=""):
    stack_file = write_stack(lab, lab.shared_dir / "alerts" / "stack.toml")
    text = stack_file.read_text()
    stack_file.write_text((with_fence_params(text, bmc_params) if bmc_params else text) + extra)
    out = stack_file.with_name("cib.xml")
    assert render.main(["cib", str(stack_file), "-o", str(out)]) == 0
    verify = subprocess.run(["crm_verify", "-L", "-V"], env={**os.environ, "CIB_file": str(out)},
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    section = stack_file.with_name("configuration.xml")
    section.write_bytes(etree.tostring(etree.fromstring(out.read_bytes()).find("configuration")))
    lab.wait_online()
    for node in lab.nodes:
        lab.start_responder(node, port=PORT)
    lab.exec(NODE1, ["cibadmin", "--replace", "--scope", "configuration", "--xml-file",
                     str(section)], timeout=120)


def promoted_on(lab, node, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = lab.exec(NODE1 if lab.running(NODE1) else NODE2, ["crm_mon", "-1", "--output-as=xml"],
                       check=False, timeout=30).stdout
        if out and etree.fromstring(out.encode()).xpath(
                f"//resource[@id='partition' and @role='Promoted']/node[@name='{node}']") and \
                etree.fromstring(out.encode()).xpath(
                    f"//resource[@id='vip' and @role='Started']/node[@name='{node}']"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the stack did not run on {node}")


def pacemaker(rx, **kw):
    return lambda e: e.get("source") == "pacemaker" and all(e.get(k) == v for k, v in kw.items())


def test_pacemaker_power_cut_reports_fence_and_failover(new_lab):
    with new_lab(stack="pacemaker") as lab, checkout_agents(lab), AlertReceiver(lab) as rx:
        load_rendered(lab, alerts_table(rx.url()))
        promoted_on(lab, NODE1)
        cut = time.monotonic()
        lab.power(NODE1, "off")
        fenced = rx.wait_for(pacemaker(rx, event="fence_ok", node=NODE1, reporter=NODE2), 90)
        lost = rx.wait_for(pacemaker(rx, event="node_lost", node=NODE1, reporter=NODE2), 30)
        promoted = rx.wait_for(pacemaker(rx, event="resource_ok", rsc="partition",
                                         task="promote", node=NODE2), 60)
        vip = rx.wait_for(pacemaker(rx, event="resource_ok", rsc="vip", task="start",
                                    node=NODE2), 60)
        print(f"\npacemaker after the power cut: node_lost {lost['_mono'] - cut:.2f}s, "
              f"fence_ok {fenced['_mono'] - cut:.2f}s, promote {promoted['_mono'] - cut:.2f}s, "
              f"vip {vip['_mono'] - cut:.2f}s")
        assert fenced["kind"] == "fencing" and fenced["rc"] == 0 and fenced["cluster"] == f"lab-{lab.name}"
        assert fenced["_mono"] < promoted["_mono"]   # the partition only after the fence
        assert not [e for e in rx.events() if e["event"] == "fence_failed"]


def test_pacemaker_fence_that_fails_is_reported_within_seconds(new_lab):
    with new_lab(stack="pacemaker") as lab, checkout_agents(lab), AlertReceiver(lab) as rx:
        load_rendered(lab, alerts_table(rx.url()), FAST_FENCE)
        promoted_on(lab, NODE1)
        lab.bmc_unreachable(NODE1)
        cut = time.monotonic()
        lab.crash(NODE1)
        failed = rx.wait_for(pacemaker(rx, event="fence_failed", node=NODE1, reporter=NODE2), 60)
        print(f"\npacemaker: fence_failed {failed['_mono'] - cut:.2f}s after the crash "
              f"(priority-fencing-delay 5s, power_timeout 5s): {failed['desc']}")
        assert failed["rc"] != 0
        assert not [e for e in rx.events() if e["event"] == "fence_ok"]


# -- hamon ------------------------------------------------------------------------------

@pytest.fixture
def hamon_rig(plain):
    rigs = []

    def make(extra, bmc_params=""):
        r = Rig(plain).setup()
        text = r.stack_file.read_text()
        r.stack_file.write_text((with_fence_params(text, bmc_params) if bmc_params else text)
                                + extra)
        rigs.append(r)
        r.start()
        r.wait_roles(NODE1, NODE2, 40)
        return r
    yield make
    for r in rigs:
        for node in (NODE1, NODE2):
            print(f"===== hamon on {node}\n{r.log(node)[-4000:]}")
        r.teardown()


def hamon(**kw):
    return lambda e: e.get("source") == "hamon" and all(e.get(k) == v for k, v in kw.items())


@pytest.mark.parametrize("hanging", [True, False], ids=["with a hanging webhook", "alone"])
def test_hamon_power_cut_reports_fence_and_takeover(hamon_rig, plain, hanging):
    with AlertReceiver(plain) as rx, AlertReceiver(plain, port=9098, mode="hang") as hole:
        urls = (hole.url(), rx.url()) if hanging else (rx.url(),)
        r = hamon_rig(alerts_table(*urls, timeout="5s", retries=2))
        with plain.watch_vip(r.vip, 8080) as watch:
            watch.wait_for(NODE1, timeout=10)
            cut = time.monotonic()
            plain.power(NODE1, "off")
            answered = watch.wait_for(NODE2, timeout=15, after=cut)
            finished = rx.wait_for(hamon(event="takeover_finished", reporter=NODE2), 30)
        lost = rx.wait_for(hamon(event="node_lost", node=NODE1, reporter=NODE2), 5)
        fenced = rx.wait_for(hamon(event="fence_ok", node=NODE1, reporter=NODE2), 5)
        started = rx.wait_for(hamon(event="takeover_started", reporter=NODE2), 5)
        print(f"\nhamon after the power cut ({'a second webhook never answers' if hanging else 'one webhook'}): VIP answering "
              f"{answered.mono - cut:.2f}s; alerts received: node_lost {lost['_mono'] - cut:.2f}s, "
              f"fence_ok {fenced['_mono'] - cut:.2f}s, takeover_started "
              f"{started['_mono'] - cut:.2f}s, takeover_finished {finished['_mono'] - cut:.2f}s")
        steps = [s["step"] for s in finished["timeline"]["steps"]]
        assert "promote partition" in steps and finished["timeline"]["kind"] == "takeover"
        assert answered.mono - cut < 5.0   # generous: bench/bench_hamon.py measures it
        assert r.wait_state(NODE2, "primary", timeout=5)


def test_hamon_fence_that_fails_is_reported_within_seconds(hamon_rig, plain):
    with AlertReceiver(plain) as rx:
        r = hamon_rig(alerts_table(rx.url()), FAST_FENCE)
        plain.bmc_unreachable(NODE1)
        try:
            cut = time.monotonic()
            plain.crash(NODE1)
            failed = rx.wait_for(hamon(event="fence_failed", node=NODE1, reporter=NODE2), 60)
            blocked = rx.wait_for(hamon(event="blocked", node=NODE1, reporter=NODE2), 90)
        finally:
            plain.bmc_reachable(NODE1)   # the rig's teardown powers the nodes off through it
        print(f"\nhamon: fence_failed {failed['_mono'] - cut:.2f}s after the crash "
              f"({failed['task']}: {failed['desc']}), blocked {blocked['_mono'] - cut:.2f}s")
        assert r.status(NODE2)["state"] == "blocked"
        assert not [e for e in rx.events() if e["event"] in ("fence_ok", "takeover_finished")
                    and e.get("reporter") == NODE2]
