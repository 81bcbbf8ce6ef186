"""The ledger: every job and its state, in SQLite (WAL), safe across crashes.

All state changes go through :meth:`Ledger.transition`, a compare-and-set checked against
:data:`TRANSITIONS` — the one table of allowed moves.  States ending in ``-ing`` that are not
``running`` (``publishing``, ``deciding``, ``failing``) are *intents*: the decision is recorded
first, then idempotent file operations finish it; after a crash :mod:`astrowatch.runtime.recovery`
re-runs those finishers.  ``running`` jobs found at start-up were interrupted and go back to
``queued`` (their attempt counted).

Each thread gets its own connection (sqlite3 objects are not shared across threads).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrowatch.core.errors import IllegalTransition, LedgerError, NotFound, as_disk_full
from astrowatch.core.jobs import INTENTS, PENDING, TERMINAL, TRANSITIONS, Decision, JobKind, JobState
from astrowatch.storage import counters, outbox
from astrowatch.storage.chart_seeds import SEEDS_SCHEMA, ChartSeeds
from astrowatch.storage.counters import CounterQueries
from astrowatch.storage.ledger_monitor import MonitoringQueries
from astrowatch.storage.outbox import OutboxQueries

FAILED_FOR_INPUT = "input"  # history note on ``-> failing`` when the file itself is at fault

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user TEXT NOT NULL,
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    params TEXT NOT NULL DEFAULT '{}',
    parent_id TEXT,
    not_before REAL NOT NULL DEFAULT 0,
    error TEXT,
    decision TEXT,
    decision_data TEXT,
    result TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, not_before);
CREATE INDEX IF NOT EXISTS jobs_source ON jobs(user, source, created_at);
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent_id);
-- pages in a stable order (created_at, id): all users' inbox, and one user's
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs(state, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_state_user ON jobs(state, user, created_at, id);
-- what changed lately in a state (status: the failures of the last hour), however many failed before
CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs(state, updated_at);
-- finished jobs whose archive folder retention has removed (or found none): never looked at again
CREATE TABLE IF NOT EXISTS archive_pruned (job_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    job_id TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    at REAL NOT NULL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS history_job ON history(job_id);
CREATE TABLE IF NOT EXISTS seen (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    job_id TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
""" + SEEDS_SCHEMA
SCHEMA_VERSION = "1"
# SQLite's page cache per connection (KiB; its default is 2,000).  Every read is an indexed lookup
# or a short range, and the kernel's page cache holds the file anyway: a small cache per
# connection keeps the daemon's memory from growing with the ledger (3 connections × 2 MB at
# 10k jobs) and costs the reads nothing measurable (bench/scale.py).
CACHE_KIB = 256
# Work the daemon still owes: not yet produced, or an intent to finish (a ``waiting`` job waits
# for disk space or a paused backend, so it does not keep the daemon busy).
_BUSY = tuple(sorted((PENDING | INTENTS) - {JobState.WAITING}))
_TERMINAL = tuple(sorted(TERMINAL))
_PENDING = tuple(sorted(PENDING))
_JSON_FIELDS = ("params", "decision_data", "result")


def _marks(values: tuple[object, ...]) -> str:
    """``?,?,...``: one SQL placeholder per value."""
    return ",".join("?" * len(values))


@dataclass
class Job:
    id: str
    kind: JobKind
    user: str
    source: str  # relative to data_dir, e.g. "Utilisateurs/gaby/photo.jpg"
    source_sha256: str
    state: JobState
    attempts: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    not_before: float = 0.0
    error: str | None = None
    decision: Decision | None = None
    decision_data: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def source_name(self) -> str:
        return self.source.rsplit("/", 1)[-1]


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def _row_to_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    for key in _JSON_FIELDS:
        data[key] = json.loads(data[key]) if data[key] else ({} if key == "params" else None)
    data["kind"], data["state"] = JobKind(data["kind"]), JobState(data["state"])
    if data["decision"] is not None:
        data["decision"] = Decision(data["decision"])
    return Job(**data)


class Ledger(ChartSeeds, MonitoringQueries, OutboxQueries, CounterQueries):
    """SQLite job ledger.  Thread-safe: one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        conn.executescript(SCHEMA)
        conn.executescript(outbox.SCHEMA)  # events for the upstream app, written with the state changes
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.executescript(counters.SCHEMA)
        if not self.counted():
            with self._tx() as tx:  # a ledger from before the counters: counted once, all or nothing
                counters.backfill(tx)

    # -- connections ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a process crash (SIGKILL); only an OS crash or power
            # loss can drop the last commits, and every intent state is finished idempotently.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, all or nothing.  When a statement or the COMMIT
        fails (a full disk: SQLITE_FULL), SQLite may already have rolled the transaction back
        itself, and a blind ROLLBACK would then raise "no transaction is active" in place of the
        real error: roll back only an open transaction, and drop a connection that cannot.  A
        full disk is raised as :class:`~astrowatch.core.errors.DiskFull`."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            self._abort(conn)
            full = as_disk_full(exc)
            if full is not None:
                raise full from exc
            raise

    def _abort(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()  # in an unknown state: the next call opens a fresh connection
            self._local.conn = None

    def _write(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        """One autocommit write statement, with a full disk raised as ``DiskFull``."""
        try:
            return self._conn().execute(sql, tuple(args))
        except sqlite3.Error as exc:
            full = as_disk_full(exc)
            if full is not None:
                raise full from exc
            raise

    # -- jobs -------------------------------------------------------------------------------
    def create_job(self, *, kind: JobKind, user: str, source: str, source_sha256: str,
                   params: dict[str, Any] | None = None, parent_id: str | None = None,
                   job_id: str | None = None) -> Job:
        return self.create_unless_pending(kind=kind, user=user, source=source, source_sha256=source_sha256,
                                          params=params, parent_id=parent_id, job_id=job_id)[0]

    def create_unless_pending(self, *, kind: JobKind, user: str, source: str, source_sha256: str,
                              params: dict[str, Any] | None = None, parent_id: str | None = None,
                              job_id: str | None = None,
                              same: Callable[[Job], bool] | None = None) -> tuple[Job, bool]:
        """Create a queued job, unless a job of the same source and content that has not run yet
        (:data:`PENDING`) satisfies ``same``: then that one is returned.  One ``BEGIN IMMEDIATE``
        transaction, so concurrent callers in any number of processes make exactly one job.
        Returns ``(job, created)``."""
        now = time.time()
        job = Job(id=job_id or new_job_id(), kind=kind, user=user, source=source,
                  source_sha256=source_sha256, state=JobState.QUEUED, params=dict(params or {}),
                  parent_id=parent_id, created_at=now, updated_at=now)
        with self._tx() as conn:
            if same is not None:
                rows = conn.execute(
                    "SELECT * FROM jobs WHERE user = ? AND source = ? AND source_sha256 = ? AND kind = ?"
                    f" AND state IN ({_marks(_PENDING)}) ORDER BY created_at DESC",
                    (user, source, source_sha256, kind, *_PENDING)).fetchall()
                found = next((j for j in map(_row_to_job, rows) if same(j)), None)
                if found is not None:
                    return found, False  # leaving the block commits the (read-only) transaction
            self._insert(conn, job)
        return job, True

    def create_child(self, parent: Job, *, params: dict[str, Any], job_id: str | None = None) -> tuple[Job, bool]:
        """The one child of ``parent`` (a redo, or a retry of a failed job), queued from the same
        source: created, or the one that exists already (``False``) — in one transaction, so two
        processes asking at once make one job."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE parent_id = ? ORDER BY created_at, rowid LIMIT 1",
                               (parent.id,)).fetchone()
            if row is not None:
                return _row_to_job(row), False
            now = time.time()
            child = Job(id=job_id or new_job_id(), kind=parent.kind, user=parent.user, source=parent.source,
                        source_sha256=parent.source_sha256, state=JobState.QUEUED, params=dict(params),
                        parent_id=parent.id, created_at=now, updated_at=now)
            self._insert(conn, child)
        return child, True

    def child_of(self, job_id: str) -> Job | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE parent_id = ? ORDER BY created_at, rowid LIMIT 1",
                                   (job_id,)).fetchone()
        return _row_to_job(row) if row is not None else None

    @staticmethod
    def _insert(conn: sqlite3.Connection, job: Job) -> None:
        conn.execute(
            "INSERT INTO jobs(id, kind, user, source, source_sha256, state, attempts, params,"
            " parent_id, created_at, updated_at) VALUES (?,?,?,?,?,?,0,?,?,?,?)",
            (job.id, job.kind, job.user, job.source, job.source_sha256, JobState.QUEUED, json.dumps(job.params),
             job.parent_id, job.created_at, job.updated_at),
        )
        conn.execute("INSERT INTO history(job_id, from_state, to_state, at) VALUES (?,?,?,?)",
                     (job.id, None, JobState.QUEUED, job.created_at))
        outbox.job_changed(conn, job.id, JobState.QUEUED, job.created_at)  # same transaction
        counters.created(conn, job.kind)  # ... and the counters /metrics and status read

    def transition(self, job_id: str, frm: JobState, to: JobState, *, note: str | None = None,
                   **fields: Any) -> bool:
        """Compare-and-set ``frm`` -> ``to``; also sets ``fields``.  False if the job was not in
        ``frm`` (someone else moved it).  Raises :class:`IllegalTransition` for a move that is
        not in :data:`TRANSITIONS`."""
        if to not in TRANSITIONS.get(frm, frozenset()):
            raise IllegalTransition(f"job {job_id}: {frm} -> {to} is not an allowed transition")
        now = time.time()
        sets, values = ["state = ?", "updated_at = ?"], [to, now]
        for key, value in fields.items():
            if key not in Job.__dataclass_fields__ or key in ("id", "state", "created_at"):
                raise LedgerError(f"cannot set job field {key!r}")
            sets.append(f"{key} = ?")
            values.append(json.dumps(value) if key in _JSON_FIELDS and value is not None else value)
        with self._tx() as conn:
            row = conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state = ?"
                               " RETURNING kind, json_extract(result, '$.backend')", (*values, job_id, frm)).fetchone()
            if row is not None:
                counters.moved(conn, job_id, row[0], frm, to, now, note=note, backend=row[1])  # before history
                conn.execute("INSERT INTO history(job_id, from_state, to_state, at, note) VALUES (?,?,?,?,?)",
                             (job_id, frm, to, now, note))
                outbox.job_changed(conn, job_id, to, now, frm)  # the event commits with the state, or neither
        return row is not None

    def update_fields(self, job_id: str, **fields: Any) -> None:
        """Set non-state fields (result details...).  State only changes via :meth:`transition`."""
        if "state" in fields:
            raise LedgerError("use transition() to change a job's state")
        sets, values = [], []
        for key, value in fields.items():
            sets.append(f"{key} = ?")
            values.append(json.dumps(value) if key in _JSON_FIELDS and value is not None else value)
        self._write(f"UPDATE jobs SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                    (*values, time.time(), job_id))

    def claim_next(self, *, kinds: Iterable[str] | None = None, now: float | None = None) -> Job | None:
        """Atomically take the oldest runnable queued job: queued -> running, attempts + 1."""
        now = time.time() if now is None else now
        kinds = tuple(kinds or JobKind)
        marks = ",".join("?" * len(kinds))
        while True:
            row = self._conn().execute(
                f"SELECT id FROM jobs WHERE state = ? AND not_before <= ? AND kind IN ({marks})"
                " ORDER BY not_before, created_at LIMIT 1", (JobState.QUEUED, now, *kinds)).fetchone()
            if row is None:
                return None
            job = self.get(row["id"])
            if self.transition(job.id, JobState.QUEUED, JobState.RUNNING, attempts=job.attempts + 1):
                return self.get(job.id)

    def get(self, job_id: str) -> Job:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return _row_to_job(row)

    def find(self, prefix: str) -> Job:
        """A job by id or unique id prefix (for the CLI)."""
        rows = self._conn().execute("SELECT * FROM jobs WHERE id LIKE ? LIMIT 2",
                                    (prefix.replace("%", "") + "%",)).fetchall()
        if not rows:
            raise NotFound(f"no job with id {prefix!r}")
        if len(rows) > 1:
            raise NotFound(f"job id prefix {prefix!r} is ambiguous; give more characters")
        return _row_to_job(rows[0])

    def by_state(self, *states: str, kind: str | None = None, limit: int | None = None) -> list[Job]:
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM jobs WHERE state IN ({marks})"
        args: list[Any] = list(states)
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY updated_at DESC" if limit else " ORDER BY created_at"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_row_to_job(r) for r in self._conn().execute(sql, args)]

    def page(self, state: str, *, user: str | None = None, kind: str | None = None, limit: int = 100,
             after: tuple[float, str] | None = None) -> tuple[list[Job], tuple[float, str] | None]:
        """One page of the jobs in ``state`` (optionally one user's, one kind's), oldest first in
        the stable order ``(created_at, id)``, starting after the key ``after``; and the key to pass
        for the next page (None: this was the last).  Served by an index: the cost of a page does
        not grow with the number of jobs."""
        sql, args = "SELECT * FROM jobs WHERE state = ?", list[Any]([state])
        if user is not None:
            sql += " AND user = ?"
            args.append(user)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        if after is not None:
            sql += " AND (created_at, id) > (?, ?)"
            args += [after[0], after[1]]
        rows = self._conn().execute(sql + " ORDER BY created_at, id LIMIT ?", (*args, int(limit) + 1)).fetchall()
        jobs = [_row_to_job(r) for r in rows[:limit]]
        more = len(rows) > limit and jobs
        return jobs, ((jobs[-1].created_at, jobs[-1].id) if more else None)

    def jobs_for_source(self, user: str, source: str) -> list[Job]:
        """All jobs made from one source path, newest first."""
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE user = ? AND source = ? ORDER BY created_at DESC, rowid DESC",
            (user, source)).fetchall()
        return [_row_to_job(r) for r in rows]

    def latest_for_source(self, user: str, source: str, state: str | None = None) -> Job | None:
        """The newest job made from one source path (optionally: in ``state``), or ``None``."""
        sql, args = "SELECT * FROM jobs WHERE user = ? AND source = ?", [user, source]
        if state:
            sql += " AND state = ?"
            args.append(state)
        row = self._conn().execute(sql + " ORDER BY created_at DESC, rowid DESC LIMIT 1", args).fetchone()
        return _row_to_job(row) if row else None

    def children(self, job_id: str) -> list[Job]:
        rows = self._conn().execute("SELECT * FROM jobs WHERE parent_id = ? ORDER BY created_at", (job_id,))
        return [_row_to_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per state, from the counters (:mod:`astrowatch.storage.counters`): a few rows read."""
        return self.state_counts()

    def history(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM history WHERE job_id = ? ORDER BY rowid", (job_id,))
        return [dict(r) for r in rows]

    def failure_cause(self, job_id: str) -> str | None:
        """The note recorded when the job went to ``failing`` (:data:`FAILED_FOR_INPUT`, an error class...)."""
        row = self._conn().execute("SELECT note FROM history WHERE job_id = ? AND to_state = ?"
                                   " ORDER BY rowid DESC LIMIT 1", (job_id, JobState.FAILING)).fetchone()
        return row["note"] if row else None

    def has_pending(self) -> bool:
        row = self._conn().execute(f"SELECT 1 FROM jobs WHERE state IN ({_marks(_BUSY)}) LIMIT 1", _BUSY).fetchone()
        return row is not None

    def finished_before(self, cutoff: float, limit: int = -1) -> list[tuple[str, str]]:
        """(id, user) of finished jobs (:data:`TERMINAL`) last changed before ``cutoff`` that no
        unfinished job descends from (a redo reads its parent's archived original) and whose
        archive retention has not removed yet (:meth:`mark_archive_pruned`), oldest first, at most
        ``limit`` (-1: all): the jobs whose archive folder retention may remove."""
        final = _marks(_TERMINAL)
        rows = self._conn().execute(
            f"WITH RECURSIVE keep(id) AS (SELECT parent_id FROM jobs WHERE state NOT IN ({final})"
            " AND parent_id IS NOT NULL UNION SELECT j.parent_id FROM jobs j JOIN keep k ON j.id = k.id"
            " WHERE j.parent_id IS NOT NULL)"
            f" SELECT id, user FROM jobs WHERE state IN ({final}) AND updated_at < ?"
            " AND id NOT IN (SELECT id FROM keep WHERE id IS NOT NULL)"
            " AND id NOT IN (SELECT job_id FROM archive_pruned) ORDER BY updated_at LIMIT ?",
            (*_TERMINAL, *_TERMINAL, cutoff, limit))
        return [(r["id"], r["user"]) for r in rows]

    def mark_archive_pruned(self, job_ids: list[str]) -> None:
        """Retention is done with these jobs' archive folders (removed, or there was none)."""
        if job_ids:
            with self._tx() as tx:
                tx.executemany("INSERT OR IGNORE INTO archive_pruned(job_id) VALUES (?)", [(j,) for j in job_ids])

    # -- seen files (so start-up scans do not re-hash what did not change) -------------------
    def seen_get(self, path: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn().execute("SELECT * FROM seen WHERE path = ?", (path,)).fetchone()
        return row

    def seen_put(self, path: str, *, size: int, mtime_ns: int, sha256: str, job_id: str | None) -> None:
        self._write(
            "INSERT INTO seen(path, size, mtime_ns, sha256, job_id, at) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns,"
            " sha256=excluded.sha256, job_id=excluded.job_id, at=excluded.at",
            (path, size, mtime_ns, sha256, job_id, time.time()))

    def seen_forget(self, path: str) -> None:
        self._write("DELETE FROM seen WHERE path = ?", (path,))
