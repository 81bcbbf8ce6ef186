"""Crash recovery: SIGKILL in the middle of a job, restart, time to READY=1 and to the resumed result.

    .venv/bin/python bench/recovery.py [--runs 5]

Each run: a fresh data folder; the real daemon with the ``fake`` backends and
``fake.hang_seconds: 3600`` (the job hangs inside the backend); a ``theme_gaby.json`` is dropped;
once the ledger says the job is ``running`` the daemon gets SIGKILL.  The config is rewritten
without the hang and the daemon restarted.  Measured from just before ``Popen``:

* READY=1 (arrival of the datagram on the NOTIFY_SOCKET);
* the resumed result in the inbox: the ledger's history time of ``publishing -> inbox`` for that
  job (``time.time()`` in the daemon), cross-checked with the first sighting of
  ``inbox/gaby/*.png`` by polling every 5 ms.

Checked each run: one job, attempts == 2 (the interrupted attempt counted), one image in the inbox,
history shows ``running -> queued`` "resumed after restart".
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


def _query(db: Path, sql: str, *args: Any) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def one(folder: Path) -> dict[str, Any]:
    cfg = common.write_bench_config(folder, watch={"stability_seconds": 0.5}, fake={"hang_seconds": 3600})
    data = folder / "data"
    db = data / "state" / "ledger.sqlite3"
    user_dir = data / "Utilisateurs" / "gaby"
    user_dir.mkdir(parents=True, exist_ok=True)
    first = common.BenchDaemon(cfg)
    try:
        first.start()
        (user_dir / "theme_gaby.json").write_bytes(common.harness.theme_bytes("astrowatch_minimal.json", "gaby"))
        deadline = time.monotonic() + 30
        while not _query(db, "SELECT id FROM jobs WHERE state = 'running'"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job never started:\n{first.log()}")
            first.pump(0.02)
        first.pump(0.3)
        first.kill()
    finally:
        first.close()
    (job_id,) = _query(db, "SELECT id FROM jobs")[0]
    common.write_bench_config(folder, watch={"stability_seconds": 0.5}, fake={"hang_seconds": 0})
    second = common.BenchDaemon(cfg)
    inbox = data / "inbox" / "gaby"
    try:
        second.start(wait_ready=False)
        ready = second.wait_arrival("READY=1", timeout=60) - (second.t_start or 0.0)
        deadline = time.monotonic() + 60
        while not (inbox.is_dir() and any(inbox.glob("*.png"))):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no resumed result:\n{second.log()}")
            time.sleep(0.005)
        seen = time.monotonic() - (second.t_start or 0.0)
        second.pump(0.5)
        hist = _query(db, "SELECT from_state, to_state, at, note FROM history WHERE job_id = ? ORDER BY rowid", job_id)
        at_inbox = next(at for frm, to, at, note in hist if to == "inbox")
        jobs = _query(db, "SELECT id, state, attempts FROM jobs")
        second.stop(timeout=30)
    finally:
        second.close()
    resumed_note = any(frm == "running" and to == "queued" and note == "resumed after restart"
                       for frm, to, at, note in hist)
    ok = len(jobs) == 1 and jobs[0][1] == "inbox" and jobs[0][2] == 2 and resumed_note \
        and len(list(inbox.glob("*.png"))) == 1
    return {"ready_s": round(ready, 3), "result_in_inbox_s": round(at_inbox - (second.t_start_wall or 0.0), 3),
            "result_file_seen_s": round(seen, 3), "checks_ok": ok, "attempts": jobs[0][2] if jobs else None}


def run(runs: int = 5) -> dict[str, Any]:
    rows = []
    for i in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="aw-bench-recovery-"))
        try:
            rows.append(one(tmp))
            common.log(f"recovery run {i + 1}/{runs}: {rows[-1]}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    med = {k: round(common.median([r[k] for r in rows]), 3) for k in ("ready_s", "result_in_inbox_s", "result_file_seen_s")}
    return {"params": {"runs": runs, "kind": "astro (theme_gaby.json)", "backend": "fake",
                       "kill": "SIGKILL while the job hangs in the backend (fake.hang_seconds: 3600)"},
            "runs": rows, "median": med, "all_checks_ok": all(r["checks_ok"] for r in rows),
            "target": "none in the issue (reported)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = common.parse_args(ap, argv, runs=1)
    result = run(args.runs)
    result["command"] = "bench/recovery.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path = common.save("recovery", result)
    print(json.dumps({"median": result["median"], "all_checks_ok": result["all_checks_ok"]}, indent=2))
    common.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
