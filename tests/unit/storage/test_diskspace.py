"""DiskGuard: a disk-full episode starts once, is logged once, and ends when space is back."""

from __future__ import annotations

from diskfull import fill, small_tmpfs
from structlog.testing import capture_logs

from astrowatch.storage.diskspace import DiskGuard


def _events(logs, word):
    return [e for e in logs if word in e["event"]]


def test_an_episode_is_logged_once_and_ends_when_space_is_back():
    with small_tmpfs(8) as disk, capture_logs() as logs:
        guard = DiskGuard(disk, min_free_mb=2)
        assert not guard.low() and not guard.full
        fill(disk / "ballast")
        for _ in range(5):  # a worker asks before every job; the daemon every tick
            assert guard.low()
            guard.report(OSError(28, "No space left on device"))
        assert guard.full and guard.reason() == "disk full: 0 MB free under data_dir"
        assert len(_events(logs, "disk full")) == 1
        (disk / "ballast").unlink()
        assert not guard.low() and not guard.full and guard.episodes == 1
        assert not guard.low()
        assert len(_events(logs, "disk space is back")) == 1


def test_under_min_free_mb_jobs_do_not_start_although_writes_still_succeed():
    with small_tmpfs(8) as disk:
        guard = DiskGuard(disk, min_free_mb=6)
        assert not guard.low()
        (disk / "ballast").write_bytes(b"\0" * 4_000_000)  # ~4.3 MB free of 8.4
        assert guard.low() and guard.full
        (disk / "ballast").unlink()
        assert not guard.low()


def test_after_a_failed_write_the_episode_lasts_until_there_is_clearly_more_room():
    with small_tmpfs(40) as disk:
        guard = DiskGuard(disk, min_free_mb=0)
        fill(disk / "ballast")
        guard.report(OSError(28, "No space left on device"))  # a write failed with ~0 MB free
        (disk / "ballast").write_bytes(b"\0" * ((40 - 5) * 1024 * 1024))  # ~5 MB free: not enough yet
        assert guard.low()
        (disk / "ballast").unlink()
        assert not guard.low() and guard.episodes == 1
