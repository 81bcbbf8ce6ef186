"""A full disk, seen from a worker: a job that cannot be written waits (its attempt not counted),
and a write the ledger, the logs or the folders refused is run again once there is space."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from astrowatch.backends.base import CancelToken
from astrowatch.core.errors import as_disk_full
from astrowatch.core.jobs import JobState
from astrowatch.storage.diskspace import DiskGuard
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Job, Ledger


class DiskWaits:
    def __init__(self, disk: DiskGuard, ledger: Ledger, layout: Layout, cancel: CancelToken,
                 sleep: Callable[[float], None]) -> None:
        self.disk = disk
        self.ledger = ledger
        self.layout = layout
        self.cancel = cancel
        self.sleep = sleep  # the worker's: a wake() cuts it short

    def until_recorded(self, step: Callable[[], object]) -> bool:
        """Run an idempotent ``step`` that writes to the ledger, logs or folders; while the disk
        is full, wait for space and run it again.  False if the daemon stops first (recovery
        finishes the job at the next start)."""
        while True:
            try:
                step()
                return True
            except Exception as exc:
                full = as_disk_full(exc)
                if full is None:
                    raise
                self.disk.report(full)
            while not self.cancel.stopping and self.disk.low():
                self.sleep(1.0)
            if self.cancel.stopping:
                return False
            self.sleep(0.2)  # a write failed above the threshold: do not spin

    def park(self, job: Job) -> None:
        """The disk is full: the job waits, its attempt not counted, and its partial outputs go."""
        if self.ledger.get(job.id).state != JobState.RUNNING:
            return
        shutil.rmtree(self.layout.work_dir(job.id), ignore_errors=True)
        self.ledger.transition(job.id, JobState.RUNNING, JobState.WAITING, attempts=max(job.attempts - 1, 0),
                               error=self.disk.reason())
