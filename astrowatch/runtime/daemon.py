"""The daemon: wires watcher, ledger, review and workers together and supervises them.

Threads: the main thread (this loop: stability tracker, ingest, decisions, rescans,
supervision, systemd notifications), watchdog's observer threads (record paths only), and one
worker thread per device (all model work).  Supervision is a list of periodic chores
(:mod:`astrowatch.runtime.chores`).  Signal handlers only set flags (huey's rule):
SIGTERM/SIGINT once = finish the current image and exit; twice = interrupt it (the job is
resumed at the next start); SIGHUP = re-read the config.  With nothing generating, the daemon
exits within a few seconds of SIGTERM: an idle worker busy elsewhere (a health check) is not
waited for beyond :data:`IDLE_JOIN_S`.

A worker thread that dies, or stays stuck in a job past its deadline, stops the daemon with
exit code 70 (:mod:`astrowatch.runtime.guard`): systemd restarts it whole.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from astrowatch.backends.base import CancelToken
from astrowatch.backends.registry import resolve_auto
from astrowatch.core.config import Config
from astrowatch.core.errors import AstrowatchError, ConfigError, as_disk_full
from astrowatch.core.jobs import BackendName, JobKind, JobState
from astrowatch.intake.ingest import Ingest
from astrowatch.intake.watcher import StabilityTracker, Watcher, scan
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.chores import Chore, Chores
from astrowatch.runtime.executor import dispatchers
from astrowatch.runtime.guard import EXIT_THREAD_DIED, Guard, previous_counts, record_timeout
from astrowatch.runtime.memory import Trimmer
from astrowatch.runtime.notify import Notifier
from astrowatch.runtime.recovery import recover
from astrowatch.runtime.settings import load_service_config
from astrowatch.runtime.statefile import state_record, status_line, write_state_file
from astrowatch.runtime.webhooks import WebhookSenders, record_skipped
from astrowatch.runtime.worker import Worker, job_deadline
from astrowatch.storage.diskspace import DiskGuard
from astrowatch.storage.layout import Layout, display
from astrowatch.storage.ledger import Ledger
from astrowatch.storage.lock import DaemonLock
from astrowatch.storage.retention import apply as apply_retention

log = structlog.get_logger("astrowatch.daemon")
IDLE_TICK = 0.5  # longest sleep of the main loop: bounds signal handling and supervision delays
DISK_RETRY_S = 2.0  # a file that could not be recorded (disk full) is taken again after this
STATUS_IDLE_EVERY = 2.0  # seconds between state-file writes / STATUS= when idle
STATUS_BUSY_EVERY = 0.75  # ... and while a job runs: with the 0.5 s tick, once a second (progress)
OUTBOX_PRUNE_EVERY = 3600.0  # seconds between prunes of events and webhook messages past events.retention_days
MEMORY_TRIM_EVERY = 1.0  # seconds between looks at whether the daemon went idle after work (runtime/memory.py)
IDLE_JOIN_S = 3.0  # at shutdown, how long a worker with no job in hand is waited for
# A burst (20,000 photos dropped, or as many decisions) is taken in batches: after TICK_BUDGET_S of
# them the loop goes round (signals, the watchdog, status), so it never stalls behind a backlog.
TICK_BATCH = 8  # files taken from the stability tracker at a time
TICK_BUDGET_S = 0.25


def resolve_backends(config: Config) -> dict[str, str]:
    chosen = {}
    for kind in JobKind:
        name = getattr(config, kind).backend
        if name == BackendName.AUTO:
            name, why = resolve_auto(kind, config)
            log.info("backend chosen", kind=kind.value, backend=name, why=why)
        chosen[kind.value] = name  # plain strings: logged and written to the state file as they are
    return chosen


class Daemon:
    """One daemon per data folder: it holds the folder's lock (``state/daemon.lock``) from its
    construction until :meth:`run` returns (or :meth:`close`), so a second one is refused before it
    opens anything."""

    def __init__(self, config: Config, *, drain: bool = False, drain_timeout: float | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.drain = drain
        self.drain_timeout = drain_timeout
        self.notifier = notifier or Notifier()
        self.layout = Layout(config.data_dir)
        self.cancel = CancelToken()
        self.tracker = StabilityTracker(config.watch.stability_seconds)
        self.workers: list[Worker] = []
        self.defaults: dict[str, str] = {}
        self._signals: list[int] = []
        self._wakeup = threading.Event()
        self._dirs_to_scan: set[str] = set()
        self._dirs_lock = threading.Lock()
        self.disk = DiskGuard(self.layout.root, config.limits.min_free_mb)
        self._disk_episodes = 0
        self.started_at = time.time()
        self.trimmer = Trimmer()
        self.chores = Chores(self._chores(), guard=self._guard_chore)
        self._lock = DaemonLock(self.layout.state).acquire()
        try:
            self.layout.ensure()
            self.ledger = Ledger(self.layout.ledger_path)
            self.webhooks = WebhookSenders(config, self.ledger)  # a bad secret_file: ConfigError, exit 78
        except BaseException:
            self._lock.release()
            raise
        self.guard = Guard(previous_counts(self.layout.daemon_state_path), wake=self._wakeup.set)
        self.reviewer = Reviewer(self.config, self.layout, self.ledger, wake=self._wake_workers)
        self.ingest = Ingest(self.config, self.layout, self.ledger, self.reviewer, wake=self._wake_workers)
        self.watcher = Watcher(self.layout, polling=self.config.watch.polling,
                               polling_interval=self.config.watch.polling_interval,
                               on_file=self._on_file, on_dir=self._queue_dir_scan)

    def close(self) -> None:
        """Release the ledger and the data folder's lock (:meth:`run` does it when it returns)."""
        self.ledger.close()
        self._lock.release()

    # -- start-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from astrowatch.pipeline.marking import marker_for

        marker = marker_for(self.config)  # a bad C2PA key or certificate stops the start, naming the file
        log.info("generated images marked", marking=marker.describe())
        try:
            recover(self.config, self.layout, self.ledger, self.reviewer)
        except OSError as exc:  # a full disk: one line and exit code 73 (systemd restarts us), no traceback
            full = as_disk_full(exc)
            if full is None:
                raise
            raise full from exc
        self.defaults = resolve_backends(self.config)
        self.notifier.extend_timeout(900)  # loading a model can take minutes
        self.workers = [self._new_worker(i, d) for i, d in enumerate(self._devices())]
        for worker in self.workers:
            worker.preload()
        self.watcher.start()
        self._guarded("scan the tree", self.rescan)

    def _devices(self) -> list[str | None]:
        if (remote := dispatchers(self.config)) is not None:
            return [None] * remote  # executor: celery: one dispatcher thread per job in flight
        if BackendName.SDXL in self.defaults.values() and self.config.sdxl.devices:
            return list(self.config.sdxl.devices)
        return [None]

    def _new_worker(self, index: int, device: str | None) -> Worker:
        return Worker(self.config, self.layout, self.defaults, self.cancel, device=device, index=index,
                      disk=self.disk)

    def _wake_workers(self) -> None:
        for worker in self.workers:
            worker.wake()

    def _queue_dir_scan(self, path: str) -> None:
        with self._dirs_lock:
            self._dirs_to_scan.add(path)
        self._wakeup.set()

    def rescan(self, only: Path | None = None) -> int:
        """Feed every candidate file that is not known unchanged to the stability tracker."""
        n = 0
        for path in scan(self.layout, only):
            if not self.ingest.known_unchanged(path):
                self.tracker.touch(path)
                n += 1
        return n

    # -- main loop --------------------------------------------------------------------------------
    def run(self) -> int:
        self.guard.install()
        try:
            return self._run()
        finally:
            self.guard.uninstall()
            self.close()  # the lock goes last: one daemon per data folder, for its whole life

    def _run(self) -> int:
        self._install_signals()
        self.setup()
        for worker in self.workers:
            worker.start()
        self.webhooks.start()
        self.notifier.ready(self.status_line())
        log.info("ready", data_dir=str(self.layout.root), backends=self.defaults, drain=self.drain)
        status = 0
        try:
            while not self._handle_signals():
                self.tick()
                if self.guard.fatal is not None:
                    status = EXIT_THREAD_DIED
                    break
                if self.drain and (done := self._drain_done()) is not None:
                    status = done
                    break
                self._pause()
        finally:
            self.shutdown()
        if self.guard.fatal is not None:
            log.error("stopping: the daemon cannot go on half-alive; systemd restarts it",
                      why=self.guard.fatal, exit_code=EXIT_THREAD_DIED)
            return EXIT_THREAD_DIED
        return status

    def _drain_done(self) -> int | None:
        """None while a drain has work left; else its exit status (1 if the timeout expired)."""
        if self._drained():
            waiting = self.ledger.counts().get(JobState.WAITING, 0)
            log.info("drain complete", waiting_for_a_backend=waiting,
                     note="waiting jobs run when their backend is back" if waiting else None)
            return 0
        if self.drain_timeout is not None and time.time() - self.started_at > self.drain_timeout:
            log.error("drain timeout expired with work still pending; the current job is interrupted "
                      "and resumes at the next start", counts=self.ledger.counts())
            self.cancel.request_interrupt()
            return 1
        return None

    def _pause(self) -> None:
        """Sleep until the next file becomes due or a new event arrives (at most IDLE_TICK, which
        also bounds how long a signal waits): ingest latency stays in milliseconds and an idle
        daemon wakes twice a second."""
        deadline = self.tracker.next_deadline()
        timeout = IDLE_TICK if deadline is None else min(IDLE_TICK, max(deadline - time.monotonic(), 0.0))
        if self.notifier.watchdog_seconds:
            timeout = min(timeout, self.notifier.watchdog_seconds / 4)
        if timeout > 0 and not self._signals:
            self._wakeup.wait(timeout)
        self._wakeup.clear()

    def _on_file(self, path: str) -> None:
        self.tracker.touch(path)
        self._wakeup.set()

    def tick(self) -> None:
        until = time.monotonic() + TICK_BUDGET_S
        while not self._signals and time.monotonic() < until:  # bounded: the rest at the next turn
            batch = self.tracker.stable(limit=TICK_BATCH)  # with the (st_dev, st_ino) its check saw
            for due in batch:
                outcome = self._guarded("take file", self.ingest.handle, due.path, due.identity)
                self._guarded("record a skipped file", self._record_skipped, due.path, outcome)
            if len(batch) < TICK_BATCH:
                break
        with self._dirs_lock:
            dirs, self._dirs_to_scan = self._dirs_to_scan, set()
        for folder in dirs:
            self._guarded("scan new folder", self.rescan, Path(folder))
        self.chores.tick()

    def _guarded(self, what: str, fn: Any, *args: Any, chore: str | None = None) -> Any:
        """Bad input must never crash the daemon: log the error with the path and go on."""
        where = {"chore": chore} if chore else {}
        try:
            return fn(*args)
        except Exception as exc:
            full = as_disk_full(exc)
            if full is not None:  # not the input's fault: one log line per episode, retried soon
                self.disk.report(full)
                if what == "take file":
                    self.tracker.touch(args[0], delay=DISK_RETRY_S)
            elif isinstance(exc, AstrowatchError):
                log.error(f"could not {what}", path=display(args[0]) if args else None, error=str(exc), **where)
            else:
                log.exception(f"unexpected error: {what}", path=display(args[0]) if args else None, **where)
        return None

    def _guard_chore(self, name: str, fn: Any) -> Any:
        return self._guarded("supervise", fn, chore=name)

    # -- supervision: the periodic chores ---------------------------------------------------------
    def _chores(self) -> list[Chore]:
        return [
            Chore("watcher", self._supervise_watcher),
            Chore("rescan", self._rescan_all, every=lambda: self.config.watch.rescan_seconds or None,
                  last=time.monotonic()),
            Chore("workers", self._supervise_workers),
            # retention only while the disk is fine and no decision waits for space ("disk" below)
            Chore("retention", self._apply_retention, every=lambda: self.config.retention.check_seconds,
                  when=lambda: not self.disk.full and self.disk.episodes == self._disk_episodes and self._idle()),
            Chore("disk", self._watch_disk),
            Chore("webhooks", lambda: self.webhooks.restart_dead()),
            Chore("outbox", self._prune_outbox, every=lambda: OUTBOX_PRUNE_EVERY),
            Chore("watchdog", self.notifier.watchdog,
                  every=lambda: self.notifier.watchdog_seconds / 2 if self.notifier.watchdog_seconds else None,
                  when=self.healthy),
            # freed memory back to the system once idle after work: RSS does not keep each burst's peak
            Chore("memory", self._trim_memory, every=lambda: MEMORY_TRIM_EVERY),
            Chore("status", self._report_status,  # progress: state file at least once a second
                  every=lambda: STATUS_BUSY_EVERY if any(w.current for w in self.workers) else STATUS_IDLE_EVERY),
        ]

    def _supervise_watcher(self) -> None:
        if self.watcher.supervise():
            self.rescan()

    def _rescan_all(self) -> None:
        self.rescan()

    def _supervise_workers(self) -> None:
        """A dead worker, or one stuck in a job past its deadline, makes the daemon stop (non-zero)."""
        self.guard.check_workers(self.workers, stopping=self.cancel.stopping)
        self._check_stuck()

    def _check_stuck(self) -> list[Worker]:
        limit = job_deadline(self.config)
        if limit is None:
            return []
        stuck = self.guard.stuck(self.workers, limit)
        for worker in stuck:
            job_id = worker.current
            if job_id is None or self.guard.fatal is not None:
                continue
            done = record_timeout(self.ledger, self.layout, self.config.retries, job_id, limit)
            log.error("job stuck past its deadline: recorded against it; the daemon stops (its thread "
                      "cannot be killed)", job_id=job_id, worker=worker.name, outcome=done,
                      job_timeout_seconds=limit)
            self.guard.job_stuck(worker.name, job_id, limit)
        return stuck

    def _watch_disk(self) -> None:
        if self.disk.full:
            self.disk.low()  # ends the episode once space is back
        elif self.disk.episodes != self._disk_episodes:  # space is back: finish what it stopped
            self._disk_episodes = self.disk.episodes
            for job in self.ledger.by_state(JobState.DECIDING):
                self._guarded("finish a decision", self.reviewer.finish, job)

    def _apply_retention(self) -> float | None:
        done = apply_retention(self.config.retention, self.layout, self.ledger)
        return 5.0 if done["more"] else None  # a large backlog: the next batch soon, between other work

    def _record_skipped(self, path: str, outcome: object) -> None:
        record_skipped(self.layout, self.ledger, path, outcome)

    def _prune_outbox(self) -> None:
        self.ledger.prune_outbox(time.time() - self.config.events.retention_days * 86400)

    def _trim_memory(self) -> None:
        self.trimmer.tick(self._idle())

    def _report_status(self) -> None:
        self.notifier.status(self.status_line())
        self.write_state()

    def healthy(self) -> bool:
        return self.watcher.alive() and all(w.is_alive() for w in self.workers)

    def _idle(self) -> bool:
        return len(self.tracker) == 0 and all(w.current is None for w in self.workers)

    def _drained(self) -> bool:
        return len(self.tracker) == 0 and not self._dirs_to_scan and not self.ledger.has_pending() \
            and all(w.current is None for w in self.workers)

    # -- signals and reload -------------------------------------------------------------------------
    def _install_signals(self) -> None:
        def flag(signum: int, _frame: Any) -> None:
            # Only a flag: Event.set() here could deadlock on the lock the main thread holds
            # inside Event.wait().  The wait is at most IDLE_TICK, so a signal acts within 0.5 s.
            self._signals.append(signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, flag)

    def _handle_signals(self) -> bool:
        """True when the daemon must stop."""
        while self._signals:
            sig = self._signals.pop(0)
            if sig == signal.SIGHUP:
                self.reload()
            else:
                return True
        return False

    def reload(self) -> None:
        from astrowatch.pipeline.marking import marker_for

        try:
            new = load_service_config(self.config.source) if self.config.source else self.config
            marker_for(new)  # a bad C2PA key or certificate is refused like an invalid config
        except ConfigError as exc:
            log.error("reload refused: the new config is invalid; keeping the old one", error=str(exc))
            return
        if new.data_dir != self.config.data_dir:
            log.error("reload: data_dir changed; restart the service to use it", new=str(new.data_dir))
            new.data_dir = self.config.data_dir
        if new.executor != self.config.executor or new.celery.max_in_flight != self.config.celery.max_in_flight:
            log.error("reload: executor / celery.max_in_flight changed; restart the service to use them")
            new.executor, new.celery.max_in_flight = self.config.executor, self.config.celery.max_in_flight
        old_watch = self.config.watch
        self.config = new
        self.ingest.config = self.reviewer.config = new
        self.tracker.quiet = new.watch.stability_seconds
        self.disk.min_free_mb = new.limits.min_free_mb
        if (new.watch.polling, new.watch.polling_interval) != (old_watch.polling, old_watch.polling_interval):
            self.watcher.stop()
            self.watcher.polling, self.watcher.polling_interval = new.watch.polling, new.watch.polling_interval
            self.watcher.start()
            self.rescan()
        try:
            self.webhooks.reload(new)
        except ConfigError as exc:
            log.error("reload: webhooks kept as they were", error=str(exc))
        self.defaults = resolve_backends(new)
        for worker in self.workers:
            worker.reload(new, self.defaults)
        log.info("config reloaded", source=str(new.source), backends=self.defaults)

    # -- shutdown -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping: finishing the current image (send SIGTERM again to interrupt it)")
        self.cancel.request_stop()
        if self.guard.fatal is not None:  # the other workers' jobs resume at the next start, uncounted
            self.cancel.request_interrupt()
        self.watcher.stop()
        self.webhooks.stop()
        self._join_workers()
        self.write_state(stopped=True)
        self.ledger.close()
        self.notifier.close()
        log.info("stopped")

    def _join_workers(self) -> None:
        """Wait for the image being generated (a second signal interrupts it) and for a worker
        releasing its models (the process must not exit under torch); not for a worker with no job
        in hand beyond IDLE_JOIN_S (it may sit in a backend's health check), nor for one that is
        dead or stuck past its job's deadline (the process exits without it)."""
        for worker in self.workers:
            worker.wake()
        idle_until = time.monotonic() + IDLE_JOIN_S
        for worker in self.workers:
            while worker.is_alive():
                worker.join(timeout=0.2)
                if self._signals and not self.cancel.interrupted:
                    self._signals.clear()
                    log.warning("second stop signal: interrupting the current image")
                    self.cancel.request_interrupt()
                if worker.current is not None:
                    idle_until = time.monotonic() + IDLE_JOIN_S  # counted from the end of its last job
                if worker.is_alive() and worker.current is None and not worker.closing \
                        and time.monotonic() > idle_until:
                    log.warning("worker not stopped yet; not waiting for it (no job in hand)", worker=worker.name)
                    break
                stuck = self._guarded("check stuck jobs", self._check_stuck) or []
                if worker in stuck:
                    break

    # -- status ---------------------------------------------------------------------------------------
    def status_line(self) -> str:
        return status_line(self.ledger.counts(), self.workers, self.disk)

    def write_state(self, stopped: bool = False) -> None:
        state = state_record(started_at=self.started_at, config=self.config, defaults=self.defaults,
                             watcher=self.watcher, pending_files=len(self.tracker), workers=self.workers,
                             disk=self.disk, stopped=stopped, supervision=self.guard.facts())
        write_state_file(self.layout.daemon_state_path, state, self.disk)
