"""From a stable file to a job (or a decision, or a reasoned refusal).

``Utilisateurs/<user>/theme_<user>.json``  -> astro job (the JSON is snapshotted, never moved)
``Utilisateurs/<user>/<image>``            -> enhance job
``approved/ rejected/ redo/ **/<image>``   -> review decision (:mod:`astrowatch.review.reviewer`)

Dedupe rules ("nothing done twice"):
- a theme whose content equals the content of the newest job for it makes no job; new content
  supersedes that user's older theme jobs still waiting to run;
- an image whose content already has a job that has not published yet makes no job.
The ``seen`` table lets a rescan skip files whose size and mtime did not change.

Every read of a user-folder file goes through :mod:`astrowatch.storage.safefs`: opened once,
without following links or blocking, size-checked before anything is hashed, hashed and snapshotted
from that one descriptor, and refused (a ``failed/<user>/`` entry saying why) when it is a symlink,
a FIFO, hard-linked, over its size bound, or not the file the stability check saw.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.chart.identity import identity_sha256
from astrowatch.core.errors import AstrowatchError, UnsafePathError, as_disk_full
from astrowatch.core.formats import HEAD_BYTES, IMAGE_EXTENSIONS, accepted_text, sniff, unusable_reason
from astrowatch.core.jobs import PENDING, IngestOutcome, JobKind, JobState
from astrowatch.pipeline.feedback import LEARNED_KEY, learned_params, learns
from astrowatch.pipeline.publish import refuse_file
from astrowatch.storage import safefs
from astrowatch.storage.layout import DECISION_FOLDERS, USERS, Layout, check_name, check_user_name, display, is_ignored_name
from astrowatch.storage.ledger import FAILED_FOR_INPUT, new_job_id
from astrowatch.storage.safefs import Identity, Unreadable

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

    def handle(self, path: str, expect: Identity | None = None) -> str:
        """Act on one stable path; returns what happened (for logs, tests and benchmarks): an
        :class:`IngestOutcome`, or for a decision folder what :meth:`Reviewer.handle` made of it.

        ``expect``: the ``(st_dev, st_ino)`` the stability check saw (:meth:`StabilityTracker.stable`);
        a user-folder file that is another file by the time it is opened is refused."""
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
        if parts[0] == USERS and len(parts) == 2:
            return self._user_folder(p, parts[1])
        if parts[0] != USERS or len(parts) != 3:
            return IngestOutcome.IGNORED
        user, name = parts[1], parts[2]
        try:
            check_user_name(user)
        except UnsafePathError as exc:
            self._warn_once(user, "skipped: unsafe user folder (no safe name for a failed/ entry)", str(exc))
            return IngestOutcome.SKIPPED
        try:
            return self._user_file(p, user, name, expect)
        except Unreadable as exc:  # missing, or refused by the safe-read layer: this file's problem
            return IngestOutcome.GONE if exc.gone else self._refuse_unreadable(user, p, exc)
        except (OSError, ValueError, RecursionError) as exc:
            if as_disk_full(exc) is not None:
                raise  # the machine's fault, not the file's: the daemon waits and takes it again
            log.exception("input could not be taken", user=user, file=display(name), error=str(exc))
            return IngestOutcome.SKIPPED

    def _user_file(self, p: Path, user: str, name: str, expect: Identity | None) -> IngestOutcome:
        if is_ignored_name(name):
            return IngestOutcome.IGNORED
        st = safefs.lstat_or_none(p, root=self.layout.root)
        if st is None:
            return IngestOutcome.GONE
        try:
            check_name(name)
        except UnsafePathError as exc:
            return self.refuse(user, p, str(exc), move=True)
        if stat.S_ISLNK(st.st_mode):
            return self.refuse(user, p, f"{name} is a symbolic link; links are never followed", move=True)
        lower, theme = name.lower(), f"theme_{user.lower()}"
        if lower == f"{theme}.png" or lower.startswith("moodboard."):
            return IngestOutcome.IGNORED  # our own delivery / the user's style image
        is_theme = lower == f"{theme}.json"
        is_input = is_theme or (lower.startswith("theme_") and lower.endswith(".json")) or (
            p.suffix.lower() in IMAGE_EXTENSIONS)
        if not stat.S_ISREG(st.st_mode):
            if not is_input or stat.S_ISDIR(st.st_mode):
                return IngestOutcome.IGNORED
            # a FIFO, socket or device named like an input: refused from lstat alone, never opened
            return self._refuse_unreadable(user, p, Unreadable(f"{name}: is not a regular file"))
        expect = expect or safefs.identity(st)  # at least the file lstat just saw
        if is_theme:
            return self._astro(p, user, name, st, expect)
        if lower.endswith(".json"):
            if lower.startswith("theme_"):
                return self._misnamed_theme(p, user, name, st, expect)
            return IngestOutcome.IGNORED
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return self._enhance(p, user, name, st, expect)
        return self._not_accepted(p, user, name)

    def _user_folder(self, p: Path, user: str) -> IngestOutcome:
        """``Utilisateurs/<user>`` itself: a symbolic link there (to a folder outside, say) is never
        entered; it moves, as a link, to ``failed/<user>/`` with the reason, so the refusal is visible."""
        st = safefs.lstat_or_none(p, root=self.layout.root)
        if st is None:
            return IngestOutcome.GONE
        if not stat.S_ISLNK(st.st_mode):
            return IngestOutcome.IGNORED  # a real folder (its files come one by one) or a stray file
        try:
            check_user_name(user)
        except UnsafePathError as exc:
            self._warn_once(user, "skipped: unsafe user folder (no safe name for a failed/ entry)", str(exc))
            return IngestOutcome.SKIPPED
        return self.refuse(user, p, f"Utilisateurs/{user} is a symbolic link; links are never followed, "
                           "nothing behind it is read. Make it a real folder", move=True)

    def _not_accepted(self, p: Path, user: str, name: str) -> IngestOutcome:
        """An image we cannot use (by name or content) gets a failed/ entry; anything else is ignored."""
        try:  # only the head is read: no size bound needed; links, FIFOs, hard links still refused
            with safefs.open_file(p, root=self.layout.root, max_bytes=sys.maxsize) as (fh, _st):
                head = fh.read(HEAD_BYTES)
        except Unreadable as exc:
            if not exc.gone:
                self._warn_once(str(p), "ignored: not an accepted input, and unreadable", str(exc))
            return IngestOutcome.GONE if exc.gone else IngestOutcome.IGNORED
        reason = unusable_reason(name, sniff(head))
        if reason:
            return self.refuse(user, p, f"{reason}. Accepted: {accepted_text()}", move=True,
                               extra={"accepted": accepted_text()})
        self._warn_once(str(p), "ignored: not an accepted input",
                        f"accepted: theme_<user>.json and photos: {accepted_text()}")
        return IngestOutcome.IGNORED

    # -- astro ---------------------------------------------------------------------------------
    def _astro(self, p: Path, user: str, name: str, st: os.stat_result, expect: Identity) -> IngestOutcome:
        rel = self.layout.rel(p)
        if self._unchanged(rel, st):
            return IngestOutcome.UNCHANGED
        snap = safefs.read_bytes(p, root=self.layout.root, max_bytes=self.config.limits.max_json_bytes,
                                 expect=expect, what="theme (limits.max_json_bytes)")
        st, head, sha = snap.stat, snap.data, snap.sha256  # one descriptor: what is hashed is what is kept
        jobs = self.ledger.jobs_for_source(user, rel)
        last = jobs[0] if jobs else None
        retry = last is not None and self._failed_not_for_input(last)
        if last is not None and last.source_sha256 == sha and not retry:
            self._seen(rel, st, sha, last.id)
            return IngestOutcome.DUPLICATE
        # parsed here only when read: learned defaults explore by the chart's identity (so a
        # re-export draws the same choice), and a rewrite is compared with the last render; else
        # the job's run parses the snapshot, once
        needed = learns(self.config, JobKind.ASTRO) or (last is not None and not retry)
        chart = self._chart_or_none(head, user, name) if needed else None
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
            safefs.write_bytes(snapshot / name, head, root=self.layout.root)  # snapshot first
            job = self.ledger.create_job(kind=JobKind.ASTRO, user=user, source=rel, source_sha256=sha, job_id=job_id,
                                         params=params, parent_id=retry_of)
        except BaseException:  # not recorded (a full disk): no orphan snapshot; the file is taken again
            self._drop_snapshot(snapshot / name)
            raise
        self._seen(rel, st, sha, job.id)
        log.info("job queued", job_id=job.id, user=user, kind=JobKind.ASTRO, source=rel,
                 **({"retry_of": retry_of} if retry_of else {}))
        self.wake()
        return IngestOutcome.JOB

    def _drop_snapshot(self, path: Path) -> None:
        """Remove a snapshot and its (job's own) folder, relative to folder descriptors."""
        with contextlib.suppress(OSError, AstrowatchError):
            safefs.unlink(path, root=self.layout.root)
            with safefs.open_dir(path.parent.parent, self.layout.root) as dfd:
                os.rmdir(path.parent.name, dir_fd=dfd)

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
        except (AstrowatchError, ValueError, RecursionError):  # bad input: the job's run says why
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
            return safefs.read_bytes(path, root=self.layout.root, max_bytes=self.config.limits.max_json_bytes,
                                     what="theme snapshot").data
        except (Unreadable, UnsafePathError, OSError):
            return b""

    # -- enhance -------------------------------------------------------------------------------
    def _enhance(self, p: Path, user: str, name: str, st: os.stat_result, expect: Identity) -> IngestOutcome:
        rel = self.layout.rel(p)
        if self._unchanged(rel, st):
            return IngestOutcome.UNCHANGED
        # size checked by fstat before a byte is hashed; hashed from that one descriptor
        sha, st = safefs.sha256_of(p, root=self.layout.root, max_bytes=self.config.limits.max_image_bytes,
                                   expect=expect, what="photo (limits.max_image_bytes)")
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

    def _misnamed_theme(self, p: Path, user: str, name: str, st: os.stat_result, expect: Identity) -> IngestOutcome:
        rel = self.layout.rel(p)
        if self._unchanged(rel, st):
            return IngestOutcome.UNCHANGED
        with safefs.open_file(p, root=self.layout.root, max_bytes=self.config.limits.max_json_bytes, expect=expect,
                              what="theme (limits.max_json_bytes)"):
            pass  # a copy goes to failed/: only of a plain, bounded file
        outcome = self.refuse(user, p, f"{name}: a theme in folder {user!r} must be named theme_{user}.json",
                              move=False)
        self.ledger.seen_put(rel, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256="", job_id=None)
        return outcome

    def known_unchanged(self, path: str) -> bool:
        """True for a user-folder file the ledger has seen with this size and mtime (no re-hash)."""
        try:
            rel = self.layout.rel(Path(path))
        except UnsafePathError:
            return False
        parts = rel.split("/")
        if parts[0] != USERS or len(parts) != 3:
            return False
        st = safefs.lstat_or_none(Path(path), root=self.layout.root)
        return st is not None and stat.S_ISREG(st.st_mode) and self._unchanged(rel, st)

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

    def _refuse_unreadable(self, user: str, p: Path, exc: Unreadable) -> IngestOutcome:
        """A symlink, FIFO, hard-linked, oversized or swapped input: moved to ``failed/<user>/``
        (a name moves; nothing is read through it) with the reason.  A plain theme file (too big,
        say) stays where it is -- the upstream app owns its JSON, as for any theme that fails --
        and is remembered by size and mtime, so it is refused once, not at every scan."""
        st = safefs.lstat_or_none(p, root=self.layout.root)
        keep = st is not None and stat.S_ISREG(st.st_mode) and p.name.lower().endswith(".json")
        try:
            outcome = self.refuse(user, p, f"missing or unreadable: {exc}", move=not keep)
        except FileNotFoundError:
            return IngestOutcome.GONE  # moved away meanwhile
        if keep and st is not None:
            self._seen(self.layout.rel(p), st, "", None)
        return outcome

    def _warn_once(self, key: str, event: str, reason: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(event, path=display(key), reason=reason)

