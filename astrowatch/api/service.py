"""What the API does, without HTTP: reads from the ledger and the folders, asks for work.

The daemon stays the only process that runs jobs and moves results out of the decision folders:

- reads open the ledger read-only (SQLite WAL: readers never block the daemon);
- a new generation is one ledger row, inserted in a ``BEGIN IMMEDIATE`` transaction that first
  looks for the same pending request (:meth:`Ledger.create_unless_pending`), so parallel
  identical requests from any number of processes make one job; the row is a child of the job
  that took the current theme, and the daemon's worker copies that job's theme snapshot when it
  runs it (no file is written here);
- approve / reject / redo move the inbox image exactly as ``astrowatch review`` and the review page
  do (:func:`astrowatch.review.inbox.decide`), after marking the sidecar ``decided_via: api`` so
  the daemon records ``"via": "api"`` in ``logs/reviews.jsonl``.

Errors are :class:`ApiError` (HTTP status, message, hint); the FastAPI layer only renders them.
"""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from astrowatch.core.errors import AstrowatchError, InputError, NotFound, UnsafePathError
from astrowatch.core.jobs import BackendName, Decision, JobKind, JobState
from astrowatch.storage import paging, safefs
from astrowatch.storage.layout import Layout, check_name, check_user_name
from astrowatch.storage.safefs import SIDECAR_MAX_BYTES, Unreadable

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.review.inbox import InboxItem
    from astrowatch.storage.ledger import Job, Ledger

DECISIONS = tuple(Decision)
# the upstream app's word for a theme result a person approved (the ledger says ``delivered``:
# approved and written as theme_<user>.png); /api/jobs keeps the ledger's states
UPSTREAM_STATE = {JobState.DELIVERED: "approved"}
# where job.error says something current
ERROR_STATES = frozenset({JobState.FAILED, JobState.FAILING, JobState.WAITING, JobState.QUEUED})


class ApiError(Exception):
    def __init__(self, status: int, error: str, hint: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.hint, self.headers = status, error, hint, headers or {}


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def theme_source(user: str) -> str:
    return f"Utilisateurs/{user}/theme_{user}.json"


def bad_params(exc: InputError) -> ApiError:
    return ApiError(422, exc.message, exc.hint or "see GET /docs for the parameters and their ranges")


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.layout = Layout(config.data_dir)
        self._reader: Ledger | None = None
        self._writer: Ledger | None = None
        self._open_lock = threading.Lock()
        self._decide_lock = threading.Lock()

    # -- the ledger ---------------------------------------------------------------------------
    def reader(self) -> Ledger:
        """The ledger opened read-only (:mod:`astrowatch.storage.ledger_readonly`); 503 while the daemon has
        never created it or it cannot be read."""
        from astrowatch.storage.ledger_readonly import open_for_reading

        with self._open_lock:
            if self._reader is None:
                try:
                    self._reader = open_for_reading(self.layout)
                except NotFound as exc:
                    raise ApiError(503, exc.message, "start the daemon (astrowatch run) once on this data folder",
                                   {"Retry-After": "5"}) from None
                except AstrowatchError as exc:
                    raise ApiError(503, exc.message, exc.hint or "run 'astrowatch doctor'") from None
            return self._reader

    def writer(self) -> Ledger:
        """The ledger opened for writing (new generations only); 503 when this process may not."""
        from astrowatch.storage.ledger import Ledger

        self.reader()  # same 503 when there is no ledger yet
        with self._open_lock:
            if self._writer is None:
                try:
                    self._writer = Ledger(self.layout.ledger_path)
                except sqlite3.Error as exc:
                    raise ApiError(503, f"cannot write the ledger: {exc}",
                                   "run astrowatch api as the daemon's user (as systemd/astrowatch-api.service does)"
                                   ) from None
            return self._writer

    # -- personal data (GDPR) --------------------------------------------------------------------
    def forget_user(self, name: str) -> dict[str, Any]:
        from astrowatch.runtime.personal import ForgetBusy, forget

        user = self.user(name)
        try:
            return forget(self.config, user)
        except ForgetBusy as exc:
            raise ApiError(409, exc.message, exc.hint or "try again in a moment") from None

    def export_user(self, name: str) -> bytes:
        from astrowatch.runtime.personal import export

        return export(self.config, self.user(name))

    # -- names from URLs: the daemon's own rules ------------------------------------------------
    def user(self, name: str) -> str:
        try:
            return check_user_name(name)
        except UnsafePathError as exc:
            raise ApiError(400, str(exc), "a user is the name of a folder in Utilisateurs/") from None

    def job(self, job_id: str) -> Job:
        try:
            check_name(job_id, "job id")
        except UnsafePathError as exc:
            raise ApiError(400, str(exc), "a job id is 12 hexadecimal characters, e.g. 1a2b3c4d5e6f") from None
        try:
            return self.reader().get(job_id)
        except NotFound:
            raise ApiError(404, f"no job with id {job_id!r}", "job ids come from POST /api/astro-image/{user}, "
                           "GET /api/astro-image/{user} or GET /api/inbox") from None

    # -- views ----------------------------------------------------------------------------------
    def astro_image(self, name: str) -> dict[str, Any]:
        user = self.user(name)
        ledger = self.reader()
        job = ledger.latest_for_source(user, theme_source(user))
        pending = job if job is not None and job.state == JobState.INBOX else \
            ledger.latest_for_source(user, theme_source(user), state=JobState.INBOX)
        return {
            "user": user, "state": UPSTREAM_STATE.get(job.state, job.state) if job else "none",
            "image": f"/api/astro-image/{quote(user, safe='')}/image.png" if self.delivered(user) else None,
            "pending": f"/api/jobs/{pending.id}/image.png" if pending and self.inbox_image(pending) else None,
            "job_id": job.id if job else None, "prompt": self._prompt(job) if job else None,
            "backend": self.backend_of(job) if job else None,
            "error": job.error if job and job.state in ERROR_STATES else None,
            "updated_at": iso(job.updated_at) if job else None,
        }

    def job_view(self, job_id: str) -> dict[str, Any]:
        job = self.job(job_id)
        children = self.reader().children(job.id)
        redo = children[0].id if children and job.decision == Decision.REDO else None
        image = self.inbox_image(job)
        return {
            "job_id": job.id, "kind": job.kind, "user": job.user, "state": job.state, "attempts": job.attempts,
            "backend": self.backend_of(job), "params": {k: v for k, v in job.params.items() if not k.startswith("_")},
            "prompt": self._prompt(job), "error": job.error if job.state in ERROR_STATES else None,
            "image": f"/api/jobs/{job.id}/image.png" if image else None, "decision": job.decision,
            "parent_id": job.parent_id, "redo_job_id": redo, "created_at": iso(job.created_at),
            "updated_at": iso(job.updated_at), "status_url": f"/api/jobs/{job.id}",
        }

    def inbox(self, name: str | None, *, kind: str | None = None, limit: int = paging.DEFAULT_LIMIT,
              cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the results waiting for review (oldest first), and the cursor of the next
        page (None: the last).  An index serves it: its cost does not grow with the inbox."""
        user = self.user(name) if name is not None else None
        try:
            after = paging.decode(cursor) if cursor else None
        except InputError as exc:
            raise ApiError(400, exc.message, "pass back the cursor of the previous page's Link header") from None
        jobs, last = self.reader().page(JobState.INBOX, user=user, kind=kind, limit=paging.check_limit(limit),
                                        after=after)
        items = [{"job_id": job.id, "user": job.user, "kind": job.kind, "backend": self.backend_of(job),
                  "image": f"/api/jobs/{job.id}/image.png", "waiting_s": round(time.time() - job.updated_at),
                  "status_url": f"/api/jobs/{job.id}", **self._variants_view(job)} for job in jobs]
        return items, (paging.encode(last) if last else None)

    # -- files ---------------------------------------------------------------------------------------
    def _regular(self, path: Path) -> bool:
        """A regular file reached without a symlink (``lstat`` only: a FIFO never blocks a request)."""
        st = safefs.lstat_or_none(path, root=self.layout.root)
        return st is not None and stat.S_ISREG(st.st_mode)

    def delivered(self, user: str) -> Path | None:
        path = self.layout.user_dir(user) / f"theme_{user}.png"
        return path if self._regular(path) else None

    def _variants_view(self, job: Job) -> dict[str, Any]:
        from astrowatch.pipeline.variants import job_variants

        found = job_variants(job)
        if not found:
            return {}
        return {"variants": [{"variant": v.get("variant"), "seed": v.get("seed"),
                              "image": f"/api/jobs/{job.id}/image.png?variant={v.get('variant')}"} for v in found]}

    def inbox_image(self, job: Job, variant: int | None = None) -> Path | None:
        if variant is not None:
            from astrowatch.pipeline.variants import variant_entry

            entry = variant_entry(job, variant)
            name = entry.get("image") if entry else None
            if job.state != JobState.INBOX or not name:
                return None
            path = self.layout.inbox_dir(job.user) / check_name(str(name))
            return path if self._regular(path) else None
        name = (job.result or {}).get("image")
        if job.state != JobState.INBOX or not name:
            return None
        path = self.layout.inbox_dir(job.user) / check_name(name)
        return path if self._regular(path) else None

    def _image_bytes(self, path: Path | None, missing: ApiError) -> bytes:
        """The image's bytes, read through :mod:`astrowatch.storage.safefs` (no link, no FIFO, at
        most ``limits.max_image_bytes``); ``missing`` when there is none, 404 naming why otherwise."""
        if path is None:
            raise missing
        try:
            return safefs.read_bytes(path, root=self.layout.root, max_bytes=self.config.limits.max_image_bytes,
                                     what="image").data
        except Unreadable as exc:
            if exc.gone:
                raise missing from None
            raise ApiError(404, f"{self.layout.rel(path)} is not readable: {exc.message}",
                           "only a regular file astrowatch wrote is served") from None

    def delivered_image(self, name: str) -> bytes:
        user = self.user(name)
        return self._image_bytes(self.delivered(user), ApiError(
            404, f"{user} has no delivered picture yet", f"GET /api/astro-image/{user} says where its generation stands"))

    def pending_image(self, job_id: str, variant: int | None = None) -> bytes:
        job = self.job(job_id)
        return self._image_bytes(self.inbox_image(job, variant), ApiError(
            404, f"job {job.id} has no result waiting for review (state: {job.state})"
            + (f" as variant {variant}" if variant is not None else ""),
            "a result is served here only while it waits in the inbox"))

    def _prompt(self, job: Job) -> str | None:
        stem = (job.result or {}).get("stem")
        if not stem:
            return None
        for folder in (self.layout.inbox_dir(job.user), self.layout.archive_dir(job.user, job.id)):
            sidecar = safefs.read_json_or_none(folder / f"{stem}.json", root=self.layout.root,
                                               max_bytes=SIDECAR_MAX_BYTES, max_depth=self.config.limits.max_json_depth)
            if isinstance(sidecar, dict):
                prompt = sidecar.get("prompt")
                return prompt if isinstance(prompt, str) else None
        return None

    def backend_of(self, job: Job) -> str | None:
        from astrowatch.pipeline.steps import backend_for
        from astrowatch.runtime.status import daemon_state

        recorded = (job.result or {}).get("backend")
        if recorded:
            return str(recorded)
        default = getattr(self.config, job.kind).backend
        if default == BackendName.AUTO:  # what the running daemon resolved it to
            default = (daemon_state(self.layout).get("backends") or {}).get(job.kind, default)
        return backend_for(job.params, default)

    # -- asking for work ------------------------------------------------------------------------------
    def request_generation(self, name: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """A new astro job from the user's current theme with ``overrides`` (backend, seed, style)."""
        from astrowatch.pipeline.steps import SNAPSHOT_FROM
        from astrowatch.review.params import check_params

        user = self.user(name)
        try:
            overrides = check_params(self.config, JobKind.ASTRO, overrides)
        except InputError as exc:
            raise bad_params(exc) from None
        theme = self.layout.user_dir(user) / f"theme_{user}.json"
        try:  # hashed from one descriptor: no link, no FIFO, at most limits.max_json_bytes
            sha, _st = safefs.sha256_of(theme, root=self.layout.root, max_bytes=self.config.limits.max_json_bytes,
                                        what="theme")
        except Unreadable as exc:
            raise ApiError(404, f"{user} has no readable theme (Utilisateurs/{user}/theme_{user}.json"
                           + ("" if exc.gone else f": {exc.message}") + ")",
                           "the upstream app writes the natal chart there first") from None
        ledger = self.reader()
        parent = next((j for j in ledger.jobs_for_source(user, theme_source(user)) if j.source_sha256 == sha
                       and self._regular(self.layout.archive_dir(user, j.id) / j.source_name)), None)
        if parent is None:
            raise ApiError(409, f"the daemon has not taken {user}'s current theme yet",
                           "it makes a job for a new theme by itself within seconds; retry after that",
                           {"Retry-After": "5"})

        def same(job: Job) -> bool:
            return {k: v for k, v in job.params.items() if not k.startswith("_")} == overrides

        job, created = self.writer().create_unless_pending(
            kind=JobKind.ASTRO, user=user, source=parent.source, source_sha256=sha,
            params={**overrides, SNAPSHOT_FROM: parent.id}, same=same)
        return {"job_id": job.id, "state": job.state, "status_url": f"/api/jobs/{job.id}",
                "created": created}, created

    def decide(self, job_id: str, decision: Decision, *, caption: str | None = None,
               params: dict[str, Any] | None = None, variant: int | None = None) -> dict[str, Any]:
        """Move the inbox image into approved/, rejected/ or redo/ as a reviewer would."""
        from astrowatch.review.inbox import InboxItem, changed_params, decide, edit_sidecar
        from astrowatch.review.reviewer import VIA_KEY

        job = self.job(job_id)
        with self._decide_lock:  # two requests for one result: the second gets the 409 below
            image = self.inbox_image(job) if job.state == JobState.INBOX else None
            if image is None:
                raise ApiError(409, f"job {job.id} is not awaiting review (state: {job.state}"
                               + (", its result was already moved: the daemon is applying a decision)"
                                  if job.state == JobState.INBOX else ")"),
                               f"GET /api/jobs/{job.id} shows where it is; GET /api/inbox lists what awaits review")
            item = sheet = InboxItem(job, image, self.layout.root)
            if variant is not None:  # a pick: the variant's own sidecar carries the mark
                try:
                    item = InboxItem(job, sheet.variant(variant).image, self.layout.root)
                except NotFound as exc:
                    raise ApiError(409, exc.message, f"GET /api/inbox lists the variants of job {job.id}") from None
            sidecar = item.sidecar()
            if decision == Decision.REDO and not sidecar:
                raise ApiError(409, f"{item.sidecar_path.name} is missing or unreadable: a redo needs the sidecar",
                               "approve or reject it instead, or restore the sidecar")
            recorded = sidecar.get("params")
            merged = {**(recorded if isinstance(recorded, dict) else {}), **(params or {})} \
                if decision == Decision.REDO else None
            if merged is not None:
                try:
                    changed_params(self.config, job, merged)
                except InputError as exc:
                    raise bad_params(exc) from None
            root = self.layout.root
            if sidecar:
                edit_sidecar(item.sidecar_path, "the API", lambda d: d.update({VIA_KEY: "api"}), root=root)
            else:  # none (or unreadable): the mark alone, so the decision is still logged as the API's
                safefs.write_json(item.sidecar_path, {VIA_KEY: "api"}, root=root)
            try:
                decide(self.config, self.layout, sheet, decision, caption=caption, params=merged, variant=variant)
            except (AstrowatchError, OSError) as exc:
                if safefs.lstat_or_none(item.sidecar_path, root=root) is not None:
                    safefs.write_json(item.sidecar_path, sidecar, root=root)  # not moved: no stale mark
                if isinstance(exc, InputError) and not isinstance(exc, UnsafePathError):
                    raise bad_params(exc) from None
                raise ApiError(409, f"could not move {image.name}: {exc}",
                               "it was probably decided meanwhile") from None
        return {"job_id": job.id, "decision": decision, "state": job.state, "status_url": f"/api/jobs/{job.id}"}

    # -- the training caption of an enhance result (review/captions.py) ---------------------------
    def _caption_item(self, job_id: str) -> InboxItem:
        from astrowatch.review.inbox import InboxItem

        job = self.job(job_id)
        image = self.inbox_image(job) if job.state == JobState.INBOX else None
        if image is None:
            raise ApiError(409, f"job {job.id} is not awaiting review (state: {job.state})",
                           "a caption is edited while its result waits in the inbox: GET /api/inbox")
        if job.kind != JobKind.ENHANCE:
            raise ApiError(409, f"job {job.id} is an {job.kind} result: only enhance results have a training caption",
                           "send an astro result's description as 'caption' with approve, reject or redo")
        return InboxItem(job, image, self.layout.root)

    def caption(self, job_id: str) -> dict[str, Any]:
        """Line 1 split into trigger, caption and tags, with what the models proposed."""
        from astrowatch.review.captions import describe

        item = self._caption_item(job_id)
        return {"job_id": item.job.id, **describe(item, self.config.dataset.trigger_word)}

    def edit_caption(self, job_id: str, caption: str | None, tags: list[str] | None) -> dict[str, Any]:
        """Rewrite line 1 of the result's .txt (caption and/or tags); filed as left on approval."""
        from astrowatch.review.captions import describe, edit_caption

        with self._decide_lock:  # not while this process moves the same result
            item = self._caption_item(job_id)
            try:
                edit_caption(item, self.config.dataset.trigger_word, caption=caption, tags=tags)
            except InputError as exc:
                if isinstance(exc, UnsafePathError):
                    raise ApiError(409, f"could not edit {item.caption_path.name}: {exc}",
                                   "it was probably decided meanwhile") from None
                raise bad_params(exc) from None
            except (AstrowatchError, OSError) as exc:
                raise ApiError(409, f"could not edit {item.caption_path.name}: {exc}",
                               "it was probably decided meanwhile") from None
            return {"job_id": item.job.id, **describe(item, self.config.dataset.trigger_word)}

    # -- health --------------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        from astrowatch.runtime.status import daemon_state

        reasons = []
        try:
            self.reader().counts()
            ledger_ok = True
        except ApiError as exc:
            ledger_ok = False
            reasons.append(exc.error)
        except (sqlite3.Error, AstrowatchError) as exc:
            ledger_ok = False
            reasons.append(f"the ledger is not readable: {exc}")
        daemon = daemon_state(self.layout)
        age = time.time() - daemon["updated_at"] if isinstance(daemon.get("updated_at"), (int, float)) else None
        up = bool(daemon.get("running"))  # daemon.json's flag (not a job state)
        fresh = up and age is not None and age <= self.config.api.heartbeat_max_age
        if not up:
            reasons.append("the daemon is not running (state/daemon.json says stopped, or its pid is gone)")
        elif not fresh:
            reasons.append(f"the daemon's heartbeat is {age:.0f} s old (limit {self.config.api.heartbeat_max_age:g} s)")
        ok = ledger_ok and fresh
        return ok, {"status": "ok" if ok else "unhealthy", "ledger": ledger_ok, "daemon_up": fresh,
                    "heartbeat_age_s": None if age is None else round(age, 1), "reasons": reasons}
