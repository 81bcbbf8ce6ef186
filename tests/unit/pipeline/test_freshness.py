"""Newest theme wins: which theme results are stale, from a real ledger."""

from __future__ import annotations

import pytest

from astrowatch.pipeline.freshness import newer_result
from astrowatch.storage.ledger import Ledger

SOURCE = "Utilisateurs/gaby/theme_gaby.json"


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.sqlite3")


def _in_inbox(ledger, sha, *, kind="astro", parent=None):
    job = (ledger.create_child(parent, params={})[0] if parent else
           ledger.create_job(kind=kind, user="gaby", source=SOURCE, source_sha256=sha))
    for frm, to in (("queued", "running"), ("running", "publishing"), ("publishing", "inbox")):
        assert ledger.transition(job.id, frm, to)
    return ledger.get(job.id)


def _decide(ledger, job, decision, final=None):
    assert ledger.transition(job.id, "inbox", "deciding", decision=decision)
    if final:
        assert ledger.transition(job.id, "deciding", final)
    return ledger.get(job.id)


def test_a_result_is_stale_while_a_newer_chart_is_waiting_delivered_or_being_approved(ledger):
    old = _in_inbox(ledger, "v1")
    assert newer_result(ledger, old) is None
    new = _in_inbox(ledger, "v2")
    assert newer_result(ledger, old).id == new.id and newer_result(ledger, new) is None
    _decide(ledger, new, "approve")
    assert newer_result(ledger, old).id == new.id  # being approved
    ledger.transition(new.id, "deciding", "delivered")
    assert newer_result(ledger, ledger.get(old.id)).id == new.id


def test_a_rejected_newer_chart_does_not_make_the_older_one_stale(ledger):
    old = _in_inbox(ledger, "v1")
    new = _in_inbox(ledger, "v2")
    _decide(ledger, new, "reject")
    assert newer_result(ledger, old) is None
    ledger.transition(new.id, "deciding", "rejected")
    assert newer_result(ledger, old) is None


def test_content_taken_again_is_new_again_and_a_redo_keeps_its_root_age(ledger):
    first = _in_inbox(ledger, "v1")
    second = _in_inbox(ledger, "v2")
    redo_of_first = _in_inbox(ledger, "v1", parent=_decide(ledger, first, "redo", "redone"))
    assert newer_result(ledger, redo_of_first).id == second.id  # drawn after, from the older chart
    back = _in_inbox(ledger, "v1")  # the upstream app went back to the first content
    assert newer_result(ledger, redo_of_first) is None and newer_result(ledger, back) is None
    assert newer_result(ledger, second).id == back.id


def test_photos_are_never_stale(ledger):
    photo = _in_inbox(ledger, "p1", kind="enhance")
    _in_inbox(ledger, "p2", kind="enhance")
    assert newer_result(ledger, photo) is None
