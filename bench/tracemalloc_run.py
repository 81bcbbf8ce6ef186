"""Run ``python -m <module> ...`` with tracemalloc on; take a snapshot whenever asked.

    python bench/tracemalloc_run.py OUT_PREFIX PYTHON -m astrowatch run --config ...

Used as a :class:`harness.DaemonProcess` prefix (``bench/scale.py --soak N --tracemalloc``): the
``PYTHON`` argument (the harness's own interpreter) is skipped.  Writing a label into
``OUT_PREFIX.req`` makes a thread here dump ``OUT_PREFIX-<label>.snap`` (``tracemalloc.Snapshot``,
10 frames) and remove the request; compare two with :func:`top_growth`.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def _serve(prefix: str) -> None:
    req = Path(prefix + ".req")
    while True:
        time.sleep(0.2)
        try:
            label = req.read_text().strip()
        except FileNotFoundError:
            continue
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        snap.dump(f"{prefix}-{label}.snap")
        os.unlink(req)


def top_growth(before: str, after: str, limit: int = 15, frames: int = 6) -> list[str]:
    """The allocation sites (``frames`` deep) that grew most between two snapshots."""
    a, b = tracemalloc.Snapshot.load(before), tracemalloc.Snapshot.load(after)
    out = []
    for stat in b.compare_to(a, "traceback")[:limit]:
        out.append(f"{stat.size_diff / 1e3:+.1f} kB ({stat.count_diff:+d} blocks)")
        out += [f"    {line}" for line in stat.traceback.format(limit=frames)]
    return out


def main() -> None:
    prefix, _python, dash_m, module, *rest = sys.argv[1:]
    assert dash_m == "-m", sys.argv
    tracemalloc.start(10)
    threading.Thread(target=_serve, args=(prefix,), daemon=True, name="tracemalloc-snapshots").start()
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
