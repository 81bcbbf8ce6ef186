"""executor: celery — throughput with 1, 2, 4 CPU workers, and the coordinator's cost per job.

    .venv/bin/python bench/celery_scale.py [--workers 1,2,4] [--jobs-per-worker 8] [--delay 1.0]

Each run: a fresh redis-server on a loopback port (no persistence), N real ``astrowatch worker``
processes (the ``fake`` backend, ``fake.delay_seconds`` = 1 s per job, each from its own folder),
the real coordinator (``astrowatch run``, ``executor: celery``, ``max_in_flight`` = 2 N) and
``jobs-per-worker`` × N themes dropped at once.  Measured:

* throughput = jobs / (last ``publishing -> inbox`` − first job created), from the ledger; the
  scaling efficiency is throughput / (N × 1 job/s), so 1.0 = every worker busy all the time;
* ``--workers 0`` is the baseline: ``executor: local``, the same fake backend in the daemon's own
  worker thread, so the daemon's per-job cost without Celery can be subtracted;
* coordinator cost per job = the coordinator process's CPU time (utime + stime from /proc) from
  the drop to the last result (after one warm-up job, so one-time imports are not counted), minus
  its idle CPU over the same length (measured for 3 s before the drop), divided by the jobs:
  ingest, fusion, dispatch, result polling, sha256 check, publishing.

Writes ``bench/out/celery_scale.json``.  Needs redis-server and the ``celery`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT)]
from celery_support import RedisServer, WorkerProcess, celery_section  # noqa: E402
from common import OUT, parse_args  # noqa: E402
from harness import DaemonProcess, drop_theme, wait_until, write_config  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def ledger_span(db: Path) -> tuple[int, float]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        first = conn.execute("SELECT MIN(created_at) FROM jobs WHERE user != 'warmup'").fetchone()[0]
        last, n = conn.execute("SELECT MAX(at), COUNT(*) FROM history WHERE to_state = 'inbox'").fetchone()
    finally:
        conn.close()
    return n, last - first


def inbox_count(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'inbox'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def run_once(n_workers: int, jobs: int, delay: float, profile: str | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="aw-celery-bench-"))
    redis = RedisServer().start()
    workers = [WorkerProcess(tmp, f"w{i}", redis, delay=delay)
               for i in range(n_workers)]
    try:
        for w in workers:
            w.start(wait=False)
        for w in workers:
            wait_until(lambda w=w: "ready to take jobs" in w.log() or w.proc.poll() is not None, 60)
        if n_workers:
            cfg = write_config(tmp / "coord", astro={"backend": "fake"}, enhance={"backend": "fake"},
                               executor="celery",
                               celery=celery_section(redis, max_in_flight=2 * n_workers, visibility_timeout=3700,
                                                     poll_interval=0.2))
        else:  # baseline: executor local, the fake backend in the daemon's own worker thread
            cfg = write_config(tmp / "coord", astro={"backend": "fake"}, enhance={"backend": "fake"},
                               fake={"delay_seconds": delay})
        prefix = [sys.executable, str(Path(__file__).with_name("cprofile_run.py")), profile] if profile else None
        with DaemonProcess(cfg, prefix=prefix) as coord:
            pid = coord.proc.pid
            db = coord.data / "state" / "ledger.sqlite3"
            drop_theme(coord.data, user="warmup")  # first-job imports (fusion data...) are not per-job costs
            wait_until(lambda: inbox_count(db) == 1, 60, interval=0.02, what="the warm-up result")
            c0 = cpu_seconds(pid)
            time.sleep(3.0)
            idle_per_s = (cpu_seconds(pid) - c0) / 3.0
            t0, c1 = time.monotonic(), cpu_seconds(pid)
            for i in range(jobs):
                drop_theme(coord.data, user=f"u{i:03d}")
            wait_until(lambda: inbox_count(db) == jobs + 1, 60 + jobs * delay * 2, interval=0.02, what="all results")
            busy = time.monotonic() - t0
            cpu = cpu_seconds(pid) - c1 - idle_per_s * busy
            done, span = ledger_span(db)
            coord.stop(timeout=120)  # a clean exit: the profile (--profile) is written at exit
        assert done == jobs + 1
        throughput = jobs / span
        return {"workers": n_workers, "jobs": jobs, "delay_s": delay, "span_s": round(span, 3),
                "throughput_jobs_per_s": round(throughput, 3),
                "efficiency": round(throughput / (max(n_workers, 1) / delay), 3),
                "coordinator_cpu_s": round(cpu, 3), "coordinator_ms_per_job": round(1000 * cpu / jobs, 2),
                "coordinator_idle_cpu_pct": round(100 * idle_per_s, 2), "load_avg": os.getloadavg()}
    finally:
        for w in workers:
            w.close()
        redis.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="0,1,2,4", help="0 = baseline: executor local, one in-process worker")
    ap.add_argument("--jobs-per-worker", type=int, default=8)
    ap.add_argument("--delay", type=float, default=1.0)
    ap.add_argument("--profile", default=None, help="run the coordinator under cProfile (all threads) and "
                    "write the stats to PROFILE-<workers>.pstats (its CPU figures then include the profiler)")
    args = parse_args(ap, workers="1", jobs_per_worker=2, delay=0.1)
    runs = []
    for n in (int(x) for x in args.workers.split(",")):
        r = run_once(n, max(n, 1) * args.jobs_per_worker, args.delay,
                     f"{args.profile}-{n}.pstats" if args.profile else None)
        print(json.dumps(r), flush=True)
        runs.append(r)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "celery_scale.json").write_text(json.dumps({
        "command": " ".join(sys.argv), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                   "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs}, indent=2))
    print("| workers | jobs | throughput (jobs/s) | efficiency | coordinator ms/job |")
    for r in runs:
        print(f"| {r['workers']} | {r['jobs']} | {r['throughput_jobs_per_s']} | {r['efficiency']} | "
              f"{r['coordinator_ms_per_job']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
