"""A lab's owner killed with SIGTERM tears its lab down, as on Ctrl-C.

``hapack.lab.core.interrupt_on_sigterm`` (installed by ``Lab.up``) turns SIGTERM into
KeyboardInterrupt so that the owner's ``finally`` clauses run (``lab.down()``); a process
that handles SIGTERM itself, and other threads, are left alone. Real processes, real
signals."""

import signal
import subprocess
import sys
import textwrap

import pytest

OWNER = textwrap.dedent("""
    import os, signal, sys, threading, time
    from hapack.lab.core import interrupt_on_sigterm
    mode = sys.argv[1]
    if mode == "own handler":
        signal.signal(signal.SIGTERM, lambda *a: (print("own handler"), sys.exit(3)))
    if mode == "thread":
        out = []
        t = threading.Thread(target=lambda: out.append(interrupt_on_sigterm()))
        t.start(); t.join()
        print("thread:", out[0])
        restore = None
    else:
        restore = interrupt_on_sigterm()
    if mode == "restored":
        restore()
    try:
        print("ready", flush=True)
        time.sleep(30)
    except KeyboardInterrupt as exc:
        print("finally: lab down after", exc)
        sys.exit(0)
""")


def owner(mode):
    proc = subprocess.Popen([sys.executable, "-c", OWNER, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    while True:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("ready") or not line:
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    return proc.returncode, "".join(lines) + out


def test_sigterm_runs_the_owner_s_finally_clauses():
    rc, out = owner("default")
    assert rc == 0 and "finally: lab down after signal 15" in out


@pytest.mark.parametrize("mode, rc, text", [("own handler", 3, "own handler"),
                                            ("restored", -signal.SIGTERM, ""),
                                            ("thread", -signal.SIGTERM, "thread: None")])
def test_a_handler_of_its_own_a_restored_default_and_other_threads_are_left_alone(mode, rc,
                                                                                  text):
    got_rc, out = owner(mode)
    assert got_rc == rc and text in out and "finally" not in out
