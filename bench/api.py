"""``astrowatch api``: latency of ``GET /api/astro-image/{user}`` with 10,000 jobs in the ledger.

A data folder with ``--jobs`` astro jobs over ``--users`` users (the newest job of each user in
the inbox or delivered, with its sidecar and, when delivered, ``theme_<user>.png``; the older
ones decided), the real daemon (idle, as in production: its WAL is what the API reads through),
then the real ``astrowatch api`` process (uvicorn, one worker) on a loopback port:

1. ``--requests`` sequential GETs for random users on one keep-alive connection: latency
   percentiles as the client sees them, and as the server logs them (its request line's ``ms``);
2. ``--threads`` clients for ``--seconds``: requests per second;
3. ten ``GET /metrics`` (every aggregate over the 10,000 jobs).

    .venv/bin/python bench/api.py            # writes bench/out/api.json

The ledger is filled with one bulk transaction (10,000 ``create_job`` calls would only make the
set-up slower; the rows are the same).  The client runs on the same 2 cores as the server.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import ROOT, harness, loadavg, log, parse_args, percentile, save, scratch

TOKEN = "bench-token-0123456789abcdef"
TARGET_P99_MS = 20.0


def fill(data: Path, jobs: int, users: int) -> list[str]:
    """``jobs`` astro jobs over ``users`` users, ``jobs // users`` each; returns the user names."""
    from astrowatch.storage.ledger import Ledger

    (data / "state").mkdir(parents=True, exist_ok=True)
    ledger = Ledger(data / "state" / "ledger.sqlite3")
    names, rows, history, now = [f"user{i:04d}" for i in range(users)], [], [], time.time()
    png = harness.make_image(data / "state" / "sample.png", (64, 64))
    for u, user in enumerate(names):
        per = jobs // users + (1 if u < jobs % users else 0)
        for k in range(per):
            job_id = f"{u:06x}{k:06x}"
            newest = k == per - 1
            state = ("inbox" if u % 2 else "delivered") if newest else ("delivered", "rejected", "redone")[k % 3]
            stem = f"theme_{user}.{job_id}"
            result = {"stem": stem, "image": f"{stem}.png", "backend": "fake", "params": {"seed": k}}
            at = now - (per - k) * 60
            rows.append((job_id, "astro", user, f"Utilisateurs/{user}/theme_{user}.json", "0" * 64, state, 1,
                         "{}", json.dumps(result), at, at + 30))
            history += [(job_id, None, "queued", at), (job_id, "queued", "running", at + 1),
                        (job_id, "running", "publishing", at + 2.5), (job_id, "publishing", "inbox", at + 2.6)]
            if newest:
                folder = data / ("inbox" if state == "inbox" else "archive") / user
                folder = folder if state == "inbox" else folder / job_id
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{stem}.json").write_text(json.dumps({"job_id": job_id, "prompt": f"a portrait of {user}"}))
                if state == "delivered":
                    (data / "Utilisateurs" / user).mkdir(parents=True, exist_ok=True)
                    (data / "Utilisateurs" / user / f"theme_{user}.png").write_bytes(png)
    conn = ledger._conn()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO jobs(id, kind, user, source, source_sha256, state, attempts, params, result,"
                     " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO history(job_id, from_state, to_state, at) VALUES (?,?,?,?)", history)
    conn.execute("COMMIT")
    ledger.close()
    return names


def start_api(folder: Path, port: int) -> tuple[subprocess.Popen, Path, Any]:
    """The daemon (idle: every job is decided or in the inbox), then the API next to it."""
    import os

    import requests

    config = harness.write_config(folder, api={"port": port}, astro={"backend": "fake"},
                                  log={"level": "info", "format": "json"})
    daemon = harness.DaemonProcess(config).start()
    log_path = folder / "api.log"
    env = {**os.environ, "ASTROWATCH_API_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "astrowatch", "api", "-c", str(config)], env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2) is not None
        except requests.ConnectionError:
            return False

    harness.wait_until(up, 60, interval=0.1, what="astrowatch api")
    return proc, log_path, daemon


def sequential(base: str, names: list[str], n: int) -> list[float]:
    import requests

    session, rng, out = requests.Session(), random.Random(1), []
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    for name in names[:50]:  # warm-up
        session.get(f"{base}/api/astro-image/{name}", timeout=10)
    for _ in range(n):
        t0 = time.perf_counter()
        resp = session.get(f"{base}/api/astro-image/{rng.choice(names)}", timeout=10)
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200 and resp.json()["state"] in ("inbox", "approved"), resp.text
    return out


def throughput(base: str, names: list[str], threads: int, seconds: float) -> float:
    import requests

    counts, stop = [0] * threads, time.monotonic() + seconds

    def client(i: int) -> None:
        session, rng = requests.Session(), random.Random(i)
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        while time.monotonic() < stop:
            assert session.get(f"{base}/api/astro-image/{rng.choice(names)}", timeout=10).status_code == 200
            counts[i] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - t0)


def server_ms(log_path: Path, path_prefix: str) -> list[float]:
    values = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        path = rec.get("path", "")
        if rec.get("event") == "request" and path.startswith(path_prefix) and path.count("/") == 3:
            values.append(rec["ms"])
    return values


def main() -> int:
    import requests

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=1_000)
    ap.add_argument("--requests", type=int, default=2_000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = parse_args(ap, jobs=200, users=20, requests=120, threads=2, seconds=1.0)
    with scratch("api") as folder:
        t0 = time.monotonic()
        names = fill(folder / "data", args.jobs, args.users)
        log(f"ledger filled: {args.jobs} jobs, {args.users} users in {time.monotonic() - t0:.1f} s")
        port = harness_port()
        proc, log_path, daemon = start_api(folder, port)
        base = f"http://127.0.0.1:{port}"
        try:
            load_before = loadavg()
            seq = sequential(base, names, args.requests)
            server = server_ms(log_path, "/api/astro-image/")[50:]  # without the warm-up
            rps = throughput(base, names, args.threads, args.seconds)
            metrics = []
            for _ in range(10):
                t1 = time.perf_counter()
                assert "astrowatch_jobs" in requests.get(f"{base}/metrics", timeout=30).text
                metrics.append((time.perf_counter() - t1) * 1000)
            load_after = loadavg()
        finally:
            proc.terminate()
            proc.wait(15)
            daemon.stop()
            daemon.close()
    result = summarize(args, seq, server[: args.requests], rps, metrics, load_before, load_after)
    log(json.dumps(result["figures"], indent=2))
    save("api", result)
    return 0 if args.smoke or result["figures"]["client_p99_ms"] < TARGET_P99_MS else 1


def harness_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(args: Any, seq: list[float], server: list[float], rps: float, metrics: list[float],
              load_before: list[float], load_after: list[float]) -> dict[str, Any]:
    def pct(values: list[float]) -> dict[str, float]:
        return {f"p{p}": round(percentile(values, p), 2) for p in (50, 90, 99)} | {"max": round(max(values), 2)}

    return {
        "command": " ".join([sys.executable, *sys.argv]), "params": vars(args),
        "figures": {"client_p99_ms": round(percentile(seq, 99), 2), "client_ms": pct(seq), "server_ms": pct(server),
                    "requests_per_s": round(rps, 1), "threads": args.threads, "metrics_ms": pct(metrics),
                    "target_p99_ms": TARGET_P99_MS, "loadavg_before": load_before, "loadavg_after": load_after},
    }


if __name__ == "__main__":
    sys.exit(main())
