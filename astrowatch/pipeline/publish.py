"""Files that make a job's state visible: outputs in the inbox, inputs in archive/ or failed/
(and :func:`refuse_file`, the failed/ entry for an input that never became a job).

Every write into the shared tree goes through :mod:`astrowatch.storage.safefs` relative to the
data root: a file, symlink or FIFO squatting ``failed/<user>``, ``archive/<user>`` or a job's
folder is moved aside (``<name>.quarantined-<time>-xxxx``) and the folder made; nothing is read
through a link or written outside the data folder.

Every function here is idempotent — it can be interrupted at any point (SIGKILL) and run
again by recovery with the same end result, and no duplicate file.  Order matters: in the
inbox the sidecar ``.json`` and ``.txt`` appear before the image, so a reviewer never moves an
image whose sidecar is not there yet.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.backends.base import Result
from astrowatch.core.config import input_bound
from astrowatch.core.jobs import JobKind
from astrowatch.storage import safefs
from astrowatch.storage.files import safe_display_name
from astrowatch.storage.images import RESULT_SUFFIX, fsync_dir, result_bytes
from astrowatch.storage.layout import REVIEW_FOLDER, display

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.pipeline.marking import Marker
    from astrowatch.pipeline.steps import Outcome
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger

RESULT_SHA_KEY = "sha256"  # in a job's result (the ledger): the hash of the image published to the inbox
RESULT_MAX_BYTES = 1 << 31  # the daemon's own result, hashed from its work folder (no user input)
VARIANT_HELP = ("One of several variants: move this image into approved/ to pick it (its siblings are "
                "retired), rejected/ to drop it, or redo/ to run the chart again from this variant's seed.")
SHEET_HELP = ("The contact sheet shows the variants side by side; it cannot be approved: move one "
              "<name>.v<k> image into approved/ to pick it, or this sheet into rejected/ to reject them all.")
REVIEW_HELP = ("Move the image into approved/ to accept it, rejected/ to refuse it, or edit 'params' "
               "here and move the image into redo/ to run it again.")

log = structlog.get_logger("astrowatch.publish")


def result_stem(job: Job) -> str:
    """``theme_gaby.1a2b3c4d5e6f``: the source stem plus the job id (recognisable when moved)."""
    stem = job.source_name.rsplit(".", 1)[0]
    return f"{stem}.{job.id}"


def write_outputs(job: Job, layout: Layout, outcome: Outcome, timings: dict[str, float], *,
                  marker: Marker | None = None, digests: dict[str, str] | None = None) -> dict[str, Any]:
    """Write image, caption and sidecar into the job's work folder; return the sidecar.  With a
    ``marker`` the image says it is generated (XMP, and a C2PA manifest when configured): made
    here, before the sha256 is taken at publish, so the bytes reviewed are the bytes delivered.

    With several variants (:mod:`astrowatch.pipeline.variants`) each one is written as
    ``<stem>.v<k>`` with its own seed, and the returned sidecar is the contact sheet's, which lists
    them under ``variants``.

    ``digests``: filled with each image's sha256 by its file name, taken from the bytes written
    (what :func:`publish` would hash again from the work folder: see :func:`with_digests`)."""
    stem = result_stem(job)
    r = outcome.result
    sidecar = {
        "job_id": job.id, "kind": job.kind, "user": job.user, "parent_job": job.parent_id,
        "source": {"path": job.source, "name": job.source_name, "sha256": job.source_sha256},
        "image": stem + RESULT_SUFFIX[outcome.image_format], "backend": r.backend, "model": r.model,
        "params": outcome.params, "seed": outcome.params.get("seed", r.seed), "prompt": r.prompt,
        "negative_prompt": r.negative_prompt, "attempt": job.attempts, "timings": timings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{k: v for k, v in outcome.extra.items() if v is not None},
        "review": REVIEW_HELP,
    }
    if not outcome.variants:
        return _write_one(job, layout, outcome, r, stem, sidecar, marker, digests=digests)
    from astrowatch.pipeline.variants import contact_sheet, sheet_stem, variant_stem

    listed = []
    for k, v in enumerate(outcome.variants, 1):
        name = variant_stem(stem, k)
        own = {**sidecar, "image": name + RESULT_SUFFIX[outcome.image_format], "seed": v.seed,
               "params": {**outcome.params, "seed": v.seed}, "variant": k, "variant_count": len(outcome.variants),
               "review": VARIANT_HELP}
        _write_one(job, layout, outcome, v, name, own, marker, digests=digests)
        listed.append({"variant": k, "image": own["image"], "seed": v.seed})
    sheet = contact_sheet([v.image for v in outcome.variants])
    as_result = Result(image=sheet, backend=r.backend, model=r.model, description=r.description)
    return _write_one(job, layout, outcome, as_result, sheet_stem(stem),
                      {**sidecar, "image": sheet_stem(stem) + ".png", "variants": listed, "review": SHEET_HELP},
                      marker, image_format="png", digests=digests)


def with_digests(record: dict[str, Any], digests: dict[str, str]) -> dict[str, Any]:
    """A job's result record (``image``, ``variants``) with the sha256 of each image, as
    :func:`publish` records it (:data:`RESULT_SHA_KEY`), from :func:`write_outputs`'s ``digests``:
    recorded with ``-> publishing``, publish then neither reads the images again nor updates the
    job.  An image without a digest is left to publish, as before."""
    out = dict(record)
    if out.get("image") and str(out["image"]) in digests:
        out[RESULT_SHA_KEY] = digests[str(out["image"])]
    if isinstance(out.get("variants"), list):
        out["variants"] = [{**e, RESULT_SHA_KEY: digests[str(e.get("image"))]}
                           if isinstance(e, dict) and str(e.get("image")) in digests else e for e in out["variants"]]
    return out


def _write_one(job: Job, layout: Layout, outcome: Outcome, r: Result, stem: str, sidecar: dict[str, Any],
               marker: Marker | None, image_format: str | None = None,
               digests: dict[str, str] | None = None) -> dict[str, Any]:
    work = layout.work_dir(job.id)
    fmt = image_format or outcome.image_format
    image_name = str(sidecar["image"])
    if r.extra:
        sidecar["backend_extra"] = r.extra
    meta = {"job_id": job.id, "kind": job.kind, "user": job.user, "source_sha256": job.source_sha256}
    kind_of_source = marker.source_type(job.kind, r) if marker is not None else None
    data = result_bytes(r.image, fmt, infotext=r.infotext, meta=meta, source_type=kind_of_source)
    if marker is not None and kind_of_source is not None:
        from astrowatch.pipeline.marking import source_ingredient

        data = marker.sign(data, fmt, source_type=kind_of_source, title=image_name,
                           ingredient=source_ingredient(job, layout) if job.kind == JobKind.ENHANCE else None)
        sidecar["provenance"] = {"digital_source_type": kind_of_source, "c2pa": marker.signer is not None}
    caption = ((r.description or "").rstrip("\n") + "\n").encode("utf-8")
    safefs.write_files(work, [(image_name, data), (f"{stem}.txt", caption),  # one fsync of the folder
                              (f"{stem}.json", safefs.json_bytes(sidecar))], root=layout.root)
    if digests is not None:
        digests[image_name] = hashlib.sha256(data).hexdigest()
    return sidecar


def publish(job: Job, layout: Layout, ledger: Ledger) -> None:
    """Move the outputs from the work folder into ``inbox/<user>/``, then (enhance) move the
    dropped original into the job's archive folder.  Safe to repeat.

    The image's sha256 is recorded in the job's result (:data:`RESULT_SHA_KEY`) before the image
    leaves the work folder (the daemon's own, out of the group's reach), so an approval is honoured
    only for these bytes: a PNG dropped into ``approved/`` under the job's name is not this one.
    The worker records it with ``-> publishing`` (:func:`with_digests`); a result recorded without
    it (an older release's) is hashed here from the work folder."""
    root = layout.root
    work = layout.work_dir(job.id)
    inbox = layout.inbox_dir(job.user)
    safefs.make_dirs(inbox, root)
    stem = result_stem(job)
    result = dict(ledger.get(job.id).result or {})  # recorded with ``-> publishing`` (``job`` may predate it)
    image = work / str(result.get("image") or "")
    changed = False
    if result.get("image") and RESULT_SHA_KEY not in result:
        digest = _work_sha(image, root)
        if digest is not None:
            result[RESULT_SHA_KEY], changed = digest, True
    for entry in result.get("variants") or []:  # each variant's bytes: a pick is honoured only for them
        if isinstance(entry, dict) and RESULT_SHA_KEY not in entry:
            digest = _work_sha(work / str(entry.get("image") or ""), root)
            if digest is not None:
                entry[RESULT_SHA_KEY], changed = digest, True
    if changed:
        ledger.update_fields(job.id, result=result)
    stems = [stem]
    if result.get("variants"):
        from astrowatch.pipeline.variants import sheet_stem, variant_stem

        stems = [variant_stem(stem, int(e["variant"])) for e in result["variants"]] + [sheet_stem(stem)]
    moves = [f"{s}{suffix}" for suffix in (".json", ".txt") for s in stems]  # sidecars first
    moves += [f"{s}{suffix}" for s in stems for suffix in RESULT_SUFFIX.values()]  # images, the sheet last
    present = {name for name, _ in safefs.listdir(work, root)}  # the work folder listed once
    for name in moves:
        if name in present:
            safefs.rename(work / name, inbox / name, root=root)
    fsync_dir(inbox)
    if job.kind == JobKind.ENHANCE and job.parent_id is None:  # a redo reads the parent's archived copy
        move_source_to(job, layout, layout.archive_dir(job.user, job.id))
    shutil.rmtree(work, ignore_errors=True)


def _work_sha(path: Path, root: Path) -> str | None:
    try:
        return safefs.sha256_of(path, root=root, max_bytes=RESULT_MAX_BYTES, what="result image")[0]
    except safefs.Unreadable as exc:
        if not exc.gone:
            raise
        return None


def _same_content(path: Path, layout: Layout, job: Job, max_bytes: int) -> safefs.Identity | None:
    """The file's identity if it is a regular single-link file within the bound whose content is
    the one the job saw (hashed from one descriptor, never through a link); else None."""
    try:
        digest, st = safefs.sha256_of(path, root=layout.root, max_bytes=max_bytes, what="job input")
    except (safefs.Unreadable, OSError):
        return None
    return safefs.identity(st) if digest == job.source_sha256 else None


def move_source_to(job: Job, layout: Layout, folder: Path, name: str | None = None, *,
                   max_bytes: int | None = None) -> Path | None:
    """Move the job's dropped file into ``folder`` if it is still the content the job saw."""
    src = layout.abs(job.source)
    seen = _same_content(src, layout, job, max_bytes or input_bound(job.kind))
    if seen is None:
        return None  # gone, refused, or a newer file took its place (it has its own job)
    dest = folder / (name or src.name)
    try:
        safefs.move_out(src, dest, root=layout.root)
    except FileNotFoundError:
        return None  # moved meanwhile (a reviewer, a second pass)
    except safefs.Unreadable as exc:
        if exc.gone:
            return None
        raise
    return dest


def locate_source(ledger: Ledger, layout: Layout, job: Job, *, max_bytes: int | None = None) -> Path:
    """The dropped image: still in the user folder, or archived with the job or an ancestor
    (a redo, a retry).  Each candidate is hashed from a descriptor opened without following links,
    after its size is checked against ``max_bytes`` (default: :func:`~astrowatch.core.config.input_bound`)."""
    from astrowatch.core.errors import InputError

    bound = max_bytes or input_bound(job.kind)
    candidates = [layout.abs(job.source)]
    j: Job | None = job
    while j is not None:
        candidates.append(layout.archive_dir(j.user, j.id) / j.source_name)
        j = ledger.get(j.parent_id) if j.parent_id else None
    for path in candidates:
        if _same_content(path, layout, job, bound) is not None:
            return path
    raise InputError(f"{job.source_name}: the file is gone or was replaced before it was processed")


def write_failed(job: Job, layout: Layout, reason: str, *, max_bytes: int | None = None) -> Path:
    """``failed/<user>/<name>`` (the input, or a copy of the theme JSON which the upstream app
    owns) plus ``<name>.error.json`` with the reason, job id and attempts.  Safe to repeat."""
    root = layout.root
    bound = max_bytes or input_bound(job.kind)
    folder = layout.failed_dir(job.user)
    safefs.make_dirs(folder, root)  # a squatter at failed/<user> is moved aside first
    name = job.source_name
    error_path = folder / f"{name}.error.json"
    if safefs.lstat_or_none(error_path, root=root) is not None and _error_job(error_path, layout) not in (job.id, None):
        stem, dot, ext = name.rpartition(".")
        name = f"{stem}.{job.id}.{ext}" if dot else f"{name}.{job.id}"
        error_path = folder / f"{name}.error.json"
    if job.kind == JobKind.ASTRO:
        if safefs.lstat_or_none(folder / name, root=root) is None:
            data = _first_readable(layout, bound, layout.archive_dir(job.user, job.id) / job.source_name,
                                   layout.abs(job.source))
            if data is not None:
                safefs.write_bytes(folder / name, data, root=root)
    else:
        move_source_to(job, layout, folder, name, max_bytes=bound)
    record = {"job_id": job.id, "kind": job.kind, "user": job.user, "source": job.source,
              "source_sha256": job.source_sha256, "attempts": job.attempts, "reason": reason,
              "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "retry": "bad input: fix it and drop it again; otherwise (backend, key, config fixed): "
                       f"astrowatch retry {job.id}"}
    if job.kind == JobKind.ENHANCE:
        from astrowatch.core.formats import accepted_text

        record["accepted"] = accepted_text()
    safefs.write_json(error_path, record, root=root)
    return error_path


def _first_readable(layout: Layout, max_bytes: int, *paths: Path) -> bytes | None:
    """The bytes of the first of ``paths`` that is a readable regular file within the bound."""
    for path in paths:
        try:
            return safefs.read_bytes(path, root=layout.root, max_bytes=max_bytes, what="theme").data
        except (safefs.Unreadable, OSError):
            continue
    return None


def _error_job(path: Path, layout: Layout) -> str | None:
    data = safefs.read_json_or_none(path, root=layout.root)
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if isinstance(job_id, str) else None


def refuse_file(layout: Layout, folder_name: str, src: Path, reason: str, *, move: bool,
                extra: dict[str, Any] | None = None, max_bytes: int | None = None) -> Path:
    """A ``failed/<folder_name>/`` entry (file + ``.error.json``) for something with no job.
    ``move``: the file itself moves (a symlink or FIFO moves as what it is: never followed, never
    opened); else a copy is made of a regular file within ``max_bytes`` (default: the photo bound),
    read without following links."""
    root = layout.root
    folder = layout.failed_dir(folder_name)
    safefs.make_dirs(folder, root)  # a squatter at failed/<folder_name> is moved aside first
    name = safe_display_name(src.name)
    if safefs.lstat_or_none(folder / name, root=root) is not None:
        name = f"{int(time.time() * 1000)}-{name}"
    if move:
        safefs.move_out(src, folder / name, root=root)
    else:
        try:
            data = safefs.read_bytes(src, root=root, max_bytes=max_bytes or input_bound(JobKind.ENHANCE)).data
        except safefs.Unreadable:
            pass  # nothing safe to copy: the record says why the input was refused
        else:
            safefs.write_bytes(folder / name, data, root=root)
    record = {"job_id": None, "user": folder_name, "source": display(src.relative_to(layout.root)),
              "reason": reason, "attempts": 0, **(extra or {}),
              "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    safefs.write_json(folder / f"{name}.error.json", record, root=root)
    return folder / name


def set_aside(layout: Layout, path: Path, job_id: str) -> None:
    """A link, FIFO or folder under one of job ``job_id``'s file names (beside a decision, in the
    inbox): moved, unread, to ``failed/_review/`` with the reason, so nothing is left behind."""
    reason = (f"{path.name}: not a regular file (a link, FIFO or folder) named like job {job_id}'s files; "
              "moved aside unread")
    refuse_file(layout, REVIEW_FOLDER, path, reason, move=True)
    log.warning("moved aside", path=layout.rel(path), reason=reason)
