"""The outbox: events for the upstream app (webhooks, ``GET /api/events``), in the ledger.

An event row is written **in the same SQLite transaction** as the state change that caused it
(:meth:`astrowatch.storage.ledger.Ledger.transition` and job creation call :func:`job_changed`), so
a crash can never lose one or invent one: it is there exactly when the state change is.  Its
``seq`` (``AUTOINCREMENT``: never reused, growing in commit order) is the SSE ``id:``; its
``msg_id`` is the ``webhook-id``, the same on every retry.

Deliveries are per endpoint: the webhook sender (:mod:`astrowatch.runtime.webhooks`) copies new
events into ``deliveries`` for each configured endpoint it follows (a cursor per endpoint in
``meta``), then sends what is due, storing each message's attempts and next due time, so a restart
keeps its backoff.  Delivered and failed messages are pruned after the retention, with the
events nothing is pending for; ``meta.events_pruned_through`` says how far, so an SSE client
asking for an older id is told to resynchronise.

A mixin of :class:`~astrowatch.storage.ledger.Ledger`, like :mod:`.ledger_monitor`.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from astrowatch.core.jobs import JOB_EVENTS, JobState

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL,  -- a random uuid: unique without an index (one page less per state change)
    type TEXT NOT NULL,
    user TEXT,
    job_id TEXT,
    at REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (seq, endpoint)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, next_at);
"""
PRUNED_KEY = "events_pruned_through"
CURSOR_KEY = "webhook_cursor:"  # + endpoint URL: the last event seq scheduled for it


class Delivery(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


RESYNC = "stream.resync"  # SSE only: the client's Last-Event-ID is older than what is kept


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_msg_id() -> str:
    return "msg_" + uuid.uuid4().hex


@dataclass(frozen=True)
class Event:
    seq: int
    msg_id: str
    type: str
    user: str | None
    job_id: str | None
    at: float
    payload: str  # the JSON body, exactly as sent and signed

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Event:
        return cls(row["seq"], row["msg_id"], row["type"], row["user"], row["job_id"], row["at"], row["payload"])


def _insert(conn: sqlite3.Connection, type_: str, user: str | None, job_id: str | None, at: float,
            data: dict[str, Any]) -> None:
    payload = json.dumps({"type": type_, "timestamp": iso(at), "data": data}, ensure_ascii=False,
                         separators=(",", ":"))
    conn.execute("INSERT INTO events(msg_id, type, user, job_id, at, payload) VALUES (?,?,?,?,?,?)",
                 (new_msg_id(), type_, user, job_id, at, payload))


def job_changed(conn: sqlite3.Connection, job_id: str, to: JobState, at: float,
                frm: JobState | None = None) -> None:
    """Inside the caller's transaction: the event for ``job_id`` having reached ``to`` from
    ``frm`` (None: created), if that move makes one (see :data:`JOB_EVENTS`)."""
    type_ = JOB_EVENTS.get(to)
    if type_ is None or (to == JobState.QUEUED and frm is not None):
        return
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return
    user, source = row["user"], row["source"]
    data: dict[str, Any] = {
        "job_id": job_id, "user": user, "kind": row["kind"], "state": to,
        "source": source.rsplit("/", 1)[-1], "path": source, "parent_id": row["parent_id"],
        "attempts": row["attempts"], "status_url": f"/api/jobs/{job_id}",
    }
    if to in (JobState.FAILED, JobState.WAITING) and row["error"]:
        data["error"] = row["error"]
    if to == JobState.INBOX:
        data["image_url"] = f"/api/jobs/{job_id}/image.png"
    elif to == JobState.DELIVERED:
        data["image_url"] = f"/api/astro-image/{quote(user, safe='')}/image.png"
    elif to == JobState.REDONE:
        child = conn.execute("SELECT id FROM jobs WHERE parent_id = ? ORDER BY created_at, rowid LIMIT 1",
                             (job_id,)).fetchone()
        data["redo_job_id"] = child["id"] if child else None
    _insert(conn, type_, user, job_id, at, data)


class OutboxQueries:
    """The outbox's reads and the sender's bookkeeping (a :class:`Ledger` mixin)."""

    def _conn(self) -> sqlite3.Connection:  # pragma: no cover - provided by Ledger
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover - provided by Ledger
        raise NotImplementedError

    def _meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    # -- emitting -----------------------------------------------------------------------------------
    def record_event(self, type_: str, *, user: str | None, data: dict[str, Any], job_id: str | None = None) -> None:
        """An event that changes no job (``input.skipped``), in its own transaction."""
        with self._tx() as conn:
            _insert(conn, type_, user, job_id, time.time(), data)

    # -- reading (SSE, the CLI) ---------------------------------------------------------------------
    def events_after(self, seq: int, *, user: str | None = None, limit: int = 500) -> list[Event]:
        sql, args = "SELECT * FROM events WHERE seq > ?", list[Any]([seq])
        if user is not None:
            sql += " AND user = ?"
            args.append(user)
        try:
            rows = self._conn().execute(sql + f" ORDER BY seq LIMIT {int(limit)}", args).fetchall()
        except sqlite3.OperationalError:  # a ledger an older daemon made: no events yet
            return []
        return [Event.from_row(r) for r in rows]

    def last_event_seq(self) -> int:
        try:
            row = self._conn().execute("SELECT MAX(seq) AS s FROM events").fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(row["s"] or 0)

    def pruned_through(self) -> int:
        """Events up to this seq were pruned (0: none yet)."""
        return int(self._meta(PRUNED_KEY) or 0)

    def event(self, seq: int) -> Event | None:
        row = self._conn().execute("SELECT * FROM events WHERE seq = ?", (seq,)).fetchone()
        return Event.from_row(row) if row else None

    def deliveries(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = ("SELECT d.*, e.msg_id, e.type, e.user, e.job_id FROM deliveries d JOIN events e ON e.seq = d.seq")
        args: list[Any] = []
        if state is not None:
            sql += " WHERE d.state = ?"
            args.append(state)
        try:
            rows = self._conn().execute(sql + f" ORDER BY d.seq DESC LIMIT {int(limit)}", args).fetchall()
        except sqlite3.OperationalError:
            return []
        return [dict(r) for r in rows]

    def delivery_counts(self) -> dict[tuple[str, str], int]:
        """``(endpoint, state) -> n``: for ``/metrics`` and ``status``."""
        try:
            rows = self._conn().execute("SELECT endpoint, state, COUNT(*) AS n FROM deliveries GROUP BY endpoint, state")
        except sqlite3.OperationalError:
            return {}
        return {(r["endpoint"], r["state"]): r["n"] for r in rows}

    # -- the sender's bookkeeping ---------------------------------------------------------------------
    def schedule_deliveries(self, endpoint: str, types: frozenset[str] | None, now: float) -> int:
        """Copy the events after ``endpoint``'s cursor into its deliveries (``types``: the ones it
        wants; None: all), due now; one transaction.  A new endpoint starts at the newest event."""
        key = CURSOR_KEY + endpoint
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            top = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
            if row is None:
                conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, str(top)))
                return 0
            cursor = int(row["value"])
            if top <= cursor:
                return 0
            n = 0
            for ev in conn.execute("SELECT seq, type FROM events WHERE seq > ? ORDER BY seq", (cursor,)).fetchall():
                if types is None or ev["type"] in types:
                    conn.execute("INSERT OR IGNORE INTO deliveries(seq, endpoint, state, attempts, next_at, updated_at)"
                                 " VALUES (?,?,?,0,?,?)", (ev["seq"], endpoint, Delivery.PENDING, now, now))
                    n += 1
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(top), key))
        return n

    def due_deliveries(self, endpoint: str, now: float, limit: int = 20) -> list[tuple[Event, int]]:
        """``(event, attempts so far)`` of ``endpoint``'s pending messages that are due, oldest first."""
        rows = self._conn().execute(
            "SELECT e.*, d.attempts AS attempts FROM deliveries d JOIN events e ON e.seq = d.seq"
            " WHERE d.endpoint = ? AND d.state = ? AND d.next_at <= ? ORDER BY d.seq LIMIT ?",
            (endpoint, Delivery.PENDING, now, limit)).fetchall()
        return [(Event.from_row(r), int(r["attempts"])) for r in rows]

    def next_due(self) -> float | None:
        row = self._conn().execute("SELECT MIN(next_at) FROM deliveries WHERE state = ?", (Delivery.PENDING,)).fetchone()
        return None if row[0] is None else float(row[0])

    def delivery_done(self, seq: int, endpoint: str, *, attempts: int, state: Delivery, next_at: float,
                      error: str | None) -> None:
        """Record one attempt's outcome: delivered, failed for good, or pending until ``next_at``."""
        with self._tx() as conn:
            conn.execute("UPDATE deliveries SET state = ?, attempts = ?, next_at = ?, last_error = ?, updated_at = ?"
                         " WHERE seq = ? AND endpoint = ?",
                         (state, attempts, next_at, error, time.time(), seq, endpoint))

    def retry_delivery(self, msg_id: str, endpoint: str | None = None) -> int:
        """Make a message (by ``webhook-id`` or seq) due again now for its failed (or all) endpoints."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT seq FROM events WHERE msg_id = ? OR CAST(seq AS TEXT) = ?",
                               (msg_id, msg_id)).fetchone()
            if row is None:
                return 0
            sql, args = ("UPDATE deliveries SET state = ?, attempts = 0, next_at = ?, updated_at = ? WHERE seq = ?"
                         " AND state != ?", [Delivery.PENDING, now, now, row["seq"], Delivery.PENDING])
            if endpoint is not None:
                sql += " AND endpoint = ?"
                args.append(endpoint)
            return int(conn.execute(sql, args).rowcount)

    def prune_outbox(self, cutoff: float) -> int:
        """Drop finished deliveries last changed before ``cutoff``, then the events older than it
        with nothing pending; ``meta.events_pruned_through`` records the highest seq dropped."""
        with self._tx() as conn:
            conn.execute("DELETE FROM deliveries WHERE state != ? AND updated_at < ?", (Delivery.PENDING, cutoff))
            top = conn.execute("SELECT MAX(seq) FROM events WHERE at < ? AND seq NOT IN"
                               " (SELECT seq FROM deliveries WHERE state = ?)", (cutoff, Delivery.PENDING)).fetchone()[0]
            n = conn.execute("DELETE FROM events WHERE at < ? AND seq NOT IN (SELECT seq FROM deliveries WHERE state = ?)",
                             (cutoff, Delivery.PENDING)).rowcount
            if top is not None:
                conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
                             " value = MAX(CAST(value AS INTEGER), excluded.value)", (PRUNED_KEY, int(top)))
        return int(n)
