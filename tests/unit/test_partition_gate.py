"""partition's promotion gate: named situations, the notification record, the fence confirmation."""

import time

import pytest

from hapack.ocf import _gate
from hapack.ocf._gate import Evidence, decide
from hapack.ocf.runner import Notify

ME, PEER = "node2", "node1"


def notify(promote=(ME,), promoted=(), demote=()):
    return {"promote": list(promote), "promoted": list(promoted), "demote": list(demote)}


# -- named situations ------------------------------------------------------------

def peer_promoted_says_pacemaker(backend="shared"):
    return Evidence(ME, backend, notify=notify(promoted=[PEER]), released=True,
                    stonith_enabled=True, fenced=PEER, device="/dev/sdx")


def switchover_after_clean_demote():
    return Evidence(ME, "shared", notify=notify(promoted=[PEER], demote=[PEER]), released=True,
                    device="/dev/sdx")


def peer_crashed_pacemaker_fenced_it():
    return Evidence(ME, "shared", notify=notify(), released=False, stonith_enabled=True,
                    device="/dev/sdx")


def peer_crashed_hamon_fenced_it():
    return Evidence(ME, "shared", released=False, fenced=PEER, device="/dev/sdx")


def peer_may_still_write():
    return Evidence(ME, "shared", released=False, device="/dev/sdx")


@pytest.mark.parametrize("situation,allowed,words", [
    (peer_promoted_says_pacemaker(), False, "Pacemaker reports node1 promoted"),
    (peer_promoted_says_pacemaker("drbd"), False, "Pacemaker reports node1 promoted"),
    (switchover_after_clean_demote(), True, "released cleanly"),
    (peer_crashed_pacemaker_fenced_it(), True, "fences a lost node"),
    (peer_crashed_hamon_fenced_it(), True, "node1 was confirmed powered off"),
    (peer_may_still_write(), False, "journal needs recovery"),
])
def test_named_situations(situation, allowed, words):
    ok, why = decide(situation)
    assert ok is allowed and words in why


def test_another_node_being_promoted_too_is_refused():
    ev = Evidence(ME, "shared", notify=notify(promote=[ME, PEER]), released=True)
    assert decide(ev) == (False, "Pacemaker reports node1 promoted or being promoted")


def test_without_fencing_pacemakers_view_is_not_enough():
    ev = Evidence(ME, "shared", notify=notify(), released=False, stonith_enabled=False)
    ok, why = decide(ev)
    assert not ok and "stonith-enabled=false" in why


def test_unknown_stonith_setting_is_not_enough():
    ev = Evidence(ME, "shared", notify=notify(), released=False, stonith_enabled=None)
    ok, why = decide(ev)
    assert not ok and "stonith-enabled could not be read" in why


def test_a_notification_for_another_promotion_is_not_enough():
    ev = Evidence(ME, "shared", notify=notify(promote=[]), released=False, stonith_enabled=True)
    assert decide(ev)[0] is False


@pytest.mark.parametrize("peer_role,allowed", [("Primary", False), ("Secondary", True),
                                               ("Unknown", False)])
def test_drbd_peer_role_decides_when_connected(peer_role, allowed):
    ev = Evidence(ME, "drbd", peer_role=peer_role, cstate="Connected")
    assert decide(ev)[0] is allowed


def test_drbd_disconnected_goes_with_fencing_evidence():
    ev = Evidence(ME, "drbd", peer_role="Unknown", cstate="WFConnection", fenced=PEER)
    assert decide(ev) == (True, "node1 was confirmed powered off")
    ev = Evidence(ME, "drbd", peer_role="Primary", cstate="Connected", fenced=PEER)
    assert decide(ev)[0] is False  # a live Primary beats a fence confirmation


def test_non_ext_file_systems_need_fencing_evidence():
    ok, why = decide(Evidence(ME, "shared", released=None, device="/dev/sdx"))
    assert not ok and "cannot show whether another node uses it" in why


def test_the_refusal_says_what_is_missing():
    ev = Evidence(ME, "shared", released=False, fence_note="/run/f is 400s old",
                  device="/dev/sdx")
    why = decide(ev)[1]
    assert "no pre-promote notification naming this node" in why
    assert "no valid fence confirmation (/run/f is 400s old)" in why


# -- the recorded notification ------------------------------------------------------

def pre_promote_env():
    meta = "OCF_RESKEY_CRM_meta_notify_"
    return {meta + "type": "pre", meta + "operation": "promote",
            meta + "promote_resource": "data:1", meta + "promote_uname": ME,
            meta + "master_resource": "data:0", meta + "master_uname": PEER,
            meta + "demote_resource": "data:0", meta + "demote_uname": PEER}


def test_the_notification_is_kept_for_the_promote(tmp_path):
    path = str(tmp_path / "n")
    _gate.record_notification(path, Notify(pre_promote_env()))
    assert _gate.read_notification(path) == notify(promoted=[PEER], demote=[PEER])


def test_a_stale_or_foreign_boot_notification_is_ignored(tmp_path, monkeypatch):
    path = str(tmp_path / "n")
    _gate.record_notification(path, Notify(pre_promote_env()))
    later = time.monotonic() + _gate.NOTIFY_MAX_AGE + 1
    monkeypatch.setattr(_gate.time, "monotonic", lambda: later)
    assert _gate.read_notification(path) is None
    monkeypatch.undo()
    monkeypatch.setattr(_gate, "boot_id", lambda: "another-boot")
    assert _gate.read_notification(path) is None
    assert _gate.read_notification(str(tmp_path / "absent")) is None


# -- the fence confirmation (format: hapack.confirm; properties: test_fence_confirm.py) ----

def test_a_fence_confirmation_counts_once(tmp_path):
    from hapack import confirm
    path = str(tmp_path / "fenced")
    confirm.write(path, PEER, ME, "fence_bmc off")
    assert _gate.read_fence_confirmation(path, ME) == (PEER, "")
    _gate.consume_fence_confirmation(path)
    assert _gate.read_fence_confirmation(path, ME) == (None, "")
    confirm.write(path, PEER, ME, "fence_bmc off")  # a new power-off, a new promotion
    assert _gate.read_fence_confirmation(path, ME) == (PEER, "")


@pytest.mark.parametrize("text,note", [
    (f"{ME}\n", "not a complete hapack fence confirmation"),   # the old format
    ("", "not a complete hapack fence confirmation"),
])
def test_invalid_fence_confirmations(tmp_path, text, note):
    path = tmp_path / "fenced"
    path.write_text(text)
    node, why = _gate.read_fence_confirmation(str(path), ME)
    assert node is None and note in why


def test_no_fence_confirmation_file(tmp_path):
    assert _gate.read_fence_confirmation(str(tmp_path / "none"), ME) == (None, "")
    assert _gate.read_fence_confirmation("", ME) == (None, "")


# -- stonith-enabled, pinned ----------------------------------------------------------

class Ctx:
    def __init__(self):
        from hapack.log import NullLogger
        self.log = NullLogger()

    def run(self, argv, timeout):
        from hapack.command import run
        return run(argv, timeout=timeout)


@pytest.mark.parametrize("rc,out,value", [(0, "true\n", True), (0, "false\n", False),
                                          (105, "", True), (102, "", None)])
def test_stonith_enabled(fp, rc, out, value):
    fp.register(_gate.STONITH_QUERY, stdout=out, returncode=rc)
    assert _gate.stonith_enabled(Ctx()) is value


def test_the_decision_names_its_basis():
    assert decide(peer_crashed_hamon_fenced_it()).basis == "fence"
    assert decide(peer_crashed_pacemaker_fenced_it()).basis == "pacemaker"
    assert decide(switchover_after_clean_demote()).basis == "disk"
    assert decide(peer_may_still_write()).basis is None
