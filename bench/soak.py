"""Soak: 2,000 jobs through the ``fake`` backend in one daemon run.

Drops ``--jobs`` distinct small PNGs into 20 user folders in batches, reviews the results as a
person would (half moved into ``approved/``, a quarter into ``rejected/``, the rest left in the
inbox), and samples the daemon's RSS and open file descriptors every second.  Passes when RSS
grows by less than 20 MB between the warm-up point (the first 10 % of jobs done) and the end,
the descriptor count is flat, and the ledger and the logs agree: one job per input, each in the
state its review asked for, one ``generations.jsonl`` line per attempt, one ``reviews.jsonl``
line per decision (logs rotate at 0.2 MB during the run when the daemon is idle; the rotated
files are counted too).

    .venv/bin/python bench/soak.py                 # 2,000 jobs (~2-4 min on 2 shared cores)
    .venv/bin/python bench/soak.py --jobs 200      # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchDaemon, log, memory_mb, parse_args, save, scratch, small_png, verdict, write_bench_config

USERS = 20
RSS_LIMIT_MB = 20.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def ledger_rows(data: Path) -> list[tuple[str, str, int]]:
    conn = sqlite3.connect(f"file:{data / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT id, source, state, attempts FROM jobs").fetchall()
    finally:
        conn.close()


def jsonl(path: Path) -> list[dict]:
    out = []
    for p in sorted(path.parent.glob(path.name + "*")):
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def review(data: Path, reviewed: set[str], plan: dict[str, str]) -> None:
    """Move new inbox results as the plan says (``approve`` / ``reject`` / ``keep``)."""
    for png in (data / "inbox").glob("*/*.png"):
        if png.name in reviewed:
            continue
        reviewed.add(png.name)
        stem = png.name.rsplit(".", 2)[0]
        target = {"approve": "approved", "reject": "rejected"}.get(plan.get(stem, "keep"))
        if target:
            try:
                os.replace(png, data / target / png.name)
            except FileNotFoundError:
                pass


def run(jobs: int, batch: int) -> dict:
    with scratch("soak") as tmp:
        cfg = write_bench_config(tmp, watch={"stability_seconds": 0.5, "polling": False, "polling_interval": 2.0,
                                             "rescan_seconds": 300},
                                 # small log rotation, checked often: the soak also proves rotation loses no line
                                 retention={"log_max_mb": 0.2, "log_keep": 100, "check_seconds": 5})
        data = tmp / "data"
        plan = {f"p{i:05d}": ("approve" if i % 4 < 2 else "reject" if i % 4 == 2 else "keep") for i in range(jobs)}
        d = BenchDaemon(cfg).start()
        pid = d.pid
        samples: list[dict] = []
        reviewed: set[str] = set()
        warm: dict | None = None
        dropped, t0 = 0, time.monotonic()
        try:
            while True:
                if dropped < jobs:
                    for i in range(dropped, min(dropped + batch, jobs)):
                        folder = data / "Utilisateurs" / f"user{i % USERS:02d}"
                        folder.mkdir(parents=True, exist_ok=True)
                        tmpname = folder / f".p{i:05d}.png.part"
                        tmpname.write_bytes(small_png(i))
                        os.replace(tmpname, folder / f"p{i:05d}.png")
                    dropped = min(dropped + batch, jobs)
                d.pump(1.0)
                review(data, reviewed, plan)
                states = Counter(s for _, _, s, _ in ledger_rows(data))
                done = states["inbox"] + states["filed"] + states["rejected"]
                mem = memory_mb(pid)
                sample = {"t": round(time.monotonic() - t0, 1), "done": done, "rss_mb": round(mem["VmRSS"], 1),
                          "fds": fds(pid), "threads": mem["Threads"], "states": dict(states)}
                samples.append(sample)
                if warm is None and done >= jobs // 10:
                    warm = sample
                    log(f"warm: {sample}")
                if len(samples) % 10 == 0:
                    log(f"{sample}")
                expected = Counter(plan.values())
                if (states["filed"] == expected["approve"] and states["rejected"] == expected["reject"]
                        and states["inbox"] == expected["keep"]):
                    break
                if time.monotonic() - t0 > 1800:
                    raise SystemExit(f"soak did not finish in 30 min: {sample}")
            d.pump(3.0)  # idle a moment: what is left allocated at rest
            end = {"rss_mb": round(memory_mb(pid)["VmRSS"], 1), "fds": fds(pid), "peak_rss_mb": memory_mb(pid)["VmHWM"]}
            seconds = round(time.monotonic() - t0, 1)
            rc = d.stop(timeout=60)
        finally:
            d.close()
        return check(data, jobs, plan, samples, warm or samples[0], end, seconds, rc)


def check(data: Path, jobs: int, plan: dict[str, str], samples: list[dict], warm: dict, end: dict,
          seconds: float, rc: int) -> dict:
    rows = ledger_rows(data)
    by_source = Counter(Path(src).stem for _, src, _, _ in rows)
    final = {"approve": "filed", "reject": "rejected", "keep": "inbox"}
    wrong_state = [(src, st) for _, src, st, _ in rows if final[plan[Path(src).stem]] != st]
    gens = jsonl(data / "logs" / "generations.jsonl")
    lines_per_job = Counter(g["job_id"] for g in gens)
    attempts = {job_id: n for job_id, _, _, n in rows}
    bad_lines = [j for j in attempts if lines_per_job.get(j, 0) != attempts[j]]
    reviews = Counter(r["job_id"] for r in jsonl(data / "logs" / "reviews.jsonl"))
    decided = [job_id for job_id, src, _, _ in rows if plan[Path(src).stem] != "keep"]
    fd_values = [s["fds"] for s in samples if s["done"] >= warm["done"]]
    consistent = (len(rows) == jobs and set(by_source.values()) == {1} and not wrong_state and not bad_lines
                  and all(reviews.get(j) == 1 for j in decided) and sum(reviews.values()) == len(decided))
    growth = round(end["rss_mb"] - warm["rss_mb"], 1)
    fds_flat = max(fd_values) - min(fd_values) <= 4 and end["fds"] <= warm["fds"] + 2
    return {
        "jobs": jobs, "seconds": seconds, "jobs_per_s": round(jobs / seconds, 1), "exit_code": rc,
        "rss_warm_mb": warm["rss_mb"], "rss_end_mb": end["rss_mb"], "rss_growth_mb": growth,
        "rss_peak_mb": round(end["peak_rss_mb"], 1), "rss_ok": verdict(growth < RSS_LIMIT_MB),
        "fds_warm": warm["fds"], "fds_min": min(fd_values), "fds_max": max(fd_values), "fds_end": end["fds"],
        "fds_ok": verdict(fds_flat),
        "ledger_jobs": len(rows), "wrong_state": wrong_state[:5], "generation_lines": len(gens),
        "jobs_with_wrong_line_count": bad_lines[:5], "review_lines": sum(reviews.values()),
        "decisions": len(decided), "consistent": verdict(consistent),
        "log_files": sorted(p.name for p in (data / "logs").iterdir()),
        "samples": samples,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=50, help="inputs dropped per second")
    args = parse_args(ap, jobs=20, batch=10)
    result = run(args.jobs, args.batch)
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    path = save("soak", result)
    short = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(short, indent=2))
    log(f"saved {path}")
    if args.smoke:  # it ran; 20 jobs say nothing about leaks
        return 0 if result["exit_code"] == 0 else 1
    return 0 if all(result[k] == "pass" for k in ("rss_ok", "fds_ok", "consistent")) and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
