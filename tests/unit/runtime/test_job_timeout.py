"""limits.job_timeout_seconds: a job's token has a deadline the backends' stop points honour; a
job past it is retried (the attempt counts) or failed with the reason, and the worker goes on."""

from __future__ import annotations

import threading
import time

import pytest
from harness import make_image

from astrowatch.backends.base import CancelToken
from astrowatch.core.config import Config
from astrowatch.core.errors import Interrupted, JobTimedOut
from astrowatch.intake.ingest import Ingest
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime import publishing
from astrowatch.runtime.worker import Worker
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

REASON = "ran longer than limits.job_timeout_seconds=0.3 s"


# -- the token ----------------------------------------------------------------------------------------

def test_a_job_token_times_out_at_its_deadline_and_says_why():
    daemon = CancelToken()
    token = daemon.for_job(0.2)
    assert not token.interrupted and not token.timed_out
    token.check()
    t0 = time.monotonic()
    with pytest.raises(JobTimedOut, match="ran longer than limits.job_timeout_seconds=0.2 s"):
        token.sleep(30)  # the fake backend's hang: woken at the deadline, not after 30 s
    assert time.monotonic() - t0 < 2
    assert token.interrupted and token.wait_interrupt(5)  # what the sdxl step callback and sdapi watch
    assert not daemon.interrupted  # the daemon's own token has no deadline


def test_a_job_token_shares_the_daemons_stop_and_interrupt():
    daemon = CancelToken()
    token = daemon.for_job(3600)
    daemon.request_stop()
    assert token.stopping and not token.interrupted
    daemon.request_interrupt()
    with pytest.raises(Interrupted):  # a second SIGTERM stays an interruption (attempt not counted)
        token.check()


def test_without_a_limit_a_token_never_times_out():
    token = CancelToken().for_job(None)
    assert token.wait_interrupt(0.01) is False and not token.timed_out


# -- the worker ---------------------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path):
    cfg = Config(data_dir=tmp_path / "data")
    cfg.enhance.min_side = 8
    cfg.fake.hang_seconds = 60.0  # a backend that would never finish on its own
    cfg.limits.job_timeout_seconds = 0.3
    cfg.limits.min_free_mb = 0
    cfg.retries.max_attempts = 2
    layout = Layout(cfg.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    ingest = Ingest(cfg, layout, ledger, Reviewer(cfg, layout, ledger))
    worker = Worker(cfg, layout, {"astro": "fake", "enhance": "fake"}, CancelToken())
    (layout.users / "gaby").mkdir()
    make_image(layout.users / "gaby" / "p.jpg")
    ingest.handle(str(layout.users / "gaby" / "p.jpg"))
    yield cfg, layout, ledger, worker
    worker.pool.close()
    ledger.close()


def test_a_job_past_its_deadline_is_retried_with_the_reason_and_the_attempt_counts(site):
    _cfg, _layout, ledger, worker = site
    t0 = time.monotonic()
    worker.execute(ledger.claim_next())
    assert time.monotonic() - t0 < 5
    job = ledger.by_state("queued")[0]
    assert job.attempts == 1 and job.error == REASON
    assert worker.current is None and worker.started is None


def test_a_job_past_its_deadline_on_its_last_attempt_fails_with_the_reason(site):
    _cfg, layout, ledger, worker = site
    worker.execute(ledger.claim_next())
    ledger.update_fields(ledger.by_state("queued")[0].id, not_before=0.0)
    worker.execute(ledger.claim_next())
    job = ledger.by_state("failed")[0]
    assert job.attempts == 2 and job.error == f"{REASON} (after 2 attempts)"
    assert ledger.failure_cause(job.id) == "JobTimedOut"
    assert (layout.root / "failed" / "gaby" / "p.jpg").exists()


def test_a_backend_that_answers_a_deadline_with_interrupted_still_counts_as_a_timeout(site, monkeypatch):
    """sdxl's step callback and sdapi's /interrupt stop at the token's deadline and raise
    Interrupted; the worker records a timeout (counted), not a shutdown (not counted)."""
    _cfg, _layout, ledger, worker = site

    def like_sdxl(self, job, t0, *, cancel=None):
        assert cancel is not None
        while not cancel.interrupted:
            time.sleep(0.01)
        raise Interrupted("interrupted after 3 step(s); the job resumes at the next start")

    monkeypatch.setattr(publishing.Publisher, "produce_and_publish", like_sdxl)
    worker.execute(ledger.claim_next())
    job = ledger.by_state("queued")[0]
    assert job.attempts == 1 and job.error == REASON


def test_when_recording_an_outcome_fails_the_job_is_set_aside_and_the_worker_goes_on(site, monkeypatch):
    _cfg, layout, ledger, worker = site
    worker.config.retries.max_attempts = 1

    def squatted(ledger, layout, job):  # failed/<user> squatted by a plain file, on the landed code
        raise FileExistsError(17, "File exists", str(layout.root / "failed" / job.user))

    monkeypatch.setattr(publishing, "finish_failed", squatted)
    worker.execute(ledger.claim_next())  # does not raise: the thread would have died
    job = ledger.by_state("failing")[0]
    assert REASON in (job.error or "")  # recovery writes the failed/ entry at the next start
    worker.cancel.request_stop()


def test_an_error_in_the_worker_loop_is_logged_and_the_thread_goes_on(site, monkeypatch):
    _cfg, _layout, ledger, worker = site
    calls: list[int] = []
    real = ledger.claim_next

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database disk image is malformed (once)")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker.ledger, "claim_next", flaky)
    worker.config.fake.hang_seconds = 0.0
    worker.start()
    deadline = time.monotonic() + 10
    while not ledger.by_state("inbox") and time.monotonic() < deadline:
        assert worker.is_alive()
        time.sleep(0.05)
    worker.cancel.request_stop()
    worker.wake()
    worker.join(5)
    assert len(ledger.by_state("inbox")) == 1 and len(calls) >= 2
    assert not any(t is worker for t in threading.enumerate())


def test_celery_dispatchers_have_no_deadline_of_their_own():
    """Their wait includes the broker's queue; the deadline runs on the remote worker instead."""
    from astrowatch.runtime.worker import job_deadline

    assert job_deadline(Config()) == 1800
    assert job_deadline(Config(executor="celery", limits={"job_timeout_seconds": 60})) is None
