"""Recovery's clean-up of work folders: a busy or locked ledger is no answer about a job, so its
work folder stays; a job the ledger does not know loses its folder, as it always did."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from astrowatch.core.config import Config
from astrowatch.review.reviewer import Reviewer
from astrowatch.runtime.recovery import clean_work, recover
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
