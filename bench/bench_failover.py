#!/usr/bin/env python3
"""Failover time in the lab: hapack's stack vs the same topology on stock agents.

    sudo .venv/bin/python bench/bench_failover.py [--runs N] [--only hapack|stock] [--json]
    sudo .venv/bin/python bench/bench_failover.py --qdevice [--delay 5s] [--runs N] [--json]

A script, not a test. For each configuration it builds a lab (token 1000 ms,
stonith-action=off, priority-fencing-delay 0s), provisions the example stack
(``hapack.lab.provision``: the same instance configs, data on the shared
disk, VIP, ports), loads one of two CIBs, then N times: cuts the active
node's power through its BMC while the demo client commits rows and probes
every layer through the VIP, records the timeline, checks that no
acknowledged row was lost and the partition was never mounted on two nodes,
and powers the victim back on (the stack stays where it went; the next run
cuts that node).

* ``hapack``: the rendered CIB: ocf:hapack:{vip, partition (promotable,
  shared backend), apache, tomcat, postgresql, slapd, activemq}, stonith:fence_bmc.
* ``stock``: ocf:heartbeat:{IPaddr2, Filesystem, apache, tomcat, pgsql,
  slapd}, stonith:fence_ipmilan (lanplus, cipher 3), in the same groups and
  order (Filesystem takes the partition's place as the group's first member).
  ActiveMQ has no stock agent: both use ocf:hapack:activemq.

Prints min/median/max of every step (seconds since the power cut), the
part the pack controls (peer declared lost -> full chain answering on the
VIP) and the ratios of the medians, and checks the targets: pack part at
most half the stock one; hapack total under 4 s. The pack part is also shown
split by whether Pacemaker's controller paid its 1 s CIB re-query before
scheduling the fence (see ``requeried``), which dominates the spread, and by
whether the node cut was the DC: even runs cut the DC, odd runs the other node (the
stack is switched over first when needed: ``stack_off_the_dc``), each run records
which node was DC before the cut, and the table and JSON show both halves.
``--old-order`` adds ``hapack-group``: the VIP back first in the stateful group,
as hapack rendered it before issue 19. Ratios are against ``stock``.

``--qdevice`` compares instead three ways of settling a split, all with the
hapack CIB: ``two_node`` (no fencing delay: the fastest, but a split is a fence
race), ``two_node+delay`` (priority-fencing-delay ``--delay``, the safe choice
without a quorum device, which delays the fencing of a dead holder as much) and
``qdevice`` (a quorum device, ``Lab(qdevice=True)``, and no delay); the ratios
are each against ``two_node``. ``--json`` prints the results as JSON on stdout
(progress goes to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import textwrap
import time

from hapack.lab import Lab, failover, missing_prerequisites, provision

PROBES = ("http", "postgresql", "slapd", "activemq")
STOCK_STATEFUL = ("fs", "vip", "postgresql", "slapd", "activemq")
STEPS = ("peer declared lost", "fence requested", "fence confirmed", "VIP started",
         "partition promoted", "partition mounted", "full chain on the VIP", "app reaches the database", "postgresql healthy",
         "slapd healthy", "activemq healthy")
PACK = "lost -> full chain"
PACK_QUICK = "  runs w/o 1 s re-query"
PACK_REQUERY = "  runs with it"
DC_VICTIM = "  DC was the victim"
DC_SURVIVOR = "  DC was the survivor"
FENCE_TO_CHAIN = "fence confirmed -> chain"
REQUERY_S = 0.5
GROUPED = "hapack-group"     # the previous rendering: the VIP first in g-stateful


def requeried(line: failover.Timeline) -> bool:
    """Pacemaker's controller asked the scheduler only ~1 s after the peer was lost (it
    sleeps 1 s and asks again when the CIB query returns while its own CIB updates are
    still pending): not the pack's doing, and it hits some runs of both configurations."""
    lost, asked = line.seconds("peer declared lost"), line.seconds("fence requested")
    return lost is not None and asked is not None and asked - lost > REQUERY_S


def stock_crm(lab: Lab, demo: provision.DemoStack) -> str:
    """The example topology on resource-agents' and fence-agents' stock agents."""
    node1, node2 = lab.nodes
    fences = ""
    for node in lab.nodes:
        params = " ".join(f"{k}={v}" for k, v in lab.bmc(node).fence_ipmilan_params().items())
        fences += (f"primitive fence-{node} stonith:fence_ipmilan params {params} "
                   f"pcmk_host_list={node} op monitor interval=60s timeout=20s\n"
                   f"location loc-fence-{node} fence-{node} -inf: {node}\n")
    data, pw = demo.data_dir, demo.passwords
    return fences + textwrap.dedent(f"""\
        property cib-bootstrap-options: stonith-enabled=true stonith-action=off \\
            stonith-timeout=60s priority-fencing-delay=0s dc-deadtime=2s
        rsc_defaults rsc-options: resource-stickiness=100 migration-threshold=3 \\
            failure-timeout=10min
        primitive fs ocf:heartbeat:Filesystem params device={lab.shared_disk.device_for(node1)} \\
            directory={data} fstype={lab.shared_disk.fstype} \\
            op start timeout=60s op stop timeout=100s op monitor interval=10s timeout=40s
        primitive vip ocf:heartbeat:IPaddr2 params ip={demo.vip} cidr_netmask={lab.prefixlen('lan')} \\
            nic=eth0 op start timeout=20s op stop timeout=20s op monitor interval=10s timeout=20s
        primitive postgresql ocf:heartbeat:pgsql params pgctl={provision.PG_BINDIR}/pg_ctl \\
            psql=/usr/bin/psql pgdata={data}/postgresql pgport={provision.PG_PORT} \\
            socketdir=/tmp monitor_user=postgres monitor_password="{pw['postgresql']}" \\
            start_opt="-c listen_addresses=* -c unix_socket_directories=/tmp -c shared_buffers=16MB -c max_connections=30" \\
            op start timeout=60s op stop timeout=120s op monitor interval=5s timeout=30s
        primitive slapd ocf:heartbeat:slapd params config=/etc/hapack/slapd/slapd.conf \\
            pidfile=/etc/hapack/slapd/slapd.pid user=openldap group=openldap \\
            services="ldap://0.0.0.0:{provision.LDAP_PORT}/" \\
            op start timeout=60s op stop timeout=120s op monitor interval=5s timeout=30s
        primitive activemq ocf:hapack:activemq params data_dir={data}/activemq bind_address=0.0.0.0 \\
            stomp_port={provision.STOMP_PORT} openwire_port={provision.OPENWIRE_PORT} \\
            java_opts="-Xms64m -Xmx256m -XX:TieredStopAtLevel=1" \\
            op start timeout=60s op stop timeout=120s op monitor interval=5s timeout=30s
        group g-stateful fs vip postgresql slapd activemq meta priority=10
        location loc-stateful-prefers-{node1} g-stateful 50: {node1}
        primitive apache ocf:heartbeat:apache params configfile=/etc/hapack/apache/httpd.conf \\
            httpd=/usr/sbin/apache2 statusurl=http://127.0.0.1:{provision.APACHE_PORT}/server-status \\
            op start timeout=60s op stop timeout=120s op monitor interval=10s timeout=30s
        primitive tomcat ocf:heartbeat:tomcat params catalina_home=/usr/share/tomcat10 \\
            catalina_base=/etc/hapack/tomcat java_home={provision.JAVA_HOME} tomcat_user=tomcat \\
            catalina_pid=/tmp/hapack-stock-tomcat.pid \\
            java_opts="-Xms64m -Xmx256m -XX:TieredStopAtLevel=1" \\
            statusurl=http://127.0.0.1:{provision.TOMCAT_PORT}/app/health.jsp \\
            op start timeout=60s op stop timeout=120s op monitor interval=10s timeout=30s
        group g-stateless apache tomcat
        clone cl-stateless g-stateless
        """)


def vip_in_group(configuration: bytes) -> bytes:
    """The rendered configuration with the VIP put back first in g-stateful (hapack's
    rendering before the VIP stood alone): it waits for the fence, the partition's
    notify and promote round, then starts as the group's first member."""
    from lxml import etree
    root = etree.fromstring(configuration)
    vip = root.find("resources/primitive[@id='vip']")
    meta = vip.find("meta_attributes")
    if meta is not None:
        vip.remove(meta)
    root.find("resources/group[@id='g-stateful']").insert(1, vip)
    for cid in ("col-vip-with-partition", "ord-vip-then-stateful"):
        found = root.find(f"constraints/*[@id='{cid}']")
        found.getparent().remove(found)
    return etree.tostring(root, pretty_print=True)


def load_grouped(lab: Lab, demo: provision.DemoStack) -> None:
    demo.cib_file.write_bytes(vip_in_group(demo.cib_file.read_bytes()))
    provision.load_configuration(lab, demo.cib_file)


def vip_started(lab: Lab, line: failover.Timeline) -> failover.Step:
    pcmk = failover.node_log(lab, line.survivor, "pacemaker/pacemaker.log")
    return failover.Step("VIP started", failover.first_line(
        pcmk, line.t0, rf"Result of start operation for vip on {line.survivor}: ok"),
        "pacemaker.log")


def load_stock(lab: Lab, demo: provision.DemoStack) -> None:
    for node in lab.nodes:  # the stock slapd agent reads its pid file from the config
        conf = lab.node_dir(node) / "etc-hapack" / "slapd" / "slapd.conf"
        conf.write_text(conf.read_text() + "pidfile /etc/hapack/slapd/slapd.pid\n")
        os.chown(conf.parent, *_ids("openldap"))
    script = lab.dir / "stock.crm"
    script.write_text(stock_crm(lab, demo))
    script.chmod(0o600)
    lab.exec("node1", ["crm", "-F", "configure", "load", "replace", str(script)], timeout=120)


def _ids(user: str) -> tuple[int, int]:
    import pwd
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def wants_dc_victim(index: int) -> bool:
    """Even runs cut the DC, odd runs the other node: both halves of the DC split."""
    return index % 2 == 0


def stack_off_the_dc(lab: Lab, active: str, stateful, want_dc_victim: bool) -> str:
    """Move the stack (a planned switchover: the active node in standby until the peer
    holds it) so that the node to be cut is the DC or is not, as wanted. Pacemaker elects
    the node whose controller runs longest, so after a power cut the survivor stays DC and
    holds the stack: without this every run would cut the DC."""
    peer = next(n for n in lab.nodes if n != active)
    if (failover.dc(lab, peer) == active) == want_dc_victim:
        return active
    attr = ["crm_attribute", "--node", active, "--name", "standby", "--lifetime", "forever"]
    lab.exec(peer, attr + ["--update", "on"], timeout=30)
    try:
        failover.wait_active(lab, 120, node=peer, stateful=stateful)
    finally:
        lab.exec(peer, attr + ["--delete"], timeout=30, check=False)
    failover.wait_active(lab, 120, node=peer, stateful=stateful)
    failover.warm_chains(lab, provision.HEALTH_PATH, provision.APACHE_PORT)
    return peer


def one_failover(lab: Lab, demo, stateful, index: int, say) -> failover.Timeline:
    active = failover.recover(lab, provision.HEALTH_PATH, provision.APACHE_PORT, stateful=stateful)
    active = stack_off_the_dc(lab, active, stateful, wants_dc_victim(index))
    survivor = next(n for n in lab.nodes if n != active)
    tag = f"bench{index}"
    client = failover.Client(lab, demo.client_config(table=f"rows_{tag}"), tag=tag)
    with client, failover.MountSampler(lab, demo.data_dir) as sampler:
        client.wait_probes(PROBES, 120)
        client.wait_acks(10, 120)
        victim_was_dc = failover.dc(lab, survivor) == active  # shown per run
        t0 = failover.power_cut(lab, active)
        failover.wait_active(lab, 120, node=survivor, stateful=stateful)
        client.wait_probes(PROBES + ("app+db",), 120)
        client.wait_acks(10, 120)
    line = failover.timeline(lab, "power cut", active, survivor, t0, client, sampler)
    line.steps.append(vip_started(lab, line))
    line.victim_was_dc = victim_was_dc
    lost, overlaps = client.lost(), sampler.overlaps()
    say(f"  run {index + 1}: {active}{' (the DC)' if victim_was_dc else ''} -> {survivor}"
        f"{'' if victim_was_dc else ' (the DC)'}: "
        f"full chain {line.total:.2f}s, "
        f"{len(client.acked())} rows acknowledged, {len(lost)} lost, "
        f"{'never' if not overlaps else 'MOUNTED TWICE'} mounted twice")
    if lost or overlaps:
        raise SystemExit(f"run {index + 1} of the failover lost rows {lost[:10]} or mounted "
                         f"twice {overlaps[:3]}")
    return line


QDEVICE_KINDS = ("two_node", "two_node+delay", "qdevice")


def measure(kind: str, runs: int, say, delay: str = "0s") -> list[failover.Timeline]:
    lab = Lab(stack="pacemaker", token_ms=1000, disk_mb=400, boot_delay=1.0,
              qdevice=(kind == "qdevice"))
    try:
        say(f"{kind}: building a lab and provisioning the stack")
        lab.up()
        fence_delay = delay if kind == "two_node+delay" else "0s"
        demo = provision.provision(lab, load=(kind not in ("stock", GROUPED)),
                                   priority_fencing_delay=fence_delay)
        stateful = failover.STATEFUL
        if kind == GROUPED:
            load_grouped(lab, demo)
        if kind == "stock":
            load_stock(lab, demo)
            stateful = STOCK_STATEFUL
        failover.wait_active(lab, 180, stateful=stateful)
        return failovers(lab, demo, stateful, runs, say)
    finally:
        lab.down()


MAX_LOST_RUNS = 3


def failovers(lab: Lab, demo, stateful, runs: int, say) -> list[failover.Timeline]:
    """``runs`` measured failovers. A run the lab could not prepare or measure (a layer
    that does not answer in time: at load averages above 20 the stock apache agent's
    monitor fails and restarts it) is said and retried, up to MAX_LOST_RUNS times; a run
    that lost rows or mounted twice still stops the benchmark (one_failover raises
    SystemExit)."""
    from hapack.lab.core import LabError
    lines: list[failover.Timeline] = []
    lost = 0
    while len(lines) < runs:
        try:
            lines.append(one_failover(lab, demo, stateful, len(lines), say))
        except LabError as exc:
            lost += 1
            say(f"  run {len(lines) + 1} not measured ({lost} of at most {MAX_LOST_RUNS}): {exc}")
            if lost >= MAX_LOST_RUNS:
                say(f"  giving up after {len(lines)} measured runs")
                break
    return lines


def series(lines: list[failover.Timeline], step: str) -> list[float]:
    """The values of ``step`` (a step's name or one of the derived rows) over ``lines``."""
    if step in (PACK_QUICK, PACK_REQUERY):
        return series([l for l in lines if requeried(l) == (step == PACK_REQUERY)], PACK)
    if step in (DC_VICTIM, DC_SURVIVOR):
        return series([l for l in lines if dc_victim(l) == (step == DC_VICTIM)],
                      "full chain on the VIP")
    if step in (PACK, FENCE_TO_CHAIN):
        start = "peer declared lost" if step == PACK else "fence confirmed"
        values = [(l.seconds("full chain on the VIP"), l.seconds(start)) for l in lines]
        return [a - b for a, b in values if a is not None and b is not None]
    return [v for v in (l.seconds(step) for l in lines) if v is not None]


def dc_victim(line: failover.Timeline) -> bool:
    """Whether the node whose power was cut was the DC before the cut."""
    return bool(getattr(line, "victim_was_dc", False))


ROWS = STEPS + (DC_VICTIM, DC_SURVIVOR, PACK, PACK_QUICK, PACK_REQUERY, FENCE_TO_CHAIN)


def baseline(kinds: list[str]) -> str:
    """The configuration the ratios are against: the stock agents when measured."""
    return "stock" if "stock" in kinds else kinds[0]


def ratios(cells: dict[str, list[float]], base: str) -> dict[str, float]:
    """Median of each configuration / median of ``base``, where both have values."""
    if not cells.get(base):
        return {}
    return {k: statistics.median(v) / statistics.median(cells[base])
            for k, v in cells.items() if k != base and v}


def dc_split(lines: list[failover.Timeline]) -> dict:
    """Runs with the DC as the victim and as the survivor: count, medians, re-queries."""
    out = {}
    for name, victim in (("dc_victim", True), ("dc_survivor", False)):
        runs = [l for l in lines if dc_victim(l) == victim]
        total, pack = series(runs, "full chain on the VIP"), series(runs, PACK)
        asked = series(runs, "fence requested")
        lost = series(runs, "peer declared lost")
        out[name] = {"runs": len(runs), "requeried": sum(requeried(l) for l in runs),
                     "full_chain_median": statistics.median(total) if total else None,
                     "lost_to_full_chain_median": statistics.median(pack) if pack else None,
                     "lost_to_fence_requested_median":
                         statistics.median([a - b for a, b in zip(asked, lost)])
                         if asked and len(asked) == len(lost) else None}
    return out


def fmt(values: list[float]) -> str:
    if not values:
        return f"{'-':>22}"
    return f"{min(values):6.2f} {statistics.median(values):6.2f} {max(values):6.2f}  "


def as_json(results: dict[str, list[failover.Timeline]], runs: int) -> dict:
    """Every row's min/median/max per configuration, the ratios of the medians against the
    baseline (the stock agents when measured), the DC split, and each run's timeline."""
    kinds = list(results)
    base = baseline(kinds)
    steps = {}
    for step in ROWS:
        cells = {k: series(results[k], step) for k in kinds}
        row = {k: ({"min": min(v), "median": statistics.median(v), "max": max(v), "n": len(v)}
                   if v else None) for k, v in cells.items()}
        row["ratio"] = ratios(cells, base)
        steps[step.strip()] = row
    timelines = {k: [dict(l.as_json(), victim_was_dc=dc_victim(l), requeried=requeried(l))
                     for l in v] for k, v in results.items()}
    return {"runs": runs, "token_ms": 1000, "configurations": kinds, "baseline": base,
            "load_average": os.getloadavg(), "steps": steps,
            "ratios": {step.strip(): steps[step.strip()]["ratio"]
                       for step in ("full chain on the VIP", PACK, FENCE_TO_CHAIN)},
            "requeried": {k: sum(requeried(l) for l in v) for k, v in results.items()},
            "dc_split": {k: dc_split(v) for k, v in results.items()},
            "timelines": timelines}


def report_qdevice(results: dict[str, list[failover.Timeline]], runs: int, delay: str) -> int:
    kinds = list(results)
    print(f"\nPower cut of the active node, {runs} runs each, token 1000 ms, hapack CIB; "
          f"two_node+delay: priority-fencing-delay {delay} (seconds since the cut: min median max)")
    head = f"{'step':<26}" + "".join(f"{k:>22}" for k in kinds) + \
        "".join(f"{k + ' / ' + kinds[0]:>30}" for k in kinds[1:])
    print(head)
    print("-" * len(head))
    for step in STEPS + (PACK,):
        cells = {k: series(results[k], step) for k in kinds}
        row = f"{step:<26}" + "".join(fmt(cells[k]) for k in kinds)
        for k in kinds[1:]:
            ok = cells[k] and cells[kinds[0]]
            row += (f"{statistics.median(cells[k]) / statistics.median(cells[kinds[0]]):30.2f}"
                    if ok else f"{'-':>30}")
        print(row)
    for kind in kinds:
        hits = sum(requeried(l) for l in results[kind])
        print(f"{kind}: {hits} of {len(results[kind])} runs: fence requested more than "
              f"{REQUERY_S}s after the peer was lost")
    return 0


def report(results: dict[str, list[failover.Timeline]], runs: int) -> int:
    kinds = list(results)
    base = baseline(kinds)
    others = [k for k in kinds if k != base]
    print(f"\nFailover after a power cut of the active node, {runs} runs each, token 1000 ms, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(seconds since the cut: min median max)")
    head = f"{'step':<26}" + "".join(f"{k:>22}" for k in kinds) + \
        "".join(f"{k + ' / ' + base:>26}" for k in others)
    print(head)
    print("-" * len(head))
    for step in ROWS:
        cells = {k: series(results[k], step) for k in kinds}
        found = ratios(cells, base)
        print(f"{step:<26}" + "".join(fmt(cells[k]) for k in kinds)
              + "".join(f"{found[k]:26.2f}" if k in found else f"{'-':>26}" for k in others))
    ok = True
    if series(results.get("hapack", []), "full chain on the VIP"):
        total = statistics.median(series(results["hapack"], "full chain on the VIP"))
        ok &= total < 4.0
        print(f"\ntarget: hapack power cut -> full chain < 4 s: median {total:.2f}s "
              f"{'MET' if total < 4.0 else 'MISSED'}")
    if "hapack" in results and "stock" in results:
        cells = {k: series(results[k], "full chain on the VIP") for k in ("hapack", "stock")}
        ratio = ratios(cells, "stock").get("hapack", float("nan"))
        ok &= ratio <= 1.0
        print(f"target: hapack power cut -> full chain <= stock (issue 19): ratio {ratio:.2f} "
              f"{'MET' if ratio <= 1.0 else 'MISSED'}")
    for kind in kinds:
        hits = sum(requeried(l) for l in results[kind])
        split = dc_split(results[kind])
        print(f"{kind}: {hits} of {len(results[kind])} runs paid Pacemaker's 1 s re-query "
              f"(fence requested more than {REQUERY_S}s after the peer was lost); the DC was the "
              f"victim in {split['dc_victim']['runs']} (re-queried {split['dc_victim']['requeried']})"
              f", the survivor in {split['dc_survivor']['runs']} "
              f"(re-queried {split['dc_survivor']['requeried']})")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("hapack", "stock", GROUPED))
    parser.add_argument("--old-order", action="store_true",
                        help=f"also measure {GROUPED}: the VIP first in the stateful group "
                             "(hapack's rendering before issue 19), side by side")
    parser.add_argument("--qdevice", action="store_true",
                        help="compare two_node, two_node with a fencing delay, and a quorum device")
    parser.add_argument("--delay", default="5s",
                        help="priority-fencing-delay of two_node+delay (default 5s, the lab example's)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--partial", metavar="FILE",
                        help="write the JSON so far to FILE after each configuration")
    args = parser.parse_args(argv)
    problems = missing_prerequisites("pacemaker", qdevice=args.qdevice)
    if os.geteuid() != 0 or problems:
        print("bench_failover: needs root and the lab: " + "; ".join(problems), file=sys.stderr)
        return 2
    start = time.monotonic()

    def say(message):
        print(f"[{time.monotonic() - start:6.1f}s] {message}", flush=True,
              file=sys.stderr if args.json else sys.stdout)

    if args.qdevice:
        kinds = list(QDEVICE_KINDS)
    else:
        kinds = [args.only] if args.only else ["hapack", "stock"] + (
            [GROUPED] if args.old_order else [])
    results = {}
    for kind in kinds:  # each configuration's runs kept as soon as they are measured
        results[kind] = measure(kind, args.runs, say, args.delay)
        if args.partial:
            with open(args.partial, "w") as out:
                json.dump(as_json(results, args.runs), out, indent=2)
    show = report_qdevice if args.qdevice else report
    if not args.json:
        return show(results, args.runs, args.delay) if args.qdevice else show(results, args.runs)
    with contextlib.redirect_stdout(sys.stderr):  # the table for the reader, the JSON for tools
        rc = show(results, args.runs, args.delay) if args.qdevice else show(results, args.runs)
    print(json.dumps(as_json(results, args.runs), indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
