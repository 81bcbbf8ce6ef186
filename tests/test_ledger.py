"""The ledger: one table of transitions, enforced by compare-and-set in a real SQLite file."""

from __future__ import annotations

import threading

import pytest

from astrowatch.errors import IllegalTransition, NotFound
from astrowatch.ledger import INTENTS, TERMINAL, TRANSITIONS, Ledger


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.sqlite3")


def _job(ledger, source="Utilisateurs/gaby/a.jpg", sha="s1"):
    return ledger.create_job(kind="enhance", user="gaby", source=source, source_sha256=sha)


def test_every_state_in_the_table_is_reachable_from_queued():
    seen, todo = {"queued"}, ["queued"]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(TRANSITIONS)
    assert TERMINAL == {"failed", "delivered", "filed", "rejected", "redone", "superseded"}
    assert INTENTS <= set(TRANSITIONS)


def test_transition_is_compare_and_set(ledger):
    job = _job(ledger)
    assert ledger.transition(job.id, "queued", "running")
    assert not ledger.transition(job.id, "queued", "running")  # lost the race: already running
    assert ledger.get(job.id).state == "running"
    assert [h["to_state"] for h in ledger.history(job.id)] == ["queued", "running"]


def test_illegal_transitions_are_refused(ledger):
    job = _job(ledger)
    with pytest.raises(IllegalTransition):
        ledger.transition(job.id, "queued", "inbox")
    with pytest.raises(IllegalTransition):
        ledger.transition(job.id, "failed", "queued")
    assert ledger.get(job.id).state == "queued"


def test_claim_counts_attempts_and_respects_backoff(ledger):
    job = _job(ledger)
    claimed = ledger.claim_next()
    assert claimed.id == job.id and claimed.attempts == 1 and claimed.state == "running"
    ledger.transition(job.id, "running", "queued", not_before=10**12)
    assert ledger.claim_next() is None
    assert ledger.claim_next(now=10**12 + 1).attempts == 2


def test_concurrent_claims_take_each_job_once(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    for i in range(60):
        _job(ledger, source=f"Utilisateurs/gaby/{i}.jpg", sha=str(i))
    taken: list[str] = []
    lock = threading.Lock()

    def worker():
        own = Ledger(path)
        while (job := own.claim_next()) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 60 == len(set(taken))


def test_json_fields_round_trip_and_find_by_prefix(ledger):
    job = ledger.create_job(kind="astro", user="gaby", source="Utilisateurs/gaby/theme_gaby.json",
                            source_sha256="x", params={"steps": 40, "style": "cosmique"})
    ledger.transition(job.id, "queued", "running")
    ledger.transition(job.id, "running", "publishing", result={"image": "a.png", "params": {"seed": 1}})
    again = ledger.find(job.id[:5])
    assert again.params == {"steps": 40, "style": "cosmique"} and again.result["params"] == {"seed": 1}
    with pytest.raises(NotFound):
        ledger.find("zzzz")


def test_seen_table(ledger):
    assert ledger.seen_get("a") is None
    ledger.seen_put("a", size=1, mtime_ns=2, sha256="h", job_id=None)
    ledger.seen_put("a", size=3, mtime_ns=4, sha256="h2", job_id="j")
    row = ledger.seen_get("a")
    assert (row["size"], row["mtime_ns"], row["job_id"]) == (3, 4, "j")


def test_a_job_has_one_child_however_many_ask_at_once(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    parent = _job(Ledger(path), sha="s9")
    barrier, made = threading.Barrier(4), []

    def ask():
        own = Ledger(path)  # as the daemon and a CLI would: separate connections
        barrier.wait()
        made.append(own.create_child(parent, params={"steps": 9}))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in made) == 1 and len({child.id for child, _ in made}) == 1
    child = Ledger(path).child_of(parent.id)
    assert (child.parent_id, child.state, child.params, child.source_sha256) == (parent.id, "queued", {"steps": 9}, "s9")
    assert Ledger(path).child_of(child.id) is None
