"""Where does the idle CPU go?  The daemon in-process over the ledgered 10,000-file folder, its CPU
(``/proc/self/stat``) measured over a window, as is and with a candidate fix.  Evidence for
bench/README.md, not part of ``make bench``.

    .venv/bin/python bench/profile_idle.py [--seconds 30] [--idle-sleep 0.5]

``--idle-sleep S`` (experiment, monkeypatched in this process only): while the stability tracker is
empty the main loop sleeps S seconds instead of ``TICK`` (50 ms); with files pending it sleeps until
the tracker's next deadline.  (A real fix would wait on an Event set by ``touch``, the folder-scan
queue and the signal handlers, so nothing waits the extra time.)  Also prints the cost of the
pieces the loop repeats: ``ledger.counts``, ``write_state``, a bare ``tick``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


class _IdleSleep:
    def __init__(self, tracker: Any, dirs: Any, idle: float) -> None:
        self.tracker, self.dirs, self.idle = tracker, dirs, idle

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        nd = self.tracker.next_deadline()
        if nd is None and not self.dirs():
            seconds = self.idle
        elif nd is not None:
            seconds = min(seconds, max(0.0, nd - time.monotonic()))
        time.sleep(seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--idle-sleep", type=float, default=None)
    args = common.parse_args(ap, argv, seconds=1.0, files=200, users=10)

    tmp = Path(tempfile.mkdtemp(prefix="aw-prof-idle-"))
    prep = common.prepare_ledgered(tmp, args.files, args.users)
    from astrowatch.runtime import daemon as daemon_mod
    from astrowatch.runtime.settings import load_config

    config = load_config(prep["config"])
    d = daemon_mod.Daemon(config)
    if args.idle_sleep is not None:
        daemon_mod.time = _IdleSleep(d.tracker, lambda: d._dirs_to_scan, args.idle_sleep)  # type: ignore[attr-defined]

    window: dict[str, float] = {}

    def measure() -> None:
        time.sleep(5.0)  # settle after start-up
        window["cpu0"], window["t0"] = common.cpu_seconds(os.getpid()), time.monotonic()
        time.sleep(args.seconds)
        window["cpu1"], window["t1"] = common.cpu_seconds(os.getpid()), time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=measure, daemon=True).start()
    d.run()
    pct = (window["cpu1"] - window["cpu0"]) / (window["t1"] - window["t0"]) * 100

    def per_call_ms(fn: Any, n: int) -> float:
        c = time.process_time()
        for _ in range(n):
            fn()
        return round((time.process_time() - c) / n * 1000, 4)

    from astrowatch.storage.ledger import Ledger

    ledger = Ledger(d.layout.ledger_path)
    d.ledger = ledger
    report = {"files": prep["files"], "seconds": args.seconds, "idle_sleep": args.idle_sleep,
              "cpu_pct_of_one_core": round(pct, 3),
              "per_call_ms": {"ledger.counts (10,000 jobs)": per_call_ms(ledger.counts, 200),
                              "Daemon.write_state": per_call_ms(lambda: d.write_state(), 200),
                              "tracker.due (empty)": per_call_ms(d.tracker.due, 2000)},
              "command": "bench/profile_idle.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    ledger.close()
    label = f"sleep{args.idle_sleep:g}" if args.idle_sleep is not None else "as-is"
    common.save(f"profile_idle-{label}", report)
    print(json.dumps(report, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
