"""``astrowatch retry JOB_ID…`` / ``astrowatch retry --failed [--user U] [--since T]``.

A failed job whose cause was not the input (backend down too long, a key revoked, a bad style
in the config…) is run again from the same input: a new ``queued`` job recorded with the failed
one as its parent.  Idempotent: a failed job has at most one retry (the ledger creates the child
in one transaction), so retrying twice makes one job.

The input comes back from where the failure left it: an enhance job's photo from
``failed/<user>/`` (moved into the failed job's archive folder, where the retry reads it), an
astro job's theme from the snapshot taken at ingest (else the ``failed/`` copy).  The ``failed/``
entry and its ``.error.json`` leave ``failed/`` (kept in the job's archive folder).

Like ``review`` and ingest, this only adds a new ``queued`` job (no existing job changes state),
so it works whether the daemon runs or not: a running daemon's worker claims it within a second,
a stopped one at its next start.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from astrowatch.core.jobs import JobKind, JobState

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import LimitsConfig
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Job, Ledger

UNITS = {"m": 60, "h": 3600, "d": 86400}


def since_arg(text: str) -> float:
    """``2026-11-29``, ``2026-11-29T14:00`` (local time) or ``30m`` / ``2h`` / ``3d`` ago."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([mhd])", text.strip())
    if m:
        return time.time() - float(m.group(1)) * UNITS[m.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD[THH:MM], or 30m, 2h, 3d") from None


def failed_entry(layout: Layout, job: Job) -> tuple[Path, Path] | None:
    """``failed/<user>/<name>`` and its ``.error.json`` written for ``job``, if still there.
    ``failed/<user>`` is listed and each record read without following a link (bounded)."""
    from astrowatch.storage import safefs

    folder = layout.failed_dir(job.user)
    try:
        with safefs.open_dir(folder, layout.root) as dfd:
            names = sorted(n for n in os.listdir(dfd) if n.endswith(".error.json"))
    except (safefs.Unreadable, OSError):
        return None
    for name in names:
        record = folder / name
        data = safefs.read_json_or_none(record, root=layout.root)
        if isinstance(data, dict) and data.get("job_id") == job.id:
            return record.with_name(name[: -len(".error.json")]), record
    return None


def restore_input(ledger: Ledger, layout: Layout, job: Job, *, check: bool = True,
                  max_bytes: int | None = None) -> None:
    """Put the failed job's input where its retry reads it: the job's archive folder.  Every
    read, move and removal is relative to folder descriptors (no link followed, sizes bounded by
    ``max_bytes``: the config's limit for the job's kind)."""
    from astrowatch.core.config import input_bound
    from astrowatch.core.errors import InputError, NotFound
    from astrowatch.pipeline.publish import locate_source
    from astrowatch.storage import safefs

    root = layout.root
    bound = max_bytes or input_bound(job.kind)
    archive = layout.archive_dir(job.user, job.id)
    entry = failed_entry(layout, job)
    if entry is not None:
        dest = archive / job.source_name
        entry_file, record = entry
        safefs.make_dirs(archive, root)
        try:
            digest, _st = safefs.sha256_of(entry_file, root=root, max_bytes=bound, what="failed input")
        except safefs.Unreadable:
            digest = None  # gone, or not a plain file within the bound: left in failed/
        if digest == job.source_sha256:
            if safefs.lstat_or_none(dest, root=root) is not None:
                safefs.unlink(entry_file, root=root)  # a copy of the snapshot (astro) already there
            else:
                safefs.move_out(entry_file, dest, root=root)
        safefs.rename(record, archive / f"{job.source_name}.error.json", root=root)
    if not check:
        return
    try:
        if job.kind == JobKind.ASTRO:
            safefs.read_bytes(archive / job.source_name, root=root, max_bytes=bound, what="theme snapshot")
        else:
            locate_source(ledger, layout, job, max_bytes=bound)
    except InputError:
        raise NotFound(f"job {job.id}: its input {job.source_name} is no longer available "
                       f"(not in failed/{job.user}/ nor archive/{job.user}/{job.id}/); drop the file again") from None


def newer_theme(ledger: Ledger, job: Job) -> Job | None:
    """For a theme: a job made since from different content (retrying the old one is pointless)."""
    if job.kind != JobKind.ASTRO:
        return None
    newest = ledger.jobs_for_source(job.user, job.source)[0]
    return newest if newest.source_sha256 != job.source_sha256 else None


def retry(ledger: Ledger, layout: Layout, job: Job, *, limits: LimitsConfig | None = None) -> str:
    """Queue the retry of one failed job (or name the one that exists); one line for the operator."""
    from astrowatch.core.errors import NotFound
    from astrowatch.pipeline.delivery import queue_child

    bound = None if limits is None else (limits.max_json_bytes if job.kind == JobKind.ASTRO
                                         else limits.max_image_bytes)
    child = ledger.child_of(job.id)
    if child is not None:
        restore_input(ledger, layout, job, check=False, max_bytes=bound)  # finishes an interrupted retry
        return f"{job.id}: already retried as job {child.id} (state: {child.state})"
    if job.state != JobState.FAILED:
        raise NotFound(f"job {job.id} has not failed (state: {job.state}); only failed jobs are retried")
    if (newer := newer_theme(ledger, job)) is not None:
        raise NotFound(f"job {job.id}: {job.source} has newer content since (job {newer.id}); not retried")
    restore_input(ledger, layout, job, max_bytes=bound)
    child, created = queue_child(ledger, layout, job, dict(job.params))
    if not created:
        return f"{job.id}: already retried as job {child.id} (state: {child.state})"
    return f"{job.id}: retried as job {child.id} ({job.source})"


def select_failed(ledger: Ledger, user: str | None, since: float | None) -> list[Job]:
    return [j for j in ledger.by_state(JobState.FAILED) if (user is None or j.user == user)
            and (since is None or j.updated_at >= since) and ledger.child_of(j.id) is None]


def main(args: argparse.Namespace) -> int:
    from astrowatch.core.errors import AstrowatchError, ConfigError
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger import Ledger

    if bool(args.jobs) == bool(args.failed):
        raise ConfigError("name failed jobs (astrowatch retry JOB_ID...) or use --failed, not both")
    if args.jobs and (args.user or args.since is not None):
        raise ConfigError("--user and --since go with --failed")
    config = load_config(args.config)
    layout = Layout(config.data_dir)
    layout.ensure()
    ledger = Ledger(layout.ledger_path)
    items = args.jobs or select_failed(ledger, args.user, args.since)
    if not items:
        print("no failed job to retry")
        return 0
    status = 0
    for item in items:
        try:
            print(retry(ledger, layout, ledger.find(item) if isinstance(item, str) else item,
                        limits=config.limits))
        except AstrowatchError as exc:
            print(f"astrowatch retry: error: {exc}", file=sys.stderr)
            status = status or exc.exit_code
    return status
