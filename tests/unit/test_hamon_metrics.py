"""hamon's Prometheus metrics: the exposition, the counters, the address, the server.

The exposition is read back with the strict reader of tests/exposition.py;
the counters come from two daemons on a fake clock (test_hamon_daemon.Pair);
the server is the real one on loopback, under slow and hostile clients,
next to a real daemon loop (``Daemon.run``) whose ticks are timed.
"""

import io
import math
import os
import pathlib
import random
import re
import signal
import socket
import threading
import time

import pytest

import exposition
from test_hamon_daemon import (EXAMPLE, KEYS, Clock, FakeAgents, FakeBmc, Pair,  # noqa: F401
                               pair)  # the running pair fixture

from hapack.hamon import metrics
from hapack.hamon.config import Config, load_config, settings
from hapack.hamon.daemon import Daemon, fresh_window
from hapack.hamon.events import EventLog
from hapack.hamon.fence import FenceFailed
from hapack.hamon.metrics import MetricsServer, family
from hapack.hamon.states import State
from hapack.hamon.transport import Hub, MemoryTransport
from hapack.stack import StackError, loads

#: The names ha_cluster_exporter has (docs: /work/shared/reference/operations.md); hamon
#: uses these where the meaning is the same, and its own ``hamon_`` names otherwise.
EXPORTER = {"ha_cluster_pacemaker_nodes", "ha_cluster_pacemaker_resources",
            "ha_cluster_pacemaker_fail_count", "ha_cluster_pacemaker_migration_threshold",
            "ha_cluster_pacemaker_stonith_enabled"}
TYPES = {
    "hamon_info": "gauge", "hamon_state": "gauge", "hamon_active": "gauge",
    "hamon_state_seconds": "gauge", "hamon_uptime_seconds": "gauge",
    "hamon_generation": "gauge", "hamon_takeovers_total": "counter",
    "ha_cluster_pacemaker_stonith_enabled": "gauge", "ha_cluster_pacemaker_nodes": "gauge",
    "hamon_peer_power": "gauge", "hamon_peer_worst_gap_seconds": "gauge",
    "hamon_link_up": "gauge", "hamon_link_last_heartbeat_age_seconds": "gauge",
    "hamon_link_loss_ratio": "gauge", "hamon_link_worst_gap_seconds": "gauge",
    "hamon_heartbeats_accepted_total": "counter", "hamon_heartbeats_rejected_total": "counter",
    "hamon_heartbeat_send_errors_total": "counter", "hamon_fence_attempts_total": "counter",
    "ha_cluster_pacemaker_resources": "gauge", "hamon_resource_status": "gauge",
    "ha_cluster_pacemaker_fail_count": "gauge",
    "ha_cluster_pacemaker_migration_threshold": "gauge", "hamon_resource_degraded": "gauge",
}
FAILOVER = {"hamon_last_failover_timestamp_seconds", "hamon_last_failover_duration_seconds",
            "hamon_last_failover_step_start_seconds", "hamon_last_failover_step_end_seconds",
            "hamon_last_failover_step_ok"}
#: Families with one line per possible value, exactly one of them 1 (per label group).
ONE_HOT = {"hamon_state": (), "hamon_peer_power": (), "hamon_resource_status": ("resource",)}


def scrape(daemon):
    return exposition.parse(metrics.render(metrics.families(metrics.read(daemon))).decode())


def v(fams, name, **labels):
    return exposition.value(fams, name, **labels)


# -- the exposition --------------------------------------------------------------------

def test_names_and_types_of_every_family(pair):
    pair.power_off("node1")
    pair.run(2)
    fams = scrape(pair["node2"])
    assert {n: f.kind for n, f in fams.items() if n not in FAILOVER} == TYPES
    assert FAILOVER <= set(fams)
    for name in fams:
        assert name in EXPORTER or name.startswith("hamon_"), name
    for name, f in fams.items():
        assert f.help and "\n" not in f.help


SPELLINGS = ['plain', 'with "quotes"', 'back\\slash', 'new\nline', 'all \\"\n\\n of them',
             '\\', '"', '\n', '', 'trailing \\', 'ünï €', '}{,=', 'a="b",c="d"']


@pytest.mark.parametrize("text", SPELLINGS)
def test_label_values_and_help_are_escaped_and_read_back(text):
    f = family("hamon_test", "gauge", f"help {text}", [({"a": text, "b": "x"}, 1.5)])
    fams = exposition.parse(metrics.render([f]).decode())
    assert fams["hamon_test"].help == f"help {text}"
    assert dict(next(iter(fams["hamon_test"].samples))) == {"a": text, "b": "x"}


def test_random_label_values_survive_the_round_trip():
    rng = random.Random(17)
    alphabet = 'ab\\"\n{}=, \t\u00e9\u20ac#'
    for _ in range(500):
        values = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
                  for _ in range(3)]
        f = family("hamon_x_total", "counter", "".join(values),
                   [({"v": val, "n": i}, i) for i, val in enumerate(values)])
        fams = exposition.parse(metrics.render([f]).decode())
        got = {dict(k)["n"]: dict(k)["v"] for k in fams["hamon_x_total"].samples}
        assert got == {str(i): val for i, val in enumerate(values)}


GOOD = '# HELP a_total h\n# TYPE a_total counter\na_total{x="1"} 2\n'


@pytest.mark.parametrize("text", [
    GOOD.rstrip("\n"), GOOD + GOOD, GOOD.replace("# HELP a_total h\n", ""),
    GOOD.replace("a_total", "a"), GOOD + 'a_total{x="1"} 3\n', GOOD + "b 1\n",
    GOOD.replace('"1"', '"\\q"'), GOOD.replace('"1"', '"1",'), GOOD.replace(" 2", " two"),
    GOOD.replace('{x="1"}', '{x=1}'), GOOD.replace('{x="1"}', '{x="1",x="2"}'),
    GOOD.replace("counter", "gauge"), GOOD + "# random comment\n"])
def test_the_strict_reader_refuses_what_the_format_does_not_allow(text):
    """The reader the other tests rely on can fail."""
    exposition.parse(GOOD)
    with pytest.raises(exposition.ExpositionError):
        exposition.parse(text)


@pytest.mark.parametrize("value, text", [(1, "1"), (True, "1"), (False, "0"), (0.25, "0.25"),
                                         (math.inf, "+Inf"), (-math.inf, "-Inf"),
                                         (math.nan, "NaN"), (1e-7, "1e-07"), (3, "3")])
def test_numbers(value, text):
    assert metrics.number(value) == text
    assert metrics.render([family("hamon_n", "gauge", "n", [({}, value)])]).decode() \
        .endswith(f"\nhamon_n {text}\n")


@pytest.mark.parametrize("name, kind, labels", [
    ("hamon_count", "counter", {}), ("hamon_x_total", "gauge", {}), ("1abc", "gauge", {}),
    ("hamon-x", "gauge", {}), ("hamon_x", "histogram", {}), ("hamon_x", "gauge", {"a-b": 1}),
    ("hamon_x", "gauge", {"__name": 1}), ("hamon_x", "gauge", {"1a": 1})])
def test_a_bad_family_is_refused(name, kind, labels):
    with pytest.raises(ValueError):
        family(name, kind, "h", [(labels, 1)])


def test_every_reason_a_packet_is_dropped_for_is_declared():
    """Each counter exists at 0 from the start, so that rate() sees the first one."""
    import hapack.hamon.packet as packet
    import hapack.hamon.transport as transport
    source = "".join(pathlib.Path(m.__file__).read_text() for m in (packet, transport))
    reasons = set(re.findall(r'Rejected\("([a-z-]+)"', source)) | set(
        re.findall(r'rejected\["([a-z-]+)"\]', source))
    assert reasons and reasons == set(metrics.REJECT_REASONS)


# -- the counters, from the daemons ------------------------------------------------------

def test_power_loss_takeover_counters_and_the_failover_steps(pair):
    before = scrape(pair["node2"])
    assert v(before, "hamon_takeovers_total") == 0
    assert v(before, "hamon_state", state="secondary") == 1
    pair.power_off("node1")
    pair.run(2)
    fams = scrape(pair["node2"])
    assert v(fams, "hamon_state", state="primary") == 1 and v(fams, "hamon_active") == 1
    assert v(fams, "hamon_takeovers_total") == 1
    assert v(fams, "hamon_fence_attempts_total", action="status", result="ok") == 1
    assert v(fams, "hamon_fence_attempts_total", action="off", result="ok") == 0
    assert v(fams, "hamon_peer_power", state="off") == 1
    assert v(fams, "ha_cluster_pacemaker_nodes", node="node1", status="online") == 0
    assert v(fams, "ha_cluster_pacemaker_nodes", node="node1", status="unclean") == 0
    assert v(fams, "ha_cluster_pacemaker_nodes", node="node2", status="online") == 1
    for link in ("lan", "hb"):
        assert v(fams, "hamon_link_up", link=link) == 0
        assert v(fams, "hamon_link_last_heartbeat_age_seconds", link=link) >= 1.2
        assert v(fams, "hamon_heartbeats_accepted_total", link=link) > 10
    timeline = pair["node2"].world.timelines["takeover"]["steps"]
    starts = exposition.select(fams, "hamon_last_failover_step_start_seconds")
    assert sorted((int(dict(k)["seq"]), dict(k)["step"], x) for k, x in starts.items()) == [
        (i, s["step"], s["start"]) for i, s in enumerate(timeline)]
    ends = {dict(k)["step"]: x for k, x in
            exposition.select(fams, "hamon_last_failover_step_end_seconds").items()}
    assert ends["start vip"] <= ends["promote partition"] <= ends["start slapd"] <= ends["end"]
    assert v(fams, "hamon_last_failover_duration_seconds") == ends["end"]
    assert v(fams, "ha_cluster_pacemaker_resources", resource="partition", status="active",
             role="promoted", node="node2") == 1
    assert v(fams, "hamon_resource_status", resource="slapd", status="started") == 1


def test_the_secondary_sees_its_partition_unpromoted_and_the_peer_online(pair):
    fams = scrape(pair["node2"])
    assert v(fams, "ha_cluster_pacemaker_resources", resource="partition", status="active") == 1
    assert dict(next(iter(exposition.select(fams, "ha_cluster_pacemaker_resources",
                                            resource="partition"))))["role"] == "unpromoted"
    assert v(fams, "hamon_resource_status", resource="slapd", status="stopped") == 1
    assert v(fams, "ha_cluster_pacemaker_nodes", node="node1", status="online") == 1
    assert v(fams, "hamon_link_up", link="lan") == 1
    assert v(fams, "hamon_link_last_heartbeat_age_seconds", link="lan") <= 0.25


def test_all_links_cut_the_holder_fences_ok(pair):
    pair.cut("node1", 0, 1)
    pair.run(4)
    fams = scrape(pair["node1"])
    assert v(fams, "hamon_fence_attempts_total", action="off", result="ok") == 1
    assert v(fams, "hamon_takeovers_total") == 1   # its cold start: no second takeover
    assert v(fams, "hamon_peer_power", state="off") == 1


def test_bmc_unreachable_counts_failed_attempts_and_shows_blocked(pair):
    pair["node2"].actor.fencer.reachable = False
    pair.power["node1"] = False
    pair.run(10)
    fams = scrape(pair["node2"])
    assert v(fams, "hamon_state", state="blocked") == 1
    failed = v(fams, "hamon_fence_attempts_total", action="off", result="failed")
    assert failed >= 3 and v(fams, "hamon_fence_attempts_total", action="off", result="ok") == 0
    assert v(fams, "ha_cluster_pacemaker_nodes", node="node1", status="unclean") == 1
    assert v(fams, "ha_cluster_pacemaker_resources", resource="partition", status="active") == 1
    pair["node2"].actor.fencer.reachable = True
    pair.run(6)
    fams = scrape(pair["node2"])
    assert v(fams, "hamon_state", state="primary") == 1
    assert v(fams, "hamon_fence_attempts_total", action="off", result="failed") == failed
    assert v(fams, "hamon_fence_attempts_total", action="off", result="ok") == 1
    assert v(fams, "hamon_takeovers_total") == 1   # blocked -> takeover is the same one


def test_rejected_packets_by_reason(pair):
    from hapack.hamon.packet import Heartbeat, Keyring, Status, encode
    forger = Keyring.parse("auth 1\n1 a-guessed-secret-000\n")
    for n in range(7):
        forged = Heartbeat(0, 10**9, n, 0, 0, n, Status("node1", "primary", active=True))
        pair.hub.inject("node2", 0, encode(forger, forged))
        pair.hub.inject("node2", 1, b"short")
    pair.run(0.1)
    fams = scrape(pair["node2"])
    assert v(fams, "hamon_heartbeats_rejected_total", reason="bad-mac") == 7
    assert v(fams, "hamon_heartbeats_rejected_total", reason="malformed") == 7
    assert v(fams, "hamon_heartbeats_rejected_total", reason="wrong-source") == 0


def test_a_failing_layer_shows_failed_and_its_fail_count(pair):
    pair.agents("node1").broken.add("postgresql")
    for _ in range(200):
        pair.run(0.05)
        fams = scrape(pair["node1"])
        if v(fams, "ha_cluster_pacemaker_fail_count", resource="postgresql") == 1:
            break
    else:
        raise AssertionError("the monitor failure was never counted")
    assert v(fams, "ha_cluster_pacemaker_migration_threshold", resource="postgresql") == 3
    pair.run(1)
    fams = scrape(pair["node1"])   # restarted in place: counted, and running again
    assert v(fams, "ha_cluster_pacemaker_fail_count", resource="postgresql") == 1
    assert v(fams, "hamon_resource_status", resource="postgresql", status="started") == 1


def test_maintenance_shows_unmanaged(pair):
    from hapack.hamon import report
    report.handle(pair["node1"], {"cmd": "maintenance", "on": True})
    pair.run(1)
    fams = scrape(pair["node1"])
    assert v(fams, "ha_cluster_pacemaker_nodes", node="node1", status="maintenance") == 1
    assert set(dict(k)["managed"] for k in fams["ha_cluster_pacemaker_resources"].samples) \
        == {"false"}
    assert v(scrape(pair["node2"]), "ha_cluster_pacemaker_nodes", node="node1",
             status="maintenance") == 1


FAULTS = ("power_off", "cut_one", "cut_all", "heal", "freeze", "thaw", "bmc_down", "bmc_up",
          "standby", "unstandby", "break_layer", "power_on")


def _fault(pair, rng, name):
    node = rng.choice(("node1", "node2"))
    if name == "power_off":
        pair.power_off(node)
    elif name == "power_on":
        pair.power[node] = True
    elif name == "cut_one":
        pair.cut(node, rng.randrange(2))
    elif name == "cut_all":
        pair.cut(node, 0, 1)
    elif name == "heal":
        pair.hub.cut.clear()
    elif name == "freeze":
        pair.frozen.add(node)
    elif name == "thaw":
        pair.frozen.discard(node)
    elif name in ("bmc_down", "bmc_up"):
        pair[node].actor.fencer.reachable = name == "bmc_up"
    elif name in ("standby", "unstandby"):
        pair[node].world.standby = name == "standby"
    else:
        pair.agents(node).broken.add(rng.choice(("postgresql", "apache", "slapd")))


def _check(fams, last):
    """The invariants of one scrape; returns the counters, to compare with the next."""
    for name, groups in ONE_HOT.items():
        by_group = {}
        for k, x in fams[name].samples.items():
            key = tuple(dict(k)[g] for g in groups)
            by_group[key] = by_group.get(key, 0) + x
        assert set(by_group.values()) == {1}, (name, by_group)
    counters = {(n, k): x for n, f in fams.items() if f.kind == "counter"
                for k, x in f.samples.items()}
    for key, x in counters.items():
        assert x >= last.get(key, 0), f"counter {key} went down: {last.get(key)} -> {x}"
        assert x == int(x) and x >= 0
    return counters


@pytest.mark.parametrize("seed", range(6))
def test_counters_never_go_down_and_one_hot_families_stay_one_hot(tmp_path, seed):
    """Random faults on the pair; a scrape of both nodes after every step."""
    rng = random.Random(seed)
    pair = Pair(str(tmp_path))
    last = {"node1": {}, "node2": {}}
    for _ in range(60):
        if rng.random() < 0.4:
            _fault(pair, rng, rng.choice(FAULTS))
        pair.run(rng.choice((0.05, 0.2, 0.5, 1.0)))
        for node in ("node1", "node2"):
            if pair.power[node]:
                last[node] = _check(scrape(pair[node]), last[node])


# -- no secret, ever --------------------------------------------------------------------

PASSWORD = "Bmc-Pa55word-never-shown"


class LeakyBmc(FakeBmc):
    """A BMC whose failures echo the password (as a careless agent's output might)."""

    def off(self):
        self.calls.append("off")
        raise FenceFailed(f"login as admin/{PASSWORD} refused")

    status = off


class SecretPair(Pair):
    def __init__(self, tmp):
        text = EXAMPLE.read_text()
        text = re.sub(r'password_file = "[^"]*"', f'password = "{PASSWORD}"', text)
        text += f'\n[hamon]\nstate_dir = "{tmp}"\n'
        stack = loads(text, check_agents=False)
        self.hub, self.clock = Hub(), Clock()
        self.power = {"node1": True, "node2": True}
        self.frozen, self.nodes, self.tmp, self.generations = set(), {}, tmp, {}
        for i, name in enumerate(("node1", "node2")):
            self.nodes[name] = self._daemon(Config(stack, name, settings(stack.hamon)), i, tmp)
            self.nodes[name].actor.fencer = LeakyBmc(self, self.nodes[name].config.peer.name)


def test_neither_the_key_nor_the_bmc_password_is_ever_exported(tmp_path):
    pair = SecretPair(str(tmp_path))
    assert pair["node1"].config.peer.bmc.password == PASSWORD
    pair.run(3)
    pair.cut("node1", 0, 1)     # both fence; every fence fails, echoing the password
    pair.run(12)
    assert pair["node1"].world.bmc_results, "no fence was tried"
    server = MetricsServer("127.0.0.1", 0).start()
    try:
        server.publish(pair["node1"])
        text = server.body().decode()
        got = http_get(server.address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        server.close()
    assert "hamon_fence_attempts_total" in text and b"hamon_fence_attempts_total" in got
    secret = KEYS.keys[1].decode()
    for shown in (text, got.decode()):
        assert PASSWORD not in shown and secret not in shown
        assert "Pa55word" not in shown and secret[:8] not in shown


# -- the address ------------------------------------------------------------------------

@pytest.mark.parametrize("text, host, port", [
    ("127.0.0.1:9665", "127.0.0.1", 9665), ("[::1]:9665", "::1", 9665),
    ("0.0.0.0:1", "0.0.0.0", 1), ("lan:65535", "lan", 65535), ("hb-2:9664", "hb-2", 9664),
    ("198.18.240.11:9664", "198.18.240.11", 9664), ("[2001:db8::1]:80", "2001:db8::1", 80)])
def test_metrics_address_spellings(text, host, port):
    end = metrics.parse_address(text)
    assert (end.host, end.port) == (host, port)
    assert settings({"metrics_address": text}).metrics_address == text


@pytest.mark.parametrize("text", [
    "127.0.0.1", "127.0.0.1:", ":9665", "127.0.0.1:0", "127.0.0.1:65536", "::1:9665",
    "[::1]9665", "[127.0.0.1]:9665", "lan", "la n:9665", "1lan:9665", "127.0.0.1:96x5",
    "http://127.0.0.1:9665", "127.0.0.1:9665/metrics", "[::1]:", "lan:-1", "lan:+80",
    "localhost.:9665", "999.1.1.1:9665"])
def test_bad_metrics_addresses_are_refused_naming_the_key(text):
    with pytest.raises(StackError) as info:
        settings({"metrics_address": text}, "stack.toml")
    assert info.value.key == "hamon.metrics_address" and "HOST:PORT" in info.value.message


def test_metrics_are_off_by_default_and_a_link_resolves_per_node(tmp_path):
    assert settings({}).metrics_address == "" and load_config(EXAMPLE, "node1") \
        .metrics_endpoint is None
    path = tmp_path / "stack.toml"
    path.write_text(EXAMPLE.read_text() + '\n[hamon]\nmetrics_address = "lan:9665"\n')
    for node, address in (("node1", "198.18.240.11"), ("node2", "198.18.240.12")):
        end = load_config(path, node).metrics_endpoint
        assert (end.host, end.port) == (address, 9665)
    path.write_text(EXAMPLE.read_text() + '\n[hamon]\nmetrics_address = "wan:9665"\n')
    with pytest.raises(StackError) as info:
        load_config(path, "node1")
    assert info.value.key == "hamon.metrics_address" and "lan, hb" in info.value.message


def _installed_stack(tmp_path, metrics_address):
    """A stack file whose agents and fence agent exist (so ``hamon run`` gets past them)."""
    ocf = tmp_path / "ocf"
    config = load_config(EXAMPLE, "node1")
    from hapack.hamon.ocfexec import OcfExecutor, stack_resources
    executor = OcfExecutor(str(ocf), "node1", None)
    for r in stack_resources(config.stack)[0:1] + tuple(
            x for group in stack_resources(config.stack)[1:] for x in group):
        path = pathlib.Path(executor.path(r))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 7\n")
        path.chmod(0o755)
    key = tmp_path / "hamon.key"
    key.write_text("auth 1\n1 0123456789abcdef0123\n")
    key.chmod(0o600)
    stack = tmp_path / "stack.toml"
    stack.write_text(EXAMPLE.read_text() + f'\n[hamon]\nkey_file = "{key}"\n'
                     f'state_dir = "{tmp_path}/state"\nrun_dir = "{tmp_path}/run"\n'
                     f'event_log = "{tmp_path}/log/events.jsonl"\n'
                     f'ocf_root = "{ocf}"\nfence_agent = "/bin/true"\n'
                     f'metrics_address = "{metrics_address}"\n')
    return stack


def test_hamon_run_refuses_an_address_it_cannot_listen_on(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("hamon run needs root")
    from hapack.hamon import cli
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        stack = _installed_stack(tmp_path, f"127.0.0.1:{port}")
        assert cli.main(["run", "--config", str(stack), "--node", "node1"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"refusing to start: metrics_address: cannot listen on 127.0.0.1:{port}" in err
    assert not (tmp_path / "state").exists() and not (tmp_path / "log").exists()
    stack = _installed_stack(tmp_path, "127.0.0.1:9665x")
    assert cli.main(["run", "--config", str(stack), "--node", "node1"]) == cli.EXIT_CONFIG
    assert "hamon.metrics_address" in capsys.readouterr().err


# -- the server -------------------------------------------------------------------------

def http_get(address, request, timeout=10.0):
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def split(response):
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def server(pair):
    s = MetricsServer("127.0.0.1", 0)
    s.publish(pair["node2"])
    s.start()
    yield s
    s.close()


def test_get_metrics_answers_the_exposition(server):
    code, headers, body = split(http_get(server.address, b"GET /metrics HTTP/1.1\r\n"
                                         b"Host: node2\r\nAccept: */*\r\n\r\n"))
    assert code == 200 and headers["Content-Type"] == metrics.CONTENT_TYPE
    fams = exposition.parse(body.decode())
    assert v(fams, "hamon_state", state="secondary") == 1
    assert 0 <= v(fams, "hamon_metrics_age_seconds") < 5
    code, _, body = split(http_get(server.address, b"GET /metrics?x=1 HTTP/1.0\n\n"))
    assert code == 200 and b"hamon_state{" in body


@pytest.mark.parametrize("request_, code", [
    (b"GET / HTTP/1.1\r\n\r\n", 404), (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 404),
    (b"HEAD /metrics HTTP/1.1\r\n\r\n", 404), (b"GET /../metrics HTTP/1.1\r\n\r\n", 404),
    (b"get /metrics HTTP/1.1\r\n\r\n", 404), (b"GET /metrics\r\n\r\n", 400),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", 400), (b"\r\n\r\n", 400),
    (b"\x00\xff\xfe garbage\r\n\r\n", 400), (b"GET /metrics SPDY/3\r\n\r\n", 400),
])
def test_only_get_metrics(server, request_, code):
    got, _, body = split(http_get(server.address, request_))
    assert got == code and b"hamon_" not in body


def test_a_huge_request_is_cut_off_at_the_limit(server):
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        sent = 0
        try:
            while sent < 4 * 1024 * 1024:
                sock.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
                sent += 1009
        except (BrokenPipeError, ConnectionResetError):
            pass            # the server closed it: what it had not read is refused
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert sent < 4 * 1024 * 1024, "the server read a 4 MiB request"


def _slowloris(address, stop, held):
    """Open a connection and send a request one byte every 50 ms, never finishing."""
    try:
        with socket.create_connection(address, timeout=5) as sock:
            held.append(sock)
            for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 10_000:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
    except OSError:
        pass


def test_idle_and_slow_clients_are_dropped_at_the_deadline(server, monkeypatch):
    monkeypatch.setattr(metrics, "CLIENT_DEADLINE", 0.5)
    idle = socket.create_connection(server.address, timeout=10)
    stop, held = threading.Event(), []
    slow = threading.Thread(target=_slowloris, args=(server.address, stop, held))
    slow.start()
    try:
        started = time.monotonic()
        assert idle.recv(10) == b""   # closed by the server, not by us
        assert time.monotonic() - started < 8
        slow.join(timeout=10)
        assert not slow.is_alive(), "the slow client was never cut off"
    finally:
        stop.set()
        idle.close()


def test_more_clients_than_slots_evict_the_oldest_and_a_scrape_still_answers(server):
    stop, held = threading.Event(), []
    threads = [threading.Thread(target=_slowloris, args=(server.address, stop, held))
               for _ in range(3 * metrics.MAX_CLIENTS)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        code, _, body = split(http_get(server.address, b"GET /metrics HTTP/1.1\r\n\r\n"))
        assert code == 200 and b"hamon_state" in body
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


# -- the server never holds up the loop ----------------------------------------------------

def _real_daemon(tmp_path):
    """One daemon on the real clock with its peer silent: the loop ticks on its own."""
    stack = loads(EXAMPLE.read_text() + f'\n[hamon]\nstate_dir = "{tmp_path}"\n',
                  check_agents=False)
    cfg = Config(stack, "node1", settings(stack.hamon))
    hub = Hub()
    hub.attach("node2")  # a peer that never answers
    transport = MemoryTransport(hub, "node1", KEYS, 100, "node2", len(cfg.links),
                                fresh_window(cfg.settings, len(cfg.links)))
    pair = type("P", (), {"power": {"node2": True}, "power_off": lambda self, n: None})()
    d = Daemon(cfg, transport, FakeAgents(), FakeBmc(pair, "node2"),
               EventLog("node1", None, stream=io.StringIO()))
    d.actor.confirmation_file = ""
    return d


def test_ticks_go_on_while_clients_hold_the_server(tmp_path):
    """The real loop (Daemon.run) with the metrics server under slowloris clients, a
    client that never reads its answer and a flood of requests: the loop keeps ticking
    (timed by wrapping tick) and a scrape sees a fresh reading."""
    daemon = _real_daemon(tmp_path)
    server = MetricsServer("127.0.0.1", 0).start()
    daemon.metrics = server
    ticks, tick = [], daemon.tick

    def timed():
        ticks.append(time.monotonic())
        return tick()
    daemon.tick = timed
    stop, held = threading.Event(), []
    clients = [threading.Thread(target=_slowloris, args=(server.address, stop, held))
               for _ in range(metrics.MAX_CLIENTS)]
    result = {}

    def attack_then_stop():
        for t in clients:
            t.start()
        time.sleep(1.0)
        during = len(ticks)
        result["scrape"] = http_get(server.address, b"GET /metrics HTTP/1.1\r\n\r\n")
        time.sleep(1.0)
        result["during"] = len(ticks) - during
        daemon.running = False
        daemon.wake()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    attacker = threading.Thread(target=attack_then_stop)
    attacker.start()
    try:
        daemon.run()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        stop.set()
        attacker.join(timeout=10)
        for t in clients:
            t.join(timeout=10)
        server.close()
    assert len(held) == metrics.MAX_CLIENTS and daemon.tick_errors == 0
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert result["during"] >= 10, "the loop stopped ticking while clients held the server"
    assert max(gaps) < 1.0, f"a tick waited {max(gaps):.3f}s"  # generous: ticks are 50 ms
    code, _, body = split(result["scrape"])
    fams = exposition.parse(body.decode())
    assert code == 200 and v(fams, "hamon_metrics_age_seconds") < 1.0
    assert v(fams, "hamon_state", state="starting") == 1


def test_publish_is_one_reading_per_tick_and_the_server_never_touches_the_daemon(pair):
    class Spy:
        def __init__(self):
            self.readings = []

        def publish(self, daemon):
            self.readings.append(metrics.read(daemon))
    spy = Spy()
    pair["node2"].metrics = spy
    pair.run(1)
    assert len(spy.readings) == 20
    assert all(isinstance(r, metrics.Reading) for r in spy.readings)
    with pytest.raises(AttributeError):
        spy.readings[0].state = State.PRIMARY  # frozen
