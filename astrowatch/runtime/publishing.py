"""One job's outcome, written down: its outputs produced and published into the inbox, a retry
scheduled, or the failure recorded — each step idempotent, so it can run again after a full disk
and recovery can finish it after a crash."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from astrowatch.backends.base import CancelToken, Progress
from astrowatch.backends.pool import BackendPool
from astrowatch.core.config import Config
from astrowatch.core.jobs import JobKind, JobState
from astrowatch.pipeline.delivery import copy_snapshot
from astrowatch.pipeline.freshness import mark_stale
from astrowatch.pipeline.marking import marker_for
from astrowatch.pipeline.publish import locate_source, publish, result_stem, with_digests, write_outputs
from astrowatch.pipeline.records import finish_failed, log_generation
from astrowatch.pipeline.seeds import SeedBook
from astrowatch.pipeline.steps import SNAPSHOT_FROM, JobContext, run_astro, run_enhance
from astrowatch.runtime.diskwait import DiskWaits
from astrowatch.runtime.worker_stats import WorkerStats, record_job
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.worker")


class Publisher:
    def __init__(self, config: Config, layout: Layout, ledger: Ledger, pool: BackendPool,
                 defaults: dict[str, str], *, cancel: CancelToken, progress: Progress, disk: DiskWaits,
                 stats: WorkerStats, worker: str) -> None:
        self.config = config
        self.defaults = defaults  # kind -> backend name ("auto" already resolved); both replaced on reload
        self.layout = layout
        self.ledger = ledger
        self.pool = pool
        self.cancel = cancel
        self.progress = progress
        self.disk = disk
        self.stats = stats
        self.worker = worker

    def produce_and_publish(self, job: Job, t0: float, *, cancel: CancelToken | None = None) -> None:
        """``cancel``: the job's own token (its deadline, :meth:`CancelToken.for_job`)."""
        ctx = JobContext(self.config, self.layout, self.pool.get, cancel or self.cancel, self.progress,
                         SeedBook(self.ledger, self.layout, self.config))
        log.info("job started", kind=job.kind, attempt=job.attempts, source=job.source)
        if job.kind == JobKind.ASTRO and job.params.get(SNAPSHOT_FROM):  # made by astrowatch api: that job's theme
            copy_snapshot(self.layout, replace(job, id=str(job.params[SNAPSHOT_FROM])), job.id)
        if job.kind == JobKind.ASTRO:
            outcome = run_astro(job, ctx, self.defaults[JobKind.ASTRO])
        else:
            outcome = run_enhance(job, ctx, self.locate_source(job), self.defaults[JobKind.ENHANCE])
        run_s = time.monotonic() - t0
        timings = {"queued_s": round(max(time.time() - job.created_at - run_s, 0.0), 3), "run_s": round(run_s, 3)}
        timings.update((outcome.result.extra or {}).get("timings", {}))
        digests: dict[str, str] = {}
        sidecar = write_outputs(job, self.layout, outcome, timings, marker=marker_for(self.config), digests=digests)
        r = outcome.result
        record = {"stem": result_stem(job), "image": sidecar["image"], "backend": r.backend, "model": r.model,
                  "params": outcome.params, "seed": sidecar["seed"], "description": r.description,
                  "cache": outcome.extra.get("cache")}
        if sidecar.get("variants"):  # several images: each one's name and seed (their sha256 at publish)
            record["variants"] = sidecar["variants"]
        record = with_digests(record, digests)  # each image's sha256, recorded with -> publishing
        logged: set[str] = set()
        self.disk.until_recorded(lambda: self._publish(job, record, sidecar, run_s, logged))

    def _publish(self, job: Job, record: dict[str, Any], sidecar: dict[str, Any], run_s: float,
                 logged: set[str]) -> None:
        """Outputs into the inbox, ledger, logs.  Idempotent: run again after a full disk."""
        state = self.ledger.get(job.id).state
        if state == JobState.RUNNING:
            if not self.ledger.transition(job.id, JobState.RUNNING, JobState.PUBLISHING, result=record):
                log.error("job was moved by someone else while running; outputs discarded")
                return
            state = JobState.PUBLISHING
        if state != JobState.PUBLISHING:
            return  # in the inbox already (a retry after a full disk), or not ours to publish
        if not logged:
            # the "ok" line is written while the job is ``publishing``: recovery adds it only if it
            # is missing, so every inbox job has exactly one, whenever a crash happens
            self.log_generation(job, "ok", run_s, sidecar=sidecar)
            logged.add(job.id)
        publish(job, self.layout, self.ledger)
        self.ledger.transition(job.id, JobState.PUBLISHING, JobState.INBOX)
        record_job(self.stats, run_s)
        mark_stale(self.ledger, self.layout, job)
        log.info("result in inbox", seconds=round(run_s, 3), backend=record["backend"],
                 image=f"inbox/{job.user}/{sidecar['image']}")

    def locate_source(self, job: Job) -> Path:
        return locate_source(self.ledger, self.layout, job, max_bytes=self.config.limits.max_image_bytes)

    def retry(self, job: Job, error: str, delay: float, duration: float) -> None:
        """The attempt failed; the job is queued again, not before ``delay`` seconds."""
        self.ledger.transition(job.id, JobState.RUNNING, JobState.QUEUED, error=error,
                               not_before=time.time() + delay, note="retry")
        self.log_generation(job, "retry", duration, error=error)
        log.warning("attempt failed; will retry", error=error, attempt=job.attempts, retry_in_s=delay)

    def requeue(self, job: Job, why: str) -> None:
        """Interrupted by shutdown: queued again, the attempt not counted."""
        self.ledger.transition(job.id, JobState.RUNNING, JobState.QUEUED, attempts=max(job.attempts - 1, 0),
                               note=why)
        log.warning("job interrupted; it resumes at the next start")

    def fail(self, job: Job, reason: str, *, cause: str | None = None) -> None:
        """``cause`` (the history note: :data:`FAILED_FOR_INPUT` or the exception class) tells ingest
        whether the same file may be tried again, and the metrics the failure's reason class."""
        if self.ledger.transition(job.id, JobState.RUNNING, JobState.FAILING, error=reason, note=cause) \
                or self.ledger.get(job.id).state == JobState.FAILING:  # again, after a full disk
            finish_failed(self.ledger, self.layout, self.ledger.get(job.id))

    def log_generation(self, job: Job, status: str, duration: float, *, sidecar: dict[str, Any] | None = None,
                       error: str | None = None) -> None:
        log_generation(self.layout, job, status, duration, sidecar=sidecar, error=error,
                       default_backend=self.defaults.get(job.kind), worker=self.worker, device=self.pool.device)
