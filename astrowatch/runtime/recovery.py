"""Start-up recovery: finish what a crash (SIGKILL, power loss) left half done.

- ``running``    -> the job was interrupted: back to ``queued`` (its attempt stays counted), or
                    ``failing`` when it has used ``retries.max_attempts``; its work folder is wiped;
- ``publishing`` -> publish again (idempotent), then ``inbox``;
- ``deciding``   -> finish the decision again (idempotent);
- ``failing``    -> write the ``failed/`` entry again (idempotent), then ``failed``.

Then the work folders of jobs that are neither running nor queued go — only those of jobs the
ledger *says* are elsewhere or unknown: while the ledger is busy or locked, a folder is left for
the next start.
"""

from __future__ import annotations

import shutil
import sqlite3

import structlog

from astrowatch.core.config import Config
from astrowatch.core.errors import LedgerError, NotFound
from astrowatch.core.jobs import JobState
from astrowatch.pipeline.freshness import mark_stale
from astrowatch.pipeline.publish import publish
from astrowatch.pipeline.records import finish_failed, log_published_once
from astrowatch.review.reviewer import Reviewer
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

log = structlog.get_logger("astrowatch.recovery")


def recover(config: Config, layout: Layout, ledger: Ledger, reviewer: Reviewer) -> dict[str, int]:
    counts = {"resumed": 0, "failed": 0, "published": 0, "decided": 0}
    for job in ledger.by_state(JobState.RUNNING):
        shutil.rmtree(layout.work_dir(job.id), ignore_errors=True)
        if job.attempts >= config.retries.max_attempts:
            reason = f"interrupted {job.attempts} times (the daemon stopped or crashed during the job)"
            if ledger.transition(job.id, JobState.RUNNING, JobState.FAILING, error=reason, note="Interrupted"):
                finish_failed(ledger, layout, ledger.get(job.id))
                counts["failed"] += 1
        elif ledger.transition(job.id, JobState.RUNNING, JobState.QUEUED, note="resumed after restart"):
            log.info("interrupted job resumed", job_id=job.id, user=job.user, attempts=job.attempts)
            counts["resumed"] += 1
    for job in ledger.by_state(JobState.PUBLISHING):
        publish(job, layout, ledger)
        log_published_once(layout, job)
        ledger.transition(job.id, JobState.PUBLISHING, JobState.INBOX, note="published after restart")
        mark_stale(ledger, layout, job)
        counts["published"] += 1
    for job in ledger.by_state(JobState.DECIDING):
        reviewer.finish(job, again=True)
        counts["decided"] += 1
    for job in ledger.by_state(JobState.FAILING):
        finish_failed(ledger, layout, job)
        counts["failed"] += 1
    clean_work(layout, ledger)
    if any(counts.values()):
        log.info("recovered after restart", **counts)
    return counts


def clean_work(layout: Layout, ledger: Ledger) -> int:
    """Remove the work folders of jobs that are not running or queued (left by a crash), and of
    jobs the ledger does not know.  A folder whose job the ledger cannot look up now (busy, locked,
    refused) stays: it is looked at again at the next start.  Returns how many folders stayed."""
    work = layout.work
    if not work.is_dir():
        return 0
    kept = 0
    for entry in work.iterdir():
        try:
            state: str | None = ledger.get(entry.name).state
        except NotFound:
            state = None
        except (sqlite3.Error, LedgerError) as exc:  # busy or locked: not an answer about the job
            log.warning("ledger busy; work folder kept until the next start", job_id=entry.name, error=str(exc))
            kept += 1
            continue
        if state not in (JobState.RUNNING, JobState.QUEUED):
            shutil.rmtree(entry, ignore_errors=True)
    return kept
