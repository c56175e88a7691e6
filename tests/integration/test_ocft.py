"""resource-agents' own ocft suites, adapted only in agent, provider and addresses
(tests/data/ocft/adapt.py; Filesystem also in what promotion needs, tomcat in the paths
it asks to adjust), run against the staged hapack install in a namespace.

EXPECTED_FAILURES names every case hapack fails and why (the README lists the same);
the test fails when any other case fails, and also when an expected failure starts
to pass, so that the list and the README are kept true.
"""

import pytest

from ocft_run import run_suite
from requires import need_binary, need_root

CASES = {"IPaddr2": 20, "IPaddr2v4": 22, "IPaddr2v6": 20, "Filesystem": 14, "apache": 10,
         "tomcat": 5, "pgsql": 11}
NO_CONFIG = ("the suite gives no config: hapack's apache runs an instance from its own "
             "configuration file (config is required, ERR_CONFIGURED), never Debian's "
             "default apache2.conf, which needs /etc/apache2/envvars")
NO_BASE = ("the suite gives no catalina_base: hapack's tomcat runs one instance directory "
           "of its own (catalina_base is required, ERR_CONFIGURED)")
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
    "Filesystem": {
        7: "mounted is promoted: monitor says RUNNING_MASTER (8), not SUCCESS (0)",
        9: "mounted is promoted: monitor at depth 10 says RUNNING_MASTER (8), not 0",
        10: "mounted is promoted: monitor at depth 20 says RUNNING_MASTER (8), not 0",
        12: "a read-only mount of the promoted partition is FAILED_MASTER (9), not "
            "ERR_GENERIC (1)",
    },
    "apache": {number: NO_CONFIG for number in (0, 1, 3, 4, 5, 7)},
    "tomcat": {number: NO_BASE for number in range(5)},
    "pgsql": {
        1: "pgctl=no_such (a relative path) is a configuration error on every node "
           "(ERR_CONFIGURED), not ERR_INSTALLED",
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
