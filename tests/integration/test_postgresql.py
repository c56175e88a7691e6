"""ocf:hapack:postgresql against Debian's PostgreSQL 15, PGDATA on an ext4 loop mount."""

import os

import pytest

from requires import need_binary, need_root
from hapack.ocf._pgwire import PgConnection
from hapack.procfs import alive, holders
from stateful_fixtures import (AgentCall, free_port, kill_9, loop_partition, owned_dir,
                               reason, secret_file, sh, workspace)

BINDIR = "/usr/lib/postgresql/15/bin"
PASSWORD = f"pg pass {os.getpid()}"


class Cluster:
    def __init__(self, call, pgdata, work, port):
        self.call, self.pgdata, self.work, self.port = call, pgdata, work, port

    @property
    def socket(self):
        return f"{self.work}/run/postgresql-{self.call.instance}/.s.PGSQL.{self.port}"

    def sql(self, statement):
        with PgConnection(self.socket, "postgres", "postgres", PASSWORD, 5) as conn:
            return conn.query(statement)

    def processes(self):
        """Every process of the instance: postgres working in PGDATA."""
        return [pid for pid, comm, how in holders(self.pgdata) if how == "cwd"]


@pytest.fixture(scope="module")
def cluster(installed):
    need_root()
    need_binary(f"{BINDIR}/initdb", "setpriv", "start-stop-daemon")
    with workspace("pg") as work, loop_partition(work) as mnt:
        pgdata = owned_dir(f"{mnt}/pgdata", "postgres")
        pwfile = secret_file(f"{work}/initdb-pw", PASSWORD, mode=0o644)
        sh("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env",
           f"{BINDIR}/initdb", "-D", pgdata, "-U", "postgres", "--auth=scram-sha-256",
           "--pwfile", pwfile, "-E", "UTF8", "--locale=C.UTF-8")
        os.unlink(pwfile)
        port = free_port()
        call = AgentCall(installed("postgresql"), f"pg{os.getpid()}", dict(
            pgdata=pgdata, port=port, credentials_file=secret_file(f"{work}/cred", PASSWORD),
            run_dir=f"{work}/run", log_dir=f"{work}/log", options="-c shared_buffers=16MB"))
        try:
            yield Cluster(call, pgdata, work, port)
        finally:
            call("stop")


@pytest.fixture
def running(cluster):
    cluster.call.start_ok()
    return cluster


def test_ocf_tester_passes(cluster):
    cluster.call.assert_ocf_tester_passes()


def test_level_20_survives_a_stop_start_cycle_and_leaves_no_probe_rows(running):
    running.call.assert_level_20_across_a_restart()
    assert running.sql("SELECT count(*) FROM hapack_probe") == [["0"]]


def test_committed_rows_survive_kill_9_of_every_process(running):
    running.sql("DROP TABLE IF EXISTS orders")
    running.sql("CREATE TABLE orders (id int PRIMARY KEY, item text)")
    running.sql("INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 2000) g")
    pids = running.processes()
    assert len(pids) >= 3
    kill_9(*pids)
    running.call.expect(("monitor", 0, 7), ("monitor", 10, 7),
                        ("start", None, 0))  # crash recovery from the same partition
    assert running.sql("SELECT count(*), max(item) FROM orders") == [["2000", "item 999"]]
    assert running.call("monitor", level=20).returncode == 0


def test_kill_9_of_the_postmaster_alone_is_cleaned_up_by_stop(running):
    postmaster = int(open(f"{running.pgdata}/postmaster.pid").readline())
    kill_9(postmaster)
    running.call.expect(("monitor", 0, 7), ("stop", None, 0))
    assert not [pid for pid in running.processes() if alive(pid)]
    assert not os.path.exists(f"{running.pgdata}/postmaster.pid")


def test_a_pgdata_that_is_not_mounted_is_refused(cluster):
    with workspace("pg-unmounted") as work:
        pgdata = owned_dir(f"{work}/pgdata", "postgres")  # on the root file system
        open(f"{pgdata}/PG_VERSION", "w").write("15\n")
        result = cluster.call("start", pgdata=pgdata)
        assert result.returncode == 5
        assert "is on the root file system, not on a mounted partition" in reason(result)
        assert os.listdir(pgdata) == ["PG_VERSION"]
        missing = f"{work}/absent/pgdata"
        result = cluster.call("start", pgdata=missing)
        assert result.returncode == 5 and "does not exist" in reason(result)
        assert not os.path.exists(f"{work}/absent")


def test_a_wrong_password_fails_monitor_and_start(cluster):
    wrong = secret_file(f"{cluster.work}/wrong", "not the password")
    cluster.call.assert_wrong_password_refused(wrong, "password authentication failed", "28P01")
    assert not cluster.processes()


def test_a_credentials_file_others_can_read_is_refused(cluster):
    loose = secret_file(f"{cluster.work}/loose", PASSWORD, mode=0o644)
    result = cluster.call("validate-all", credentials_file=loose)
    assert result.returncode == 4 and "readable by others" in reason(result)


def test_the_password_stays_out_of_command_lines_environments_and_logs(running):
    agent_log = f"{running.work}/agent.log"
    debug = {"HA_debug": "1", "HA_LOGFILE": agent_log, "HA_DEBUGLOG": agent_log}
    outputs = [running.call(action, level=level, extra_env=debug) for action, level in (
        ("stop", None), ("start", None), ("monitor", 10), ("monitor", 20), ("validate-all", None))]
    assert [r.returncode for r in outputs] == [0] * 5
    with open(agent_log, encoding="utf-8") as handle:
        logged = handle.read()
    assert "pg_ctl" in logged  # the commands were logged, without the password
    server_log = f"{running.work}/log/postgresql-{running.call.instance}/postgresql.log"
    with open(server_log, encoding="utf-8") as handle:
        texts = [r.stdout + r.stderr for r in outputs] + [logged, handle.read()]
    assert not [text for text in texts if PASSWORD in text]
    pids = running.processes()
    assert pids
    for pid in pids:
        for what in ("cmdline", "environ"):
            with open(f"/proc/{pid}/{what}", "rb") as handle:
                assert PASSWORD.encode() not in handle.read()


# -- nothing of options or a path ever runs as a command (issue 14 item 8) ---------------

@pytest.fixture
def marker_dir():
    """A directory anyone may write: an injected 'touch' as postgres would succeed."""
    with workspace("pg-mark") as path:
        os.chmod(path, 0o1777)
        yield path


INJECTIONS = ["-c work_mem=8MB; touch {m}", "$(touch {m})", "`touch {m}`",
              "-c work_mem=8MB && touch {m}", "-c work_mem=8MB\ntouch {m}",
              "-c 'work_mem=$(touch {m})'", "-c work_mem=8MB | touch {m}"]


@pytest.mark.parametrize("options", INJECTIONS)
def test_options_never_run_as_a_command(cluster, marker_dir, options):
    marker = os.path.join(marker_dir, "injected")
    options = options.format(m=marker)
    result = cluster.call("start", options=options)
    try:
        assert not os.path.exists(marker), f"options {options!r} ran a command"
        assert result.returncode in (0, 1), result.stderr  # postgres may refuse the words
    finally:
        assert cluster.call("stop").returncode == 0
    assert not os.path.exists(marker)
    assert cluster.call("monitor", options=options).returncode == 7


def injected_anywhere(cluster, name):
    """Paths of a file called name where a relative 'touch name' could have landed."""
    found = [os.path.join(folder, name) for folder, _, files in os.walk(cluster.work)
             if name in files]
    return found + [path for path in (f"/{name}", f"/var/lib/postgresql/{name}",
                                      os.path.join(os.getcwd(), name)) if os.path.exists(path)]


@pytest.mark.parametrize("name", ["pg data $(touch {m})", "pg`touch {m}`\"q\" 'q'; x"])
def test_a_pgdata_and_log_dir_the_shell_would_expand_work_and_run_nothing(cluster, name):
    marker = f"injected-{os.getpid()}"  # relative: a path in a directory name has no '/'
    weird = os.path.join(os.path.dirname(cluster.pgdata), name.format(m=marker))
    logs = os.path.join(cluster.work, name.format(m=marker) + " log")
    assert cluster.call("stop").returncode == 0
    os.rename(cluster.pgdata, weird)
    try:
        result = cluster.call("start", pgdata=weird, log_dir=logs)
        assert result.returncode == 0, result.stderr
        assert cluster.call("monitor", level=10, pgdata=weird, log_dir=logs).returncode == 0
        assert os.path.getsize(os.path.join(logs, f"postgresql-{cluster.call.instance}",
                                            "postgresql.log")) > 0
    finally:
        assert cluster.call("stop", pgdata=weird, log_dir=logs).returncode == 0
        os.rename(weird, cluster.pgdata)
    assert not injected_anywhere(cluster, marker)
