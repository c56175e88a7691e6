"""hamon's [hamon] table, its states table and its control socket."""

import os
import pathlib
import threading

import pytest

from hapack.hamon import control
from hapack.hamon.config import Settings, load_config, settings
from hapack.hamon.states import EDGES, IllegalTransition, State, StateMachine
from hapack.stack import StackError

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "stack.toml"


class Log:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)

    warning = error = debug = info


def test_defaults_are_the_issue_timings():
    s = settings({})
    assert (s.interval, s.dead_time, s.warn) == (0.2, 1.2, 0.4)  # warn: two intervals
    assert s == Settings()


def test_durations_and_bounds():
    s = settings({"interval": "100ms", "dead_time": "500ms", "ping_targets": ["198.18.0.1"],
                  "ping_interval": "100ms"})
    assert (s.interval, s.dead_time, s.ping_targets) == (0.1, 0.5, ("198.18.0.1",))


@pytest.mark.parametrize("table, key, message", [
    ({"dead_time": "500ms"}, "hamon.dead_time", "under 3 heartbeat intervals"),
    ({"interval": "10ms"}, "hamon.interval", "outside"),
    ({"intervall": "1s"}, "hamon.intervall", "unknown key"),
    ({"port": "5405"}, "hamon.port", "expected an integer"),
    ({"vip": "first"}, "hamon.vip", "not one of"),
    ({"key_file": "keys"}, "hamon.key_file", "absolute path"),
    ({"ping_targets": ["gateway"]}, "hamon.ping_targets", "does not appear to be"),
    ({"fence_delay": "100ms"}, "hamon.fence_delay", "two heartbeat intervals"),
])
def test_bad_settings_name_the_key(table, key, message):
    with pytest.raises(StackError) as info:
        settings(table, "stack.toml")
    assert info.value.key == key and message in info.value.message


def test_vip_order_against_start_after(tmp_path):
    text = EXAMPLE.read_text().replace('# start_after = "slapd"', 'start_after = "slapd"')
    path = tmp_path / "stack.toml"
    path.write_text(text)
    assert load_config(path, "node1").vip_first is False
    path.write_text(text + '\n[hamon]\nvip = "before_fence"\n')
    with pytest.raises(StackError, match="start_after"):
        load_config(path, "node1")


def test_config_names_links_and_peer():
    config = load_config(EXAMPLE, "node2")
    assert config.peer.name == "node1" and not config.preferred and config.vip_first
    assert [(e.name, e.local, e.peer) for e in config.links] == [
        ("lan", "198.18.240.12", "198.18.240.11"), ("hb", "198.18.241.12", "198.18.241.11")]
    with pytest.raises(StackError, match="not a node"):
        load_config(EXAMPLE, "node3")


def test_every_state_has_a_row_and_transitions_are_guarded():
    assert set(EDGES) == set(State)
    log = Log()
    machine = StateMachine(log)
    machine.transition(State.SECONDARY, "peer alive")
    machine.transition(State.TAKEOVER, "peer lost")
    assert log.lines == ["starting -> secondary: peer alive", "secondary -> takeover: peer lost"]
    with pytest.raises(IllegalTransition, match="takeover -> starting"):
        machine.transition(State.STARTING, "no")
    assert machine.state is State.TAKEOVER


@pytest.mark.parametrize("old, new", [(State.SECONDARY, State.PRIMARY),
                                      (State.BLOCKED, State.PRIMARY),
                                      (State.PRIMARY, State.SECONDARY),
                                      (State.FAILED, State.SECONDARY)])
def test_the_edges_that_skip_the_gate_do_not_exist(old, new):
    """The stateful side is only reached through TAKEOVER, and left through RELEASING."""
    assert new not in EDGES[old]


def test_control_socket_is_root_only(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    run_dir = str(tmp_path / "run")
    server = control.ControlServer(run_dir, lambda req: {"ok": True, "echo": req}, Log())
    assert oct(os.stat(run_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(server.path).st_mode & 0o777) == "0o600"
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            server.serve()
            stop.wait(0.01)
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert control.request(run_dir, {"cmd": "status"}) == {"ok": True,
                                                                 "echo": {"cmd": "status"}}
        os.chmod(tmp_path, 0o755)
        pid = os.fork()
        if pid == 0:
            os.setgid(65534)
            os.setuid(65534)
            try:
                control.request(run_dir, {"cmd": "takeover"}, timeout=2)
                os._exit(1)
            except control.ControlError:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0, "a non-root user reached the control socket"
    finally:
        stop.set()
        thread.join()
        server.close()
    with pytest.raises(control.ControlError, match="not running"):
        control.request(run_dir, {"cmd": "status"})


def test_hamon_run_refuses_a_key_file_others_can_read(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("hamon run needs root")
    from hapack.hamon import cli
    key = tmp_path / "hamon.key"
    key.write_text("auth 1\n1 0123456789abcdef0123\n")
    key.chmod(0o644)
    stack = tmp_path / "stack.toml"
    stack.write_text(EXAMPLE.read_text() + f'\n[hamon]\nkey_file = "{key}"\n'
                     f'state_dir = "{tmp_path}/state"\nrun_dir = "{tmp_path}/run"\n'
                     f'ocf_root = "{tmp_path}/none"\n')
    assert cli.main(["run", "--config", str(stack), "--node", "node1"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "refusing to start" in err and "root only" in err
    assert not (tmp_path / "run").exists()  # nothing was started
    key.chmod(0o600)
    assert cli.main(["run", "--config", str(stack), "--node", "node1"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "not installed" in err and f"{tmp_path}/none/resource.d/hapack/" in err
    stack.write_text(EXAMPLE.read_text() + '\n[hamon]\ndead_time = "400ms"\n')
    assert cli.main(["run", "--config", str(stack), "--node", "node1"]) == cli.EXIT_CONFIG
    assert "hamon.dead_time" in capsys.readouterr().err


def test_keygen_writes_a_root_only_key_file(tmp_path):
    from hapack.hamon import cli
    from hapack.hamon.packet import Keyring
    path = tmp_path / "k"
    assert cli.main(["keygen", str(path)]) == 0
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    keys = Keyring.parse(path.read_text())
    assert keys.send_id == 1 and len(keys.keys[1]) == 64
