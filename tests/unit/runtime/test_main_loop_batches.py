"""The main loop takes a burst in bounded batches: one turn handles at most a time budget's worth
of files (then signals, the watchdog and status get their turn), stops early for a signal, and
leaves the rest due for the next turn — nothing is dropped."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from astrowatch.intake.watcher import StabilityTracker
from astrowatch.runtime import daemon
from astrowatch.runtime.daemon import Daemon


def _loop(tmp_path: Path, n: int, per_file_s: float) -> Any:
    tracker = StabilityTracker(0.0)
    for i in range(n):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(b"x")
        tracker.touch(str(path))
    handled: list[str] = []

    def handle(path: str, _identity: object) -> str:
        time.sleep(per_file_s)
        handled.append(path)
        return "job"

    fake = SimpleNamespace(tracker=tracker, ingest=SimpleNamespace(handle=handle), _signals=[],
                           _dirs_lock=threading.Lock(), _dirs_to_scan=set(), chores=SimpleNamespace(tick=lambda: None),
                           _record_skipped=lambda path, outcome: None)
    fake._guarded = lambda _what, fn, *args, **_kw: fn(*args)
    return fake, handled


def test_one_turn_is_bounded_and_the_rest_stays_due(tmp_path: Path) -> None:
    fake, handled = _loop(tmp_path, 400, per_file_s=0.002)
    Daemon.tick(fake)
    first = len(handled)
    assert daemon.TICK_BATCH <= first < 400  # bounded by the time budget, a whole batch at least
    assert first <= (daemon.TICK_BUDGET_S / 0.002) + daemon.TICK_BATCH
    assert len(fake.tracker) == 400 - first
    while len(fake.tracker):
        Daemon.tick(fake)
    assert len(handled) == len(set(handled)) == 400  # every file once


def test_a_pending_signal_ends_the_turn_before_any_file(tmp_path: Path) -> None:
    fake, handled = _loop(tmp_path, 50, per_file_s=0.0)
    fake._signals.append(15)
    Daemon.tick(fake)
    assert handled == [] and len(fake.tracker) == 50


def test_a_small_burst_is_taken_in_one_turn(tmp_path: Path) -> None:
    fake, handled = _loop(tmp_path, 5, per_file_s=0.0)
    Daemon.tick(fake)
    assert len(handled) == 5 and len(fake.tracker) == 0
