"""ocf:hapack:slapd against Debian's slapd 2.5, the mdb database on an ext4 loop mount."""

import os
from urllib.parse import quote

import pytest

from requires import need_binary, need_root
from hapack.ocf._ldapwire import Ldap
from hapack.procfs import read_pidfile
from hapack.probe import ProbeError
from stateful_fixtures import (AgentCall, free_port, kill_9, loop_partition, owned_dir,
                               reason, secret_file, sh, workspace)

SUFFIX = "dc=example,dc=com"
ADMIN = f"cn=admin,{SUFFIX}"
PASSWORD = f"ldap pass {os.getpid()}"
SEED = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people
"""


def slapd_conf(path, directory, rootpw, pidfile="/dev/null/none"):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"""pidfile {pidfile}
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ADMIN}"
rootpw {rootpw}
directory {directory}
access to * by * read
""")
    return path


class Directory:
    def __init__(self, call, work, port):
        self.call, self.work, self.port = call, work, port

    @property
    def pidfile(self):
        return f"{self.work}/run/slapd-{self.call.instance}.pid"

    def client(self):
        client = Ldap(f"ldap://127.0.0.1:{self.port}/", 5)
        client.bind(ADMIN, PASSWORD)
        return client


@pytest.fixture(scope="module")
def directory(installed):
    need_root()
    need_binary("slapd", "slapadd", "slappasswd", "slaptest", "start-stop-daemon")
    with workspace("ldap") as work, loop_partition(work) as mnt:
        data = owned_dir(f"{mnt}/ldap", "openldap", 0o750)
        os.makedirs(f"{data}/example")
        cred = secret_file(f"{work}/cred", PASSWORD)
        with open(f"{work}/bare", "w", encoding="utf-8") as handle:
            handle.write(PASSWORD)  # slappasswd -T hashes the whole file, newline and all
        rootpw = sh("slappasswd", "-T", f"{work}/bare").stdout.strip()  # no clear text around
        os.unlink(f"{work}/bare")
        port, instance = free_port(), f"ldap{os.getpid()}"
        run = f"{work}/run/slapd-{instance}"
        conf = slapd_conf(f"{work}/slapd.conf", f"{data}/example", rootpw, f"{run}/slapd.pid")
        seed = f"{work}/seed.ldif"
        with open(seed, "w", encoding="utf-8") as handle:
            handle.write(SEED)
        sh("slapadd", "-f", conf, "-l", seed)
        sh("chown", "-R", "openldap:openldap", data)
        sock = quote(f"{run}/ldapi", safe="")
        call = AgentCall(installed("slapd"), instance, dict(
            config=conf, data_dir=data, services=f"ldap://127.0.0.1:{port}/ ldapi://{sock}/",
            bind_dn=ADMIN, credentials_file=cred, run_dir=f"{work}/run", log_dir=f"{work}/log"))
        try:
            yield Directory(call, work, port)
        finally:
            call("stop")


@pytest.fixture
def running(directory):
    directory.call.start_ok()
    return directory


def test_ocf_tester_passes(directory):
    directory.call.assert_ocf_tester_passes()


def test_level_20_survives_a_stop_start_cycle_and_leaves_no_probe_entry(running):
    running.call.assert_level_20_across_a_restart()
    client = running.client()
    try:
        assert client.read(SUFFIX, ("o",)) == {"o": ["Example"]}
        with pytest.raises(ProbeError, match="no such object"):
            client.read(f"cn=hapack-probe-{running.call.instance},{SUFFIX}")
    finally:
        client.close()


def test_kill_9_gives_not_running_and_a_restart_serves_the_data(running):
    kill_9(read_pidfile(running.pidfile))
    running.call.expect(("monitor", 0, 7), ("monitor", 10, 7))
    run = running.pidfile.removesuffix(".pid")  # the instance's directory, slapd's own
    assert {"ldapi", "slapd.pid"} <= set(os.listdir(run))  # left by the killed slapd
    assert running.call("stop").returncode == 0
    assert not {"ldapi", "slapd.pid"} & set(os.listdir(run))
    assert not os.path.exists(running.pidfile)
    result = running.call("start")
    assert result.returncode == 0, result.stderr
    assert running.call("monitor", level=10).returncode == 0


def test_a_data_dir_that_is_not_mounted_is_refused(directory):
    with workspace("ldap-unmounted") as work:
        data = owned_dir(f"{work}/ldap", "openldap")  # on the root file system
        conf = slapd_conf(f"{work}/slapd.conf", f"{data}/example", "x")
        result = directory.call("start", config=conf, data_dir=data)
        assert result.returncode == 5
        assert "is on the root file system, not on a mounted partition" in reason(result)
        assert os.listdir(data) == []


def test_a_read_only_data_dir_is_refused(directory):
    assert directory.call("stop").returncode == 0
    mnt = os.path.dirname(directory.call.params["data_dir"])
    sh("mount", "-o", "remount,ro", mnt)
    try:
        result = directory.call("start")
        assert result.returncode == 4 and "read-only file system" in reason(result)
        assert directory.call("monitor").returncode == 7
    finally:
        sh("mount", "-o", "remount,rw", mnt)


def test_a_database_outside_data_dir_is_refused(directory):
    with workspace("ldap-outside") as work:
        conf = slapd_conf(f"{work}/slapd.conf", "/var/lib/ldap", "x")
        result = directory.call("validate-all", config=conf)
        assert result.returncode == 6 and "outside data_dir" in reason(result)


def test_a_cn_config_tree_runs_too(directory):
    assert directory.call("stop").returncode == 0
    tree = f"{directory.work}/slapd.d"
    os.makedirs(tree, exist_ok=True)
    sh("slaptest", "-f", directory.call.params["config"], "-F", tree)
    sh("chown", "-R", "openldap:openldap", tree)
    result = directory.call("start", config=tree)
    try:
        assert result.returncode == 0, result.stderr
        assert directory.call("monitor", level=20, config=tree).returncode == 0
    finally:
        assert directory.call("stop", config=tree).returncode == 0
    assert directory.call("monitor", config=tree).returncode == 7


def test_a_wrong_password_fails_monitor_and_start(directory):
    wrong = secret_file(f"{directory.work}/wrong", "not the password")
    directory.call.assert_wrong_password_refused(wrong, "invalid credentials",
                                                 "invalid credentials")


def test_the_password_stays_out_of_command_lines_environments_and_logs(running):
    agent_log = f"{running.work}/agent.log"
    debug = {"HA_debug": "1", "HA_LOGFILE": agent_log, "HA_DEBUGLOG": agent_log}
    outputs = [running.call(action, level=level, extra_env=debug) for action, level in (
        ("stop", None), ("start", None), ("monitor", 10), ("monitor", 20))]
    assert [r.returncode for r in outputs] == [0] * 4
    with open(agent_log, encoding="utf-8") as handle:
        logged = handle.read()
    assert "start-stop-daemon" in logged
    with open(f"{running.work}/log/slapd-{running.call.instance}/slapd.log",
              encoding="utf-8") as handle:
        texts = [r.stdout + r.stderr for r in outputs] + [logged, handle.read()]
    assert not [text for text in texts if PASSWORD in text]
    pid = read_pidfile(running.pidfile)
    for what in ("cmdline", "environ"):
        with open(f"/proc/{pid}/{what}", "rb") as handle:
            assert PASSWORD.encode() not in handle.read()
