"""Where approved results go, and archiving.  Every function is idempotent.

- astro approve:   ``Utilisateurs/<user>/theme_<user>.png`` (atomic replace; the previous one
                   is kept in the job's archive folder as ``previous_theme_<user>.png``)
- enhance approve: ``datasets/<user>/<stem>.<png|webp|jpg>`` + ``<stem>.txt`` caption (Fluxgym / kohya:
                   one line, trigger word first) and a ``dataset.toml`` for kohya sd-scripts
- always:          image, caption and sidecar moved into ``archive/<user>/<job>/``
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrowatch.core.jobs import JobKind
from astrowatch.pipeline.publish import result_stem
from astrowatch.storage.files import sha256_file
from astrowatch.storage.images import RESULT_SUFFIX, atomic_write_bytes, atomic_write_text, fsync_dir, move_out

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger


def _sha(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def deliver_theme(layout: Layout, job: Job, image: Path) -> str:
    dest = layout.user_dir(job.user) / f"theme_{job.user}.png"
    data = image.read_bytes()
    if _sha(dest) == hashlib.sha256(data).hexdigest():
        return layout.rel(dest)  # already delivered (crash after the replace)
    if dest.is_file() and not dest.is_symlink():
        keep = layout.archive_dir(job.user, job.id) / f"previous_theme_{job.user}.png"
        if not keep.exists():
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dest, keep)
    atomic_write_bytes(dest, data)
    return layout.rel(dest)


def caption_line(caption: str, trigger_word: str) -> str:
    """The training caption: the first line of the reviewer's text, trigger word first."""
    first = next((ln.strip() for ln in caption.splitlines() if ln.strip()), "")
    if trigger_word and not first.lower().startswith(trigger_word.lower()):
        first = f"{trigger_word}, {first}" if first else trigger_word
    return first


def file_into_dataset(layout: Layout, config: Config, job: Job, image: Path, caption: str) -> str:
    folder = layout.dataset_dir(job.user)
    folder.mkdir(parents=True, exist_ok=True)
    data = image.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    stem = job.source_name.rsplit(".", 1)[0]
    suffix = ".jpg" if image.suffix.lower() == ".jpeg" else image.suffix.lower()
    for name in (stem, f"{stem}-{job.id}"):
        dest = folder / f"{name}{suffix}"
        others = [folder / f"{name}{s}" for s in RESULT_SUFFIX.values() if s != suffix]
        if any(o.exists() for o in others):
            continue  # photo.png filed earlier: a photo.webp beside it would share photo.txt
        if not dest.exists() or _sha(dest) == digest:
            break
    write_dataset_toml(layout, config, job.user)
    # caption before image: a trainer scanning the folder never sees an image without its caption
    atomic_write_text(dest.with_suffix(".txt"), caption_line(caption, config.dataset.trigger_word) + "\n")
    if _sha(dest) != digest:
        atomic_write_bytes(dest, data)
    return layout.rel(dest)


def write_dataset_toml(layout: Layout, config: Config, user: str) -> None:
    """kohya sd-scripts / Fluxgym dataset config: caption_extension must be said explicitly."""
    ds = config.dataset
    class_tokens = ds.class_tokens or ds.trigger_word or user
    text = (
        "# Written by astrowatch; regenerated on every approval.\n"
        "[general]\n"
        "shuffle_caption = false\n"
        'caption_extension = ".txt"\n'
        "keep_tokens = 1\n\n"
        "[[datasets]]\n"
        f"resolution = {ds.resolution}\n"
        "batch_size = 1\n\n"
        "  [[datasets.subsets]]\n"
        f"  image_dir = {json.dumps(str(layout.dataset_dir(user)))}\n"
        f"  class_tokens = {json.dumps(class_tokens)}\n"
        f"  num_repeats = {ds.repeats}\n"
    )
    path = layout.dataset_dir(user) / "dataset.toml"
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    atomic_write_text(path, text)


def archive_decided(layout: Layout, job: Job, image: Path | None, extra: list[Path] | None = None) -> None:
    """Move the decided image and the job's sidecars (beside it and in the inbox) into the archive."""
    archive = layout.archive_dir(job.user, job.id)
    archive.mkdir(parents=True, exist_ok=True)
    stem = result_stem(job)
    moves: list[Path] = list(extra or [])
    if image is not None and image.parent != archive:
        moves.append(image)
        moves += [image.with_name(f"{image.name.rsplit('.', 1)[0]}{s}") for s in (".json", ".txt")]
    inbox = layout.inbox_dir(job.user)
    moves += [inbox / f"{stem}{s}" for s in (*RESULT_SUFFIX.values(), ".json", ".txt", ".error.txt")]
    for src in moves:
        if src.is_file() and not src.is_symlink() and src.parent != archive:
            dest = archive / src.name
            if dest.exists() and not os.path.samefile(src, dest):
                dest = archive / f"{src.stem}.{int(time.time() * 1000)}{src.suffix}"
            move_out(src, dest)
    fsync_dir(archive)


def copy_snapshot(layout: Layout, parent: Job, child_id: str) -> None:
    src = layout.archive_dir(parent.user, parent.id) / parent.source_name
    dest = layout.archive_dir(parent.user, child_id) / parent.source_name
    if src.is_file() and not dest.exists():
        atomic_write_bytes(dest, src.read_bytes())


def queue_child(ledger: Ledger, layout: Layout, parent: Job, params: dict[str, Any]) -> tuple[Job, bool]:
    """The one child job of ``parent`` (a redo or a retry), idempotent.  An astro child's theme
    snapshot is in place before the job exists, so a worker never claims it without one."""
    from astrowatch.storage.ledger import new_job_id

    child_id = new_job_id()
    if parent.kind == JobKind.ASTRO:
        copy_snapshot(layout, parent, child_id)
    child, created = ledger.create_child(parent, params=params, job_id=child_id)
    if not created:
        shutil.rmtree(layout.archive_dir(parent.user, child_id), ignore_errors=True)
        if parent.kind == JobKind.ASTRO:
            copy_snapshot(layout, parent, child.id)  # after a crash between the two steps
    return child, created
