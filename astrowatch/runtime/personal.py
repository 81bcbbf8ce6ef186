"""A person's data: exported (``astrowatch export``, ``GET /api/users/{user}/export``) and erased
(``astrowatch forget``, ``DELETE /api/users/{user}``) -- safe to run while the daemon runs.

Forgetting: their queued, waiting, running and in-review jobs become ``cancelled`` (a compare-and-set
like every move, so the daemon's worker drops a cancelled job's result instead of publishing it);
jobs being finished (intents) and running jobs are waited for, a bounded time; then every file of
theirs is removed (:mod:`astrowatch.storage.erase`), their log lines dropped, and their ledger rows
become a tombstone (``VACUUM`` + WAL truncated).  A report naming them only by the tombstone is
appended to ``logs/erasures.jsonl``.
"""

from __future__ import annotations

import io
import json
import stat
import time
import zipfile
from collections.abc import Callable
from typing import Any

from astrowatch.core.config import Config
from astrowatch.core.errors import AstrowatchError
from astrowatch.core.jobs import INTENTS, PENDING, JobState
from astrowatch.storage import erase, safefs
from astrowatch.storage.layout import Layout, check_user_name
from astrowatch.storage.ledger import Ledger

CANCELLABLE = PENDING | {JobState.INBOX}
ERASURES_LOG = "erasures.jsonl"
Say = Callable[[str], None]


class ForgetBusy(AstrowatchError):
    """A job of the person is still being finished or run after the bounded wait: nothing erased."""


def _lora_paths(config: Config) -> list[str]:
    return [entry.path for entry in config.sdxl.loras]


def _running_ids(layout: Layout) -> set[str]:
    """Job ids the daemon says its workers run now (``state/daemon.json``)."""
    state = safefs.read_json_or_none(layout.daemon_state_path, root=layout.root)
    if not isinstance(state, dict) or state.get("stopped"):
        return set()
    workers = state.get("workers") or []
    return {str(w["current_job"]) for w in workers if isinstance(w, dict) and isinstance(w.get("current_job"), str)}


def cancel_jobs(ledger: Ledger, user: str) -> list[str]:
    """Move every cancellable job of ``user`` to ``cancelled`` (again while one moves under us)."""
    cancelled: list[str] = []
    for _ in range(20):
        moved = False
        for row in ledger.by_state(*sorted(CANCELLABLE)):
            if row.user == user and ledger.transition(row.id, row.state, JobState.CANCELLED, note="forget"):
                cancelled.append(row.id)
                moved = True
        if not moved:
            break
    return cancelled


def _wait(what: str, busy: Callable[[], set[str]], seconds: float, say: Say) -> None:
    deadline = time.monotonic() + seconds
    left = busy()
    if left:
        say(f"waiting up to {seconds:.0f} s for {len(left)} job(s) {what}")
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = busy()
    if left:
        raise ForgetBusy(f"job(s) {', '.join(sorted(left))} still {what} after {seconds:.0f} s; nothing was erased",
                         hint="run forget again in a moment (forget.running_wait_seconds sets the wait)")


def plan(config: Config, user: str) -> tuple[erase.Found, list[dict[str, Any]]]:
    """What is stored about ``user``: their files and their ledger rows."""
    check_user_name(user)
    layout = Layout(config.data_dir)
    jobs, _history = erase.ledger_rows(layout.ledger_path, user)
    found = erase.find(layout, user, [j["id"] for j in jobs], loras=_lora_paths(config), data_dir=config.data_dir)
    return found, jobs


def forget(config: Config, user: str, *, dry_run: bool = False, keep_loras: bool = False,
           say: Say = lambda _text: None) -> dict[str, Any]:
    """Erase ``user``; returns the report (the person named only by the tombstone)."""
    check_user_name(user)
    layout = Layout(config.data_dir)
    found, jobs = plan(config, user)
    if dry_run:
        return {"dry_run": True, "jobs": len(jobs), "paths": [layout.rel(p) for p in found.paths],
                "loras": [] if keep_loras else [str(p) for p in found.loras],
                "logs": {k: len(v) for k, v in erase.log_lines(layout, user, found.job_ids).items()}}
    ledger = Ledger(layout.ledger_path)
    try:
        cancelled = cancel_jobs(ledger, user)
        say(f"{len(cancelled)} job(s) cancelled")

        def intents() -> set[str]:
            return {j.id for j in ledger.by_state(*sorted(INTENTS)) if j.user == user}

        ids = {j["id"] for j in jobs} | set(cancelled)
        _wait("being finished", intents, config.forget.running_wait_seconds, say)
        _wait("running", lambda: _running_ids(layout) & ids, config.forget.running_wait_seconds, say)
        cancel_jobs(ledger, user)  # anything queued in between (a retry of a cancelled attempt cannot: it is final)
        jobs, _history = erase.ledger_rows(layout.ledger_path, user)
        ids |= {j["id"] for j in jobs}
    finally:
        ledger.close()
    found = erase.find(layout, user, sorted(ids), loras=_lora_paths(config), data_dir=config.data_dir)
    removed = _remove_with_progress(found, layout, keep_loras, say)
    dropped = {}
    for path in erase.log_files(layout):
        n = erase.rewrite_log(path, layout.root, user, ids)
        if n:
            dropped[path.name] = n
    say(f"{sum(dropped.values())} log line(s) dropped")
    result = erase.erase_ledger(layout.ledger_path, user, reader_wait=config.forget.reader_wait_seconds)
    # a worker that let go of a cancelled job during the wait may have left its work folder
    removed += erase.remove(erase.find(layout, user, sorted(ids)), layout, keep_loras=True)
    tomb = result.tombstone
    report = {
        "event": "forget", "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "person": tomb,
        "jobs": result.jobs, "cancelled": len(cancelled),
        "removed": [_hide(p, user, tomb) for p in removed], "log_lines_dropped": dropped,
        "ledger_rows_deleted": result.rows_deleted, "wal_truncated": result.wal_truncated,
        "reader_wait_s": result.waited_s, "loras_kept": bool(keep_loras and found.loras),
    }
    if not result.wal_truncated:
        report["warning"] = (f"a reader kept the ledger's WAL open for {config.forget.reader_wait_seconds:.0f} s: "
                             "it is truncated at the next checkpoint; run forget's check again (same command) later")
    with safefs.append_file(layout.logs / ERASURES_LOG, root=layout.root) as fh:
        fh.write((json.dumps(report, ensure_ascii=False) + "\n").encode("utf-8"))
    return report


def _hide(path: str, user: str, tomb: str) -> str:
    return path.replace(user, tomb)


def _remove_with_progress(found: erase.Found, layout: Layout, keep_loras: bool, say: Say) -> list[str]:
    total = len(found.paths)
    removed: list[str] = []
    step = max(total // 10, 1)
    for i in range(0, total, step):
        part = erase.Found(found.user, found.job_ids, found.paths[i:i + step])
        removed += erase.remove(part, layout, keep_loras=True)
        if total > step:
            say(f"removed {min(i + step, total)}/{total}")
    if not keep_loras:
        removed += erase.remove(erase.Found(found.user, found.job_ids, [], found.loras), layout)
    say(f"{len(removed)} file(s)/folder(s) removed")
    return removed


# -- export ----------------------------------------------------------------------------------------
def export(config: Config, user: str) -> bytes:
    """A zip of everything stored about ``user``: their files (as stored, under their data-folder
    path), ``ledger.json`` (their jobs and history, and their rows of every other table that keeps
    them: chart seeds, webhook events, files seen), ``logs.json`` (their log lines) and
    ``index.json`` (every file with its size and sha256).  Nothing of anyone else."""
    check_user_name(user)
    layout = Layout(config.data_dir)
    jobs, history = erase.ledger_rows(layout.ledger_path, user)
    found = erase.find(layout, user, [j["id"] for j in jobs], loras=_lora_paths(config), data_dir=config.data_dir)
    index: list[dict[str, Any]] = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for top in found.paths:
            st = safefs.lstat_or_none(top, root=layout.root)
            files = list(erase.walk_files(top, layout.root)) if st is not None and stat.S_ISDIR(st.st_mode) else [top]
            for path in files:
                try:
                    snap = safefs.read_bytes(path, root=layout.root, max_bytes=erase.FILE_MAX_BYTES, what="file")
                except safefs.Unreadable:
                    continue
                name = "files/" + layout.rel(path)
                zf.writestr(name, snap.data)
                index.append({"file": name, "bytes": len(snap.data), "sha256": snap.sha256})
        for lora in found.loras:
            index.append({"lora": str(lora), "note": "per-user LoRA trained on their photos (not included)"})
        other = erase.ledger_other_rows(layout.ledger_path, user)  # seeds, events, seen files...: what forget deletes
        zf.writestr("ledger.json", json.dumps({"jobs": jobs, "history": history, **other}, indent=2,
                                              ensure_ascii=False, default=str))
        zf.writestr("logs.json", json.dumps(erase.log_lines(layout, user, [j["id"] for j in jobs]), indent=2,
                                            ensure_ascii=False))
        zf.writestr("index.json", json.dumps({"user": user, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                              "jobs": len(jobs), "files": index}, indent=2, ensure_ascii=False))
    return buf.getvalue()
