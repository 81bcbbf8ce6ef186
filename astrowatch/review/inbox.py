"""The inbox, as reviewers act on it: find a result, edit its caption or redo parameters, and
decide it by moving the image (sidecars first) into ``approved/``, ``rejected/`` or ``redo/``.

The CLI (``astrowatch review``), the HTTP API and the review page all call these functions; the
daemon then acts on the move exactly as on a reviewer's hand move (:mod:`astrowatch.review.reviewer`).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astrowatch.backends.caption.text import CAPTION_KEYS
from astrowatch.core.config import parse_set, settable_keys, unknown_set_key
from astrowatch.core.errors import InputError, NotFound
from astrowatch.core.jobs import Decision, JobKind, JobState
from astrowatch.review.params import check_params
from astrowatch.storage import safefs
from astrowatch.storage.safefs import CAPTION_MAX_BYTES, SIDECAR_MAX_BYTES

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger


FOLDER = {decision: decision.folder for decision in Decision}  # approve -> approved/, ...
# what an edit of the sidecar may change: redo parameters (checked by check_params), the
# reviewer's "force", the API's mark and the reviewer's caption sentence (review/captions.py);
# job id, hashes, backend record, the models' proposed captions... stay as published
EDITABLE_SIDECAR_KEYS = frozenset({"params", "force", "decided_via", "reviewed_caption"})


def is_file(path: Path, root: Path) -> bool:
    """A regular file reached without a symlink (``lstat`` only: a FIFO never blocks)."""
    st = safefs.lstat_or_none(path, root=root)
    return st is not None and stat.S_ISREG(st.st_mode)


def find_inbox_item(ledger: Ledger, layout: Layout, item: str) -> tuple[Job, Path]:
    """The inbox job and image named by ``item``: a job id (or a unique prefix) or a result file name."""
    from astrowatch.review.reviewer import job_id_from_name

    if os.sep in item or item.lower().endswith((".png", ".webp", ".jpg", ".jpeg")):
        job_id = job_id_from_name(Path(item))
        if not job_id:
            raise NotFound(f"{item}: not an astrowatch result name (expected <name>.<job id>.png/.webp/.jpg)")
        item = job_id
    job = ledger.find(item)
    if job.state != JobState.INBOX:
        raise NotFound(f"job {job.id} is not waiting in the inbox (state: {job.state})")
    image = layout.inbox_dir(job.user) / (job.result or {}).get("image", "")  # with variants: the contact sheet
    if not is_file(image, layout.root):
        raise NotFound(f"{layout.rel(image)} is not in the inbox any more (already moved?)")
    return job, image


def move(image: Path, dest_dir: Path, *, root: Path) -> Path:
    """Move a result into a decision folder the way a reviewer would: sidecars first, image last
    (relative to folder descriptors under ``root``: a link moves as a link, never followed)."""
    safefs.make_dirs(dest_dir, root)
    stem = image.name.rsplit(".", 1)[0]
    for suffix in (".json", ".txt"):  # sidecars first, image last (the daemon acts on the image)
        side = image.with_name(stem + suffix)
        if safefs.lstat_or_none(side, root=root) is not None:
            safefs.rename(side, dest_dir / side.name, root=root)
    safefs.rename(image, dest_dir / image.name, root=root)
    return dest_dir / image.name


# The sections whose keys a redo may override, per job kind (the params are flat: "steps").
REDO_SECTIONS = {JobKind.ASTRO: ("astro", "sdxl", "sdapi", "openai", "fake"),
                 JobKind.ENHANCE: ("enhance", "sdxl", "sdapi", "fake", "caption")}


JOB_KEYS = ("seed",)  # read by the pipeline, not a config key


def redo_overrides(config: Config, kind: JobKind, pairs: list[str]) -> dict[str, Any]:
    """``--set astro.style=cosmique`` -> ``{"style": "cosmique"}``: the same ``SECTION.KEY`` spelling
    as ``generate``/``enhance``; a key the job cannot use is refused with the valid ones."""
    sections = REDO_SECTIONS[kind]
    valid = [key for key in settable_keys(config.model_dump(mode="json", exclude={"source"}), sections)
             if not key.startswith("caption.") or key.partition(".")[2] in CAPTION_KEYS]  # not the model folders
    valid += [f"{kind}.{key}" for key in JOB_KEYS]
    overrides: dict[str, Any] = {}
    for pair in pairs:
        parts, value = parse_set(pair)
        if ".".join(parts) not in valid:
            raise unknown_set_key(".".join(parts), valid)
        overrides[parts[-1]] = value
    return check_params(config, kind, overrides)


def read_sidecar(path: Path, root: Path) -> Any:
    """A result's sidecar, read safely (a regular file of at most 1 MB, no link), or ``None``."""
    return safefs.read_json_or_none(path, root=root, max_bytes=SIDECAR_MAX_BYTES)


def edit_sidecar(sidecar_path: Path, what: str, edit: Callable[[dict[str, Any]], None], *,
                 root: Path) -> dict[str, Any]:
    """Read-modify-write the result's sidecar (atomically: the daemon may read it as soon as the
    image moves).  An unreadable one is a clear error naming the file.  ``edit`` may change only
    :data:`EDITABLE_SIDECAR_KEYS`; the rest is written back as it was read."""
    data = read_sidecar(sidecar_path, root)
    if not isinstance(data, dict):
        raise NotFound(f"{sidecar_path.name}: {what} needs the result's readable .json sidecar in the inbox "
                       "(a regular file of at most 1 MB, not a link)")
    edited = dict(data)
    edit(edited)
    kept = {k: v for k, v in data.items() if k not in EDITABLE_SIDECAR_KEYS}
    data = {**kept, **{k: v for k, v in edited.items() if k in EDITABLE_SIDECAR_KEYS}}
    safefs.write_json(sidecar_path, data, root=root)
    return data


def apply_sets(sidecar_path: Path, overrides: dict[str, Any], *, root: Path) -> dict[str, Any]:
    """``redo --set``: the overrides (checked by :func:`redo_overrides`) merged into the sidecar's ``params``."""
    def merge(d: dict[str, Any]) -> None:
        params = d.get("params")
        d["params"] = {**(params if isinstance(params, dict) else {}), **overrides}

    data = edit_sidecar(sidecar_path, "--set", merge, root=root)
    params: dict[str, Any] = data["params"]
    return params


def force(sidecar_path: Path, *, root: Path) -> None:
    """``approve --force``: ``"force": true`` in the sidecar, which the daemon reads with the decision."""
    edit_sidecar(sidecar_path, "--force", lambda d: d.update(force=True), root=root)


@dataclass
class InboxItem:
    job: Job
    image: Path
    root: Path  # the data folder: every file here is read and written relative to it

    @property
    def stem(self) -> str:
        return self.image.name.rsplit(".", 1)[0]

    @property
    def caption_path(self) -> Path:
        return self.image.with_name(self.stem + ".txt")

    @property
    def sidecar_path(self) -> Path:
        return self.image.with_name(self.stem + ".json")

    def caption(self) -> str:
        return safefs.read_text_or_none(self.caption_path, root=self.root, max_bytes=CAPTION_MAX_BYTES) or ""

    def sidecar(self) -> dict[str, Any]:
        data = read_sidecar(self.sidecar_path, self.root)
        return data if isinstance(data, dict) else {}

    def variants(self) -> list[Variant]:
        """The job's variants still waiting in the inbox beside the contact sheet (none for one image)."""
        from astrowatch.pipeline.variants import REJECTED_KEY, job_variants

        rejected = (self.job.result or {}).get(REJECTED_KEY) or []
        found = []
        for v in job_variants(self.job):
            path = self.image.with_name(str(v.get("image") or ""))
            if int(v["variant"]) not in rejected and is_file(path, self.root):
                found.append(Variant(int(v["variant"]), path, v.get("seed"), v.get("sha256")))
        return found

    def variant(self, k: int) -> Variant:
        found = next((v for v in self.variants() if v.k == k), None)
        if found is None:
            have = ", ".join(str(v.k) for v in self.variants()) or "none"
            raise NotFound(f"job {self.job.id} has no variant {k} waiting in the inbox (waiting: {have})")
        return found

    def bounce_note(self) -> str | None:
        """Why the daemon put a decision back (``<stem>.error.txt``), if it did."""
        note = safefs.read_text_or_none(self.image.with_name(self.stem + ".error.txt"), root=self.root,
                                        max_bytes=CAPTION_MAX_BYTES)
        return (note or "").strip() or None


@dataclass(frozen=True)
class Variant:
    """One of several images of a job (``astro.variants``): ``<stem>.v<k>.png`` in the inbox."""

    k: int
    image: Path
    seed: Any
    sha256: Any


def inbox_items(layout: Layout, ledger: Ledger) -> list[InboxItem]:
    """Results waiting for review whose image is still in ``inbox/<user>/`` (oldest first)."""
    items = []
    for job in ledger.by_state(JobState.INBOX):
        name = (job.result or {}).get("image")
        if not name:
            continue
        image = layout.inbox_dir(job.user) / name
        if is_file(image, layout.root):
            items.append(InboxItem(job, image, layout.root))
    return items


def original_path(layout: Layout, ledger: Ledger, job: Job) -> Path | None:
    """The archived input of an enhance job (a redo reads its parent's copy)."""
    current: Job | None = job
    while current is not None:
        path = layout.archive_dir(current.user, current.id) / current.source_name
        if is_file(path, layout.root):
            return path
        try:
            current = ledger.get(current.parent_id) if current.parent_id else None
        except NotFound:
            return None
    return None


def save_caption(item: InboxItem, text: str) -> bool:
    """Write the description beside the image; ``False`` when nothing changed."""
    text = text.rstrip("\n") + "\n"
    if text == item.caption():
        return False
    if len(text.encode("utf-8")) > CAPTION_MAX_BYTES:
        raise InputError(f"{item.caption_path.name}: the description is over {CAPTION_MAX_BYTES // 1024} KB")
    safefs.write_text(item.caption_path, text, root=item.root)
    return True


def parse_params(text: str) -> dict[str, Any]:
    """The redo parameters a reviewer typed (a JSON object), or an :class:`InputError` saying why not."""
    try:
        params = safefs.loads_bounded(text)
    except ValueError as exc:
        raise InputError(f"parameters are not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise InputError("parameters must be a JSON object, e.g. {\"steps\": 40}")
    return params


def decide(config: Config, layout: Layout, item: InboxItem, decision: Decision, *, caption: str | None = None,
           params: dict[str, Any] | None = None, variant: int | None = None) -> Path:
    """Save the caption, write redo params into the sidecar, then move the image like a reviewer.
    The params a redo changes (against the result's) are checked first (:mod:`astrowatch.review.params`).

    A job with several variants: ``variant`` names the one moved (approve: the pick; redo: from its
    seed); approving without one is refused, since the contact sheet cannot be delivered; a reject
    or redo without one moves the sheet (all variants rejected / the job redone)."""
    if variant is not None or (decision == Decision.APPROVE and item.variants()):
        if variant is None:
            ks = ", ".join(str(v.k) for v in item.variants())
            raise InputError(f"job {item.job.id} has several variants ({ks}): say which one to pick",
                             hint="astrowatch review pick ITEM K, or approve --variant K")
        chosen = item.variant(variant)
        item = InboxItem(item.job, chosen.image, item.root)
    if not is_file(item.image, layout.root):
        raise NotFound(f"{item.image.name} is not in the inbox any more (decided elsewhere?)")
    if decision == Decision.REDO and params is not None:
        changed_params(config, item.job, params)
    if caption is not None:
        save_caption(item, caption)
    if decision == Decision.REDO and params is not None:
        edit_sidecar(item.sidecar_path, "a redo", lambda d: d.update(params=params), root=layout.root)
    return move(item.image, layout.root / decision.folder, root=layout.root)


def changed_params(config: Config, job: Job, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters in ``params`` that differ from those the result was made with, checked."""
    if not isinstance(params, dict):
        raise InputError("parameters must be a JSON object, e.g. {\"steps\": 40}")
    recorded = (job.result or {}).get("params") or {}
    return check_params(config, job.kind, {k: v for k, v in params.items() if recorded.get(k) != v})


def waiting_for(job: Job) -> str:
    minutes = int((time.time() - job.updated_at) // 60)
    if minutes < 1:
        return "just now"
    return f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h ago"
