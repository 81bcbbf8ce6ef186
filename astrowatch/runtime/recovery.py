"""Start-up recovery: finish what a crash (SIGKILL, power loss) left half done.

- ``running``    -> the job was interrupted from outside (SIGKILL, the OOM killer, power loss):
                    back to ``queued`` with its attempt *given back* (history note
                    :data:`RESUMED`), so only real failures and timeouts count against a job; its
                    work folder is wiped.  A job the daemon died under :data:`MAX_INTERRUPTIONS`
                    times in a row is failed with that reason instead, so one input cannot keep
                    the service in a crash loop;
- ``publishing`` -> publish again (idempotent), then ``inbox``;
- ``deciding``   -> finish the decision again (idempotent);
- ``failing``    -> write the ``failed/`` entry again (idempotent), then ``failed``.

Every job's step is guarded: an error there that comes from the tree (a squatter, a symlink, a
bad file) is logged with its traceback, the job is left in its state for the next start (or
failed, when it was ``running``), and recovery goes on — the start never fails because of
something in the shared tree.  The ledger's own errors (busy, locked, a full disk) still stop the
start: they are no answer about any job.

Then the work folders of jobs that are neither running nor queued go — only those of jobs the
ledger *says* are elsewhere or unknown: while the ledger is busy or locked, a folder is left for
the next start.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from functools import partial

import structlog

from astrowatch.core.config import Config
from astrowatch.core.errors import LedgerError, NotFound, as_disk_full
from astrowatch.core.jobs import JobState
from astrowatch.pipeline.freshness import mark_stale
from astrowatch.pipeline.publish import publish
from astrowatch.pipeline.records import finish_failed, log_published_once
from astrowatch.review.reviewer import Reviewer
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.recovery")
RESUMED = "resumed after restart (interrupted from outside; attempt not counted)"
MAX_INTERRUPTIONS = 10  # the daemon died this many times running one job: that job is set aside

FAILED_COUNT = "failed"  # the key of the recovery counts for jobs it had to fail


def recover(config: Config, layout: Layout, ledger: Ledger, reviewer: Reviewer) -> dict[str, int]:
    counts = {"resumed": 0, FAILED_COUNT: 0, "published": 0, "decided": 0, "parked": 0}

    def guarded(job: Job, what: str, step: Callable[[], str | None]) -> None:
        try:
            outcome = step()
        except (sqlite3.Error, LedgerError):
            raise  # the ledger, not the job: no answer; the start stops (see above)
        except Exception as exc:
            if as_disk_full(exc) is not None:
                raise  # exit 73, systemd retries once there is room
            log.exception(f"recovery could not {what}; the job is left for the next start",
                          job_id=job.id, user=job.user, state=job.state, error=str(exc))
            counts["parked"] += 1
            return
        if outcome:
            counts[outcome] += 1

    for job in ledger.by_state(JobState.RUNNING):
        guarded(job, "resume the interrupted job", partial(_resume, ledger, layout, job))
    for job in ledger.by_state(JobState.PUBLISHING):
        guarded(job, "publish the result", partial(_publish, ledger, layout, job))
    for job in ledger.by_state(JobState.DECIDING):
        guarded(job, "finish the decision", partial(_decide, reviewer, job))
    for job in ledger.by_state(JobState.FAILING):
        guarded(job, "write the failed/ entry", partial(_fail, ledger, layout, job))
    clean_work(layout, ledger)
    if any(counts.values()):
        log.info("recovered after restart", **counts)
    return counts


def _resume(ledger: Ledger, layout: Layout, job: Job) -> str | None:
    shutil.rmtree(layout.work_dir(job.id), ignore_errors=True)
    interruptions = 1 + sum(1 for h in ledger.history(job.id) if h.get("note") == RESUMED)
    if interruptions >= MAX_INTERRUPTIONS:
        reason = (f"the daemon stopped {interruptions} times while running this job (killed, out of "
                  "memory or power lost); it is set aside")
        if ledger.transition(job.id, JobState.RUNNING, JobState.FAILING, error=reason, note="Interrupted"):
            finish_failed(ledger, layout, ledger.get(job.id))
            return FAILED_COUNT
        return None
    if ledger.transition(job.id, JobState.RUNNING, JobState.QUEUED, attempts=max(job.attempts - 1, 0), note=RESUMED):
        log.info("interrupted job resumed; the attempt is not counted", job_id=job.id, user=job.user,
                 attempts=max(job.attempts - 1, 0), interruptions=interruptions)
        return "resumed"
    return None


def _publish(ledger: Ledger, layout: Layout, job: Job) -> str:
    publish(job, layout, ledger)
    log_published_once(layout, job)
    ledger.transition(job.id, JobState.PUBLISHING, JobState.INBOX, note="published after restart")
    mark_stale(ledger, layout, job)
    return "published"


def _decide(reviewer: Reviewer, job: Job) -> str:
    reviewer.finish(job, again=True)
    return "decided"


def _fail(ledger: Ledger, layout: Layout, job: Job) -> str:
    finish_failed(ledger, layout, job)
    return FAILED_COUNT


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
