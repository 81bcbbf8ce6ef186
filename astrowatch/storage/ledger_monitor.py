"""Read-only aggregates over the ledger for monitoring (``astrowatch api``'s ``/metrics``, ``status``).

A mixin of :class:`astrowatch.storage.ledger.Ledger`: the state machine stays in ``ledger.py``; these
queries only read ``jobs``, each one bounded by an index on ``state`` (never a scan of all jobs or
of ``history``: totals come from :mod:`astrowatch.storage.counters`).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from astrowatch.core.jobs import JobState


class MonitoringQueries:
    def _conn(self) -> sqlite3.Connection:  # pragma: no cover - provided by Ledger
        raise NotImplementedError

    def counts_by_user(self, state: str) -> dict[str, int]:
        """Jobs in ``state`` per user (a covering scan of the ``(state, user, ...)`` index)."""
        rows = self._conn().execute("SELECT user, COUNT(*) AS n FROM jobs WHERE state = ? GROUP BY user", (state,))
        return {r["user"]: r["n"] for r in rows}

    def waiting_groups(self) -> list[dict[str, Any]]:
        """Waiting jobs grouped by kind and the backend their params ask for (None: the default):
        ``n`` and the oldest ``since`` (Unix time) of each group."""
        rows = self._conn().execute(
            "SELECT kind, json_extract(params, '$.backend') AS backend, COUNT(*) AS n, MIN(updated_at) AS since"
            " FROM jobs WHERE state = ? GROUP BY kind, backend", (JobState.WAITING,))
        return [dict(r) for r in rows]

    def oldest(self, state: str) -> dict[str, Any] | None:
        """The job longest in ``state`` by creation (id, user, kind, since)."""
        row = self._conn().execute("SELECT id, user, kind, created_at, updated_at FROM jobs WHERE state = ?"
                                   " ORDER BY created_at, id LIMIT 1", (state,)).fetchone()
        return dict(row) if row is not None else None

    def recent(self, states: tuple[str, ...], since: float, limit: int = 10) -> tuple[int, list[dict[str, Any]]]:
        """How many jobs in ``states`` changed since ``since``, and the latest ``limit`` of them."""
        marks = ",".join("?" * len(states))
        n = self._conn().execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks}) AND updated_at >= ?",
                                 (*states, since)).fetchone()[0]
        rows = self._conn().execute(
            f"SELECT id, user, kind, source, error, updated_at FROM jobs WHERE state IN ({marks}) AND updated_at >= ?"
            " ORDER BY updated_at DESC LIMIT ?", (*states, since, limit)).fetchall()
        return int(n), [dict(r) for r in rows]


def age(since: float | None) -> float:
    return round(time.time() - since, 1) if since else 0.0
