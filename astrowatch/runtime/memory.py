"""Giving freed memory back to the system once the daemon goes idle.

glibc's allocator keeps what Python, Pillow and SQLite free in its heaps (the main heap and one
arena per thread) for later use, and gives back only what lies at a heap's top: after a burst of
work the freed pages stay resident although nothing uses them, and the daemon's RSS steps up
with each burst's high-water mark and never comes down.  ``malloc_trim(0)`` returns every free
page of every arena to the kernel.

The daemon's ``memory`` chore calls :meth:`Trimmer.tick` every second: it trims once when the
daemon goes idle after a stretch of work (never while a job runs: a trim walks every arena under
its lock, a few milliseconds for this process), and does nothing while the daemon stays idle.  On a
C library without ``malloc_trim`` (musl, macOS) it does nothing at all.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import cast


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return cast("Callable[[int], int]", trim)


class Trimmer:
    """Trims once per stretch of work: :meth:`tick` at every turn of the chore, with whether the
    daemon is idle now."""

    def __init__(self, trim: Callable[[int], int] | None = None) -> None:
        self._trim = trim if trim is not None else _malloc_trim()
        self._worked = False  # a job ran or a file waited since the last trim
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def tick(self, idle: bool) -> bool:
        """Note work while busy; once idle after work, trim.  True when it trimmed."""
        if not idle:
            self._worked = True
            return False
        if not self._worked or self._trim is None:
            return False
        self._worked = False
        self._trim(0)
        self.trims += 1
        return True
