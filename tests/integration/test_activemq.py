"""ocf:hapack:activemq against Debian's ActiveMQ 5.17, the KahaDB store on an ext4 loop mount."""

import os
import time

import pytest

from requires import need_binary, need_root
from hapack.ocf._stomp import Stomp
from hapack.procfs import alive, cmdline, read_pidfile
from stateful_fixtures import (AgentCall, free_ports, kill_9, loop_partition, owned_dir,
                               reason, secret_file, workspace)

JVM = "-Xms64m -Xmx256m"
PASSWORD = f"amq pass {os.getpid()}"
AUTH_CONFIG = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans
  http://www.springframework.org/schema/beans/spring-beans.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="auth" useJmx="false"
          dataDirectory="${{activemq.data}}">
    <plugins><simpleAuthenticationPlugin><users>
      <authenticationUser username="monitor" password="{password}" groups="admins"/>
    </users></simpleAuthenticationPlugin></plugins>
    <persistenceAdapter><kahaDB directory="${{activemq.data}}/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{port}"/>
    </transportConnectors>
  </broker>
</beans>
"""


class Broker:
    def __init__(self, call, work, mnt):
        self.call, self.work, self.mnt = call, work, mnt

    def pidfile(self, call=None):
        return f"{self.work}/run/activemq-{(call or self.call).instance}.pid"

    def queued(self, queue, port=None):
        """Messages waiting in queue, counted by a browsing subscription."""
        client = Stomp("127.0.0.1", port or self.call.params["stomp_port"], 10)
        client.connect()
        client.frame("SUBSCRIBE", [("destination", f"/queue/{queue}"), ("id", "browse"),
                                   ("browser", "true")])
        count = 0
        while True:
            frame = client.read()
            if frame.command == "MESSAGE" and frame.headers.get("browser") == "end":
                break
            count += frame.command == "MESSAGE"
        client.disconnect()
        return count

    def send(self, queue, body):
        client = Stomp("127.0.0.1", self.call.params["stomp_port"], 10)
        client.connect()
        client.frame("SEND", [("destination", f"/queue/{queue}"), ("persistent", "true"),
                              ("receipt", "r")], body)
        client.expect("RECEIPT")
        client.disconnect()


@pytest.fixture(scope="module")
def broker(installed):
    need_root()
    need_binary("java", "start-stop-daemon")
    if not os.path.isfile("/usr/share/activemq/bin/activemq.jar"):
        pytest.skip("activemq is not installed (see .ci/packages.txt)")
    with workspace("amq") as work, loop_partition(work, size_mb=300) as mnt:
        stomp, openwire = free_ports(2)
        call = AgentCall(installed("activemq"), f"amq{os.getpid()}", dict(
            data_dir=owned_dir(f"{mnt}/amq", "activemq"), stomp_port=stomp,
            openwire_port=openwire, java_opts=JVM, run_dir=f"{work}/run",
            log_dir=f"{work}/log"))
        try:
            yield Broker(call, work, mnt)
        finally:
            call("stop")


@pytest.fixture
def running(broker):
    broker.call.start_ok()
    return broker


def test_ocf_tester_passes(broker):
    broker.call.assert_ocf_tester_passes()


def test_level_20_survives_a_stop_start_cycle_and_leaves_the_probe_queue_empty(running):
    running.call.assert_level_20_across_a_restart()
    running.send("hapack.other", b"kept")  # the browser does see what is queued
    assert running.queued("hapack.other") == 1
    assert running.queued("hapack.probe") == 0


def test_a_broker_on_a_locked_store_fails_its_start_within_the_deadline(running):
    holder = read_pidfile(running.pidfile())
    stomp, openwire = free_ports(2)
    second = AgentCall(running.call.path, f"{running.call.instance}b", dict(
        running.call.params, stomp_port=stomp, openwire_port=openwire), timeout_ms=20000)
    began = time.monotonic()
    result = second("start")
    took = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    assert f"is held by another broker (pid {holder})" in reason(result)
    assert took < 20, f"start took {took:.1f}s, beyond its 20s timeout"
    assert second("monitor").returncode == 7
    marker = f"-Dactivemq.base={running.work}/run/activemq-{second.instance}"
    assert not [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                if alive(pid) and marker in cmdline(pid)], "the waiting broker was left running"
    assert running.call("monitor", level=20).returncode == 0


def test_kill_9_gives_not_running(running):
    kill_9(read_pidfile(running.pidfile()))
    running.call.expect(("monitor", 0, 7), ("monitor", 20, 7), ("stop", None, 0))
    assert not os.path.exists(running.pidfile())


def test_a_data_dir_that_is_not_mounted_is_refused(broker):
    with workspace("amq-unmounted") as work:
        data = owned_dir(f"{work}/amq", "activemq")  # on the root file system
        result = broker.call("start", data_dir=data)
        assert result.returncode == 5
        assert "is on the root file system, not on a mounted partition" in reason(result)
        assert os.listdir(data) == []
        assert broker.call("monitor", data_dir=data).returncode == 7


def test_an_authenticating_broker_is_monitored_with_the_password_file(broker):
    port = free_ports(1)[0]
    config = f"{broker.work}/auth-activemq.xml"
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(AUTH_CONFIG.format(password=PASSWORD, port=port))
    os.chmod(config, 0o644)
    auth = AgentCall(broker.call.path, f"{broker.call.instance}auth", dict(
        broker.call.params, data_dir=owned_dir(f"{broker.mnt}/amq-auth", "activemq"),
        config=config, stomp_port=port, openwire_port=0, broker_user="monitor",
        credentials_file=secret_file(f"{broker.work}/cred", PASSWORD)))
    try:
        result = auth("start")
        assert result.returncode == 0, result.stderr
        assert auth("monitor", level=20).returncode == 0
        result = auth("monitor", level=10, broker_user=None)
        assert result.returncode == 1 and "refused" in reason(result)
        wrong = secret_file(f"{broker.work}/wrong", "not the password")
        result = auth("monitor", level=10, credentials_file=wrong)
        assert result.returncode == 1 and "login refused" in reason(result)
    finally:
        assert auth("stop").returncode == 0
