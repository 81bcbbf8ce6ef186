"""A light polling observer for mounts where inotify sees nothing (NFS, SMB, Docker Desktop).

watchdog's ``PollingObserver`` stats every file of the tree at every poll: with 10,000 files
every 2 s that is ~4 % of a core, forever.  A drop folder changes in a narrower way: files
appear, disappear or are renamed — which changes their *directory's* mtime — and only theme
JSONs are rewritten in place.  So each poll stats the known directories, lists again only
those whose (mtime, size, nlink) changed or that changed recently (coarse timestamps), and
stats the ``theme_*.json`` files.  Anything else a poll could miss is caught by the periodic
rescan (``watch.rescan_seconds``).

It behaves like a watchdog observer for :class:`astrowatch.intake.watcher.Watcher`: a daemon thread
with ``start``/``stop``/``join``/``is_alive``; an ``OSError`` ends the thread (the share was
dropped) and the supervisor restarts it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import structlog

from astrowatch.storage.layout import IGNORED_DIRS

log = structlog.get_logger("astrowatch.poller")
DirKey = tuple[int, int, int]


def _dir_key(st: os.stat_result) -> DirKey:
    return (st.st_mtime_ns, st.st_size, st.st_nlink)


class LightPoller(threading.Thread):
    def __init__(self, roots: list[str], interval: float, on_file: Callable[[str], None],
                 on_dir: Callable[[str], None]) -> None:
        super().__init__(name="astrowatch-poller", daemon=True)
        self.roots = roots
        self.interval = interval
        self.on_file = on_file
        self.on_dir = on_dir
        self._stop_event = threading.Event()
        self._dirs: dict[str, DirKey] = {}  # directory -> key at its last listing
        self._entries: dict[str, dict[str, int]] = {}  # directory -> {name: inode} at its last listing
        self._themes: dict[str, tuple[int, int]] = {}  # theme json -> (size, mtime_ns)

    def stop(self) -> None:
        self._stop_event.set()

    def start(self) -> None:
        """Learn the tree before returning (not reported: the start-up scan does that), so every
        change made after ``start()`` is seen."""
        for root in self.roots:
            self._list(root, report=False)
        super().start()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.poll()
            except OSError as exc:
                log.error("polling failed (share gone?); the observer will be restarted", error=str(exc))
                return

    def poll(self) -> None:
        recent = time.time_ns() - int(2 * max(self.interval, 1.0) * 1e9)
        for folder, key in list(self._dirs.items()):
            try:
                st = os.stat(folder)
            except FileNotFoundError:
                self._forget(folder)
                continue
            if _dir_key(st) != key or st.st_mtime_ns >= recent:
                self._list(folder, report=True)
        for root in self.roots:
            if root not in self._dirs:
                self._list(root, report=True)
        self._check_themes()

    def _list(self, folder: str, *, report: bool) -> None:
        try:
            st = os.stat(folder)
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            self._forget(folder)
            return
        before = self._entries.get(folder, {})
        names: dict[str, int] = {}
        for entry in entries:
            names[entry.name] = entry.inode()  # free from scandir: a replaced file has a new inode
            if entry.is_dir(follow_symlinks=False):
                if entry.name in IGNORED_DIRS or entry.name.startswith("."):
                    continue
                if entry.path not in self._dirs:
                    if report:
                        self.on_dir(entry.path)
                    self._list(entry.path, report=report)
            else:
                if entry.name.startswith("theme_") and entry.name.endswith(".json"):
                    self._themes.setdefault(entry.path, (-1, -1))
                if report and before.get(entry.name) != names[entry.name]:
                    self.on_file(entry.path)
        self._dirs[folder] = _dir_key(st)
        self._entries[folder] = names

    def _check_themes(self) -> None:
        for path, old in list(self._themes.items()):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                del self._themes[path]
                continue
            new = (st.st_size, st.st_mtime_ns)
            if new != old:
                if old != (-1, -1):
                    self.on_file(path)
                self._themes[path] = new

    def _forget(self, folder: str) -> None:
        prefix = folder.rstrip(os.sep) + os.sep
        for known in [d for d in self._dirs if d == folder or d.startswith(prefix)]:
            self._dirs.pop(known, None)
            self._entries.pop(known, None)
