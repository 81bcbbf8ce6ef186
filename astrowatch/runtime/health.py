"""Backend health for one worker: outages (jobs wait), pauses (credentials or quota refused), and
the periodic check that re-queues waiting jobs once their backend (or the disk space) is back."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from astrowatch.backends.pool import BackendPool
from astrowatch.core.errors import AstrowatchError
from astrowatch.core.jobs import JobState
from astrowatch.storage.diskspace import DiskGuard
from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.worker")


class BackendHealth:
    def __init__(self, ledger: Ledger, pool: BackendPool, disk: DiskGuard,
                 backend_of: Callable[[Job], str]) -> None:
        self.ledger = ledger
        self.pool = pool
        self.disk = disk
        self.backend_of = backend_of  # the backend that runs a job (its params, else the default)
        self.paused: dict[str, str] = {}  # backend -> why (credentials or quota refused mid-run)
        self._waiting_logged: set[str] = set()
        self._last_check = 0.0
        self._disk_episodes = disk.episodes

    def check_soon(self) -> None:
        """Paused or unavailable backends are checked again at the next :meth:`requeue_waiting`."""
        self._last_check = 0.0

    def pause(self, name: str, why: str) -> None:
        """Credentials or quota refused (``why``): the backend's jobs wait until it is accepted again."""
        if name not in self.paused:
            log.warning("backend paused: credentials or quota refused; its jobs wait (fix it, then "
                        "SIGHUP or wait for the next health check)", backend=name, reason=why)
        self.paused[name] = why

    def park_if_paused(self, job: Job) -> bool:
        """A claimed job of a paused backend goes back to ``waiting`` without running."""
        name = self.backend_of(job)
        if name not in self.paused:
            return False
        self.ledger.transition(job.id, JobState.RUNNING, JobState.WAITING, attempts=max(job.attempts - 1, 0),
                               error=f"backend {name} paused: {self.paused[name]}", note="backend paused")
        return True

    def wait(self, job: Job, why: str) -> None:
        """The backend is down (``why``): the job waits, its attempt not counted."""
        name = self.backend_of(job)
        self.ledger.transition(job.id, JobState.RUNNING, JobState.WAITING, attempts=max(job.attempts - 1, 0),
                               error=why)
        if name not in self._waiting_logged:  # one line per outage, not one per job or second
            self._waiting_logged.add(name)
            log.warning("backend unavailable; jobs wait for it", backend=name, reason=why)

    def requeue_waiting(self, interval: float) -> None:
        """Every ``interval`` seconds (at once when disk space came back): re-queue the waiting jobs
        whose backend answers its health check."""
        now = time.monotonic()
        if self.disk.full and self.disk.low():
            return  # nothing may start until space is back (low() ends the episode when it is)
        disk_back = self.disk.episodes != self._disk_episodes
        if not disk_back and now - self._last_check < interval:
            return
        self._last_check, self._disk_episodes = now, self.disk.episodes
        healthy: dict[str, bool] = {}
        for job in self.ledger.by_state(JobState.WAITING):
            name = self.backend_of(job)
            if name not in healthy:
                if name in self.paused:
                    self.pool.forget(name)  # restarted by the check: a replaced key file is read
                healthy[name] = self.healthy(job.kind, name)
                if healthy[name] and self.paused.pop(name, None) is not None:
                    log.info("backend accepted again; its jobs resume", backend=name)
            what = "disk space" if disk_back else "backend"
            if healthy[name] and self.ledger.transition(job.id, JobState.WAITING, JobState.QUEUED,
                                                        note=f"{what} back"):
                self._waiting_logged.discard(name)
                log.info(f"{what} is back; job re-queued", job_id=job.id, backend=name)

    def healthy(self, kind: str, name: str) -> bool:
        try:
            self.pool.get(kind, name).health()
            return True
        except AstrowatchError:
            return False
