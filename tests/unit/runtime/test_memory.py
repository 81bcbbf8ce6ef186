"""The idle trim: once per stretch of work, never while busy, and a real ``malloc_trim`` here."""

from __future__ import annotations

import platform

import pytest

from astrowatch.runtime.memory import Trimmer


def test_it_trims_once_when_the_daemon_goes_idle_after_work():
    calls: list[int] = []
    trimmer = Trimmer(lambda pad: calls.append(pad) or 1)
    assert trimmer.tick(idle=True) is False  # idle from the start: nothing to give back
    assert [trimmer.tick(idle=False) for _ in range(3)] == [False] * 3  # never while busy
    assert calls == []
    assert trimmer.tick(idle=True) is True and calls == [0]
    assert trimmer.tick(idle=True) is False and calls == [0]  # still idle: once per stretch
    trimmer.tick(idle=False)
    assert trimmer.tick(idle=True) is True and trimmer.trims == 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_malloc_trim_is_found_and_runs():
    trimmer = Trimmer()
    assert trimmer.available
    trimmer.tick(idle=False)
    assert trimmer.tick(idle=True) is True
