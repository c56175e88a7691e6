"""Debian's prometheus-hacluster-exporter (ClusterLabs' ha_cluster_exporter) on the lab.

hapack has no Pacemaker exporter of its own: the ecosystem's one reads crm_mon, cibadmin
and corosync's tools in the node. Here it runs in a node of a lab cluster that runs the
rendered stack, and a scrape from the client namespace sees the pack's resources with
their roles and nodes, both nodes online, quorum and fencing enabled.
"""

from __future__ import annotations

import re
import time

from test_render_lab import LOAD, check_accepted, rendered

from hapack.lab.heartbeat import PORT, checkout_agents

EXPORTER = "/usr/bin/ha_cluster_exporter"
SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition (comments left out)."""
    samples = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            labels = dict(LABEL.findall(match["labels"] or ""))
            samples.append((match["name"], labels, float(match["value"])))
    return samples


def values(samples, name, **labels):
    return [v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items())]


def scrape(lab, url, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        got = lab.client_exec(["curl", "-sf", "--max-time", "5", url], check=False, timeout=10)
        if got.returncode == 0 and "ha_cluster_pacemaker_resources" in got.stdout:
            return parse(got.stdout)
        assert time.monotonic() < deadline, f"no metrics at {url}: {got.stderr}"
        time.sleep(0.5)


def test_the_exporter_reports_the_packs_resources(new_lab):
    with new_lab(stack="pacemaker") as lab, checkout_agents(lab):
        stack, path = rendered(lab, "cib")
        lab.wait_online()
        for node in lab.nodes:
            lab.start_responder(node, port=PORT)
        with lab.watch_vip(str(stack.vip.address), port=PORT) as watch:
            assert lab.exec("node1", LOAD["cib"](path), timeout=120).returncode == 0
            holder = check_accepted(lab, stack, watch)
        address = f"{lab.addr(holder)}:9664"
        lab.spawn(holder, [EXPORTER, f"--web.listen-address={address}"], name="exporter")
        samples = scrape(lab, f"http://{address}/metrics")

    other = next(n for n in lab.nodes if n != holder)
    assert values(samples, "ha_cluster_corosync_quorate") == [1]
    assert values(samples, "ha_cluster_pacemaker_stonith_enabled") == [1]
    for node in lab.nodes:
        assert values(samples, "ha_cluster_pacemaker_nodes", node=node, status="online") == [1]
        assert values(samples, "ha_cluster_pacemaker_nodes", node=node, status="unclean") == [0]
    active = {(ls["resource"], ls["node"], ls["role"], ls["agent"])
              for n, ls, v in samples
              if n == "ha_cluster_pacemaker_resources" and ls["status"] == "active" and v == 1}
    assert {("partition", holder, "promoted", "ocf:hapack:partition"),
            ("partition", other, "unpromoted", "ocf:hapack:partition"),
            ("vip", holder, "started", "ocf:hapack:vip"),
            (f"fence-{holder}", other, "started", "stonith:fence_bmc"),
            (f"fence-{other}", holder, "started", "stonith:fence_bmc")} <= active
    for status in ("failed", "blocked", "orphaned"):
        assert not [ls for n, ls, v in samples if n == "ha_cluster_pacemaker_resources"
                    and ls["status"] == status and v != 0], status
