"""Newest theme wins: which theme results were drawn from an older ``theme_<user>.json``.

The upstream app may rewrite a theme while the previous version is being drawn, so two results
for one user can wait in the inbox.  A theme content's *version* is when it was last taken by
ingest (the newest job made from the file with that sha256, redos and retries counting as their
first ancestor).  A result is *stale* when a result of a newer version is delivered or waiting.
Approving a stale result is bounced (unless forced); stale results in the inbox are marked so in
their sidecar (``"stale"``) and on the review page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from astrowatch.core.errors import NotFound
from astrowatch.core.jobs import Decision, JobKind, JobState
from astrowatch.pipeline.publish import result_stem
from astrowatch.storage import safefs

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger

log = structlog.get_logger("astrowatch.freshness")


def _root(ledger: Ledger, job: Job) -> Job:
    seen = {job.id}
    while job.parent_id and job.parent_id not in seen:
        try:
            job = ledger.get(job.parent_id)
        except NotFound:
            break
        seen.add(job.id)
    return job


def newer_result(ledger: Ledger, job: Job, jobs: list[Job] | None = None) -> Job | None:
    """The newest delivered or waiting result of the same theme file drawn from newer content.
    ``jobs``: the theme file's jobs (:meth:`Ledger.jobs_for_source`) when the caller has them."""
    if job.kind != JobKind.ASTRO:
        return None
    if jobs is None:
        jobs = ledger.jobs_for_source(job.user, job.source)
    version: dict[str, float] = {}
    for j in jobs:  # a content's version: the last time ingest took it (the newest root job)
        root = _root(ledger, j)
        version[j.source_sha256] = max(version.get(j.source_sha256, 0.0), root.created_at)
    mine = version.get(job.source_sha256, job.created_at)
    newer = [j for j in jobs if _counts(j) and j.source_sha256 != job.source_sha256
             and version[j.source_sha256] > mine]
    return max(newer, key=lambda j: (version[j.source_sha256], j.created_at), default=None)


def _counts(job: Job) -> bool:
    """A result that is, or is about to be, the user's chart: delivered, waiting, being approved."""
    return job.state in (JobState.INBOX, JobState.DELIVERED) or (job.state == JobState.DECIDING
                                                                  and job.decision == Decision.APPROVE)


def stale_note(job: Job, newer: Job) -> str:
    where = "already delivered" if newer.state == JobState.DELIVERED else "waiting in the inbox"
    return (f"a newer chart of {job.user} exists (job {newer.id}, {where}): this result was drawn from an "
            f"older {job.source_name}. To deliver it anyway: astrowatch review approve {job.id} --force "
            "(or set \"force\": true in its .json sidecar and move the image into approved/ again)")


def mark_stale(ledger: Ledger, layout: Layout, job: Job) -> list[str]:
    """After ``job`` reached the inbox: mark every result of its theme file now stale (idempotent)."""
    if job.kind != JobKind.ASTRO:
        return []
    marked = []
    jobs = ledger.jobs_for_source(job.user, job.source)
    for other in jobs:
        if other.state != JobState.INBOX:
            continue
        newer = newer_result(ledger, other, jobs)
        if newer is None:
            continue  # not stale: its sidecar is not read
        sidecar_path = layout.inbox_dir(other.user) / f"{result_stem(other)}.json"
        sidecar = safefs.read_json_or_none(sidecar_path, root=layout.root)
        if not isinstance(sidecar, dict) or _already(sidecar, newer):
            continue
        sidecar["stale"] = {"newer_job": newer.id, "note": stale_note(other, newer)}
        safefs.write_json(sidecar_path, sidecar, root=layout.root)
        marked.append(other.id)
        log.info("older theme result marked stale", job_id=other.id, user=other.user, newer_job=newer.id)
    return marked


def _already(sidecar: dict[str, Any], newer: Job) -> bool:
    stale = sidecar.get("stale")
    return isinstance(stale, dict) and stale.get("newer_job") == newer.id
