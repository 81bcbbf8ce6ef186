"""From a stable file to a job (or a decision, or a reasoned refusal).

``Utilisateurs/<user>/theme_<user>.json``  -> astro job (the JSON is snapshotted, never moved)
``Utilisateurs/<user>/<image>``            -> enhance job
``approved/ rejected/ redo/ **/<image>``   -> review decision (:mod:`astrowatch.review.reviewer`)

Dedupe rules ("nothing done twice"):
- a theme whose content equals the content of the newest job for it makes no job; new content
  supersedes that user's older theme jobs still waiting to run;
- an image whose content already has a job that has not published yet makes no job.
The ``seen`` table lets a rescan skip files whose size and mtime did not change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.chart.identity import identity_sha256
from astrowatch.core.errors import AstrowatchError, UnsafePathError
from astrowatch.core.formats import HEAD_BYTES, IMAGE_EXTENSIONS, accepted_text, sniff, unusable_reason
from astrowatch.core.jobs import PENDING, IngestOutcome, JobKind, JobState
from astrowatch.pipeline.feedback import LEARNED_KEY, learned_params
from astrowatch.pipeline.publish import refuse_file
from astrowatch.storage.files import sha256_file
from astrowatch.storage.images import atomic_write_bytes
from astrowatch.storage.layout import DECISION_FOLDERS, USERS, Layout, check_name, check_user_name, display, is_ignored_name
from astrowatch.storage.ledger import FAILED_FOR_INPUT, new_job_id

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.chart.model import Chart
    from astrowatch.core.config import Config
    from astrowatch.review.reviewer import Reviewer  # the reviewer is handed in; review never imports ingest
    from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.ingest")
NOT_YET_PUBLISHED = PENDING | {JobState.PUBLISHING, JobState.FAILING}
_NOT_STARTED = (JobState.QUEUED, JobState.WAITING)


def _comparable(params: dict[str, Any]) -> dict[str, Any]:
    """A job's params without the learned-defaults explanation (counts that change by themselves)."""
    return {k: v for k, v in params.items() if k != LEARNED_KEY}


class Ingest:
    def __init__(self, config: Config, layout: Layout, ledger: Ledger, reviewer: Reviewer,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.layout = layout
        self.ledger = ledger
        self.reviewer = reviewer
        self.wake = wake
        self._warned: set[str] = set()

    def handle(self, path: str) -> str:
        """Act on one stable path; returns what happened (for logs, tests and benchmarks): an
        :class:`IngestOutcome`, or for a decision folder what :meth:`Reviewer.handle` made of it."""
        p = Path(path)
        try:
            parts = p.relative_to(self.layout.root).parts  # names checked below, one by one
        except ValueError:
            self._warn_once(path, "ignored: outside the data folder", str(p))
            return IngestOutcome.IGNORED
        if not parts or ".." in parts:
            return IngestOutcome.IGNORED
        if parts[0] in DECISION_FOLDERS:
            return self.reviewer.handle(p)
        if parts[0] != USERS or len(parts) != 3:
            return IngestOutcome.IGNORED
        return self._user_file(p, parts[1], parts[2])

    def _user_file(self, p: Path, user: str, name: str) -> IngestOutcome:
        try:
            check_user_name(user)
        except UnsafePathError as exc:
            self._warn_once(user, "skipped: unsafe user folder (no safe name for a failed/ entry)", str(exc))
            return IngestOutcome.SKIPPED
        if is_ignored_name(name):
            return IngestOutcome.IGNORED
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return IngestOutcome.GONE
        try:
            check_name(name)
        except UnsafePathError as exc:
            return self.refuse(user, p, str(exc), move=True)
        if stat.S_ISLNK(st.st_mode):
            return self.refuse(user, p, f"{name} is a symbolic link; links are never followed", move=True)
        if not stat.S_ISREG(st.st_mode):
            return IngestOutcome.IGNORED
        lower, theme = name.lower(), f"theme_{user.lower()}"
        if lower == f"{theme}.png" or lower.startswith("moodboard."):
            return IngestOutcome.IGNORED  # our own delivery / the user's style image
        if lower.endswith(".json"):
            if lower == f"{theme}.json":
                return self._astro(p, user, name, st)
            if lower.startswith("theme_"):
                return self._misnamed_theme(p, user, name, st)
            return IngestOutcome.IGNORED
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return self._enhance(p, user, name, st)
        return self._not_accepted(p, user, name)

    def _not_accepted(self, p: Path, user: str, name: str) -> IngestOutcome:
        """An image we cannot use (by name or content) gets a failed/ entry; anything else is ignored."""
        try:
            with open(p, "rb") as fh:
                head = fh.read(HEAD_BYTES)
        except OSError:
            return IngestOutcome.GONE
        reason = unusable_reason(name, sniff(head))
        if reason:
            return self.refuse(user, p, f"{reason}. Accepted: {accepted_text()}", move=True,
                               extra={"accepted": accepted_text()})
        self._warn_once(str(p), "ignored: not an accepted input",
                        f"accepted: theme_<user>.json and photos: {accepted_text()}")
        return IngestOutcome.IGNORED

    # -- astro ---------------------------------------------------------------------------------
    def _astro(self, p: Path, user: str, name: str, st: os.stat_result) -> IngestOutcome:
        rel = self.layout.rel(p)
        if self._unchanged(rel, st):
            return IngestOutcome.UNCHANGED
        limit = self.config.limits.max_json_bytes
        with open(p, "rb") as fh:
            head = fh.read(limit + 1)
        sha = sha256_file(p) if len(head) > limit else hashlib.sha256(head).hexdigest()
        jobs = self.ledger.jobs_for_source(user, rel)
        last = jobs[0] if jobs else None
        retry = last is not None and self._failed_not_for_input(last)
        if last is not None and last.source_sha256 == sha and not retry:
            self._seen(rel, st, sha, last.id)
            return IngestOutcome.DUPLICATE
        chart = self._chart_or_none(head, user, name)
        # learned defaults explore by the chart's identity, so a re-export draws the same choice
        params = learned_params(self.config, JobKind.ASTRO, identity_sha256(chart) if chart is not None else sha)
        if last is not None and not retry and chart is not None and self._same_render(last, chart, params):
            self._seen(rel, st, sha, last.id)
            log.info("theme rewritten with the same prompt, seed and parameters: no new job",
                     job_id=last.id, user=user, source=rel)
            return IngestOutcome.SAME_RENDER
        self._supersede(jobs, "newer theme content")
        job_id = self._new_id()
        snapshot = self.layout.archive_dir(user, job_id)
        retry_of = last.id if retry and last is not None and last.source_sha256 == sha else None
        try:
            atomic_write_bytes(snapshot / name, head)  # snapshot first
            job = self.ledger.create_job(kind=JobKind.ASTRO, user=user, source=rel, source_sha256=sha, job_id=job_id,
                                         params=params, parent_id=retry_of)
        except BaseException:  # not recorded (a full disk): no orphan snapshot; the file is taken again
            shutil.rmtree(snapshot, ignore_errors=True)
            raise
        self._seen(rel, st, sha, job.id)
        log.info("job queued", job_id=job.id, user=user, kind=JobKind.ASTRO, source=rel,
                 **({"retry_of": retry_of} if retry_of else {}))
        self.wake()
        return IngestOutcome.JOB

    def _failed_not_for_input(self, job: Job) -> bool:
        """The newest job failed, and not because of the file (backend, config...): try again."""
        return job.state == JobState.FAILED and self.ledger.failure_cause(job.id) != FAILED_FOR_INPUT

    def _chart_or_none(self, data: bytes, user: str, name: str) -> Chart | None:
        """The parsed chart, or None when it does not parse (the job's run says why)."""
        from astrowatch.chart.parse import parse_chart_bytes

        limits = self.config.limits
        try:
            return parse_chart_bytes(data, user=user, source=name, max_bytes=limits.max_json_bytes,
                                     max_depth=limits.max_json_depth)
        except AstrowatchError:
            return None

    def _same_render(self, last: Job, chart: Chart, params: dict[str, Any]) -> bool:
        """True if ``last``'s snapshot fuses to the same prompt, seed and parameters as ``chart``."""
        from astrowatch.backends.loras import user_files_newer
        from astrowatch.fusion import render_key

        old = self._chart_or_none(self._snapshot_bytes(last), last.user, last.source_name)
        if old is None:
            return False
        if user_files_newer(self.config.sdxl.loras, last.user, self.layout.root, last.created_at):
            return False  # the person's LoRA was (re)trained since: the same chart draws another picture
        from astrowatch.pipeline.seeds import SeedBook

        seeds = SeedBook(self.ledger, self.layout, self.config)  # the seed each chart is drawn with
        try:
            return render_key(old, self.config, _comparable(last.params), seed=seeds.seed_for(old)) == render_key(
                chart, self.config, _comparable(params), seed=seeds.seed_for(chart))
        except AstrowatchError:  # e.g. a style the config no longer knows: let the job say so
            return False

    def _snapshot_bytes(self, job: Job) -> bytes:
        path = self.layout.archive_dir(job.user, job.id) / job.source_name
        try:
            with open(path, "rb") as fh:
                return fh.read(self.config.limits.max_json_bytes + 1)
        except OSError:
            return b""

    # -- enhance -------------------------------------------------------------------------------
    def _enhance(self, p: Path, user: str, name: str, st: os.stat_result) -> IngestOutcome:
        rel = self.layout.rel(p)
        if self._unchanged(rel, st):
            return IngestOutcome.UNCHANGED
        sha = sha256_file(p)
        jobs = self.ledger.jobs_for_source(user, rel)
        if any(j.source_sha256 == sha and j.state in NOT_YET_PUBLISHED for j in jobs):
            return IngestOutcome.DUPLICATE
        self._supersede(jobs, "the file was replaced")
        job = self.ledger.create_job(kind=JobKind.ENHANCE, user=user, source=rel, source_sha256=sha,
                                     params=learned_params(self.config, JobKind.ENHANCE, sha))
        self.ledger.seen_put(rel, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha, job_id=job.id)
        log.info("job queued", job_id=job.id, user=user, kind=JobKind.ENHANCE, source=rel)
        self.wake()
        return IngestOutcome.JOB

    def _supersede(self, jobs: list[Job], why: str) -> None:
        """Older jobs for the same source that have not started give way to the new content."""
        for old in jobs:
            if old.state in _NOT_STARTED and self.ledger.transition(old.id, old.state, JobState.SUPERSEDED, note=why):
                log.info(f"superseded: {why}", job_id=old.id, user=old.user)

    def _misnamed_theme(self, p: Path, user: str, name: str, st: os.stat_result) -> IngestOutcome:
        rel = self.layout.rel(p)
        if self._unchanged(rel, st):
            return IngestOutcome.UNCHANGED
        outcome = self.refuse(user, p, f"{name}: a theme in folder {user!r} must be named theme_{user}.json",
                              move=False)
        self.ledger.seen_put(rel, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256="", job_id=None)
        return outcome

    def known_unchanged(self, path: str) -> bool:
        """True for a user-folder file the ledger has seen with this size and mtime (no re-hash)."""
        try:
            rel = self.layout.rel(Path(path))
            st = os.lstat(path)
        except (UnsafePathError, OSError):
            return False
        parts = rel.split("/")
        return parts[0] == USERS and len(parts) == 3 and self._unchanged(rel, st)

    def _seen(self, rel: str, st: os.stat_result, sha: str, job_id: str | None) -> None:
        self.ledger.seen_put(rel, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha, job_id=job_id)

    def _unchanged(self, rel: str, st: os.stat_result) -> bool:
        row = self.ledger.seen_get(rel)
        return row is not None and row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns

    def _new_id(self) -> str:
        return new_job_id()

    # -- refusals without a job ---------------------------------------------------------------
    def refuse(self, user: str, p: Path, reason: str, *, move: bool, extra: dict[str, Any] | None = None) -> IngestOutcome:
        """A ``failed/<user>/`` entry for an input that cannot even become a job."""
        entry = refuse_file(self.layout, user, p, reason, move=move, extra=extra)
        log.warning("input refused", user=user, file=entry.name, reason=reason)
        return IngestOutcome.FAILED

    def _warn_once(self, key: str, event: str, reason: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(event, path=display(key), reason=reason)
