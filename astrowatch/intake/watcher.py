"""Seeing files: the watchdog observer, the stability tracker and the folder scanner.

The observer's handler only records paths (inside try/except: an exception would kill
watchdog's dispatch thread).  A path is handed on only when it has been quiet for
``watch.stability_seconds`` and a fresh ``lstat`` equals the one taken at its last event
(paperless-ngx's FileStabilityTracker rule).  Because inotify drops events on overflow and
sees nothing on network shares, the folders are also scanned at start-up and every
``watch.rescan_seconds``; the ledger makes a second sighting harmless.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from astrowatch.intake.poller import LightPoller
from astrowatch.storage.layout import DECISION_FOLDERS, IGNORED_DIRS, Layout, is_ignored_name

log = structlog.get_logger("astrowatch.watcher")

StatKey = tuple[int, int, int, int, int]  # (mode type, size, mtime_ns, device, inode)


def stat_key(path: str) -> StatKey | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)


class Stable(NamedTuple):
    """A path that stayed quiet, when it became stable, and the ``(st_dev, st_ino)`` the check saw:
    ingest opens the file expecting that identity, so a file swapped in after the check is refused."""

    path: str
    stable_at: float
    identity: tuple[int, int]


class StabilityTracker:
    """Paths waiting for their quiet period.  ``touch`` from any thread; ``due`` from one."""

    def __init__(self, quiet_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, StatKey | None, float]] = {}  # path -> (deadline, key, first seen)

    def touch(self, path: str, delay: float = 0.0) -> None:
        """(Re)start ``path``'s quiet period; ``delay``: at least that long (a retry)."""
        now = self.clock()
        key = stat_key(path)
        with self._lock:
            first = self._pending.get(path, (0.0, None, now))[2]
            self._pending[path] = (now + max(self.quiet, delay), key, first)

    def due(self) -> list[tuple[str, float]]:
        """Paths that stayed unchanged for the quiet period, with the time they became stable."""
        return [(s.path, s.stable_at) for s in self.stable()]

    def stable(self, limit: int | None = None) -> list[Stable]:
        """:meth:`due` with the identity each stability check saw (hand it to ``Ingest.handle``);
        at most ``limit`` of them (the first touched first): the rest stay due for the next call."""
        now = self.clock()
        ready: list[tuple[str, tuple[float, StatKey | None, float]]] = []
        with self._lock:
            for p, v in self._pending.items():
                if v[0] <= now:
                    ready.append((p, v))
                    if limit is not None and len(ready) >= limit:
                        break
        stable: list[Stable] = []
        for path, (deadline, key, first) in ready:
            current = stat_key(path)
            with self._lock:
                if self._pending.get(path, (None,))[0] != deadline:
                    continue  # touched again meanwhile
                if current is None:
                    del self._pending[path]  # gone (moved away, deleted)
                elif current == key:
                    del self._pending[path]
                    stable.append(Stable(path, deadline, (current[3], current[4])))
                else:
                    self._pending[path] = (now + self.quiet, current, first)
        return stable

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def next_deadline(self) -> float | None:
        with self._lock:
            return min((v[0] for v in self._pending.values()), default=None)


# What :class:`_Handler` acts on, asked of the kernel (the inotify mask): opens, closes after a read
# and deletes -- the daemon's own reads of every dropped file, its moves out -- are never queued at
# all.  They were ~110 events per job through watchdog's thread (``bench/celery_scale.py --profile``).
EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, FileMovedEvent,
                                       DirMovedEvent, FileClosedEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, on_file: Callable[[str], None], on_dir: Callable[[str], None]) -> None:
        self.on_file = on_file
        self.on_dir = on_dir

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type in ("opened", "closed_no_write", "deleted"):
                return
            path = event.dest_path if event.event_type == "moved" else event.src_path
            path = os.fsdecode(path)
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    self.on_dir(path)
            else:
                self.on_file(path)
        except Exception:
            log.exception("watch handler error", event=repr(event))


class Watcher:
    """Owns the observer; restarts it when it dies (``supervise``)."""

    def __init__(self, layout: Layout, *, polling: bool, polling_interval: float,
                 on_file: Callable[[str], None], on_dir: Callable[[str], None]) -> None:
        self.layout = layout
        self.polling = polling
        self.polling_interval = polling_interval
        self.handler = _Handler(on_file, on_dir)
        self.observer: BaseObserver | LightPoller | None = None
        self.restarts = 0

    def roots(self) -> list[Path]:
        return [self.layout.users, *(self.layout.root / d for d in DECISION_FOLDERS)]

    def start(self) -> None:
        try:
            self._start(self.polling)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or self.polling:
                raise
            log.error("inotify watch limit reached; falling back to polling",
                      fix="sudo sysctl fs.inotify.max_user_watches=524288 (and max_user_instances)")
            self.polling = True
            self._start(True)

    def _start(self, polling: bool) -> None:
        for root in self.roots():
            root.mkdir(parents=True, exist_ok=True)
        observer: BaseObserver | LightPoller
        if polling:  # our own light poller: watchdog's stats every file at every poll
            observer = LightPoller([str(r) for r in self.roots()], self.polling_interval,
                                   on_file=self.handler.on_file, on_dir=self.handler.on_dir)
        else:
            observer = Observer()
            for root in self.roots():
                observer.schedule(self.handler, str(root), recursive=True, event_filter=EVENTS)
            observer.daemon = True
        observer.start()
        self.observer = observer
        log.info("watching", mode="polling" if polling else "inotify", roots=[str(r) for r in self.roots()])

    def alive(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def supervise(self) -> bool:
        """Restart a dead observer.  Returns True if it was restarted (then rescan everything)."""
        if self.alive():
            return False
        log.error("observer thread died; restarting it", restarts=self.restarts + 1)
        self.stop()
        self.restarts += 1
        try:
            self.start()
        except OSError as exc:
            log.error("observer restart failed; retrying later", error=str(exc))
            return False
        return True

    def stop(self) -> None:
        observer, self.observer = self.observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception:
            log.exception("observer stop failed")


def scan(layout: Layout, only: Path | None = None) -> Iterator[str]:
    """Every candidate file: ``Utilisateurs/<user>/<file>`` and anything under the decision
    folders.  Symlinks are reported (so they get a failed entry) but never followed."""
    roots = [only] if only is not None else [layout.users, *(layout.root / d for d in DECISION_FOLDERS)]
    for root in roots:
        yield from _walk(str(root), depth=0, max_depth=_max_depth(layout, Path(root)))


def _max_depth(layout: Layout, root: Path) -> int:
    if root == layout.users:
        return 1  # Utilisateurs/<user>/<file>
    if root.parent == layout.users:
        return 0
    return 32  # reviewers may use subfolders in approved/ etc.


def _walk(folder: str, depth: int, max_depth: int) -> Iterator[str]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if depth < max_depth and entry.name not in IGNORED_DIRS and not entry.name.startswith("."):
                yield from _walk(entry.path, depth + 1, max_depth)
            continue
        if depth == 0 and max_depth == 1:
            if entry.is_symlink():
                yield entry.path  # a symlinked user folder: ingest refuses it visibly
            continue  # a file directly in Utilisateurs/: not in a user folder
        if not is_ignored_name(entry.name):
            yield entry.path
