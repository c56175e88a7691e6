"""postgresql, slapd and activemq: hapack's agents versus the stock ocf:heartbeat ones.

    sudo .venv/bin/python bench/bench_layers_stateful.py [--runs N] [--cycles N] [--json [FILE]]

Each server is a second instance with its data on an ext4 loop mount (the
replicated partition's stand-in) and a loopback port. Both agents of a pair
drive the same instance: the stock agent is pointed at the same PGDATA,
socket directory and port (pgsql) or configuration, pid file and URL
(slapd), with the same password (which the stock agents take as a
parameter: PGPASSWORD for psql, -w on ldapsearch's command line; hapack's
reads it from a root-only file). Monitors are interleaved, ours then
stock's, on the running instance, at level 0 and at level 10 (PostgreSQL:
SELECT 1; slapd: a bound base search of the suffix); the stock agents have
one depth (pgsql: pid plus psql 'select now()'; slapd: pid plus ldapsearch
of each suffix), measured beside each of ours. The measuring (call,
monitors, cycles, the regular install) is bench_layers_stateless's. Start and stop
alternate agent by agent on the same instance. ActiveMQ has no stock agent:
its figures stand alone. Per operation: median wall and CPU time per call
and processes spawned per call (strace); ratio = hapack / stock (below 1:
hapack is faster). Our agents run from a regular install of the working tree
in a throw-away venv (``python -I -S`` wrappers, as in production); --dev
measures the dev venv's editable install instead, whose import finder adds
about 10 ms to every call. Target: every hapack monitor faster than the
stock one.
Needs root, resource-agents, postgresql-15, slapd, ldap-utils, activemq;
stops everything it started and removes the loop mount.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]
from _common import (Stats, add_json_option, environment, json_report, print_table,  # noqa: E402
                     processes, stats_metrics)
from bench_layers_stateless import call, cycles, install, monitors  # noqa: E402
from stateful_fixtures import (free_port, free_ports, loop_partition, owned_dir,  # noqa: E402
                               secret_file, sh, workspace)

STOCK = "/usr/lib/ocf/resource.d/heartbeat"
PGBIN = "/usr/lib/postgresql/15/bin"
PASSWORD = f"bench-pass-{os.getpid()}"  # the stock slapd agent splits a password at spaces
SUFFIX = "dc=example,dc=com"


def agent(path, instance, params, **extra):
    env = {"OCF_RESOURCE_INSTANCE": instance, "OCF_RESKEY_CRM_meta_interval": "10000",
           "OCF_RESKEY_CRM_meta_timeout": "120000", **extra}
    env.update({f"OCF_RESKEY_{k}": str(v) for k, v in params.items()})
    return path, environment(env)


def sample(pair, runs, op="monitor", level=None):
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = call(pair, op, level)
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


def compare(ours, stock, runs, count):
    """Monitors (ours at levels 0 and 10, the stock one beside each), then start/stop
    cycles, with the stateless bench's method."""
    agents = {"hapack": ours, "stock": stock}
    try:
        call(ours, "start")
        rows = monitors(agents, runs)
        call(ours, "stop")
        rows += cycles(agents, count)
    finally:
        call(ours, "stop")
    return rows


# -- the instances ----------------------------------------------------------------------

def postgresql(work, mnt, ours_path):
    pgdata = owned_dir(f"{mnt}/pgdata", "postgres")
    pwfile = secret_file(f"{work}/initdb-pw", PASSWORD, mode=0o644)
    sh("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env",
       f"{PGBIN}/initdb", "-D", pgdata, "-U", "postgres", "--auth=scram-sha-256", "--pwfile",
       pwfile, "-E", "UTF8", "--locale=C.UTF-8")
    port, instance = free_port(), f"bench-pg{os.getpid()}"
    ours = agent(ours_path, instance, dict(
        pgdata=pgdata, port=port, credentials_file=secret_file(f"{work}/cred", PASSWORD),
        run_dir=f"{work}/run", log_dir=f"{work}/log", options="-c shared_buffers=16MB"))
    sockets = f"{work}/run/postgresql-{instance}"  # the stock agent passes no -k itself
    stock = agent(f"{STOCK}/pgsql", instance, dict(
        pgdata=pgdata, pgport=port, pgctl=f"{PGBIN}/pg_ctl", psql=f"{PGBIN}/psql",
        pgdb="postgres", socketdir=sockets, logfile=f"{work}/log/postgresql-{instance}/stock.log",
        monitor_user="postgres", monitor_password=PASSWORD,
        start_opt=f"-k {sockets} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB"))
    return ours, stock


def slapd(work, mnt, ours_path):
    data = owned_dir(f"{mnt}/ldap", "openldap", 0o750)
    os.makedirs(f"{data}/example")
    with open(f"{work}/bare", "w", encoding="utf-8") as handle:
        handle.write(PASSWORD)
    rootpw = sh("slappasswd", "-T", f"{work}/bare").stdout.strip()
    instance = f"bench-ldap{os.getpid()}"
    pidfile = f"{work}/run/slapd-{instance}/slapd.pid"
    conf = f"{work}/slapd.conf"
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write(f"include /etc/ldap/schema/core.schema\nmodulepath /usr/lib/ldap\n"
                     f"moduleload back_mdb\npidfile {pidfile}\ndatabase mdb\n"
                     f"suffix \"{SUFFIX}\"\nrootdn \"cn=admin,{SUFFIX}\"\nrootpw {rootpw}\n"
                     f"directory {data}/example\naccess to * by * read\n")
    subprocess.run(["slapadd", "-f", conf], input=f"dn: {SUFFIX}\nobjectClass: dcObject\n"
                   "objectClass: organization\no: Example\ndc: example\n", text=True,
                   check=True, capture_output=True)
    sh("chown", "-R", "openldap:openldap", data)
    url = f"ldap://127.0.0.1:{free_port()}/"
    common = dict(config=conf, services=url, bind_dn=f"cn=admin,{SUFFIX}")
    ours = agent(ours_path, instance, dict(
        common, data_dir=data, credentials_file=secret_file(f"{work}/cred", PASSWORD),
        run_dir=f"{work}/run", log_dir=f"{work}/log", log_level="none"))
    stock = agent(f"{STOCK}/slapd", instance, dict(
        common, pidfile=pidfile, user="openldap", group="openldap", password=PASSWORD))
    return ours, stock


def activemq(work, mnt, ours_path, runs, count):
    stomp, openwire = free_ports(2)
    ours = agent(ours_path, f"bench-amq{os.getpid()}", dict(
        data_dir=owned_dir(f"{mnt}/amq", "activemq"), stomp_port=stomp, openwire_port=openwire,
        java_opts="-Xms64m -Xmx256m", run_dir=f"{work}/run", log_dir=f"{work}/log"))
    rows = []
    try:
        call(ours, "start")
        call(ours, "monitor", 20)  # the first message round trip warms the JIT up
        for level in (0, 10, 20):
            env = dict(ours[1], OCF_CHECK_LEVEL=str(level))
            rows.append((f"monitor level {level}", Stats("hapack", *sample(ours, runs, level=level),
                                                         processes([ours[0], "monitor"], env)), None))
        call(ours, "stop")
        starts, stops = ([], []), ([], [])
        for _ in range(count):
            for op, into in (("start", starts), ("stop", stops)):
                wall, cpu = call(ours, op)
                into[0].append(wall)
                into[1].append(cpu)
        rows += [("start", Stats("hapack", *starts, None), None),
                 ("stop", Stats("hapack", *stops, None), None)]
    finally:
        call(ours, "stop")
    return rows


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="monitors per agent and level")
    parser.add_argument("--cycles", type=int, default=3, help="start/stop cycles per agent")
    parser.add_argument("--only", choices=("postgresql", "slapd", "activemq"), action="append")
    parser.add_argument("--dev", action="store_true",
                        help="measure the dev venv's editable install, not a regular one")
    add_json_option(parser)
    return parser


def main():
    args = build_parser().parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (loop mounts, servers that drop privileges)")
    with json_report("bench_layers_stateful", args) as report:
        run(args, report)


def run(args, report):
    wanted = args.only or ["postgresql", "slapd", "activemq"]
    results = {}
    with tempfile.TemporaryDirectory() as staged, contextlib.ExitStack() as stack:
        path = install(staged, args.dev)
        print(f"hapack agents: {'editable (dev venv)' if args.dev else 'regular install'}, "
              f"e.g. {path('postgresql')}")
        for name in wanted:
            work = stack.enter_context(workspace(f"bench-{name}"))
            mnt = stack.enter_context(loop_partition(work, size_mb=300))
            if name == "activemq":
                results[name] = activemq(work, mnt, path(name), args.runs, args.cycles)
            else:
                ours, stock = (postgresql if name == "postgresql" else slapd)(work, mnt, path(name))
                results[name] = compare(ours, stock, args.runs, args.cycles)
    stock_names = {"postgresql": "ocf:heartbeat:pgsql", "slapd": "ocf:heartbeat:slapd",
                   "activemq": "no stock agent"}
    met = True
    for name, rows in results.items():
        print_table(f"{name}: hapack vs {stock_names[name]} ({args.runs} monitors per level, "
                    f"{args.cycles} start/stop cycles; ratio = hapack / stock)", rows)
        met &= all(ours.wall < theirs.wall for op, ours, theirs in rows
                   if op.startswith("monitor") and theirs is not None)
        report.add(stats_metrics(rows, prefix=f"{name} "))
    print(f"\ntarget (every hapack monitor faster than the stock one): {'met' if met else 'NOT met'}")
    report.targets["every hapack monitor faster than the stock one"] = met


if __name__ == "__main__":
    main()
