"""Bounded growth: the ``retention:`` section, applied by the daemon when it is idle.

- ``archive_days``: ``archive/<user>/<job>/`` of *finished* jobs (delivered, filed, rejected,
  redone, failed, superseded) whose last change is older than that, and from which no unfinished
  redo descends (a redo of a photo reads its parent's archived original).  0 = keep forever.
- ``cache_max_mb``: ``state/cache/`` (the enhance result cache), least recently used first.
- ``log_max_mb`` / ``log_keep``: ``logs/*.jsonl`` rotated by size (``x.jsonl.1`` newest).

Never touched: ``datasets/``, ``Utilisateurs/`` (inputs and delivered images), ``inbox/``,
``failed/``, the decision folders, the ledger, and the archive of any job that is not finished or
that the ledger does not know.

The tree is shared with the service's group: every walk here is relative to folder descriptors
reached from the data root without following a link (:mod:`astrowatch.storage.safefs`), entries
are lstat-ed, and a symlinked folder is never entered, so nothing outside the data folder is
ever removed, renamed or counted.
"""

from __future__ import annotations

import heapq
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from astrowatch.storage import safefs
from astrowatch.storage.jsonlog import rotate

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import RetentionConfig
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Ledger

log = structlog.get_logger("astrowatch.retention")
MB = 1_000_000
ARCHIVE_BATCH = 500  # job folders removed per pass, so one pass never holds the main loop long
CACHE_BATCH = 500  # cache entries removed per pass at most (the oldest: one batch in memory)


def apply(cfg: RetentionConfig, layout: Layout, ledger: Ledger, *, now: float | None = None) -> dict[str, int]:
    """One retention pass.  Returns what it did (``more`` = 1 when archive or cache work is left).

    A pass holds at most one batch in memory, whatever the history: the cache is first only added
    up, and walked for its oldest :data:`CACHE_BATCH` entries only when over its size; the archive's
    candidates are read :data:`ARCHIVE_BATCH` at a time, each job's folder looked at once (a pass
    every ``check_seconds`` that listed every file and every old job made the daemon's memory step
    up with the history: freed, but scattered)."""
    now = time.time() if now is None else now
    removed, more = prune_archive(layout, ledger, cfg.archive_days, now)
    cache_removed, cache_more = prune_cache(layout, cfg.cache_max_mb)
    done = {"archive_removed": removed, "more": int(more or cache_more), "cache_removed": cache_removed,
            "logs_rotated": rotate_logs(layout, cfg.log_max_mb, cfg.log_keep)}
    if any(v for k, v in done.items() if k != "more"):
        log.info("retention applied", **done)
    return done


def prune_archive(layout: Layout, ledger: Ledger, days: float, now: float) -> tuple[int, bool]:
    """Remove the archive folders of up to :data:`ARCHIVE_BATCH` finished jobs; each job is
    then marked as done with (folder or not), so the next pass starts where this one stopped."""
    if days <= 0:
        return 0, False
    jobs = ledger.finished_before(now - days * 86400, limit=ARCHIVE_BATCH + 1)
    removed = 0
    for job_id, user in jobs[:ARCHIVE_BATCH]:
        if _remove_job_folder(layout, layout.archive_dir(user, job_id)):
            removed += 1
    ledger.mark_archive_pruned([job_id for job_id, _user in jobs[:ARCHIVE_BATCH]])
    return removed, len(jobs) > ARCHIVE_BATCH


def _remove_job_folder(layout: Layout, folder: Path) -> bool:
    """``archive/<user>/<job>/`` removed relative to the user folder's descriptor (a symlinked
    ``archive/`` or ``archive/<user>`` is refused, links inside are removed, never followed), then
    the user's archive folder once empty."""
    try:
        with safefs.open_dir(folder.parent, layout.root) as dfd:
            st = os.stat(folder.name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                return False
            shutil.rmtree(folder.name, dir_fd=dfd, ignore_errors=True)
        with safefs.open_dir(folder.parent.parent, layout.root) as pfd:
            try:
                os.rmdir(folder.parent.name, dir_fd=pfd)  # the user's archive folder, once empty
            except OSError:
                pass
    except (safefs.Unreadable, OSError):
        return False
    return True


def prune_cache(layout: Layout, max_mb: float) -> tuple[int, bool]:
    """Remove cache entries (``<key>.png`` + ``<key>.json``), least recently used first, until the
    cache is at most ``max_mb``: at most :data:`CACHE_BATCH` a pass (``more``: still over).  A hit
    refreshes an entry's mtime.  Under its size (the usual case) the cache is only added up."""
    if max_mb <= 0:
        return 0, False
    total = folder_bytes(layout.cache, root=layout.root)
    if total <= max_mb * MB:
        return 0, False
    removed = 0
    for _mtime, stem, size in heapq.nsmallest(CACHE_BATCH, _cache_entries(layout)):
        if total <= max_mb * MB:
            break
        for suffix in (".png", ".json"):
            safefs.unlink(stem.with_suffix(suffix), root=layout.root)
        total -= size
        removed += 1
    return removed, total > max_mb * MB


def _cache_entries(layout: Layout) -> Iterator[tuple[float, Path, int]]:
    """(newest mtime, stem, bytes) of each cache entry, one ``state/cache/<xx>/`` folder at a time."""
    try:
        with safefs.open_dir(layout.cache, layout.root) as fd:
            subdirs = os.listdir(fd)
    except (safefs.Unreadable, OSError):
        return
    for sub in sorted(subdirs):
        entries: dict[Path, list[float]] = {}  # stem -> [bytes, newest mtime]
        for path, st in _files_below(layout, layout.cache / sub, depth=1):
            entry = entries.setdefault(path.with_suffix(""), [0.0, 0.0])
            entry[0] += st.st_size
            entry[1] = max(entry[1], st.st_mtime)
        for stem, (size, mtime) in entries.items():
            yield mtime, stem, int(size)


def rotate_logs(layout: Layout, max_mb: float, keep: int) -> int:
    if max_mb <= 0:
        return 0
    rotated = 0
    for path, st in _files_below(layout, layout.logs, depth=1):
        if path.suffix == ".jsonl" and st.st_size > max_mb * MB and rotate(path, keep, root=layout.root):
            rotated += 1
    return rotated


def _files_below(layout: Layout, folder: Path, *, depth: int) -> list[tuple[Path, os.stat_result]]:
    """(path, lstat) of the regular files exactly ``depth`` levels below ``folder``, each folder
    entered by descriptor without following a link (a symlinked folder is skipped)."""
    found: list[tuple[Path, os.stat_result]] = []
    try:
        with safefs.open_dir(folder, layout.root) as fd:
            _scan(fd, folder, depth, found)
    except (safefs.Unreadable, OSError):
        pass
    return found


def _scan(fd: int, where: Path, depth: int, found: list[tuple[Path, os.stat_result]] | None,
          total: list[int] | None = None, max_depth: int = 32) -> None:
    """Walk the folder open on ``fd``: collect regular files at ``depth`` (``found``), or add up
    every regular file's size (``total``), never following a link and never deeper than
    ``max_depth`` (a group member's deep nesting cannot exhaust descriptors)."""
    try:
        names = os.listdir(fd)
    except OSError:
        return
    for name in names:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            if total is not None:
                total[0] += st.st_size
            elif found is not None and depth == 1:
                found.append((where / name, st))
        elif stat.S_ISDIR(st.st_mode) and (depth > 1 or total is not None) and max_depth > 0:
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                continue  # replaced by a link or gone meanwhile: not entered
            try:
                _scan(sub, where / name, depth - 1, found, total, max_depth - 1)
            finally:
                os.close(sub)


def folder_bytes(folder: Path, *, root: Path | None = None) -> int:
    """Bytes of the regular files under ``folder`` (links not followed, ``folder`` itself reached
    from ``root`` -- default: its parent -- without following a link)."""
    total = [0]
    base = Path(root).resolve() if root is not None else Path(os.path.abspath(folder)).parent
    try:
        with safefs.open_dir(Path(os.path.abspath(folder)), base) as fd:
            _scan(fd, folder, 0, None, total)
    except (safefs.Unreadable, OSError):
        return 0
    return total[0]


def sizes_mb(layout: Layout) -> dict[str, float]:
    """What retention bounds, for ``status``: archive, cache and logs (with rotated files)."""
    return {name: round(folder_bytes(layout.root / rel, root=layout.root) / MB, 1)
            for name, rel in (("archive", "archive"), ("cache", "state/cache"), ("logs", "logs"))}
