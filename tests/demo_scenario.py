"""The demo's stack in a lab, and one failover scenario on it (shared by cluster tests).

A plain module (not conftest.py): tests import it by name.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import pytest

from hapack.lab import Lab, failover, missing_prerequisites, provision

PROBES = ("http", "postgresql", "slapd", "activemq")
TIMEOUT = 120.0


def need_stack(**prerequisites) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    problems = missing_prerequisites("pacemaker", **prerequisites)
    if problems:
        pytest.skip("the lab cannot run here: " + "; ".join(problems))
    from hapack.demo import missing_agents
    missing = missing_agents()
    assert not missing, f"run 'hapack install' first (./run tests does): missing {missing}"


@contextlib.contextmanager
def demo_lab(tag: str, **lab_options):
    """A Pacemaker lab (token 1000 ms) with the demo's stack provisioned and active, both
    nodes' chains warm; its logs kept under $HAPACK_LAB_LOGS; always torn down."""
    lab = Lab(stack="pacemaker", token_ms=1000, disk_mb=400, boot_delay=1.0, **lab_options)
    try:
        lab.up()
        demo = provision.provision(lab)
        failover.wait_active(lab, timeout=180)
        failover.warm_chains(lab, provision.HEALTH_PATH, provision.APACHE_PORT)
        yield demo
    finally:
        dest = os.environ.get("HAPACK_LAB_LOGS")
        if dest and lab.state:
            lab.collect_logs(os.path.join(dest, f"{tag}-{lab.name}-{int(time.time())}"))
        lab.down()


@dataclass
class Scenario:
    lab: Lab
    demo: provision.DemoStack
    client: failover.Client
    sampler: failover.MountSampler
    active: str
    started: float

    @property
    def standby(self) -> str:
        return next(n for n in self.lab.nodes if n != self.active)

    def settle(self, node: str) -> None:
        """The stack active on ``node``, every layer answering on the VIP, rows flowing."""
        assert failover.wait_active(self.lab, TIMEOUT, node=node) == node
        self.client.wait_probes(PROBES, TIMEOUT)
        self.client.wait_acks(10, TIMEOUT)

    def finish(self) -> None:
        """Stop watching; the properties every scenario must keep."""
        self.client.stop()
        self.sampler.stop()
        assert self.sampler.samples, "no mount samples taken"
        assert not self.sampler.overlaps(), \
            f"the partition was mounted on two nodes at once: {self.sampler.overlaps()[:5]}"
        assert len(self.client.acked()) >= 20, \
            "the client committed too few rows to mean anything"
        assert self.client.lost() == [], "acknowledged rows are missing"

    def mounted_on(self) -> frozenset[str]:
        return self.sampler.holders()

    def fenced(self, target: str) -> list[dict]:
        """Successful fencing of ``target`` during this scenario."""
        return failover.fenced_since(self.lab, target, self.started)
