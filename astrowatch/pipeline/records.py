"""What a generation attempt leaves behind, outside the ledger: one ``logs/generations.jsonl``
line per attempt, and for a failure its ``failed/`` entry.  Used by the worker and, after a crash,
by recovery (so both write exactly the same records)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.core.jobs import JobState
from astrowatch.pipeline.publish import result_stem, write_failed
from astrowatch.storage import safefs
from astrowatch.storage.jsonlog import append_jsonl, read_jsonl_all

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.worker")

def log_generation(layout: Layout, job: Job, status: str, duration: float, *, sidecar: dict[str, Any] | None = None,
                   error: str | None = None, default_backend: str | None = None, worker: str | None = None,
                   device: str | None = None) -> None:
    """One line of ``logs/generations.jsonl`` (one per generation attempt)."""
    sc = sidecar or {}
    append_jsonl(layout.generations_log, root=layout.root, record={
        "job_id": job.id, "kind": job.kind, "user": job.user, "source": job.source,
        "source_sha256": job.source_sha256, "attempt": job.attempts,
        "backend": sc.get("backend") or job.params.get("backend") or default_backend,
        "model": sc.get("model"), "prompt": sc.get("prompt"), "negative_prompt": sc.get("negative_prompt"),
        "seed": sc.get("seed"), "params": sc.get("params", job.params), "duration_s": round(duration, 3),
        "output": f"inbox/{job.user}/{sc['image']}" if sc.get("image") else None,
        "cache": sc.get("cache"), **_ran_on(sc, worker, device), "status": status,
        "error": error,
    })


def log_published_once(layout: Layout, job: Job) -> bool:
    """Recovery of a ``publishing`` job: its "ok" line, unless the worker wrote it before the crash."""
    path = layout.generations_log
    if any(r.get("job_id") == job.id and r.get("status") == "ok" for r in read_jsonl_all(path, root=layout.root)):
        return False
    sidecar = safefs.read_json_or_none(layout.inbox_dir(job.user) / f"{result_stem(job)}.json", root=layout.root)
    if not isinstance(sidecar, dict):
        sidecar = {}
    if not sidecar:  # moved on by a reviewer already: what the ledger recorded at publishing
        sidecar = {k: v for k, v in (job.result or {}).items() if k != "description"}
    raw_timings = sidecar.get("timings")
    timings: dict[str, Any] = raw_timings if isinstance(raw_timings, dict) else {}
    log_generation(layout, job, "ok", float(timings.get("run_s") or 0.0), sidecar=sidecar,
                   worker="recovery")
    return True


def _ran_on(sidecar: dict[str, Any], thread: str | None, device: str | None) -> dict[str, Any]:
    """Which worker ran the attempt: the remote one (executor: celery) or this thread."""
    remote = (sidecar.get("backend_extra") or {}).get("remote")
    if remote:
        return {"worker": remote.get("worker"), "device": remote.get("device"), "dispatcher": thread}
    return {"worker": thread, "device": device}


def finish_failed(ledger: Ledger, layout: Layout, job: Job) -> None:
    """Idempotent end of a failure: the ``failed/`` entry, then the final state."""
    entry = write_failed(job, layout, job.error or "unknown error")
    ledger.transition(job.id, JobState.FAILING, JobState.FAILED)
    log.error("job failed", job_id=job.id, user=job.user, reason=job.error, entry=layout.rel(entry))
