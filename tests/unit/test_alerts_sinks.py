"""The alert sinks against real receivers on this machine (an HTTP server on 127.0.0.1, a
syslog unix socket, a command), Pacemaker's alert agent, and the dispatcher that never
blocks its caller."""

import base64
import io
import json
import socket
import threading
import time

import pytest

from alert_receivers import BlackHole, SyslogSocket, Webhook
from hapack import alertagent
from hapack.alerts import (AlertError, CommandSink, Dispatcher, Event, SyslogSink, WebhookSink,
                           shown_url)
from hapack.stack import loads
from pathlib import Path

SECRET = "Zq9-s3cr3t-Tok"
LAB = (Path(__file__).resolve().parents[2] / "examples" / "stack.toml").read_text()


def event(name="fence_failed", **kw):
    fields = dict(event=name, node="node1", desc="off of node1 by node2: Timer expired",
                  source="pacemaker", cluster="lab", reporter="node2", task="off", rc=1,
                  sequence=7, time=1_700_000_000.25)
    fields.update(kw)
    return Event(**fields)


def soon(seconds=10.0):
    return time.monotonic() + seconds


# -- webhook ----------------------------------------------------------------------------

def test_webhook_posts_the_event_as_json_with_headers_and_basic_auth():
    with Webhook() as hook:
        sink = WebhookSink(hook.url("/p?x=1", userinfo=f"ops:{SECRET}@"),
                           {"X-Token": SECRET, "X-Team": "ha"})
        sink.send(event(), soon())
    (path, headers, body), = hook.requests
    assert path == "/p?x=1"
    assert headers["Content-Type"] == "application/json" and headers["X-Token"] == SECRET
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"ops:{SECRET}".encode()).decode()
    assert body["event"] == "fence_failed" and body["kind"] == "fencing"
    assert {k: body[k] for k in ("node", "reporter", "cluster", "source", "task", "rc",
                                 "sequence", "version")} == {
        "node": "node1", "reporter": "node2", "cluster": "lab", "source": "pacemaker",
        "task": "off", "rc": 1, "sequence": 7, "version": 1}
    assert body["time"] == 1_700_000_000.25 and body["timestamp"].startswith("2023-11-14T")


def test_headers_file_is_read_when_sending(tmp_path):
    headers = tmp_path / "h"
    headers.write_text(f"# a comment\nAuthorization: Bearer {SECRET}\n\nX-A: b: c\n")
    with Webhook() as hook:
        WebhookSink(hook.url(), headers_file=str(headers)).send(event(), soon())
        (_, got, _), = hook.requests
        assert got["Authorization"] == f"Bearer {SECRET}" and got["X-A"] == "b: c"
        headers.unlink()
        with pytest.raises(AlertError, match="cannot read headers_file .*/h: No such file") as info:
            WebhookSink(hook.url(), headers_file=str(headers)).send(event(), soon())
        assert SECRET not in str(info.value)


def test_retries_after_a_server_error_then_succeeds():
    with Webhook(statuses=[500, 503, 200]) as hook:
        WebhookSink(hook.url(), retries=2, backoff=0.01).send(event(), soon())
    assert len(hook.requests) == 3


@pytest.mark.parametrize("statuses, retries, attempts", [
    ([500], 2, 3), ([429], 1, 2), ([404], 3, 1), ([401], 3, 1), ([500, 400], 3, 2)])
def test_gives_up_after_bounded_retries_and_not_on_a_client_error(statuses, retries, attempts):
    with Webhook(statuses=statuses) as hook:
        with pytest.raises(AlertError, match=fr"HTTP \d+ \(after {attempts} attempt"):
            WebhookSink(hook.url(), retries=retries, backoff=0.01).send(event(), soon())
    assert len(hook.requests) == attempts


def test_a_webhook_that_never_answers_ends_at_the_deadline():
    with BlackHole() as hole:
        sink = WebhookSink(hole.url(), timeout=5.0, retries=5, backoff=0.1)
        start = time.monotonic()
        with pytest.raises(AlertError, match="timed out|TimeoutError|timeout"):
            sink.send(event(), start + 0.6)
        assert time.monotonic() - start < 0.6 + 0.5   # the deadline holds, whatever the retries


def test_errors_never_show_the_url_beyond_its_host_nor_a_header():
    """Every way a delivery can fail, with secrets in the user info, the path, the query
    and a header: the message names scheme://host:port only."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    with Webhook(statuses=[500]) as hook, BlackHole() as hole:
        targets = [f"http://u:{SECRET}@127.0.0.1:{hook.port}/{SECRET}?t={SECRET}",
                   f"http://{SECRET}@127.0.0.1:{hole.port}/x?t={SECRET}",
                   f"http://127.0.0.1:{dead_port}/{SECRET}",
                   f"https://u:{SECRET}@127.0.0.1:{hook.port}/{SECRET}"]  # TLS to plain HTTP
        for url in targets:
            sink = WebhookSink(url, {"Authorization": f"Bearer {SECRET}"}, timeout=0.3, retries=1,
                               backoff=0.01)
            assert SECRET not in sink.shown
            with pytest.raises(AlertError) as info:
                sink.send(event(), soon(2))
            message = str(info.value)
            assert SECRET not in message and "127.0.0.1" in message, message
            assert message.startswith(f"webhook {shown_url(url)}:")


def test_shown_url_keeps_scheme_host_and_port_only():
    assert shown_url(f"https://u:{SECRET}@h.example:8443/a/{SECRET}?q={SECRET}#f") == \
        "https://h.example:8443"
    assert shown_url(f"http://{SECRET}@[2001:db8::1]/x") == "http://2001:db8::1"
    assert SECRET not in shown_url(f"http://h:bad{SECRET}/")


# -- syslog -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_syslog_line_to_a_unix_socket(tmp_path, kind):
    log = SyslogSocket(tmp_path / "log", kind)
    try:
        SyslogSink(log.path, "local3").send(event(), soon())
        SyslogSink(log.path, "daemon").send(event("node_back", node="node2"), soon())
        first, second = log.lines(2)
    finally:
        log.close()
    assert first.startswith(b"<155>")          # local3 (19) x 8 + err (3)
    assert second.startswith(b"<29>")          # daemon (3) x 8 + notice (5)
    assert b"hapack-alert[" in first
    assert b"lab: fence_failed on node1: off of node1 by node2: Timer expired (pacemaker on node2)" in first


def test_syslog_without_a_socket_is_an_error(tmp_path):
    with pytest.raises(AlertError, match="syslog .*/none: No such file"):
        SyslogSink(str(tmp_path / "none")).send(event(), soon())


# -- command ----------------------------------------------------------------------------

def script(tmp_path, body):
    path = tmp_path / "cmd.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_command_gets_the_event_in_crm_alert_variables(tmp_path):
    out = tmp_path / "env"
    cmd = script(tmp_path, f'env > {out}\n')
    CommandSink([cmd, "--team", "ha ops"]).send(
        event("resource_failed", rsc="db", task="monitor", extra={"interval": "10000",
                                                                  "target_rc": "0"}), soon())
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert {k: env[k] for k in ("CRM_alert_kind", "CRM_alert_node", "CRM_alert_rsc",
                                "CRM_alert_task", "CRM_alert_rc", "CRM_alert_interval",
                                "CRM_alert_target_rc", "CRM_alert_node_sequence",
                                "HAPACK_ALERT_EVENT", "HAPACK_ALERT_SOURCE")} == {
        "CRM_alert_kind": "resource", "CRM_alert_node": "node1", "CRM_alert_rsc": "db",
        "CRM_alert_task": "monitor", "CRM_alert_rc": "1", "CRM_alert_interval": "10000",
        "CRM_alert_target_rc": "0", "CRM_alert_node_sequence": "7",
        "HAPACK_ALERT_EVENT": "resource_failed", "HAPACK_ALERT_SOURCE": "pacemaker"}
    assert env["CRM_alert_recipient"] == f"{cmd} --team 'ha ops'"
    assert json.loads(env["HAPACK_ALERT_JSON"])["rsc"] == "db"
    assert env["CRM_alert_timestamp_epoch"] == "1700000000"


def test_command_failure_and_hang_are_errors_within_the_timeout(tmp_path):
    with pytest.raises(AlertError, match="command .*cmd.sh: exit 3: nope"):
        CommandSink([script(tmp_path, "echo nope >&2; exit 3\n")]).send(event(), soon())
    marker = tmp_path / "child-alive"
    hang = script(tmp_path, f"(sleep 5; touch {marker}) & sleep 30\n")
    start = time.monotonic()
    with pytest.raises(AlertError, match="no answer within"):
        CommandSink([hang], timeout=0.5).send(event(), soon())
    assert time.monotonic() - start < 5
    time.sleep(0.1)
    assert not marker.exists()   # its whole process group was killed
    with pytest.raises(AlertError, match="command /nonexistent: command not found"):
        CommandSink(["/nonexistent"]).send(event(), soon())


# -- Pacemaker's alert agent ------------------------------------------------------------

CRM = {
    "fence ok": ({"CRM_alert_kind": "fencing", "CRM_alert_node": "node1", "CRM_alert_rc": "0",
                  "CRM_alert_task": "off", "CRM_alert_desc": "Operation off of node1 by node2 "
                  "for pacemaker-controld.1@node2: OK"}, "fence_ok", "fencing"),
    "fence failed": ({"CRM_alert_kind": "fencing", "CRM_alert_node": "node1", "CRM_alert_rc": "1",
                      "CRM_alert_task": "off", "CRM_alert_desc": "Operation off of node1: "
                      "Error"}, "fence_failed", "fencing"),
    "node lost": ({"CRM_alert_kind": "node", "CRM_alert_node": "node1", "CRM_alert_desc": "lost",
                   "CRM_alert_nodeid": "1"}, "node_lost", "node"),
    "node member": ({"CRM_alert_kind": "node", "CRM_alert_node": "node1",
                     "CRM_alert_desc": "member"}, "node_back", "node"),
    "promote ok": ({"CRM_alert_kind": "resource", "CRM_alert_node": "node2",
                    "CRM_alert_rsc": "partition", "CRM_alert_task": "promote", "CRM_alert_rc": "0",
                    "CRM_alert_target_rc": "0", "CRM_alert_status": "0",
                    "CRM_alert_interval": "0", "CRM_alert_desc": "ok"}, "resource_ok", "resource"),
    "monitor not running": ({"CRM_alert_kind": "resource", "CRM_alert_node": "node2",
                             "CRM_alert_rsc": "db", "CRM_alert_task": "monitor",
                             "CRM_alert_rc": "7", "CRM_alert_target_rc": "0",
                             "CRM_alert_status": "0", "CRM_alert_interval": "10000",
                             "CRM_alert_desc": "not running"}, "resource_failed", "resource"),
    "probe found stopped": ({"CRM_alert_kind": "resource", "CRM_alert_node": "node2",
                             "CRM_alert_rsc": "db", "CRM_alert_task": "monitor",
                             "CRM_alert_rc": "7", "CRM_alert_target_rc": "7",
                             "CRM_alert_status": "0", "CRM_alert_interval": "0",
                             "CRM_alert_desc": "not running"}, "resource_ok", "resource"),
    "degraded promoted": ({"CRM_alert_kind": "resource", "CRM_alert_node": "node1",
                           "CRM_alert_rsc": "partition", "CRM_alert_task": "monitor",
                           "CRM_alert_rc": "191", "CRM_alert_target_rc": "8",
                           "CRM_alert_status": "0", "CRM_alert_interval": "10000",
                           "CRM_alert_desc": "r0 runs without its replica"},
                          "resource_degraded", "resource"),
    "degraded": ({"CRM_alert_kind": "resource", "CRM_alert_node": "node2",
                  "CRM_alert_rsc": "partition", "CRM_alert_task": "monitor",
                  "CRM_alert_rc": "190", "CRM_alert_target_rc": "0",
                  "CRM_alert_status": "0", "CRM_alert_interval": "20000",
                  "CRM_alert_desc": "r0 runs without its replica"}, "resource_degraded",
                 "resource"),
    "timed out": ({"CRM_alert_kind": "resource", "CRM_alert_node": "node2", "CRM_alert_rsc": "db",
                   "CRM_alert_task": "start", "CRM_alert_rc": "1", "CRM_alert_target_rc": "0",
                   "CRM_alert_status": "2", "CRM_alert_desc": "Timed Out"},
                  "resource_failed", "resource"),
    "attribute": ({"CRM_alert_kind": "attribute", "CRM_alert_node": "node1",
                   "CRM_alert_attribute_name": "master-partition",
                   "CRM_alert_attribute_value": "10"}, "attribute", "attribute"),
}


def agent_env(url, **extra):
    return {"CRM_alert_version": "2.1.5", "CRM_alert_recipient": url,
            "CRM_alert_node_sequence": "12", "CRM_alert_timestamp_epoch": "1700000000",
            "CRM_alert_timestamp_usec": "500000", "hapack_sink": "webhook",
            "hapack_cluster": "lab", "hapack_deadline": "5", "hapack_timeout": "1",
            "hapack_retries": "1", **extra}


@pytest.mark.parametrize("name", CRM)
def test_agent_maps_pacemakers_events_and_delivers(name):
    crm, expected, kind = CRM[name]
    with Webhook() as hook:
        err = io.StringIO()
        assert alertagent.deliver({**agent_env(hook.url()), **crm}, "node2", err) == 0, err.getvalue()
    body, = hook.bodies()
    assert (body["event"], body["kind"], body["source"], body["reporter"], body["cluster"]) == (
        expected, kind, "pacemaker", "node2", "lab")
    assert body["node"] == crm["CRM_alert_node"] and body["sequence"] == 12
    assert body["time"] == 1_700_000_000.5 and body["version"] == 1
    assert body["pacemaker_version"] == "2.1.5"
    if kind == "attribute":
        assert body["desc"] == "master-partition=10"


def test_agent_without_pacemaker_or_recipient():
    err = io.StringIO()
    assert alertagent.deliver({}, "n", err) == 2 and "CRM_alert_" in err.getvalue()
    assert alertagent.deliver({"CRM_alert_kind": "node", "hapack_sink": "webhook"}, "n", err) == 0
    err = io.StringIO()
    assert alertagent.deliver({**agent_env("x"), **CRM["node lost"][0], "hapack_sink": "mail"},
                              "n", err) == 2
    assert "hapack_sink is 'mail'" in err.getvalue()


def test_agent_finishes_before_its_deadline_and_says_why_without_secrets():
    with BlackHole() as hole:
        url = f"http://u:{SECRET}@127.0.0.1:{hole.port}/{SECRET}"
        err = io.StringIO()
        start = time.monotonic()
        rc = alertagent.deliver({**agent_env(url), **CRM["fence failed"][0], "hapack_deadline": "1",
                                 "hapack_timeout": "5", "hapack_retries": "3",
                                 "hapack_header_1": f"Authorization: Bearer {SECRET}"}, "n", err)
        elapsed = time.monotonic() - start
    assert rc == 1 and elapsed < 1 + 0.6
    assert SECRET not in err.getvalue()
    assert f"fence_failed on node1: webhook http://127.0.0.1:{hole.port}" in err.getvalue()


# -- the dispatcher: never blocks -------------------------------------------------------

class Stuck:
    """A sink that blocks until released, counting what it got."""

    shown = "stuck"

    def __init__(self):
        self.release = threading.Event()
        self.got = []

    def send(self, event, deadline):
        self.got.append(event)
        self.release.wait()


class Quick:
    shown = "quick"

    def __init__(self):
        self.got = []

    def send(self, event, deadline):
        self.got.append(event)


def test_a_stuck_sink_never_holds_up_the_caller_nor_the_other_sinks():
    stuck, quick, logged = Stuck(), Quick(), []
    with BlackHole() as hole:
        sinks = [stuck, quick, WebhookSink(hole.url(), timeout=30, retries=10)]
        dispatcher = Dispatcher(sinks, log=logged.append, queue_size=8, budgets=[60, 60, 60])
        try:
            returned = []
            for i in range(300):   # never released in this loop: a blocking submit never ends
                returned.append(dispatcher.submit(event(sequence=i)))
                deadline = time.monotonic() + 5
                while len(quick.got) <= i and time.monotonic() < deadline:
                    time.sleep(0.001)
            assert not stuck.release.is_set() and len(stuck.got) == 1
            assert len(quick.got) == 300   # the quick sink got every event, in order
            assert [e.sequence for e in quick.got] == list(range(300))
            counts = dispatcher.counts()
            assert counts["stuck"]["dropped"] >= 300 - 8 - 1 and not all(returned)
            assert any("stuck is not keeping up" in line for line in logged)
        finally:
            stuck.release.set()
            dispatcher.close(wait=0.5)


def test_dispatcher_applies_the_select_flags():
    quick = Quick()
    alerts = loads(LAB + '[alerts]\nselect_nodes = false\n[[alerts.recipients]]\nsink = "syslog"\n',
                   check_agents=False).alerts
    dispatcher = Dispatcher([quick], alerts=alerts)
    for name in ("node_lost", "fence_failed", "node_back", "resource_failed", "takeover_finished"):
        dispatcher.submit(event(name))
    dispatcher.close(wait=2)
    assert [e.event for e in quick.got] == ["fence_failed", "resource_failed", "takeover_finished"]


def test_a_sink_that_raises_does_not_end_its_lane():
    class Broken(Quick):
        shown = "broken"

        def send(self, event, deadline):
            super().send(event, deadline)
            if event.sequence % 2:
                raise RuntimeError("bug")
            raise AlertError("refused")
    broken, logged = Broken(), []
    dispatcher = Dispatcher([broken], log=logged.append)
    for i in range(6):
        dispatcher.submit(event(sequence=i))
    dispatcher.close(wait=2)
    assert len(broken.got) == 6 and dispatcher.counts()["broken"]["failed"] == 6
    assert any("internal error RuntimeError" in line for line in logged)
    assert any("refused" in line for line in logged)
