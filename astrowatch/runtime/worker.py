"""The worker: one thread per device, owning its backends, running one job at a time.

Loop: claim the oldest runnable job (compare-and-set ``queued -> running``), run its steps,
write the outputs to ``state/work/<job>/``, record ``publishing``, move them into the inbox,
record ``inbox`` (:mod:`~astrowatch.runtime.publishing`).  Errors become state changes from their
class alone (:func:`astrowatch.runtime.policy.next_step`):

- ``BackendUnavailable``         -> ``waiting`` (attempt not counted); re-queued when healthy
- ``DiskFull`` (ENOSPC, SQLITE_FULL, under ``limits.min_free_mb``) -> ``waiting`` (attempt not
  counted); re-queued within a second of space coming back.  A write that fails while a result
  is being published or a failure recorded is retried once there is space again
  (:mod:`~astrowatch.runtime.diskwait`).
- ``CredentialsRejected``        -> the backend is *paused*: this job and every later job of that
                                    backend wait (not run, attempt not counted) until a health
                                    check (every ``sdapi.health_interval``, at once after SIGHUP)
                                    passes with the backend restarted (key re-read)
                                    (:mod:`~astrowatch.runtime.health`)
- ``Interrupted`` (2nd SIGTERM)   -> ``queued`` (attempt not counted); resumed at next start
- ``JobTimedOut`` (the job ran past ``limits.job_timeout_seconds``: its token's deadline, which the
  backends' stop points honour) -> retried (the attempt counts) or failed with that reason
- not retryable (bad input...)   -> ``failing`` -> ``failed/`` entry -> ``failed``
- retryable, attempts left       -> ``queued`` with exponential backoff

No error of one job stops the thread: one that escapes even the recording of a job's outcome is
logged with its traceback, the job is set aside as failed (or left for recovery), and the loop goes
on.  Anything else the loop raises is logged and retried after a pause.  A worker thread that dies
anyway is the daemon's business (:mod:`astrowatch.runtime.guard`): it stops, non-zero.
"""

from __future__ import annotations

import threading
import time
from functools import partial

import structlog

from astrowatch.backends.base import CancelToken, Progress
from astrowatch.backends.pool import BackendPool
from astrowatch.core.config import Config
from astrowatch.core.errors import BackendUnavailable, CredentialsRejected, Interrupted, as_disk_full
from astrowatch.core.jobs import JobState
from astrowatch.pipeline.steps import backend_for
from astrowatch.runtime.diskwait import DiskWaits
from astrowatch.runtime.health import BackendHealth
from astrowatch.runtime.policy import Action, next_step
from astrowatch.runtime.publishing import Publisher
from astrowatch.runtime.worker_stats import WorkerStats, new_stats
from astrowatch.storage.diskspace import DiskGuard
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.worker")
LOOP_PAUSE_MAX = 30.0  # longest pause after an unexpected error of the loop (doubling from 1 s)


def job_deadline(config: Config) -> float | None:
    """Seconds a job may run in this process: ``limits.job_timeout_seconds``; none for the
    ``executor: celery`` dispatchers, whose wait includes the broker's queue: there the deadline
    runs on the ``astrowatch worker`` that runs the backend (:mod:`~astrowatch.runtime.remote_worker`)."""
    return None if config.executor == "celery" else config.limits.job_timeout_seconds


class Worker(threading.Thread):
    def __init__(self, config: Config, layout: Layout, defaults: dict[str, str], cancel: CancelToken,
                 *, device: str | None = None, index: int = 0, drain: bool = False,
                 disk: DiskGuard | None = None) -> None:
        super().__init__(name=f"astrowatch-worker-{index}", daemon=True)
        self.config = config
        self.layout = layout
        self.defaults = dict(defaults)  # kind -> backend name ("auto" already resolved)
        self.cancel = cancel
        self.pool = BackendPool(config, device)
        self.ledger = Ledger(layout.ledger_path)
        self._wake = threading.Event()
        self._new_config: tuple[Config, dict[str, str]] | None = None
        self.disk = disk or DiskGuard(layout.root, config.limits.min_free_mb)
        self.current: str | None = None
        self.closing = False  # out of the loop, releasing its backends
        self.started: float | None = None  # time.monotonic() when the current job started
        self.job_cancel: CancelToken | None = None  # the current job's token (its deadline)
        self.progress = Progress()  # the running job's steps, for status (read by the daemon)
        self.beat = time.monotonic()
        self.stats: WorkerStats = new_stats()
        self.health = BackendHealth(self.ledger, self.pool, self.disk, self.backend_of)
        self.disk_waits = DiskWaits(self.disk, self.ledger, layout, cancel, self._sleep)
        self.publisher = Publisher(config, layout, self.ledger, self.pool, self.defaults, cancel=cancel,
                                   progress=self.progress, disk=self.disk_waits, stats=self.stats,
                                   worker=self.name)

    @property
    def paused(self) -> dict[str, str]:
        """Paused backend -> why (credentials or quota refused mid-run)."""
        return self.health.paused

    def backend_of(self, job: Job) -> str:
        return backend_for(job.params, self.defaults[job.kind])

    # -- control from other threads ------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def reload(self, config: Config, defaults: dict[str, str]) -> None:
        self._new_config = (config, dict(defaults))
        self.wake()

    def preload(self) -> None:
        """Start the default backends now (before READY=1).  Unavailable ones are retried later."""
        for kind, name in self.defaults.items():
            try:
                self.pool.get(kind, name)
            except BackendUnavailable as exc:
                log.warning("backend unavailable at start; jobs will wait for it", backend=name, reason=str(exc))
            except CredentialsRejected as exc:
                if threading.current_thread() is not self:
                    raise  # at start-up: a config error (exit 78)
                self.health.pause(name, str(exc))

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        pause = 1.0
        try:
            while not self.cancel.stopping:
                self.beat = time.monotonic()
                try:
                    self._step()
                    pause = 1.0
                except Exception as exc:  # the ledger could not record a claim or a re-queue...
                    full = as_disk_full(exc)
                    if full is not None:
                        self.disk.report(full)
                        self._sleep(1.0)
                        continue
                    log.exception("worker loop error; going on after a pause", pause_s=pause)
                    self._sleep(pause)
                    pause = min(pause * 2, LOOP_PAUSE_MAX)
        finally:
            self.closing = True  # unloading models: the daemon waits for this (exiting under torch aborts)
            self.pool.close()
            self.ledger.close()

    def _step(self) -> None:
        self._apply_reload()
        self.health.requeue_waiting(self.config.sdapi.health_interval)
        job = self.ledger.claim_next()
        if job is None:
            self._sleep(0.5)
        elif self.disk.low():  # limits.min_free_mb: this job would fill the disk; it waits
            self.disk_waits.until_recorded(lambda: self.disk_waits.park(job))
        elif not self.health.park_if_paused(job):  # a paused backend's job waits without running
            self.execute(job)

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _apply_reload(self) -> None:
        if self._new_config is None:
            return
        config, defaults = self._new_config
        self._new_config = None
        closed = self.pool.reload(config)
        self.config, self.defaults = config, defaults
        self.publisher.config, self.publisher.defaults = config, defaults
        self.health.check_soon()  # paused or unavailable backends are checked again now
        log.info("config reloaded by worker", reloaded_backends=closed)
        self.preload()

    # -- one job ----------------------------------------------------------------------------------
    def execute(self, job: Job) -> None:
        structlog.contextvars.bind_contextvars(job_id=job.id, user=job.user, worker=self.name)
        token = self.cancel.for_job(job_deadline(self.config))
        self.current, self.job_cancel = job.id, token
        self.progress.start(job.id)
        t0 = self.started = time.monotonic()
        try:
            self.publisher.produce_and_publish(job, t0, cancel=token)
        except Exception as exc:
            if (full := as_disk_full(exc)) is not None:
                self.disk.report(full)
            if isinstance(exc, Interrupted) and token.timed_out and not self.cancel.interrupted:
                timed_out = token.timeout_error()  # the backend stopped at the deadline and said "interrupted"
                timed_out.__cause__ = exc
                exc = timed_out
            self._record(job, exc, t0)
        finally:
            self.current = self.started = self.job_cancel = None
            self.progress.clear()
            structlog.contextvars.unbind_contextvars("job_id", "user", "worker")

    def _record(self, job: Job, exc: Exception, t0: float) -> None:
        """The job's outcome written down; if even that raises (not a full disk: that waits),
        the job is set aside as failed with the reason and the thread goes on."""
        try:
            self.disk_waits.until_recorded(partial(self._on_error, job, exc, t0))
        except Exception as again:
            log.exception("could not record the job's outcome; the job is set aside as failed",
                          error=str(exc))
            reason = f"{exc}; then recording it failed: {type(again).__name__}: {again}"
            try:
                self.ledger.transition(job.id, JobState.RUNNING, JobState.FAILING, error=reason,
                                       note=type(again).__name__)
            except Exception:  # the ledger itself: recovery finishes it at the next start
                log.exception("could not set the job aside either; the next start resumes it")

    def _on_error(self, job: Job, exc: Exception, t0: float) -> None:
        """The job's next state, from the error's class alone (:func:`next_step`)."""
        step = next_step(exc, job.attempts, self.config.retries)
        if step.unexpected:
            log.exception("unexpected error in job")  # called inside execute's except block
        if step.action is Action.WAIT_FOR_DISK:
            self.disk_waits.park(job)
        elif step.action is Action.PAUSE_BACKEND:
            self.health.pause(self.backend_of(job), step.reason)
            self.health.park_if_paused(job)
        elif step.action is Action.WAIT_FOR_BACKEND:
            self.health.wait(job, step.reason)
        elif step.action is Action.REQUEUE:
            self.publisher.requeue(job, step.reason)
        elif step.action is Action.RETRY:
            self.publisher.retry(job, step.reason, step.delay, time.monotonic() - t0)
        else:
            duration = time.monotonic() - t0
            self.publisher.fail(job, step.reason, cause=step.cause)
            self.publisher.log_generation(job, "failed", duration, error=step.reason)
