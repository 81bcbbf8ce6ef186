"""runtime.guard: a dead worker thread or a job stuck past its deadline is noticed, logged with its
traceback, counted (carried across restarts) and made fatal; a helper thread's death is counted
only; a stuck job is recorded against that job as a timeout."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from astrowatch.backends.base import CancelToken
from astrowatch.core.config import Config, RetriesConfig
from astrowatch.runtime.guard import Guard, previous_counts, record_timeout, stuck_grace
from astrowatch.runtime.worker import Worker
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger


@pytest.fixture
def site(tmp_path):
    cfg = Config(data_dir=tmp_path / "data")
    layout = Layout(cfg.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    yield cfg, layout, ledger
    ledger.close()


class Exploding(Worker):
    def run(self) -> None:
        raise RuntimeError("a bug in the worker loop")


def run_with_hook(guard: Guard, thread: threading.Thread) -> None:
    guard.install()
    try:
        thread.start()
        thread.join(5)
    finally:
        guard.uninstall()


def test_a_worker_thread_that_dies_is_counted_and_fatal(site):
    cfg, layout, _ledger = site
    woken: list[int] = []
    guard = Guard({"thread_deaths": 2}, wake=lambda: woken.append(1))
    worker = Exploding(cfg, layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken())
    run_with_hook(guard, worker)
    assert guard.fatal == "thread astrowatch-worker-0 died: RuntimeError: a bug in the worker loop"
    assert guard.thread_deaths == 3 and woken == [1]  # counted on top of the previous runs'
    guard.check_workers([worker], stopping=False)  # seen by the hook already: not counted twice
    assert guard.thread_deaths == 3
    assert threading.excepthook is not guard.excepthook  # uninstalled


def test_the_hook_logs_the_traceback(site, monkeypatch):
    cfg, layout, _ledger = site
    logged: list[dict] = []
    from astrowatch.runtime import guard as guard_module

    monkeypatch.setattr(guard_module.log, "error", lambda event, **kw: logged.append({"event": event, **kw}))
    guard = Guard()
    run_with_hook(guard, Exploding(cfg, layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken()))
    assert logged[0]["event"] == "thread died" and logged[0]["thread"] == "astrowatch-worker-0"
    exc_type, exc, tb = logged[0]["exc_info"]
    assert exc_type is RuntimeError and tb is not None


def test_a_helper_threads_death_is_counted_but_not_fatal():
    guard = Guard()

    def poller() -> None:
        raise ValueError("odd JSON from the WebUI")

    run_with_hook(guard, threading.Thread(target=poller, name="sdapi-progress"))
    assert guard.thread_deaths == 1 and guard.fatal is None
    assert guard.last is not None and guard.last["thread"] == "sdapi-progress"


def test_a_worker_that_ended_without_an_exception_is_fatal_unless_stopping(site):
    cfg, layout, _ledger = site

    class Quitter(Worker):
        def run(self) -> None:
            return

    worker = Quitter(cfg, layout, {"astro": "wheel", "enhance": "lanczos"}, CancelToken())
    worker.start()
    worker.join(5)
    guard = Guard()
    guard.check_workers([worker], stopping=True)
    assert guard.fatal is None
    guard.check_workers([worker], stopping=False)
    assert guard.fatal is not None and "ended" in guard.fatal and guard.thread_deaths == 1


def test_stuck_means_past_the_deadline_plus_the_grace():
    assert stuck_grace(1800) == 120 and stuck_grace(0.5) == 5 and stuck_grace(300) == 30
    now = 1000.0
    idle = SimpleNamespace(current=None, started=None)
    fresh = SimpleNamespace(current="a", started=now - 10)
    late = SimpleNamespace(current="b", started=now - 10 - stuck_grace(10) - 0.1)
    assert Guard().stuck([idle, fresh, late], 10, now=now) == [late]


def test_a_stuck_job_is_recorded_as_a_timeout_retried_then_failed(site):
    _cfg, layout, ledger = site
    retries = RetriesConfig(max_attempts=2, backoff_seconds=0)
    job = ledger.create_job(kind="enhance", user="gaby", source="Utilisateurs/gaby/p.jpg", source_sha256="0" * 64)
    ledger.claim_next()
    assert record_timeout(ledger, layout, retries, job.id, 60) == "retry"
    again = ledger.get(job.id)
    assert (again.state, again.attempts, again.error) == ("queued", 1, "ran longer than limits.job_timeout_seconds=60 s")
    ledger.claim_next(now=time.time() + 1)
    assert record_timeout(ledger, layout, retries, job.id, 60) == "failed"
    done = ledger.get(job.id)
    assert done.state == "failed" and done.error == "ran longer than limits.job_timeout_seconds=60 s (after 2 attempts)"
    assert record_timeout(ledger, layout, retries, job.id, 60) == "moved on"


def test_job_stuck_is_fatal_and_the_counters_survive_a_restart(tmp_path):
    guard = Guard()
    guard.job_stuck("astrowatch-worker-0", "J1", 60)
    assert guard.fatal is not None and "J1" in guard.fatal and guard.jobs_stuck == 1
    state = tmp_path / "daemon.json"
    state.write_text(json.dumps({"supervision": guard.facts()}))
    assert previous_counts(state) == {"thread_deaths": 0, "jobs_stuck": 1}
    state.write_text("{ torn")
    assert previous_counts(state) == {"thread_deaths": 0, "jobs_stuck": 0}
    assert previous_counts(tmp_path / "missing.json") == {"thread_deaths": 0, "jobs_stuck": 0}
