"""The command seam, the logger, and hapack install."""

import os
import stat
import sys

import pytest

from hapack import command, install
from hapack.log import Logger


def test_run_passes_argv_and_captures(fp):
    fp.register(["ipmitool", "-P", "s3cret", "power", "status"], stdout="on\n", returncode=0)
    result = command.run(["ipmitool", "-P", "s3cret", "power", "status"], timeout=5,
                      secrets=["s3cret"])
    assert result.ok and result.stdout == "on\n"
    assert result.argv == ["ipmitool", "-P", "[set]", "power", "status"]


def test_secrets_never_reach_errors_or_output(fp):
    fp.register(["tool", "--password=s3cret"], stderr="bad password s3cret", returncode=1)
    with pytest.raises(command.CommandError) as info:
        command.run(["tool", "--password=s3cret"], timeout=5, secrets=["s3cret"], check=True)
    assert "s3cret" not in str(info.value)
    assert "--password=[set]" in str(info.value) and "bad password [set]" in str(info.value)


def test_timeout_and_missing_command():
    with pytest.raises(command.CommandTimeout):
        command.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.2)
    with pytest.raises(command.CommandNotFound):
        command.run(["/nonexistent/hapack-tool"], timeout=1)


def test_logger_honours_ha_variables(tmp_path):
    logfile, debuglog = tmp_path / "ha.log", tmp_path / "debug.log"
    env = {"HA_LOGFILE": str(logfile), "HA_DEBUGLOG": str(debuglog), "HA_debug": "1"}
    err = open(os.devnull, "w")
    log = Logger("vip(t)", env, stderr=err)
    log.debug("dbg")
    log.info("inf")
    assert "DEBUG: dbg" in debuglog.read_text() and "INFO: inf" in debuglog.read_text()
    assert "dbg" not in logfile.read_text() and "INFO: inf" in logfile.read_text()
    quiet = Logger("vip(t)", dict(env, HA_debug="0"), stderr=err)
    quiet.debug("hidden")
    assert "hidden" not in debuglog.read_text() + logfile.read_text()


def test_install_is_idempotent_and_uninstall_removes_exactly_it(tmp_path):
    lines = []
    root = str(tmp_path)
    install.install(root, "/usr/lib/ocf", out=lines.append)
    assert (tmp_path / "var/lib/hapack/install-manifest").exists()
    vip = tmp_path / "usr/lib/ocf/resource.d/hapack/vip"
    assert vip.exists() and stat.S_IMODE(vip.stat().st_mode) == 0o755
    assert vip.read_text().startswith(f"#!{sys.executable} -I")
    assert "from hapack.ocf.vip import main" in vip.read_text()
    lines.clear()
    install.install(root, "/usr/lib/ocf", out=lines.append)
    assert lines[-1].startswith("0 file(s) written")
    foreign = tmp_path / "usr/lib/ocf/resource.d/hapack/foreign"
    foreign.write_text("not ours")
    assert install.uninstall(root, out=lines.append) == 0
    assert not vip.exists() and foreign.exists()
    assert not (tmp_path / install.MANIFEST.lstrip("/")).exists()


def test_uninstall_keeps_a_file_changed_since(tmp_path):
    root = str(tmp_path)
    install.install(root, "/usr/lib/ocf", out=lambda line: None)
    vip = tmp_path / "usr/lib/ocf/resource.d/hapack/vip"
    vip.write_text("#!/bin/sh\n# edited by an operator\n")
    assert install.uninstall(root, out=lambda line: None) == 1
    assert vip.exists()


@pytest.mark.parametrize("doc", ["README.md", "stonith/README.md"])
def test_parameter_tables_are_generated_from_the_declarations(doc):
    from hapack import docs
    path = os.path.join(os.path.dirname(__file__), "..", "..", doc)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert "<!-- params:" in text
    assert docs.render(text) == text, f"{doc} tables are stale: run python -m hapack.docs {doc}"


def test_run_as_a_user_drops_roots_groups():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    import pwd
    entry = pwd.getpwnam("nobody")
    ids = [command.run(["id", flag], timeout=5, user="nobody", check=True).stdout.split()
           for flag in ("-u", "-g", "-G")]
    assert ids[0] == [str(entry.pw_uid)] and ids[1] == [str(entry.pw_gid)]
    assert "0" not in ids[2]


def test_logger_without_stderr(monkeypatch, tmp_path):
    """DRBD runs handlers with no stdin, stdout or stderr: logging must not crash."""
    monkeypatch.setattr("sys.stderr", None)
    log = Logger("handler", {"HA_LOGFILE": str(tmp_path / "log")})
    log.error("still logged")
    assert "ERROR: still logged" in (tmp_path / "log").read_text()


def test_install_writes_every_registered_agent_and_fails_on_a_missing_one(tmp_path, monkeypatch):
    from hapack import agents
    install.install(str(tmp_path), "/usr/lib/ocf", out=lambda line: None)
    written = sorted(p.name for p in (tmp_path / "usr/lib/ocf/resource.d/hapack").iterdir())
    assert written == sorted(agents.OCF_AGENTS)
    monkeypatch.setattr(install, "OCF_AGENTS", dict(agents.OCF_AGENTS, nosuch="hapack.ocf.nosuch"))
    with pytest.raises(ModuleNotFoundError):
        install.install(str(tmp_path / "again"), "/usr/lib/ocf", out=lambda line: None)
    assert not (tmp_path / "again/usr/lib/ocf/resource.d/hapack/vip").exists()


@pytest.mark.parametrize("word,value", [
    ("true", True), ("TRUE", True), (" yes", True), ("on", True), ("y", True), ("1", True),
    ("false", False), ("no", False), ("off", False), ("n", False), ("0", False),
    ("", False), (None, False), ("maybe", False), ("2", False)])
def test_one_boolean_reading_for_parameters_and_meta_attributes(word, value):
    from hapack.ocf import Action, Agent
    from hapack.ocf.runner import Context
    from hapack.params import is_true, parse_bool
    agent = Agent("t", version="1", shortdesc="t", longdesc="t", params=(), actions=(
        Action("start", None, 5), Action("stop", None, 5), Action("monitor", None, 5)))
    env = {} if word is None else {"OCF_RESKEY_CRM_meta_notify": word}
    assert Context(agent, "start", env, None, None).notify_enabled is value
    assert is_true(word) is value
    if value or word in ("false", "no", "off", "n", "0"):
        assert parse_bool(word) is value


@pytest.mark.parametrize("name,instance,per_clone,expected", [
    ("apache", "web", True, "hapack-apache-web.pid"),
    ("apache", "web:1", True, "hapack-apache-web:1.pid"),
    ("partition", "part:1", False, "hapack-partition-part.pid"),
    ("vip", "a/b", True, "hapack-vip-a_b.pid"),
    ("vip", None, True, "hapack-vip-vip.pid")])
def test_one_state_path_under_ha_rsctmp(tmp_path, name, instance, per_clone, expected):
    from hapack.ocf import Action, Agent
    from hapack.ocf.runner import Context
    agent = Agent(name, version="1", shortdesc="t", longdesc="t", params=(), actions=(
        Action("start", None, 5), Action("stop", None, 5), Action("monitor", None, 5)))
    env = {"HA_RSCTMP": str(tmp_path)}
    if instance is not None:
        env["OCF_RESOURCE_INSTANCE"] = instance
    ctx = Context(agent, "start", env, None, None)
    assert ctx.state_path("pid", per_clone=per_clone) == str(tmp_path / expected)
    del env["HA_RSCTMP"]
    assert ctx.state_path("pid", per_clone=per_clone) == "/run/resource-agents/" + expected
