"""What the daemon tells the world about itself: the one-line ``STATUS=`` for systemd, and
``state/daemon.json`` (read by ``astrowatch status``, the API and the review page)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from astrowatch.backends.base import progress_text
from astrowatch.core.config import Config
from astrowatch.core.errors import as_disk_full
from astrowatch.core.jobs import JobState
from astrowatch.intake.watcher import Watcher
from astrowatch.runtime.worker import Worker
from astrowatch.storage.diskspace import DiskGuard
from astrowatch.storage.images import atomic_write_text

log = structlog.get_logger("astrowatch.daemon")


def status_line(counts: Mapping[str, int], workers: Sequence[Worker], disk: DiskGuard) -> str:
    busy = [w for w in workers if w.current]
    line = (f"queued={counts.get(JobState.QUEUED, 0)} waiting={counts.get(JobState.WAITING, 0)} "
            f"inbox={counts.get(JobState.INBOX, 0)} failed={counts.get(JobState.FAILED, 0)} "
            f"{'busy' if busy else 'idle'}")
    if disk.full:
        line += f" {disk.reason()} (jobs wait)"
    for w in busy:
        snap = w.progress.snapshot()
        if snap:
            line += f"; {snap['job_id']}: {progress_text(snap)}"
    return line


def state_record(*, started_at: float, config: Config, defaults: dict[str, str], watcher: Watcher,
                 pending_files: int, workers: Sequence[Worker], disk: DiskGuard, stopped: bool,
                 supervision: dict[str, Any] | None = None) -> dict[str, Any]:
    """``supervision``: thread deaths and stuck jobs, counted across restarts (:mod:`~astrowatch.runtime.guard`)."""
    return {
        "pid": os.getpid(), "started_at": started_at, "updated_at": time.time(), "stopped": stopped,
        "config": str(config.source) if config.source else None, "backends": defaults,
        "watch": {"mode": "polling" if watcher.polling else "inotify",
                  "observer_restarts": watcher.restarts,
                  "pending_files": pending_files},
        "workers": [{"name": w.name, "device": w.pool.device, "current_job": w.current, "stats": w.stats,
                     "progress": w.progress.snapshot(), "backends": w.pool.describe(),
                     "paused": dict(w.paused)} for w in workers],
        "disk": disk.status(),
        "supervision": supervision or {"thread_deaths": 0, "jobs_stuck": 0, "last": None},
    }


def write_state_file(path: Path, state: dict[str, Any], disk: DiskGuard) -> None:
    try:
        atomic_write_text(path, json.dumps(state, indent=2, default=str))
    except OSError as exc:
        if as_disk_full(exc) is not None:
            disk.report(exc)  # logged once per episode, not every 2 s
        else:
            log.warning("cannot write daemon state", error=str(exc))
