"""Seeing files: stability rule, the real watchdog observer on a temp folder, restarts, scans."""

from __future__ import annotations

import os

from harness import wait_until

from astrowatch.intake.watcher import StabilityTracker, Watcher, scan
from astrowatch.storage.layout import Layout


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_file_is_taken_only_after_a_quiet_period(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(2.0, clock=clock)
    path = tmp_path / "a.jpg"
    path.write_bytes(b"12")
    tracker.touch(str(path))
    clock.now = 1.9
    assert tracker.due() == []
    clock.now = 2.0
    assert [p for p, _ in tracker.due()] == [str(path)]
    assert len(tracker) == 0


def test_a_file_still_growing_restarts_its_timer(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(1.0, clock=clock)
    path = tmp_path / "a.jpg"
    path.write_bytes(b"1")
    tracker.touch(str(path))
    with open(path, "ab") as fh:  # written without a new event (e.g. missed)
        fh.write(b"more")
    clock.now = 1.0
    assert tracker.due() == []  # changed since the event: wait again
    clock.now = 2.0
    assert [p for p, _ in tracker.due()] == [str(path)]


def test_a_vanished_file_is_forgotten(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(0.5, clock=clock)
    path = tmp_path / "a.jpg"
    path.write_bytes(b"1")
    tracker.touch(str(path))
    path.unlink()
    clock.now = 1.0
    assert tracker.due() == [] and len(tracker) == 0


def _watcher(tmp_path, seen, polling=False):
    layout = Layout(tmp_path / "data")
    layout.ensure()
    return layout, Watcher(layout, polling=polling, polling_interval=0.1, on_file=seen.append, on_dir=seen.append)


def test_real_observer_reports_created_moved_and_new_folders(tmp_path):
    seen: list[str] = []
    layout, watcher = _watcher(tmp_path, seen)
    watcher.start()
    try:
        user = layout.users / "gaby"
        user.mkdir()
        (user / "a.jpg").write_bytes(b"x")
        outside = tmp_path / "b.jpg"
        outside.write_bytes(b"y")
        os.replace(outside, layout.root / "approved" / "b.jpg")  # a move from an unwatched place
        wait_until(lambda: str(user / "a.jpg") in seen and str(layout.root / "approved" / "b.jpg") in seen)
        assert str(user) in seen  # the new folder itself is reported, so it gets scanned
    finally:
        watcher.stop()


def test_dead_observer_is_detected_and_restarted(tmp_path):
    for polling in (False, True):
        seen: list[str] = []
        layout, watcher = _watcher(tmp_path / str(polling), seen, polling=polling)
        watcher.start()
        try:
            watcher.observer.stop()  # what an OSError in the polling snapshot or a handler crash does
            watcher.observer.join(5)
            assert not watcher.alive()
            assert watcher.supervise() is True and watcher.alive() and watcher.restarts == 1
            (layout.users / "u").mkdir()
            (layout.users / "u" / "c.jpg").write_bytes(b"z")
            target = str(layout.users / "u" / "c.jpg")
            wait_until(lambda target=target, seen=seen: target in seen, what=f"events after restart ({polling})")
        finally:
            watcher.stop()


def test_scan_finds_user_files_and_decisions_but_not_noise_or_deep_files(tmp_path):
    layout = Layout(tmp_path / "data")
    layout.ensure()
    user = layout.users / "gaby"
    (user / "deep").mkdir(parents=True)
    for name in ("a.jpg", ".hidden.jpg", "b.jpg.part", "theme_gaby.json"):
        (user / name).write_bytes(b"x")
    (user / "deep" / "c.jpg").write_bytes(b"x")
    (layout.users / "stray.jpg").write_bytes(b"x")
    (layout.root / "approved" / "lot").mkdir()
    (layout.root / "approved" / "lot" / "d.png").write_bytes(b"x")
    (layout.root / "inbox" / "e.png").write_bytes(b"x")
    os.symlink("/etc", layout.users / "linked-user")
    found = {os.path.relpath(p, layout.root) for p in scan(layout)}
    # a symlinked user folder is handed to ingest (which moves it aside, refused), never walked into
    assert found == {"Utilisateurs/gaby/a.jpg", "Utilisateurs/gaby/theme_gaby.json", "approved/lot/d.png",
                     "Utilisateurs/linked-user"}
