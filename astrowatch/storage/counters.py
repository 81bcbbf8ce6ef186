"""Counters kept in the ledger, updated **in the same transaction** as the state change they count.

``/metrics``, ``astrowatch status`` and the daemon's status line read these few rows instead of
aggregating ``jobs`` and ``history`` (which grow with every job ever run): the cost of a read stays
flat as history grows, and every process (the API is a separate one) sees the same numbers.

- ``job_counts(state, kind, n)``: jobs per state and kind.  :meth:`Ledger._insert` adds 1 to
  ``queued``; :meth:`Ledger.transition` (the one place states change) moves 1 from ``frm`` to ``to``.
- ``tallies(key, n)``: ``failures:<cause>`` (each move to ``failing``, by its history note: the
  exception class or ``input``; ``failing`` is entered once per job), ``last:inbox`` (when a result
  last reached the inbox), and per backend the claim-to-publish seconds of every result:
  ``seconds:<backend>:<bucket>`` (cumulative-ready counts per bucket of :data:`BUCKETS`),
  ``seconds_count:``, ``seconds_sum:`` and ``seconds_max:<backend>``.

No row carries a user name or a job id, so erasing a person (:mod:`astrowatch.storage.erase`) leaves
them as they are: they count, nothing more.  A ledger made before these tables is counted once, at
the daemon's next start (:func:`backfill`), inside one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from astrowatch.core.jobs import JobState

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_counts (
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (state, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tallies (key TEXT PRIMARY KEY, n REAL NOT NULL) WITHOUT ROWID;
"""
COUNTED_KEY = "counters"  # in ``meta``: present once job_counts and tallies are complete
# seconds per image: CPU wheel/fake (sub-second) up to SDXL on CPU or a slow remote API (minutes)
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
FAILURES = "failures:"
LAST_INBOX = "last:inbox"
SECONDS = "seconds:"
SECONDS_COUNT = "seconds_count:"
SECONDS_SUM = "seconds_sum:"
SECONDS_MAX = "seconds_max:"
_KEY_MAX = 80  # a history note is a class name; never let a long one make a long key


def _add(conn: sqlite3.Connection, key: str, n: float) -> None:
    conn.execute("INSERT INTO tallies(key, n) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET n = n + excluded.n",
                 (key, n))


def _set_max(conn: sqlite3.Connection, key: str, value: float) -> None:
    conn.execute("INSERT INTO tallies(key, n) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET n = max(n, excluded.n)",
                 (key, value))


def _move(conn: sqlite3.Connection, kind: str, state: str, n: int) -> None:
    conn.execute("INSERT INTO job_counts(state, kind, n) VALUES (?, ?, ?)"
                 " ON CONFLICT(state, kind) DO UPDATE SET n = n + excluded.n", (state, kind, n))


def created(conn: sqlite3.Connection, kind: str) -> None:
    """Inside the caller's transaction: one more queued job of ``kind``."""
    _move(conn, kind, JobState.QUEUED, 1)


def moved(conn: sqlite3.Connection, job_id: str, kind: str, frm: str, to: str, at: float, *,
          note: str | None, backend: str | None) -> None:
    """Inside the caller's transaction (after the job's row changed, before its history row):
    the job moved ``frm`` -> ``to`` at ``at``."""
    _move(conn, kind, frm, -1)
    _move(conn, kind, to, 1)
    if to == JobState.FAILING:
        _add(conn, FAILURES + (note or "")[:_KEY_MAX], 1)
    elif to == JobState.INBOX:
        _set_max(conn, LAST_INBOX, at)
    elif frm == JobState.RUNNING and to == JobState.PUBLISHING:
        row = conn.execute("SELECT MAX(at) FROM history WHERE job_id = ? AND to_state = ?",
                           (job_id, JobState.RUNNING)).fetchone()
        if row is not None and row[0] is not None:
            observe(conn, backend or "?", at - row[0])


def observe(conn: sqlite3.Connection, backend: str, seconds: float) -> None:
    """One result's claim-to-publish ``seconds`` in ``backend``'s histogram."""
    backend = backend[:_KEY_MAX]
    for i, bound in enumerate(BUCKETS):
        if seconds <= bound:
            _add(conn, f"{SECONDS}{backend}:{i}", 1)
            break
    _add(conn, SECONDS_COUNT + backend, 1)
    _add(conn, SECONDS_SUM + backend, seconds)
    _set_max(conn, SECONDS_MAX + backend, seconds)


def backfill(conn: sqlite3.Connection) -> bool:
    """Inside the caller's ``BEGIN IMMEDIATE``: count a ledger made before the counters (once).
    True when it counted."""
    if conn.execute("SELECT 1 FROM meta WHERE key = ?", (COUNTED_KEY,)).fetchone() is not None:
        return False
    conn.execute("DELETE FROM job_counts")
    conn.execute("DELETE FROM tallies")
    conn.execute("INSERT INTO job_counts(state, kind, n) SELECT state, kind, COUNT(*) FROM jobs GROUP BY state, kind")
    for cause, n in conn.execute(
            "SELECT h.note, COUNT(*) FROM history h JOIN jobs j ON j.id = h.job_id"
            " WHERE h.to_state = ? AND j.state IN (?, ?) GROUP BY h.note",
            (JobState.FAILING, JobState.FAILING, JobState.FAILED)).fetchall():
        _add(conn, FAILURES + (cause or "")[:_KEY_MAX], n)
    last = conn.execute("SELECT MAX(at) FROM history WHERE to_state = ?", (JobState.INBOX,)).fetchone()[0]
    if last is not None:
        _set_max(conn, LAST_INBOX, last)
    rows = conn.execute(
        "SELECT json_extract(j.result, '$.backend'), p.at - (SELECT MAX(r.at) FROM history r"
        " WHERE r.job_id = p.job_id AND r.to_state = ? AND r.rowid < p.rowid)"
        " FROM history p JOIN jobs j ON j.id = p.job_id WHERE p.to_state = ?",
        (JobState.RUNNING, JobState.PUBLISHING)).fetchall()
    for backend, seconds in rows:
        if seconds is not None:
            observe(conn, str(backend or "?"), seconds)
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, '1')", (COUNTED_KEY,))
    return True


@dataclass
class Durations:
    """One backend's histogram: counts per bucket of :data:`BUCKETS` (not cumulative; a result
    over the last bound is only in ``count``), and the count, sum and max of the seconds."""

    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))
    count: float = 0.0
    sum: float = 0.0
    max: float = 0.0


class CounterQueries:
    """Reads of the counters (a :class:`~astrowatch.storage.ledger.Ledger` mixin).  A read-only
    ledger not counted yet (the daemon has not started since the upgrade) is aggregated instead."""

    def _conn(self) -> sqlite3.Connection:  # pragma: no cover - provided by Ledger
        raise NotImplementedError

    def counted(self) -> bool:
        try:
            row = self._conn().execute("SELECT 1 FROM meta WHERE key = ?", (COUNTED_KEY,)).fetchone()
        except sqlite3.OperationalError:
            return False
        return row is not None

    def job_counts(self) -> dict[tuple[str, str], int]:
        """``(state, kind) -> n`` for every pair with jobs."""
        sql = ("SELECT state, kind, n FROM job_counts WHERE n != 0" if self.counted()
               else "SELECT state, kind, COUNT(*) AS n FROM jobs GROUP BY state, kind")
        return {(r[0], r[1]): r[2] for r in self._conn().execute(sql)}

    def state_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (state, _kind), n in self.job_counts().items():
            out[state] = out.get(state, 0) + n
        return out

    def _tallies(self, prefix: str) -> Iterable[tuple[str, float]]:
        rows = self._conn().execute("SELECT key, n FROM tallies WHERE key >= ? AND key < ?",
                                    (prefix, prefix + "\U0010ffff"))
        return [(r[0][len(prefix):], r[1]) for r in rows]

    def failure_counts(self) -> dict[str | None, int]:
        """Failed jobs by the note of their ``-> failing`` move (None: no note)."""
        if not self.counted():
            rows = self._conn().execute(
                "SELECT h.note, COUNT(*) FROM history h JOIN jobs j ON j.id = h.job_id"
                " WHERE h.to_state = ? AND j.state IN (?, ?) GROUP BY h.note",
                (JobState.FAILING, JobState.FAILING, JobState.FAILED))
            return {r[0]: r[1] for r in rows}
        return {(cause or None): int(n) for cause, n in self._tallies(FAILURES)}

    def last_inbox_at(self) -> float | None:
        row = self._conn().execute("SELECT n FROM tallies WHERE key = ?", (LAST_INBOX,)).fetchone() \
            if self.counted() else None
        return float(row[0]) if row is not None else None

    def durations(self) -> dict[str, Durations]:
        """Per backend, the claim-to-publish seconds of every result (empty before counting)."""
        if not self.counted():
            return {}
        out: dict[str, Durations] = {}
        for rest, n in self._tallies(SECONDS):
            backend, _, index = rest.rpartition(":")
            if index.isdigit() and int(index) < len(BUCKETS):
                out.setdefault(backend, Durations()).buckets[int(index)] = n
        for backend, n in self._tallies(SECONDS_COUNT):
            out.setdefault(backend, Durations()).count = n
        for backend, n in self._tallies(SECONDS_SUM):
            out.setdefault(backend, Durations()).sum = n
        for backend, n in self._tallies(SECONDS_MAX):
            out.setdefault(backend, Durations()).max = n
        return out
