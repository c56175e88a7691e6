"""The stateful agents' pure parts: command lines, configurations, credentials, data dirs, codes."""

import fcntl
import io
import os
import pwd
import shutil

import pytest
from lxml import etree

from hapack.log import NullLogger
from hapack.ocf import ConfigError, GenericError, NotInstalled, PermError
from hapack.ocf import _activemq_conf as amqconf
from hapack.ocf import _ldapwire as ldap
from hapack.ocf import _datadir, _secret, _service, _slapd_conf, activemq, postgresql, slapd
from hapack.ocf._wire import AuthError
from hapack.ocf.runner import Context
from hapack.params import from_environ, parse
from hapack.probe import ProbeError


def environ(**params):
    env = {"OCF_RESOURCE_INSTANCE": "t1", "OCF_RESKEY_CRM_meta_timeout": "20000"}
    env.update({f"OCF_RESKEY_{k}": str(v) for k, v in params.items()})
    return env


def make_ctx(module, action="start", **params):
    env = environ(**params)
    ctx = Context(module.AGENT, action, env, None, NullLogger())
    ctx.params = parse(module.PARAMS, from_environ(module.PARAMS, env))
    return ctx


def execute(module, action, env=None, **params):
    out, err = io.StringIO(), io.StringIO()
    code = module.AGENT.execute([action], dict(environ(**params), **(env or {})),
                                stdout=out, stderr=err)
    reasons = [line.split(":", 1)[1] for line in err.getvalue().splitlines()
               if line.startswith("ocf-exit-reason:")]
    return code, (reasons or [""])[-1]


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (file ownership)")


# -- credentials files ----------------------------------------------------------------

@pytest.fixture
def secret(tmp_path):
    def make(text, mode=0o600, owner=None, name="cred"):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(mode)
        if owner:
            shutil.chown(path, owner)
        return str(path)
    return make


def test_secret_is_the_first_line_of_a_root_only_file(secret):
    need_root()
    assert _secret.read_secret(secret("pa ss\nignored\n")) == "pa ss"
    assert _secret.read_secret(secret("crlf\r\n")) == "crlf"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_secret_readable_by_others_is_refused(secret, mode):
    need_root()
    with pytest.raises(PermError, match="readable by others"):
        _secret.read_secret(secret("pw", mode))


def test_secret_not_owned_by_root_or_missing_or_empty_or_a_link(secret, tmp_path):
    need_root()
    with pytest.raises(PermError, match="owned by root"):
        _secret.read_secret(secret("pw", owner="nobody", name="theirs"))
    with pytest.raises(NotInstalled):
        _secret.read_secret(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="empty"):
        _secret.read_secret(secret("\nsecond line\n"))
    os.symlink(secret("pw"), tmp_path / "link")
    with pytest.raises(ConfigError, match="not a regular file"):
        _secret.read_secret(str(tmp_path / "link"))


# -- data directories ----------------------------------------------------------------

def test_missing_data_dir_is_refused_and_not_created(tmp_path):
    target = tmp_path / "pgdata"
    with pytest.raises(NotInstalled, match="does not exist.*not creating it"):
        _datadir.require_data_dir(str(target), "root")
    assert not target.exists()


def test_data_dir_on_the_root_file_system_is_refused(tmp_path):
    if os.stat(tmp_path).st_dev != os.stat("/").st_dev:
        pytest.skip("the temporary directory is not on the root file system here")
    with pytest.raises(NotInstalled, match="root file system"):
        _datadir.require_data_dir(str(tmp_path), "root")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotInstalled, match="not a directory"):
        _datadir.require_data_dir(str(tmp_path / "file"), "root")


class FakeStat:
    def __init__(self, uid, gid, mode):
        self.st_uid, self.st_gid, self.st_mode = uid, gid, mode


def test_writability_is_judged_for_the_service_user():
    nobody = pwd.getpwnam("nobody")
    assert _datadir.user_can_write(FakeStat(nobody.pw_uid, 0, 0o40700), "nobody")
    assert not _datadir.user_can_write(FakeStat(nobody.pw_uid, 0, 0o40500), "nobody")
    assert not _datadir.user_can_write(FakeStat(0, 0, 0o40755), "nobody")
    assert _datadir.user_can_write(FakeStat(0, nobody.pw_gid, 0o40770), "nobody")
    assert _datadir.user_can_write(FakeStat(0, 0, 0o40777), "nobody")
    assert _datadir.user_can_write(FakeStat(1234, 1234, 0o40700), "root")


def test_mount_of_finds_the_innermost_mount():
    assert _datadir.mount_of("/proc/self/status")[:2] == ("/proc", "proc")
    assert _datadir.mount_of("/")[0] == "/"


# -- protocol errors become OCF errors -------------------------------------------------

class FakeServer:
    def __init__(self, ctx, running=False, error=None):
        self.ctx, self.running, self.error, self.stopped = ctx, running, error, False

    def pid(self):
        return 42 if self.running else None

    def start(self, launch, checks):
        raise self.error

    def stop(self):
        self.stopped = True


def test_checked_maps_refused_logins_by_action():
    def refused():
        raise AuthError("login refused")

    def down():
        raise ProbeError("no answer")

    start = make_ctx(postgresql, "start", pgdata="/srv/pg")
    monitor = make_ctx(postgresql, "monitor", pgdata="/srv/pg")
    with pytest.raises(_service.Final) as info:
        _service.checked(start, refused)
    assert isinstance(info.value.error, ConfigError)
    with pytest.raises(GenericError, match="login refused"):
        _service.checked(monitor, refused)
    with pytest.raises(GenericError, match="no answer"):
        _service.checked(start, down)


def test_a_final_failure_stops_only_what_this_start_launched():
    ctx = make_ctx(postgresql, "start", pgdata="/srv/pg")
    fresh = FakeServer(ctx, error=_service.Final(ConfigError("bad password")))
    with pytest.raises(ConfigError, match="bad password"):
        _service.start_server(fresh, None, {})
    assert fresh.stopped
    running = FakeServer(ctx, running=True, error=_service.Final(ConfigError("bad password")))
    with pytest.raises(ConfigError):
        _service.start_server(running, None, {})
    assert not running.stopped


def test_service_user_commands_get_the_users_groups_and_a_fresh_environment():
    pg = pwd.getpwnam("nobody")
    assert _service.as_user("nobody", ["/bin/true", "x"]) == [
        "/usr/bin/setpriv", f"--reuid={pg.pw_uid}", f"--regid={pg.pw_gid}", "--init-groups",
        "--reset-env", "--", "/bin/true", "x"]
    with pytest.raises(NotInstalled, match="no-such-user"):
        _service.as_user("no-such-user", ["/bin/true"])


# -- activemq ---------------------------------------------------------------------------

AMQ = dict(data_dir="/srv/ha/amq", run_dir="/run/x", log_dir="/var/log/x", stomp_port=61613)


def test_activemq_generated_files_are_readable_by_the_broker_whatever_the_umask(tmp_path):
    """pacemaker-execd runs agents with umask 0026: the broker (another user) must
    still read the conf directory and the files the agent writes there."""
    ctx = make_ctx(activemq, **dict(AMQ, run_dir=str(tmp_path)))
    old = os.umask(0o077)
    try:
        path = activemq._write_config(ctx)
    finally:
        os.umask(old)
    conf = os.path.dirname(path)
    assert os.stat(conf).st_mode & 0o777 == 0o755
    for name in ("activemq.xml", "log4j.properties"):
        assert os.stat(os.path.join(conf, name)).st_mode & 0o777 == 0o644


def test_activemq_command_line():
    ctx = make_ctx(activemq, **AMQ, java_opts="-Xmx256m -Dfoo='a b'")
    argv = activemq.command(ctx, "/run/x/activemq-t1/conf/activemq.xml")
    assert argv[:3] == ["/usr/bin/java", "-Xmx256m", "-Dfoo=a b"]
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in argv
    assert argv[-8:] == [
        "-Dactivemq.conf=/run/x/activemq-t1/conf", "-Dactivemq.data=/srv/ha/amq",
        "-Djava.io.tmpdir=/run/x/activemq-t1/tmp",
        "-Dlog4j.configuration=file:/run/x/activemq-t1/conf/log4j.properties",
        "-jar", "/usr/share/activemq/bin/activemq.jar", "start",
        "xbean:file:/run/x/activemq-t1/conf/activemq.xml"]
    assert "-Dactivemq.base=/run/x/activemq-t1" in argv  # the instance's marker


def connectors(xml):
    doc = etree.fromstring(xml)
    return doc.xpath("//*[local-name()='transportConnector']/@uri"), doc


def test_generated_config_keeps_the_store_in_data_dir(tmp_path):
    xml = amqconf.generated_config("b1", "/srv/ha/amq", "::1", 0, 61613)
    uris, doc = connectors(xml)
    assert uris == ["stomp://[::1]:61613"]
    assert doc.xpath("//*[local-name()='kahaDB']/@directory") == ["/srv/ha/amq/kahadb"]
    path = tmp_path / "activemq.xml"
    path.write_bytes(amqconf.generated_config("b1", "/srv/ha/amq", "127.0.0.1", 61616, 61613))
    assert connectors(path.read_bytes())[0] == ["tcp://127.0.0.1:61616", "stomp://127.0.0.1:61613"]
    amqconf.check_config(str(path), "/srv/ha/amq", 61613)


@pytest.mark.parametrize("store,connector,error", [
    ("${activemq.base}/data/kahadb", "stomp://0.0.0.0:61613", "outside data_dir"),
    ("/var/lib/activemq/kahadb", "stomp://0.0.0.0:61613", "outside data_dir"),
    ("${activemq.data}/kahadb", "stomp://0.0.0.0:6161", "no stomp:// connector on port 61613"),
    ("${activemq.data}/kahadb", "tcp://0.0.0.0:61613", "no stomp:// connector"),
])
def test_operator_config_is_refused_when_the_store_would_not_fail_over(tmp_path, store,
                                                                       connector, error):
    path = tmp_path / "activemq.xml"
    path.write_text(f'<beans><broker xmlns="http://activemq.apache.org/schema/core">'
                    f'<persistenceAdapter><kahaDB directory="{store}"/></persistenceAdapter>'
                    f'<transportConnectors><transportConnector uri="{connector}"/>'
                    f'</transportConnectors></broker></beans>')
    with pytest.raises(ConfigError, match=error):
        amqconf.check_config(str(path), "/srv/ha/amq", 61613)


def test_broker_log_errors_and_the_lock_wait(tmp_path):
    log = ("2026-01-01 | INFO  | Refreshing | x | main\n"
           "2026-01-01 | ERROR | Failed to load: bad.xml | x | main\n"
           "\tat org.Thing(Thing.java:1)\n")
    assert activemq.first_error(log) == "Failed to load: bad.xml"
    lockfile = tmp_path / "lock"
    lockfile.write_text("")
    with open(lockfile, "r+") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert activemq.lock_holder(str(lockfile)) == os.getpid()
        text = (f"| INFO | Database {lockfile} is locked by another server. This broker is "
                "now in slave mode waiting a lock to be acquired | x | main\n")
        with pytest.raises(_service.Final, match=f"held by another broker \\(pid {os.getpid()}\\)"):
            activemq.lock_wait(text)
    activemq.lock_wait("| INFO | Apache ActiveMQ started | x | main\n")


@pytest.mark.parametrize("params,reason", [
    (dict(bind_address="localhost"), "not an IP address"),
    (dict(openwire_port="61613"), "must differ"),
    (dict(probe_queue="a/b"), "probe_queue"),
    (dict(stomp_port="0"), "stomp_port"),
])
def test_activemq_rejects_bad_parameters(params, reason):
    code, why = execute(activemq, "validate-all", **dict(AMQ, **params))
    assert code == 6 and reason in why


# -- postgresql ---------------------------------------------------------------------------

PG = dict(pgdata="/srv/ha/pg data", run_dir="/run/x", log_dir="/var/log/x", port=5433)


def test_postgresql_server_options_are_quoted_for_pg_ctl():
    ctx = make_ctx(postgresql, **PG, config="/etc/pg/my conf", options="-c work_mem=8MB")
    assert postgresql._server_options(ctx) == (
        "-p 5433 -k /run/x/postgresql-t1 -c listen_addresses=127.0.0.1 "
        "-c 'config_file=/etc/pg/my conf' -c work_mem=8MB")


NASTY = ["-c work_mem=8MB; touch {m}", "$(touch {m})", "`touch {m}`", "-c x='a b' \"c d\"",
         "-c x=1 && touch {m} || touch {m} | touch {m}", "-c x=1\ntouch {m}", "> {m}",
         "-c 'x=$(touch {m})'", "\\; touch {m}", "-c x=1 # touch {m}"]


@pytest.mark.parametrize("options", NASTY)
def test_postgresql_options_reach_pg_ctls_shell_as_words_only(tmp_path, options):
    """pg_ctl pastes -o into 'sh -c': whatever the options hold, the shell sees the
    words of a shell-like split and runs nothing of them."""
    import shlex
    import subprocess
    marker = tmp_path / "injected"
    options = options.format(m=marker)
    ctx = make_ctx(postgresql, **dict(PG, options=options, config="/etc/pg/my $(x) conf"))
    pasted = postgresql._server_options(ctx)
    shown = subprocess.run(["/bin/sh", "-c", f"printf '%s\\n' {pasted}"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert not marker.exists()
    assert shown[:8] == ["-p", "5433", "-k", "/run/x/postgresql-t1", "-c",
                         "listen_addresses=127.0.0.1", "-c", "config_file=/etc/pg/my $(x) conf"]
    assert shown[8:] == shlex.split(options)


def test_pg_ctl_start_keeps_pgdata_and_the_log_out_of_its_shell_command():
    ctx = make_ctx(postgresql, **dict(PG, pgdata="/srv/$(touch x) `y` \"z\"; w"))
    argv = postgresql._pg_ctl_start(ctx, 30)
    tail = argv[argv.index("--") + 1:]
    assert tail[:3] == ["/usr/bin/env", "PGDATA=/srv/$(touch x) `y` \"z\"; w",
                        "/usr/lib/postgresql/15/bin/pg_ctl"]
    assert "-D" not in tail and tail[tail.index("-l") + 1] == "postgresql.log"


@pytest.mark.parametrize("param", ["pgdata", "config", "run_dir", "log_dir", "credentials_file",
                                   "bindir"])
@pytest.mark.parametrize("bad", ["\n", "\r", "\0", "\x1b"])
def test_postgresql_paths_with_a_newline_or_nul_are_refused(param, bad):
    got, why = execute(postgresql, "start", **dict(PG, **{param: f"/srv/a{bad}b"}))
    assert got == 6 and "control character" in why and param in why


@pytest.mark.parametrize("bindir", ['/opt/pg "15"/bin', "/opt/$(id)/bin", "/opt/`id`/bin",
                                    "/opt/pg\\15/bin"])
def test_postgresql_bindir_pg_ctl_would_expand_is_refused(bindir):
    got, why = execute(postgresql, "start", **dict(PG, bindir=bindir))
    assert got == 6 and "pg_ctl runs the server through a shell" in why


def test_postgresql_options_that_cannot_be_split_are_refused():
    got, why = execute(postgresql, "validate-all", **dict(PG, options="-c x='unbalanced"))
    assert got == 6 and "cannot be split into arguments" in why


def test_pg_ctl_runs_as_the_service_user():
    ctx = make_ctx(postgresql, **PG)
    entry = pwd.getpwnam("postgres")
    assert postgresql._pg_ctl(ctx, "stop", "-m", "fast") == [
        "/usr/bin/setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
        "--init-groups", "--reset-env", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "stop",
        "-m", "fast", "-D", "/srv/ha/pg data"]


def test_graceful_stop_is_fast_then_immediate(fp):
    ctx = make_ctx(postgresql, "stop", **PG)
    head = postgresql._pg_ctl(ctx, "stop")[:-2]
    fast = head[:-1] + ["stop", "-m", "fast", "-w", "-t", fp.any(min=1, max=1), "-D", PG["pgdata"]]
    immediate = head[:-1] + ["stop", "-m", "immediate", "-w", "-t", fp.any(min=1, max=1),
                             "-D", PG["pgdata"]]
    fp.register(fast, returncode=1, stderr="pg_ctl: server does not shut down\n")
    fp.register(immediate, returncode=0)
    postgresql._pg_ctl_stop(ctx, 1234)
    assert fp.call_count(fast) == 1 and fp.call_count(immediate) == 1


def test_graceful_stop_ends_after_a_fast_stop(fp):
    ctx = make_ctx(postgresql, "stop", **PG)
    head = postgresql._pg_ctl(ctx, "stop")[:-2]
    fast = head[:-1] + ["stop", "-m", "fast", "-w", "-t", fp.any(min=1, max=1), "-D", PG["pgdata"]]
    fp.register(fast, returncode=0)
    postgresql._pg_ctl_stop(ctx, 1234)  # an unregistered -m immediate would raise


@pytest.mark.parametrize("params,code,reason", [
    (dict(probe_table="x; DROP TABLE y"), 6, "probe_table"),
    (dict(port="70000"), 6, "port"),
    (dict(bindir="/nonexistent/bin"), 5, "pg_ctl /nonexistent/bin/pg_ctl is not installed"),
    (dict(run_dir="relative"), 6, "not an absolute path"),
])
def test_postgresql_rejects_bad_parameters(params, code, reason):
    got, why = execute(postgresql, "validate-all", **dict(PG, **params))
    assert got == code and reason in why


def test_probe_without_pgdata_reports_not_running():
    code, _ = execute(postgresql, "monitor", env={"OCF_RESKEY_CRM_meta_interval": "0"})
    assert code == 7
    assert execute(postgresql, "stop")[0] == 0
    assert execute(postgresql, "start")[0] == 6


# -- slapd -----------------------------------------------------------------------------------

SLAPD_CONF = """# comment
include /etc/ldap/schema/core.schema
database config
rootdn cn=config
database mdb
suffix "dc=example,dc=com"
directory "/srv/ha/ldap/example"
database mdb
suffix "o=Two
 Words"
directory /srv/ha/ldap/two
"""


def test_databases_of_a_slapd_conf(tmp_path):
    conf = tmp_path / "slapd.conf"
    conf.write_text(SLAPD_CONF)
    assert _slapd_conf.databases(str(conf)) == [("dc=example,dc=com", "/srv/ha/ldap/example"),
                                          ("o=Two Words", "/srv/ha/ldap/two")]


@pytest.mark.parametrize("line,expected", [
    ('suffix "dc=example, dc=com"', ["suffix", "dc=example, dc=com"]),
    ("rootpw   {SSHA}abc==  ", ["rootpw", "{SSHA}abc=="]),
    ('directory ""', ["directory", ""]),
])
def test_slapd_conf_words(line, expected):
    assert _slapd_conf.words(line) == expected


def test_slapd_conf_unbalanced_quotes_are_an_error(tmp_path):
    conf = tmp_path / "slapd.conf"
    conf.write_text('database mdb\nsuffix "dc=x\n')
    with pytest.raises(ValueError, match="unbalanced quotes"):
        _slapd_conf.databases(str(conf))


def test_databases_of_a_cn_config_tree(tmp_path):
    folder = tmp_path / "slapd.d" / "cn=config"
    folder.mkdir(parents=True)
    (folder / "olcDatabase={0}config.ldif").write_text("dn: olcDatabase={0}config\n")
    (folder / "olcDatabase={2}mdb.ldif").write_text("dn: olcDatabase={2}mdb\n"
                                                     "olcSuffix: o=two\nolcDbDirectory: /t\n")
    (folder / "olcDatabase={1}mdb.ldif").write_text(
        "dn: olcDatabase={1}mdb\nolcSuffix:: ZGM9ZXhhbXBsZSxkYz1jb20=\n"
        "olcDbDirectory: /srv/ha/ldap/exa\n mple\n")
    assert _slapd_conf.databases(str(tmp_path / "slapd.d")) == \
        [("dc=example,dc=com", "/srv/ha/ldap/example"), ("o=two", "/t")]


def test_slapd_own_pid_and_args_files(tmp_path):
    conf = tmp_path / "slapd.conf"
    conf.write_text("pidfile /run/x/slapd.pid\nargsfile /run/x/slapd.args\n" + SLAPD_CONF)
    assert _slapd_conf.run_files(str(conf)) == ["/run/x/slapd.pid", "/run/x/slapd.args"]
    tree = tmp_path / "slapd.d"
    tree.mkdir()
    (tree / "cn=config.ldif").write_text("dn: cn=config\nolcArgsFile: /a\nolcPidFile: /p\n")
    assert _slapd_conf.run_files(str(tree)) == ["/p", "/a"]


SLAPD = dict(data_dir="/srv/ha/ldap", run_dir="/run/x", log_dir="/var/log/x")


def test_slapd_command_line(tmp_path):
    conf = tmp_path / "slapd.conf"
    conf.write_text(SLAPD_CONF)
    ctx = make_ctx(slapd, config=str(conf), services="ldap://127.0.0.1:3389/ ldapi://%2Fs/",
                   **SLAPD)
    assert slapd.command(ctx) == ["/usr/sbin/slapd", "-d", "stats", "-u", "openldap", "-g",
                                  "openldap", "-f", str(conf), "-h",
                                  "ldap://127.0.0.1:3389/ ldapi://%2Fs/"]
    ctx = make_ctx(slapd, config=str(tmp_path), **SLAPD)
    assert slapd.command(ctx)[7:9] == ["-F", str(tmp_path)]


@pytest.mark.parametrize("url,port", [
    ("ldap://127.0.0.1:3890/", 3890), ("ldap://[::1]/", 389), ("ldap://[::1]:3891/", 3891),
    ("ldaps://h/", 636), ("ldap:///", 389)])
def test_slapd_listener_ports(url, port):
    assert ldap.tcp_port(url) == port


def test_slapd_ldapi_paths_are_percent_decoded():
    assert ldap.ldapi_path("ldapi://%2Frun%2Fx%C3%A9%2Fldapi/") == "/run/x\u00e9/ldapi"


@pytest.mark.parametrize("services,reason", [
    ("http://x/", "not an ldap://"),
    ("ldaps://127.0.0.1/", "needs an ldap:// or ldapi:// URL"),
])
def test_slapd_services_must_let_the_monitor_in(services, reason):
    code, why = execute(slapd, "validate-all", config="/etc/x.conf", services=services, **SLAPD)
    assert code == 6 and reason in why


def test_slapd_bind_dn_needs_a_credentials_file():
    code, why = execute(slapd, "validate-all", config="/etc/x.conf", bind_dn="cn=a", **SLAPD)
    assert code == 6 and "credentials_file" in why


def test_slapd_refuses_a_database_outside_data_dir(tmp_path):
    if not os.path.exists("/usr/sbin/slapd"):
        pytest.skip("slapd is not installed")
    conf = tmp_path / "slapd.conf"
    conf.write_text(SLAPD_CONF.replace("/srv/ha/ldap/two", "/var/lib/ldap"))
    code, why = execute(slapd, "validate-all", config=str(conf), **SLAPD)
    assert code == 6 and "o=Two Words is in /var/lib/ldap, outside data_dir" in why
