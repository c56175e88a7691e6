"""The ``hamon`` command.

::

    hamon run --config STACK [--node NAME] [--debug]   the daemon, in the foreground
    hamon status [--json]                              role, links, resources, last failover
    hamon standby [on|off]                             hand the stateful side over / take part again
    hamon takeover                                     take the stateful side (from the peer, cleanly)
    hamon maintenance on|off                           hands off every resource / resume
    hamon keygen FILE                                  write a new root-only key file

The commands other than ``run`` and ``keygen`` talk to the running daemon
on its control socket (``--run-dir``, default /run/hamon, or the one in the
stack file's ``[hamon]`` table with ``--config``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
EXIT_CONFIG = EXIT_USAGE  # bad input (stack file, key file) exits 2, as in every hapack CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hamon", description="two-node heartbeat and failover daemon")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", required=True, help="the stack file (TOML)")
    run.add_argument("--node", default=os.uname().nodename, help="this node's name (default: "
                     "the host name)")
    run.add_argument("--debug", action="store_true", help="log every decision and command")
    for name, text in (("status", "show the daemon's view"),
                       ("takeover", "take the stateful side over")):
        cmd = sub.add_parser(name, help=text)
        _where(cmd)
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="the raw status as JSON")
    for name, text, default in (("standby", "hand the stateful side over and stay out", "on"),
                                ("maintenance", "hands off every resource", None)):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("switch", choices=("on", "off"), nargs="?" if default else None,
                         default=default)
        _where(cmd)
    cmd = sub.add_parser("cleanup", help="forget this node's failures of a resource (all "
                         "without a name), as crm_resource --cleanup does")
    cmd.add_argument("resource", nargs="?", help="a resource of the stack (default: all)")
    _where(cmd)
    keygen = sub.add_parser("keygen", help="write a new key file (copy it to both nodes)")
    keygen.add_argument("file")
    return p


def _where(cmd):
    cmd.add_argument("--run-dir", help="where the control socket is (default: /run/hamon)")
    cmd.add_argument("--config", help="read run_dir from this stack file")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "run":
        return run(args)
    if args.command == "keygen":
        return keygen(args.file)
    return command(args)


def run(args: argparse.Namespace) -> int:
    from hapack.hamon.config import load_config
    from hapack.hamon.packet import KeyFileError
    from hapack.stack import StackError
    if os.geteuid() != 0:
        print("hamon: run needs root (addresses, mounts, the key file)", file=sys.stderr)
        return EXIT_ERROR
    try:
        config = load_config(args.config, args.node)
    except StackError as exc:
        print(f"hamon: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _serve(config, args.debug)
    except KeyFileError as exc:
        print(f"hamon: refusing to start: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _serve(config, debug):
    from hapack.hamon import control, report
    from hapack.hamon.daemon import Daemon, fresh_window
    from hapack.hamon.events import EventLog
    from hapack.hamon.fence import Fencer
    from hapack.hamon.metrics import MetricsError
    from hapack.hamon.ocfexec import OcfExecutor
    from hapack.hamon.packet import Keyring
    from hapack.hamon.transport import UdpTransport, next_generation
    from hapack.hamon.upstream import Pinger
    s, peer = config.settings, config.peer
    keyring = Keyring.load(s.key_file)
    refusal = _preflight(config)
    if refusal:
        print(f"hamon: refusing to start: {refusal}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        metrics = _metrics(config)
    except MetricsError as exc:
        print(f"hamon: refusing to start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log = EventLog(config.node, s.event_log, debug=debug)
    from hapack.hamon import alerts
    dispatcher = alerts.start(config, log)
    generation = next_generation(os.path.join(s.state_dir, "generation"))
    transport = UdpTransport(keyring, generation, peer.name, config.links, s.port,
                             fresh_window(s, len(config.links)))
    fencer = Fencer.for_peer(s.fence_agent, peer, s.fence_timeout, log)
    fencer.prestart()
    pinger = Pinger(s.ping_targets, s.ping_interval, s.dead_time / 2).start() \
        if s.ping_targets else None
    daemon = Daemon(config, transport, OcfExecutor(s.ocf_root, config.node, log), fencer, log,
                    pinger=pinger)
    server = control.ControlServer(s.run_dir, lambda req: report.handle(daemon, req), log)
    if metrics is not None:
        metrics.log, daemon.metrics = log, metrics.start()
        log.info(f"metrics: GET /metrics on {s.metrics_address} (port {metrics.address[1]} of "
                 f"{metrics.address[0]})")
    log.info(f"hamon {config.node} starting: generation {generation}, links "
             + ", ".join(f"{e.name} {e.local}->{e.peer}" for e in config.links)
             + f", port {s.port}, interval {s.interval * 1000:.0f}ms, dead after "
             f"{s.dead_time * 1000:.0f}ms")
    try:
        return daemon.run(server)
    finally:
        server.close()
        if metrics is not None:
            metrics.close()
        transport.close()
        fencer.close()
        if pinger:
            pinger.stop()
        log.info("hamon stopped")
        if dispatcher is not None:
            dispatcher.close()
        log.close()


def _metrics(config):
    """The metrics server bound (not started yet), or None when metrics are off."""
    from hapack.hamon.metrics import MetricsServer
    end = config.metrics_endpoint
    if end is None:
        return None
    ours = end.host in {e.local for e in config.links}
    return MetricsServer(end.host, end.port, freebind=ours, state_dir=config.settings.state_dir)


def _preflight(config):
    """Why the daemon must not start (agents missing, another hamon running), or None."""
    from hapack.hamon import control
    missing = _missing_programs(config)
    if missing:
        return (f"not installed: {', '.join(missing)} (run 'hapack install', or set ocf_root / "
                "fence_agent in [hamon])")
    try:
        control.request(config.settings.run_dir, {"cmd": "status"}, timeout=2)
    except (control.ControlError, OSError, ValueError):
        return None
    return f"hamon already runs here (control socket in {config.settings.run_dir})"


def _missing_programs(config):
    from hapack.hamon.ocfexec import OcfExecutor, stack_resources
    partition, base, side = stack_resources(config.stack)
    ocf = OcfExecutor(config.settings.ocf_root, config.node, None)
    paths = {ocf.path(r) for r in (partition, *base, *side)} | {config.settings.fence_agent}
    paths |= {device.path for device in config.peer.fences}   # its further fencing levels
    return sorted(p for p in paths if not os.access(p, os.X_OK))


def _run_dir(args):
    if args.run_dir:
        return args.run_dir
    if args.config:
        from hapack.hamon.config import settings
        from hapack.stack import load
        stack = load(args.config)
        return settings(stack.hamon, stack.file).run_dir
    return "/run/hamon"


def command(args: Any) -> int:
    from hapack.hamon import control, report
    payload = {"cmd": args.command}
    if args.command in ("standby", "maintenance"):
        payload["on"] = args.switch == "on"
    if args.command == "cleanup":
        payload["resource"] = args.resource
    try:
        answer = control.request(_run_dir(args), payload)
    except control.ControlError as exc:
        print(f"hamon: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not answer.get("ok"):
        print(f"hamon: {answer.get('error')}", file=sys.stderr)
        return EXIT_ERROR
    if args.command == "status":
        st = answer["status"]
        print(json.dumps(st, indent=1) if args.json else report.render(st))
    else:
        print(answer.get("message", "ok"))
    return EXIT_OK


def keygen(path: str) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write("# hamon heartbeat keys: 'auth ID' signs, every 'ID SECRET' verifies\n"
                     f"auth 1\n1 {secrets.token_hex(32)}\n")
    print(f"wrote {path} (mode 600): copy it to the other node")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
