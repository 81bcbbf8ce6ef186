"""Where does ingest latency go?  The daemon in-process, instrumented, while a separate process drops
the same files as ``bench/ingest.py``.  Evidence for bench/README.md, not part of ``make bench``.

    .venv/bin/python bench/profile_ingest.py [--files 2000] [--seconds 10] [--no-worker] [--cprofile]

Reports, per stage, wall-clock milliseconds: the delay from a file's mtime to the watcher's last
``touch`` of it (event delivery), from the tracker's deadline to ``Ingest.handle`` starting
(main-loop wait), the duration of ``handle`` and its parts (sha256, ledger calls, logging), and
the main loop's tick gaps.  ``--no-worker`` runs without the worker thread (jobs stay queued),
to separate the worker's share; ``--cprofile`` adds the main thread's cProfile top entries.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import ingest


def _writer(data: str, order: list[tuple[str, bytes]], seconds: float, start_at: float, out: Any) -> None:
    step = seconds / len(order)
    mt = {}
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.monotonic()
    for k, (rel, payload) in enumerate(order):
        due = t0 + k * step
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        path = os.path.join(data, "Utilisateurs", rel)
        with open(path, "wb") as fh:
            fh.write(payload)
        mt[os.path.abspath(path)] = os.stat(path).st_mtime_ns / 1e9
    out.put(mt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--stability", type=float, default=2.0)
    ap.add_argument("--no-worker", action="store_true")
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--grouper-delay", type=float, default=None,
                    help="experiment: watchdog InotifyMoveEventGrouper.delay (default 0.5 s)")
    ap.add_argument("--deadline-sleep", action="store_true",
                    help="experiment: main loop sleeps until the tracker's next deadline (max 50 ms)")
    args = common.parse_args(ap, argv, files=40, users=4, seconds=1.0, stability=0.3)
    _experiments(args)

    from astrowatch.intake import ingest as ingest_mod
    from astrowatch.runtime import daemon as daemon_mod
    from astrowatch.runtime.logsetup import setup_logging
    from astrowatch.runtime.settings import load_config
    from astrowatch.storage import ledger as ledger_mod
    from astrowatch.storage import safefs as safefs_mod

    tmp = Path(tempfile.mkdtemp(prefix="aw-prof-ingest-"))
    cfg_path = common.write_bench_config(tmp, watch={"stability_seconds": args.stability})
    data = tmp / "data"
    users = [f"user{u:02d}" for u in range(args.users)]
    for u in users:
        (data / "Utilisateurs" / u).mkdir(parents=True, exist_ok=True)
    order = [(str(rel), payload) for rel, payload in ingest.plan(args.files, users)]

    log_file = open(tmp / "daemon.log", "w")
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    os.dup2(log_file.fileno(), 2)  # the daemon's JSON log goes to a file, as under the harness
    setup_logging("info", "json")
    config = load_config(cfg_path)

    # -- instrumentation --------------------------------------------------------------------------
    lock = threading.Lock()
    last_touch: dict[str, float] = {}  # path -> wall time of the last watcher touch
    handle_start: dict[str, float] = {}
    parts: dict[str, list[float]] = defaultdict(list)
    created: dict[str, float] = {}
    ticks: list[float] = []

    def timed(owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return fn(*a, **k)
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[label].append((time.perf_counter() - t) * 1000)
        setattr(owner, name, wrapper)

    for meth in ("create_job", "seen_put", "seen_get", "jobs_for_source", "transition", "claim_next",
                 "has_pending", "counts"):
        timed(ledger_mod.Ledger, meth, f"ledger.{meth}")
    timed(safefs_mod, "sha256_of", "sha256_of")  # photos are hashed from one descriptor (storage/safefs.py)
    orig_handle = ingest_mod.Ingest.handle

    def handle(self: Any, path: str, expect: Any = None) -> str:
        t = time.time()
        handle_start[path] = t
        p = time.perf_counter()
        try:
            return orig_handle(self, path, expect)
        finally:
            parts["Ingest.handle"].append((time.perf_counter() - p) * 1000)
    ingest_mod.Ingest.handle = handle  # type: ignore[method-assign]

    orig_tick = daemon_mod.Daemon.tick

    def tick(self: Any) -> None:
        ticks.append(time.perf_counter())
        p = time.perf_counter()
        try:
            orig_tick(self)
        finally:
            parts["Daemon.tick"].append((time.perf_counter() - p) * 1000)
    daemon_mod.Daemon.tick = tick  # type: ignore[method-assign]

    d = daemon_mod.Daemon(config)
    if args.deadline_sleep:
        daemon_mod.time = _DeadlineSleep(d.tracker)  # type: ignore[attr-defined]
    orig_touch = d.tracker.touch

    def touch(path: str) -> None:
        with lock:
            last_touch[path] = time.time()
        orig_touch(path)
    d.tracker.touch = touch  # type: ignore[method-assign]
    if args.no_worker:
        d._new_worker = lambda i, dev: _IdleWorker()  # type: ignore[method-assign]

    # -- run --------------------------------------------------------------------------------------
    q: mp.Queue = mp.get_context("fork").Queue()
    start_at = time.time() + 3.0
    proc = mp.get_context("fork").Process(target=_writer, args=(str(data), order, args.seconds, start_at, q))
    proc.start()
    stop_after = 3.0 + args.seconds + args.stability + 3.0
    threading.Timer(stop_after, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    prof = cProfile.Profile(time.perf_counter) if args.cprofile else None
    cpu0 = time.process_time()
    if prof:
        prof.enable()
    d.run()
    if prof:
        prof.disable()
    cpu = time.process_time() - cpu0
    mtimes = q.get(timeout=30)
    proc.join()
    os.dup2(saved_stderr, 2)

    import sqlite3
    conn = sqlite3.connect(data / "state" / "ledger.sqlite3")
    for src, ca in conn.execute("SELECT source, created_at FROM jobs"):
        created[str(data / src)] = ca
    conn.close()

    def stats(xs: list[float]) -> dict[str, float]:
        return {"n": len(xs), "p50": round(common.percentile(xs, 50), 2), "p99": round(common.percentile(xs, 99), 2),
                "max": round(max(xs), 2) if xs else 0, "sum_s": round(sum(xs) / 1000, 3)}

    report: dict[str, Any] = {"files": args.files, "seconds": args.seconds, "worker": not args.no_worker,
                              "process_cpu_seconds": round(cpu, 2)}
    stages: dict[str, list[float]] = defaultdict(list)
    for path, m in mtimes.items():
        if path in last_touch:
            stages["mtime -> last watcher touch"].append((last_touch[path] - m) * 1000)
            if path in handle_start:
                deadline = last_touch[path] + args.stability
                stages["tracker deadline -> handle start"].append((handle_start[path] - deadline) * 1000)
        if path in created:
            stages["total: created_at - (mtime + stability)"].append((created[path] - m - args.stability) * 1000)
    report["stages_ms"] = {k: stats(v) for k, v in stages.items()}
    report["calls_ms"] = {k: stats(v) for k, v in sorted(parts.items())}
    gaps = [(b - a) * 1000 for a, b in zip(ticks, ticks[1:], strict=False)]
    report["tick_gap_ms"] = stats(gaps)
    report["experiments"] = {"grouper_delay": args.grouper_delay, "moves": "link+unlink (safefs.move_out)",
                             "deadline_sleep": args.deadline_sleep}
    label = "-".join(x for x in (
        f"grouper{args.grouper_delay:g}" if args.grouper_delay is not None else "",
"deadline" if args.deadline_sleep else "",
        "noworker" if args.no_worker else "") if x) or "as-is"
    report["command"] = "bench/profile_ingest.py " + " ".join(argv if argv is not None else sys.argv[1:])
    common.save(f"profile_ingest-{label}", report)
    print(json.dumps(report, indent=2))
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(s.getvalue())
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _experiments(args: Any) -> None:
    """Candidate fixes, applied by monkeypatching this process only (the daemon code is unchanged)."""
    if args.grouper_delay is not None:
        from watchdog.observers import inotify_move_event_grouper as grouper

        grouper.InotifyMoveEventGrouper.delay = args.grouper_delay


class _DeadlineSleep:
    """``time`` for the daemon module whose ``sleep`` stops at the tracker's next deadline."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        nd = self.tracker.next_deadline()
        if nd is not None:
            seconds = min(seconds, max(0.0, nd - time.monotonic()))
        time.sleep(seconds)


class _IdleWorker(threading.Thread):
    """Stands in for the worker thread (jobs stay queued): isolates the main thread's own cost."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.current = None
        self.closing = False
        self.stats: dict[str, Any] = {}
        self._stop_evt = threading.Event()

        class _Pool:
            device = None

            @staticmethod
            def describe() -> dict[str, Any]:
                return {}
        self.pool = _Pool()

    def preload(self) -> None:
        pass

    def wake(self) -> None:
        self._stop_evt.set()

    def reload(self, *a: Any) -> None:
        pass

    def run(self) -> None:
        while not self._stop_evt.wait(0.5):
            pass


if __name__ == "__main__":
    raise SystemExit(main())
