"""Start-up recovery: finish what a crash (SIGKILL, power loss) left half done.

- ``running``    -> the job was interrupted: back to ``queued`` (its attempt stays counted), or
                    ``failing`` when it has used ``retries.max_attempts``; its work folder is wiped;
- ``publishing`` -> publish again (idempotent), then ``inbox``;
- ``deciding``   -> finish the decision again (idempotent);
- ``failing``    -> write the ``failed/`` entry again (idempotent), then ``failed``.
"""

from __future__ import annotations

import shutil

import structlog

from astrowatch.core.config import Config
from astrowatch.pipeline.freshness import mark_stale
from astrowatch.pipeline.publish import publish
from astrowatch.pipeline.records import finish_failed, log_published_once
from astrowatch.review.reviewer import Reviewer
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

log = structlog.get_logger("astrowatch.recovery")


def recover(config: Config, layout: Layout, ledger: Ledger, reviewer: Reviewer) -> dict[str, int]:
    counts = {"resumed": 0, "failed": 0, "published": 0, "decided": 0}
    for job in ledger.by_state("running"):
        shutil.rmtree(layout.work_dir(job.id), ignore_errors=True)
        if job.attempts >= config.retries.max_attempts:
            reason = f"interrupted {job.attempts} times (the daemon stopped or crashed during the job)"
            if ledger.transition(job.id, "running", "failing", error=reason, note="Interrupted"):
                finish_failed(ledger, layout, ledger.get(job.id))
                counts["failed"] += 1
        elif ledger.transition(job.id, "running", "queued", note="resumed after restart"):
            log.info("interrupted job resumed", job_id=job.id, user=job.user, attempts=job.attempts)
            counts["resumed"] += 1
    for job in ledger.by_state("publishing"):
        publish(job, layout)
        log_published_once(layout, job)
        ledger.transition(job.id, "publishing", "inbox", note="published after restart")
        mark_stale(ledger, layout, job)
        counts["published"] += 1
    for job in ledger.by_state("deciding"):
        reviewer.finish(job, again=True)
        counts["decided"] += 1
    for job in ledger.by_state("failing"):
        finish_failed(ledger, layout, job)
        counts["failed"] += 1
    _clean_work(layout, ledger)
    if any(counts.values()):
        log.info("recovered after restart", **counts)
    return counts


def _clean_work(layout: Layout, ledger: Ledger) -> None:
    """Remove work folders of jobs that are not running (left by a crash)."""
    work = layout.work
    if not work.is_dir():
        return
    for entry in work.iterdir():
        try:
            state = ledger.get(entry.name).state
        except Exception:
            state = None
        if state not in ("running", "queued"):
            shutil.rmtree(entry, ignore_errors=True)
