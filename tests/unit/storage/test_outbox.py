"""The outbox: an event is committed with the state change that caused it, or not at all."""

from __future__ import annotations

import json
import time

import pytest

from astrowatch.core.errors import IllegalTransition
from astrowatch.core.jobs import JobKind, JobState
from astrowatch.storage.ledger import Ledger
from astrowatch.storage.outbox import Delivery

S = JobState


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.sqlite3")


def _job(ledger: Ledger, user: str = "gaby", source: str = "Utilisateurs/gaby/photo.jpg"):
    return ledger.create_job(kind=JobKind.ENHANCE, user=user, source=source, source_sha256="ab" * 32)


def _types(ledger: Ledger) -> list[str]:
    return [e.type for e in ledger.events_after(0)]


def test_events_follow_the_state_machine(ledger) -> None:
    job = _job(ledger)
    assert ledger.transition(job.id, S.QUEUED, S.RUNNING)
    assert ledger.transition(job.id, S.RUNNING, S.QUEUED)  # a retry: no second job.queued
    assert ledger.transition(job.id, S.QUEUED, S.RUNNING)
    assert ledger.transition(job.id, S.RUNNING, S.PUBLISHING)  # an intent: no event
    assert ledger.transition(job.id, S.PUBLISHING, S.INBOX)
    assert ledger.transition(job.id, S.INBOX, S.DECIDING)
    assert ledger.transition(job.id, S.DECIDING, S.FILED)
    assert _types(ledger) == ["job.queued", "job.running", "job.running", "job.inbox", "job.filed"]
    events = ledger.events_after(0)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.msg_id for e in events}) == len(events)
    inbox = json.loads(events[3].payload)
    assert inbox["type"] == "job.inbox" and inbox["timestamp"].endswith("Z")
    assert inbox["data"] == {**inbox["data"], "job_id": job.id, "user": "gaby", "kind": "enhance", "state": "inbox",
                             "source": "photo.jpg", "image_url": f"/api/jobs/{job.id}/image.png"}


def test_no_event_without_the_state_change(ledger) -> None:
    job = _job(ledger)
    before = _types(ledger)
    assert not ledger.transition(job.id, S.RUNNING, S.PUBLISHING)  # compare-and-set lost: nothing
    with pytest.raises(IllegalTransition):
        ledger.transition(job.id, S.QUEUED, S.INBOX)
    assert _types(ledger) == before == ["job.queued"]


def test_the_event_rolls_back_with_the_transition(ledger) -> None:
    """Same transaction: a failure after the event insert leaves neither the state nor the event."""
    job = _job(ledger)
    ledger._conn().execute("CREATE TRIGGER boom AFTER INSERT ON events BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(Exception, match="boom"):
        ledger.transition(job.id, S.QUEUED, S.RUNNING)
    assert ledger.get(job.id).state == S.QUEUED
    assert _types(ledger) == ["job.queued"]


def test_terminal_states_each_have_a_type(ledger) -> None:
    a, b = _job(ledger, source="Utilisateurs/gaby/a.jpg"), _job(ledger, source="Utilisateurs/gaby/b.jpg")
    ledger.transition(a.id, S.QUEUED, S.SUPERSEDED)
    ledger.transition(b.id, S.QUEUED, S.RUNNING, error=None)
    ledger.transition(b.id, S.RUNNING, S.FAILING, error="bad photo")
    ledger.transition(b.id, S.FAILING, S.FAILED)
    types = _types(ledger)
    assert "job.superseded" in types and types[-1] == "job.failed"
    assert json.loads(ledger.events_after(0)[-1].payload)["data"]["error"] == "bad photo"


def test_user_filter_and_skipped_events(ledger) -> None:
    _job(ledger, user="gaby")
    _job(ledger, user="lina", source="Utilisateurs/lina/x.jpg")
    ledger.record_event("input.skipped", user="lina", data={"user": "lina", "source": "x.jpg", "reason": "unchanged"})
    assert [e.type for e in ledger.events_after(0, user="lina")] == ["job.queued", "input.skipped"]
    assert ledger.last_event_seq() == 3


def test_deliveries_schedule_retry_and_prune(ledger) -> None:
    url = "http://127.0.0.1:9/hook"
    _job(ledger)  # before the endpoint existed: not sent to it
    assert ledger.schedule_deliveries(url, None, time.time()) == 0
    job = _job(ledger, source="Utilisateurs/gaby/b.jpg")
    ledger.transition(job.id, S.QUEUED, S.RUNNING)
    assert ledger.schedule_deliveries(url, frozenset({"job.running"}), time.time()) == 1
    assert ledger.schedule_deliveries(url, None, time.time()) == 0  # the cursor moved on
    (event, attempts), = ledger.due_deliveries(url, time.time())
    assert event.type == "job.running" and attempts == 0
    ledger.delivery_done(event.seq, url, attempts=1, state=Delivery.PENDING, next_at=time.time() + 60, error="HTTP 500")
    assert ledger.due_deliveries(url, time.time()) == []
    assert ledger.due_deliveries(url, time.time() + 61)[0][1] == 1  # the backoff is stored, not in memory
    ledger.delivery_done(event.seq, url, attempts=8, state=Delivery.FAILED, next_at=time.time(), error="HTTP 500")
    assert ledger.delivery_counts() == {(url, "failed"): 1}
    assert ledger.retry_delivery(event.msg_id) == 1
    assert ledger.due_deliveries(url, time.time())[0][0].msg_id == event.msg_id  # same webhook-id
    # pending messages and their events survive the retention; finished ones go
    assert ledger.prune_outbox(time.time() + 1) == 2  # the two job.queued; job.running is still pending
    ledger.delivery_done(event.seq, url, attempts=1, state=Delivery.DELIVERED, next_at=time.time(), error=None)
    ledger.prune_outbox(time.time() + 1)
    assert ledger.events_after(0) == [] and ledger.pruned_through() == event.seq
