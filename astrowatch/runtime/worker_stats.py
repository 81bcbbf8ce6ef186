"""What one worker has done since it started (``status`` shows it per worker)."""

from __future__ import annotations

from typing import TypedDict


class WorkerStats(TypedDict):
    jobs: int
    seconds: float
    last_seconds: float | None
    first_seconds: float | None


def new_stats() -> WorkerStats:
    return {"jobs": 0, "seconds": 0.0, "last_seconds": None, "first_seconds": None}


def record_job(stats: WorkerStats, seconds: float) -> None:
    """One more result published, made in ``seconds``."""
    stats["jobs"] += 1
    stats["seconds"] += seconds
    stats["last_seconds"] = round(seconds, 3)
    if stats["first_seconds"] is None:
        stats["first_seconds"] = round(seconds, 3)
