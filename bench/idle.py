"""Idle cost: the daemon watching 10,000 already-ledgered files in 200 user folders.

    .venv/bin/python bench/idle.py [--files 10000] [--users 200] [--seconds 60] [--modes inotify,polling]

The data folder is prepared once (``common.prepare_ledgered``: the daemon's own ``Ingest.handle``
puts every file in the ledger, then the jobs are marked ``inbox``), then for each watch mode the
real daemon (``astro/enhance.backend: fake``, so no model; ``rescan_seconds`` left at 300) is
started, left 5 s to settle after READY=1, and measured for ``--seconds``: CPU time = utime + stime
of the process from ``/proc/<pid>/stat`` (all threads), as % of one core; RSS = ``VmRSS`` (and the
peak ``VmHWM``) from ``/proc/<pid>/status``.  Polling uses ``polling_interval: 2`` s; its cost grows
with the number of files (one ``scandir`` + ``stat`` per file per interval).

The periodic rescan (every ``rescan_seconds``) falls outside a 60 s window: it is timed separately
in this process (``Daemon.rescan`` over the same folders) and reported amortised over 300 s.

Targets: CPU < 0.5 % of one core; RSS < 120 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

TARGET_CPU_PCT = 0.5
TARGET_RSS_MB = 120.0


def measure_mode(folder: Path, polling: bool, seconds: float, settle: float = 5.0) -> dict[str, Any]:
    cfg = common.write_bench_config(folder, watch={"polling": polling, "polling_interval": 2.0,
                                                   "rescan_seconds": 300})
    db = folder / "data" / "state" / "ledger.sqlite3"
    jobs_before = _count_jobs(db)
    d = common.BenchDaemon(cfg)
    try:
        d.start()
        ready = d.wait_arrival("READY=1") - d.t_start
        d.pump(settle)
        cpu0, t0 = common.cpu_seconds(d.pid), time.monotonic()
        rss: list[float] = []
        while time.monotonic() - t0 < seconds:
            d.pump(min(5.0, seconds - (time.monotonic() - t0)))
            rss.append(common.memory_mb(d.pid)["VmRSS"])
        cpu1, t1 = common.cpu_seconds(d.pid), time.monotonic()
        mem = common.memory_mb(d.pid)
        d.stop(timeout=30)
    finally:
        d.close()
    cpu_pct = (cpu1 - cpu0) / (t1 - t0) * 100.0
    return {"mode": "polling" if polling else "inotify", "window_seconds": round(t1 - t0, 2),
            "cpu_seconds": round(cpu1 - cpu0, 3), "cpu_pct_of_one_core": round(cpu_pct, 3),
            "rss_mb_end": round(mem["VmRSS"], 1), "rss_mb_max_sampled": round(max(rss), 1),
            "rss_mb_peak_hwm": round(mem["VmHWM"], 1), "threads": int(mem["Threads"]),
            "ready_seconds": round(ready, 3), "new_jobs_during_run": _count_jobs(db) - jobs_before,
            "clock_tick_resolution_pct": round(100.0 / common.CLK_TCK / (t1 - t0), 3),
            "loadavg_at_end": common.loadavg()}


def _count_jobs(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    finally:
        conn.close()


def time_rescan(cfg_path: Path, repeats: int = 3) -> dict[str, Any]:
    """``Daemon.rescan()`` over the ledgered folders, in this process: CPU and wall seconds."""
    from astrowatch.runtime.daemon import Daemon
    from astrowatch.runtime.settings import load_config

    config = load_config(cfg_path)
    d = Daemon(config)  # holds the data folder's lock and its ledger until close()
    cpu, wall, fed = [], [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fed.append(d.rescan())
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    d.close()
    return {"cpu_seconds_median": round(common.median(cpu), 3), "wall_seconds_median": round(common.median(wall), 3),
            "files_fed_to_tracker": fed, "amortised_pct_over_300s": round(common.median(cpu) / 300 * 100, 3)}


def snapshot_cost(data: Path, repeats: int = 5) -> dict[str, Any]:
    """What the polling observer does every interval: a ``DirectorySnapshot`` of each watched root
    (scandir + lstat of every entry) and a diff with the previous one, timed in this process."""
    from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff

    roots = [data / "Utilisateurs", data / "approved", data / "rejected", data / "redo"]
    prev = [DirectorySnapshot(str(r), recursive=True) for r in roots if r.is_dir()]
    n = sum(len(s.paths) for s in prev)
    cpu = []
    for _ in range(repeats):
        c0 = time.process_time()
        snaps = [DirectorySnapshot(str(r), recursive=True) for r in roots if r.is_dir()]
        for a, b in zip(prev, snaps, strict=False):
            DirectorySnapshotDiff(a, b)
        cpu.append(time.process_time() - c0)
        prev = snaps
    med = common.median(cpu)
    return {"entries": n, "cpu_seconds_per_poll_median": round(med, 4),
            "us_per_entry": round(med / max(n, 1) * 1e6, 2),
            "predicted_pct_at_2s": round(med / 2.0 * 100, 2)}


def run(files: int = 10_000, users: int = 200, seconds: float = 60.0,
        modes: tuple[str, ...] = ("inotify", "polling")) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-idle-"))
    try:
        common.log(f"idle: preparing {files} ledgered files in {users} folders")
        prep = common.prepare_ledgered(tmp, files, users)
        results = []
        for mode in modes:
            common.log(f"idle: {mode}, {seconds:g} s window")
            results.append(measure_mode(tmp, polling=(mode == "polling"), seconds=seconds))
        rescan = time_rescan(prep["config"])
        snapshot = snapshot_cost(prep["data"])
        for r in results:
            r["cpu_pass"] = r["cpu_pct_of_one_core"] < TARGET_CPU_PCT
            r["rss_pass"] = r["rss_mb_peak_hwm"] < TARGET_RSS_MB
            r["cpu_pct_incl_amortised_rescan"] = round(r["cpu_pct_of_one_core"] + rescan["amortised_pct_over_300s"], 3)
        return {"params": {"files": prep["files"], "users": users, "themes": users, "images": prep["files"] - users,
                           "seconds": seconds, "polling_interval": 2.0, "rescan_seconds": 300,
                           "backends": "fake/fake (no model)"},
                "prepare": {k: v for k, v in prep.items() if k not in ("config", "data")},
                "modes": results, "rescan": rescan, "polling_snapshot_in_process": snapshot,
                "target": f"CPU < {TARGET_CPU_PCT} % of one core, RSS < {TARGET_RSS_MB:g} MB"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--modes", default="inotify,polling")
    args = common.parse_args(ap, argv, files=200, users=10, seconds=2.0)
    result = run(args.files, args.users, args.seconds, tuple(args.modes.split(",")))
    result["command"] = "bench/idle.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path = common.save("idle", result)
    print(json.dumps({"modes": result["modes"], "rescan": result["rescan"],
                      "polling_snapshot_in_process": result["polling_snapshot_in_process"]}, indent=2))
    common.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
