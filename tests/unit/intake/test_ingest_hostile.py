"""A group member's tricks on a user folder: each one refused with a failed/ entry, none raises or blocks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import pytest
from harness import make_image, theme_bytes

from astrowatch.core.config import Config
from astrowatch.intake.ingest import Ingest
from astrowatch.intake.watcher import StabilityTracker
from astrowatch.review.reviewer import Reviewer
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger


@pytest.fixture
def ingest(tmp_path):
    cfg = Config(data_dir=tmp_path / "data")
    layout = Layout(cfg.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    (layout.users / "gaby").mkdir()
    return Ingest(cfg, layout, ledger, Reviewer(cfg, layout, ledger))


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if a test blocks for more than 10 s."""
    def on_alarm(*_):
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _reason(ingest, name: str) -> str:
    record = json.loads((ingest.layout.root / "failed" / "gaby" / f"{name}.error.json").read_text())
    return str(record["reason"])


def _folder(ingest):
    return ingest.layout.users / "gaby"


def test_a_symlink_to_a_secret_is_refused_and_nothing_is_read(ingest, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_bytes(theme_bytes())
    for name in ("theme_gaby.json", "photo.jpg"):
        (_folder(ingest) / name).symlink_to(secret)
        assert ingest.handle(str(_folder(ingest) / name)) == "failed"
        assert "symbolic link" in _reason(ingest, name)
        assert (ingest.layout.root / "failed" / "gaby" / name).is_symlink()  # moved as a link
    assert ingest.ledger.counts() == {} and not any(ingest.layout.archive.rglob("*.json"))


@pytest.mark.parametrize("name", ["photo.jpg", "theme_gaby.json", "theme_lou.json"])
def test_a_fifo_named_like_an_input_is_refused_without_blocking(ingest, no_hang, name):
    fifo = _folder(ingest) / name
    os.mkfifo(fifo)
    assert ingest.handle(str(fifo)) == "failed"
    assert "not a regular file" in _reason(ingest, name)
    assert not os.path.lexists(fifo) and ingest.ledger.counts() == {}


def test_a_fifo_with_any_other_name_is_left_alone_without_blocking(ingest, no_hang):
    fifo = _folder(ingest) / "notes.txt"
    os.mkfifo(fifo)
    assert ingest.handle(str(fifo)) == "ignored"
    assert not ingest.known_unchanged(str(fifo))


def test_a_hard_link_to_another_file_is_refused(ingest, tmp_path):
    secret = tmp_path / "secret.jpg"
    make_image(secret, fmt="JPEG")
    os.link(secret, _folder(ingest) / "photo.jpg")
    assert ingest.handle(str(_folder(ingest) / "photo.jpg")) == "failed"
    assert "hard links" in _reason(ingest, "photo.jpg")
    assert ingest.ledger.counts() == {}


def test_sparse_size_bombs_are_refused_from_fstat_before_any_hashing(ingest):
    folder = _folder(ingest)
    photo, theme = folder / "big.jpg", folder / "theme_gaby.json"
    with open(photo, "wb") as fh:
        fh.truncate(8 << 30)  # 8 GB that cost nothing to make
    with open(theme, "wb") as fh:
        fh.truncate(1536 << 20)
    started = time.monotonic()
    assert ingest.handle(str(photo)) == "failed"
    assert ingest.handle(str(theme)) == "failed"
    assert time.monotonic() - started < 2.0  # not hashed or read
    assert "over the 100000000-byte limit" in _reason(ingest, "big.jpg")
    assert "limits.max_json_bytes" in _reason(ingest, "theme_gaby.json")
    assert ingest.ledger.counts() == {}


def test_a_file_swapped_after_the_stability_check_is_refused(ingest, tmp_path):
    clock = [0.0]
    tracker = StabilityTracker(1.0, clock=lambda: clock[0])
    theme = _folder(ingest) / "theme_gaby.json"
    theme.write_bytes(theme_bytes())
    tracker.touch(str(theme))
    clock[0] = 2.0
    [due] = tracker.stable()
    assert due.identity == (theme.stat().st_dev, theme.stat().st_ino)
    other = _folder(ingest) / ".swap"
    other.write_bytes(theme_bytes(user="lou"))
    os.rename(other, theme)  # swapped in between the check and the open
    assert ingest.handle(due.path, due.identity) == "failed"
    assert "replaced after it was checked" in _reason(ingest, "theme_gaby.json")
    assert ingest.ledger.counts() == {}


def test_a_file_that_vanished_is_gone_and_the_same_file_is_taken(ingest):
    photo = _folder(ingest) / "photo.jpg"
    assert ingest.handle(str(photo)) == "gone"
    make_image(photo, fmt="JPEG")
    st = photo.stat()
    assert ingest.handle(str(photo), (st.st_dev, st.st_ino)) == "job"


def test_a_theme_snapshot_is_the_bytes_that_were_hashed(ingest):
    theme = _folder(ingest) / "theme_gaby.json"
    theme.write_bytes(theme_bytes())
    assert ingest.handle(str(theme)) == "job"
    [job] = ingest.ledger.jobs_for_source("gaby", "Utilisateurs/gaby/theme_gaby.json")
    snapshot = (ingest.layout.archive_dir("gaby", job.id) / "theme_gaby.json").read_bytes()
    assert snapshot == theme.read_bytes() and hashlib.sha256(snapshot).hexdigest() == job.source_sha256


def test_deeply_nested_or_broken_themes_raise_nothing(ingest):
    theme = _folder(ingest) / "theme_gaby.json"
    theme.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    assert ingest.handle(str(theme)) == "job"  # the job's run fails it with the reason
    theme.write_bytes(b"\xff\xfe not utf-8 {")
    os.utime(theme, ns=(1, 10**18))
    assert ingest.handle(str(theme)) == "job"


def test_a_symlinked_user_folder_is_not_entered(ingest, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    make_image(outside / "photo.jpg", fmt="JPEG")
    (ingest.layout.users / "lou").symlink_to(outside)
    assert ingest.handle(str(ingest.layout.users / "lou" / "photo.jpg")) == "gone"
    assert ingest.ledger.counts() == {}
    assert (outside / "photo.jpg").exists()


def test_a_symlinked_user_folder_is_moved_aside_visibly_and_never_entered(ingest, tmp_path):
    from astrowatch.intake.watcher import scan

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theme_wa.json").write_bytes(theme_bytes(user="wa"))
    link = ingest.layout.users / "wa"
    link.symlink_to(outside)
    assert str(link) in set(scan(ingest.layout))  # the start-up scan hands it to ingest
    assert ingest.handle(str(link)) == "failed"
    record = json.loads((ingest.layout.root / "failed" / "wa" / "wa.error.json").read_text())
    assert "symbolic link" in record["reason"]
    assert not os.path.lexists(link) and os.path.islink(ingest.layout.root / "failed" / "wa" / "wa")
    assert sorted(p.name for p in outside.iterdir()) == ["theme_wa.json"]  # nothing read, moved or written
    assert ingest.ledger.jobs_for_source("wa", "Utilisateurs/wa/theme_wa.json") == []
    assert ingest.handle(str(ingest.layout.users / "gaby")) == "ignored"  # a real folder: its files come one by one
