"""The fence confirmation file (hapack.confirm): bound to this boot, this node and the peer,
one promotion per verified power-off, never revived by a clock step, never forged.

Property-style: many forged, stale, foreign, partial and linked files, and seeded random
sequences of writes, promotions, clock steps and reboots with the invariants checked after
every step. Its writers (hamon, external/bmc) are checked here too: an empty path, an
unverified power action.
"""

import os
import random
import stat
import time

import pytest

from test_fence_glue import bmc  # noqa: F401  (the fake BMC fixture)

ME, PEER = "node2", "node1"


@pytest.fixture
def confirm(monkeypatch):
    """hapack.confirm on a boot-time clock and boot id the test controls."""
    from hapack import confirm
    clock = {"t": 1000.0, "boot": "11111111-2222-3333-4444-555555555555"}
    monkeypatch.setattr(confirm, "now", lambda: clock["t"])
    monkeypatch.setattr(confirm, "boot_id", lambda: clock["boot"])
    confirm.clock = clock
    return confirm


def genuine(confirm, path, peer=PEER, node=ME):
    confirm.write(str(path), peer, node, "fence_bmc off")
    return path.read_text()


def test_a_written_confirmation_reads_back_for_this_node_only(confirm, tmp_path):
    path = tmp_path / "run" / "fence-confirmed"
    genuine(confirm, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found, note = confirm.read(str(path), ME)
    assert (found.peer, found.node, note) == (PEER, ME, "")
    assert confirm.read(str(path), ME, peer=PEER)[0] is not None
    assert "not the peer node3" in confirm.read(str(path), ME, peer="node3")[1]
    assert "not this node" in confirm.read(str(path), "node3")[1]
    assert "names this node" in confirm.read(str(path), PEER)[1]


def test_names_that_would_inject_lines_are_refused(confirm, tmp_path):
    for peer in ("", "node1\nnode=node2", "a b", "x\x00", "node1\r"):
        with pytest.raises(confirm.ConfirmationError):
            confirm.write(str(tmp_path / "f"), peer, ME, "off")
        assert not (tmp_path / "f").exists()
    with pytest.raises(confirm.ConfirmationError):
        confirm.write(str(tmp_path / "f"), ME, ME, "off")  # its own power-off
    confirm.write(str(tmp_path / "f"), PEER, ME, "off\nboot=forged")
    assert confirm.read(str(tmp_path / "f"), ME)[0].how == "off boot=forged"


def test_an_empty_path_disables_it(confirm):
    assert confirm.write("", PEER, ME, "off") is False
    assert confirm.read("", ME) == (None, "")
    assert confirm.consume("") is False


def _forgeries(text):
    """(name, content) of files that must never count, derived from a genuine text."""
    lines = text.split("\n")
    yield "old format", f"{PEER}\n"
    yield "old format with words", f"{PEER} powered off, confirmed by {ME} (off) at now\n"
    yield "empty", ""
    yield "no final newline", text[:-1]
    for cut in range(len(text) - 1):  # every partial write
        yield f"first {cut} bytes", text[:cut]
    for i in range(1, len(lines) - 1):
        yield f"without line {i}", "\n".join(lines[:i] + lines[i + 1:])
        yield f"line {i} twice", "\n".join(lines[:i + 1] + lines[i:])
    yield "unknown key", text + "extra=1\n"
    yield "other magic", text.replace("confirmation 1", "confirmation 2")
    yield "other boot", text.replace("boot=1111", "boot=9999")
    yield "future", _with(text, "boottime", "1000.5")
    yield "far future", _with(text, "boottime", "99999999")
    yield "stale", _with(text, "boottime", f"{1000 - 300.5 - 1:.6f}")
    for bad in ("nan", "inf", "-inf", "", "1e999", "x"):
        yield f"time {bad!r}", _with(text, "boottime", bad)
    yield "names me", _with(text, "peer", ME)
    yield "for another node", _with(text, "node", "node3")
    yield "no peer", _with(text, "peer", "")
    yield "not utf-8", text.encode() + b"how=\xff\n"
    yield "too large", text + "#" * 5000


def _with(text, key, value):
    return "".join(f"{key}={value}\n" if line.startswith(f"{key}=") else line + "\n"
                   for line in text.split("\n")[:-1])


def test_forged_partial_and_stale_files_never_count(confirm, tmp_path):
    text = genuine(confirm, tmp_path / "model")
    confirm.clock["t"] = 1000.0 + 0.25  # the genuine one would count
    for name, content in _forgeries(text):
        path = tmp_path / "fenced"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        path.chmod(0o600)
        found, note = confirm.read(str(path), ME, peer=PEER)
        assert found is None and note, name
    assert confirm.read(str(tmp_path / "model"), ME)[0] is not None


def test_files_that_are_not_private_regular_files_never_count(confirm, tmp_path):
    good = tmp_path / "good"
    genuine(confirm, good)
    link = tmp_path / "link"
    link.symlink_to(good)
    assert confirm.read(str(link), ME)[0] is None  # never followed
    hard = tmp_path / "sub"
    hard.mkdir()
    assert confirm.read(str(hard), ME)[0] is None  # a directory
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert confirm.read(str(fifo), ME)[0] is None  # and does not block
    for mode in (0o620, 0o602, 0o666):
        copy = tmp_path / f"m{mode:o}"
        copy.write_text(good.read_text())
        copy.chmod(mode)
        assert "writable by group or others" in confirm.read(str(copy), ME)[1]
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.write_text(good.read_text())
        foreign.chmod(0o600)
        os.chown(foreign, 65534, 65534)
        assert "owned by uid 65534" in confirm.read(str(foreign), ME)[1]


def test_writing_replaces_a_planted_link_never_its_target(confirm, tmp_path):
    target = tmp_path / "etc-passwd"
    target.write_text("root:x:0:0\n")
    path = tmp_path / "fenced"
    path.symlink_to(target)
    tmp = tmp_path / f".fenced.{os.getpid()}.tmp"
    tmp.symlink_to(target)
    genuine(confirm, path)
    assert target.read_text() == "root:x:0:0\n"
    assert not path.is_symlink() and confirm.read(str(path), ME)[0] is not None


def test_a_clock_stepped_backwards_never_revives_a_confirmation(confirm, tmp_path, monkeypatch):
    path = tmp_path / "fenced"
    genuine(confirm, path)
    confirm.clock["t"] += confirm.MAX_AGE + 1
    assert "old" in confirm.read(str(path), ME)[1]
    # the wall clock stepped back by an hour, the file's mtime put back to "now"
    wall = time.time()
    monkeypatch.setattr(time, "time", lambda: wall - 3600)
    os.utime(path, (wall - 3600, wall - 3600))
    assert confirm.read(str(path), ME)[0] is None
    # a boot-time clock that seemingly went backwards: a confirmation from the future
    genuine(confirm, path)
    confirm.clock["t"] -= 10
    assert "future" in confirm.read(str(path), ME)[1]


def test_a_confirmation_from_before_a_reboot_never_counts(confirm, tmp_path):
    path = tmp_path / "fenced"
    genuine(confirm, path)
    confirm.clock.update(boot="99999999-0000-0000-0000-000000000000", t=5.0)
    assert "before this node's last boot" in confirm.read(str(path), ME)[1]
    confirm.clock["boot"] = ""  # boot id unreadable: nothing counts, nothing is written
    assert confirm.read(str(path), ME)[0] is None
    with pytest.raises(confirm.ConfirmationError):
        confirm.write(str(path), PEER, ME, "off")


def test_consume_that_cannot_remove_refuses(confirm, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "x").write_text("")
    with pytest.raises(confirm.ConfirmationError):
        confirm.consume(str(folder))  # a directory is never removed as a confirmation


@pytest.mark.parametrize("seed", range(40))
def test_random_sequences_one_power_off_one_promotion(confirm, tmp_path, seed):
    """Writes, promotions (any basis), clock steps, reboots and forgeries in random order.

    Invariants after every step: a promotion through the fence basis needs a genuine write
    in this boot no longer than MAX_AGE ago on the boot clock, and not used by any promotion
    since; after a promotion, nothing is accepted until the next write.
    """
    rng = random.Random(seed)
    path = str(tmp_path / "fenced")
    last_write, used = None, True  # (boot, t) of the last genuine write; used since?
    for _ in range(60):
        step = rng.choice(["write", "write-self", "promote", "promote-other", "tick", "jump",
                           "reboot", "forge", "wall-back"])
        c = confirm.clock
        if step == "write":
            confirm.write(path, PEER, ME, "fence_bmc off")
            last_write, used = (c["boot"], c["t"]), False
        elif step == "write-self":
            with pytest.raises(confirm.ConfirmationError):
                confirm.write(path, ME, ME, "off")
        elif step == "promote":  # the gate: read, then consume whatever the basis
            found, _ = confirm.read(path, ME, peer=PEER)
            fresh = (last_write is not None and not used and last_write[0] == c["boot"]
                     and 0 <= c["t"] - last_write[1] <= confirm.MAX_AGE)
            assert (found is not None) == fresh, (seed, step, c, last_write, used)
            if found is not None:
                confirm.consume(path)
                used = True
        elif step == "promote-other":  # allowed by the disk or Pacemaker: still consumed
            confirm.consume(path)
            used = True
        elif step == "tick":
            c["t"] += rng.choice([0.0, 1.0, 59.0, 150.0, 299.0])
        elif step == "jump":
            c["t"] += confirm.MAX_AGE + rng.random() * 1000
        elif step == "reboot":
            c.update(boot=f"{rng.getrandbits(64):016x}", t=rng.random() * 100)
        elif step == "forge" and not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(rng.choice([f"{PEER}\n", f"{confirm.MAGIC}\npeer={PEER}\n"]))
        elif step == "wall-back":
            if os.path.exists(path):
                os.utime(path, (0, time.time() + rng.choice([-3600, 3600])))
        found, _ = confirm.read(path, ME)
        if found is not None:  # anything accepted is the genuine, unused, fresh write
            assert not used and last_write[0] == c["boot"]
            assert 0 <= c["t"] - last_write[1] <= confirm.MAX_AGE


# -- the writers ---------------------------------------------------------------------------

def test_hamon_with_an_empty_confirmation_path_takes_over_without_crashing(tmp_path):
    from test_hamon_daemon import Pair
    from hapack.hamon.states import State
    pair = Pair(str(tmp_path))
    pair.run(3)
    pair["node2"].actor.confirmation_file = ""
    pair.power_off("node1")
    pair.run(3)
    assert pair.state("node2") is State.PRIMARY  # the power-off was confirmed by status
    assert not [p for p in os.listdir(tmp_path) if p.startswith("fence-confirmed-node2")]


def test_hamon_with_an_unwritable_confirmation_path_logs_and_goes_on(tmp_path):
    from test_hamon_daemon import Pair
    from hapack.hamon.states import State
    pair = Pair(str(tmp_path))
    pair.run(3)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    pair["node2"].actor.confirmation_file = str(blocker / "fence-confirmed")
    pair.power_off("node1")
    pair.run(3)
    assert pair.state("node2") is State.PRIMARY
    assert "fence confirmation was not recorded" in pair.log("node2")


def _glue_env(tmp_path, confirmed, **extra):
    return {"hostname": PEER, "ip": "192.0.2.1", "username": "admin", "password": "s3cretpw",
            "fence_confirmed_file": str(confirmed), **extra}


def test_external_bmc_never_confirms_a_power_cycle(bmc, tmp_path):
    from test_glue_heartbeat import op
    confirmed = tmp_path / "fence-confirmed"
    rc, _ = op(_glue_env(tmp_path, confirmed, method="cycle"), "reset", PEER)
    assert rc == 0 and not confirmed.exists()  # accepted, but nothing saw the power off
    rc, _ = op(_glue_env(tmp_path, confirmed), "on", PEER)
    assert rc == 0 and not confirmed.exists()
    rc, _ = op(_glue_env(tmp_path, confirmed), "reset", PEER)  # onoff: verified off
    assert rc == 0 and confirmed.exists()
