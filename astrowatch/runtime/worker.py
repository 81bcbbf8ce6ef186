"""The worker: one thread per device, owning its backends, running one job at a time.

Loop: claim the oldest runnable job (compare-and-set ``queued -> running``), run its steps,
write the outputs to ``state/work/<job>/``, record ``publishing``, move them into the inbox,
record ``inbox``.  Errors become state changes from their class alone:

- ``BackendUnavailable``         -> ``waiting`` (attempt not counted); re-queued when healthy
- ``DiskFull`` (ENOSPC, SQLITE_FULL, under ``limits.min_free_mb``) -> ``waiting`` (attempt not
  counted); re-queued within a second of space coming back.  A write that fails while a result
  is being published or a failure recorded is retried once there is space again.
- ``CredentialsRejected``        -> the backend is *paused*: this job and every later job of that
                                    backend wait (not run, attempt not counted) until a health
                                    check (every ``sdapi.health_interval``, at once after SIGHUP)
                                    passes with the backend restarted (key re-read)
- ``Interrupted`` (2nd SIGTERM)   -> ``queued`` (attempt not counted); resumed at next start
- not retryable (bad input...)   -> ``failing`` -> ``failed/`` entry -> ``failed``
- retryable, attempts left       -> ``queued`` with exponential backoff
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from astrowatch.backends.base import Backend, CancelToken, Progress
from astrowatch.core.config import Config
from astrowatch.core.errors import (
    AstrowatchError,
    BackendError,
    BackendUnavailable,
    CredentialsRejected,
    InputError,
    Interrupted,
    as_disk_full,
)
from astrowatch.core.testhooks import hold
from astrowatch.pipeline.delivery import copy_snapshot
from astrowatch.pipeline.freshness import mark_stale
from astrowatch.pipeline.publish import locate_source, publish, result_stem, write_outputs
from astrowatch.pipeline.records import finish_failed, log_generation
from astrowatch.pipeline.steps import (
    SNAPSHOT_FROM,
    JobContext,
    backend_for,
    run_astro,
    run_enhance,
)
from astrowatch.runtime.executor import new_backend
from astrowatch.storage.diskspace import DiskGuard
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import FAILED_FOR_INPUT, Job, Ledger

log = structlog.get_logger("astrowatch.worker")


class BackendPool:
    """Started backends by name, for one worker (one device).  Not shared across threads."""

    def __init__(self, config: Config, device: str | None = None) -> None:
        self.config = config
        self.device = device
        self._backends: dict[str, Backend] = {}
        self._started: set[str] = set()
        self.load_seconds: dict[str, float] = {}

    def forget(self, name: str) -> None:
        """Close and drop one backend: the next :meth:`get` starts it again (re-reads its key)."""
        backend = self._backends.pop(name, None)
        self._started.discard(name)
        if backend is not None:
            backend.close()

    def get(self, kind: str, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is None:
            backend = new_backend(name, kind, self.config, device=self.device)
            self._backends[name] = backend
        if kind not in backend.kinds:
            from astrowatch.core.errors import ConfigError

            raise ConfigError(f"backend {name!r} cannot do {kind} jobs")
        if name not in self._started:
            t0 = time.monotonic()
            backend.start()  # BackendUnavailable propagates: the job waits
            self.load_seconds[name] = round(time.monotonic() - t0, 3)
            self._started.add(name)
        return backend

    def reload(self, config: Config) -> list[str]:
        """Keep backends whose settings did not change; close the others.  Returns closed names."""
        closed = []
        for name, backend in list(self._backends.items()):
            old_key = backend.settings_key()
            backend.config = config
            if backend.settings_key() != old_key:
                backend.config = self.config
                backend.close()
                del self._backends[name]
                self._started.discard(name)
                closed.append(name)
        self.config = config
        return closed

    def describe(self) -> dict[str, Any]:
        return {name: {**b.describe(), "load_seconds": self.load_seconds.get(name)}
                for name, b in self._backends.items()}

    def close(self) -> None:
        for backend in self._backends.values():
            try:
                backend.close()
            except Exception:
                log.exception("backend close failed", backend=backend.name)
        self._backends.clear()
        self._started.clear()


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
        self._waiting_logged: set[str] = set()
        self.paused: dict[str, str] = {}  # backend -> why (credentials or quota refused mid-run)
        self._last_health = 0.0
        self.disk = disk or DiskGuard(layout.root, config.limits.min_free_mb)
        self._disk_episodes = self.disk.episodes
        self.current: str | None = None
        self.progress = Progress()  # the running job's steps, for status (read by the daemon)
        self.beat = time.monotonic()
        self.stats = {"jobs": 0, "seconds": 0.0, "last_seconds": None, "first_seconds": None}

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
                self._pause_backend(name, exc)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.cancel.stopping:
                self.beat = time.monotonic()
                try:
                    self._step()
                except Exception as exc:  # the ledger could not record a claim or a re-queue
                    full = as_disk_full(exc)
                    if full is None:
                        raise
                    self.disk.report(full)
                    self._sleep(1.0)
        finally:
            self.pool.close()
            self.ledger.close()

    def _step(self) -> None:
        self._apply_reload()
        self._requeue_waiting()
        job = self.ledger.claim_next()
        if job is None:
            self._sleep(0.5)
        elif self.disk.low():  # limits.min_free_mb: this job would fill the disk; it waits
            self._until_recorded(lambda: self._disk_wait(job))
        elif not self._park_if_paused(job):  # a paused backend's job waits without running
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
        self._last_health = 0.0  # paused or unavailable backends are checked again now
        log.info("config reloaded by worker", reloaded_backends=closed)
        self.preload()

    def _requeue_waiting(self) -> None:
        now = time.monotonic()
        if self.disk.full and self.disk.low():
            return  # nothing may start until space is back (low() ends the episode when it is)
        disk_back = self.disk.episodes != self._disk_episodes
        if not disk_back and now - self._last_health < self.config.sdapi.health_interval:
            return
        self._last_health, self._disk_episodes = now, self.disk.episodes
        waiting = self.ledger.by_state("waiting")
        healthy: dict[str, bool] = {}
        for job in waiting:
            name = backend_for(job.params, self.defaults[job.kind])
            if name not in healthy:
                if name in self.paused:
                    self.pool.forget(name)  # restarted by the check: a replaced key file is read
                healthy[name] = self._healthy(job.kind, name)
                if healthy[name] and self.paused.pop(name, None) is not None:
                    log.info("backend accepted again; its jobs resume", backend=name)
            what = "disk space" if disk_back else "backend"
            if healthy[name] and self.ledger.transition(job.id, "waiting", "queued", note=f"{what} back"):
                self._waiting_logged.discard(name)
                log.info(f"{what} is back; job re-queued", job_id=job.id, backend=name)

    def _healthy(self, kind: str, name: str) -> bool:
        try:
            self.pool.get(kind, name).health()
            return True
        except AstrowatchError:
            return False

    # -- one job ----------------------------------------------------------------------------------
    def execute(self, job: Job) -> None:
        structlog.contextvars.bind_contextvars(job_id=job.id, user=job.user, worker=self.name)
        self.current = job.id
        self.progress.start(job.id)
        t0 = time.monotonic()
        try:
            self._produce_and_publish(job, t0)
        except Exception as exc:
            if (full := as_disk_full(exc)) is not None:
                self.disk.report(full)
            self._until_recorded(partial(self._on_error, job, exc, t0))
        finally:
            self.current = None
            self.progress.clear()
            structlog.contextvars.unbind_contextvars("job_id", "user", "worker")

    def _on_error(self, job: Job, exc: Exception, t0: float) -> None:
        """The job's next state, from the error's class alone."""
        full = as_disk_full(exc)
        if full is not None:  # the machine's fault: checked first, whatever wrapped it
            self._disk_wait(job)
        elif isinstance(exc, CredentialsRejected):  # key revoked, quota gone: the backend pauses
            self._pause_backend(backend_for(job.params, self.defaults[job.kind]), exc)
            self._park_if_paused(job)
        elif isinstance(exc, BackendUnavailable):
            self._wait(job, exc)
        elif isinstance(exc, Interrupted):
            self.ledger.transition(job.id, "running", "queued", attempts=max(job.attempts - 1, 0), note=str(exc))
            log.warning("job interrupted; it resumes at the next start")
        elif isinstance(exc, AstrowatchError):
            self._failed_attempt(job, exc, t0)
        else:
            log.exception("unexpected error in job")  # called inside execute's except block
            self._failed_attempt(job, BackendError(f"{type(exc).__name__}: {exc}"), t0)

    def _until_recorded(self, step) -> bool:
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
                self._sleep(1.0)
            if self.cancel.stopping:
                return False
            self._sleep(0.2)  # a write failed above the threshold: do not spin

    def _produce_and_publish(self, job: Job, t0: float) -> None:
        ctx = JobContext(self.config, self.layout, self.pool.get, self.cancel, self.progress)
        log.info("job started", kind=job.kind, attempt=job.attempts, source=job.source)
        if job.kind == "astro" and job.params.get(SNAPSHOT_FROM):  # made by astrowatch api: that job's theme
            copy_snapshot(self.layout, replace(job, id=str(job.params[SNAPSHOT_FROM])), job.id)
        if job.kind == "astro":
            outcome = run_astro(job, ctx, self.defaults["astro"])
        else:
            outcome = run_enhance(job, ctx, self.locate_source(job), self.defaults["enhance"])
        run_s = time.monotonic() - t0
        timings = {"queued_s": round(max(time.time() - job.created_at - run_s, 0.0), 3), "run_s": round(run_s, 3)}
        timings.update((outcome.result.extra or {}).get("timings", {}))
        sidecar = write_outputs(job, self.layout, outcome, timings)
        r = outcome.result
        record = {"stem": result_stem(job), "image": sidecar["image"], "backend": r.backend, "model": r.model,
                  "params": outcome.params, "seed": sidecar["seed"], "description": r.description,
                  "cache": outcome.extra.get("cache")}
        logged: set[str] = set()
        self._until_recorded(lambda: self._publish(job, record, sidecar, run_s, logged))

    def _publish(self, job: Job, record: dict[str, Any], sidecar: dict[str, Any], run_s: float,
                 logged: set[str]) -> None:
        """Outputs into the inbox, ledger, logs.  Idempotent: run again after a full disk."""
        state = self.ledger.get(job.id).state
        if state == "running":
            if not self.ledger.transition(job.id, "running", "publishing", result=record):
                log.error("job was moved by someone else while running; outputs discarded")
                return
            state = "publishing"
            hold("publishing", job.id)
        if state != "publishing":
            return  # in the inbox already (a retry after a full disk), or not ours to publish
        if not logged:
            # the "ok" line is written while the job is ``publishing``: recovery adds it only if it
            # is missing, so every inbox job has exactly one, whenever a crash happens
            self._log_generation(job, "ok", run_s, sidecar=sidecar)
            logged.add(job.id)
            hold("publishing.logged", job.id)
        publish(job, self.layout)
        self.ledger.transition(job.id, "publishing", "inbox")
        self._record_stats(run_s)
        mark_stale(self.ledger, self.layout, job)
        log.info("result in inbox", seconds=round(run_s, 3), backend=record["backend"],
                 image=f"inbox/{job.user}/{sidecar['image']}")

    def locate_source(self, job: Job) -> Path:
        return locate_source(self.ledger, self.layout, job)

    def _wait(self, job: Job, exc: BackendUnavailable) -> None:
        name = backend_for(job.params, self.defaults[job.kind])
        self.ledger.transition(job.id, "running", "waiting", attempts=max(job.attempts - 1, 0), error=str(exc))
        if name not in self._waiting_logged:  # one line per outage, not one per job or second
            self._waiting_logged.add(name)
            log.warning("backend unavailable; jobs wait for it", backend=name, reason=str(exc))

    def _disk_wait(self, job: Job) -> None:
        """The disk is full: the job waits, its attempt not counted, and its partial outputs go."""
        if self.ledger.get(job.id).state != "running":
            return
        shutil.rmtree(self.layout.work_dir(job.id), ignore_errors=True)
        self.ledger.transition(job.id, "running", "waiting", attempts=max(job.attempts - 1, 0),
                               error=self.disk.reason())
    def _pause_backend(self, name: str, exc: CredentialsRejected) -> None:
        if name not in self.paused:
            log.warning("backend paused: credentials or quota refused; its jobs wait (fix it, then "
                        "SIGHUP or wait for the next health check)", backend=name, reason=str(exc))
        self.paused[name] = str(exc)

    def _park_if_paused(self, job: Job) -> bool:
        """A claimed job of a paused backend goes back to ``waiting`` without running."""
        name = backend_for(job.params, self.defaults[job.kind])
        if name not in self.paused:
            return False
        self.ledger.transition(job.id, "running", "waiting", attempts=max(job.attempts - 1, 0),
                               error=f"backend {name} paused: {self.paused[name]}", note="backend paused")
        return True

    def _failed_attempt(self, job: Job, exc: AstrowatchError, t0: float) -> None:
        duration = time.monotonic() - t0
        retries = self.config.retries
        if exc.retryable and job.attempts < retries.max_attempts:
            delay = min(retries.backoff_seconds * 2 ** (job.attempts - 1), retries.backoff_max_seconds)
            self.ledger.transition(job.id, "running", "queued", error=str(exc), not_before=time.time() + delay,
                                   note="retry")
            self._log_generation(job, "retry", duration, error=str(exc))
            log.warning("attempt failed; will retry", error=str(exc), attempt=job.attempts, retry_in_s=delay)
            return
        reason = str(exc) if not exc.retryable else f"{exc} (after {job.attempts} attempts)"
        self.fail(job, reason, cause=FAILED_FOR_INPUT if isinstance(exc, InputError) else type(exc).__name__)
        self._log_generation(job, "failed", duration, error=reason)

    def fail(self, job: Job, reason: str, *, cause: str | None = None) -> None:
        """``cause`` (the history note: :data:`FAILED_FOR_INPUT` or the exception class) tells ingest
        whether the same file may be tried again, and the metrics the failure's reason class."""
        if self.ledger.transition(job.id, "running", "failing", error=reason, note=cause) \
                or self.ledger.get(job.id).state == "failing":  # again, after a full disk
            hold("failing", job.id)
            finish_failed(self.ledger, self.layout, self.ledger.get(job.id))

    def _record_stats(self, seconds: float) -> None:
        s = self.stats
        s["jobs"] += 1
        s["seconds"] += seconds
        s["last_seconds"] = round(seconds, 3)
        if s["first_seconds"] is None:
            s["first_seconds"] = round(seconds, 3)

    def _log_generation(self, job: Job, status: str, duration: float, *, sidecar: dict | None = None,
                        error: str | None = None) -> None:
        log_generation(self.layout, job, status, duration, sidecar=sidecar, error=error,
                       default_backend=self.defaults.get(job.kind), worker=self.name, device=self.pool.device)
