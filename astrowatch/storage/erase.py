"""Everything stored about one person, found, exported and erased (GDPR art. 15, 17, 20).

A person is a user folder name.  What is theirs: ``Utilisateurs/<user>/``, ``inbox/<user>/``,
``archive/<user>/``, ``failed/<user>/``, ``datasets/<user>/``, results of their jobs that a reviewer
moved into ``approved/``, ``rejected/`` or ``redo/`` (named ``<stem>.<job id>.*``), the work and
remote folders of their jobs, the cache entries made from their photos, per-user LoRA files
(``{user}`` in ``sdxl.loras``), their lines in ``logs/*.jsonl`` (and rotated files), and their
rows in the ledger.

Erasing the ledger keeps exactly-once and statistics coherent with a **tombstone**: their jobs keep
kind, state and dates, under ``erased-<hash>`` where the hash is of the name with a random salt
that is thrown away (the tombstone cannot be linked back to a guessed name); every other field that
held their data is cleared, and rows of other tables keyed by their name or job ids are deleted.
Deleted content is really gone: ``PRAGMA secure_delete``, a ``VACUUM`` and the WAL checkpointed
and truncated (after a bounded wait for readers, reported when it could not).

Every file of the shared tree is reached through :mod:`astrowatch.storage.safefs`: no link is
followed, so nothing of anyone else is read, exported or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrowatch.core.jobs import Decision, EventType
from astrowatch.storage import safefs
from astrowatch.storage.layout import Layout, check_user_name

LOG_MAX_BYTES = 1 << 30  # a JSON-lines log read whole to be rewritten
FILE_MAX_BYTES = 1 << 31  # a file put into an export
_LEDGER_TABLES = ("jobs", "history", "seen", "meta", "erasures")
ERASURES = """CREATE TABLE IF NOT EXISTS erasures (
    user_hash TEXT NOT NULL, erased_at REAL NOT NULL, jobs INTEGER NOT NULL, first_job_at REAL, last_job_at REAL)"""


@dataclass
class Found:
    """What is stored about one person (paths absolute, under the data folder unless a LoRA)."""

    user: str
    job_ids: list[str]
    paths: list[Path] = field(default_factory=list)  # folders and files of the data tree
    loras: list[Path] = field(default_factory=list)  # per-user LoRA files (may be outside the tree)
    cache_keys: set[str] = field(default_factory=set)


def tombstone_name(user: str) -> str:
    """``erased-<16 hex>``: the name under a random salt, which is not kept."""
    salt = secrets.token_bytes(16)
    return "erased-" + hashlib.sha256(salt + user.encode("utf-8")).hexdigest()[:16]


# -- finding -------------------------------------------------------------------------------------
def ledger_rows(path: Path, user: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The person's ``jobs`` rows and their ``history`` rows (read-only)."""
    if not path.exists():
        return [], []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    try:
        jobs = [dict(r) for r in conn.execute("SELECT * FROM jobs WHERE user = ? ORDER BY created_at", (user,))]
        history = [dict(r) for r in conn.execute(
            "SELECT * FROM history WHERE job_id IN (SELECT id FROM jobs WHERE user = ?) ORDER BY rowid", (user,))]
    finally:
        conn.close()
    return jobs, history


def walk_files(folder: Path, root: Path, *, depth: int = 8) -> Iterator[Path]:
    """Regular files under ``folder``, never through a link (links themselves are skipped)."""
    for name, st in safefs.listdir(folder, root):
        if stat.S_ISDIR(st.st_mode) and depth > 0:
            yield from walk_files(folder / name, root, depth=depth - 1)
        elif stat.S_ISREG(st.st_mode):
            yield folder / name


def _is_theirs(name: str, job_ids: set[str]) -> bool:
    parts = name.split(".")
    return any(p in job_ids for p in parts[1:])  # <stem>.<job id>.<ext>, <stem>.<job id>.error.txt ...


def find(layout: Layout, user: str, job_ids: list[str], *, loras: Sequence[str] = (),
         data_dir: Path | None = None) -> Found:
    """Every place of the data tree that holds something of ``user``."""
    check_user_name(user)
    root = layout.root
    found = Found(user, list(job_ids))
    ids = set(job_ids)
    for folder in (layout.user_dir(user), layout.inbox_dir(user), layout.archive / user, layout.failed_dir(user),
                   layout.dataset_dir(user)):
        if safefs.lstat_or_none(folder, root=root) is not None:
            found.paths.append(folder)
    for decision in Decision:
        for path in walk_files(root / decision.folder, root):
            if _is_theirs(path.name, ids):
                found.paths.append(path)
    for path in walk_files(layout.failed / "_review", root):
        if _is_theirs(path.name, ids):
            found.paths.append(path)
    for job_id in job_ids:
        for folder in (layout.work_dir(job_id), layout.remote_dir(job_id)):
            if safefs.lstat_or_none(folder, root=root) is not None:
                found.paths.append(folder)
    # cache entries: their keys are in the sidecars kept with the results
    for folder in (layout.inbox_dir(user), layout.archive / user, *(root / d.folder for d in Decision)):
        for path in walk_files(folder, root):
            if path.suffix == ".json" and (folder.parent == layout.inbox or folder.parent == layout.archive
                                           or _is_theirs(path.name, ids)):
                key = _cache_key(path, root)
                if key:
                    found.cache_keys.add(key)
    for key in sorted(found.cache_keys):
        for suffix in (".png", ".json"):
            path = layout.cache / key[:2] / f"{key}{suffix}"
            if safefs.lstat_or_none(path, root=root) is not None:
                found.paths.append(path)
    base = data_dir or root
    for text in loras:
        if "{user}" in text:
            p = Path(text.replace("{user}", user))
            p = p if p.is_absolute() else base / p
            if os.path.lexists(p):
                found.loras.append(p)
    return found


def _cache_key(path: Path, root: Path) -> str | None:
    data = safefs.read_json_or_none(path, root=root)
    key = data.get("cache_key") if isinstance(data, dict) else None
    return key if isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key) else None


def log_files(layout: Layout) -> list[Path]:
    """``logs/*.jsonl`` and their rotated files."""
    out = []
    for name, st in safefs.listdir(layout.logs, layout.root):
        if stat.S_ISREG(st.st_mode) and (name.endswith(".jsonl") or ".jsonl." in name):
            out.append(layout.logs / name)
    return sorted(out)


def _line_is_theirs(raw: bytes, user: str, job_ids: set[str]) -> bool:
    try:
        record = json.loads(raw)
    except ValueError:
        return user.encode("utf-8") in raw  # a torn line: dropped when it names them
    if not isinstance(record, dict):
        return False
    return record.get("user") == user or record.get("job_id") in job_ids or record.get("parent_job") in job_ids


def log_lines(layout: Layout, user: str, job_ids: list[str]) -> dict[str, list[Any]]:
    """Their records of every JSON-lines log, by log file name (for an export)."""
    ids = set(job_ids)
    out: dict[str, list[Any]] = {}
    for path in log_files(layout):
        try:
            data = safefs.read_bytes(path, root=layout.root, max_bytes=LOG_MAX_BYTES, what="log").data
        except safefs.Unreadable:
            continue
        mine = [json.loads(raw) for raw in data.splitlines(keepends=True)
                if raw.strip() and _line_is_theirs(raw, user, ids) and _json_ok(raw)]
        if mine:
            out[path.name] = mine
    return out


def _json_ok(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


# -- erasing -------------------------------------------------------------------------------------
def rewrite_log(path: Path, root: Path, user: str, job_ids: set[str]) -> int:
    """``path`` without the person's lines, replaced atomically; lines appended by the daemon while
    it was rewritten are carried over (filtered too).  Returns the number of lines dropped."""
    with safefs.open_file(path, root=root, max_bytes=LOG_MAX_BYTES, what="log") as (fh, _st):
        data = fh.read(LOG_MAX_BYTES + 1)
        lines = data.splitlines(keepends=True)
        keep = [ln for ln in lines if not _line_is_theirs(ln, user, job_ids)]
        dropped = len(lines) - len(keep)
        if not dropped:
            return 0
        safefs.write_bytes(path, b"".join(keep), root=root)
        time.sleep(0.05)  # an append that opened the old file just before the rename lands in it
        late = fh.read().splitlines(keepends=True)
    late_keep = [ln for ln in late if not _line_is_theirs(ln, user, job_ids)]
    if late_keep:
        with safefs.append_file(path, root=root) as out:
            out.write(b"".join(late_keep))
    return dropped + len(late) - len(late_keep)


@dataclass
class LedgerErasure:
    tombstone: str
    jobs: int
    rows_deleted: dict[str, int]
    wal_truncated: bool
    waited_s: float


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def _person_tables(conn: sqlite3.Connection) -> list[tuple[str, set[str]]]:
    """Every table beyond the job ledger's own that can hold a person's rows (a ``user`` or
    ``job_id`` column: chart seeds, webhook events, later tables alike), with its columns.
    :func:`erase_ledger` deletes from these and :func:`ledger_other_rows` exports them, so erasure
    and export cover the same places by construction."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                         " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    out = []
    for table in tables:
        cols = _columns(conn, table)
        if table not in _LEDGER_TABLES and ("user" in cols or "job_id" in cols):
            out.append((table, cols))
    return out


def ledger_other_rows(path: Path, user: str) -> dict[str, list[dict[str, Any]]]:
    """The person's rows in every other table (:func:`_person_tables`) and in ``seen`` (read-only)."""
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    prefix = f"Utilisateurs/{user}/"
    gone = "SELECT id FROM jobs WHERE user = ?"
    try:
        out = {"seen": [dict(r) for r in conn.execute(
            f"SELECT * FROM seen WHERE job_id IN ({gone}) OR substr(path, 1, ?) = ?", (user, len(prefix), prefix))]}
        for table, cols in _person_tables(conn):
            where = " OR ".join(([] if "user" not in cols else ["user = ?"])
                                + ([] if "job_id" not in cols else [f"job_id IN ({gone})"]))
            args = (user,) * where.count("?")
            out[table] = [dict(r) for r in conn.execute(f'SELECT * FROM "{table}" WHERE {where}', args)]
    finally:
        conn.close()
    return {table: rows for table, rows in out.items() if rows}


def _announce_cancellations(conn: sqlite3.Connection, user: str, tomb: str) -> None:
    """The ``job.cancelled`` events of the erasure are still sent (the upstream app learns its
    jobs are gone), but name the person only by the hash: no user name, no file name."""
    rows = conn.execute("SELECT seq, payload FROM events WHERE user = ? AND type = ?",
                        (user, EventType.JOB_CANCELLED)).fetchall()
    for seq, payload in rows:
        body = json.loads(payload)
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, dict):
            data.update(user=tomb, source=None, path=None)
        conn.execute("UPDATE events SET user = ?, payload = ? WHERE seq = ?",
                     (tomb, json.dumps(body, ensure_ascii=False, separators=(",", ":")), seq))


def erase_ledger(path: Path, user: str, *, reader_wait: float) -> LedgerErasure:
    """Tombstone the person's jobs, delete their other rows, then ``VACUUM`` and truncate the WAL
    (waiting up to ``reader_wait`` seconds for readers to let go)."""
    tomb = tombstone_name(user)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    deleted: dict[str, int] = {}
    try:
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE user = ?", (user,))]
            span = conn.execute("SELECT MIN(created_at), MAX(updated_at) FROM jobs WHERE user = ?", (user,)).fetchone()
            conn.execute("CREATE TEMP TABLE gone(id TEXT PRIMARY KEY)")
            conn.executemany("INSERT INTO gone(id) VALUES (?)", [(i,) for i in ids])
            prefix = f"Utilisateurs/{user}/"
            deleted["seen"] = conn.execute(
                "DELETE FROM seen WHERE job_id IN (SELECT id FROM gone) OR substr(path, 1, ?) = ?",
                (len(prefix), prefix)).rowcount
            conn.execute("UPDATE history SET note = NULL WHERE job_id IN (SELECT id FROM gone)")
            conn.execute("UPDATE jobs SET user = ?, source = ?, source_sha256 = '', params = '{}', error = NULL,"
                         " decision_data = NULL, result = NULL WHERE user = ?", (tomb, tomb, user))
            tables = _person_tables(conn)
            if any(table == "events" for table, _cols in tables):
                _announce_cancellations(conn, user, tomb)
            for table, cols in tables:
                n = 0
                if "user" in cols:
                    n += conn.execute(f'DELETE FROM "{table}" WHERE user = ?', (user,)).rowcount
                if "job_id" in cols and table != "events":  # their cancellation events stay, under the hash
                    n += conn.execute(f'DELETE FROM "{table}" WHERE job_id IN (SELECT id FROM gone)').rowcount
                if n:
                    deleted[table] = n
            conn.execute(ERASURES)
            conn.execute("INSERT INTO erasures(user_hash, erased_at, jobs, first_job_at, last_job_at)"
                         " VALUES (?,?,?,?,?)", (tomb, time.time(), len(ids), span[0], span[1]))
            conn.execute("DROP TABLE gone")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        t0 = time.monotonic()
        conn.execute("VACUUM")
        truncated = False
        while True:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                truncated = True
                break
            if time.monotonic() - t0 >= reader_wait:
                break
            time.sleep(0.1)
        waited = time.monotonic() - t0
    finally:
        conn.close()
    return LedgerErasure(tomb, len(ids), deleted, truncated, round(waited, 2))


def remove(found: Found, layout: Layout, *, keep_loras: bool = False) -> list[str]:
    """Remove every path of ``found`` (and the LoRA files unless ``keep_loras``); returns what was
    removed (relative to the data folder; a LoRA as its path)."""
    removed = []
    for path in found.paths:
        if safefs.remove_tree(path, root=layout.root):
            removed.append(layout.rel(path))
    if not keep_loras:
        for lora in found.loras:
            try:
                os.unlink(lora)
                removed.append(str(lora))
            except FileNotFoundError:
                continue
    return removed
