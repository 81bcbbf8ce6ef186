"""The daemon's guard over its own threads: no thread dies unnoticed, no job runs forever.

- **A dead thread.**  :meth:`Guard.install` sets :func:`threading.excepthook`: an exception that
  escapes any thread is logged with its traceback and counted (``thread_deaths``, in the state
  file and in ``/metrics`` as ``astrowatch_thread_deaths_total``, carried over from the previous
  run's state file).  A worker thread's death is *fatal*: the daemon stops with
  :data:`EXIT_THREAD_DIED` (systemd restarts it, recovery resumes the jobs) rather than run
  half-alive.  Other threads are helpers (a backend's progress poller) or supervised and
  restarted whole (the watcher's observer, then a full rescan): counted and logged only.
- **A stuck job.**  A job's token has a deadline (``limits.job_timeout_seconds``) that the
  backends' stop points honour; a worker whose job is still running :func:`stuck_grace` seconds
  past it is stuck in a call that ignores it (a thread cannot be killed in Python).  The daemon
  then records the timeout against that job — a retryable error whose attempt counts, so it is
  retried or failed with the reason — and stops with :data:`EXIT_THREAD_DIED`.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from astrowatch.core.config import RetriesConfig
from astrowatch.core.errors import JobTimedOut
from astrowatch.core.jobs import JobState
from astrowatch.pipeline.records import finish_failed
from astrowatch.runtime.policy import Action, next_step
from astrowatch.runtime.worker import Worker
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

log = structlog.get_logger("astrowatch.daemon")
EXIT_THREAD_DIED = 70  # EX_SOFTWARE: not 78 (RestartPreventExitStatus), so systemd restarts us


def stuck_grace(limit_s: float) -> float:
    """Seconds past a job's deadline before its worker counts as stuck: time for the backend to
    reach its next stop point (a diffusion step on a CPU, a VAE decode, a WebUI ``/interrupt``)."""
    return min(max(limit_s / 10.0, 5.0), 120.0)


def timeout_reason(limit_s: float) -> str:
    return f"ran longer than limits.job_timeout_seconds={limit_s:g} s"


def previous_counts(state_path: Path) -> dict[str, int]:
    """The counters of the last run's state file (zero when there is none or it is unreadable)."""
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        counts = state.get("supervision") or {}
        return {key: int(counts.get(key) or 0) for key in ("thread_deaths", "jobs_stuck")}
    except (OSError, ValueError, TypeError, AttributeError):
        return {"thread_deaths": 0, "jobs_stuck": 0}


class Guard:
    def __init__(self, counts: Mapping[str, int] | None = None, *, wake: Callable[[], None] = lambda: None) -> None:
        counts = counts or {}
        self.thread_deaths = int(counts.get("thread_deaths", 0))
        self.jobs_stuck = int(counts.get("jobs_stuck", 0))
        self.last: dict[str, Any] | None = None  # the last death or stuck job, for status
        self.fatal: str | None = None  # why the daemon must stop now (None: all is well)
        self._seen: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # the threads already counted
        self._lock = threading.Lock()
        self._wake = wake  # the main loop, so it acts on a fatal event at once
        self._previous_hook: Callable[[threading.ExceptHookArgs], Any] | None = None

    # -- dead threads ------------------------------------------------------------------------------
    def install(self) -> None:
        self._previous_hook = threading.excepthook
        threading.excepthook = self.excepthook

    def uninstall(self) -> None:
        if self._previous_hook is not None and threading.excepthook == self.excepthook:
            threading.excepthook = self._previous_hook
        self._previous_hook = None

    def excepthook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return  # threading's own rule: a thread's SystemExit is silent
        thread = args.thread
        name = thread.name if thread is not None else "?"
        log.error("thread died", thread=name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        error = f"{args.exc_type.__name__}: {args.exc_value}"
        self.died(thread, name, error, fatal=isinstance(thread, Worker))

    def died(self, thread: threading.Thread | None, name: str, error: str, *, fatal: bool) -> None:
        with self._lock:
            if thread is not None:
                if thread in self._seen:
                    return
                self._seen.add(thread)
            self.thread_deaths += 1
            self.last = {"thread": name, "error": error, "at": time.time()}
            if fatal and self.fatal is None:
                self.fatal = f"thread {name} died: {error}"
        if fatal:
            self._wake()

    def check_workers(self, workers: Sequence[Worker], *, stopping: bool) -> None:
        """A worker that ended without the hook seeing an exception (its run() returned early)."""
        for worker in workers:
            if not worker.is_alive() and not stopping and worker.ident is not None:
                self.died(worker, worker.name, "the thread ended", fatal=True)

    # -- stuck jobs ----------------------------------------------------------------------------------
    def stuck(self, workers: Sequence[Worker], limit_s: float, now: float | None = None) -> list[Worker]:
        """The workers whose job has run past its deadline plus :func:`stuck_grace`."""
        now = time.monotonic() if now is None else now
        late = limit_s + stuck_grace(limit_s)
        return [w for w in workers if w.current is not None and w.started is not None and now - w.started > late]

    def job_stuck(self, worker_name: str, job_id: str, limit_s: float) -> None:
        with self._lock:
            self.jobs_stuck += 1
            self.last = {"thread": worker_name, "job_id": job_id, "error": timeout_reason(limit_s), "at": time.time()}
            if self.fatal is None:
                self.fatal = (f"worker {worker_name} is stuck in job {job_id}: it "
                              f"{timeout_reason(limit_s)} and did not stop")
        self._wake()

    def facts(self) -> dict[str, Any]:
        """For the state file (``supervision``)."""
        return {"thread_deaths": self.thread_deaths, "jobs_stuck": self.jobs_stuck, "last": self.last}


def record_timeout(ledger: Ledger, layout: Layout, retries: RetriesConfig, job_id: str, limit_s: float) -> str:
    """Write down that ``job_id`` (still ``running``) ran out of time, as the worker would have:
    retried after the back-off (the attempt counts) or failed with the reason.  Returns what was
    done; nothing when the job has moved meanwhile (its worker finished after all)."""
    job = ledger.get(job_id)
    if job.state != JobState.RUNNING:
        return "moved on"
    step = next_step(JobTimedOut(timeout_reason(limit_s)), job.attempts, retries)
    if step.action is Action.RETRY:
        ledger.transition(job.id, JobState.RUNNING, JobState.QUEUED, error=step.reason,
                          not_before=time.time() + step.delay, note="retry")
        return "retry"
    if ledger.transition(job.id, JobState.RUNNING, JobState.FAILING, error=step.reason, note=step.cause):
        finish_failed(ledger, layout, ledger.get(job.id))
    return "failed"
