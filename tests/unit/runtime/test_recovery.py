"""Start-up recovery.  Its clean-up of work folders: a busy or locked ledger is no answer about a
job, so its work folder stays; a job the ledger does not know loses its folder, as it always did.
A job interrupted from outside (SIGKILL...) gets its attempt back; a job whose recovery step
raises is parked and the start goes on."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from astrowatch.core.config import Config
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime import recovery
from astrowatch.runtime.recovery import MAX_INTERRUPTIONS, RESUMED, clean_work, recover
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger

UNKNOWN = "20260101-000000-unknown"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    layout = Layout(tmp_path / "data")
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    queued = ledger.create_job(kind="astro", user="gaby", source="Utilisateurs/gaby/theme.json",
                               source_sha256="0" * 64)
    for job_id in (queued.id, UNKNOWN):
        (layout.work_dir(job_id)).mkdir(parents=True)
        (layout.work_dir(job_id) / "partial.png").write_bytes(b"x")
    # the ledger's connections wait 30 s for a lock; a test does not
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: connect(*a, **{**kw, "timeout": 0.2}))
    yield layout, ledger, queued
    ledger.close()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another process's connection holding the ledger's write lock, exclusively (in WAL mode
    readers are locked out only so)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('busy', '1')")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_a_locked_ledger_never_gets_a_work_folder_deleted(setup):
    layout, ledger, queued = setup
    ledger.close()  # its next query opens a connection while the other one holds the lock
    with locked(layout.ledger_path):
        with pytest.raises(sqlite3.OperationalError):
            ledger.get(queued.id)  # the lock is real
        assert clean_work(layout, ledger) == 2
    assert layout.work_dir(UNKNOWN).is_dir() and layout.work_dir(queued.id).is_dir()


def test_recovery_under_a_locked_ledger_stops_before_it_deletes_anything(setup):
    layout, ledger, _queued = setup
    ledger.close()
    config = Config(data_dir=layout.root)
    with locked(layout.ledger_path), pytest.raises(sqlite3.OperationalError, match="locked"):
        recover(config, layout, ledger, Reviewer(config, layout, ledger))
    assert layout.work_dir(UNKNOWN).is_dir()  # the next start looks again


def test_once_the_lock_is_gone_an_unknown_jobs_folder_goes_and_a_queued_ones_stays(setup):
    layout, ledger, queued = setup
    ledger.close()
    with locked(layout.ledger_path):
        clean_work(layout, ledger)
    ledger.close()  # the connection that met the lock is dropped; the next one finds it free
    assert clean_work(layout, ledger) == 0
    assert not layout.work_dir(UNKNOWN).exists()
    assert layout.work_dir(queued.id).is_dir()


def test_without_a_lock_recovery_removes_an_unknown_jobs_work_folder(setup):
    layout, ledger, queued = setup
    config = Config(data_dir=layout.root)
    recover(config, layout, ledger, Reviewer(config, layout, ledger))
    assert not layout.work_dir(UNKNOWN).exists()
    assert layout.work_dir(queued.id).is_dir()


# -- a daemon killed from outside never counts against the job ------------------------------------

def claimed(ledger: Ledger, job_id: str):
    job = ledger.claim_next()
    assert job is not None and job.id == job_id and job.state == "running"
    return job


def test_three_sigkills_during_one_healthy_job_never_fail_it(setup):
    """Each start gives the killed attempt back: the job is queued with 0 attempts every time,
    although max_attempts is 3 (the old rule failed it as "interrupted 3 times")."""
    layout, ledger, queued = setup
    config = Config(data_dir=layout.root)
    for kill in range(1, 4):
        assert claimed(ledger, queued.id).attempts == 1
        counts = recover(config, layout, ledger, Reviewer(config, layout, ledger))
        assert counts["resumed"] == 1 and counts["failed"] == 0, kill
        job = ledger.get(queued.id)
        assert (job.state, job.attempts) == ("queued", 0)
        assert not layout.work_dir(queued.id).exists()  # the killed attempt's partial outputs go
    notes = [h["note"] for h in ledger.history(queued.id) if h["to_state"] == "queued"]
    assert notes.count(RESUMED) == 3
    assert not (layout.root / "failed" / "gaby").exists()


def test_real_failures_still_count_after_an_interruption(setup):
    """The attempt given back is only the interrupted one: one that failed before stays counted."""
    layout, ledger, queued = setup
    config = Config(data_dir=layout.root)
    claimed(ledger, queued.id)
    assert ledger.transition(queued.id, "running", "queued", error="fake failure", note="retry")
    assert claimed(ledger, queued.id).attempts == 2
    recover(config, layout, ledger, Reviewer(config, layout, ledger))
    assert ledger.get(queued.id).attempts == 1


def test_a_job_the_daemon_keeps_dying_under_is_set_aside_after_max_interruptions(setup):
    """No crash loop: the MAX_INTERRUPTIONS-th consecutive death during one job fails it, with why."""
    layout, ledger, queued = setup
    config = Config(data_dir=layout.root)
    for _ in range(MAX_INTERRUPTIONS - 1):
        claimed(ledger, queued.id)
        recover(config, layout, ledger, Reviewer(config, layout, ledger))
        assert ledger.get(queued.id).state == "queued"
    claimed(ledger, queued.id)
    counts = recover(config, layout, ledger, Reviewer(config, layout, ledger))
    job = ledger.get(queued.id)
    assert counts["failed"] == 1 and job.state == "failed"
    assert f"stopped {MAX_INTERRUPTIONS} times while running this job" in (job.error or "")


# -- recovery never fails because of something in the tree -----------------------------------------

def test_a_job_whose_recovery_step_raises_is_parked_and_the_start_goes_on(setup, monkeypatch):
    layout, ledger, queued = setup
    config = Config(data_dir=layout.root)
    bad = ledger.create_job(kind="astro", user="lou", source="Utilisateurs/lou/theme.json", source_sha256="1" * 64)
    claimed(ledger, queued.id)  # the oldest: the queued fixture job
    claimed(ledger, bad.id)
    assert ledger.transition(bad.id, "running", "publishing", result={"stem": "theme", "image": "x.png"})

    def squatted(job, layout):  # what a plain file where inbox/lou goes did on the landed code
        raise FileExistsError(17, "File exists", str(layout.root / "inbox" / job.user))

    monkeypatch.setattr(recovery, "publish", squatted)
    counts = recover(config, layout, ledger, Reviewer(config, layout, ledger))
    assert counts["parked"] == 1 and counts["resumed"] == 1
    assert ledger.get(bad.id).state == "publishing"  # left for the next start, not lost
    assert ledger.get(queued.id).state == "queued"  # the other job was recovered
    assert not layout.work_dir(UNKNOWN).exists()  # and the clean-up still ran


def test_a_full_disk_during_recovery_still_stops_the_start(setup, monkeypatch):
    """Not the tree's fault: the start stops (exit 73 in the daemon) and is tried again."""
    layout, ledger, queued = setup
    config = Config(data_dir=layout.root)
    claimed(ledger, queued.id)
    assert ledger.transition(queued.id, "running", "publishing", result={"stem": "theme", "image": "x.png"})

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recovery, "publish", full)
    with pytest.raises(OSError, match="No space"):
        recover(config, layout, ledger, Reviewer(config, layout, ledger))
