"""The ledger's counters (``job_counts``, ``tallies``) equal the counts recomputed from ``jobs`` and
``history``, whatever the moves; an older ledger is counted once; pages are stable and bounded."""

from __future__ import annotations

import random
import sqlite3

import pytest

from astrowatch.core.errors import InputError
from astrowatch.core.jobs import TRANSITIONS, JobState
from astrowatch.storage import counters, paging
from astrowatch.storage.ledger import Ledger
from astrowatch.storage.ledger_readonly import ReadOnlyLedger


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.sqlite3")


def _recount(ledger: Ledger) -> dict[tuple[str, str], int]:
    rows = ledger._conn().execute("SELECT state, kind, COUNT(*) FROM jobs GROUP BY state, kind")
    return {(r[0], r[1]): r[2] for r in rows}


def _walk(ledger: Ledger, n: int, seed: int = 7) -> None:
    """``n`` jobs of both kinds and users, each moved at random along allowed transitions."""
    rng = random.Random(seed)
    for i in range(n):
        job = ledger.create_job(kind=rng.choice(["astro", "enhance"]), user=f"u{i % 5}",
                                source=f"Utilisateurs/u{i % 5}/{i}.jpg", source_sha256=f"s{i}")
        state = JobState.QUEUED
        for _ in range(rng.randint(0, 6)):
            nxt = sorted(TRANSITIONS[state])
            if not nxt:
                break
            to = rng.choice(nxt)
            fields = {"result": {"backend": rng.choice(["fake", "wheel"])}} if to == JobState.PUBLISHING else {}
            note = rng.choice(["InputError", "BackendError", None]) if to == JobState.FAILING else None
            assert ledger.transition(job.id, state, to, note=note, **fields)
            state = to


def test_counters_equal_the_recomputed_counts_after_random_moves(ledger) -> None:
    _walk(ledger, 300)
    assert ledger.job_counts() == _recount(ledger)
    assert sum(ledger.counts().values()) == 300
    recomputed_failures = dict(ledger._conn().execute(
        "SELECT h.note, COUNT(*) FROM history h JOIN jobs j ON j.id = h.job_id WHERE h.to_state = 'failing'"
        " AND j.state IN ('failing', 'failed') GROUP BY h.note").fetchall())
    assert ledger.failure_counts() == recomputed_failures
    published = ledger._conn().execute("SELECT COUNT(*) FROM history WHERE to_state = 'publishing'").fetchone()[0]
    durations = ledger.durations()
    assert sum(d.count for d in durations.values()) == published > 0
    assert set(durations) <= {"fake", "wheel"}
    assert all(sum(d.buckets) == d.count and d.max >= 0 for d in durations.values())
    last = ledger._conn().execute("SELECT MAX(at) FROM history WHERE to_state = 'inbox'").fetchone()[0]
    assert ledger.last_inbox_at() == last


def test_a_lost_compare_and_set_changes_no_counter(ledger) -> None:
    job = ledger.create_job(kind="astro", user="gaby", source="Utilisateurs/gaby/t.json", source_sha256="s")
    assert ledger.transition(job.id, "queued", "running")
    before = ledger.job_counts()
    assert not ledger.transition(job.id, "queued", "running")
    assert ledger.job_counts() == before == {("running", "astro"): 1}


def test_a_ledger_from_before_the_counters_is_counted_once_at_open(tmp_path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _walk(Ledger(path), 120, seed=3)
    expected = Ledger(path).job_counts()
    conn = sqlite3.connect(path)  # as an older release left it: no counters, no mark
    conn.executescript("DROP TABLE job_counts; DROP TABLE tallies; DELETE FROM meta WHERE key = 'counters';")
    conn.close()
    old = ReadOnlyLedger(path)  # a reviewer's read before the daemon's next start: aggregates instead
    assert not old.counted() and old.job_counts() == expected
    reopened = Ledger(path)  # the daemon's start: backfilled in one transaction
    assert reopened.counted() and reopened.job_counts() == expected == _recount(reopened)
    assert not counters.backfill(reopened._conn())  # once


def test_pages_are_stable_bounded_and_filtered(ledger) -> None:
    ids = []
    for i in range(25):
        job = ledger.create_job(kind="astro" if i % 2 else "enhance", user=f"u{i % 3}",
                                source=f"Utilisateurs/u{i % 3}/{i}.jpg", source_sha256=f"s{i}")
        ids.append(job.id)
    seen, after = [], None
    while True:
        page, after = ledger.page("queued", limit=10, after=after)
        assert len(page) <= 10
        seen += [j.id for j in page]
        if after is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 25
    mine, last = ledger.page("queued", user="u1", kind="astro", limit=100)
    assert last is None and mine and all(j.user == "u1" and j.kind == "astro" for j in mine)
    exact, nxt = ledger.page("queued", limit=25)
    assert len(exact) == 25 and nxt is None  # no empty last page


def test_the_inbox_pages_are_served_by_an_index(ledger) -> None:
    plan = " ".join(r[3] for r in ledger._conn().execute(
        "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE state = ? AND user = ? AND (created_at, id) > (?, ?)"
        " ORDER BY created_at, id LIMIT 101", ("inbox", "gaby", 0.0, "")))
    assert "jobs_state_user" in plan and "TEMP B-TREE" not in plan


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    key = (1712345678.123456, "0a1b2c3d4e5f")
    assert paging.decode(paging.encode(key)) == key
    for bad in ("", "nope", "W10", paging.encode((1.0, "x" * 100)), "eyJhIjoxfQ"):
        with pytest.raises(InputError):
            paging.decode(bad)
    with pytest.raises(InputError):
        paging.check_limit(1001)
