"""Run one adapted ocft suite (tests/data/ocft) against a staged hapack install, inside a
network namespace of its own with two links eth0 and eth1 (veth pairs), and a private
/var/lib/resource-agents (ocft's fixed case directory) so nothing outside is touched.
Returns {case number: passed}.

Some suites set up the distribution's default instance (apache's SETUP-AGENT starts and
stops Debian's apache2; pgsql reads the default PostgreSQL cluster with pg_conftool) or
keep files in /run/resource-agents (Filesystem's loop image). The run sees empty private
copies of those directories (bind mounts in its own mount namespace) and, for pgsql, a
fresh default cluster created there, so the host's instances and files are never used.
"""

import os
import re
import shutil
import subprocess
import tempfile

DATA = os.path.join(os.path.dirname(__file__), "data", "ocft")

PRIVATE = {  # suite -> directories the run sees as empty private ones
    "Filesystem": ("/run/resource-agents",),
    "apache": ("/var/log/apache2", "/run/apache2", "/run/lock/apache2", "/var/cache/apache2"),
    "pgsql": ("/etc/postgresql", "/var/log/postgresql", "/run/postgresql"),
}
PREPARE = {  # suite -> commands run in the namespace before the suite (as root)
    # PGDATA on a file system of its own (hapack refuses one on the root file system: in
    # production it is the partition's mount), then the default cluster ocft reads
    "pgsql": ("mount -t tmpfs -o size=256m,mode=0755 hapack-ocft /var/lib/postgresql && "
              "chown postgres:postgres /var/lib/postgresql && "
              "chown postgres:postgres /run/postgresql && chmod 2775 /run/postgresql && "
              "pg_createcluster 15 main >/dev/null && "),
}


def private_dirs(suite: str, work: str) -> str:
    """Shell commands binding an empty directory of ``work`` over each of the suite's
    PRIVATE directories, in the run's own mount namespace."""
    script = ""
    for number, path in enumerate(PRIVATE.get(suite, ())):
        mine = os.path.join(work, f"private{number}")
        os.makedirs(mine)
        os.chmod(mine, 0o1777 if path.startswith("/run/") else 0o755)
        script += f"mkdir -p {path} && mount --bind {mine} {path} && "
    if suite == "apache":
        script += no_systemctl(work)
    return script + PREPARE.get(suite, "")


def no_systemctl(work: str) -> str:
    """This machine has no systemd, but systemctl is installed and lists apache2.service,
    so the apache suite's SETUP-AGENT would take its systemctl branch and fail: first on
    PATH, a systemctl that says there is no systemd (the suite then takes its
    /etc/init.d/apache2 branch, which runs in the private directories)."""
    folder = os.path.join(work, "bin")
    os.makedirs(folder)
    with open(os.path.join(folder, "systemctl"), "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\necho 'System has not been booted with systemd' >&2\nexit 1\n")
    os.chmod(os.path.join(folder, "systemctl"), 0o755)
    return f"export PATH={folder}:$PATH && "


def detach_loops(work: str) -> None:
    """Detach the loop devices still backed by a file of ``work`` (found by inode with
    losetup -j: a Filesystem case that failed before its CLEANUP-AGENT)."""
    for root, _dirs, files in os.walk(work):
        for name in files:
            listing = subprocess.run(["losetup", "-n", "-O", "NAME", "-j",
                                      os.path.join(root, name)],
                                     capture_output=True, text=True).stdout
            for device in listing.split():
                subprocess.run(["losetup", "-d", device], capture_output=True)


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
                  f"{private_dirs(suite, work)}"
                  f"ocft make -d {configs} {suite} >/dev/null && ocft test {suite}")
        result = subprocess.run(["ip", "netns", "exec", ns, "unshare", "-m", "bash", "-c",
                                 script], capture_output=True, text=True, timeout=timeout)
        output = result.stdout + result.stderr
        return parse(output, suite), output
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if suite == "Filesystem":
            detach_loops(work)
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
