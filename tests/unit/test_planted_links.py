"""Root never follows a link planted by a service user (issue 14 item 5).

Every agent's set-up (directories, chown, chmod, files written, the console
log handed to start-stop-daemon) runs as root in a temporary tree where a
service user ("nobody") owns what it owns on a real node. A symbolic link is
planted wherever that user could put one -- at different depths, as the
final component, pointing at a root-owned directory, a root-owned file, or a
name that does not exist yet -- and the agent's real start is run (only the
server launch itself and the health wait are replaced). After every run the
root-owned target tree is byte for byte, owner for owner, mode for mode what
it was, and the agent either refused with an OCF error that names the link or
worked around it without touching the target.
"""

import os
import pwd
import shutil
import tempfile

import pytest

from hapack.log import NullLogger
from hapack.ocf import OCFError, PermError
from hapack.ocf import _daemon as d
from hapack.ocf import _datadir, activemq, apache, nginx, postgresql, slapd, tomcat
from hapack.ocf.runner import Context
from hapack.params import from_environ, parse

USER = "nobody"
TARGETS = ("dir", "file", "missing")


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (file ownership)")


class Tree:
    """A temporary tree: ``victim/`` is root's (what a planted link points at); the
    paths in ``user_dirs`` belong to the service user."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="hapack-links-")
        os.chmod(self.root, 0o755)
        self.victim = self.path("victim")
        os.makedirs(os.path.join(self.victim, "sub"))
        for name, mode in (("file", 0o644), ("sub/secret", 0o600)):
            with open(os.path.join(self.victim, name), "w", encoding="utf-8") as handle:
                handle.write(f"precious {name}\n")
            os.chmod(os.path.join(self.victim, name), mode)
        os.chmod(self.victim, 0o755)
        self.before = self.snapshot()

    def path(self, rel):
        return os.path.join(self.root, rel)

    def user_dir(self, rel, mode=0o750):
        path = self.path(rel)
        os.makedirs(path, exist_ok=True)
        shutil.chown(path, USER, USER if _has_group(USER) else None)
        os.chmod(path, mode)
        return path

    def root_dir(self, rel, mode=0o755):
        path = self.path(rel)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        return path

    def plant(self, rel, target):
        """A link at rel, owned by the service user as if it had made it."""
        to = {"dir": self.victim, "file": os.path.join(self.victim, "file"),
              "missing": os.path.join(self.victim, "new")}[target]
        link = self.path(rel)
        os.symlink(to, link)
        uid = pwd.getpwnam(USER).pw_uid
        os.lchown(link, uid, -1)
        return link

    def snapshot(self):
        found = {}
        for folder, dirs, files in os.walk(self.victim):
            for name in [".", *dirs, *files]:
                path = os.path.normpath(os.path.join(folder, name))
                st = os.lstat(path)
                content = None
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as handle:
                        content = handle.read()
                found[os.path.relpath(path, self.victim)] = (st.st_uid, st.st_gid,
                                                             st.st_mode, content)
        return found

    def assert_untouched(self):
        assert self.snapshot() == self.before

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def _has_group(name):
    import grp
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def tree():
    need_root()
    made = Tree()
    yield made
    made.close()


class Ok:
    ok, returncode, stdout, stderr = True, 0, "", ""

    def output(self):
        return ""


def start(module, tree, monkeypatch, **params):
    """The agent's real start (set-up included) with the launch of the server and
    the wait for health replaced; returns what start-stop-daemon would be given."""
    spawned = []
    monkeypatch.setattr(d, "spawn", lambda ctx, argv, pidfile, output, **kw:
                        spawned.append((argv, pidfile, output, kw)))
    monkeypatch.setattr(d.Server, "start", lambda self, launch, checks: launch())
    env = {"OCF_RESOURCE_INSTANCE": "t1", "OCF_RESKEY_CRM_meta_timeout": "20000",
           "HA_RSCTMP": tree.root_dir("rsctmp")}
    env.update({f"OCF_RESKEY_{k}": str(v) for k, v in params.items()})
    ctx = Context(module.AGENT, "start", env, None, NullLogger())
    ctx.params = parse(module.PARAMS, from_environ(module.PARAMS, env))
    ctx.run = lambda *args, **kwargs: Ok()
    module.start(ctx)
    return spawned


def attempt(tree, call):
    """Run call; the target tree must be untouched whatever happens. Returns the OCF
    error it refused with, or None when it worked around the link."""
    try:
        call()
        error = None
    except OCFError as exc:
        error = exc
    tree.assert_untouched()
    return error


# -- the agents -------------------------------------------------------------------

def amq_tree(tree):
    tree.root_dir("run")
    tree.root_dir("log")
    tree.user_dir("run/activemq-t1")
    tree.user_dir("log/activemq-t1")
    tree.user_dir("run/activemq-t1/userconf")


def amq(tree, monkeypatch, **extra):
    params = dict(data_dir=tree.path("data"), run_dir=tree.path("run"),
                  log_dir=tree.path("log"), user=USER)
    return start(activemq, tree, monkeypatch, **dict(params, **extra))


AMQ_PLANTS = [
    "run/activemq-t1/tmp",                        # made and chowned to the broker user
    "run/activemq-t1/conf",                       # made, chmodded, written into
    "log/activemq-t1/console.log",                # start-stop-daemon's output
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("plant", AMQ_PLANTS)
def test_activemq_setup_never_follows_a_planted_link(tree, monkeypatch, plant, target):
    amq_tree(tree)
    tree.plant(plant, target)
    error = attempt(tree, lambda: amq(tree, monkeypatch))
    assert isinstance(error, PermError) and "symbolic link" in str(error), error


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", ["log4j.properties", "activemq.xml"])
def test_activemq_config_files_replace_a_planted_link_instead_of_writing_through_it(
        tree, monkeypatch, name, target):
    amq_tree(tree)
    conf = tree.user_dir("run/activemq-t1/conf", 0o755)  # left by the broker's user
    tree.plant(f"run/activemq-t1/conf/{name}", target)
    assert attempt(tree, lambda: amq(tree, monkeypatch)) is None
    path = os.path.join(conf, name)
    assert not os.path.islink(path) and os.stat(path).st_mode & 0o777 == 0o644
    assert os.stat(conf).st_uid == 0  # the conf directory is root's again


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_activemq_run_dir_below_a_user_directory_is_refused(tree, monkeypatch, depth, target):
    """run_dir (or log_dir) with a link the user planted above it, at any depth."""
    tree.root_dir("log")
    tree.user_dir("home")
    above = "home/" + "/".join(f"d{i}" for i in range(1, depth))
    if depth > 1:
        tree.user_dir(above.rstrip("/"))
    tree.plant(f"{above.rstrip('/')}/run", target)
    run_dir = tree.path(f"{above.rstrip('/')}/run/deeper")
    error = attempt(tree, lambda: amq(tree, monkeypatch, run_dir=run_dir))
    assert isinstance(error, PermError), error
    assert "symbolic link" in str(error) or "may be replaced" in str(error)


def test_activemq_setup_in_a_clean_tree_hands_the_console_log_to_the_broker_user(
        tree, monkeypatch):
    amq_tree(tree)
    ((argv, pidfile, output, kw),) = amq(tree, monkeypatch)
    console = tree.path("log/activemq-t1/console.log")
    assert output == os.devnull and kw["user"] == USER
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3] == console  # opened by the user
    assert os.stat(console).st_uid == pwd.getpwnam(USER).pw_uid
    assert os.stat(tree.path("run/activemq-t1/tmp")).st_uid == pwd.getpwnam(USER).pw_uid
    tree.assert_untouched()


def test_a_link_root_put_in_a_root_only_directory_is_followed(tree, monkeypatch):
    """/var/run -> /run: an administrator's link is not a planted one."""
    tree.root_dir("real/run")
    tree.root_dir("log")
    os.symlink(tree.path("real/run"), tree.path("run"))
    ((argv, pidfile, output, kw),) = amq(tree, monkeypatch)
    assert os.path.isdir(tree.path("real/run/activemq-t1/conf"))
    assert pidfile == tree.path("run/activemq-t1.pid")


TOMCAT_PLANTS = [
    "base/logs", "base/temp", "base/work", "base/logs/catalina.out",
    "base/webapps/hapack-health", "base/webapps/hapack-health/ping.jsp",
]


def tomcat_tree(tree, *real):
    tree.user_dir("base", 0o755)
    tree.user_dir("base/webapps", 0o755)
    for rel in real:
        tree.user_dir(rel, 0o755)


def run_tomcat(tree, monkeypatch, **extra):
    return start(tomcat, tree, monkeypatch,
                 **dict(catalina_base=tree.path("base"), user=USER, **extra))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("plant", TOMCAT_PLANTS)
def test_tomcat_setup_never_follows_a_planted_link(tree, monkeypatch, plant, target):
    parents = [p for p in ("base/logs", "base/webapps/hapack-health")
               if plant.startswith(p + "/")]
    tomcat_tree(tree, *parents)
    tree.plant(plant, target)
    error = attempt(tree, lambda: run_tomcat(tree, monkeypatch))
    if plant.endswith("ping.jsp"):
        # a page that is there is left as it is; any other link is replaced by the page
        assert error is None
        assert os.path.islink(tree.path(plant)) == (target == "file")
    else:
        assert isinstance(error, PermError) and "symbolic link" in str(error), error


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_tomcat_output_log_below_a_planted_link_at_any_depth(tree, monkeypatch, depth, target):
    tomcat_tree(tree, "base/logs")
    chain = "/".join(f"d{i}" for i in range(1, depth + 1))
    for i in range(1, depth):
        tree.user_dir("base/" + "/".join(f"d{j}" for j in range(1, i + 1)), 0o755)
    tree.plant(f"base/{chain}", target)
    log = tree.path(f"base/{chain}/x/out.log")
    error = attempt(tree, lambda: run_tomcat(tree, monkeypatch, output_log=log))
    assert isinstance(error, PermError) and "symbolic link" in str(error), error


def test_tomcat_console_log_is_opened_by_the_server_user(tree, monkeypatch):
    tomcat_tree(tree)
    ((argv, pidfile, output, kw),) = run_tomcat(tree, monkeypatch)
    log = tree.path("base/logs/catalina.out")
    assert output == os.devnull and argv[:2] == ["/bin/sh", "-c"] and argv[3] == log
    assert argv[4:] == ["/usr/share/tomcat10/bin/catalina.sh", "run"]
    assert os.stat(log).st_uid == pwd.getpwnam(USER).pw_uid
    page = tree.path("base/webapps/hapack-health/ping.jsp")
    assert os.stat(page).st_uid == pwd.getpwnam(USER).pw_uid
    tree.assert_untouched()


def slapd_tree(tree):
    tree.root_dir("run")
    tree.root_dir("log")
    tree.user_dir("run/slapd-t1")
    tree.user_dir("log/slapd-t1")  # as an older version left it: the user's


def run_slapd(tree, monkeypatch):
    return start(slapd, tree, monkeypatch, config=tree.path("slapd.conf"),
                 data_dir=tree.path("data"), run_dir=tree.path("run"),
                 log_dir=tree.path("log"), user=USER)


@pytest.mark.parametrize("target", TARGETS)
def test_slapd_log_opened_by_root_is_never_a_planted_link(tree, monkeypatch, target):
    slapd_tree(tree)
    tree.plant("log/slapd-t1/slapd.log", target)
    error = attempt(tree, lambda: run_slapd(tree, monkeypatch))
    assert isinstance(error, PermError) and "symbolic link" in str(error), error


def test_slapd_log_directory_is_roots_alone(tree, monkeypatch):
    slapd_tree(tree)
    ((argv, pidfile, output, kw),) = run_slapd(tree, monkeypatch)
    folder = tree.path("log/slapd-t1")
    assert output == os.path.join(folder, "slapd.log")
    st = os.stat(folder)
    assert st.st_uid == 0 and not st.st_mode & 0o022
    tree.assert_untouched()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", [".s.PGSQL.5432", ".s.PGSQL.5432.lock"])
def test_postgresql_stale_socket_removal_removes_only_a_planted_link(
        tree, monkeypatch, name, target):
    tree.root_dir("run")
    tree.root_dir("log")
    tree.user_dir("run/postgresql-t1")
    link = tree.plant(f"run/postgresql-t1/{name}", target)
    assert attempt(tree, lambda: start(
        postgresql, tree, monkeypatch, pgdata=tree.path("pg"), run_dir=tree.path("run"),
        log_dir=tree.path("log"), user=USER)) is None
    assert not os.path.lexists(link)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("module,param", [(apache, "pidfile"), (nginx, "pidfile"),
                                          (nginx, "error_log")])
def test_web_server_files_below_a_planted_link_are_refused(tree, monkeypatch, module, param,
                                                           target):
    tree.user_dir("home", 0o755)
    tree.plant("home/sub", target)
    conf = tree.path("server.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write("# empty\n")
    error = attempt(tree, lambda: start(module, tree, monkeypatch, config=conf,
                                        **{param: tree.path("home/sub/deeper/x")}))
    assert isinstance(error, PermError) and "symbolic link" in str(error), error


# -- the primitives ------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_primitives_refuse_or_replace_but_never_write_through(tree, target):
    home = tree.user_dir("home", 0o755)
    tree.plant("home/link", target)
    link = os.path.join(home, "link")
    calls = [
        lambda: _datadir.ensure_dir(link, USER, 0o700),
        lambda: _datadir.ensure_dir(os.path.join(link, "a", "b"), USER),
        lambda: _datadir.create_file(link, USER),
        lambda: _datadir.create_file(os.path.join(link, "f"), USER),
        lambda: _datadir.write_file(os.path.join(link, "f"), b"x", 0o666, USER),
        lambda: _datadir.read_file(link),
        lambda: _datadir.remove_file(os.path.join(link, "file")),
    ]
    for call in calls:
        try:
            result = call()
        except (PermError, OSError):
            result = None
        tree.assert_untouched()
        assert result in (None, b"")
    _datadir.write_file(link, b"replaced", 0o600, USER)  # the link itself is replaced
    tree.assert_untouched()
    assert not os.path.islink(link) and open(link, "rb").read() == b"replaced"


def test_a_hard_link_is_not_written_to(tree):
    home = tree.user_dir("home", 0o755)
    os.link(os.path.join(tree.victim, "file"), os.path.join(home, "log"))
    with pytest.raises(PermError, match="not a plain file of its own"):
        _datadir.create_file(os.path.join(home, "log"), USER)
    tree.before = tree.snapshot()  # the link count changed, nothing else
    _datadir.write_file(os.path.join(home, "log"), b"new")
    tree.assert_untouched()


# -- the pid file start-stop-daemon writes as root --------------------------------

@pytest.mark.parametrize("run", [lambda t, m: (amq_tree(t), amq(t, m)),
                                 lambda t, m: (slapd_tree(t), run_slapd(t, m))],
                         ids=["activemq", "slapd"])
def test_the_pid_file_root_writes_is_in_a_directory_of_roots_alone(tree, monkeypatch, run):
    """start-stop-daemon --make-pidfile writes as root: never where the user may plant."""
    _, ((argv, pidfile, output, kw),) = run(tree, monkeypatch)
    folder = os.path.dirname(pidfile)
    st = os.stat(folder)
    assert folder == tree.path("run") and st.st_uid == 0 and not st.st_mode & 0o022


@pytest.mark.parametrize("owner", ["user", "link"])
def test_spawn_refuses_a_pid_file_where_the_user_may_plant(tree, monkeypatch, owner):
    """d.spawn itself: a pid file directory the service user could write (or a link it
    planted on the way) is refused before start-stop-daemon is run."""
    tree.user_dir("home")
    if owner == "link":
        os.symlink(tree.victim, tree.path("home/run"))
        pidfile = tree.path("home/run/x.pid")
    else:
        pidfile = tree.path("home/x.pid")
    ran = []
    ctx = Context(slapd.AGENT, "start", {"OCF_RESOURCE_INSTANCE": "t1"}, None, NullLogger())
    ctx.run = lambda *args, **kwargs: ran.append(args) or Ok()
    error = attempt(tree, lambda: d.spawn(ctx, ["/bin/true"], pidfile, os.devnull))
    assert isinstance(error, PermError), error
    assert not ran
