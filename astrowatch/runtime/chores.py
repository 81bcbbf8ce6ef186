"""The daemon's periodic chores: each with its name, how often it runs and when it may, run by one
small loop from the main thread.  A chore that raises is reported (``guard``) and the others still
run; it runs again at its next turn."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Every = Callable[[], float | None]


@dataclass
class Chore:
    """``run`` every ``every()`` seconds (0: at every tick; None: not at all, e.g. switched off in
    the config), only while ``when()`` holds.  ``run`` may return a number of seconds: its next
    turn then comes that soon instead (a backlog taken in batches)."""

    name: str
    run: Callable[[], float | None]
    every: Every = lambda: 0.0
    when: Callable[[], bool] = lambda: True
    last: float = -float("inf")  # monotonic time of the last run

    def due(self, now: float) -> bool:
        every = self.every()
        return every is not None and now - self.last >= every and self.when()


class Chores:
    def __init__(self, chores: Iterable[Chore], guard: Callable[[str, Callable[[], Any]], Any]) -> None:
        self.chores = list(chores)
        self.guard = guard  # runs a chore, reporting what it raises (never raises itself)

    def __getitem__(self, name: str) -> Chore:
        return next(c for c in self.chores if c.name == name)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for chore in self.chores:
            if chore.due(now):
                chore.last = now
                sooner = self.guard(chore.name, chore.run)
                if isinstance(sooner, float):
                    every = chore.every() or 0.0
                    chore.last = now - every + sooner
