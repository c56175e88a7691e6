"""Secrets that are not UTF-8: a configuration error that names no byte of the secret.

fence_bmc (exit 2, or 1 for status/monitor where 2 means "power off"), external/bmc,
hamon run (exit 2) and the OCF agents' credentials files (OCF_ERR_CONFIGURED, 6).
Everything they print or log is searched for every piece of 3 bytes or more of the secret.
"""

import contextlib
import io
import os
import subprocess
import sys

import pytest

from requires import need_root

# invalid UTF-8 in several places, printable ASCII runs between
SECRETS = [
    b"\xffZq7Xk9VwJ4",
    b"Zq7X\xe9k9VwJ4",
    b"Zq7Xk9VwJ4\xc3",
    b"\xc0\xafQj8Rt\xed\xa0\x80Lm3N",
    b"Hy5\x00Tb\xfe\xfeKw2Gp",
]


def leaks(secret, *outputs):
    """Pieces (>= 3 bytes) of secret found in outputs (bytes or str, several decodings)."""
    found = []
    for out in outputs:
        blobs = [out] if isinstance(out, bytes) else [out.encode("utf-8", "surrogateescape"),
                                                       out.encode("latin-1", "replace")]
        for blob in blobs:
            for size in range(3, len(secret) + 1):
                for start in range(len(secret) - size + 1):
                    piece = secret[start:start + size]
                    if piece in blob or repr(piece)[2:-1].encode() in blob:
                        found.append(piece)
    return found


def private(path, data):
    path.write_bytes(data + b"\nsecond line\n")
    path.chmod(0o600)
    return str(path)


def fence_bmc(*argv, stdin=None, env=None):
    return subprocess.run([sys.executable, "-m", "hapack.stonith.fence_bmc", *argv],
                          input=stdin, capture_output=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("action,code", [("off", 2), ("reboot", 2), ("on", 2),
                                         ("validate-all", 2), ("status", 1), ("monitor", 1)])
def test_fence_bmc_password_file_not_utf8(tmp_path, secret, action, code):
    need_root()  # the password file must be owned by root
    log = tmp_path / "ha.log"
    pwfile = private(tmp_path / "pw", secret)
    result = fence_bmc(f"--action={action}", "--ip=192.0.2.1", "--username=admin",
                       f"--password-file={pwfile}", "--login-timeout=1", "--power-timeout=1",
                       env={"HA_LOGFILE": str(log), "HA_debug": "1"})
    assert result.returncode == code, result.stderr
    assert b"not valid UTF-8" in result.stderr
    assert not leaks(secret, result.stdout, result.stderr, log.read_bytes() if log.exists()
                     else b"")


@pytest.mark.parametrize("secret", SECRETS)
def test_fence_bmc_on_stdin_as_the_fencer_runs_it(tmp_path, secret):
    need_root()
    pwfile = private(tmp_path / "pw", secret)
    stdin = f"action=off\nip=192.0.2.1\nusername=admin\npassword_file={pwfile}\n".encode()
    result = fence_bmc(stdin=stdin)
    assert result.returncode == 2 and b"not valid UTF-8" in result.stderr
    assert not leaks(secret, result.stdout, result.stderr)


@pytest.mark.parametrize("secret", SECRETS[:3])
def test_fence_bmc_password_script_printing_not_utf8(tmp_path, secret):
    script = tmp_path / "pw.sh"
    script.write_bytes(b"#!/bin/sh\nprintf '" + b"".join(b"\\%03o" % c for c in secret)
                       + b"\\n'\n")
    script.chmod(0o700)
    result = fence_bmc("--action=off", "--ip=192.0.2.1", f"--password-script={script}",
                       env={"HA_debug": "1"})
    assert result.returncode == 2 and b"not valid UTF-8" in result.stderr
    assert not leaks(secret, result.stdout, result.stderr)


@pytest.mark.parametrize("secret", SECRETS)
def test_external_bmc_password_file_not_utf8(tmp_path, secret):
    need_root()
    from hapack.stonith import glue
    pwfile = private(tmp_path / "pw", secret)
    out, err = io.StringIO(), io.StringIO()
    env = {"hostname": "node2", "ip": "192.0.2.1", "username": "admin", "password_file": pwfile}
    with contextlib.redirect_stderr(err):
        rc = glue.main(["off", "node2"], environ=env, out=out)
    assert rc == 1 and "not valid UTF-8" in err.getvalue()
    assert not leaks(secret, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("secret", SECRETS)
def test_hamon_key_file_not_utf8(tmp_path, secret, capsys):
    need_root()
    import pathlib
    from hapack.hamon import cli
    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "stack.toml"
    key = tmp_path / "hamon.key"
    key.write_bytes(b"auth 1\n1 " + secret + b"0123456789abcdef\n")
    key.chmod(0o600)
    stack = tmp_path / "stack.toml"
    stack.write_text(example.read_text() + f'\n[hamon]\nkey_file = "{key}"\n'
                     f'state_dir = "{tmp_path}/state"\nrun_dir = "{tmp_path}/run"\n'
                     f'ocf_root = "{tmp_path}/none"\n')
    assert cli.main(["run", "--config", str(stack), "--node", "node1"]) == 2
    captured = capsys.readouterr()
    assert "not valid UTF-8" in captured.err and "refusing to start" in captured.err
    assert not leaks(secret, captured.out, captured.err)
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize("secret", SECRETS)
def test_agent_credentials_file_not_utf8_is_err_configured(tmp_path, secret, monkeypatch):
    need_root()
    from hapack.ocf import _secret
    from hapack.ocf.runner import OCF, OCFError
    path = private(tmp_path / "cred", secret)
    with pytest.raises(OCFError) as caught:
        _secret.read_secret(path)
    assert caught.value.code == OCF.ERR_CONFIGURED == 6
    assert "not valid UTF-8" in str(caught.value) and not leaks(secret, str(caught.value))


@pytest.mark.parametrize("secret", SECRETS[:2])
def test_slapd_monitor_with_a_credentials_file_not_utf8_exits_6(tmp_path, secret, monkeypatch):
    """Through the runner: a level-10 monitor binding with the password exits 6."""
    need_root()
    from hapack.ocf import _ldapwire, slapd

    class NoServer:  # the password is read before anything is sent
        def __init__(self, *args):
            pass

        def bind(self, *args):
            raise AssertionError("bound with a password that is not UTF-8")

        def close(self):
            pass

    class Running:
        def monitor(self, checks):
            checks[10](ctx_holder["ctx"])
            return 0

    ctx_holder = {}
    monkeypatch.setattr(_ldapwire, "Ldap", NoServer)
    monkeypatch.setattr(slapd, "server", lambda ctx: ctx_holder.update(ctx=ctx) or Running())
    cred = private(tmp_path / "cred", secret)
    config = tmp_path / "slapd.conf"
    config.write_text("database mdb\nsuffix dc=example,dc=org\n")
    env = {"OCF_RESOURCE_INSTANCE": "ldap", "OCF_RESKEY_CRM_meta_timeout": "20000",
           "OCF_RESKEY_CRM_meta_interval": "10000", "OCF_CHECK_LEVEL": "10",
           "OCF_RESKEY_config": str(config), "OCF_RESKEY_bind_dn": "cn=admin,dc=example,dc=org",
           "OCF_RESKEY_credentials_file": cred,
           "OCF_RESKEY_data_dir": str(tmp_path / "db")}
    out, err = io.StringIO(), io.StringIO()
    code = slapd.AGENT.execute(["monitor"], env, stdout=out, stderr=err)
    assert code == 6, err.getvalue()
    assert "not valid UTF-8" in err.getvalue()
    assert not leaks(secret, out.getvalue(), err.getvalue())
