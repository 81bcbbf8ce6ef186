"""Run ``python -m <module> ...`` under cProfile in every thread; write the merged stats on exit.

    python bench/cprofile_run.py OUT.pstats PYTHON -m astrowatch run --config ...

Used as a :class:`harness.DaemonProcess` prefix (``bench/celery_scale.py --profile``): the daemon
is started as usual behind it (the ``PYTHON`` argument, the harness's own interpreter, is
skipped).  Threads started after this point each get their own profiler (``threading.setprofile``
enables one at the thread's first event), timed by the thread's own CPU clock (``time.thread_time``:
CPU seconds, not time spent waiting); at exit (a clean SIGTERM included) they are merged.
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import runpy
import sys
import threading
import time
from typing import Any

profiles: list[cProfile.Profile] = []


def _thread_hook(*_: Any) -> None:
    prof = cProfile.Profile(time.thread_time)
    profiles.append(prof)
    prof.enable()  # replaces this hook for the calling thread


def _dump(out: str) -> None:
    for prof in profiles:
        prof.disable()
    stats = pstats.Stats(profiles[0])
    for prof in profiles[1:]:
        try:
            stats.add(prof)
        except TypeError:  # a thread that never ran any Python
            continue
    stats.dump_stats(out)


def main() -> None:
    out, _python, dash_m, module, *rest = sys.argv[1:]
    assert dash_m == "-m", sys.argv
    main_prof = cProfile.Profile(time.thread_time)
    profiles.append(main_prof)
    threading.setprofile(_thread_hook)
    atexit.register(_dump, out)
    sys.argv = [module, *rest]
    main_prof.enable()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
