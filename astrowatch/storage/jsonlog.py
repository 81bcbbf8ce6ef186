"""Append-only JSON Lines logs (``logs/generations.jsonl``, ``logs/reviews.jsonl``).

Each record is written with one ``write`` of a whole line on an ``O_APPEND`` descriptor and
flushed to disk, so a crash leaves at most a torn *last* line, which :func:`read_jsonl` skips.

Logs are rotated by size (``retention.log_max_mb``): ``x.jsonl`` -> ``x.jsonl.1`` -> ... ->
``x.jsonl.<log_keep>``, then removed.  Readers that want the whole history use
:func:`read_jsonl_all` (oldest rotated file first, the current file last).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_lock = threading.Lock()


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
    line = (json.dumps(record, ensure_ascii=False, default=str, sort_keys=False) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # & ~umask, like open()
        try:
            _ensure_line_start(fd, path)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def _ensure_line_start(fd: int, path: Path) -> None:
    """After a crash mid-line, start the next record on a fresh line."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            os.write(fd, b"\n")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield records; skip torn or corrupt lines instead of failing."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for raw in fh:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def rotated_files(path: Path) -> list[Path]:
    """``x.jsonl.N`` ... ``x.jsonl.1``, ``x.jsonl`` that exist: oldest first."""
    numbered = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            numbered.append((int(suffix), p))
    files = [p for _, p in sorted(numbered, reverse=True)]
    return files + ([path] if path.exists() else [])


def read_jsonl_all(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of ``path`` and its rotated files, oldest first."""
    for p in rotated_files(path):
        yield from read_jsonl(p)


def rotate(path: Path, keep: int) -> bool:
    """Rename ``x.jsonl`` to ``x.jsonl.1`` (shifting older ones, removing beyond ``keep``).
    Appends from this process wait on the lock; an append from elsewhere that opened the file just
    before lands in ``x.jsonl.1``, whole.  False if there was nothing to rotate."""
    with _lock:
        if not path.exists():
            return False
        for p in rotated_files(path)[:-1]:
            n = int(p.name.rsplit(".", 1)[1])
            if n >= keep:
                p.unlink(missing_ok=True)
            else:
                os.replace(p, p.with_name(f"{path.name}.{n + 1}"))
        os.replace(path, path.with_name(f"{path.name}.1"))
    return True
