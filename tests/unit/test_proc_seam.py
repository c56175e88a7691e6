"""The command seam (hapack.command): nothing it starts outlives the deadline, and redaction
replaces whole values only. Real shells and real grandchildren, checked by PID."""

import os
import random
import time

import pytest

from hapack import procfs
from hapack.command import REDACTED, CommandTimeout, redact, redact_text, run, start


def _gone_soon(pid, seconds=2.0):
    end = time.monotonic() + seconds
    while procfs.alive(pid) and time.monotonic() < end:
        time.sleep(0.01)
    return not procfs.alive(pid)


SHAPES = {
    # a grandchild that keeps the pipes open
    "background": "sleep 60 & echo $! > {pids}; wait",
    # one that closed them
    "detached output": "sleep 60 >/dev/null 2>&1 & echo $! > {pids}; wait",
    # a great-grandchild through a subshell
    "nested": "(sleep 60 & echo $! > {pids}; wait) & wait",
    # the shell already exited, its child holds the pipes
    "orphan": "sleep 60 & echo $! > {pids}",
    # children that ignore TERM
    "ignores term": "trap '' TERM; sleep 60 & echo $! > {pids}; wait",
    # several
    "many": "for i in 1 2 3; do sleep 60 & echo $! >> {pids}; done; wait",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_no_descendant_outlives_the_timeout(tmp_path, shape):
    pids = tmp_path / "pids"
    script = SHAPES[shape].format(pids=pids)
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        run(["sh", "-c", script], timeout=0.5)
    assert time.monotonic() - started < 10  # it did not wait for sleep 60
    found = [int(word) for word in pids.read_text().split()]
    assert found and all(_gone_soon(pid) for pid in found), f"{shape}: {found} alive"


def test_each_command_leads_its_own_session_and_group():
    out = run(["sh", "-c", "cut -d' ' -f1,5,6 /proc/$$/stat"], timeout=5).stdout.split()
    pid, group, session = map(int, out)
    assert pid == group == session != os.getpgrp()


def test_a_finished_command_keeps_its_detached_daemon(tmp_path):
    # what start-stop-daemon --background does: a new session of its own survives
    pidfile = tmp_path / "pid"
    script = f"setsid -f sh -c 'echo $$ > {pidfile}; exec sleep 30' </dev/null >/dev/null 2>&1"
    result = run(["sh", "-c", script], timeout=5)
    assert result.ok
    deadline = time.monotonic() + 2
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pid = int(pidfile.read_text())
    try:
        assert procfs.alive(pid)
    finally:
        os.kill(pid, 9)


def test_output_that_is_not_utf8_never_raises():
    result = run(["printf", r"ok \377\376 done"], timeout=5)
    assert result.ok and result.stdout.startswith("ok ") and result.stdout.endswith(" done")


# -- redaction: whole values only ------------------------------------------------------

@pytest.mark.parametrize("text,shown", [
    ("administrator", "administrator"),
    ("user administrator logged in", "user administrator logged in"),
    ("sysadmin", "sysadmin"),
    ("admins admin1 _admin admin_", "admins admin1 _admin admin_"),
    ("admin", REDACTED),
    ("password=admin", f"password={REDACTED}"),
    ("'admin'", f"'{REDACTED}'"),
    ("login admin: administrator refused", f"login {REDACTED}: administrator refused"),
    ("-P admin\n", f"-P {REDACTED}\n"),
    ("admin,admin;admin", f"{REDACTED},{REDACTED};{REDACTED}"),
    ("(admin)", f"({REDACTED})"),
    ("Administrator ADMIN", "Administrator ADMIN"),
])
def test_a_password_is_redacted_as_a_whole_value(text, shown):
    assert redact_text(text, ["admin"]) == shown


def test_secrets_with_punctuation_at_their_edges_are_redacted_anywhere():
    assert redact_text("x-s3cr!t-y", ["-s3cr!t-"]) == f"x{REDACTED}y"
    assert redact_text("a.b", [".b"]) == f"a{REDACTED}"


def test_overlapping_secrets_leave_no_part_visible():
    assert redact_text("abc-def-ghi", ["abc-def", "def-ghi"]) == REDACTED
    assert redact_text("abcdef abc", ["abcdef", "abc"]) == f"{REDACTED} {REDACTED}"


def test_argv_elements_are_redacted_whole():
    argv = ["ipmitool", "-U", "administrator", "-P", "admin", "--password=admin", "-Uadmins"]
    assert redact(argv, ["admin"]) == ["ipmitool", "-U", "administrator", "-P", REDACTED,
                                       f"--password={REDACTED}", "-Uadmins"]


WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
PUNCT = " \t\n=:;,'\"()[]<>/"


@pytest.mark.parametrize("seed", range(200))
def test_random_spellings_redact_every_whole_occurrence_and_nothing_else(seed):
    rng = random.Random(seed)
    secret = "".join(rng.choice(WORD + "!#%-.@") for _ in range(rng.randint(3, 12)))
    if not any(c in WORD for c in secret):
        secret = "a" + secret
    pieces, expected = [], []
    for _ in range(rng.randint(1, 8)):
        sep = rng.choice(PUNCT)
        kind = rng.choice(["secret", "inside", "other"])
        if kind == "secret":
            pieces.append(secret + sep)
            expected.append(REDACTED + sep)
        elif kind == "inside" and secret[0] in WORD and secret[-1] in WORD:
            word = rng.choice(WORD[:52]) + secret + rng.choice(WORD[:52])
            pieces.append(word + sep)
            expected.append(word + sep)
        else:
            word = "".join(rng.choice(WORD[:26]) for _ in range(rng.randint(1, 8)))
            if secret in word:
                continue
            pieces.append(word + sep)
            expected.append(word + sep)
    text = "".join(pieces)
    assert redact_text(text, [secret]) == "".join(expected), (secret, text)


# -- started ahead (hapack.command.start): the same deadline and redaction as run() ---

def test_a_started_command_waits_for_its_input_and_answers_it():
    started = start(["sh", "-c", "read line; echo \"got $line\"; exit 3"])
    time.sleep(0.2)
    assert started.waiting                      # started, blocked on stdin
    result = started.finish("hello\n", timeout=5)
    assert (result.returncode, result.stdout) == (3, "got hello\n")
    assert not started.waiting


def test_a_started_command_that_died_is_not_waiting():
    started = start(["sh", "-c", "exit 0"])
    assert _gone_soon(started.proc.pid) or started.proc.poll() is not None
    assert not started.waiting
    started.cancel()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_no_descendant_of_a_started_command_outlives_the_timeout(tmp_path, shape):
    pids = tmp_path / "pids"
    started = start(["sh", "-c", "read line; " + SHAPES[shape].format(pids=pids)])
    with pytest.raises(CommandTimeout):
        started.finish("go\n", timeout=0.5)
    for pid in map(int, pids.read_text().split()):
        assert _gone_soon(pid), f"pid {pid} outlived the timeout ({shape})"


def test_a_started_command_leads_its_own_session_and_group():
    started = start(["sh", "-c", "read line; ps -o sid=,pgid= -p $$"])
    sid, pgid = started.finish("x\n", timeout=5).stdout.split()
    assert int(sid) == int(pgid) == started.proc.pid != os.getpgid(0)


def test_a_secret_in_the_input_or_argv_of_a_started_command_is_never_shown():
    started = start(["sh", "-c", "read line; echo \"$line\"; echo \"$0\" >&2", "s3cret"])
    result = started.finish("password=s3cret\n", timeout=5, secrets=["s3cret"])
    assert result.stdout == f"password={REDACTED}\n"
    assert "s3cret" not in result.stderr + " ".join(result.argv)


@pytest.mark.parametrize("reads", [True, False])
def test_cancel_ends_a_started_command_whether_or_not_it_reads_its_input(reads):
    started = start(["sh", "-c", "read line; exit 0" if reads else "trap '' TERM; sleep 60"])
    started.cancel(timeout=0.3)
    assert started.proc.returncode is not None and not procfs.alive(started.proc.pid)
