"""resource-agents' own ocft suites, adapted only in agent, provider and addresses
(tests/data/ocft/adapt.py), run against the staged hapack install in a namespace.

EXPECTED_FAILURES names every case hapack fails and why (the README lists the same);
the test fails when any other case fails, and also when an expected failure starts
to pass, so that the list and the README are kept true.
"""

import pytest

from ocft_run import run_suite
from requires import need_binary, need_root

CASES = {"IPaddr2": 20, "IPaddr2v4": 22, "IPaddr2v6": 20}
EXPECTED_FAILURES = {
    "IPaddr2": {
        8: "nic names an interface this node lacks: ERR_INSTALLED (this node cannot host "
           "it), not ERR_CONFIGURED, which would stop the VIP on every node",
        16: "127.0.0.3 on lo: the VIP goes on the interface of a connected route, and "
            "refuses lo (ERR_GENERIC)",
        19: "monitor after the interface vanished: the address is gone, NOT_RUNNING "
            "(Pacemaker recovers it), not ERR_GENERIC",
    },
    "IPaddr2v4": {
        10: "cidr_netmask shorter than the connected route's, without nic: accepted on "
            "the route's interface, where IPaddr2's findif refuses it",
    },
    "IPaddr2v6": {
        13: "cidr_netmask longer than the connected route's, without nic: accepted "
            "(IPaddr2 refuses)",
        14: "cidr_netmask shorter than the connected route's, without nic: accepted "
            "(IPaddr2 refuses)",
    },
}


@pytest.mark.parametrize("suite", sorted(CASES))
def test_ocft_suite(installed, suite):
    need_root()
    need_binary("ocft")
    agent_root = installed("vip").rsplit("/", 1)[0]
    results, output = run_suite(suite, agent_root)
    assert len(results) == CASES[suite], output
    failed = {number for number, passed in results.items() if not passed}
    assert failed == set(EXPECTED_FAILURES[suite]), (
        f"unexpected failures {sorted(failed - set(EXPECTED_FAILURES[suite]))}, "
        f"now passing {sorted(set(EXPECTED_FAILURES[suite]) - failed)} "
        "(update EXPECTED_FAILURES and the README)\n" + output)
