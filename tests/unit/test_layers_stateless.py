"""Stateless layers without the servers: status parsing, nginx's main-level
directives, exact command lines (pytest-subprocess), the HTTP client, and the
pid/zombie/leftover logic of ocf/_daemon on real short-lived processes."""

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from hapack import procfs
from hapack.log import NullLogger
from hapack.ocf import GenericError
from hapack.ocf import _daemon as d
from hapack.ocf import _http as h
from hapack.ocf import apache, nginx, tomcat
from hapack.ocf.runner import Context
from hapack.params import ParamError, from_environ, parse


def make_ctx(module, action="monitor", timeout_ms=5000, level=None, environ=(), **params):
    env = {"OCF_RESOURCE_INSTANCE": "web", "OCF_RESKEY_CRM_meta_timeout": str(timeout_ms),
           "OCF_RESKEY_CRM_meta_interval": "10000", **dict(environ),
           **{f"OCF_RESKEY_{key}": str(value) for key, value in params.items()}}
    if level is not None:
        env["OCF_CHECK_LEVEL"] = str(level)
    ctx = Context(module.AGENT, action, env, None, NullLogger())
    ctx.params = parse(module.AGENT.params, from_environ(module.AGENT.params, env))
    return ctx


def run_agent(module, action, **params):
    """(rc, stderr) of one action run in-process."""
    import io
    env = {"OCF_RESOURCE_INSTANCE": "web",
           **{f"OCF_RESKEY_{key}": str(value) for key, value in params.items()}}
    err = io.StringIO()
    rc = module.AGENT.execute([action], env, stdout=io.StringIO(), stderr=err)
    return rc, err.getvalue()


# -- status pages -------------------------------------------------------------

MOD_STATUS = """127.0.0.1
ServerVersion: Apache/2.4.71 (Debian)
ServerMPM: event
ServerUptimeSeconds: 2
Load1: 0.56
BusyWorkers: 1
GracefulWorkers: 0
IdleWorkers: 9
Scoreboard: ______W___..........
"""

STUB_STATUS = """Active connections: 3 
server accepts handled requests
 17 15 40 
Reading: 0 Writing: 1 Waiting: 2 
"""


def test_mod_status_auto_output_parses():
    status = apache.parse_status(MOD_STATUS)
    assert status["BusyWorkers"] == "1" and status["IdleWorkers"] == "9"
    assert status["Scoreboard"].startswith("______W")


@pytest.mark.parametrize("text,words", [
    ("<html><head><title>Apache Status</title></head><body>Server uptime</body></html>",
     "not mod_status ?auto output"),
    ("BusyWorkers: 1\nScoreboard: _W\n", "no IdleWorkers"),
    ("BusyWorkers: many\nIdleWorkers: 2\nScoreboard: _\n", "not a number"),
])
def test_other_pages_are_not_mod_status(text, words):
    with pytest.raises(ValueError, match=words.replace("?", r"\?")):
        apache.parse_status(text)


def test_stub_status_parses():
    assert nginx.parse_stub_status(STUB_STATUS) == {
        "active": 3, "accepts": 17, "handled": 15, "requests": 40,
        "reading": 0, "writing": 1, "waiting": 2}


@pytest.mark.parametrize("text", ["<html>Welcome to nginx!</html>",
                                  "Active connections: 1\nReading: 0 Writing: 1 Waiting: 0\n"])
def test_other_pages_are_not_stub_status(text):
    with pytest.raises(ValueError, match="not stub_status output"):
        nginx.parse_stub_status(text)


# -- nginx configuration -------------------------------------------------------

NGINX_CONF = """# pid /commented/out.pid;
user  www-data;
pid "run/my nginx.pid";   # relative to the prefix
events { worker_connections 64; }
http {
    error_log /inner/error.log;
    server { listen 80; location / { return 200 'pid x;'; } }
}
error_log logs/error.log warn;
"""


def test_main_directives_ignore_blocks_comments_and_quotes():
    found = nginx.main_directives(NGINX_CONF)
    assert found["pid"] == [["run/my nginx.pid"]]
    assert found["user"] == [["www-data"]]
    assert found["error_log"] == [["logs/error.log", "warn"]]
    assert "listen" not in found and "worker_connections" not in found


def test_nginx_layout_follows_the_configuration(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF)
    layout = nginx.Layout(make_ctx(nginx, config=conf, prefix="/srv/ngx"))
    assert layout.pidfile == "/srv/ngx/run/my nginx.pid"
    assert layout.error_log == "/srv/ngx/logs/error.log"
    assert layout.globals == "" and layout.problems == []
    clash = nginx.Layout(make_ctx(nginx, config=conf, prefix="/srv/ngx", pidfile="/run/x.pid",
                                  user="nobody"))
    assert len(clash.problems) == 2 and "differs from the pid directive" in clash.problems[0]


def test_nginx_layout_without_pid_and_user_adds_them_with_g(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\n")
    ctx = make_ctx(nginx, config=conf, user="nobody")
    layout = nginx.Layout(ctx)
    assert layout.pidfile == "/run/resource-agents/hapack-nginx-web.pid"
    assert layout.error_log == "/run/resource-agents/hapack-nginx-web.log"
    assert nginx.argv(ctx, layout, "-t") == [
        "/usr/sbin/nginx", "-e", "/run/resource-agents/hapack-nginx-web.log", "-c", str(conf),
        "-g", "pid /run/resource-agents/hapack-nginx-web.pid;user nobody;", "-t"]


# -- command lines ------------------------------------------------------------

def test_apache_command_line_names_config_pidfile_user_and_options():
    ctx = make_ctx(apache, config="/srv/web/httpd.conf", user="www-data",
                   options="-D SSL -D 'NAME WITH SPACE'")
    assert apache.argv(ctx, "-k", "start") == [
        "/usr/sbin/apache2", "-f", "/srv/web/httpd.conf",
        "-c", "PidFile /run/resource-agents/hapack-apache-web.pid", "-c", "User www-data",
        "-D", "SSL", "-D", "NAME WITH SPACE", "-k", "start"]


@pytest.fixture
def fake_binary(tmp_path):
    path = tmp_path / "server"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    conf = tmp_path / "server.conf"
    conf.write_text("events {}\n")
    return str(path), str(conf)


def test_apache_validate_all_runs_the_syntax_test(fp, fake_binary):
    binary, conf = fake_binary
    fp.register([binary, "-f", conf, "-c", "PidFile /run/resource-agents/hapack-apache-web.pid",
                 "-t", "-D", "DUMP_RUN_CFG"], returncode=1,
                stderr="AH00526: Syntax error on line 3 of /x: Invalid command 'Lissen'\n")
    rc, err = run_agent(apache, "validate-all", binary=binary, config=conf)
    assert rc == 2
    assert "ocf-exit-reason:" in err and "Invalid command 'Lissen'" in err


def test_apache_validate_all_warns_about_the_distributions_run_dir(fp, fake_binary):
    binary, conf = fake_binary
    fp.register([binary, fp.any()], stdout='Mutex default: dir="/var/run/apache2/" '
                'mechanism=default\nPidFile: "/x.pid"\n')
    rc, err = run_agent(apache, "validate-all", binary=binary, config=conf)
    assert rc == 0 and "set DefaultRuntimeDir and Mutex" in err


def test_nginx_validate_all_runs_the_syntax_test(fp, fake_binary):
    binary, conf = fake_binary
    fp.register([binary, "-e", "/run/resource-agents/hapack-nginx-web.log", "-c", conf,
                 "-g", "pid /run/resource-agents/hapack-nginx-web.pid;", "-t", "-q"],
                returncode=1, stderr="nginx: [emerg] unknown directive \"lissen\"\n")
    rc, err = run_agent(nginx, "validate-all", binary=binary, config=conf)
    assert rc == 2 and 'unknown directive "lissen"' in err


def test_spawn_detaches_with_start_stop_daemon(fp, tmp_path):
    ctx = make_ctx(tomcat, action="start", catalina_base="/srv/tc")
    pidfile = str(tmp_path / "run" / "x.pid")
    fp.register(["start-stop-daemon", "--start", "--background", "--make-pidfile",
                 "--pidfile", pidfile, "--output", "/srv/tc/logs/catalina.out",
                 "--chdir", "/srv/tc", "--chuid", "tomcat",
                 "--startas", "/usr/share/tomcat10/bin/catalina.sh", "--", "run"])
    d.spawn(ctx, tomcat.command(ctx), pidfile, tomcat.output_log(ctx), user="tomcat", env={},
            cwd="/srv/tc")
    assert fp.call_count(["start-stop-daemon", fp.any()]) == 1
    assert os.path.isdir(tmp_path / "run")  # the pid file's directory is made


def test_tomcat_environment_and_command_flavor():
    ctx = make_ctx(tomcat, catalina_base="/srv/tc", java_home="/opt/jdk",
                   java_opts="-Xmx1g", catalina_opts="-Dx=1", flavor="command",
                   start_command="/opt/jetty/bin/jetty.sh run --port 9", status_url="http://h:9/")
    env = tomcat.environment(ctx, tomcat.EXIT_ON_INIT_FAILURE)
    assert env["JAVA_HOME"] == "/opt/jdk" and env["JAVA_OPTS"] == "-Xmx1g"
    assert env["CATALINA_OPTS"] == f"{tomcat.EXIT_ON_INIT_FAILURE} -Dx=1"
    assert env["CATALINA_BASE"] == "/srv/tc" and env["CATALINA_TMPDIR"] == "/srv/tc/temp"
    assert not any(key.startswith("OCF_") for key in env)  # nothing of Pacemaker's leaks
    assert tomcat.command(ctx) == ["/opt/jetty/bin/jetty.sh", "run", "--port", "9"]
    assert tomcat.server(ctx).exe is None and tomcat.server(ctx).marker is None


def test_tomcat_health_page_is_the_default_level_10():
    ctx = make_ctx(tomcat, catalina_base="/srv/tc", address="::1", port=8443)
    assert tomcat.status_url(ctx) == "http://[::1]:8443/hapack-health/ping.jsp"


# -- parameter checks ------------------------------------------------------------

@pytest.mark.parametrize("module,params,words", [
    (apache, {"config": "httpd.conf"}, "not an absolute path"),
    (apache, {"config": "/x", "options": "-D 'unclosed"}, "cannot be split"),
    (nginx, {"config": "/x", "status_regex": "(unclosed"}, "not a valid regular expression"),
    (nginx, {"config": "/x", "test_url": "localhost/health"}, "not an http"),
    (tomcat, {"catalina_base": "/x", "port": "0"}, "below the minimum"),
    (tomcat, {"catalina_base": "/x", "client_timeout": "0"}, "below the minimum"),
])
def test_bad_values_are_refused(module, params, words):
    with pytest.raises(ParamError, match=words):
        make_ctx(module, **params)


def test_rsc_path_is_per_agent_and_instance():
    ctx = make_ctx(apache, config="/x", environ={"HA_RSCTMP": "/run/node-a",
                                                 "OCF_RESOURCE_INSTANCE": "web:1/x"})
    assert d.rsc_path(ctx, "pid") == "/run/node-a/hapack-apache-web:1_x.pid"


# -- the HTTP client ---------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 503 if self.path == "/down" else 200
        body = f"PONG {self.path}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_expect_status_and_body(web):
    ctx = make_ctx(apache, config="/x")
    assert d.http_expect(ctx, f"{web}/ok?auto", 2, regex="^PONG /ok\\?auto") == "PONG /ok?auto\n"
    with pytest.raises(GenericError, match="answered HTTP 503, expected 200"):
        d.http_expect(ctx, f"{web}/down", 2)
    with pytest.raises(GenericError, match="does not contain /PANG/"):
        d.http_expect(ctx, f"{web}/", 2, regex="PANG")
    with pytest.raises(GenericError, match="not stub_status"):
        d.http_expect(ctx, f"{web}/", 2, parse=nginx.parse_stub_status)


def test_a_server_that_never_answers_fails_within_the_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # the kernel accepts; nobody ever answers
        began = time.monotonic()
        with pytest.raises(GenericError, match="no answer within 0.3s"):
            d.http_get(f"http://127.0.0.1:{listener.getsockname()[1]}/", 0.3)
        assert time.monotonic() - began < 3


def test_a_refused_connection_names_the_address():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(GenericError, match=f"cannot connect to 127.0.0.1:{port}"):
        d.http_get(f"http://127.0.0.1:{port}/", 1)


@pytest.mark.parametrize("url,parts", [
    ("http://127.0.0.1:8080/server-status?auto",
     ("http", "127.0.0.1", 8080, "/server-status?auto", "127.0.0.1:8080")),
    ("http://[::1]/x#frag", ("http", "::1", 80, "/x", "[::1]")),
    ("https://web.example", ("https", "web.example", 443, "/", "web.example")),
    ("http://h:81?q=1", ("http", "h", 81, "/?q=1", "h:81")),
])
def test_split_url(url, parts):
    assert h.split_url(url) == parts


@pytest.mark.parametrize("url", ["ftp://h/", "127.0.0.1:80/x", "http://:80/", "http://h:port/",
                                 "http://h:70000/"])
def test_split_url_refuses(url):
    with pytest.raises(ValueError):
        h.split_url(url)


@pytest.mark.parametrize("raw,expected", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nPONG", (200, "PONG")),
    (b"HTTP/1.0 404 Not Found\r\n\r\n", (404, "")),
])
def test_parse_response(raw, expected):
    assert h.parse_response(raw) == expected


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 OK\r\n\r\n"])
def test_parse_response_refuses_what_is_not_http(raw):
    with pytest.raises(ValueError, match="not an HTTP answer"):
        h.parse_response(raw)


# -- pids, zombies and leftovers (real processes) ------------------------------------

@pytest.fixture
def spawned():
    """spawn(argv, **popen) -> Popen; every one is killed and reaped afterwards."""
    procs = []

    def spawn(argv, **kw):
        procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw))
        return procs[-1]

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def started_group(spawn, script, workers):
    """A session leader (sh) running ``script``, once its ``workers`` children run."""
    leader = spawn(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(procfs.children(leader.pid)) < workers:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.01)
    return leader


def write_pid(path, pid, age=0.0):
    path.write_text(f"{pid}\n")
    if age:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    return str(path)


def server(tmp_path, pidfile=None, timeout_ms=5000, **kw):
    ctx = make_ctx(apache, config="/x", timeout_ms=timeout_ms)
    return d.Server(ctx, pidfile or str(tmp_path / "x.pid"), **kw)


def test_a_zombie_is_not_running(tmp_path, spawned):
    child = spawned(["true"])
    pidfile = write_pid(tmp_path / "x.pid", child.pid)
    deadline = time.monotonic() + 5
    while procfs.stat(child.pid)[0] != "Z":  # exited, not reaped yet
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert server(tmp_path, pidfile).pid() is None
    child.wait()
    assert server(tmp_path, pidfile).pid() is None  # now gone altogether


def test_a_reused_pid_is_not_ours(tmp_path, spawned):
    sleeper = spawned(["sleep", "30"])
    pidfile = write_pid(tmp_path / "x.pid", sleeper.pid)
    assert server(tmp_path, pidfile, exe="/usr/bin/sleep").pid() == sleeper.pid
    assert server(tmp_path, pidfile, exe="/usr/sbin/apache2").pid() is None  # another program
    old = write_pid(tmp_path / "old.pid", sleeper.pid, age=3600)
    assert server(tmp_path, old).pid() is None  # started long after the pid file was written


def test_level_0_needs_the_port(tmp_path, spawned):
    code = ("import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(30)")
    child = spawned([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    port = int(child.stdout.readline())
    pidfile = write_pid(tmp_path / "x.pid", child.pid)
    assert server(tmp_path, pidfile, port=port).check_process() == child.pid
    with pytest.raises(GenericError, match=f"not listening on port {port + 1}"):
        server(tmp_path, pidfile, port=port + 1).check_process()


def test_sock_diag_and_proc_net_agree_on_listeners():
    with socket.socket(socket.AF_INET6) as six, socket.socket() as four:
        six.bind(("::1", 0))
        six.listen()
        port = six.getsockname()[1]
        four.bind(("127.0.0.1", port))
        four.listen()
        inodes = {os.fstat(six.fileno()).st_ino, os.fstat(four.fileno()).st_ino}
        assert d._listening_inodes(port) == inodes == procfs.listening_inodes(port)
    assert d._listening_inodes(port) == set()


def test_stop_ends_workers_left_behind_by_a_killed_leader(tmp_path, spawned):
    leader = started_group(spawned, "sleep 31 & sleep 32 & wait", 2)
    # written long before the workers started, as for workers a master respawned later
    pidfile = write_pid(tmp_path / "x.pid", leader.pid, age=3600)
    workers = procfs.children(leader.pid)
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()
    srv = server(tmp_path, pidfile)
    assert srv.pid() is None and sorted(srv.leftovers()) == sorted(workers)
    srv.stop()
    assert not any(procfs.alive(pid) for pid in workers)
    assert not os.path.exists(pidfile)


def test_a_reused_leader_pid_does_not_claim_its_group(tmp_path, spawned):
    leader = started_group(spawned, "sleep 33 & wait", 1)
    # the pid file is older than this living leader: its pid was "reused"
    pidfile = write_pid(tmp_path / "x.pid", leader.pid, age=3600)
    assert server(tmp_path, pidfile).leftovers() == []


def test_leftovers_by_marker_need_the_executable_and_the_word(tmp_path, spawned):
    mine = spawned(["sleep", "31.4159"])
    other = spawned(["sleep", "31.41592"])
    srv = server(tmp_path, exe="/usr/bin/sleep", marker="31.4159")
    assert srv.leftovers() == [mine.pid] and other.pid not in srv.leftovers()
    assert server(tmp_path, marker="31.4159").leftovers() == []  # no exe: no guessing


def test_stop_escalates_to_kill_within_the_deadline(tmp_path, spawned):
    code = ("import signal, time; [signal.signal(s, signal.SIG_IGN) for s in "
            "(signal.SIGTERM, signal.SIGQUIT)]; print('ready', flush=True); time.sleep(60)")
    child = spawned([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    os.kill(child.pid, signal.SIGSTOP)  # frozen, too
    pidfile = write_pid(tmp_path / "x.pid", child.pid)
    began = time.monotonic()
    server(tmp_path, pidfile, timeout_ms=4000).stop(graceful=signal.SIGQUIT, graceful_timeout=0.5)
    assert time.monotonic() - began < 4
    assert not procfs.alive(child.pid) and not os.path.exists(pidfile)


def test_stop_touches_nothing_that_is_not_ours(tmp_path, spawned):
    bystander = spawned(["sleep", "30"])
    pidfile = write_pid(tmp_path / "x.pid", bystander.pid)
    server(tmp_path, pidfile, exe="/usr/sbin/apache2").stop()
    assert procfs.alive(bystander.pid) and not os.path.exists(pidfile)


def test_start_reports_a_server_that_dies_with_its_log(tmp_path):
    log = tmp_path / "out.log"
    srv = server(tmp_path, log=str(log), timeout_ms=20000)
    pidfile = srv.pidfile

    def launch():
        d.spawn(srv.ctx, ["/bin/sh", "-c", "echo 'SEVERE: port in use'; exit 3"], pidfile,
                str(log))

    def not_yet(ctx):
        raise GenericError("not answering yet")

    began = time.monotonic()
    with pytest.raises(GenericError, match="exited during start; log: SEVERE: port in use"):
        srv.start(launch, {10: not_yet})
    assert time.monotonic() - began < 3  # seen dead at once, not at the deadline
    assert not os.path.exists(pidfile)


def test_start_gives_up_within_the_deadline_and_cleans_up(tmp_path):
    srv = server(tmp_path, timeout_ms=3000)
    started = []

    def launch():
        d.spawn(srv.ctx, ["/bin/sleep", "60"], srv.pidfile, str(tmp_path / "out.log"))
        started.append(procfs.read_pidfile(srv.pidfile))

    def never(ctx):
        raise GenericError("health page says no")

    began = time.monotonic()
    with pytest.raises(GenericError, match="did not become healthy: health page says no"):
        srv.start(launch, {10: never})
    assert time.monotonic() - began < 3
    assert not procfs.alive(started[0]) and not os.path.exists(srv.pidfile)


def test_start_clears_a_stale_pid_file_and_the_orphans_behind_it(tmp_path, spawned):
    leader = started_group(spawned, "sleep 34 & wait", 1)
    orphan = procfs.children(leader.pid)[0]
    srv = server(tmp_path, timeout_ms=10000)
    write_pid(tmp_path / "x.pid", leader.pid)
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()  # the pid file is stale, its group's worker still runs

    def launch():
        assert not os.path.exists(srv.pidfile)  # removed before the launch
        d.spawn(srv.ctx, ["/bin/sleep", "60"], srv.pidfile, str(tmp_path / "out.log"))

    srv.start(launch, {})
    new = srv.pid()
    try:
        assert new not in (None, leader.pid) and not procfs.alive(orphan)
    finally:
        srv.stop()
    assert not procfs.alive(new)
