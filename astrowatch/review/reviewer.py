"""Review by moving files: ``approved/``, ``rejected/``, ``redo/`` (subfolders allowed).

A decision is first recorded in the ledger (``inbox -> deciding``, with the caption and the
redo overrides read at that moment), then finished by idempotent steps — deliver the theme
PNG / file into the dataset / queue the redo, archive the files, log the decision — and only
then marked final.  After a crash, recovery calls :meth:`Reviewer.finish` again.
"""

from __future__ import annotations

import hashlib
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.core.errors import InputError, LedgerError, NotFound
from astrowatch.core.formats import IMAGE_EXTENSIONS
from astrowatch.core.jobs import Decision, IngestOutcome, JobKind, JobState
from astrowatch.pipeline.delivery import archive_decided, deliver_theme, file_into_dataset
from astrowatch.pipeline.freshness import newer_result, stale_note
from astrowatch.pipeline.publish import RESULT_SHA_KEY, refuse_file, result_stem, set_aside
from astrowatch.pipeline.variants import REJECTED_KEY, SHEET, job_variants, part_of_name, variant_entry
from astrowatch.review.params import check_params
from astrowatch.storage import safefs
from astrowatch.storage.images import RESULT_SUFFIX, read_png_meta
from astrowatch.storage.jsonlog import append_jsonl, read_jsonl
from astrowatch.storage.layout import REVIEW_FOLDER
from astrowatch.storage.safefs import CAPTION_MAX_BYTES, SIDECAR_MAX_BYTES, Unreadable

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.review")
VIA_KEY = "decided_via"  # sidecar key set by the HTTP API before it moves a result
JOB_STEM = re.compile(r"\.([0-9a-f]{12})(?:\.v[1-8]|\.sheet)?$")  # a variant / contact sheet: .v<k> / .sheet
FINAL: dict[tuple[Decision, JobKind], JobState] = {
    (Decision.APPROVE, JobKind.ASTRO): JobState.DELIVERED, (Decision.APPROVE, JobKind.ENHANCE): JobState.FILED,
    (Decision.REJECT, JobKind.ASTRO): JobState.REJECTED, (Decision.REJECT, JobKind.ENHANCE): JobState.REJECTED,
    (Decision.REDO, JobKind.ASTRO): JobState.REDONE, (Decision.REDO, JobKind.ENHANCE): JobState.REDONE}


def job_id_from_name(path: Path) -> str | None:
    m = JOB_STEM.search(path.name.rsplit(".", 1)[0] if "." in path.name else path.name)
    return m.group(1) if m else None


class Reviewer:
    def __init__(self, config: Config, layout: Layout, ledger: Ledger, wake: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.layout = layout
        self.ledger = ledger
        self.wake = wake

    # -- a file appeared in a decision folder --------------------------------------------------
    def handle(self, path: Path) -> str:
        decision = self.layout.decision_of(path)
        seen = safefs.lstat_or_none(path, root=self.layout.root) if decision is not None else None
        if decision is None or seen is None or stat.S_ISDIR(seen.st_mode):
            return IngestOutcome.IGNORED
        if path.suffix.lower() in (".json", ".txt"):
            return self._orphan_sidecar(path) if stat.S_ISREG(seen.st_mode) else IngestOutcome.IGNORED
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            return IngestOutcome.IGNORED
        try:
            image = self.examine(path)
        except Unreadable as exc:
            if exc.gone:
                return IngestOutcome.IGNORED
            return self._unreadable(path, exc.message)
        job = self.identify(path, image.meta)
        if job is None:
            refuse_file(self.layout, REVIEW_FOLDER, path, f"{path.name} is not an astrowatch result "
                        "(no job id in its name, PNG metadata or sidecar)", move=True)
            return IngestOutcome.FAILED
        if job_variants(job):
            return self._on_variant_job(job, decision, path, image)
        if job.state == JobState.INBOX:
            return self.decide(job, decision, path, image)
        if job.state == JobState.DECIDING:
            self.finish(job, again=True)
            return "decided"
        if job.state in FINAL.values():
            archive_decided(self.layout, job, path)  # a stray copy after the decision
            return "archived"
        log.warning("decision on a job that is not in the inbox; left in place", job_id=job.id, state=job.state)
        return IngestOutcome.IGNORED

    def examine(self, path: Path) -> Examined:
        """Hash the moved image and read our metadata from one descriptor (no symlink, no FIFO,
        a regular file within ``limits.max_image_bytes``), or :class:`Unreadable` saying why."""
        digest = hashlib.sha256()
        with safefs.open_file(path, root=self.layout.root, max_bytes=self.config.limits.max_image_bytes,
                              what="result image") as (fh, st):
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
            fh.seek(0)
            meta = read_png_meta(fh) if path.suffix.lower() in (*RESULT_SUFFIX.values(), ".jpeg") else None
        return Examined(digest.hexdigest(), safefs.identity(st), meta)

    def identify(self, path: Path, meta: dict[str, Any] | None = None) -> Job | None:
        candidates = [job_id_from_name(path), (meta or {}).get("job_id")]
        sidecar = self._json(path.with_suffix(".json"))
        candidates.append((sidecar or {}).get("job_id"))
        for job_id in candidates:
            if isinstance(job_id, str) and re.fullmatch(r"[0-9a-f]{12}", job_id):
                try:
                    return self.ledger.get(job_id)
                except NotFound:
                    continue
        return None

    # -- several variants: one is picked by moving it ---------------------------------------------
    def _part(self, job: Job, path: Path, image: Examined) -> int | str | None:
        """Which of the job's images was moved: a variant's number, the sheet, or None (foreign)."""
        result = job.result or {}
        if image.sha256 == result.get(RESULT_SHA_KEY):
            return SHEET
        found = next((v for v in job_variants(job) if v.get(RESULT_SHA_KEY) == image.sha256), None)
        if found is not None:
            return int(found["variant"])
        part = part_of_name(path.name)
        return part if part is not None and result.get(RESULT_SHA_KEY) is None else None  # older: by name

    def _on_variant_job(self, job: Job, decision: Decision, path: Path, image: Examined) -> str:
        part = self._part(job, path, image)
        if job.state == JobState.DECIDING:
            self.finish(job, again=True)
            job = self.ledger.get(job.id)
        if job.state in FINAL.values():
            picked = (job.decision_data or {}).get("variant")
            if decision == Decision.APPROVE and (part != picked or job.decision != Decision.APPROVE):
                what = f"variant {picked} was picked" if job.decision == Decision.APPROVE and picked else \
                    f"it was decided already ({job.state})"
                reason = (f"{path.name}: job {job.id} is decided, {what}; this image was not delivered "
                          "(one pick per job: a redo makes new variants)")
                refuse_file(self.layout, REVIEW_FOLDER, path, reason, move=True)
                log.warning("second pick refused", job_id=job.id, reason=reason)
                return "bounced"
            archive_decided(self.layout, job, path)
            return "archived"
        if job.state != JobState.INBOX:
            log.warning("decision on a job that is not in the inbox; left in place", job_id=job.id, state=job.state)
            return IngestOutcome.IGNORED
        if part is None:
            return self._bounce(job, path, f"{path.name} is not an image astrowatch made for job {job.id} "
                                "(its content differs from the published variants); decision not taken",
                                foreign=True)
        if part == SHEET:
            if decision == Decision.APPROVE:
                names = ", ".join(str(v.get("image")) for v in job_variants(job))
                return self._bounce(job, path, f"{path.name} is the contact sheet: it cannot be delivered. Move "
                                    f"one variant into approved/ to pick it ({names})")
            return self.decide(job, decision, path, image)
        k = int(part)
        if decision == Decision.REJECT:
            rejected = {int(x) for x in (job.result or {}).get(REJECTED_KEY) or []} | {k}
            if not {int(v["variant"]) for v in job_variants(job)} <= rejected:  # siblings still wait
                self.ledger.update_fields(job.id, result={**(job.result or {}), REJECTED_KEY: sorted(rejected)})
                archive_decided(self.layout, job, path, only_moved=True)
                log.info("variant rejected; its siblings still wait", job_id=job.id, variant=k)
                return "variant rejected"
        return self.decide(job, decision, path, image, variant=k)

    def decide(self, job: Job, decision: Decision, path: Path, image: Examined, *, variant: int | None = None) -> str:
        recorded = (job.result or {}).get(RESULT_SHA_KEY)
        entry = variant_entry(job, variant) if variant is not None else None
        if entry is not None:
            recorded = entry.get(RESULT_SHA_KEY)
        if recorded is not None and recorded != image.sha256:
            return self._bounce(job, path, f"{path.name} is not the image astrowatch made for job {job.id} "
                                "(its content differs from the published result); decision not taken",
                                foreign=True)
        if recorded is None:
            log.warning("result published without a recorded hash (older release): decision taken on its name",
                        job_id=job.id)
        data: dict[str, Any] = {"path": self.layout.rel(path), "decided_at": time.time(),
                                RESULT_SHA_KEY: image.sha256}
        if entry is not None:  # a pick: the others are retired, recorded as not picked
            data["variant"], data["seed"] = variant, entry.get("seed")
            data["not_picked"] = [v["variant"] for v in job_variants(job) if v.get("variant") != variant]
        stem = path.name.rsplit(".", 1)[0]
        inbox = self.layout.inbox_dir(job.user)
        caption = (self._text(path.with_name(stem + ".txt")) or self._text(inbox / f"{stem}.txt")
                   or self._text(inbox / f"{result_stem(job)}.txt"))  # a renamed result's caption
        data["caption"] = caption
        beside = path.with_name(stem + ".json")  # moved along with the image, else left in the inbox
        there = safefs.lstat_or_none(beside, root=self.layout.root) is not None
        sidecar = self._json(beside if there else inbox / f"{stem}.json")
        data["via"] = decided_via(sidecar)
        if decision == Decision.APPROVE and (newer := newer_result(self.ledger, job)) is not None:
            if not (isinstance(sidecar, dict) and sidecar.get("force") is True):
                return self._bounce(job, path, "not delivered: " + stale_note(job, newer))
            data["forced_over"] = newer.id
        if decision == Decision.REDO:
            if not isinstance(sidecar, dict) or not isinstance(sidecar.get("params"), dict):
                return self._bounce(job, path, "redo needs the result's .json sidecar with a valid 'params' "
                                    "object (a regular file of at most 1 MB, not a link)")
            try:
                data["overrides"] = redo_overrides(self.config, job, sidecar["params"])
                if entry is not None and entry.get("seed") is not None and "seed" not in data["overrides"]:
                    data["overrides"]["seed"] = entry["seed"]  # a variant redone: from its own seed
            except InputError as exc:
                return self._bounce(job, path, f"redo refused: {exc.message}"
                                    + (f" ({exc.hint})" if exc.hint else ""))
        if not self.ledger.transition(job.id, JobState.INBOX, JobState.DECIDING, decision=decision,
                                      decision_data=data, note=decision):
            return IngestOutcome.IGNORED  # someone else decided first
        self.finish(self.ledger.get(job.id))
        return "decided"

    def finish(self, job: Job, *, again: bool = False) -> None:
        """Idempotent end of a decision (also run by crash recovery: ``again``, which logs the
        decision only if the interrupted run had not)."""
        data = job.decision_data or {}
        if job.decision is None:  # the move to ``deciding`` records the decision with it
            raise LedgerError(f"job {job.id} is finished as a decision but has none recorded")
        final = FINAL[(job.decision, job.kind)]
        delivered_to = None
        image = self._decided_image(job, data)
        if job.decision == Decision.APPROVE and image is not None:
            if job.kind == JobKind.ASTRO:
                delivered_to = deliver_theme(self.layout, job, image)
            else:
                delivered_to = file_into_dataset(self.layout, self.config, job, image, data.get("caption") or "")
        elif job.decision == Decision.REDO:
            self._queue_redo(job, data.get("overrides") or {})
        archive_decided(self.layout, job, image)
        if not (again and self._logged(job)):
            self._log_decision(job, data, delivered_to)
        if self.ledger.transition(job.id, JobState.DECIDING, final, note=delivered_to):
            log.info("review decision done", job_id=job.id, user=job.user, decision=job.decision,
                     delivered_to=delivered_to)

    # -- helpers -----------------------------------------------------------------------------
    def _decided_image(self, job: Job, data: dict[str, Any]) -> Path | None:
        """The image the decision was taken on: where it was moved, else already archived; a
        file that is not a bounded regular file, or whose bytes are not the ones decided on (a
        swap since), is not it."""
        moved = self.layout.abs(data["path"]) if data.get("path") else None
        archived = self.layout.archive_dir(job.user, job.id) / Path(data.get("path", "")).name
        for candidate in (moved, archived):
            if candidate is None:
                continue
            try:
                digest, _st = safefs.sha256_of(candidate, root=self.layout.root,
                                               max_bytes=self.config.limits.max_image_bytes, what="result image")
            except (Unreadable, OSError):
                continue
            expected = data.get(RESULT_SHA_KEY)
            if expected is None or digest == expected:
                return candidate
            log.warning("the decided image was replaced since the decision; not used",
                        job_id=job.id, path=self.layout.rel(candidate))
        return None

    def _queue_redo(self, job: Job, overrides: dict[str, Any]) -> None:
        from astrowatch.pipeline.delivery import queue_child

        # astro: the theme snapshot is copied for the child before it can be claimed (and again
        # after a crash); enhance: the original was archived with the parent, the worker reads it there
        child, created = queue_child(self.ledger, self.layout, job, overrides)
        if created:
            log.info("redo queued", job_id=child.id, parent=job.id, user=job.user, overrides=overrides)
            self.wake()

    def _logged(self, job: Job) -> bool:
        return any(r.get("job_id") == job.id for r in read_jsonl(self.layout.reviews_log, root=self.layout.root))

    def _log_decision(self, job: Job, data: dict[str, Any], delivered_to: str | None) -> None:
        result = job.result or {}
        original_caption = (result.get("description") or "").strip()
        caption = (data.get("caption") or "").strip()
        inbox_at = next((h["at"] for h in self.ledger.history(job.id) if h["to_state"] == JobState.INBOX), None)
        append_jsonl(self.layout.reviews_log, root=self.layout.root, record={
            "job_id": job.id, "user": job.user, "kind": job.kind, "decision": job.decision,
            "delivered_to": delivered_to, "backend": result.get("backend"), "params": result.get("params"),
            "overrides": data.get("overrides"), "via": data.get("via") or "files",
            "forced_over": data.get("forced_over"),
            **({"variant": data["variant"], "not_picked": data.get("not_picked")} if "variant" in data else {}),
            "caption_edited": bool(caption) and caption != original_caption,
            "review_seconds": round(data["decided_at"] - inbox_at, 3) if inbox_at and data.get("decided_at") else None,
        })

    def _bounce(self, job: Job, path: Path, reason: str, *, foreign: bool = False) -> str:
        """Put back in the inbox everything the reviewer moved (image, sidecar, caption, an old
        note), with a ``.error.txt`` saying why the decision was not taken.  Nothing stays behind
        in the decision folder, so a later decision never reads a stale sidecar there.

        A ``foreign`` image (not the bytes astrowatch published, or not a regular file) never
        takes the place of the job's own result still waiting in the inbox: it goes to
        ``failed/_review/`` with the reason instead."""
        root = self.layout.root
        inbox = self.layout.inbox_dir(job.user)
        safefs.make_dirs(inbox, root)
        stem = path.name.rsplit(".", 1)[0]
        for suffix in (".json", ".txt", ".error.txt"):  # the files beside the image first, image last
            side = path.with_name(stem + suffix)
            st = safefs.lstat_or_none(side, root=root)
            if st is not None and stat.S_ISREG(st.st_mode):
                safefs.rename(side, inbox / side.name, root=root)  # the one the decision read wins over an inbox copy
            elif st is not None:  # a link, FIFO or folder under the sidecar's name
                set_aside(self.layout, side, job.id)
        own = inbox / str((job.result or {}).get("image") or path.name)
        own_st = safefs.lstat_or_none(own, root=root)
        if foreign and own_st is not None and stat.S_ISREG(own_st.st_mode) and own != path:
            refuse_file(self.layout, REVIEW_FOLDER, path, reason, move=True)
        elif safefs.lstat_or_none(path, root=root) is not None:
            safefs.rename(path, inbox / path.name, root=root)
        safefs.write_text(inbox / f"{stem}.error.txt", reason + "\n", root=root)
        log.warning("decision refused; files put back in the inbox", job_id=job.id, reason=reason)
        return "bounced"

    def _unreadable(self, path: Path, why: str) -> str:
        """A decision on something that cannot be read safely (a link, a FIFO, a file too big...):
        bounced when its name says which waiting job it claims to be, else left to ``failed/``."""
        job_id = job_id_from_name(path)
        try:
            job = self.ledger.get(job_id) if job_id else None
        except NotFound:
            job = None
        reason = f"missing or unreadable: {why}; decision not taken"
        if job is not None and job.state == JobState.INBOX:
            return self._bounce(job, path, reason, foreign=True)
        refuse_file(self.layout, REVIEW_FOLDER, path, reason, move=True)
        return IngestOutcome.FAILED

    def _text(self, path: Path) -> str | None:
        return safefs.read_text_or_none(path, root=self.layout.root, max_bytes=CAPTION_MAX_BYTES)

    def _json(self, path: Path) -> Any:
        return safefs.read_json_or_none(path, root=self.layout.root, max_bytes=SIDECAR_MAX_BYTES,
                                        max_depth=self.config.limits.max_json_depth)

    def _orphan_sidecar(self, path: Path) -> str:
        job_id = job_id_from_name(path)
        try:
            job = self.ledger.get(job_id) if job_id else None
        except NotFound:
            job = None
        if job is not None and job.state in FINAL.values():
            archive_decided(self.layout, job, None, extra=[path])
            return "archived"
        return IngestOutcome.IGNORED


def decided_via(sidecar: Any) -> str:
    """Who moved the file: ``"api"`` when ``astrowatch api`` marked the sidecar (:data:`VIA_KEY`),
    else ``"files"`` (a person, ``astrowatch review`` or the review page)."""
    via = sidecar.get(VIA_KEY) if isinstance(sidecar, dict) else None
    return via if via in ("api",) else "files"


def redo_overrides(config: Config, job: Job, edited: dict[str, Any]) -> dict[str, Any]:
    """The job's own overrides plus every parameter the reviewer changed in the sidecar; the
    changed ones must be editable and within bounds (:func:`astrowatch.review.params.check_params`)."""
    recorded = (job.result or {}).get("params") or {}
    overrides = {k: v for k, v in job.params.items() if not k.startswith("_")}  # not the learner's notes
    changed = {key: value for key, value in edited.items() if recorded.get(key) != value}
    overrides.update(check_params(config, job.kind, changed))
    return overrides


@dataclass(frozen=True)
class Examined:
    """A moved result as read once from its descriptor: content hash, identity, our metadata."""

    sha256: str
    identity: safefs.Identity
    meta: dict[str, Any] | None
