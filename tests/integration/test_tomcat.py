"""ocf:hapack:tomcat against second tomcat10 instances, and the level-20 chain
HTTP server -> Tomcat -> the application's own health page (one shared JVM)."""

import os
import shutil
import subprocess
import time

import pytest

from requires import need_binary
from hapack import procfs
from layer_fixtures import Agent, Apache, Nginx, Tomcat, cleanup, reason, scratch

CATALINA_SH = "/usr/share/tomcat10/bin/catalina.sh"


def setup_module():
    if not os.path.exists(CATALINA_SH):
        pytest.skip("tomcat10 is not installed (see .ci/packages.txt)")


@pytest.fixture(scope="module")
def made():
    """Every instance this module builds; all stopped by pid and removed at the end."""
    root = scratch("tomcat")
    instances = []
    yield root, instances
    cleanup(instances)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def build(made):
    root, instances = made

    def make(kind, **kw):
        instances.append(kind(root, name=f"{kind.agent}{len(instances)}", **kw))
        return instances[-1]

    return make


@pytest.fixture(scope="module")
def agents(installed):
    return {name: Agent(installed, name) for name in ("tomcat", "apache", "nginx")}


@pytest.fixture(scope="module")
def shared(build, agents):
    """One running Tomcat for the module (JVM start takes seconds)."""
    inst = build(Tomcat)
    rc, err, _ = agents["tomcat"]("start", inst, timeout=120)
    assert rc == 0, err
    yield inst
    agents["tomcat"]("stop", inst)


def app_url(inst):
    return f"http://127.0.0.1:{inst.port}/app/health.jsp"


@pytest.fixture
def app_down(shared):
    """The application's own health page answers 503 while this is in use."""
    with open(shared.app_down, "w", encoding="utf-8"):
        pass
    yield
    os.unlink(shared.app_down)


def test_ocf_tester_passes(build, agents):
    need_binary("ocf-tester")
    inst = build(Tomcat)
    result = subprocess.run(agents["tomcat"].tester_argv(inst), capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert inst.processes() == []
    health = os.path.join(inst.base, "webapps", "hapack-health", "ping.jsp")
    assert os.stat(health).st_uid == os.stat(inst.base).st_uid  # created for the tomcat user


def test_levels_0_10_20_and_the_applications_health(shared, agents):
    tomcat = agents["tomcat"]
    for level in (0, 10):
        assert tomcat("monitor", shared, level=level)[0] == 0
    app = {"test_url": app_url(shared), "test_regex": "^APP OK"}
    assert tomcat("monitor", shared, level=20, **app)[0] == 0
    assert tomcat("start", shared)[0] == 0  # already running and healthy


def test_level_20_fails_when_the_application_is_down(shared, agents, app_down):
    tomcat = agents["tomcat"]
    rc, err, _ = tomcat("monitor", shared, level=20, test_url=app_url(shared))
    assert rc == 1 and "answered HTTP 503" in reason(err)
    assert tomcat("monitor", shared, level=10)[0] == 0


@pytest.mark.parametrize("kind", [Apache, Nginx])
def test_chain_through_the_http_server(shared, build, agents, kind):
    web = build(kind, proxy_to=shared.url)
    http = agents[kind.agent]
    chain = {"test_url": f"http://127.0.0.1:{web.port}/app/health.jsp", "test_regex": "^APP OK"}
    assert http("start", web)[0] == 0
    try:
        assert http("monitor", web, level=20, **chain)[0] == 0
        with open(shared.app_down, "w", encoding="utf-8"):
            pass
        try:
            rc, err, _ = http("monitor", web, level=20, **chain)
            assert rc == 1 and "answered HTTP 503" in reason(err)
            assert http("monitor", web, level=10, **chain)[0] == 0  # level 10 stops at the server
        finally:
            os.unlink(shared.app_down)
    finally:
        assert http("stop", web)[0] == 0


def test_frozen_jvm_fails_level_10_within_the_client_timeout(shared, agents):
    tomcat = agents["tomcat"]
    shared.freeze()
    try:
        assert tomcat("monitor", shared, level=0)[0] == 0
        rc, err, took = tomcat("monitor", shared, level=10, client_timeout=1.5)
        assert rc == 1 and "no answer within 1.5s" in reason(err)
        assert took < 10
    finally:
        shared.thaw()
    assert tomcat("monitor", shared, level=10)[0] == 0


def test_a_port_clash_fails_start_at_once_and_leaves_the_other_alone(shared, build, agents):
    tomcat = agents["tomcat"]
    clash = build(Tomcat, port=shared.port)
    rc, err, took = tomcat("start", clash, timeout=120)
    assert rc == 1 and "exited during start" in reason(err), err
    assert took < 60  # the JVM exits on the failed bind; no wait for the 120 s timeout
    assert clash.processes() == [] and not os.path.exists(clash.pidfile)
    assert tomcat("monitor", shared, level=10)[0] == 0


def test_broken_server_xml_fails_start_with_a_reason(build, agents):
    tomcat = agents["tomcat"]
    inst = build(Tomcat)
    inst.break_config()
    rc, err, took = tomcat("start", inst, timeout=120)
    assert rc == 1 and "exited during start" in reason(err) and "log:" in reason(err)
    assert took < 60
    assert inst.processes() == [] and not os.path.exists(inst.pidfile)
    rc, err, _ = tomcat("validate-all", inst)
    assert rc == 2 and "configtest" in reason(err), err


def test_a_second_instance_with_the_command_flavor(shared, build, agents):
    """Any foreground server fits: here catalina.sh run as a plain command, beside the
    shared instance; its failing stop_command falls through to SIGTERM."""
    tomcat = agents["tomcat"]
    other = build(Tomcat)
    params = {"flavor": "command", "start_command": f"{CATALINA_SH} run",
              "status_url": app_url(other), "status_regex": "APP OK",
              "stop_command": "/bin/false"}
    rc, err, _ = tomcat("start", other, timeout=120, **params)
    assert rc == 0, err
    assert set(other.processes()).isdisjoint(shared.processes())
    assert tomcat("monitor", other, level=10, **params)[0] == 0
    assert tomcat("stop", other, **params)[0] == 0
    assert other.processes() == [] and tomcat("monitor", other, **params)[0] == 7
    assert tomcat("monitor", shared, level=10)[0] == 0


def test_kill9_reports_not_running_and_start_recovers(shared, agents):
    tomcat = agents["tomcat"]
    old = shared.pid()
    shared.kill9()
    deadline = time.monotonic() + 10
    while tomcat("monitor", shared)[0] != 7:  # the zombie counts as dead
        assert time.monotonic() < deadline, "monitor kept reporting running"
    assert tomcat("stop", shared)[0] == 0 and not os.path.exists(shared.pidfile)
    rc, err, _ = tomcat("start", shared, timeout=120)
    assert rc == 0, err
    assert shared.pid() != old and procfs.alive(shared.pid())


@pytest.mark.parametrize("params,code,words", [
    ({"java_home": "/nonexistent/jvm"}, 5, "Java is not installed"),
    ({"catalina_home": "/nonexistent/tomcat"}, 5, "Tomcat is not installed"),
    ({"user": "no-such-user-hapack"}, 5, "does not exist"),
    ({"flavor": "command"}, 6, "needs start_command and status_url"),
    ({"flavor": "glassfish"}, 6, "not one of"),
    ({"catalina_base": "/nonexistent/base"}, 5, "has no conf/server.xml"),
])
def test_bad_parameters_are_refused(build, agents, params, code, words):
    inst = build(Tomcat)
    for action in ("validate-all", "start"):
        rc, err, _ = agents["tomcat"](action, inst, **params)
        assert rc == code and words in reason(err), (action, err)
    assert inst.processes() == []
