"""Read-only aggregates over the ledger for monitoring (``astrowatch api``'s ``/metrics``).

A mixin of :class:`astrowatch.storage.ledger.Ledger`: the state machine stays in ``ledger.py``; these
queries only read ``jobs`` and ``history``.
"""

from __future__ import annotations

import sqlite3

from astrowatch.core.jobs import JobState


class MonitoringQueries:
    def _conn(self) -> sqlite3.Connection:  # pragma: no cover - provided by Ledger
        raise NotImplementedError

    def counts_by_kind(self) -> dict[tuple[str, str], int]:
        rows = self._conn().execute("SELECT state, kind, COUNT(*) AS n FROM jobs GROUP BY state, kind")
        return {(r["state"], r["kind"]): r["n"] for r in rows}

    def failure_causes(self) -> dict[str | None, int]:
        """Failed jobs by the note of their ``-> failing`` move (the exception class)."""
        rows = self._conn().execute(
            "SELECT h.note AS cause, COUNT(*) AS n FROM history h JOIN jobs j ON j.id = h.job_id"
            " WHERE h.to_state = ? AND j.state IN (?, ?) GROUP BY h.note",
            (JobState.FAILING, JobState.FAILING, JobState.FAILED))
        return {r["cause"]: r["n"] for r in rows}

    def generation_seconds(self, after: int = 0) -> tuple[list[tuple[str | None, float]], int]:
        """``(backend, seconds)`` of every result produced since history row ``after`` (claim, i.e.
        ``running``, to ``publishing``), and the last history row seen: callers add up increments."""
        rows = self._conn().execute(
            "SELECT p.rowid AS seq, json_extract(j.result, '$.backend') AS backend, p.at - (SELECT MAX(r.at)"
            " FROM history r WHERE r.job_id = p.job_id AND r.to_state = ? AND r.rowid < p.rowid) AS seconds"
            " FROM history p JOIN jobs j ON j.id = p.job_id WHERE p.rowid > ? AND p.to_state = ?"
            " ORDER BY p.rowid", (JobState.RUNNING, after, JobState.PUBLISHING)).fetchall()
        last = rows[-1]["seq"] if rows else after  # writers are serialised: rowids grow in commit order
        return [(r["backend"], r["seconds"]) for r in rows if r["seconds"] is not None], last

    def counts_by_user(self, state: str) -> dict[str, int]:
        rows = self._conn().execute("SELECT user, COUNT(*) AS n FROM jobs WHERE state = ? GROUP BY user", (state,))
        return {r["user"]: r["n"] for r in rows}

    def last_entered(self, state: str) -> float | None:
        row = self._conn().execute("SELECT MAX(at) AS at FROM history WHERE to_state = ?", (state,)).fetchone()
        return row["at"] if row else None
