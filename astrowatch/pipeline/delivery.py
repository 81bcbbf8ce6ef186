"""Where approved results go, and archiving.  Every function is idempotent.

- astro approve:   ``Utilisateurs/<user>/theme_<user>.png`` (atomic replace; the previous one
                   is kept in the job's archive folder as ``previous_theme_<user>.png``)
- enhance approve: ``datasets/<user>/<stem>.<png|webp|jpg>`` + ``<stem>.txt`` caption (Fluxgym / kohya:
                   one line, trigger word first) and a ``dataset.toml`` for kohya sd-scripts
- always:          image, caption and sidecar moved into ``archive/<user>/<job>/``

Every read and write goes through :mod:`astrowatch.storage.safefs` relative to the data root:
the approved image is read once from a descriptor (no link followed, size bounded), and a file,
symlink or FIFO squatting ``Utilisateurs/<user>``, ``datasets/<user>`` or ``archive/<user>`` is
moved aside before the folder is made.  Nothing is ever written outside the data folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.core.config import input_bound
from astrowatch.core.jobs import JobKind
from astrowatch.pipeline.publish import result_stem, set_aside
from astrowatch.pipeline.variants import job_variants, sheet_stem, variant_stem
from astrowatch.storage import safefs
from astrowatch.storage.images import RESULT_SUFFIX

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.delivery")


def _sha(layout: Layout, path: Path, max_bytes: int) -> str | None:
    """The content hash of a regular file within the bound, never through a link; else None."""
    try:
        return safefs.sha256_of(path, root=layout.root, max_bytes=max_bytes)[0]
    except (safefs.Unreadable, OSError):
        return None


def _exists(layout: Layout, path: Path) -> bool:
    """Whether anything (file, link, FIFO...) has this name; links are not followed."""
    return safefs.lstat_or_none(path, root=layout.root) is not None


def _approved_bytes(layout: Layout, image: Path, data: bytes | None, max_bytes: int) -> bytes:
    """The approved image's bytes, from one descriptor (or as the caller already read them)."""
    if data is not None:
        return data
    return safefs.read_bytes(image, root=layout.root, max_bytes=max_bytes, what="result image").data


def deliver_theme(layout: Layout, job: Job, image: Path, *, data: bytes | None = None,
                  max_bytes: int | None = None) -> str:
    """``Utilisateurs/<user>/theme_<user>.png``, written atomically relative to the user folder's
    descriptor (a symlink, file or FIFO squatting ``Utilisateurs/<user>`` is moved aside first).
    ``data``: the image's bytes when the caller read (and checked) them already; else the image
    is read once, without following a link, within ``max_bytes`` (default: the photo bound).
    Raises :class:`~astrowatch.storage.safefs.Unreadable` when the image cannot be read safely."""
    root = layout.root
    bound = max_bytes or input_bound(JobKind.ENHANCE)
    dest = layout.user_dir(job.user) / f"theme_{job.user}.png"
    content = _approved_bytes(layout, image, data, bound)
    if _sha(layout, dest, bound) == hashlib.sha256(content).hexdigest():
        return layout.rel(dest)  # already delivered (crash after the replace)
    keep = layout.archive_dir(job.user, job.id) / f"previous_theme_{job.user}.png"
    if not _exists(layout, keep):
        try:
            previous = safefs.read_bytes(dest, root=root, max_bytes=bound, what="delivered image").data
        except safefs.Unreadable:
            pass  # none yet, or not a plain file (never copied through a link)
        else:
            safefs.write_bytes(keep, previous, root=root)
    safefs.write_bytes(dest, content, root=root)
    return layout.rel(dest)


def caption_line(caption: str, trigger_word: str) -> str:
    """The training caption: the first line of the reviewer's text, trigger word first."""
    first = next((ln.strip() for ln in caption.splitlines() if ln.strip()), "")
    if trigger_word and not first.lower().startswith(trigger_word.lower()):
        first = f"{trigger_word}, {first}" if first else trigger_word
    return first


def file_into_dataset(layout: Layout, config: Config, job: Job, image: Path, caption: str, *,
                      data: bytes | None = None) -> str:
    """``datasets/<user>/<stem>.<ext>`` + its caption (and ``dataset.toml``), written relative to
    the dataset folder's descriptor (a squatter at ``datasets/<user>`` is moved aside first).
    The image is read once without following a link, within ``limits.max_image_bytes`` (or
    ``data``: its bytes, already read and checked by the caller)."""
    root = layout.root
    bound = config.limits.max_image_bytes
    folder = layout.dataset_dir(job.user)
    safefs.make_dirs(folder, root)
    content = _approved_bytes(layout, image, data, bound)
    digest = hashlib.sha256(content).hexdigest()
    stem = job.source_name.rsplit(".", 1)[0]
    suffix = ".jpg" if image.suffix.lower() == ".jpeg" else image.suffix.lower()
    for name in (stem, f"{stem}-{job.id}"):
        dest = folder / f"{name}{suffix}"
        others = [folder / f"{name}{s}" for s in RESULT_SUFFIX.values() if s != suffix]
        if any(_exists(layout, o) for o in others):
            continue  # photo.png filed earlier: a photo.webp beside it would share photo.txt
        if not _exists(layout, dest) or _sha(layout, dest, bound) == digest:
            break
    write_dataset_toml(layout, config, job.user)
    # caption before image: a trainer scanning the folder never sees an image without its caption
    filed = caption_line(caption, config.dataset.trigger_word)
    safefs.write_text(dest.with_suffix(".txt"), filed + "\n", root=root)
    if _sha(layout, dest, bound) != digest:
        safefs.write_bytes(dest, content, root=root)
    from astrowatch.pipeline.dataset_captions import note_filed

    proposed = caption_line(str((job.result or {}).get("description") or ""), config.dataset.trigger_word)
    note_filed(layout, job.user, dest.name, job_id=job.id, proposed=proposed, filed=filed)
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
    if safefs.read_text_or_none(path, root=layout.root) == text:
        return
    safefs.write_text(path, text, root=layout.root)


def archive_decided(layout: Layout, job: Job, image: Path | None, extra: list[Path] | None = None, *,
                    only_moved: bool = False) -> None:
    """Move the decided image and the job's sidecars (beside it and in the inbox) into the archive.
    Only regular files are archived; a symlink, FIFO or folder under one of these names is moved,
    unopened, to ``failed/_review/`` with the reason, so nothing is left behind in a decision folder
    or the inbox.  The archive folder is entered without following links (a squatter is moved
    aside first).  ``only_moved``: just ``image`` and its sidecars (one variant rejected while its
    siblings still wait in the inbox)."""
    root = layout.root
    archive = layout.archive_dir(job.user, job.id)
    safefs.make_dirs(archive, root)
    stem = result_stem(job)
    moves: list[Path] = list(extra or [])
    if image is not None and image.parent != archive:
        moves.append(image)
        moves += [image.with_name(f"{image.name.rsplit('.', 1)[0]}{s}") for s in (".json", ".txt")]
    inbox = layout.inbox_dir(job.user)
    stems = [] if only_moved else [stem]
    if job_variants(job) and not only_moved:  # every variant and the contact sheet: the siblings of a pick are retired here
        stems += [variant_stem(stem, int(v["variant"])) for v in job_variants(job)] + [sheet_stem(stem)]
    moves += [inbox / f"{s}{x}" for s in stems for x in (*RESULT_SUFFIX.values(), ".json", ".txt", ".error.txt")]
    for src in moves:
        st = safefs.lstat_or_none(src, root=root)
        if st is None or src.parent == archive:
            continue
        if not stat.S_ISREG(st.st_mode):
            set_aside(layout, src, job.id)
            continue
        dest = archive / src.name
        there = safefs.lstat_or_none(dest, root=root)
        if there is not None and safefs.identity(there) != safefs.identity(st):
            dest = archive / f"{src.stem}.{int(time.time() * 1000)}{src.suffix}"
        try:
            safefs.move_out(src, dest, root=root)
        except FileNotFoundError:
            continue  # moved meanwhile (a reviewer): nothing left to archive
        except safefs.Unreadable as exc:
            log.warning("not archived", path=layout.rel(src), reason=str(exc))


def copy_snapshot(layout: Layout, parent: Job, child_id: str, *, max_bytes: int | None = None) -> None:
    """The parent's theme snapshot, copied for its child (read without following a link)."""
    src = layout.archive_dir(parent.user, parent.id) / parent.source_name
    dest = layout.archive_dir(parent.user, child_id) / parent.source_name
    if _exists(layout, dest):
        return
    try:
        data = safefs.read_bytes(src, root=layout.root, max_bytes=max_bytes or input_bound(JobKind.ASTRO),
                                 what="theme snapshot").data
    except safefs.Unreadable as exc:
        if not exc.gone:
            log.warning("theme snapshot not copied", path=layout.rel(src), reason=str(exc))
        return
    safefs.write_bytes(dest, data, root=layout.root)


def remove_tree(layout: Layout, folder: Path) -> bool:
    """Remove ``folder`` and everything in it, reached and walked without following any link
    (``shutil.rmtree`` relative to the parent's descriptor).  False when it was not there."""
    try:
        with safefs.open_dir(folder.parent, layout.root) as dfd:
            st = os.stat(folder.name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                return False
            shutil.rmtree(folder.name, dir_fd=dfd)
    except (safefs.Unreadable, FileNotFoundError):
        return False
    return True


def queue_child(ledger: Ledger, layout: Layout, parent: Job, params: dict[str, Any]) -> tuple[Job, bool]:
    """The one child job of ``parent`` (a redo or a retry), idempotent.  An astro child's theme
    snapshot is in place before the job exists, so a worker never claims it without one."""
    from astrowatch.storage.ledger import new_job_id

    child_id = new_job_id()
    if parent.kind == JobKind.ASTRO:
        copy_snapshot(layout, parent, child_id)
    child, created = ledger.create_child(parent, params=params, job_id=child_id)
    if not created:
        remove_tree(layout, layout.archive_dir(parent.user, child_id))
        if parent.kind == JobKind.ASTRO:
            copy_snapshot(layout, parent, child.id)  # after a crash between the two steps
    return child, created
