"""The one vocabulary of astrowatch: job states and the moves between them, job kinds, review
decisions, what ingest makes of a file, and the backend names.

Every member is a :class:`~enum.StrEnum`: it *is* its string, so it goes into SQLite, JSON and
log lines unchanged and compares equal to what an older release wrote.  Code names states with
these members; the ledger enforces :data:`TRANSITIONS` with a compare-and-set.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is.  ``publishing``, ``deciding`` and ``failing`` are *intents* (:data:`INTENTS`):
    the decision is recorded first, then idempotent file operations finish it (again, after a crash)."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # for disk space or a paused backend; nothing failed
    PUBLISHING = "publishing"
    INBOX = "inbox"  # a result awaits review
    DECIDING = "deciding"
    FAILING = "failing"
    FAILED = "failed"
    DELIVERED = "delivered"  # astro: theme_<user>.png written
    FILED = "filed"  # enhance: filed into the user's dataset
    REJECTED = "rejected"
    REDONE = "redone"  # a redo child job took over
    SUPERSEDED = "superseded"  # a newer input for the same user and kind replaced it
    CANCELLED = "cancelled"  # its person was erased (astrowatch forget): the work and its files are gone


S = JobState
# state -> the states it may move to.  Nothing else is allowed, anywhere.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.RUNNING, S.SUPERSEDED, S.CANCELLED}),
    S.RUNNING: frozenset({S.PUBLISHING, S.QUEUED, S.WAITING, S.FAILING, S.CANCELLED}),
    S.WAITING: frozenset({S.QUEUED, S.SUPERSEDED, S.CANCELLED}),
    S.PUBLISHING: frozenset({S.INBOX}),
    S.INBOX: frozenset({S.DECIDING, S.CANCELLED}),
    S.DECIDING: frozenset({S.DELIVERED, S.FILED, S.REJECTED, S.REDONE}),
    S.FAILING: frozenset({S.FAILED}),
    S.FAILED: frozenset(),
    S.DELIVERED: frozenset(),
    S.FILED: frozenset(),
    S.REJECTED: frozenset(),
    S.REDONE: frozenset(),
    S.SUPERSEDED: frozenset(),
    S.CANCELLED: frozenset(),
}
STATES: tuple[JobState, ...] = tuple(TRANSITIONS)
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
PENDING = frozenset({S.QUEUED, S.RUNNING, S.WAITING})  # work not yet produced
INTENTS = frozenset({S.PUBLISHING, S.DECIDING, S.FAILING})  # finished by recovery after a crash
del S


class JobKind(StrEnum):
    ASTRO = "astro"  # a natal chart -> a portrait delivered as theme_<user>.png
    ENHANCE = "enhance"  # a photo -> upscaled and captioned, filed into the user's LoRA dataset


class Decision(StrEnum):
    """A reviewer's decision, and the folder that says it: moving a result into ``approved/``,
    ``rejected/`` or ``redo/`` is the decision."""

    APPROVE = "approve"
    REJECT = "reject"
    REDO = "redo"

    @property
    def folder(self) -> str:
        return _FOLDERS[self]

    @classmethod
    def from_folder(cls, folder: str) -> Decision | None:
        return _BY_FOLDER.get(folder)


_FOLDERS = {Decision.APPROVE: "approved", Decision.REJECT: "rejected", Decision.REDO: "redo"}
_BY_FOLDER = {folder: decision for decision, folder in _FOLDERS.items()}


class IngestOutcome(StrEnum):
    """What ingest made of one stable file (a log field and a metric label)."""

    JOB = "job"  # a new job was queued
    IGNORED = "ignored"  # not an input (our own output, a hidden or partial file, a style image)
    SKIPPED = "skipped"  # left where it is, warned once (e.g. an unsafe user folder name)
    GONE = "gone"  # vanished before it could be read
    UNCHANGED = "unchanged"  # the same bytes as the last job for this source
    DUPLICATE = "duplicate"  # the same bytes as a job already in flight for this user
    SAME_RENDER = "same render"  # another file, but it would render the same picture
    FAILED = "failed"  # refused before it became a job: a failed/<user>/ entry says why


class BackendName(StrEnum):
    """The backends, chosen by name in ``astro.backend`` / ``enhance.backend``."""

    AUTO = "auto"  # the best one this machine can run
    WHEEL = "wheel"
    LANCZOS = "lanczos"
    FAKE = "fake"  # tests only: never chosen unless configured
    SDXL = "sdxl"
    SDAPI = "sdapi"
    OPENAI = "openai"


ASTRO_BACKENDS: tuple[BackendName, ...] = (BackendName.AUTO, BackendName.WHEEL, BackendName.FAKE, BackendName.SDXL,
                                           BackendName.SDAPI, BackendName.OPENAI)
ENHANCE_BACKENDS: tuple[BackendName, ...] = (BackendName.AUTO, BackendName.LANCZOS, BackendName.FAKE, BackendName.SDAPI,
                                             BackendName.SDXL)


class EventType(StrEnum):
    """What the upstream app is told (webhooks, ``GET /api/events``): a job reached a state, or a
    dropped or uploaded file made no job."""

    JOB_QUEUED = "job.queued"  # a new job (a drop, an upload, an API request, a redo or a retry)
    JOB_RUNNING = "job.running"  # a worker took it
    JOB_WAITING = "job.waiting"  # for disk space or a paused backend
    JOB_INBOX = "job.inbox"  # a result awaits review
    JOB_DELIVERED = "job.delivered"  # approved: theme_<user>.png written
    JOB_FILED = "job.filed"  # approved: filed into the user's dataset
    JOB_REJECTED = "job.rejected"
    JOB_REDO = "job.redo"  # sent back with new parameters; data.redo_job_id is the new job
    JOB_FAILED = "job.failed"
    JOB_SUPERSEDED = "job.superseded"  # a newer input for the same user and kind replaced it
    JOB_CANCELLED = "job.cancelled"  # its person was erased (astrowatch forget, DELETE /api/users/<user>)
    INPUT_SKIPPED = "input.skipped"  # a file made no job; data.reason says why


# the state a job reaches -> its event (intent states make none; a re-queue after a retry or a
# wait makes none either: job.queued is sent once, when the job is created)
JOB_EVENTS: dict[JobState, EventType] = {
    JobState.QUEUED: EventType.JOB_QUEUED, JobState.RUNNING: EventType.JOB_RUNNING,
    JobState.WAITING: EventType.JOB_WAITING, JobState.INBOX: EventType.JOB_INBOX,
    JobState.DELIVERED: EventType.JOB_DELIVERED, JobState.FILED: EventType.JOB_FILED,
    JobState.REJECTED: EventType.JOB_REJECTED, JobState.REDONE: EventType.JOB_REDO,
    JobState.FAILED: EventType.JOB_FAILED, JobState.SUPERSEDED: EventType.JOB_SUPERSEDED,
    JobState.CANCELLED: EventType.JOB_CANCELLED,
}
