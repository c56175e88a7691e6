"""Run one adapted ocft suite (tests/data/ocft) against a staged hapack install, inside a
network namespace of its own with two links eth0 and eth1 (veth pairs), and a private
/var/lib/resource-agents (ocft's fixed case directory) so nothing outside is touched.
Returns {case number: passed}.
"""

import os
import re
import shutil
import subprocess
import tempfile

DATA = os.path.join(os.path.dirname(__file__), "data", "ocft")


def run_suite(suite: str, agent_root: str, timeout: float = 900) -> "tuple[dict, str]":
    work = tempfile.mkdtemp(prefix="hapack-ocft-")
    ns = f"hpocft{os.getpid() % 100000}"
    try:
        configs = os.path.join(work, "configs")
        os.makedirs(configs)
        with open(os.path.join(DATA, suite), encoding="utf-8") as handle:
            text = handle.read().replace("AgentRoot /usr/lib/ocf/resource.d/hapack",
                                         f"AgentRoot {agent_root}")
        with open(os.path.join(configs, suite), "w", encoding="utf-8") as handle:
            handle.write(text)
        os.makedirs(os.path.join(work, "varlib"))
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for nic in ("eth0", "eth1"):  # veth pairs inside the namespace (no dummy module)
            subprocess.run(["ip", "-n", ns, "link", "add", nic, "type", "veth", "peer",
                            "name", f"{nic}p"], check=True)
            for end in (nic, f"{nic}p"):
                subprocess.run(["ip", "-n", ns, "link", "set", end, "up"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        script = (f"mkdir -p /var/lib/resource-agents 2>/dev/null; "
                  f"mount --bind {work}/varlib /var/lib/resource-agents && "
                  f"ocft make -d {configs} {suite} >/dev/null && ocft test {suite}")
        result = subprocess.run(["ip", "netns", "exec", ns, "unshare", "-m", "bash", "-c",
                                 script], capture_output=True, text=True, timeout=timeout)
        output = result.stdout + result.stderr
        return parse(output, suite), output
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def parse(output: str, suite: str) -> "dict[int, bool]":
    """Case number (from 0, in the suite's order) -> passed. ocft prints one
    '<suite>: <case> - OK.' line per case; anything else (FAILED, an ERROR of the
    case's own commands) is a failure."""
    results = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines():
        if line.startswith(f"{suite}: "):
            number = len(results)
            results[number] = " - OK." in line and "ERROR" not in line
        elif "ERROR" in line and results and not line.startswith("ERROR: 'CLEANUP"):
            results[len(results) - 1] = False
    return results
