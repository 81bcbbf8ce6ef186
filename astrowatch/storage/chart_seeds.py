"""The seed each person's chart was drawn with: ``chart_seeds(user, identity, seed)``.

A mixin of :class:`astrowatch.storage.ledger.Ledger`.  The first seed recorded for a user's chart
identity (see :mod:`astrowatch.chart.identity`) stays: a redo, a style change, the same chart
exported by another producer, or a later change of how identities or seeds are computed draws
with it again (:mod:`astrowatch.pipeline.seeds` decides what to record).  The table only grows
by one row per person and chart; ``meta`` notes that the jobs of an older release were indexed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

SEEDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS chart_seeds (
    user TEXT NOT NULL,
    identity TEXT NOT NULL,
    seed INTEGER NOT NULL,
    job_id TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (user, identity)
);
"""


class ChartSeeds:
    def _conn(self) -> sqlite3.Connection:  # pragma: no cover - provided by Ledger
        raise NotImplementedError

    def _write(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:  # pragma: no cover - Ledger's
        raise NotImplementedError

    def chart_seed(self, user: str, identity: str) -> int | None:
        """The seed recorded for ``user``'s chart ``identity``, or None."""
        row = self._conn().execute("SELECT seed FROM chart_seeds WHERE user = ? AND identity = ?",
                                   (user, identity)).fetchone()
        return int(row["seed"]) if row is not None else None

    def keep_chart_seed(self, user: str, identity: str, seed: int, *, job_id: str | None = None) -> int:
        """Record ``seed`` for the chart unless one is recorded already; returns the recorded seed
        (the first writer wins, across processes)."""
        import time

        self._write("INSERT OR IGNORE INTO chart_seeds(user, identity, seed, job_id, at) VALUES (?,?,?,?,?)",
                    (user, identity, int(seed), job_id, time.time()))
        recorded = self.chart_seed(user, identity)
        return int(seed) if recorded is None else recorded

    def meta_get(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def meta_put(self, key: str, value: str) -> None:
        self._write("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, value))

    def astro_users(self) -> list[str]:
        """Every user the ledger has an astro job for."""
        return [r["user"] for r in self._conn().execute("SELECT DISTINCT user FROM jobs WHERE kind = 'astro'")]

    def drawn_seeds(self, user: str) -> list[tuple[str, str, int, dict[str, Any]]]:
        """``(job_id, source, seed, params)`` of ``user``'s astro jobs that produced a picture, newest first."""
        import json

        rows = self._conn().execute(
            "SELECT id, source, params, json_extract(result, '$.seed') AS seed FROM jobs"
            " WHERE user = ? AND kind = 'astro' AND json_extract(result, '$.seed') IS NOT NULL"
            " ORDER BY created_at DESC, rowid DESC", (user,))
        return [(r["id"], r["source"], int(r["seed"]), json.loads(r["params"] or "{}")) for r in rows]
