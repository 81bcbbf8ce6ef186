"""The daemon in-process: a worker thread that dies, or one stuck in a backend call that ignores
the job's deadline, makes ``run()`` return 70 (systemd restarts it) instead of running half-alive;
the stuck job is recorded as timed out and the fact reaches the state file."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from harness import make_image

from astrowatch.backends.fake import FakeBackend
from astrowatch.core.config import Config
from astrowatch.core.errors import Interrupted
from astrowatch.runtime.daemon import Daemon
from astrowatch.runtime.guard import EXIT_THREAD_DIED
from astrowatch.runtime.worker import Worker
from astrowatch.storage.ledger import Ledger


@pytest.fixture
def config(tmp_path):
    cfg = Config(data_dir=tmp_path / "data")
    cfg.enhance.backend = "fake"
    cfg.enhance.min_side = 8
    cfg.astro.backend = "wheel"
    cfg.watch.stability_seconds = 0.1
    cfg.limits.min_free_mb = 0
    cfg.limits.job_timeout_seconds = 0.2
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield cfg
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def run_bounded(daemon: Daemon, limit: float = 30.0) -> int:
    """daemon.run() in this (main) thread; a timer sends SIGTERM if it has not returned by then."""
    timer = threading.Timer(limit, lambda: daemon._signals.append(signal.SIGTERM))
    timer.start()
    try:
        return daemon.run()
    finally:
        timer.cancel()


def test_a_job_stuck_past_its_deadline_is_recorded_and_the_daemon_exits_70(config, monkeypatch):
    release = threading.Event()

    def ignores_the_token(self, task):  # a C call, a read without timeout: never looks at task.cancel
        release.wait(60)
        raise Interrupted("released at the end of the test")

    monkeypatch.setattr(FakeBackend, "enhance", ignores_the_token)
    (config.data_dir / "Utilisateurs" / "gaby").mkdir(parents=True)
    make_image(config.data_dir / "Utilisateurs" / "gaby" / "p.jpg")
    daemon = Daemon(config)
    t0 = time.monotonic()
    try:
        assert run_bounded(daemon) == EXIT_THREAD_DIED
    finally:
        release.set()
    assert time.monotonic() - t0 < 20  # 0.2 s deadline + 5 s grace, not the backend's 60 s
    ledger = Ledger(daemon.layout.ledger_path)
    (job,) = ledger.by_state("queued")
    assert job.attempts == 1 and job.error == "ran longer than limits.job_timeout_seconds=0.2 s"
    ledger.close()
    state = json.loads(daemon.layout.daemon_state_path.read_text())
    assert state["stopped"] and state["supervision"]["jobs_stuck"] == 1
    assert state["supervision"]["last"]["job_id"] == job.id


def test_a_dead_worker_thread_stops_the_daemon_with_70_and_is_counted(config, monkeypatch):
    def broken(self):
        raise RuntimeError("a bug that escaped the worker loop")

    monkeypatch.setattr(Worker, "run", broken)
    daemon = Daemon(config)
    t0 = time.monotonic()
    assert run_bounded(daemon) == EXIT_THREAD_DIED
    assert time.monotonic() - t0 < 10
    state = json.loads(daemon.layout.daemon_state_path.read_text())
    assert state["supervision"]["thread_deaths"] == 1
    assert "RuntimeError: a bug that escaped the worker loop" in state["supervision"]["last"]["error"]
    assert threading.excepthook is not daemon.guard.excepthook
