"""Retention, sharing and log rotation walk the shared tree without following a link: a symlink a
group member plants never makes them remove, rename, chmod or count anything outside it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from astrowatch.storage import retention
from astrowatch.storage.jsonlog import append_jsonl, rotate, rotated_files
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger
from astrowatch.storage.sharing import share_tree


@pytest.fixture
def site(tmp_path: Path) -> tuple[Layout, Path]:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("MARKER-SECRET")
    return layout, outside


def _finished_job(layout: Layout) -> tuple[Ledger, str]:
    ledger = Ledger(layout.ledger_path)
    job = ledger.create_job(kind="enhance", user="ana", source="Utilisateurs/ana/p.png", source_sha256="0" * 64)
    for frm, to in (("queued", "running"), ("running", "failing"), ("failing", "failed")):
        assert ledger.transition(job.id, frm, to)
    return ledger, job.id


def test_retention_never_removes_through_a_symlinked_user_archive(site) -> None:
    layout, outside = site
    ledger, job_id = _finished_job(layout)
    (outside / job_id).mkdir()
    (outside / job_id / "photo.png").write_text("outside")
    (layout.archive / "ana").symlink_to(outside, target_is_directory=True)
    removed, _more = retention.prune_archive(layout, ledger, days=1, now=9e12)
    assert removed == 0
    assert (outside / job_id / "photo.png").read_text() == "outside"


def test_retention_removes_a_job_folder_and_links_in_it_not_their_targets(site) -> None:
    layout, outside = site
    ledger, job_id = _finished_job(layout)
    folder = layout.archive_dir("ana", job_id)
    folder.mkdir(parents=True)
    (folder / "photo.png").write_text("x")
    (folder / "link").symlink_to(outside, target_is_directory=True)
    removed, _more = retention.prune_archive(layout, ledger, days=1, now=9e12)
    assert removed == 1 and not folder.exists() and not (layout.archive / "ana").exists()
    assert (outside / "keep.txt").read_text() == "MARKER-SECRET"


def test_sizes_never_count_what_a_link_points_at(site) -> None:
    layout, outside = site
    (outside / "big").write_bytes(b"x" * 3_000_000)
    (layout.archive / "ana").mkdir()
    (layout.archive / "ana" / "out").symlink_to(outside, target_is_directory=True)
    (layout.archive / "ana" / "f").write_bytes(b"x" * 1_000_000)
    assert retention.sizes_mb(layout)["archive"] == 1.0
    layout.archive.rename(layout.root / "archive-real")
    layout.archive.symlink_to(outside, target_is_directory=True)
    assert retention.sizes_mb(layout)["archive"] == 0.0


def test_rotation_never_renames_through_a_symlinked_logs_folder(site) -> None:
    layout, outside = site
    (outside / "x.jsonl").write_text("{}\n" * 1000)
    layout.logs.rmdir()
    layout.logs.symlink_to(outside, target_is_directory=True)
    assert retention.rotate_logs(layout, max_mb=0.000001, keep=2) == 0
    assert rotate(layout.logs / "x.jsonl", 2, root=layout.root) is False
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt", "x.jsonl"]


def test_rotation_still_rotates_and_skips_a_symlinked_rotated_file(site) -> None:
    layout, outside = site
    log = layout.logs / "g.jsonl"
    append_jsonl(log, {"n": 1}, root=layout.root)
    (layout.logs / "g.jsonl.1").symlink_to(outside / "keep.txt")
    assert retention.rotate_logs(layout, max_mb=0.000001, keep=3) == 1
    assert [p.name for p in rotated_files(log, root=layout.root)] == ["g.jsonl.1"]
    assert (outside / "keep.txt").read_text() == "MARKER-SECRET"


def test_sharing_never_chmods_through_a_link(site) -> None:
    layout, outside = site
    os.chmod(outside, 0o700)
    (layout.archive / "ana").mkdir()
    (layout.archive / "ana" / "out").symlink_to(outside, target_is_directory=True)
    (layout.users / "eve").symlink_to(outside, target_is_directory=True)
    layout.inbox.rmdir()
    layout.inbox.symlink_to(outside, target_is_directory=True)
    share_tree(layout)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o700
    assert stat.S_IMODE((layout.archive / "ana").stat().st_mode) & 0o070 == 0o070
