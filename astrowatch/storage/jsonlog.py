"""Append-only JSON Lines logs (``logs/generations.jsonl``, ``logs/reviews.jsonl``).

Each record is written with one ``write`` of a whole line on an ``O_APPEND`` descriptor and
flushed to disk, so a crash leaves at most a torn *last* line, which :func:`read_jsonl` skips.

``logs/`` is shared with the service's group, so every open goes through
:mod:`astrowatch.storage.safefs` relative to the data root (``root=``): a symlink, FIFO or folder
squatting a log's name is moved aside before an append (never followed), and a read refuses it
(no records) instead of following or blocking.  Reads are bounded: a log over
:data:`READ_MAX_BYTES` is not read (retention rotates long before), a line over
:data:`LINE_MAX_BYTES` is skipped.  ``root`` defaults to the log's own folder (tools and tests
that write a log anywhere); the daemon always passes its data root.

Logs are rotated by size (``retention.log_max_mb``): ``x.jsonl`` -> ``x.jsonl.1`` -> ... ->
``x.jsonl.<log_keep>``, then removed.  Readers that want the whole history use
:func:`read_jsonl_all` (oldest rotated file first, the current file last).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import structlog

from astrowatch.storage import safefs
from astrowatch.storage.layout import display

log = structlog.get_logger("astrowatch.jsonlog")
_lock = threading.Lock()

READ_MAX_BYTES = 1 << 30  # a log this big is refused for reading (retention.log_max_mb rotates at 100 MB)
LINE_MAX_BYTES = 1 << 20  # a record longer than this is skipped, never held whole


def _root(path: Path, root: Path | None) -> Path:
    return Path(root).resolve() if root is not None else Path(os.path.abspath(path)).parent


def append_jsonl(path: Path, record: dict[str, Any], *, root: Path | None = None) -> None:
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
    line = (json.dumps(record, ensure_ascii=False, default=str, sort_keys=False) + "\n").encode("utf-8")
    path = Path(os.path.abspath(path))
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)  # a log anywhere (tools, tests): its folder is the root
    with _lock, safefs.append_file(path, root=_root(path, root)) as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")  # after a crash mid-line, start the next record on a fresh line
        os.write(fd, line)
        os.fsync(fd)


def _lines(fh: IO[bytes]) -> Iterator[bytes]:
    """Lines of at most :data:`LINE_MAX_BYTES`; longer ones are read past in bounded chunks."""
    while True:
        raw = fh.readline(LINE_MAX_BYTES + 1)
        if not raw:
            return
        if len(raw) > LINE_MAX_BYTES and not raw.endswith(b"\n"):
            while (rest := fh.readline(LINE_MAX_BYTES)) and not rest.endswith(b"\n"):
                pass
            continue
        yield raw


def read_jsonl(path: Path, *, root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Yield records; skip torn, corrupt or overlong lines instead of failing.  A log that is
    missing yields nothing; one that is refused (symlink, FIFO, too big) yields nothing and is
    logged with the reason."""
    path = Path(os.path.abspath(path))
    try:
        with safefs.open_file(path, root=_root(path, root), max_bytes=READ_MAX_BYTES, what="log file") as (fh, _st):
            for raw in _lines(fh):
                try:
                    record = safefs.loads_bounded(raw.decode("utf-8"))
                except ValueError:  # UnicodeDecodeError included
                    continue
                if isinstance(record, dict):
                    yield record
    except safefs.Unreadable as exc:
        if not exc.gone:
            log.warning("log file not read", path=display(path), reason=str(exc))


def rotated_files(path: Path, *, root: Path | None = None) -> list[Path]:
    """``x.jsonl.N`` ... ``x.jsonl.1``, ``x.jsonl`` that exist as regular files: oldest first."""
    path = Path(os.path.abspath(path))
    numbered, current = [], False
    for name, st in safefs.listdir(path.parent, _root(path, root)):
        if not stat.S_ISREG(st.st_mode):
            continue
        suffix = name[len(path.name) + 1:] if name.startswith(path.name + ".") else ""
        if suffix.isdigit():
            numbered.append((int(suffix), path.parent / name))
        current = current or name == path.name
    files = [p for _, p in sorted(numbered, reverse=True)]
    return files + ([path] if current else [])


def read_jsonl_all(path: Path, *, root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Every record of ``path`` and its rotated files, oldest first."""
    for p in rotated_files(path, root=root):
        yield from read_jsonl(p, root=root)


def rotate(path: Path, keep: int, *, root: Path | None = None) -> bool:
    """Rename ``x.jsonl`` to ``x.jsonl.1`` (shifting older ones, removing beyond ``keep``).
    Appends from this process wait on the lock; an append from elsewhere that opened the file just
    before lands in ``x.jsonl.1``, whole.  False if there was nothing to rotate.  Every rename and
    unlink is relative to the log folder's descriptor (a symlinked ``logs/`` is refused)."""
    path = Path(os.path.abspath(path))
    with _lock:
        try:
            with safefs.open_dir(path.parent, _root(path, root)) as dfd:
                try:
                    st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    return False
                if not stat.S_ISREG(st.st_mode):
                    return False
                for p in rotated_files(path, root=root)[:-1]:
                    n = int(p.name.rsplit(".", 1)[1])
                    if n >= keep:
                        os.unlink(p.name, dir_fd=dfd)
                    else:
                        os.rename(p.name, f"{path.name}.{n + 1}", src_dir_fd=dfd, dst_dir_fd=dfd)
                os.rename(path.name, f"{path.name}.1", src_dir_fd=dfd, dst_dir_fd=dfd)
        except safefs.Unreadable:
            return False
    return True
