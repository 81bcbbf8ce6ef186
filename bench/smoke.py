"""Every benchmark script at a seconds-long size (``make bench-smoke``, part of ``make test``):
proof that each still runs against the current modules, not a measurement.

    .venv/bin/python bench/smoke.py [--out build/bench-smoke]

Results go to ``--out`` (``ASTROWATCH_BENCH_OUT`` for the scripts), never to bench/out.  The GPU
script runs from the Makefile: ``bench/run_gpu.sh backend --tiny`` (the tiny model on CPU).
Not run here: ``bench/gpu_wheels.sh`` (it downloads wheels for the device machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# script -> needs redis-server.  run_cpu.py --smoke runs startup, recovery, ingest, idle and overhead.
SCRIPTS: dict[str, bool] = {
    "run_cpu.py": False, "api.py": False, "soak.py": False, "phone_photo.py": False, "profile_idle.py": False,
    "profile_ingest.py": False, "lora_switch.py": False, "variants.py": False, "c2pa_sign.py": False,
    "caption.py": False, "scale.py": False,
    "celery_costs.py": True, "celery_idle.py": True, "celery_scale.py": True,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench-smoke")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(SCRIPTS))
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ASTROWATCH_BENCH_OUT": str(out), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    has_redis = bool(shutil.which("redis-server") or os.access("/usr/bin/redis-server", os.X_OK))
    failed: list[str] = []
    t_all = time.monotonic()
    for script, needs_redis in SCRIPTS.items():
        if args.only and script.removesuffix(".py") not in args.only.split(","):
            continue
        if needs_redis and not has_redis:
            print(f"bench-smoke: {script}: skipped (no redis-server on PATH)", flush=True)
            continue
        t = time.monotonic()
        log = out / f"{script.removesuffix('.py')}.log"
        with open(log, "wb") as fh:
            proc = subprocess.run([sys.executable, str(BENCH / script), "--smoke"], stdout=fh,
                                  stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        print(f"bench-smoke: {script}: exit {proc.returncode} in {time.monotonic() - t:.1f} s ({log})", flush=True)
        if proc.returncode != 0:
            failed.append(script)
            sys.stdout.write(log.read_text(errors="replace")[-3000:])
    print(f"bench-smoke: {time.monotonic() - t_all:.0f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "all ran"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
