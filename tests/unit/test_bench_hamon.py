"""bench/bench_hamon.py's PostgreSQL figure (issue 19): the rig's stack with and without
the PostgreSQL layer, the client's first answer after the cut, and the medians, ratios and
targets of the JSON document (no lab: synthetic runs and events)."""

import importlib.util
import json
import random
import statistics
from pathlib import Path

import pytest

from hapack.lab import democlient, failover, provision
from hapack.lab.hamonrig import Rig
from hapack.stack import loads

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_hamon", ROOT / "bench" / "bench_hamon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


class FakeBmc:
    address, port, username, password_file, cipher = "198.18.2.21", 623, "admin", "/x/pw", 3


class FakeDisk:
    device, fstype = "/dev/loop7", "ext4"


class FakeLab:
    name, nodes = "x1", ("node1", "node2")
    shared_disk = FakeDisk()

    def __init__(self, tmp):
        self.shared_dir = tmp

    def free_vip(self, index):
        return "198.18.0.100"

    def bmc(self, node):
        return FakeBmc()

    @staticmethod
    def iface(link):
        return {"lan": "eth0", "hb": "eth1"}[link]

    def addr(self, node, link):
        return f"198.18.{ {'lan': 0, 'hb': 1}[link] }.1{node[-1]}"

    def prefixlen(self, link):
        return 24

    @staticmethod
    def responder_argv(ip, port):
        return ["/usr/bin/python3", "-I", "/lab/responder.py", ip, str(port)]


# -- the rig -------------------------------------------------------------------------
@pytest.mark.parametrize("postgresql", [False, True])
@pytest.mark.parametrize("slow", [False, True])
def test_the_rig_adds_the_demos_postgresql_layer_only_when_asked(tmp_path, postgresql, slow):
    rig = Rig(FakeLab(tmp_path), slow=slow, postgresql=postgresql)
    stack = loads(rig.stack_text(), "stack.toml")
    names = [layer.name for layer in stack.layers]
    assert names == (["web", "postgresql", "ldap"] if postgresql else ["web", "ldap"])
    if postgresql:
        pg = next(layer for layer in stack.layers if layer.name == "postgresql")
        assert pg.kind == "stateful" and pg.agent == "ocf:hapack:postgresql"
        assert pg.data_dir == f"{rig.data}/postgresql"  # on the partition
        assert pg.params["port"] == str(provision.PG_PORT)
        assert pg.params["credentials_file"] == "/etc/hapack/cred/postgresql"
        config = rig.client_config()
        assert config["vip"] == rig.vip and config["pg_port"] == provision.PG_PORT
        assert config["pg_password"] == rig.pg_password and len(rig.pg_password) > 20
    else:
        assert rig.pg_password is None


def test_a_rig_without_stateful_layers_gets_no_postgresql_either(tmp_path):
    rig = Rig(FakeLab(tmp_path), stateful=False, postgresql=True)
    assert [layer.name for layer in loads(rig.stack_text(), "s").layers] == ["web"]


def test_the_rig_and_the_demo_share_one_postgresql_layer(tmp_path):
    demo = provision.STACK_LAYERS.format(
        vip="198.18.0.100", device="/dev/loop7", data_dir="/srv/d", fstype="ext4",
        apache_port=8080, tomcat_port=8081, java_home="/j", pg_port=5432, ldap_port=389,
        ldap_admin="cn=admin", stomp_port=61613, openwire_port=61616)
    assert provision.PG_LAYER.format(data_dir="/srv/d", pg_port=5432) in demo


# -- the client's first answer ---------------------------------------------------------
def _probe(name, ok, t, done=None):
    event = {"k": "probe", "name": name, "ok": ok, "t": t}
    if done is not None:
        event["done"] = done
    return event


def test_the_first_answer_is_the_first_success_begun_after_the_cut():
    events = [{"k": "started", "t": 5.0}, _probe("postgresql", True, 9.0, 9.01),
              _probe("postgresql", False, 9.99, 10.14),        # began before the cut
              _probe("slapd", True, 10.5, 10.51),              # another probe
              _probe("postgresql", True, 11.02, 11.05),        # the answer after the cut
              _probe("postgresql", False, 12.0, 12.1), _probe("postgresql", True, 12.2, 12.3)]
    assert failover.first_answer(events, "postgresql", 10.0) == 11.05
    assert failover.first_answer(events, "slapd", 10.0) == 10.51
    assert failover.first_answer(events, "postgresql", 13.0) is None
    assert failover.first_answer(events, "activemq", 0.0) is None


def test_a_probe_without_done_counts_from_its_start():
    assert failover.first_answer([_probe("postgresql", True, 11.0)], "postgresql", 10.0) == 11.0


@pytest.mark.parametrize("seed", range(20))
def test_the_first_answer_is_never_a_failure_nor_before_the_cut(seed):
    rng = random.Random(seed)
    events, t, ok = [], 0.0, True
    for _ in range(rng.randint(0, 30)):
        t += rng.random()
        ok = not ok
        events.append(_probe(rng.choice(["postgresql", "http"]), ok, t, t + rng.random() * 0.1))
    wall = rng.random() * t if t else 0.0
    found = failover.first_answer(events, "postgresql", wall)
    wanted = [e for e in events if e["name"] == "postgresql" and e["ok"] and e["t"] >= wall]
    assert found == (wanted[0]["done"] if wanted else None)
    if found is not None:
        assert found >= wall


def test_the_client_refuses_an_unknown_probe(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text("{}")
    assert democlient.main(["probe", str(config), str(tmp_path / "out"), "nosuch"]) == 2
    assert "probe CONFIG OUT NAME" in capsys.readouterr().err


# -- the JSON document -------------------------------------------------------------------
def _run(rng, pg=True):
    vip = 0.6 + rng.random() * 0.6
    return {"vip": vip, "mount": vip + 0.05, "layer": vip + 0.4,
            "pg": (vip + 0.3 + rng.random() * 0.3) if pg and rng.random() > 0.1 else None,
            "overlaps": 0}


def test_pg_is_a_metric_with_the_issues_target():
    assert "pg" in bench.METRICS
    assert bench.TARGETS["pg"] == 1.2 and bench.TARGETS["vip"] == 0.8


@pytest.mark.parametrize("seed", range(20))
def test_the_summary_carries_pg_medians_ratios_and_target(seed):
    rng = random.Random(seed)
    results = {"hamon": [_run(rng) for _ in range(rng.randint(1, 7))],
               "pacemaker": [_run(rng) for _ in range(rng.randint(1, 7))],
               "heartbeat": [_run(rng, pg=False) for _ in range(rng.randint(1, 3))]}
    out = json.loads(json.dumps(bench.summary(results)))  # JSON-clean
    for kind, runs in results.items():
        values = [r["pg"] for r in runs if r["pg"] is not None]
        got = out["stacks"][kind]["pg"]
        assert got["runs"] == len(values)
        assert got["median"] == (pytest.approx(statistics.median(values)) if values else None)
        assert got["min"] == min(values, default=None) and got["max"] == max(values, default=None)
    ours, theirs = out["stacks"]["hamon"]["pg"]["median"], out["stacks"]["pacemaker"]["pg"]["median"]
    ratio = out["ratios"]["hamon/pacemaker"]["pg"]
    assert ratio == (round(ours / theirs, 3) if ours and theirs else None)
    assert out["ratios"]["hamon/heartbeat"]["pg"] is None  # its PostgreSQL never answered
    target = out["targets"]["pg"]
    assert target["target"] == 1.2 and target["median"] == ours
    assert target["met"] is (ours is not None and ours <= 1.2)


def test_the_table_shows_pg_and_its_target(capsys):
    rng = random.Random(1)
    results = {"hamon": [_run(rng) for _ in range(3)], "pacemaker": [_run(rng) for _ in range(3)]}
    bench.report(results)
    text = capsys.readouterr().out
    assert "pg (min-max)" in text
    assert "pg <= 1.2s" in text
    assert "hamon / pacemaker:" in text and ", pg " in text.split("hamon / pacemaker:")[1]


# -- PostgreSQL's own part, from node2's server log --------------------------------------
PG_LOG = """\
2026-12-03 16:09:58.000 UTC [100] LOG:  checkpoint complete: wrote 3 buffers
2026-12-03 16:10:00.700 UTC [200] LOG:  starting PostgreSQL 15.10 on x86_64-pc-linux-gnu
2026-12-03 16:10:00.710 UTC [202] LOG:  database system was interrupted; last known up at x
2026-12-03 16:10:00.720 UTC [202] LOG:  database system was not properly shut down; automatic recovery in progress
2026-12-03 16:10:00.730 UTC [202] LOG:  redo starts at 0/1522F48
2026-12-03 16:10:00.735 UTC [202] LOG:  redo done at 0/1523000 system usage: CPU: user: 0.00 s
2026-12-03 16:10:00.740 UTC [203] LOG:  checkpoint starting: end-of-recovery immediate wait
	continued on a tab line that has no time
2026-12-03 16:10:01.340 UTC [203] LOG:  checkpoint complete: wrote 3 buffers (0.0%); sync=0.55 s
2026-12-03 16:10:01.350 UTC [200] LOG:  database system is ready to accept connections
2026-12-03 16:10:05.000 UTC [204] LOG:  checkpoint complete: wrote 9 buffers
"""


def test_the_pg_log_names_each_step_once_after_the_cut_in_seconds_from_it():
    import datetime
    wall = datetime.datetime(2026, 12, 3, 16, 10, 0, tzinfo=datetime.timezone.utc).timestamp()
    steps = bench.pg_log_steps(PG_LOG, wall)
    assert steps == [("recovery begins", 0.71), ("redo starts", 0.73), ("redo done", 0.735),
                     ("end-of-recovery checkpoint", 0.74), ("checkpoint complete", 1.34),
                     ("ready", 1.35)]
    assert bench.pg_log_steps(PG_LOG, wall + 10) == []
    assert bench.pg_log_steps("", wall) == []


@pytest.mark.parametrize("line", [
    "", "LOG:  ready to accept connections", "2026-12-03 16:10:01 UTC [1] LOG: x",
    "2026-12-03 16:10:01.5 CET [1] LOG:  ready to accept connections",
    "2026-13-03 16:10:01.500 UTC [1] LOG:  ready to accept connections"])
def test_a_log_line_without_a_utc_millisecond_time_has_no_time(line):
    assert bench.pg_log_time(line) is None
