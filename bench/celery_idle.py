"""Idle CPU of the coordinator with ``executor: celery`` (16 and 1 dispatcher threads) and, for
comparison, ``executor: local``: 20 s windows after a 2 s settle, CPU from /proc.

    .venv/bin/python bench/celery_idle.py        # ~75 s; needs redis-server

Each dispatcher thread looks for a queued job twice a second (the local worker loop), so the
idle cost grows with ``celery.max_in_flight``.  Uses the tests' config (``rescan_seconds: 2``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT), str(ROOT / "bench")]
from celery_scale import cpu_seconds  # noqa: E402
from celery_support import RedisServer, celery_section  # noqa: E402
from harness import DaemonProcess, write_config  # noqa: E402


def idle_pct(cfg: Path, seconds: float = 20.0) -> float:
    with DaemonProcess(cfg) as d:
        time.sleep(2)
        c0 = cpu_seconds(d.proc.pid)
        time.sleep(seconds)
        return round(100 * (cpu_seconds(d.proc.pid) - c0) / seconds, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run: 1 s windows, max_in_flight 1 only")
    smoke = ap.parse_args().smoke
    seconds = 1.0 if smoke else 20.0
    redis = RedisServer().start()
    tmp = Path(tempfile.mkdtemp(prefix="aw-celery-idle-"))
    try:
        for n in (1,) if smoke else (16, 1):
            # the test section's 6 s visibility timeout needs a job timeout below it (the config checks)
            cfg = write_config(tmp / f"c{n}", executor="celery", celery=celery_section(redis, max_in_flight=n),
                               limits={"job_timeout_seconds": 5})
            print(f"executor: celery, max_in_flight {n}: {idle_pct(cfg, seconds)} % of a core")
        print(f"executor: local: {idle_pct(write_config(tmp / 'local'), seconds)} % of a core")
    finally:
        redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
