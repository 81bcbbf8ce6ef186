"""Bounded growth: the ``retention:`` section, applied by the daemon when it is idle.

- ``archive_days``: ``archive/<user>/<job>/`` of *finished* jobs (delivered, filed, rejected,
  redone, failed, superseded) whose last change is older than that, and from which no unfinished
  redo descends (a redo of a photo reads its parent's archived original).  0 = keep forever.
- ``cache_max_mb``: ``state/cache/`` (the enhance result cache), least recently used first.
- ``log_max_mb`` / ``log_keep``: ``logs/*.jsonl`` rotated by size (``x.jsonl.1`` newest).

Never touched: ``datasets/``, ``Utilisateurs/`` (inputs and delivered images), ``inbox/``,
``failed/``, the decision folders, the ledger, and the archive of any job that is not finished or
that the ledger does not know.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from astrowatch.storage.jsonlog import rotate

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import RetentionConfig
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Ledger

log = structlog.get_logger("astrowatch.retention")
MB = 1_000_000
ARCHIVE_BATCH = 500  # job folders removed per pass, so one pass never holds the main loop long


def apply(cfg: RetentionConfig, layout: Layout, ledger: Ledger, *, now: float | None = None) -> dict[str, int]:
    """One retention pass.  Returns what it did (``more`` = 1 when archive work is left)."""
    now = time.time() if now is None else now
    removed, more = prune_archive(layout, ledger, cfg.archive_days, now)
    done = {"archive_removed": removed, "more": int(more),
            "cache_removed": prune_cache(layout, cfg.cache_max_mb),
            "logs_rotated": rotate_logs(layout, cfg.log_max_mb, cfg.log_keep)}
    if any(v for k, v in done.items() if k != "more"):
        log.info("retention applied", **done)
    return done


def prune_archive(layout: Layout, ledger: Ledger, days: float, now: float) -> tuple[int, bool]:
    if days <= 0:
        return 0, False
    jobs = ledger.finished_before(now - days * 86400)
    removed = 0
    for job_id, user in jobs[:ARCHIVE_BATCH]:
        folder = layout.archive_dir(user, job_id)
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
            try:
                folder.parent.rmdir()  # the user's archive folder, once empty
            except OSError:
                pass
    return removed, len(jobs) > ARCHIVE_BATCH


def prune_cache(layout: Layout, max_mb: float) -> int:
    """Remove cache entries (``<key>.png`` + ``<key>.json``), least recently used first, until the
    cache is at most ``max_mb``.  A hit refreshes an entry's mtime."""
    if max_mb <= 0:
        return 0
    entries: dict[Path, list[float]] = {}  # stem -> [bytes, newest mtime]
    total = 0.0
    for path in layout.cache.glob("*/*"):
        try:
            st = path.lstat()
        except OSError:
            continue
        total += st.st_size
        entry = entries.setdefault(path.with_suffix(""), [0.0, 0.0])
        entry[0] += st.st_size
        entry[1] = max(entry[1], st.st_mtime)
    removed = 0
    for stem, (size, _mtime) in sorted(entries.items(), key=lambda kv: kv[1][1]):
        if total <= max_mb * MB:
            break
        for suffix in (".png", ".json"):
            stem.with_suffix(suffix).unlink(missing_ok=True)
        total -= size
        removed += 1
    return removed


def rotate_logs(layout: Layout, max_mb: float, keep: int) -> int:
    if max_mb <= 0:
        return 0
    rotated = 0
    for path in layout.logs.glob("*.jsonl"):
        try:
            big = path.stat().st_size > max_mb * MB
        except OSError:
            continue
        if big and rotate(path, keep):
            rotated += 1
    return rotated


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    total = 0
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def sizes_mb(layout: Layout) -> dict[str, float]:
    """What retention bounds, for ``status``: archive, cache and logs (with rotated files)."""
    return {name: round(folder_bytes(layout.root / rel) / MB, 1)
            for name, rel in (("archive", "archive"), ("cache", "state/cache"), ("logs", "logs"))}
