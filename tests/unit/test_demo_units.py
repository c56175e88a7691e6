"""Unit tests of the demo's pure parts: the lab's stack file, log times, the timeline,
the client's HTTP probe, the installed-agent check. (The demo itself runs in
tests/cluster/test_demo.py and test_failover.py.)"""

from __future__ import annotations

import http.server
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from hapack import demo
from hapack.lab import democlient, failover, provision
from hapack.stack import loads

pytestmark = pytest.mark.unit


@dataclass
class FakeBmc:
    address: str
    port: int = 623
    username: str = "admin"
    password_file: str = "/var/tmp/hapack-lab/x/bmc/pw"
    cipher: int = 3


class FakeDisk:
    fstype = "ext4"

    def device_for(self, node):
        return "/dev/loop7"


class FakeLab:
    name, nodes, token_ms = "x1", ("node1", "node2"), 1000
    shared_disk = FakeDisk()
    arbiter_addr = None            # no quorum device (Lab(qdevice=True) has one)
    client_addr = "198.18.0.50"

    def bmc(self, node):
        return FakeBmc(f"198.18.2.2{node[-1]}")

    @staticmethod
    def iface(link):
        return {"lan": "eth0", "hb": "eth1"}[link]

    def addr(self, node, link="lan"):
        return f"198.18.{ {'lan': 0, 'hb': 1}[link] }.1{node[-1]}"

    def prefixlen(self, link):
        return 24


def test_the_lab_stack_file_is_valid_and_renders_the_patent_topology():
    text = provision.stack_toml(FakeLab(), "198.18.0.100", "/var/tmp/hapack-lab/x1/shared/data")
    stack = loads(text, "stack.toml")  # checks every agent parameter against its declaration
    from hapack.cib import cib
    root = etree.fromstring(cib.render(stack, "stack.toml"))
    group = root.find(".//group[@id='g-stateful']")
    assert [p.get("id") for p in group.iterfind("primitive")] == \
        ["postgresql", "slapd", "activemq"]
    assert root.find("configuration/resources/primitive[@id='vip']").get("type") == "vip"
    assert root.find(".//clone[@id='cl-partition']/primitive").get("type") == "partition"
    fence = root.find(".//primitive[@id='fence-node1']")
    assert fence.get("type") == "fence_bmc"
    assert fence.find(".//nvpair[@name='ip']").get("value") == "198.18.2.21"
    props = {nv.get("name"): nv.get("value") for nv in root.iterfind(".//crm_config//nvpair")}
    assert props["stonith-action"] == "off"
    assert props.get("priority-fencing-delay", "0s") == "0s"  # off: the demo's timing target
    pgdata = root.find(".//primitive[@id='postgresql']//nvpair[@name='pgdata']").get("value")
    assert pgdata == "/var/tmp/hapack-lab/x1/shared/data/postgresql"


def test_a_qdevice_lab_stack_file_names_its_arbiter_and_renders_no_delay():
    lab = FakeLab()
    lab.arbiter_addr = "198.18.2.30"
    stack = loads(provision.stack_toml(lab, "198.18.0.100", "/srv/x"), "stack.toml")
    assert (stack.quorum.host, stack.quorum.algorithm) == ("198.18.2.30", "ffsplit")
    assert stack.quorum.heuristics.execs == (("ping1", "/bin/ping -q -n -c 1 -W 1 198.18.0.50"),)
    from hapack.cib import cib
    root = etree.fromstring(cib.render(stack, "stack.toml"))
    assert not [nv for nv in root.iterfind(".//crm_config//nvpair")
                if nv.get("name") == "priority-fencing-delay"]
    assert loads(provision.stack_toml(FakeLab(), "198.18.0.100", "/srv/x"), "s").quorum is None


def test_render_cib_keeps_the_lab_options(tmp_path):
    path = tmp_path / "stack.toml"
    path.write_text(provision.stack_toml(FakeLab(), "198.18.0.100", "/srv/x"))
    config = etree.fromstring(provision.render_cib(path, {"dc-deadtime": "2s",
                                                          "stonith-action": "reboot"}))
    assert config.tag == "configuration"
    props = {nv.get("name"): nv.get("value") for nv in config.iterfind("crm_config//nvpair")}
    assert props["dc-deadtime"] == "2s"
    assert props["stonith-action"] == "off"  # the stack file wins over a seed option


def test_log_times_and_the_first_matching_line(tmp_path):
    log = tmp_path / "corosync.log"
    log.write_text("Nov 24 23:25:41.017 [3] node2 corosync notice  [TOTEM ] Members joined: 2\n"
                   "garbage without a time\n"
                   "Nov 24 23:25:42.221 [3] node2 corosync notice  [TOTEM ] Members left: 1\n"
                   "Nov 24 23:25:43.000 [3] node2 corosync notice  [TOTEM ] Members left: 1\n")
    first = failover.log_time(log.read_text().splitlines()[0])
    assert failover.log_time("garbage") is None
    assert failover.first_line(log, first, r"Members left") == pytest.approx(first + 1.204)
    assert failover.first_line(log, first + 1.5, r"Members left") == pytest.approx(first + 1.983)
    assert failover.first_line(log, first + 5, r"Members left") is None
    assert failover.first_line(tmp_path / "missing.log", 0, "x") is None


def test_the_timeline_is_shown_in_time_order_with_its_total():
    line = failover.Timeline("power cut", "node1", "node2", 100.0, [
        failover.Step("power cut", 100.0, "BMC power log"),
        failover.Step("peer declared lost", 102.1, "corosync.log"),
        failover.Step("slapd healthy", 105.0, "probe"),
        failover.Step("full chain on the VIP", 103.5, "probe"),
        failover.Step("activemq healthy", None, "probe"),
    ])
    text = failover.format_timeline(line)
    order = [row.split()[0] for row in text.splitlines()[1:]]
    assert order == ["power", "peer", "full", "slapd", "activemq", "total"]
    assert "activemq healthy" in text and "(not seen)" in text
    assert line.total == pytest.approx(3.5)
    doc = line.as_json()
    assert doc["total_s"] == pytest.approx(3.5) and doc["steps"][1]["seconds"] == pytest.approx(2.1)


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"APP OK node2 db=down" if self.path == "/app/health.jsp" else b"nope"
            self.send_response(200 if self.path == "/app/health.jsp" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_client_http_probe_reads_status_and_body(http_server):
    cfg = {"vip": "127.0.0.1", "http_port": http_server, "path": "/app/health.jsp"}
    assert democlient.http_get("127.0.0.1", http_server, "/app/health.jsp", 2) == \
        (200, "APP OK node2 db=down")
    assert democlient.check_http(cfg) == "APP OK node2 db=down"
    with pytest.raises(RuntimeError, match="does not reach the database"):
        democlient.check_app_db(cfg)
    with pytest.raises(RuntimeError, match="HTTP 404"):
        democlient.check_http(dict(cfg, path="/other"))


def test_agents_the_nodes_cannot_run_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OCF_ROOT", str(tmp_path))
    agents = tmp_path / "resource.d" / "hapack"
    agents.mkdir(parents=True)
    for name in demo.AGENTS:
        wrapper = agents / name
        interpreter = "/tmp/venv/bin/python" if name == "vip" else "/usr/bin/python3"
        wrapper.write_text(f"#!{interpreter} -IS\n")
        wrapper.chmod(0o755)
    (agents / "slapd").unlink()
    problems = [p for p in demo.missing_agents() if "/usr/sbin/fence_bmc" not in p]
    assert problems == [f"{agents}/vip runs /tmp/venv/bin/python, which the lab's nodes cannot see",
                        f"{agents}/slapd is missing"]


def test_fencing_is_read_from_every_nodes_fencer_log(tmp_path):
    class Lab:
        nodes = ("node1", "node2")

        def node_dir(self, node):
            return tmp_path / node
    for node, lines in (("node1", [
            "Nov 25 00:34:32.577 node1 pacemaker-fenced    [22] (finalize_op) \tnotice: Operation "
            "'off' targeting node2 by node1 for pacemaker-controld.26@node1: OK (complete) | id=838a51c9",
            "Nov 25 00:35:00.000 node1 pacemaker-fenced    [22] (finalize_op) \tnotice: Operation "
            "'off' targeting node2 by node1 for pacemaker-controld.26@node1: Error | id=aaaa"]),
            ("node2", [
            "Nov 25 00:33:36.321 node2 pacemaker-fenced    [22] (finalize_op) \tnotice: Operation "
            "'off' targeting node2 by node1 for pacemaker-controld.26@node1: OK (complete) | id=11112222",
            "Nov 25 00:34:32.580 node2 pacemaker-fenced    [22] (finalize_op) \tnotice: Operation "
            "'off' targeting node2 by node1 for pacemaker-controld.26@node1: OK (complete) | id=838a51c9"])):
        log = tmp_path / node / "var-log" / "pacemaker" / "pacemaker.log"
        log.parent.mkdir(parents=True)
        log.write_text("\n".join(lines) + "\n")
    since = failover.log_time("Nov 25 00:34:00.000 x")
    events = failover.fenced_since(Lab(), "node2", since)
    assert [(e["action"], e["origin"]) for e in events] == [("off", "node1")]  # one op, two logs
    assert len(failover.fenced_since(Lab(), "node2", 0)) == 2
    assert failover.fenced_since(Lab(), "node1", 0) == []


def test_a_bad_lab_name_is_refused_before_anything_is_built(capsys):
    assert demo.main(["--name", "Demo!"]) == 2
    assert "lab name 'Demo!' is not valid" in capsys.readouterr().err
