"""Files that make a job's state visible: outputs in the inbox, inputs in archive/ or failed/
(and :func:`refuse_file`, the failed/ entry for an input that never became a job).

Every function here is idempotent — it can be interrupted at any point (SIGKILL) and run
again by recovery with the same end result, and no duplicate file.  Order matters: in the
inbox the sidecar ``.json`` and ``.txt`` appear before the image, so a reviewer never moves an
image whose sidecar is not there yet.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrowatch.core.jobs import JobKind
from astrowatch.storage.files import safe_display_name, sha256_file
from astrowatch.storage.images import (
    RESULT_SUFFIX,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    move_out,
    read_json_or_none,
    result_bytes,
)
from astrowatch.storage.layout import display

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.pipeline.marking import Marker
    from astrowatch.pipeline.steps import Outcome
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger

RESULT_SHA_KEY = "sha256"  # in a job's result (the ledger): the hash of the image published to the inbox
RESULT_MAX_BYTES = 1 << 31  # the daemon's own result, hashed from its work folder (no user input)
REVIEW_HELP = ("Move the image into approved/ to accept it, rejected/ to refuse it, or edit 'params' "
               "here and move the image into redo/ to run it again.")


def result_stem(job: Job) -> str:
    """``theme_gaby.1a2b3c4d5e6f``: the source stem plus the job id (recognisable when moved)."""
    stem = job.source_name.rsplit(".", 1)[0]
    return f"{stem}.{job.id}"


def write_outputs(job: Job, layout: Layout, outcome: Outcome, timings: dict[str, float], *,
                  marker: Marker | None = None) -> dict[str, Any]:
    """Write image, caption and sidecar into the job's work folder; return the sidecar.  With a
    ``marker`` the image says it is generated (XMP, and a C2PA manifest when configured): made
    here, before the sha256 is taken at publish, so the bytes reviewed are the bytes delivered."""
    work = layout.work_dir(job.id)
    work.mkdir(parents=True, exist_ok=True)
    stem = result_stem(job)
    r = outcome.result
    image_name = stem + RESULT_SUFFIX[outcome.image_format]
    sidecar = {
        "job_id": job.id, "kind": job.kind, "user": job.user, "parent_job": job.parent_id,
        "source": {"path": job.source, "name": job.source_name, "sha256": job.source_sha256},
        "image": image_name, "backend": r.backend, "model": r.model, "params": outcome.params,
        "seed": outcome.params.get("seed", r.seed), "prompt": r.prompt, "negative_prompt": r.negative_prompt,
        "attempt": job.attempts, "timings": timings, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{k: v for k, v in outcome.extra.items() if v is not None},
        "review": REVIEW_HELP,
    }
    if r.extra:
        sidecar["backend_extra"] = r.extra
    meta = {"job_id": job.id, "kind": job.kind, "user": job.user, "source_sha256": job.source_sha256}
    kind_of_source = marker.source_type(job.kind, r) if marker is not None else None
    data = result_bytes(r.image, outcome.image_format, infotext=r.infotext, meta=meta, source_type=kind_of_source)
    if marker is not None and kind_of_source is not None:
        from astrowatch.pipeline.marking import source_ingredient

        data = marker.sign(data, outcome.image_format, source_type=kind_of_source, title=image_name,
                           ingredient=source_ingredient(job, layout) if job.kind == JobKind.ENHANCE else None)
        sidecar["provenance"] = {"digital_source_type": kind_of_source, "c2pa": marker.signer is not None}
    atomic_write_bytes(work / image_name, data)
    atomic_write_text(work / f"{stem}.txt", (r.description or "").rstrip("\n") + "\n")
    atomic_write_json(work / f"{stem}.json", sidecar)
    return sidecar


def publish(job: Job, layout: Layout, ledger: Ledger) -> None:
    """Move the outputs from the work folder into ``inbox/<user>/``, then (enhance) move the
    dropped original into the job's archive folder.  Safe to repeat.

    The image's sha256 is recorded in the job's result (:data:`RESULT_SHA_KEY`) before the image
    leaves the work folder (the daemon's own, out of the group's reach), so an approval is honoured
    only for these bytes: a PNG dropped into ``approved/`` under the job's name is not this one."""
    from astrowatch.storage import safefs

    root = layout.root
    work = layout.work_dir(job.id)
    inbox = layout.inbox_dir(job.user)
    safefs.make_dirs(inbox, root)
    stem = result_stem(job)
    result = dict(ledger.get(job.id).result or {})  # recorded with ``-> publishing`` (``job`` may predate it)
    image = work / str(result.get("image") or "")
    if result.get("image") and RESULT_SHA_KEY not in result:
        try:
            result[RESULT_SHA_KEY], _st = safefs.sha256_of(image, root=root, max_bytes=RESULT_MAX_BYTES,
                                                           what="result image")
        except safefs.Unreadable as exc:
            if not exc.gone:
                raise
        else:
            ledger.update_fields(job.id, result=result)
    for suffix in (".json", ".txt", *RESULT_SUFFIX.values()):  # image last
        src = work / f"{stem}{suffix}"
        if safefs.lstat_or_none(src, root=root) is not None:
            safefs.rename(src, inbox / src.name, root=root)
    fsync_dir(inbox)
    if job.kind == JobKind.ENHANCE and job.parent_id is None:  # a redo reads the parent's archived copy
        move_source_to(job, layout, layout.archive_dir(job.user, job.id))
    shutil.rmtree(work, ignore_errors=True)


def move_source_to(job: Job, layout: Layout, folder: Path, name: str | None = None) -> Path | None:
    """Move the job's dropped file into ``folder`` if it is still the content the job saw."""
    src = layout.abs(job.source)
    if src.is_symlink() or not src.is_file():
        return None
    try:
        if sha256_file(src) != job.source_sha256:
            return None  # a newer file took its place: it has its own job
    except OSError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / (name or src.name)
    move_out(src, dest)
    fsync_dir(folder)
    return dest


def locate_source(ledger: Ledger, layout: Layout, job: Job) -> Path:
    """The dropped image: still in the user folder, or archived with the job or an ancestor
    (a redo, a retry)."""
    from astrowatch.core.errors import InputError

    candidates = [layout.abs(job.source)]
    j: Job | None = job
    while j is not None:
        candidates.append(layout.archive_dir(j.user, j.id) / j.source_name)
        j = ledger.get(j.parent_id) if j.parent_id else None
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            try:
                if sha256_file(path) == job.source_sha256:
                    return path
            except OSError:
                continue
    raise InputError(f"{job.source_name}: the file is gone or was replaced before it was processed")


def write_failed(job: Job, layout: Layout, reason: str) -> Path:
    """``failed/<user>/<name>`` (the input, or a copy of the theme JSON which the upstream app
    owns) plus ``<name>.error.json`` with the reason, job id and attempts.  Safe to repeat."""
    folder = layout.failed_dir(job.user)
    folder.mkdir(parents=True, exist_ok=True)
    name = job.source_name
    error_path = folder / f"{name}.error.json"
    if error_path.exists() and _error_job(error_path) not in (job.id, None):
        stem, dot, ext = name.rpartition(".")
        name = f"{stem}.{job.id}.{ext}" if dot else f"{name}.{job.id}"
        error_path = folder / f"{name}.error.json"
    if job.kind == JobKind.ASTRO:
        snapshot = layout.archive_dir(job.user, job.id) / job.source_name
        original = layout.abs(job.source)
        src = snapshot if snapshot.exists() else original
        if src.is_file() and not src.is_symlink() and not (folder / name).exists():
            shutil.copyfile(src, folder / name)
    else:
        move_source_to(job, layout, folder, name)
    record = {"job_id": job.id, "kind": job.kind, "user": job.user, "source": job.source,
              "source_sha256": job.source_sha256, "attempts": job.attempts, "reason": reason,
              "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "retry": "bad input: fix it and drop it again; otherwise (backend, key, config fixed): "
                       f"astrowatch retry {job.id}"}
    if job.kind == JobKind.ENHANCE:
        from astrowatch.core.formats import accepted_text

        record["accepted"] = accepted_text()
    atomic_write_json(error_path, record)
    return error_path


def _error_job(path: Path) -> str | None:
    data = read_json_or_none(path)
    return data.get("job_id") if isinstance(data, dict) else None


def refuse_file(layout: Layout, folder_name: str, src: Path, reason: str, *, move: bool,
                extra: dict[str, Any] | None = None) -> Path:
    """A ``failed/<folder_name>/`` entry (file + ``.error.json``) for something with no job."""
    folder = layout.failed_dir(folder_name)
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_display_name(src.name)
    if os.path.lexists(folder / name):
        name = f"{int(time.time() * 1000)}-{name}"
    if move:
        move_out(src, folder / name)  # a symlink moves as a link: never followed
    elif src.is_file() and not src.is_symlink():
        shutil.copyfile(src, folder / name)
    record = {"job_id": None, "user": folder_name, "source": display(src.relative_to(layout.root)),
              "reason": reason, "attempts": 0, **(extra or {}),
              "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(folder / f"{name}.error.json", record)
    return folder / name
