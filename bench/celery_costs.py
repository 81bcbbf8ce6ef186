"""The per-job figures behind docs/scale-out.md (what breaks first at 100 GPUs / 1M jobs).

    .venv/bin/python bench/celery_costs.py

* Redis bytes per in-flight input: a real redis-server, a task with an inline input of 1, 4 and
  16 MB sent through the same Celery app the coordinator uses; ``MEMORY USAGE`` of the queue
  list divided by the input size (JSON base64, then kombu's own base64 of the body);
* result bytes: a 1024x1024 image as the worker returns it (PNG level 1, base64 in JSON);
* coordinator CPU per real-size result: check its sha256 and write the inbox PNG
  (``imageio.write_png``) — the work the fake backend's 64 px images hide — as shipped and if the
  pixels were decoded and encoded again;
* the coordinator's CPU per result poll (``get_task_meta`` of a task still running);
* SQLite: jobs/s through the ledger's lifecycle (create, claim, publishing, inbox) on this disk,
  and the queries the coordinator runs every tick with a million jobs in the ledger.

Writes ``bench/out/celery_costs.json``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT)]
from celery_support import RedisServer  # noqa: E402
from common import OUT  # noqa: E402


def photo_like(side: int):
    """Smooth gradients plus noise: compresses roughly like a generated image, not like a flat fill."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(9 * x * y)], axis=-1)
    arr = ((base + 1) * 110 + rng.normal(0, 6, (side, side, 3))).clip(0, 255).astype("uint8")
    return Image.fromarray(arr, "RGB")


def redis_bytes(sizes_mb: tuple[int, ...] = (1, 4, 16)) -> list[dict]:
    from astrowatch.backends.remote.celery_app import make_app
    from astrowatch.backends.remote.protocol import TASK_NAME
    from astrowatch.runtime.settings import config_from_mapping

    redis = RedisServer().start()
    rows = []
    try:
        cfg = config_from_mapping({"executor": "celery", "celery": {"broker_url": redis.url}}, base_dir=Path("."))
        app = make_app(cfg)
        client = redis.client()
        for mb in sizes_mb:
            data = os.urandom(mb * 1024 * 1024)
            payload = {"schema": 1, "image": {"b64": base64.b64encode(data).decode(), "name": "x.png"}}
            app.send_task(TASK_NAME, args=[payload], task_id=f"cost{mb}", queue="astrowatch")
            used = client.memory_usage("astrowatch", samples=0)
            rows.append({"input_mb": mb, "redis_bytes": used, "ratio": round(used / len(data), 2)})
            client.delete("astrowatch")
        backend = app.backend
        t0 = time.process_time()
        for _ in range(1000):
            backend.get_task_meta("never-sent")
        rows.append({"poll_cpu_ms": round((time.process_time() - t0), 3)})  # 1000 polls -> ms each
    finally:
        redis.close()
    return rows


def result_costs(side: int = 1024) -> dict:
    """A 1024x1024 result: what the worker sends, and the coordinator's CPU to check and write it —
    as shipped (sha256, bytes kept, text chunks inserted) and, for comparison, decoding the pixels
    and encoding the inbox PNG again (what the first version did)."""
    from PIL import Image

    from astrowatch.backends.base import Result
    from astrowatch.backends.remote.protocol import decode_result, result_ok
    from astrowatch.storage.images import write_png

    img = photo_like(side)
    store: dict[str, bytes] = {}
    t0 = time.perf_counter()
    data = json.dumps(result_ok(Result(image=img, backend="fake", infotext="x"), worker="w", device=None, seconds=1,
                                job_id="j", put_png=lambda k, v: store.__setitem__(k, v) is None))
    encode_worker = time.perf_counter() - t0
    inline = json.dumps(result_ok(Result(image=img, backend="fake", infotext="x"), worker="w", device=None,
                                  seconds=1))

    def shipped(tmp: str) -> None:  # the image as raw bytes in its own key (a dict stands for Redis)
        r = decode_result(json.loads(data), "fake", get_png=store.get)
        write_png(Path(tmp) / "out.png", r.image, infotext="x", meta={"job_id": "j"})

    def inline_b64(tmp: str) -> None:  # the fallback when Redis was away: base64 in the JSON
        r = decode_result(json.loads(inline), "fake")
        write_png(Path(tmp) / "out.png", r.image, infotext="x", meta={"job_id": "j"})

    def reencode(tmp: str) -> None:
        raw = base64.b64decode(json.loads(inline)["png_b64"])
        hashlib.sha256(raw).hexdigest()
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            copy = im.copy()
        write_png(Path(tmp) / "out.png", copy, infotext="x", meta={"job_id": "j"})

    def median_ms(fn) -> float:
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(5):
                t0 = time.perf_counter()
                fn(tmp)
                runs.append(time.perf_counter() - t0)
        return round(1000 * sorted(runs)[2], 1)

    def cpu_ms(fn) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.process_time()
            for _ in range(5):
                fn(tmp)
            return round(200 * (time.process_time() - t0), 1)

    return {"side": side, "png_mb": round(len(next(iter(store.values()))) / 2**20, 2),
            "result_json_kb": round(len(data) / 1024, 1), "inline_result_json_mb": round(len(inline) / 2**20, 2),
            "worker_encode_ms": round(1000 * encode_worker, 1),
            "coordinator_check_and_write_ms": median_ms(shipped), "coordinator_check_and_write_cpu_ms": cpu_ms(shipped),
            "coordinator_inline_b64_cpu_ms": cpu_ms(inline_b64),
            "coordinator_if_decoded_and_reencoded_ms": median_ms(reencode)}


def ledger_rate(n: int = 2000) -> dict:
    from astrowatch.storage.ledger import Ledger

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.sqlite3")
        t0 = time.perf_counter()
        for i in range(n):
            ledger.create_job(kind="astro", user=f"u{i}", source=f"Utilisateurs/u{i}/theme_u{i}.json",
                              source_sha256="0" * 64)
            job = ledger.claim_next()
            ledger.transition(job.id, "running", "publishing", result={"image": "x.png"})
            ledger.transition(job.id, "publishing", "inbox")
        dt = time.perf_counter() - t0
        ledger.close()
    return {"jobs": n, "seconds": round(dt, 3), "jobs_per_s": round(n / dt), "transactions_per_job": 4}


def big_ledger(n: int = 1_000_000) -> dict:
    """The ledger's per-tick queries with a million jobs (bulk-inserted, 100 queued)."""
    import sqlite3

    from astrowatch.storage.ledger import Ledger

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.sqlite3"
        ledger = Ledger(path)
        conn = sqlite3.connect(path)
        now = time.time()
        conn.executemany(
            "INSERT INTO jobs(id, kind, user, source, source_sha256, state, params, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,'{}',?,?)",
            ((f"j{i:011d}", "astro", f"u{i}", f"Utilisateurs/u{i}/theme_u{i}.json", "0" * 64,
              "queued" if i >= n - 100 else "delivered", now + i, now + i) for i in range(n)))
        conn.commit()
        conn.close()

        def ms(fn) -> float:
            t0 = time.perf_counter()
            for _ in range(5):
                fn()
            return round(200 * (time.perf_counter() - t0), 1)

        out = {"jobs": n, "db_mb": round(path.stat().st_size / 2**20), "counts_ms": ms(ledger.counts),
               "claim_next_ms": ms(ledger.claim_next), "has_pending_ms": ms(ledger.has_pending),
               "by_state_waiting_ms": ms(lambda: ledger.by_state("waiting"))}
        ledger.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run: 1 MB input, a 256 px result, "
                    "100 ledger jobs, a 10 000-job ledger")
    smoke = ap.parse_args().smoke
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_avg": os.getloadavg(),
           "redis": redis_bytes((1,) if smoke else (1, 4, 16)), "result": result_costs(256 if smoke else 1024),
           "ledger": ledger_rate(100 if smoke else 2000), "ledger_1m": big_ledger(10_000 if smoke else 1_000_000)}
    print(json.dumps(out, indent=2))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "celery_costs.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
