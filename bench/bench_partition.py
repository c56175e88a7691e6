#!/usr/bin/env python3
"""partition versus ocf:heartbeat:Filesystem, side by side in one run (a script, not a test).

    sudo .venv/bin/python bench/bench_partition.py [--runs N] [--json [FILE]]

Both agents mount the same ext4 file system on the same loop device at the
same mount point. Rows, per call (median wall and CPU time, processes per call;
ratios are hapack / stock):

  mount        partition promote (gate + mount) | Filesystem start
  unmount      partition demote                 | Filesystem stop
  busy stop    partition stop | Filesystem stop, with one process (cwd in the
               mount, exits on TERM) holding the mount
  monitor 0    partition monitor level 0 (promoted) | Filesystem monitor

The partition agent is the staged 'hapack install' wrapper, as Pacemaker
runs it. Every call runs through ``nsenter`` into a private mount namespace
of this run (the same cost for both agents), so mount namespaces that other
programs create meanwhile cannot copy the mount and keep the file system busy.
Needs root, e2fsprogs, util-linux and resource-agents.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (Stats, add_json_option, environment, json_report, print_table,  # noqa: E402
                     processes, stats_metrics, timed)

FILESYSTEM = "/usr/lib/ocf/resource.d/heartbeat/Filesystem"


def sh(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def staged_agent(root):
    sh(sys.executable, "-m", "hapack.cli", "install", "--root", root)
    return os.path.join(root, "usr/lib/ocf/resource.d/hapack/partition")


class Bench:
    def __init__(self, folder, runs):
        self.folder, self.runs = folder, runs
        self.space = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                       "sleep", "infinity"])
        while os.readlink(f"/proc/{self.space.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            time.sleep(0.01)
        self.image = os.path.join(folder, "bench.img")
        with open(self.image, "wb") as handle:
            handle.truncate(128 * 1024 * 1024)
        sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard", self.image)
        self.device = sh("losetup", "--find", "--show", self.image).strip()
        self.directory = os.path.join(folder, "mnt")
        os.makedirs(self.directory)
        common = {"OCF_RESOURCE_INSTANCE": "bench", "HA_RSCTMP": os.path.join(folder, "rsc"),
                  "OCF_RESKEY_device": self.device, "OCF_RESKEY_directory": self.directory,
                  "OCF_RESKEY_fstype": "ext4", "OCF_RESKEY_CRM_meta_interval": "20000"}
        self.ours = environment(dict(common, OCF_RESKEY_backend="shared",
                                     OCF_RESKEY_fence_confirmed_file=""))
        self.theirs = environment(common)

    def inside(self, argv):
        return ["nsenter", f"--target={self.space.pid}", "--mount", "--", *argv]

    def close(self):
        subprocess.run(self.inside(["umount", self.directory]), capture_output=True)
        self.space.kill()
        self.space.wait()
        for line in sh("losetup", "-j", self.image).splitlines():
            subprocess.run(["losetup", "-d", line.split(":")[0]], capture_output=True)
        os.unlink(self.image)

    def pairs(self, name, path, up, down, env):
        """Samples of (up, down) pairs, then monitor samples while up."""
        ups, downs = ([], []), ([], [])
        for _ in range(self.runs):
            for op, into in ((up, ups), (down, downs)):
                wall, cpu, _ = timed(self.inside([path, op]), env)
                into[0].append(wall)
                into[1].append(cpu)
        timed(self.inside([path, up]), env)
        mon = ([], [])
        for _ in range(self.runs * 3):
            wall, cpu, code = timed(self.inside([path, "monitor"]), env)
            assert code in (0, 8), f"{name} monitor returned {code}"
            mon[0].append(wall)
            mon[1].append(cpu)
        counts = {op: self.processes(path, op, env) for op in ("monitor", down, up)}
        timed(self.inside([path, down]), env)
        return (Stats(name, *ups, counts[up]), Stats(name, *downs, counts[down]),
                Stats(name, *mon, counts["monitor"]))

    def processes(self, path, op, env):
        """Processes per call (nsenter execs the agent in its own process: not one more)."""
        return processes(self.inside([path, op]), env)

    def busy_stop(self, name, path, up, env, prepare=()):
        walls, cpus = [], []
        for _ in range(max(3, self.runs // 2)):
            for op in prepare:
                timed(self.inside([path, op]), env)
            timed(self.inside([path, up]), env)
            holder = subprocess.Popen(self.inside(["sh", "-c",
                                                   f"cd {self.directory} && exec sleep 600"]))
            time.sleep(0.05)
            wall, cpu, code = timed(self.inside([path, "stop"]), env)
            assert code == 0, f"{name} stop of a busy mount returned {code}"
            holder.wait(timeout=10)
            walls.append(wall)
            cpus.append(cpu)
        return Stats(name, walls, cpus, None)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    add_json_option(parser)
    return parser


def main():
    args = build_parser().parse_args()
    if os.geteuid() != 0 or not os.path.exists(FILESYSTEM):
        sys.exit("needs root and resource-agents (ocf:heartbeat:Filesystem)")
    with json_report("bench_partition", args) as report:
        run(args, report)


def run(args, report):
    with tempfile.TemporaryDirectory(prefix="hapack-bench-partition-") as folder:
        agent = staged_agent(os.path.join(folder, "root"))
        bench = Bench(folder, args.runs)
        try:
            timed(bench.inside([agent, "start"]), bench.ours)
            ours = bench.pairs("hapack partition", agent, "promote", "demote", bench.ours)
            timed(bench.inside([agent, "stop"]), bench.ours)
            theirs = bench.pairs("Filesystem", FILESYSTEM, "start", "stop", bench.theirs)
            busy_ours = bench.busy_stop("hapack partition", agent, "promote", bench.ours,
                                        prepare=("start",))
            busy_theirs = bench.busy_stop("Filesystem", FILESYSTEM, "start", bench.theirs)
        finally:
            bench.close()
    pairs = [("mount", ours[0], theirs[0]), ("unmount", ours[1], theirs[1]),
             ("stop, busy mount", busy_ours, busy_theirs),
             ("monitor level 0", ours[2], theirs[2])]
    print_table(f"partition vs Filesystem, ext4 on a loop device, {args.runs} runs", pairs,
                note="mount = promote (gate + mount) vs start; unmount = demote vs stop; "
                     "busy: one holder (cwd in the mount) that exits on TERM.\n"
                     "procs/call counts processes that exec; partition's promote also forks "
                     "one child (no exec) for the bounded superblock read.")
    report.add(stats_metrics(pairs))


if __name__ == "__main__":
    main()
