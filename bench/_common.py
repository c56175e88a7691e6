"""Shared measuring for the side-by-side benchmarks (not tests).

Each call is a whole process, as the cluster runs it: wall time and CPU
time (user+sys of the process and everything it waited for) per call, and,
in a separate pass under strace, how many processes one call spawns.
"""

import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time


def timed(argv, env, netns=None, check=True):
    """(wall seconds, cpu seconds, returncode) of one call."""
    full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(full, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if check and proc.returncode not in (0, 7, 8):
        raise RuntimeError(f"{' '.join(full)} exited {proc.returncode}: {proc.stderr.strip()}")
    return wall, cpu, proc.returncode


def processes(argv, env, netns=None):
    """Processes one call creates (the call itself included), counted by strace."""
    if shutil.which("strace") is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        full = ["strace", "-f", "-qq", "-e", "trace=execve", "-o", out.name, *argv]
        if netns:
            full = ["ip", "netns", "exec", netns, *full]
        subprocess.run(full, env=env, capture_output=True)
        pids = {line.split()[0] for line in out.read().splitlines()
                if "execve(" in line and "= -1" not in line}
        return len(pids)


class Stats:
    def __init__(self, name, walls, cpus, procs):
        self.name, self.walls, self.cpus, self.procs = name, walls, cpus, procs

    @property
    def wall(self):
        return statistics.median(self.walls)

    @property
    def cpu(self):
        return statistics.median(self.cpus)


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def print_table(title, pairs, note=""):
    """pairs: [(operation, ours Stats, theirs Stats or None)]."""
    print(f"\n{title}")
    head = (f"{'operation':<22}{'agent':<18}{'wall ms (median)':>18}{'cpu ms':>10}"
            f"{'procs/call':>12}{'wall ratio':>12}{'cpu ratio':>11}")
    print(head)
    print("-" * len(head))
    for operation, ours, theirs in pairs:
        for stats, is_ours in ((ours, True), (theirs, False)):
            if stats is None:
                continue
            wall_r = ratio(ours.wall, theirs.wall) if is_ours and theirs else ""
            cpu_r = ratio(ours.cpu, theirs.cpu) if is_ours and theirs else ""
            procs = "?" if stats.procs is None else str(stats.procs)
            print(f"{operation if is_ours else '':<22}{stats.name:<18}{stats.wall * 1000:>18.1f}"
                  f"{stats.cpu * 1000:>10.1f}{procs:>12}{wall_r:>12}{cpu_r:>11}")
    if note:
        print(note)


def environment(extra):
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "OCF_ROOT": "/usr/lib/ocf", "OCF_RESKEY_CRM_meta_timeout": "20000"}
    env.update(extra)
    return env
