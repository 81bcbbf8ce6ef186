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
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from astrowatch.core.errors import AstrowatchError, NotFound, UnsafePathError
from astrowatch.core.jobs import BackendName, Decision, JobKind, JobState
from astrowatch.storage.images import atomic_write_json, read_json_or_none
from astrowatch.storage.layout import Layout, check_name, check_user_name

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
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

    def inbox(self, name: str | None) -> list[dict[str, Any]]:
        user = self.user(name) if name is not None else None
        items = []
        for job in self.reader().by_state(JobState.INBOX):
            if user is not None and job.user != user:
                continue
            items.append({"job_id": job.id, "user": job.user, "kind": job.kind, "backend": self.backend_of(job),
                          "image": f"/api/jobs/{job.id}/image.png", "waiting_s": round(time.time() - job.updated_at),
                          "status_url": f"/api/jobs/{job.id}"})
        return items

    # -- files ---------------------------------------------------------------------------------------
    def delivered(self, user: str) -> Path | None:
        path = self.layout.user_dir(user) / f"theme_{user}.png"
        return path if path.is_file() and not path.is_symlink() else None

    def inbox_image(self, job: Job) -> Path | None:
        name = (job.result or {}).get("image")
        if job.state != JobState.INBOX or not name:
            return None
        path = self.layout.inbox_dir(job.user) / check_name(name)
        return path if path.is_file() and not path.is_symlink() else None

    def delivered_image(self, name: str) -> Path:
        user = self.user(name)
        path = self.delivered(user)
        if path is None:
            raise ApiError(404, f"{user} has no delivered picture yet",
                           f"GET /api/astro-image/{user} says where its generation stands")
        return path

    def pending_image(self, job_id: str) -> Path:
        job = self.job(job_id)
        path = self.inbox_image(job)
        if path is None:
            raise ApiError(404, f"job {job.id} has no result waiting for review (state: {job.state})",
                           "a result is served here only while it waits in the inbox")
        return path

    def _prompt(self, job: Job) -> str | None:
        stem = (job.result or {}).get("stem")
        if not stem:
            return None
        for folder in (self.layout.inbox_dir(job.user), self.layout.archive_dir(job.user, job.id)):
            sidecar = read_json_or_none(folder / f"{stem}.json")
            if isinstance(sidecar, dict):
                return sidecar.get("prompt")
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
        from astrowatch.storage.files import sha256_file

        user = self.user(name)
        theme = self.layout.user_dir(user) / f"theme_{user}.json"
        if not theme.is_file() or theme.is_symlink():
            raise ApiError(404, f"{user} has no theme (Utilisateurs/{user}/theme_{user}.json)",
                           "the upstream app writes the natal chart there first")
        sha = sha256_file(theme)
        ledger = self.reader()
        parent = next((j for j in ledger.jobs_for_source(user, theme_source(user)) if j.source_sha256 == sha
                       and (self.layout.archive_dir(user, j.id) / j.source_name).is_file()), None)
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
               params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Move the inbox image into approved/, rejected/ or redo/ as a reviewer would."""
        from astrowatch.review.inbox import InboxItem, decide
        from astrowatch.review.reviewer import VIA_KEY

        job = self.job(job_id)
        with self._decide_lock:  # two requests for one result: the second gets the 409 below
            image = self.inbox_image(job) if job.state == JobState.INBOX else None
            if image is None:
                raise ApiError(409, f"job {job.id} is not awaiting review (state: {job.state}"
                               + (", its result was already moved: the daemon is applying a decision)"
                                  if job.state == JobState.INBOX else ")"),
                               f"GET /api/jobs/{job.id} shows where it is; GET /api/inbox lists what awaits review")
            item = InboxItem(job, image)
            sidecar = item.sidecar()
            if decision == Decision.REDO and not sidecar:
                raise ApiError(409, f"{item.sidecar_path.name} is missing or unreadable: a redo needs the sidecar",
                               "approve or reject it instead, or restore the sidecar")
            merged = {**(sidecar.get("params") or {}), **(params or {})} if decision == Decision.REDO else None
            atomic_write_json(item.sidecar_path, {**sidecar, VIA_KEY: "api"})
            try:
                decide(self.layout, item, decision, caption=caption, params=merged)
            except (AstrowatchError, OSError) as exc:
                if item.sidecar_path.exists():  # not moved: leave no stale mark for a later move by hand
                    atomic_write_json(item.sidecar_path, sidecar)
                raise ApiError(409, f"could not move {image.name}: {exc}",
                               "it was probably decided meanwhile") from None
        return {"job_id": job.id, "decision": decision, "state": job.state, "status_url": f"/api/jobs/{job.id}"}

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
