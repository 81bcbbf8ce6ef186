"""A full data disk: the machine's fault, never the input's.

One :class:`DiskGuard` per daemon, shared by the main thread and the workers.  A *disk-full
episode* starts when free space under ``data_dir`` drops below ``limits.min_free_mb`` or when a
write fails with ENOSPC / SQLITE_FULL (:class:`~astrowatch.core.errors.DiskFull`), and ends when free
space is back above the threshold.  Each episode is logged once when it starts and once when it
ends, however many writes fail meanwhile.  While it lasts no job starts (jobs wait, their attempt
not counted), and the daemon retries what it could not record.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import structlog

log = structlog.get_logger("astrowatch.diskspace")


def free_mb(path: Path) -> int:
    """Megabytes (10^6 bytes) an unprivileged writer may still use under ``path``."""
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize // 1_000_000)


def total_mb(path: Path) -> int:
    st = os.statvfs(path)
    return int(st.f_blocks * st.f_frsize // 1_000_000)


class DiskGuard:
    def __init__(self, root: Path, min_free_mb: int) -> None:
        self.root = Path(root)
        self.min_free_mb = min_free_mb
        self.full_since: float | None = None  # time.time() when the current episode started
        self.episodes = 0  # episodes that have ended (workers re-queue waiting jobs when it moves)
        self._resume_mb = self.threshold_mb  # free space that ends the current episode
        self._lock = threading.Lock()

    def free_mb(self) -> int | None:
        """None when it cannot be read (then nothing is held back for it)."""
        try:
            return free_mb(self.root)
        except OSError:
            return None

    def reason(self, free: int | None = None) -> str:
        """The reason waiting jobs carry, and status shows."""
        free = self.free_mb() if free is None else free
        return f"disk full: {'?' if free is None else free} MB free under data_dir"

    @property
    def threshold_mb(self) -> int:
        """Below this many MB free no job starts (``limits.min_free_mb``, at least 1)."""
        return max(self.min_free_mb, 1)

    @property
    def full(self) -> bool:
        return self.full_since is not None

    def low(self) -> bool:
        """True while a job must not start: free space under the threshold, or an episode whose
        space has not come back.  Ends the episode (one log line) when it has."""
        free = self.free_mb()
        with self._lock:
            need = self._resume_mb if self.full_since is not None else self.threshold_mb
        if free is not None and free < need:
            self.report(free=free)
            return True
        with self._lock:
            if self.full_since is None:
                return False
            seconds = round(time.time() - self.full_since, 1)
            self.full_since = None
            self.episodes += 1
        log.info("disk space is back; waiting jobs resume", free_mb=free, full_for_s=seconds)
        return False

    def report(self, error: object = None, *, free: int | None = None) -> None:
        """A write failed for lack of space (``error``), or free space is under the threshold.
        Logs the first report of an episode only.  After a failed write the episode lasts until
        there is clearly more room than there was (so a write larger than ``min_free_mb`` does
        not start a new episode every second)."""
        free = self.free_mb() if free is None else free
        with self._lock:
            if self.full_since is not None:
                return
            self.full_since = time.time()
            self._resume_mb = max(self.threshold_mb, self._more_room(free) if error is not None else 0)
        log.error("disk full: jobs wait and nothing is failed until space is freed under data_dir",
                  free_mb=free, min_free_mb=self.min_free_mb, resume_at_mb=self._resume_mb,
                  data_dir=str(self.root), error=str(error) if error is not None else None)

    def _more_room(self, free: int | None) -> int:
        """After a write failed with ``free`` MB left: twice that plus 10 MB, at most half the disk."""
        try:
            return min(2 * (free or 0) + 10, total_mb(self.root) // 2)
        except OSError:
            return 0

    def status(self) -> dict[str, object]:
        return {"free_mb": self.free_mb(), "min_free_mb": self.min_free_mb, "full": self.full,
                "full_since": self.full_since}
