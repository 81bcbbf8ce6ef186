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
    """``failed/<user>/<name>`` and its ``.error.json`` written for ``job``, if still there."""
    from astrowatch.storage.images import read_json_or_none

    folder = layout.failed_dir(job.user)
    for record in sorted(folder.glob("*.error.json")) if folder.is_dir() else []:
        data = read_json_or_none(record)
        if isinstance(data, dict) and data.get("job_id") == job.id:
            return record.with_name(record.name[: -len(".error.json")]), record
    return None


def restore_input(ledger: Ledger, layout: Layout, job: Job, *, check: bool = True) -> None:
    """Put the failed job's input where its retry reads it: the job's archive folder."""
    from astrowatch.core.errors import InputError, NotFound
    from astrowatch.pipeline.publish import locate_source
    from astrowatch.storage.files import sha256_file
    from astrowatch.storage.images import move_out

    archive = layout.archive_dir(job.user, job.id)
    entry = failed_entry(layout, job)
    if entry is not None:
        dest = archive / job.source_name
        entry_file, record = entry
        archive.mkdir(parents=True, exist_ok=True)
        if entry_file.is_file() and not entry_file.is_symlink() and sha256_file(entry_file) == job.source_sha256:
            if dest.exists():
                entry_file.unlink()  # a copy of the snapshot (astro) already there
            else:
                move_out(entry_file, dest)
        os.replace(record, archive / f"{job.source_name}.error.json")
    if not check:
        return
    try:
        if job.kind == JobKind.ASTRO:
            if not (archive / job.source_name).is_file():
                raise InputError("no snapshot")
        else:
            locate_source(ledger, layout, job)
    except InputError:
        raise NotFound(f"job {job.id}: its input {job.source_name} is no longer available "
                       f"(not in failed/{job.user}/ nor archive/{job.user}/{job.id}/); drop the file again") from None


def newer_theme(ledger: Ledger, job: Job) -> Job | None:
    """For a theme: a job made since from different content (retrying the old one is pointless)."""
    if job.kind != JobKind.ASTRO:
        return None
    newest = ledger.jobs_for_source(job.user, job.source)[0]
    return newest if newest.source_sha256 != job.source_sha256 else None


def retry(ledger: Ledger, layout: Layout, job: Job) -> str:
    """Queue the retry of one failed job (or name the one that exists); one line for the operator."""
    from astrowatch.core.errors import NotFound
    from astrowatch.pipeline.delivery import queue_child

    child = ledger.child_of(job.id)
    if child is not None:
        restore_input(ledger, layout, job, check=False)  # finishes an interrupted retry
        return f"{job.id}: already retried as job {child.id} (state: {child.state})"
    if job.state != JobState.FAILED:
        raise NotFound(f"job {job.id} has not failed (state: {job.state}); only failed jobs are retried")
    if (newer := newer_theme(ledger, job)) is not None:
        raise NotFound(f"job {job.id}: {job.source} has newer content since (job {newer.id}); not retried")
    restore_input(ledger, layout, job)
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
            print(retry(ledger, layout, ledger.find(item) if isinstance(item, str) else item))
        except AstrowatchError as exc:
            print(f"astrowatch retry: error: {exc}", file=sys.stderr)
            status = status or exc.exit_code
    return status
