"""The alert agent as 'hapack install' writes it, and the rendered alerts through the real
tools: crmsh loads the crm script's alert into an offline CIB file and makes the CIB's very
<alerts> (ids included), crm_verify accepts the CIB with every kind of recipient."""

import os
import subprocess
import sys
from pathlib import Path

from lxml import etree

import cib_compare
from alert_receivers import Webhook
from hapack.cib import cib as cibmod
from hapack.cib import crm
from hapack.stack import loads
from requires import need_binary

ROOT = Path(__file__).resolve().parents[2]
LAB = (ROOT / "examples" / "stack.toml").read_text()
ALERTS = """
[alerts]
select_nodes = false
select_attributes = ["master-partition"]
timeout = "20s"
[[alerts.recipients]]
sink = "webhook"
url = "https://ops:pw@hooks.example.com/x?y=1&z=2"
headers = { Authorization = "Bearer t0k", X-Team = "h a" }
[[alerts.recipients]]
sink = "syslog"
facility = "local5"
[[alerts.recipients]]
sink = "command"
command = ["/usr/local/bin/page", "--to", "on call", "$HOME"]
timeout = "5s"
"""


def test_installed_agent_delivers_and_refuses_to_run_by_hand(tmp_path):
    subprocess.run([sys.executable, "-m", "hapack.cli", "install", "--root", str(tmp_path)],
                   check=True, capture_output=True, text=True)
    agent = tmp_path / "usr/sbin/hapack-alert"
    assert os.access(agent, os.X_OK)
    by_hand = subprocess.run([str(agent)], capture_output=True, text=True, env={}, timeout=30)
    assert by_hand.returncode == 2 and "CRM_alert_" in by_hand.stderr
    with Webhook() as hook:
        env = {"CRM_alert_kind": "fencing", "CRM_alert_node": "node1", "CRM_alert_rc": "1",
               "CRM_alert_task": "off", "CRM_alert_desc": "Operation off of node1: Error",
               "CRM_alert_recipient": hook.url(), "CRM_alert_version": "2.1.5",
               "hapack_sink": "webhook", "hapack_cluster": "c", "hapack_deadline": "10"}
        done = subprocess.run([str(agent)], capture_output=True, text=True, env=env, timeout=30)
        assert done.returncode == 0, done.stderr
    body, = hook.bodies()
    assert (body["event"], body["node"], body["source"]) == ("fence_failed", "node1", "pacemaker")


def test_crm_loads_the_rendered_alert_into_the_same_cib(tmp_path):
    need_binary("crm")
    stack = loads(LAB + ALERTS, "stack.toml", check_agents=False)
    script = crm.render(stack, "stack.toml").decode()
    (tmp_path / "alert.crm").write_text(script[script.index("alert hapack"):])
    cib_file = tmp_path / "cib.xml"
    cib_file.write_text(subprocess.run(["cibadmin", "--empty"], capture_output=True, text=True,
                                       check=True).stdout)
    env = {**os.environ, "CIB_file": str(cib_file)}
    loaded = subprocess.run(["crm", "configure", "load", "update", str(tmp_path / "alert.crm")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    got = etree.fromstring(cib_file.read_bytes()).find("configuration/alerts")
    want = cibmod.build(stack, "stack.toml").find("configuration/alerts")
    assert cib_compare.diff(want, got) == ""
    assert [r.get("id") for r in got.iter("recipient")] == [
        r.get("id") for r in want.iter("recipient")]


def test_crm_verify_accepts_every_kind_of_recipient(tmp_path):
    need_binary("crm_verify")
    path = tmp_path / "cib.xml"
    path.write_bytes(cibmod.render(loads(LAB + ALERTS, "stack.toml", check_agents=False),
                                   "stack.toml"))
    verify = subprocess.run(["crm_verify", "-L", "-V"], capture_output=True, text=True,
                            env={**os.environ, "CIB_file": str(path)}, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
