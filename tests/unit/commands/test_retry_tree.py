"""``astrowatch retry`` takes a failed input back from ``failed/<user>/`` without following links."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from astrowatch.commands.retry import failed_entry, restore_input
from astrowatch.core.errors import NotFound
from astrowatch.pipeline.publish import write_failed
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Job, Ledger

PHOTO = b"\x89PNG\r\n\x1a\nphoto"


@pytest.fixture
def failed(tmp_path: Path) -> tuple[Layout, Ledger, Job]:
    layout = Layout(tmp_path / "data")
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    (layout.users / "ana").mkdir()
    (layout.users / "ana" / "p.png").write_bytes(PHOTO)
    job = ledger.create_job(kind="enhance", user="ana", source="Utilisateurs/ana/p.png",
                            source_sha256=hashlib.sha256(PHOTO).hexdigest())
    write_failed(job, layout, "backend down")
    return layout, ledger, job


def test_the_failed_input_goes_back_to_the_archive(failed) -> None:
    layout, ledger, job = failed
    restore_input(ledger, layout, job)
    assert (layout.archive_dir("ana", job.id) / "p.png").read_bytes() == PHOTO
    assert not (layout.failed_dir("ana") / "p.png").exists()


def test_a_failed_input_swapped_for_a_symlink_is_not_taken(failed, tmp_path: Path) -> None:
    layout, ledger, job = failed
    same = tmp_path / "same.png"
    same.write_bytes(PHOTO)  # even the same content, outside: never read through the link
    entry = layout.failed_dir("ana") / "p.png"
    entry.unlink()
    entry.symlink_to(same)
    with pytest.raises(NotFound, match="no longer available"):
        restore_input(ledger, layout, job)
    assert not (layout.archive_dir("ana", job.id) / "p.png").exists()
    assert same.read_bytes() == PHOTO


def test_a_symlinked_failed_folder_is_not_listed(failed, tmp_path: Path) -> None:
    layout, _ledger, job = failed
    layout.failed_dir("ana").rename(tmp_path / "moved")
    layout.failed_dir("ana").symlink_to(tmp_path / "moved", target_is_directory=True)
    assert failed_entry(layout, job) is None
