"""The light poller (watch.polling: true) sees what a drop folder does without statting every file."""

from __future__ import annotations

import os
import time

import pytest
from harness import wait_until

from astrowatch.intake.poller import LightPoller


@pytest.fixture
def poller(tmp_path):
    users, approved = tmp_path / "Utilisateurs", tmp_path / "approved"
    (users / "gaby").mkdir(parents=True)
    approved.mkdir()
    (users / "gaby" / "theme_gaby.json").write_text("{}")
    (users / "gaby" / "old.jpg").write_bytes(b"x")
    files: list[str] = []
    dirs: list[str] = []
    p = LightPoller([str(users), str(approved)], 0.05, on_file=files.append, on_dir=dirs.append)
    p.start()
    time.sleep(0.2)
    yield p, users, approved, files, dirs
    p.stop()
    p.join(5)


def test_existing_files_are_not_reported_again(poller):
    _p, _users, _approved, files, _dirs = poller
    time.sleep(0.3)
    assert files == []  # the start-up scan reports them, not the poller


def test_new_files_folders_and_moves_are_reported(poller):
    _p, users, approved, files, dirs = poller
    (users / "gaby" / "new.jpg").write_bytes(b"1")
    (users / "lou").mkdir()
    (users / "lou" / "a.png").write_bytes(b"2")
    (approved / "lot").mkdir()
    os.replace(users / "gaby" / "old.jpg", approved / "lot" / "old.jpg")
    wait_until(lambda: {str(users / "gaby" / "new.jpg"), str(users / "lou" / "a.png"),
                        str(approved / "lot" / "old.jpg")} <= set(files), timeout=5)
    assert str(users / "lou") in dirs and str(approved / "lot") in dirs


def test_theme_rewritten_in_place_and_file_replaced_by_rename_are_reported(poller):
    _p, users, _approved, files, _dirs = poller
    theme = users / "gaby" / "theme_gaby.json"
    time.sleep(0.1)
    theme.write_text('{"sun": "Leo"}')  # in place: the folder's mtime does not change
    wait_until(lambda: str(theme) in files, timeout=5, what="theme rewrite")
    files.clear()
    tmp = users / "gaby" / ".old.jpg.tmp"
    tmp.write_bytes(b"replacement")
    os.replace(tmp, users / "gaby" / "old.jpg")  # same name, new inode
    wait_until(lambda: str(users / "gaby" / "old.jpg") in files, timeout=5, what="replaced file")


def test_stop_ends_the_thread(poller):
    p, *_ = poller
    p.stop()
    p.join(5)
    assert not p.is_alive()
