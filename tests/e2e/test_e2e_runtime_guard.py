"""The real daemon obeys SIGTERM at once when idle, finishes (only) the image in hand when busy,
and a job that runs past limits.job_timeout_seconds is stopped and retried, then failed, with
that reason — the daemon itself carries on."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

import pytest
from harness import inbox_images, make_image, wait_until, write_config

pytestmark = pytest.mark.slow


def states(data):
    conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
    try:
        return [row for row in conn.execute("SELECT source, state, attempts, error FROM jobs ORDER BY created_at")]
    finally:
        conn.close()


def test_sigterm_with_nothing_generating_exits_within_5_s(tmp_path, daemon_factory):
    d = daemon_factory(write_config(tmp_path)).start()
    (d.data / "Utilisateurs" / "gaby").mkdir(parents=True)
    make_image(d.data / "Utilisateurs" / "gaby" / "p.jpg")
    wait_until(lambda: inbox_images(d.data), what="a first result (the worker has been busy once)")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5, d.log()
    state = json.loads((d.data / "state" / "daemon.json").read_text())
    assert state["stopped"] and state["supervision"]["thread_deaths"] == 0


def test_sigterm_finishes_the_image_being_generated_and_starts_nothing_new(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, enhance={"backend": "fake", "min_side": 16}, fake={"delay_seconds": 1.5})
    d = daemon_factory(cfg).start()
    user = d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    make_image(user / "a.jpg")
    make_image(user / "b.jpg", color=(0, 0, 0))
    wait_until(lambda: [s for s in states(d.data) if s[1] == "running"] and len(states(d.data)) == 2,
               what="one job running, the other queued")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
    by_state = sorted(s[1] for s in states(d.data))
    assert by_state == ["inbox", "queued"], states(d.data)  # the one in hand finished, no new one started
    assert len(inbox_images(d.data)) == 1


def test_a_job_past_job_timeout_seconds_is_retried_then_failed_with_the_reason(tmp_path, daemon_factory):
    cfg = write_config(tmp_path, enhance={"backend": "fake", "min_side": 16}, fake={"hang_seconds": 60},
                       limits={"job_timeout_seconds": 0.5, "min_free_mb": 20},
                       retries={"max_attempts": 2, "backoff_seconds": 0.1})
    d = daemon_factory(cfg).start()
    user = d.data / "Utilisateurs" / "gaby"
    user.mkdir(parents=True)
    make_image(user / "slow.jpg")
    error_file = d.data / "failed" / "gaby" / "slow.jpg.error.json"
    record = wait_until(lambda: error_file.exists() and json.loads(error_file.read_text()), timeout=30,
                        what="the timed-out job failed")
    assert record["reason"] == "ran longer than limits.job_timeout_seconds=0.5 s (after 2 attempts)"
    assert record["attempts"] == 2
    assert d.proc.poll() is None  # a cooperative timeout is an ordinary job failure: the daemon goes on
    t0 = time.monotonic()
    assert d.stop() == 0 and time.monotonic() - t0 < 5
