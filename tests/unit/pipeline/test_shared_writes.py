"""Every write the daemon makes into the shared tree (outside review) lands inside the data folder,
whatever a group member planted: a plain file, a symlink to an outside folder or a FIFO where a
per-user folder, a top-level folder or a log file belongs is moved aside to a visible
``.quarantined-`` name and the write goes on; nothing is read through a link."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from astrowatch.core.config import Config
from astrowatch.core.errors import InputError
from astrowatch.pipeline.delivery import archive_decided, copy_snapshot, deliver_theme, file_into_dataset
from astrowatch.pipeline.publish import locate_source, refuse_file, result_stem, write_failed
from astrowatch.pipeline.records import log_generation
from astrowatch.pipeline.steps import cache_load
from astrowatch.storage import safefs
from astrowatch.storage.jsonlog import append_jsonl, read_jsonl
from astrowatch.storage.layout import FOLDERS, Layout
from astrowatch.storage.ledger import Job, Ledger

SQUATTERS = ("file", "symlink", "fifo")
PNG = b"\x89PNG\r\n\x1a\n" + b"result-bytes"


@pytest.fixture
def site(tmp_path: Path) -> tuple[Config, Layout, Ledger, Path]:
    cfg = Config(data_dir=tmp_path / "data")
    layout = Layout(cfg.data_dir)
    layout.ensure()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("MARKER-SECRET")
    return cfg, layout, Ledger(layout.ledger_path), outside


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _squat(path: Path, kind: str, outside: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "file":
        path.write_text("squat")
    elif kind == "symlink":
        path.symlink_to(outside, target_is_directory=True)
    else:
        os.mkfifo(path)


def _quarantined(folder: Path, name: str) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(f"{name}.quarantined-")]


def _enhance_job(layout: Layout, ledger: Ledger, content: bytes = PNG, name: str = "photo.png") -> Job:
    (layout.users / "ana").mkdir(exist_ok=True)
    (layout.users / "ana" / name).write_bytes(content)
    return ledger.create_job(kind="enhance", user="ana", source=f"Utilisateurs/ana/{name}",
                             source_sha256=hashlib.sha256(content).hexdigest())


def _astro_job(layout: Layout, ledger: Ledger) -> Job:
    theme = b'{"user": "ana"}'
    (layout.users / "ana").mkdir(exist_ok=True)
    (layout.users / "ana" / "theme_ana.json").write_bytes(theme)
    job = ledger.create_job(kind="astro", user="ana", source="Utilisateurs/ana/theme_ana.json",
                            source_sha256=hashlib.sha256(theme).hexdigest())
    snap = layout.archive_dir("ana", job.id) / "theme_ana.json"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(theme)
    return job


def _approved(layout: Layout, job: Job, data: bytes = PNG) -> Path:
    image = layout.approved / f"{result_stem(job)}.png"
    image.write_bytes(data)
    return image


Write = Callable[[], Path]


def _failed(cfg: Config, layout: Layout, ledger: Ledger) -> Write:
    job = _enhance_job(layout, ledger)

    def write() -> Path:
        write_failed(job, layout, "backend down")
        return layout.failed_dir("ana") / "photo.png.error.json"
    return write


def _refused(cfg: Config, layout: Layout, ledger: Ledger) -> Write:
    (layout.users / "ana").mkdir(exist_ok=True)
    src = layout.users / "ana" / "notes.bin"
    src.write_bytes(b"not an image")
    return lambda: refuse_file(layout, "ana", src, "not an image", move=True).with_name("notes.bin.error.json")


def _archived(cfg: Config, layout: Layout, ledger: Ledger) -> Write:
    job = _enhance_job(layout, ledger)
    image = _approved(layout, job)

    def write() -> Path:
        archive_decided(layout, job, image)
        return layout.archive_dir("ana", job.id) / image.name
    return write


def _dataset(cfg: Config, layout: Layout, ledger: Ledger) -> Write:
    job = _enhance_job(layout, ledger)
    image = _approved(layout, job)

    def write() -> Path:
        file_into_dataset(layout, cfg, job, image, "a caption")
        return layout.dataset_dir("ana") / "photo.png"
    return write


def _theme(cfg: Config, layout: Layout, ledger: Ledger) -> Write:
    job = _astro_job(layout, ledger)  # the theme it read was snapshotted at ingest
    image = _approved(layout, job)
    return lambda: layout.root / deliver_theme(layout, job, image)


WRITERS: dict[str, tuple[str, Callable[[Config, Layout, Ledger], Write]]] = {
    "failed/<u> (write_failed)": ("failed/ana", _failed),
    "failed/<u> (refuse_file)": ("failed/ana", _refused),
    "archive/<u>": ("archive/ana", _archived),
    "datasets/<u>": ("datasets/ana", _dataset),
    "Utilisateurs/<u>": ("Utilisateurs/ana", _theme),
}


@pytest.mark.parametrize("squatter", SQUATTERS)
@pytest.mark.parametrize("where", list(WRITERS))
def test_a_squatter_where_a_per_user_folder_belongs_is_moved_aside(site, where: str, squatter: str) -> None:
    cfg, layout, ledger, outside = site
    rel, prepare = WRITERS[where]
    folder = layout.root / rel
    write = prepare(cfg, layout, ledger)
    if folder.exists():
        folder.rename(folder.with_name("ana-before"))  # a group member replaces the real folder
    _squat(folder, squatter, outside)
    before = _tree(outside)
    written = write()
    assert written.is_file() and not written.is_symlink()
    assert folder.is_dir() and not folder.is_symlink()
    assert len(_quarantined(folder.parent, folder.name)) == 1
    assert _tree(outside) == before, "something outside the data folder changed"
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def test_a_squatter_in_a_thread_does_not_kill_it(site) -> None:
    """The landed bug: FileExistsError in a thread.  Now the write simply succeeds."""
    cfg, layout, ledger, outside = site
    write = _failed(cfg, layout, ledger)
    _squat(layout.failed / "ana", "file", outside)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            write()
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join(10)
    assert errors == [] and (layout.failed / "ana" / "photo.png.error.json").is_file()


@pytest.mark.parametrize("squatter", SQUATTERS)
@pytest.mark.parametrize("folder", FOLDERS)
def test_a_squatter_where_a_top_level_folder_belongs_does_not_fail_the_start(tmp_path: Path, folder: str,
                                                                              squatter: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "data"
    _squat(root / folder, squatter, outside)
    layout = Layout(root)
    layout.ensure()
    layout.ensure()  # every start
    assert (root / folder).is_dir() and not (root / folder).is_symlink()
    assert layout.work.is_dir()
    assert len(_quarantined(root, folder)) == 1
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("squatter", ["symlink", "fifo", "folder"])
@pytest.mark.parametrize("log_name", ["reviews.jsonl", "generations.jsonl"])
def test_a_squatter_at_a_log_file_never_redirects_an_append(site, tmp_path: Path, log_name: str,
                                                            squatter: str) -> None:
    cfg, layout, ledger, _outside = site
    secret = tmp_path / "secret.log"
    secret.write_text("MARKER-SECRET\n")
    path = layout.logs / log_name
    if squatter == "symlink":
        path.symlink_to(secret)
    elif squatter == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    if log_name == "generations.jsonl":
        log_generation(layout, _enhance_job(layout, ledger), "ok", 1.0)
    else:
        append_jsonl(path, {"job_id": "x"}, root=layout.root)
    assert secret.read_text() == "MARKER-SECRET\n"
    assert path.is_file() and not path.is_symlink()
    assert len(list(read_jsonl(path, root=layout.root))) == 1
    assert len(_quarantined(layout.logs, log_name)) == 1


def test_a_symlinked_logs_folder_is_moved_aside_not_written_through(site) -> None:
    cfg, layout, ledger, outside = site
    layout.logs.rmdir()
    layout.logs.symlink_to(outside, target_is_directory=True)
    append_jsonl(layout.reviews_log, {"job_id": "x"}, root=layout.root)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert layout.reviews_log.is_file() and not layout.logs.is_symlink()


def test_a_fifo_log_is_read_as_empty_at_once(site) -> None:
    _cfg, layout, _ledger, _outside = site
    os.mkfifo(layout.reviews_log)
    t0 = time.monotonic()
    assert list(read_jsonl(layout.reviews_log, root=layout.root)) == []
    assert time.monotonic() - t0 < 2


def test_an_overlong_log_line_is_skipped_not_held(site) -> None:
    _cfg, layout, _ledger, _outside = site
    append_jsonl(layout.reviews_log, {"job_id": "a"}, root=layout.root)
    with open(layout.reviews_log, "ab") as fh:
        fh.write(b'{"job_id": "' + b"x" * (3 << 20) + b'"}\n')
    append_jsonl(layout.reviews_log, {"job_id": "b"}, root=layout.root)
    assert [r["job_id"] for r in read_jsonl(layout.reviews_log, root=layout.root)] == ["a", "b"]


# -- reads of what a group member can replace ------------------------------------------------------
def test_an_approved_image_that_is_a_symlink_to_a_secret_is_never_delivered(site, tmp_path: Path) -> None:
    cfg, layout, ledger, _outside = site
    job = _enhance_job(layout, ledger)
    secret = tmp_path / "key.png"
    secret.write_bytes(b"MARKER-SECRET")
    image = layout.approved / f"{result_stem(job)}.png"
    image.symlink_to(secret)
    with pytest.raises(safefs.Unreadable, match="symbolic link"):
        file_into_dataset(layout, cfg, job, image, "caption")
    astro = _astro_job(layout, ledger)
    with pytest.raises(safefs.Unreadable, match="symbolic link"):
        deliver_theme(layout, astro, image)
    assert b"MARKER-SECRET" not in b"".join(p.read_bytes() for p in layout.root.rglob("*")
                                            if p.is_file() and not p.is_symlink() and "state" not in p.parts)


def test_an_oversized_approved_image_is_refused_before_it_is_read(site) -> None:
    cfg, layout, ledger, _outside = site
    cfg.limits.max_image_bytes = 1000
    job = _enhance_job(layout, ledger)
    image = layout.approved / f"{result_stem(job)}.png"
    with open(image, "wb") as fh:
        fh.truncate(8 << 30)  # sparse: costs nothing to make
    t0 = time.monotonic()
    with pytest.raises(safefs.Unreadable, match="over the 1000-byte limit"):
        file_into_dataset(layout, cfg, job, image, "caption")
    assert time.monotonic() - t0 < 2


def test_the_previous_theme_is_kept_only_when_it_is_a_plain_file(site, tmp_path: Path) -> None:
    cfg, layout, ledger, _outside = site
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"MARKER-SECRET")
    job = _astro_job(layout, ledger)
    dest = layout.user_dir("ana") / "theme_ana.png"
    dest.symlink_to(secret)
    deliver_theme(layout, job, _approved(layout, job))
    assert dest.read_bytes() == PNG and not dest.is_symlink()
    assert secret.read_bytes() == b"MARKER-SECRET"
    assert not (layout.archive_dir("ana", job.id) / "previous_theme_ana.png").exists()


def test_a_symlinked_source_is_not_taken_for_the_input(site, tmp_path: Path) -> None:
    """Same content outside, linked in: not the input (and never moved to failed/ or the archive)."""
    cfg, layout, ledger, _outside = site
    job = _enhance_job(layout, ledger)
    copy = tmp_path / "copy.png"
    copy.write_bytes(PNG)
    src = layout.abs(job.source)
    src.unlink()
    src.symlink_to(copy)
    with pytest.raises(InputError, match="gone or was replaced"):
        locate_source(ledger, layout, job)
    write_failed(job, layout, "reason")
    assert src.is_symlink() and not (layout.failed_dir("ana") / "photo.png").exists()


def test_a_sparse_source_is_not_hashed(site) -> None:
    cfg, layout, ledger, _outside = site
    job = _enhance_job(layout, ledger)
    with open(layout.abs(job.source), "wb") as fh:
        fh.truncate(8 << 30)
    t0 = time.monotonic()
    with pytest.raises(InputError):
        locate_source(ledger, layout, job, max_bytes=1 << 20)
    assert time.monotonic() - t0 < 2


def test_a_failed_theme_is_copied_from_a_plain_snapshot_only(site, tmp_path: Path) -> None:
    cfg, layout, ledger, _outside = site
    job = _astro_job(layout, ledger)
    secret = tmp_path / "secret.json"
    secret.write_text('{"key": "MARKER-SECRET"}')
    snap = layout.archive_dir("ana", job.id) / "theme_ana.json"
    snap.unlink()
    snap.symlink_to(secret)
    original = layout.abs(job.source)
    original.unlink()
    original.symlink_to(secret)
    write_failed(job, layout, "bad theme")
    assert not (layout.failed_dir("ana") / "theme_ana.json").exists()
    assert (layout.failed_dir("ana") / "theme_ana.json.error.json").is_file()


def test_a_symlinked_snapshot_is_not_copied_for_a_redo(site, tmp_path: Path) -> None:
    cfg, layout, ledger, _outside = site
    job = _astro_job(layout, ledger)
    snap = layout.archive_dir("ana", job.id) / "theme_ana.json"
    snap.unlink()
    secret = tmp_path / "secret.json"
    secret.write_text('{"key": "MARKER-SECRET"}')
    snap.symlink_to(secret)
    copy_snapshot(layout, job, "c" * 12)
    assert not (layout.archive_dir("ana", "c" * 12) / "theme_ana.json").exists()


def test_archive_moves_only_plain_files(site, tmp_path: Path) -> None:
    cfg, layout, ledger, outside = site
    job = _enhance_job(layout, ledger)
    image = _approved(layout, job)
    sidecar = image.with_suffix(".json")
    sidecar.symlink_to(outside / "keep.txt")
    fifo = layout.inbox_dir("ana") / f"{result_stem(job)}.txt"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    archive_decided(layout, job, image)
    archived = {p.name for p in layout.archive_dir("ana", job.id).iterdir()}
    assert archived == {image.name}
    assert not os.path.lexists(sidecar) and not os.path.lexists(fifo)  # nothing left behind, nothing opened
    review = layout.failed_dir("_review")
    assert (review / sidecar.name).is_symlink() and stat.S_ISFIFO(os.lstat(review / fifo.name).st_mode)
    assert (outside / "keep.txt").read_text() == "MARKER-SECRET"


def test_a_symlinked_cache_entry_is_a_miss(site, tmp_path: Path) -> None:
    _cfg, layout, _ledger, _outside = site
    key = "ab" + "0" * 62
    folder = layout.cache / key[:2]
    folder.mkdir(parents=True)
    secret = tmp_path / "meta.json"
    secret.write_text('{"backend": "x", "params": {}}')
    (folder / f"{key}.json").symlink_to(secret)
    (folder / f"{key}.png").write_bytes(PNG)
    assert cache_load(layout, key) is None
