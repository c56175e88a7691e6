"""hamon on the lab's two nodes: agents, keys, a stack file, the daemons, what to observe.

For the cluster tests and the benchmark (not used by the daemon itself).
:class:`Rig` stages ``hapack install`` in the lab's shared directory (the
same path in the host and the nodes), writes a root-only key file into each
node's private ``/etc/hapack``, seeds an LDAP directory on the shared disk
and writes a stack file that drives the real agents:

* ``vip``: ocf:hapack:vip on the service LAN;
* ``partition``: ocf:hapack:partition, backend ``shared``, on the lab's disk;
* ``web`` (stateless): ocf:heartbeat:anything running the lab's responder on
  port 8080 of every node, so a client sees which node holds the VIP (with
  ``slow=True`` through ``ocf:hapacklab:slow``, the same agent whose monitor
  first sleeps 0.5-2 s: a slow probe);
* ``postgresql`` (stateful, with ``postgresql=True``, before ``ldap``): the demo's
  PostgreSQL layer (``hapack.lab.provision``: the same initdb, layer and root-only
  credentials file), its cluster on the partition, answering on the VIP (for the
  benchmark; the tests keep the slapd-only rig, which starts faster);
* ``ldap`` (stateful): ocf:hapack:slapd with its database on the partition.

Fencing goes through fence_bmc to the nodes' ipmi_sim BMCs.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hapack.lab import provision
from hapack.lab.state import alive

HAMON = os.path.join(os.path.dirname(sys.executable), "hamon")
PORT = 8080
SUFFIX = "dc=hamon,dc=lab"
NODE_STATE = "/etc/hapack/hamon"     # node-private and kept across the node's reboots
KEY_FILE = "/etc/hapack/hamon.key"


SLOW_AGENT = """#!/bin/sh
# hapack lab: ocf:heartbeat:anything whose monitor first sleeps 0.5-2 s (a slow probe)
if [ "$1" = monitor ]; then
    sleep "$(awk 'BEGIN { srand(); printf "%.2f", 0.5 + rand() * 1.5 }')"
fi
exec /usr/lib/ocf/resource.d/heartbeat/anything "$@"
"""


class RigError(RuntimeError):
    pass


class Rig:
    def __init__(self, lab, hamon=None, stateful=True, slow=False, postgresql=False):
        self.lab = lab
        self.dir = Path(lab.shared_dir) / "hamon"
        self.root = self.dir / "root"
        self.data = str(self.dir / "data")          # the partition's mount point
        self.stack_file = self.dir / "stack.toml"
        self.vip = lab.free_vip(0)
        self.hamon = dict(hamon or {})
        self.stateful = stateful
        self.slow = slow
        self.postgresql = postgresql and stateful
        self.pg_password = f"pg-{lab.name}-{os.urandom(9).hex()}" if self.postgresql else None
        self.daemons = {}
        self.starts = {}

    # -- setting up -----------------------------------------------------------------
    def setup(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self._install()
        self._keys()
        if self.stateful:
            self._seed_ldap()
        if self.postgresql:
            self._seed_postgresql()
        self.stack_file.write_text(self.stack_text())
        return self

    def _install(self):
        subprocess.run([sys.executable, "-m", "hapack.cli", "install", "--root", str(self.root)],
                       check=True, capture_output=True, text=True)
        ocf = self.root / "usr/lib/ocf"
        for name, target in (("lib", "/usr/lib/ocf/lib"),
                             ("resource.d/heartbeat", "/usr/lib/ocf/resource.d/heartbeat")):
            link = ocf / name
            if not link.exists():
                link.symlink_to(target)
        slow = ocf / "resource.d" / "hapacklab" / "slow"
        slow.parent.mkdir(parents=True, exist_ok=True)
        slow.write_text(SLOW_AGENT)
        slow.chmod(0o755)

    def _keys(self):
        text = f"auth 1\n1 {os.urandom(32).hex()}\n"
        for node in self.lab.nodes:
            path = self.lab.node_dir(node) / "etc-hapack" / "hamon.key"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            shutil.rmtree(self.lab.node_dir(node) / "etc-hapack" / "hamon", ignore_errors=True)
            for old in (self.lab.node_dir(node) / "var-log" / "hamon" / "events.jsonl",
                        self.lab.node_dir(node) / "spawn" / f"hamon-{node}.log"):
                old.unlink(missing_ok=True)  # a shared lab keeps the last test's

    def _seed_ldap(self):
        ldap = self.dir / "ldap"
        ldap.mkdir(exist_ok=True)
        (ldap / "slapd.conf").write_text(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\nmaxsize 10485760\n"
            f'suffix "{SUFFIX}"\nrootdn "cn=admin,{SUFFIX}"\n'
            f"directory {self.data}/ldap/db\naccess to * by * read\n")
        (ldap / "seed.ldif").write_text(f"dn: {SUFFIX}\nobjectClass: dcObject\n"
                                        "objectClass: organization\no: hamon\ndc: hamon\n")
        device = self.lab.shared_disk.device_for(self.lab.nodes[0])
        script = (f"set -e; mkdir -p {self.data}; mount -t ext4 {device} {self.data}; "
                  f"trap 'umount {self.data}' EXIT; rm -rf {self.data}/ldap; "
                  f"mkdir -p {self.data}/ldap/db; slapadd -f {ldap}/slapd.conf -l {ldap}/seed.ldif; "
                  f"chown -R openldap:openldap {self.data}/ldap; chmod 750 {self.data}/ldap")
        subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       check=True, capture_output=True, text=True)

    def _seed_postgresql(self):
        """The demo's PostgreSQL cluster on the partition (made inside node1), and the
        monitor's credentials file in each node."""
        node, run = self.lab.nodes[0], self.lab.exec
        run(node, ["mount", "-t", "ext4", self.lab.shared_disk.device_for(node), self.data])
        try:
            run(node, ["rm", "-rf", f"{self.data}/postgresql"])  # a shared lab keeps the last
            provision.seed_postgresql(self.lab, node, f"{self.data}/postgresql", self.pg_password)
        finally:
            run(node, ["umount", self.data], check=False)
        for each in self.lab.nodes:
            provision.write_credential(self.lab, each, "postgresql", self.pg_password)

    def client_config(self, table="bench_rows"):
        """What the demo's client (``hapack.lab.democlient``) needs to reach PostgreSQL
        on the VIP (a root-only file: it holds the password)."""
        return {"vip": self.vip, "table": table, "pg_port": provision.PG_PORT,
                "pg_password": self.pg_password}

    def stack_text(self):
        lab = self.lab
        nodes = ""
        for node in lab.nodes:
            bmc = lab.bmc(node)
            nodes += (f'\n[[nodes]]\nname = "{node}"\n[nodes.bmc]\ndriver = "ipmi"\n'
                      f'address = "{bmc.address}"\nport = {bmc.port}\n'
                      f'username = "{bmc.username}"\npassword_file = "{bmc.password_file}"\n'
                      f"lanplus = true\ncipher = {bmc.cipher}\n")
        links = "".join(
            f'\n[[links]]\nname = "{link}"\ninterface = "{lab.iface(link)}"\naddresses = {{ '
            + ", ".join(f'{n} = "{lab.addr(n, link)}/{lab.prefixlen(link)}"' for n in lab.nodes)
            + " }\n" for link in ("lan", "hb"))
        settings = {"key_file": KEY_FILE, "state_dir": NODE_STATE,
                    "ocf_root": str(self.root / "usr/lib/ocf"),
                    "fence_agent": str(self.root / "usr/sbin/fence_bmc"), **self.hamon}
        table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        return (f'[cluster]\nname = "hamon-{lab.name}"\n{nodes}{links}\n'
                f'[vip]\naddress = "{self.vip}"\n[vip.params]\narp_count = 3\ndad_timeout = 50\n\n'
                f'[partition]\nbackend = "shared"\ndevice = "{lab.shared_disk.device}"\n'
                f'directory = "{self.data}"\nfstype = "ext4"\n\n'
                + self._layers() + f"\n[hamon]\n{table}")

    def _layers(self):
        binfile, *options = self.lab.responder_argv("0.0.0.0", PORT)
        agent = "ocf:hapacklab:slow" if self.slow else "ocf:heartbeat:anything"
        web = (f'[[layers]]\nname = "web"\nagent = "{agent}"\nkind = "stateless"\n'
               f'[layers.params]\nbinfile = "{binfile}"\n'
               f'cmdline_options = "{" ".join(options)}"\n'
               'pidfile = "/run/hamon-web.pid"\nlogfile = "/var/log/hamon-web.log"\n')
        if not self.stateful:
            return web
        if self.postgresql:
            web += "\n" + provision.PG_LAYER.format(data_dir=self.data, pg_port=provision.PG_PORT)
        return web + (f'\n[[layers]]\nname = "ldap"\nagent = "slapd"\nkind = "stateful"\n'
                      f'data_dir = "{self.data}/ldap"\n[layers.params]\n'
                      f'config = "{self.dir / "ldap/slapd.conf"}"\n'
                      f'data_dir = "{self.data}/ldap"\n'
                      'services = "ldap://127.0.0.1:389/"\n')

    # -- the daemons ----------------------------------------------------------------
    def start(self, *nodes, debug=False):
        for node in nodes or self.lab.nodes:
            argv = [HAMON, "run", "--config", str(self.stack_file), "--node", node]
            self.starts[node] = self.starts.get(node, 0) + 1
            self.daemons[node] = self.lab.spawn(node, argv + (["--debug"] if debug else []),
                                                name=f"hamon-{node}")
        return self

    def kill(self, node):
        """``kill -9`` the daemon in ``node``: the node and its resources live on."""
        spawned = self.daemons.pop(node)
        os.kill(spawned.host[0], signal.SIGKILL)
        while alive(spawned.host):
            time.sleep(0.01)
        return spawned

    def kill_and_restart(self, node, delay):
        """``kill -9`` the daemon, and start it again ``delay`` seconds later the way
        systemd's ``Restart=`` would: only if the node still runs. True if restarted."""
        self.kill(node)
        time.sleep(delay)
        if not self.lab.running(node):
            return False
        self.start(node)
        return True

    def hamon_cli(self, node, *args, timeout=15):
        return self.lab.exec(node, [HAMON, *args], check=False, timeout=timeout)

    def status(self, node):
        result = self.hamon_cli(node, "status", "--json")
        if result.returncode != 0:
            raise RigError(f"{node}: hamon status: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def wait_for(self, predicate, timeout, what, poll=0.1):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except (RigError, subprocess.SubprocessError, OSError) as exc:
                last = exc
            time.sleep(poll)
        raise RigError(f"{what}: not within {timeout}s (last: {last})")

    def wait_state(self, node, state, timeout=30):
        return self.wait_for(lambda: self.status(node)["state"] == state and self.status(node),
                             timeout, f"{node} in state {state}")

    def wait_roles(self, primary, secondary, timeout=40):
        """Both nodes in their roles and idle, with the stateless layers up: a fault
        injected now does not land in the middle of a start. (That matters here: the
        nodes share the host's /root, and a node killed inside ``su -`` leaves pyenv's
        rehash lock behind, which stalls every later login shell for a minute.)"""
        def settled(node, state):
            st = self.status(node)
            up = all(r["status"] in ("started", "promoted") for r in st["resources"]
                     if r["kind"] in ("stateless", "partition"))
            return st["state"] == state and not st["busy"] and up and st
        self.wait_for(lambda: settled(primary, "primary"), timeout, f"{primary} primary, idle")
        return self.wait_for(lambda: settled(secondary, "secondary"), timeout,
                             f"{secondary} secondary, idle")

    def stop(self, node, timeout=30):
        """SIGTERM the daemon in ``node`` (a clean stop: everything stops in reverse)."""
        spawned = self.daemons.pop(node, None)
        if spawned is None or not spawned.running:
            return
        os.kill(spawned.host[0], 15)
        deadline = time.monotonic() + timeout
        while alive(spawned.host) and time.monotonic() < deadline:
            time.sleep(0.02)
        spawned.stop()

    # -- observing ------------------------------------------------------------------
    def holders(self):
        """The nodes in which the partition is mounted."""
        return set(self.watch_mounts().holders())

    def watch_mounts(self):
        """``with rig.watch_mounts() as mounts:`` samples the holders in the background."""
        from hapack.lab.failover import MountSampler
        return MountSampler(self.lab, self.data)

    def watch_vip_holders(self):
        """``with rig.watch_vip_holders() as vips:`` samples which nodes have the VIP."""
        return VipSampler(self.lab, self.vip)

    def events(self, node, kind=None):
        path = self.lab.node_dir(node) / "var-log" / "hamon" / "events.jsonl"
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if kind is None or e["event"] == kind]

    def log(self, node):
        spawned = self.daemons.get(node)
        path = spawned.log if spawned else self.lab.node_dir(node) / "spawn" / f"hamon-{node}.log"
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def teardown(self):
        """Stop the daemons cleanly, then power both nodes off: nothing of the test is left."""
        for node in list(self.daemons):
            if self.lab.running(node) and not self.lab.frozen(node):
                try:
                    self.stop(node, timeout=20)
                except OSError:
                    pass
        for spawned in self.daemons.values():
            spawned.stop()
        self.daemons.clear()
        for node in self.lab.nodes:
            if self.lab.frozen(node):
                self.lab.thaw(node)
            if self.lab.running(node) or self.lab.power(node, "status") == "on":
                self.lab.power(node, "off", wait=True)



class VipSampler:
    """Samples which nodes have the VIP configured, every 20 ms, in a thread.

    Reads each node's local routing table (``/proc/<init>/net/fib_trie`` of its
    PID 1, the node's network namespace): no command runs in the nodes.
    """

    def __init__(self, lab, address, interval=0.02):
        self.lab, self.address, self.interval = lab, address, interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vip-sampler", daemon=True)

    def has(self, node):
        init = self.lab.power_state(node).get("init")
        if not alive(init):
            return False
        try:
            lines = Path(f"/proc/{init[0]}/net/fib_trie").read_text().splitlines()
        except OSError:
            return False
        for i, line in enumerate(lines[:-1]):
            if line.strip() == f"|-- {self.address}" and "/32 host LOCAL" in lines[i + 1]:
                return True
        return False

    def holders(self):
        return frozenset(n for n in self.lab.nodes if self.has(n))

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), self.holders()))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def overlaps(self):
        return [s for s in self.samples if len(s[1]) > 1]
