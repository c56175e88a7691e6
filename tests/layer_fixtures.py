"""Second instances of apache2, nginx and Tomcat for the stateless-layer tests.

Each builder writes a complete instance of its own under a world-traversable
temp dir (the servers' unprivileged users must reach their files), on a
free loopback port, and knows the agent parameters that drive it.
:class:`Agent` runs the installed agent; :func:`cleanup` stops every
instance a test made, by pid, also when the test failed. Fault vocabulary:
``kill9``, ``freeze``/``thaw`` (SIGSTOP/SIGCONT), ``break_config``.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from hapack import procfs
from requires import need_binary

MODULES = "/usr/lib/apache2/modules"
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
TOMCAT_CONF = "/etc/tomcat10"
# The application's own health page: 503 while the file 'down' exists beside it.
APP_HEALTH = """<%@ page contentType="text/plain" %><%
if (new java.io.File(application.getRealPath("/down")).exists()) {
    response.setStatus(503); out.print("APP DOWN");
} else { out.print("APP OK"); } %>
"""


def free_port():
    """A free loopback port, chosen by the kernel (bind port 0 and read it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch(tag):
    """A temp dir every server user can traverse; removed by the caller."""
    path = tempfile.mkdtemp(prefix=f"hapack-{tag}-")
    os.chmod(path, 0o755)
    return path


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


class Instance:
    """What every builder provides: a name, a port, agent parameters, a pid file."""

    agent = None

    def __init__(self, root, name):
        self.root = os.path.join(root, name)
        self.name = name
        self.port = free_port()
        os.makedirs(self.root, mode=0o755)

    @property
    def pidfile(self):
        return os.path.join(self.root, "run", f"{self.name}.pid")

    def params(self, **extra):
        raise NotImplementedError

    def pid(self):
        return procfs.read_pidfile(self.pidfile)

    def processes(self):
        """Every live process of the instance: those naming its dir, their trees and groups."""
        leaders = {self.pid()} - {None}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and self.root in " ".join(procfs.cmdline(int(entry))):
                leaders.add(int(entry))
        found = set(leaders)
        for pid in leaders:
            found.update(procfs.children(pid))
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _pgid(int(entry)) in leaders:
                found.add(int(entry))
        found.discard(os.getpid())
        return sorted(p for p in found if procfs.alive(p))

    def kill9(self):
        os.kill(self.pid(), signal.SIGKILL)

    def freeze(self):
        """SIGSTOP every process of the instance (a hung server, workers included)."""
        procfs.signal_pids(self.processes(), signal.SIGSTOP)

    def thaw(self):
        procfs.signal_pids(self.processes(), signal.SIGCONT)


def _pgid(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


class Apache(Instance):
    agent = "apache"

    def __init__(self, root, name="apache", proxy_to=None, listen=None):
        """listen: None, the Listen line in httpd.conf and port passed as a parameter;
        'included' or 'port-only': the port only in the configuration (no parameter),
        in an included file, resp. as a bare port, and a status location of its own."""
        super().__init__(root, name)
        self.listen = listen
        for sub in ("run", "logs", "htdocs", "conf.d"):
            os.makedirs(os.path.join(self.root, sub), mode=0o755)
        write(os.path.join(self.root, "htdocs", "index.html"), "<html>hello</html>\n")
        self.config = os.path.join(self.root, "httpd.conf")
        write(self.config, self.conf(proxy_to))

    def listen_lines(self):
        """The Listen directive and the status location, where this layout puts them."""
        status = "/server-status" if self.listen is None else "/hapack-status"
        if self.listen == "included":
            write(os.path.join(self.root, "conf.d", "ports.conf"),
                  f"# the port\n  Listen 127.0.0.1:{self.port}\n")
            return "IncludeOptional conf.d/*.conf\n", status
        if self.listen == "port-only":
            return f"# all addresses\nListen {self.port}\n", status
        return f"Listen 127.0.0.1:{self.port}\n", status

    def conf(self, proxy_to):
        r = self.root
        modules = ["mpm_event", "authz_core", "authz_host", "status"]
        proxy = ""
        if proxy_to:
            modules += ["proxy", "proxy_http"]
            proxy = f"ProxyPass /app/ {proxy_to}/app/\nProxyPassReverse /app/ {proxy_to}/app/\n"
        loads = "".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so\n" for m in modules)
        listen, status = self.listen_lines()
        return f"""ServerRoot "{r}"
ServerName localhost
{listen}PidFile {self.pidfile}
DefaultRuntimeDir {r}/run
Mutex file:{r}/run default
ErrorLog {r}/logs/error.log
LogLevel warn
{loads}User www-data
Group www-data
StartServers 1
ServerLimit 2
ThreadsPerChild 10
MaxRequestWorkers 20
MinSpareThreads 5
MaxSpareThreads 15
DocumentRoot {r}/htdocs
<Directory />
    AllowOverride None
    Require all granted
</Directory>
ExtendedStatus On
<Location {status}>
    SetHandler server-status
    Require ip 127.0.0.1
</Location>
{proxy}"""

    def params(self, **extra):
        port = {} if self.listen else {"port": self.port}
        return {"config": self.config, **port, "pidfile": self.pidfile, **extra}

    def break_config(self):
        with open(self.config, "a", encoding="utf-8") as handle:
            handle.write("ThisIsNotADirective on\n")


class Nginx(Instance):
    agent = "nginx"

    def __init__(self, root, name="nginx", proxy_to=None, listen=None):
        """listen: as for Apache ('included': the server's listen in an included file)."""
        super().__init__(root, name)
        self.listen = listen
        for sub in ("run", "logs", "tmp", "html"):
            os.makedirs(os.path.join(self.root, sub), mode=0o755)
        write(os.path.join(self.root, "html", "index.html"), "<html>hello</html>\n")
        self.config = os.path.join(self.root, "nginx.conf")
        write(self.config, self.conf(proxy_to))

    def conf(self, proxy_to):
        r = self.root
        temps = "".join(f"    {kind}_temp_path {r}/tmp/{kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        proxy = f"        location /app/ {{ proxy_pass {proxy_to}/app/; }}\n" if proxy_to else ""
        status = "/nginx_status" if self.listen is None else "/hapack_status"
        listen = f"listen 127.0.0.1:{self.port};"
        if self.listen == "included":
            write(os.path.join(r, "listen.conf"),
                  f"# the port\nlisten 127.0.0.1:{self.port} default_server;\n")
            listen = "include listen.conf;"
        elif self.listen == "port-only":
            listen = f"listen {self.port}; # all addresses"
        return f"""# a second nginx instance for hapack's tests
pid {self.pidfile};
error_log {r}/logs/error.log warn;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {r}/logs/access.log;
{temps}    server {{
        {listen}
        root {r}/html;
        location = {status} {{ stub_status; allow 127.0.0.1; deny all; }}
{proxy}    }}
}}
"""

    def params(self, **extra):
        port = {} if self.listen else {"port": self.port}
        return {"config": self.config, **port, **extra}

    def break_config(self):
        with open(self.config, "a", encoding="utf-8") as handle:
            handle.write("this_is_not_a_directive on;\n")


class Tomcat(Instance):
    """A CATALINA_BASE owned by tomcat, with an application 'app' and its health page."""

    agent = "tomcat"

    def __init__(self, root, name="tomcat", port=None, shutdown_port=-1):
        super().__init__(root, name)
        self.port = port or self.port
        self.shutdown_port = shutdown_port  # -1: none (catalina.sh stop cannot work)
        self.base = os.path.join(self.root, "base")
        for sub in ("conf", "logs", "temp", "work", "webapps/app"):
            os.makedirs(os.path.join(self.base, sub), mode=0o755)
        os.makedirs(os.path.join(self.root, "run"), mode=0o755)
        for name_ in ("web.xml", "context.xml", "catalina.properties", "logging.properties",
                      "tomcat-users.xml", "jaspic-providers.xml"):
            shutil.copy(os.path.join(TOMCAT_CONF, name_), os.path.join(self.base, "conf"))
        write(os.path.join(self.base, "conf", "server.xml"), self.server_xml())
        write(os.path.join(self.base, "webapps", "app", "health.jsp"), APP_HEALTH)
        self.app_down = os.path.join(self.base, "webapps", "app", "down")
        subprocess.run(["chown", "-R", "tomcat:tomcat", self.base], check=True)

    def server_xml(self):
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<Server port="{self.shutdown_port}" address="127.0.0.1" shutdown="SHUTDOWN">
  <Listener className="org.apache.catalina.startup.VersionLoggerListener" />
  <Service name="Catalina">
    <Connector address="127.0.0.1" port="{self.port}" protocol="HTTP/1.1"
               connectionTimeout="20000" />
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="true" autoDeploy="false" />
    </Engine>
  </Service>
</Server>
"""

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def params(self, **extra):
        return {"catalina_base": self.base, "port": self.port, "pidfile": self.pidfile,
                "java_home": JAVA_HOME, "java_opts": "-Xms64m -Xmx256m", **extra}

    def break_config(self):
        path = os.path.join(self.base, "conf", "server.xml")
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        write(path, text.replace("</Server>", "<Unclosed>\n</Server>"))


class Agent:
    """Runs one installed agent against instances, as Pacemaker would."""

    def __init__(self, installed, name):
        self.path = installed(name)
        self.name = name

    def env(self, inst, level=None, timeout=None, interval=None, **extra):
        env = {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf",
               "OCF_RESOURCE_INSTANCE": f"t-{inst.name}",
               "HA_RSCTMP": os.path.join(inst.root, "rsctmp")}
        for key, value in inst.params(**extra).items():
            env[f"OCF_RESKEY_{key}"] = str(value)
        if level is not None:
            env["OCF_CHECK_LEVEL"] = str(level)
        if timeout is not None:
            env["OCF_RESKEY_CRM_meta_timeout"] = str(int(timeout * 1000))
        if interval is not None:
            env["OCF_RESKEY_CRM_meta_interval"] = str(int(interval * 1000))
        return env

    def __call__(self, action, inst, level=None, timeout=None, interval=10, **extra):
        """(rc, stderr, seconds) of one action."""
        env = self.env(inst, level=level, timeout=timeout, interval=interval, **extra)
        began = time.monotonic()
        result = subprocess.run([self.path, action], env=env, capture_output=True, text=True,
                                timeout=300)
        return result.returncode, result.stderr, time.monotonic() - began

    def tester_argv(self, inst, **extra):
        argv = ["ocf-tester", "-n", f"ocft-{inst.name}"]
        for key, value in inst.params(**extra).items():
            argv += ["-o", f"{key}={value}"]
        return argv + [self.path]


def reason(stderr):
    """The ocf-exit-reason line of an agent's stderr ('' when none)."""
    lines = [line for line in stderr.splitlines() if line.startswith("ocf-exit-reason:")]
    return lines[-1][len("ocf-exit-reason:"):] if lines else ""


def cleanup(instances):
    """Stop every process of the instances by pid (thaw first), then remove their dirs."""
    for inst in instances:
        pids = inst.processes()
        procfs.signal_pids(pids, signal.SIGCONT)
        procfs.signal_pids(pids, signal.SIGKILL)
        from hapack.timing import Deadline
        procfs.wait_gone(pids, Deadline(10))
    for root in {os.path.dirname(inst.root) for inst in instances}:
        shutil.rmtree(root, ignore_errors=True)


class HttpServerCases:
    """The integration cases apache and nginx share; a test module subclasses this
    with ``kind`` set to the builder (Apache or Nginx)."""

    kind = None

    @pytest.fixture
    def make(self):
        """make(**kw) -> a new instance of this kind; all are stopped and removed after."""
        root = scratch(self.kind.agent)
        made = []

        def build(**kw):
            made.append(self.kind(root, name=f"{self.kind.agent}{len(made)}", **kw))
            return made[-1]

        yield build
        cleanup(made)
        shutil.rmtree(root, ignore_errors=True)

    @pytest.fixture
    def agent(self, installed):
        return Agent(installed, self.kind.agent)

    def test_ocf_tester_passes(self, make, agent):
        need_binary("ocf-tester", self.kind.agent if self.kind.agent == "nginx" else "apache2")
        inst = make()
        result = subprocess.run(agent.tester_argv(inst), capture_output=True, text=True,
                                timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        assert inst.processes() == []

    @pytest.mark.parametrize("listen", ["included", "port-only"])
    def test_ocf_tester_passes_with_the_port_from_the_configuration(self, make, agent, listen):
        """No port parameter: the port (and the status location) come from the
        configuration's first Listen/listen, as the stock agents find them."""
        need_binary("ocf-tester", self.kind.agent if self.kind.agent == "nginx" else "apache2")
        inst = make(listen=listen)
        assert "port" not in inst.params() and inst.port != 80
        result = subprocess.run(agent.tester_argv(inst), capture_output=True, text=True,
                                timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        assert agent("start", inst)[0] == 0
        for level in (0, 10):
            rc, err, _ = agent("monitor", inst, level=level)
            assert rc == 0, (level, err)
        assert agent("stop", inst)[0] == 0 and inst.processes() == []

    def test_start_monitor_levels_stop(self, make, agent):
        inst = make()
        assert agent("monitor", inst, interval=0)[0] == 7  # probe
        assert agent("start", inst)[0] == 0
        for level in (0, 10, 20):
            assert agent("monitor", inst, level=level)[0] == 0
        rc, err, _ = agent("monitor", inst, level=20, test_url=f"http://127.0.0.1:{inst.port}/x")
        assert rc == 1 and "404" in reason(err)
        rc, err, _ = agent("monitor", inst, level=20, test_regex="no such words",
                           test_url=f"http://127.0.0.1:{inst.port}/index.html")
        assert rc == 1 and "does not contain" in reason(err)
        assert agent("start", inst)[0] == 0  # idempotent
        assert agent("stop", inst)[0] == 0
        assert agent("monitor", inst)[0] == 7
        assert agent("stop", inst)[0] == 0
        assert inst.processes() == [] and not os.path.exists(inst.pidfile)

    def test_kill9_reports_not_running_and_recovers(self, make, agent):
        inst = make()
        assert agent("start", inst)[0] == 0
        workers = [p for p in inst.processes() if p != inst.pid()]
        inst.kill9()
        deadline = time.monotonic() + 10
        while agent("monitor", inst)[0] != 7:
            assert time.monotonic() < deadline, "monitor kept reporting running"
        assert agent("stop", inst)[0] == 0  # also ends workers the master left behind
        assert not any(procfs.alive(p) for p in workers)
        assert agent("start", inst)[0] == 0
        assert agent("monitor", inst, level=10)[0] == 0

    def test_broken_config_fails_start_with_a_reason(self, make, agent):
        inst = make()
        inst.break_config()
        rc, err, took = agent("start", inst, timeout=20)
        assert rc == 2, err
        assert "does not pass" in reason(err) and "directive" in reason(err).lower()
        assert took < 15
        assert inst.processes() == [] and not os.path.exists(inst.pidfile)
        rc, err, _ = agent("validate-all", inst)
        assert rc == 2 and "does not pass" in reason(err)

    def test_frozen_server_fails_level_10_within_the_client_timeout(self, make, agent):
        inst = make()
        assert agent("start", inst)[0] == 0
        inst.freeze()
        assert agent("monitor", inst, level=0)[0] == 0  # alive and listening
        rc, err, took = agent("monitor", inst, level=10, client_timeout=1.5)
        assert rc == 1 and "no answer within 1.5s" in reason(err)
        assert took < 10
        rc, _, took = agent("stop", inst, timeout=20)  # stop thaws, then TERM/KILL
        assert rc == 0 and took < 20
        assert inst.processes() == []

    def test_two_instances_side_by_side(self, make, agent):
        one, two = make(), make()
        assert agent("start", one)[0] == 0
        assert agent("start", two)[0] == 0
        assert set(one.processes()).isdisjoint(two.processes())
        assert agent("stop", one)[0] == 0
        assert agent("monitor", one)[0] == 7
        assert agent("monitor", two, level=10)[0] == 0
        assert agent("stop", two)[0] == 0

    def test_port_taken_by_another_program_fails_start(self, make, agent):
        inst = make()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", inst.port))
            squatter.listen()
            rc, err, took = agent("start", inst, timeout=20)
        assert rc == 1 and "in use" in reason(err).lower(), err
        assert took < 15 and inst.processes() == []

    @pytest.mark.parametrize("param,value,code,words", [
        ("binary", "/nonexistent/httpd", 5, "not installed"),
        ("config", "/nonexistent/httpd.conf", 5, "does not exist"),
        ("config", "relative.conf", 6, "not an absolute path"),
        ("status_url", "ftp://x", 6, "not an http"),
        ("client_timeout", "soon", 6, "not a number"),
    ])
    def test_bad_parameters_are_refused(self, make, agent, param, value, code, words):
        inst = make()
        for action in ("validate-all", "start"):
            rc, err, _ = agent(action, inst, **{param: value})
            assert rc == code and words in reason(err), (action, err)
        assert inst.processes() == []
