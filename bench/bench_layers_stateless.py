"""apache, nginx and tomcat: hapack's agents versus the stock ocf:heartbeat ones.

    .venv/bin/python bench/bench_layers_stateless.py [--runs N] [--cycles N] [--only NAME] [--dev]
        [--json [FILE]]

Both agents of a pair drive the same second instance of the server (its own
config, pid file and loopback port; the pid file is shared so either agent
sees the instance the other started). Monitors are interleaved, ours then
stock's, on the running instance: level 0 and level 10 (stock apache: the
status page at 0, testurl/testregex10 at 10; stock nginx: the pid at 0,
status10url at 10; stock tomcat has one depth, pid plus statusurl, shown at
both levels). Start and stop alternate agent by agent on the same instance.
Per operation: median wall and CPU time per call and processes spawned per
call; ratio = hapack / stock (below 1: hapack is faster). Target: every
hapack monitor faster than the stock one. Needs root, resource-agents,
apache2, nginx and tomcat10; stops everything it started.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
from _common import (Stats, add_json_option, environment, json_report, print_table,  # noqa: E402
                     processes, stats_metrics, timed)
from layer_fixtures import Apache, Nginx, Tomcat, cleanup, free_port, scratch  # noqa: E402

STOCK = "/usr/lib/ocf/resource.d/heartbeat"


def shared_pidfile(inst):
    """Tomcat: one pid file both agents use, where catalina.sh (as tomcat) may write."""
    return os.path.join(inst.base, "temp", "bench.pid")


def stock_params(inst):
    """The stock agent's parameters for the same instance (levels 0 and 10)."""
    base = f"http://127.0.0.1:{inst.port}"
    if inst.agent == "apache":
        return {"configfile": inst.config, "httpd": "/usr/sbin/apache2",
                "statusurl": f"{base}/server-status", "testurl": f"{base}/server-status?auto",
                "testregex10": "BusyWorkers"}
    if inst.agent == "nginx":
        return {"configfile": inst.config, "httpd": "/usr/sbin/nginx",
                "status10url": f"{base}/nginx_status"}
    return {"tomcat_name": f"bench{os.getpid()}", "catalina_home": "/usr/share/tomcat10",
            "catalina_base": inst.base, "java_home": inst.params()["java_home"],
            "java_opts": inst.params()["java_opts"], "tomcat_user": "tomcat",
            "catalina_pid": shared_pidfile(inst), "script_log": os.path.join(inst.root, "stock.log"),
            "statusurl": f"{base}/hapack-health/ping.jsp"}


def envs(inst, ours_path):
    """name -> (agent path, environment without the check level)."""
    common = {"OCF_RESOURCE_INSTANCE": f"bench-{inst.name}", "OCF_RESKEY_CRM_meta_interval":
              "10000", "OCF_RESKEY_CRM_meta_timeout": "120000",
              "HA_RSCTMP": os.path.join(inst.root, "rsctmp")}
    ours = dict(common, **{f"OCF_RESKEY_{k}": str(v) for k, v in inst.params().items()})
    if inst.agent == "tomcat":
        ours["OCF_RESKEY_pidfile"] = shared_pidfile(inst)
    theirs = dict(common, **{f"OCF_RESKEY_{k}": v for k, v in stock_params(inst).items()})
    return {"hapack": (ours_path, environment(ours)),
            "stock": (os.path.join(STOCK, inst.agent), environment(theirs))}


def call(agent, op, level=None, expect=(0,)):
    path, env = agent
    if level is not None:
        env = dict(env, OCF_CHECK_LEVEL=str(level))
    wall, cpu, code = timed([path, op], env, check=False)
    if code not in expect:
        raise RuntimeError(f"{path} {op} (level {level}) returned {code}")
    return wall, cpu


def monitors(agents, runs):
    """Interleaved level-0 and level-10 monitors of both agents on the running instance."""
    samples = {(name, level): ([], []) for name in agents for level in (0, 10)}
    for _ in range(runs):
        for level in (0, 10):
            for name, agent in agents.items():
                wall, cpu = call(agent, "monitor", level)
                samples[name, level][0].append(wall)
                samples[name, level][1].append(cpu)
    rows = []
    for level in (0, 10):
        stats = {}
        for name, agent in agents.items():
            path, env = agent
            procs = processes([path, "monitor"], dict(env, OCF_CHECK_LEVEL=str(level)))
            stats[name] = Stats(name, *samples[name, level], procs)
        rows.append((f"monitor level {level}", stats["hapack"], stats["stock"]))
    return rows


def cycles(agents, count):
    """Alternating start/stop cycles: each agent starts and stops the instance."""
    samples = {(name, op): ([], []) for name in agents for op in ("start", "stop")}
    for _ in range(count):
        for name, agent in agents.items():
            for op in ("start", "stop"):
                wall, cpu = call(agent, op)
                samples[name, op][0].append(wall)
                samples[name, op][1].append(cpu)
    return [(op, Stats("hapack", *samples["hapack", op], None),
             Stats("stock", *samples["stock", op], None)) for op in ("start", "stop")]


def bench(kind, ours_path, runs, count, root):
    extra = {"shutdown_port": free_port()} if kind is Tomcat else {}
    inst = kind(root, name=f"bench-{kind.agent}", **extra)
    agents = envs(inst, ours_path)
    try:
        call(agents["hapack"], "start")  # also puts Tomcat's health page in place
        rows = monitors(agents, runs)
        call(agents["hapack"], "stop")
        rows += cycles(agents, count)
    finally:
        cleanup([inst])
    return rows


def install(tmp, dev):
    """name -> path of our installed agent.

    By default a regular (non-editable) install of the working tree in a
    throw-away venv, whose wrappers run ``python -I -S`` as production does;
    ``dev`` stages the dev venv's editable install instead (its import
    finder adds about 10 ms to every call).
    """
    python = sys.executable
    if not dev:
        src, wheels, venv = (os.path.join(tmp, name) for name in ("src", "wheels", "venv"))
        shutil.copytree(os.path.join(HERE, ".."), src, ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "__pycache__"))
        subprocess.run([python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", wheels, src], check=True, capture_output=True)
        subprocess.run([python, "-m", "venv", "--without-pip", venv], check=True)
        python = os.path.join(venv, "bin", "python")
        purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                  "['purelib'])"], check=True, capture_output=True,
                                 text=True).stdout.strip()
        for wheel in os.listdir(wheels):
            with zipfile.ZipFile(os.path.join(wheels, wheel)) as archive:
                archive.extractall(purelib)
    root = os.path.join(tmp, "root")
    subprocess.run([python, "-I", "-m", "hapack.cli", "install", "--root", root], check=True,
                   capture_output=True)
    return lambda name: os.path.join(root, "usr/lib/ocf/resource.d/hapack", name)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="monitors per agent and level")
    parser.add_argument("--cycles", type=int, default=3, help="start/stop cycles per agent")
    parser.add_argument("--only", choices=("apache", "nginx", "tomcat"), action="append")
    parser.add_argument("--dev", action="store_true",
                        help="measure the dev venv's editable install, not a regular one")
    add_json_option(parser)
    return parser


def main():
    args = build_parser().parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the servers bind, drop privileges and write pid files)")
    with json_report("bench_layers_stateless", args) as report:
        run(args, report)


def run(args, report):
    kinds = [k for k in (Apache, Nginx, Tomcat) if not args.only or k.agent in args.only]
    root = scratch("bench")
    results = {}
    try:
        with tempfile.TemporaryDirectory() as staged:
            agent_path = install(staged, args.dev)
            print(f"hapack agents: {'editable (dev venv)' if args.dev else 'regular install'}, "
                  f"e.g. {agent_path('apache')}")
            for kind in kinds:
                results[kind.agent] = bench(kind, agent_path(kind.agent), args.runs,
                                            args.cycles, root)
    finally:
        subprocess.run(["rm", "-rf", root], check=False)
    missed = []
    for name, rows in results.items():
        print_table(f"{name}: hapack vs ocf:heartbeat:{name} ({args.runs} monitors per level, "
                    f"{args.cycles} start/stop cycles; ratio = hapack / stock)", rows)
        missed += [f"{name} {op}" for op, ours, theirs in rows
                   if op.startswith("monitor") and ours.wall >= theirs.wall]
        report.add(stats_metrics(rows, prefix=f"{name} "))
    print("\ntarget (every hapack monitor faster than the stock one): "
          + ("met" if not missed else f"NOT met for {', '.join(missed)}"))
    report.targets["every hapack monitor faster than the stock one"] = not missed


if __name__ == "__main__":
    main()
