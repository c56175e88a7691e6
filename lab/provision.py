"""The example stack in a running lab: instances, the partition's content, the CIB.

``provision(lab)`` turns a Pacemaker lab (``Lab(stack="pacemaker")``) into the
patent's two-node stack and loads it into the cluster:

* every node gets its own instance configs under its private ``/etc/hapack``
  (host side: ``lab.node_dir(node)/etc-hapack``): Apache on ``*:8080``
  proxying ``/app/`` to Tomcat on ``127.0.0.1:8081``, whose webapp ``app``
  has a health page (``/app/health.jsp``: 200 ``APP OK <node> db=up|down``,
  db telling whether the database answers on the VIP), so "the full chain
  answers" means HTTP server -> app server -> app; a slapd config; and
  root-only credential files for the monitors;
* the shared disk (``lab.shared_disk``) gets the stateful layers' data, made
  inside node1 before the cluster owns the disk: PostgreSQL's initdb (SCRAM
  passwords, clients on the LAN allowed), slapd's mdb seeded with slapadd,
  and ActiveMQ's data directory;
* a stack file generated from the lab's actual addresses
  (``lab.dir/stack.toml``), rendered with hapack's own renderer
  (``hapack.cib.cib``) and loaded with ``cibadmin`` in node1.

:class:`DemoStack` carries what clients, tests and benchmarks need: the VIP,
ports, the database password, paths. ``wait_healthy`` waits until every
layer answers where it should.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from .core import Lab, LabError, NodeCommandError
from .stack import DEFAULT_TOKEN_MS

APACHE_PORT, TOMCAT_PORT, PG_PORT, LDAP_PORT = 8080, 8081, 5432, 389
STOMP_PORT, OPENWIRE_PORT = 61613, 61616
LDAP_SUFFIX = "dc=hapack,dc=lab"
LDAP_ADMIN = f"cn=admin,{LDAP_SUFFIX}"
PG_BINDIR = "/usr/lib/postgresql/15/bin"
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
MODULES = "/usr/lib/apache2/modules"
STATEFUL_ORDER = ("postgresql", "slapd", "activemq")  # start order after the VIP
HEALTH_PATH = "/app/health.jsp"

# The application's health page: 200 "APP OK <node> db=up|down" whenever the app itself
# runs; db= tells whether the database answers on the VIP (a TCP connect, 300 ms).
HEALTH_JSP = """<%@ page contentType="text/plain" %><%
String node = java.net.InetAddress.getLocalHost().getHostName();
String db = "up";
try (java.net.Socket s = new java.net.Socket()) {
    s.connect(new java.net.InetSocketAddress("@VIP@", @PG_PORT@), 300);
} catch (Exception e) {
    db = "down";
}
out.print("APP OK " + node + " db=" + db); %>
"""


@dataclass
class DemoStack:
    """The example stack as provisioned in one lab."""

    lab: Lab
    vip: str
    data_dir: str
    passwords: dict[str, str]
    stack_file: Path
    cib_file: Path
    layers: tuple[str, ...] = STATEFUL_ORDER
    extra: dict = field(default_factory=dict)

    @property
    def chain_url(self) -> str:
        return f"http://{self.vip}:{APACHE_PORT}{HEALTH_PATH}"

    def client_config(self, table: str = "demo_rows") -> dict:
        """What the client program (``hapack.lab.democlient``) needs."""
        return {"vip": self.vip, "table": table, "http_port": APACHE_PORT, "path": HEALTH_PATH,
                "pg_port": PG_PORT, "pg_password": self.passwords["postgresql"],
                "ldap_port": LDAP_PORT, "stomp_port": STOMP_PORT}


# -- per-node instance files -----------------------------------------------------
def _write(path: Path, text: str, mode: int = 0o644, owner: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    if owner:
        shutil.chown(path, owner, owner)
    return path


def apache_conf(root: str) -> str:
    modules = ("mpm_event", "authz_core", "authz_host", "status", "proxy", "proxy_http")
    loads = "".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so\n" for m in modules)
    backend = f"http://127.0.0.1:{TOMCAT_PORT}/app/"
    return textwrap.dedent(f"""\
        # hapack lab: the HTTP server layer (written by hapack.lab.provision)
        ServerRoot "{root}"
        ServerName localhost
        Listen {APACHE_PORT}
        PidFile {root}/run/httpd.pid
        DefaultRuntimeDir {root}/run
        Mutex file:{root}/run default
        ErrorLog /var/log/hapack/apache-error.log
        LogLevel warn
        User www-data
        Group www-data
        StartServers 1
        ServerLimit 2
        ThreadsPerChild 16
        MaxRequestWorkers 32
        MinSpareThreads 4
        MaxSpareThreads 32
        DocumentRoot {root}/htdocs
        <Directory />
            AllowOverride None
            Require all granted
        </Directory>
        ExtendedStatus On
        <Location /server-status>
            SetHandler server-status
            Require ip 127.0.0.1
        </Location>
        ProxyPass /app/ {backend} connectiontimeout=1 timeout=5 retry=0
        ProxyPassReverse /app/ {backend}
        """).replace("Listen ", loads + "Listen ", 1)


def tomcat_server_xml() -> str:
    return textwrap.dedent(f"""\
        <?xml version="1.0" encoding="UTF-8"?>
        <Server port="-1" shutdown="SHUTDOWN">
          <Service name="Catalina">
            <Connector address="127.0.0.1" port="{TOMCAT_PORT}" protocol="HTTP/1.1"
                       connectionTimeout="20000" />
            <Engine name="Catalina" defaultHost="localhost">
              <Host name="localhost" appBase="webapps" unpackWARs="true" autoDeploy="false" />
            </Engine>
          </Service>
        </Server>
        """)


def slapd_conf(directory: str, rootpw_hash: str) -> str:
    return textwrap.dedent(f"""\
        # hapack lab: the directory layer (written by hapack.lab.provision)
        include /etc/ldap/schema/core.schema
        include /etc/ldap/schema/cosine.schema
        modulepath /usr/lib/ldap
        moduleload back_mdb
        database mdb
        maxsize 67108864
        suffix "{LDAP_SUFFIX}"
        rootdn "{LDAP_ADMIN}"
        rootpw {rootpw_hash}
        directory {directory}
        access to * by * read
        """)


def write_node_files(lab: Lab, node: str, vip: str, passwords: dict[str, str],
                     ldap_hash: str, data_dir: str) -> None:
    """Everything ``node`` needs under its private /etc/hapack."""
    etc = lab.node_dir(node) / "etc-hapack"
    root = "/etc/hapack/apache"
    for sub in ("run", "htdocs"):
        (etc / "apache" / sub).mkdir(parents=True, exist_ok=True)
    _write(etc / "apache" / "htdocs" / "index.html", f"<html>{node}</html>\n")
    _write(etc / "apache" / "httpd.conf", apache_conf(root))
    base = etc / "tomcat"
    for sub in ("conf", "logs", "temp", "work", "webapps/app"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name in ("web.xml", "context.xml", "catalina.properties", "logging.properties"):
        shutil.copy(f"/etc/tomcat10/{name}", base / "conf" / name)
    _write(base / "conf" / "server.xml", tomcat_server_xml())
    _write(base / "webapps" / "app" / "health.jsp",
           HEALTH_JSP.replace("@VIP@", vip).replace("@PG_PORT@", str(PG_PORT)))
    shutil.chown(base, "tomcat", "tomcat")
    for path in base.rglob("*"):
        shutil.chown(path, "tomcat", "tomcat")
    _write(etc / "slapd" / "slapd.conf", slapd_conf(f"{data_dir}/slapd/db", ldap_hash))
    for layer, password in passwords.items():
        write_credential(lab, node, layer, password)


def write_credential(lab: Lab, node: str, layer: str, password: str) -> Path:
    """The root-only file in ``node``'s private /etc/hapack/cred that a layer's monitor
    logs in with (``credentials_file``)."""
    return _write(lab.node_dir(node) / "etc-hapack" / "cred" / layer, password + "\n", mode=0o600)


# -- the partition's initial content ---------------------------------------------
def _as(user: str, *argv: str) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--reset-env",
            "--", *argv]


SEED_LDIF = f"""dn: {LDAP_SUFFIX}
objectClass: dcObject
objectClass: organization
o: hapack lab
dc: hapack

dn: ou=people,{LDAP_SUFFIX}
objectClass: organizationalUnit
ou: people
"""


def seed_postgresql(lab: Lab, node: str, directory: str, password: str) -> None:
    """initdb in ``directory`` (on the partition, mounted in ``node``, from inside it):
    user postgres with ``password`` (SCRAM), clients on the LAN allowed."""
    scratch = Path(directory).parent.parent / f"pg-seed-{os.getpid()}"
    scratch.mkdir(mode=0o755, exist_ok=True)  # off the partition; postgres reads the file
    try:
        pwfile = _write(scratch / "pg.pw", password + "\n", mode=0o644)
        lab.exec(node, ["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700",
                        directory])
        lab.exec(node, _as("postgres", f"{PG_BINDIR}/initdb", "-D", directory, "-U", "postgres",
                           "--auth=scram-sha-256", "--pwfile", str(pwfile), "-E", "UTF8",
                           "--locale=C.UTF-8", "--no-sync"), timeout=120)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    hba = "host all all 0.0.0.0/0 scram-sha-256\n"
    lab.exec(node, ["sh", "-c", f"printf '%s' '{hba}' >> {directory}/pg_hba.conf"])
    lab.exec(node, ["sh", "-c", f"printf '%s\\n' '{SYNC_SETTING}' >> {directory}/postgresql.conf"])


# After a crash PostgreSQL first makes the whole data directory durable: by default
# an fsync of every file (0.05-0.55 s of each failover here); on a file system of its
# own (the partition) one syncfs() does the same (PostgreSQL 14+, Linux 5.8+ reports
# its write errors). The recommended setting for a data directory on the partition.
SYNC_SETTING = "recovery_init_sync_method = syncfs"


def seed_partition(lab: Lab, data_dir: str, passwords: dict[str, str]) -> None:
    """initdb, slapadd and the ActiveMQ directory on the shared disk, from inside node1."""
    device = lab.shared_disk.device_for("node1")
    scratch = Path(data_dir).parent / "seed"
    scratch.mkdir(mode=0o755, exist_ok=True)
    ldif = _write(scratch / "seed.ldif", SEED_LDIF)
    run = lab.exec
    run("node1", ["mount", "-t", lab.shared_disk.fstype, device, data_dir])
    try:
        ldap, amq = (f"{data_dir}/{name}" for name in ("slapd", "activemq"))
        for path, user, mode in ((ldap, "openldap", "0750"), (f"{ldap}/db", "openldap", "0750"),
                                 (amq, "activemq", "0750")):
            run("node1", ["install", "-d", "-o", user, "-g", user, "-m", mode, path])
        seed_postgresql(lab, "node1", f"{data_dir}/postgresql", passwords["postgresql"])
        run("node1", ["slapadd", "-f", "/etc/hapack/slapd/slapd.conf", "-l", str(ldif)])
        run("node1", ["chown", "-R", "openldap:openldap", ldap])
    finally:
        run("node1", ["umount", data_dir], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def ldap_password_hash(lab: Lab, password: str) -> str:
    bare = lab.shared_dir / "ldap.pw"
    _write(bare, password, mode=0o600)  # slappasswd -T hashes the whole file
    try:
        return lab.exec("node1", ["slappasswd", "-T", str(bare)]).stdout.strip()
    finally:
        bare.unlink()


# -- the stack file and the CIB ----------------------------------------------------
# The example stack's cluster-wide part (str.format fields; see docs/stack-file.md).
STACK_HEAD = """\
# The example stack in lab '{name}' (written by hapack.lab.provision).
[cluster]
name = "hapack-{name}"
stickiness = 100
migration_threshold = 3
failure_timeout = "10min"

[fencing]
action = "off"
priority_fencing_delay = "{fence_delay}"
timeout = "60s"

[corosync]
token = "{token_ms}ms"
syslog = false
logfile = "/var/log/cluster/corosync.log"
"""

# The PostgreSQL layer (str.format fields ``data_dir``, the partition's mount point, and
# ``pg_port``): the demo's, and the hamon benchmark rig's (hapack.lab.hamonrig).
PG_LAYER = """[[layers]]
name = "postgresql"
agent = "postgresql"
kind = "stateful"
data_dir = "{data_dir}/postgresql"
data_param = "pgdata"

[layers.params]
listen_address = "*"
port = {pg_port}
credentials_file = "/etc/hapack/cred/postgresql"
options = "-c shared_buffers=16MB -c max_connections=30"

[layers.ops]
monitor_interval = "5s"
"""

# The VIP, the partition and the layers, top of the stack first (str.format fields).
STACK_LAYERS = """
[vip]
address = "{vip}"

[vip.params]
arp_count = 3
dad_timeout = 50        # the lab's LAN answers a duplicate probe within 1 ms

[partition]
backend = "shared"
device = "{device}"
directory = "{data_dir}"
fstype = "{fstype}"

[partition.ops]
monitor_interval = "11s"
promoted_monitor_interval = "5s"

[[layers]]
name = "apache"
agent = "apache"
kind = "stateless"

[layers.params]
config = "/etc/hapack/apache/httpd.conf"
pidfile = "/etc/hapack/apache/run/httpd.pid"
port = {apache_port}

[[layers]]
name = "tomcat"
agent = "tomcat"
kind = "stateless"

[layers.params]
catalina_base = "/etc/hapack/tomcat"
port = {tomcat_port}
java_home = "{java_home}"
java_opts = "-Xms64m -Xmx256m -XX:TieredStopAtLevel=1 -Xshare:auto"

""" + PG_LAYER + """
[[layers]]
name = "slapd"
agent = "slapd"
kind = "stateful"
data_dir = "{data_dir}/slapd"
data_param = "data_dir"

[layers.params]
config = "/etc/hapack/slapd/slapd.conf"
services = "ldap://0.0.0.0:{ldap_port}/"
bind_dn = "{ldap_admin}"
credentials_file = "/etc/hapack/cred/slapd"

[layers.ops]
monitor_interval = "5s"

[[layers]]
name = "activemq"
agent = "activemq"
kind = "stateful"
data_dir = "{data_dir}/activemq"
data_param = "data_dir"

[layers.params]
bind_address = "0.0.0.0"
stomp_port = {stomp_port}
openwire_port = {openwire_port}
java_opts = "-Xms64m -Xmx256m -XX:TieredStopAtLevel=1"

[layers.ops]
monitor_interval = "5s"
"""


def stack_toml(lab: Lab, vip: str, data_dir: str, *, priority_fencing_delay: str = "0s",
               token_ms: int = DEFAULT_TOKEN_MS) -> str:
    """The example stack for this lab's addresses (see docs/stack-file.md)."""
    nodes = "".join(textwrap.dedent(f"""
        [[nodes]]
        name = "{node}"

        [nodes.bmc]
        driver = "ipmi"
        address = "{lab.bmc(node).address}"
        port = {lab.bmc(node).port}
        username = "{lab.bmc(node).username}"
        password_file = "{lab.bmc(node).password_file}"
        lanplus = true
        cipher = {lab.bmc(node).cipher}
        """) for node in lab.nodes)
    links = "".join(textwrap.dedent(f"""
        [[links]]
        name = "{link}"
        interface = "{lab.iface(link)}"
        addresses = {{ {", ".join(f'{n} = "{lab.addr(n, link)}/{lab.prefixlen(link)}"'
                                  for n in lab.nodes)} }}
        """) for link in ("lan", "hb"))
    fields = dict(name=lab.name, fence_delay=priority_fencing_delay, token_ms=token_ms, vip=vip,
                  device=lab.shared_disk.device_for("node1"), fstype=lab.shared_disk.fstype,
                  data_dir=data_dir, apache_port=APACHE_PORT, tomcat_port=TOMCAT_PORT,
                  java_home=JAVA_HOME, pg_port=PG_PORT, ldap_port=LDAP_PORT, ldap_admin=LDAP_ADMIN,
                  stomp_port=STOMP_PORT, openwire_port=OPENWIRE_PORT)
    return STACK_HEAD.format(**fields) + quorum_toml(lab) + nodes + links + STACK_LAYERS.format(**fields)


def quorum_toml(lab: Lab) -> str:
    """The [quorum] table of a lab with a quorum device (``Lab(qdevice=True)``): its
    arbiter, and the ping of the client (the service LAN's stand-in for a gateway)."""
    if not lab.arbiter_addr:
        return ""
    return textwrap.dedent(f"""
        [quorum]
        host = "{lab.arbiter_addr}"
        algorithm = "ffsplit"

        [quorum.heuristics]
        ping = ["{lab.client_addr}"]
        """)


def render_cib(stack_file: Path, options: dict[str, str]) -> bytes:
    """The rendered CIB's configuration section, plus the lab's own cluster options."""
    from hapack.cib import cib
    from hapack.stack import load
    root = etree.fromstring(cib.render(load(stack_file), stack_file.name))
    props = root.find("configuration/crm_config/cluster_property_set")
    for name, value in options.items():
        if props.find(f"nvpair[@name='{name}']") is None:
            etree.SubElement(props, "nvpair", id=f"{props.get('id')}-{name}", name=name, value=value)
    return etree.tostring(root.find("configuration"), pretty_print=True)


def load_configuration(lab: Lab, cib_file: Path) -> None:
    lab.exec("node1", ["cibadmin", "--replace", "--scope", "configuration", "--xml-file",
                       str(cib_file)], timeout=60)


# -- everything ------------------------------------------------------------------
def provision(lab: Lab, *, priority_fencing_delay: str = "0s", load: bool = True) -> DemoStack:
    """Provision the example stack in ``lab`` and (``load``) hand it to Pacemaker."""
    vip = lab.free_vip()
    data_dir = str(lab.shared_dir / "data")
    os.makedirs(data_dir, mode=0o755, exist_ok=True)
    tag = f"{lab.name}-{os.getpid()}"
    passwords = {"postgresql": f"pg-{tag}-{os.urandom(6).hex()}",
                 "slapd": f"ldap-{tag}-{os.urandom(6).hex()}"}
    ldap_hash = ldap_password_hash(lab, passwords["slapd"])
    for node in lab.nodes:
        write_node_files(lab, node, vip, passwords, ldap_hash, data_dir)
    seed_partition(lab, data_dir, passwords)
    stack_file = lab.dir / "stack.toml"
    stack_file.write_text(stack_toml(lab, vip, data_dir, token_ms=lab.token_ms,
                                     priority_fencing_delay=priority_fencing_delay))
    cib_file = lab.dir / "cib-configuration.xml"
    cib_file.write_bytes(render_cib(stack_file, lab.cluster_options))
    demo = DemoStack(lab, vip, data_dir, passwords, stack_file, cib_file)
    if load:
        load_configuration(lab, cib_file)
    return demo
