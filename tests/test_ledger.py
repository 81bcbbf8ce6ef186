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


# -- a full disk: the commit fails, nothing is half applied -------------------------------------
def test_a_commit_on_a_full_disk_raises_disk_full_and_applies_nothing():
    from diskfull import fill, small_tmpfs

    from astrowatch.errors import DiskFull

    with small_tmpfs(2) as disk:
        ledger = Ledger(disk / "ledger.sqlite3")
        jobs = [_job(ledger, source=f"Utilisateurs/gaby/{i}.jpg", sha=f"s{i}") for i in range(40)]
        fill(disk / "ballast")
        failed = None
        for job in jobs:  # big rows: the WAL must grow, and cannot
            try:
                ledger.transition(job.id, "queued", "running", params={"big": "x" * 50_000})
            except DiskFull as exc:
                failed = job
                assert "disk is full" in str(exc)
                break
        assert failed is not None, "the disk never filled up"
        # the failed transition left nothing behind: state, attempts, params and history as before
        after = ledger.get(failed.id)
        assert (after.state, after.params, after.attempts) == ("queued", {}, 0)
        assert [h["to_state"] for h in ledger.history(failed.id)] == ["queued"]
        with pytest.raises(DiskFull):
            ledger.create_job(kind="enhance", user="gaby", source="Utilisateurs/gaby/new.jpg",
                              source_sha256="n" * 64, params={"big": "y" * 50_000})
        assert ledger.jobs_for_source("gaby", "Utilisateurs/gaby/new.jpg") == []
        # space comes back: the same connection carries on, the same transition now succeeds
        (disk / "ballast").unlink()
        assert ledger.transition(failed.id, "queued", "running", params={"big": "x" * 50_000})
        assert ledger.get(failed.id).state == "running"
        assert [h["to_state"] for h in ledger.history(failed.id)] == ["queued", "running"]
        ledger.close()


def test_an_error_inside_a_transaction_rolls_all_of_it_back(ledger):
    import sqlite3

    job = _job(ledger)
    with pytest.raises(sqlite3.IntegrityError):
        with ledger._tx() as conn:
            conn.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (job.id,))
            conn.execute("INSERT INTO jobs(id) VALUES (NULL)")  # NOT NULL constraint: a real SQLite error
    assert ledger.get(job.id).state == "queued"
    assert not ledger._conn().in_transaction
    assert ledger.transition(job.id, "queued", "running")  # the connection is usable


def test_sqlite_full_and_enospc_map_to_disk_full():
    import errno
    import sqlite3

    from astrowatch.errors import DiskFull, as_disk_full

    assert isinstance(as_disk_full(OSError(errno.ENOSPC, "No space left on device", "x.png")), DiskFull)
    wrapped = RuntimeError("cannot rollback - no transaction is active")
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13
    wrapped.__context__ = full
    assert isinstance(as_disk_full(wrapped), DiskFull)  # the real cause behind a failed ROLLBACK
    assert as_disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert DiskFull("x").retryable and DiskFull("x").exit_code == 73
