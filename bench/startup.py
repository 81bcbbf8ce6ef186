"""Start-up: ``astrowatch --help`` wall time, and ``astrowatch run`` -> READY=1 with 10,000 files
already in the ledger (and with an empty data folder, to show the per-file part).

    .venv/bin/python bench/startup.py [--help-runs 10] [--ready-runs 5] [--files 10000] [--users 200]

``--help``: the installed console script ``.venv/bin/astrowatch --help``, one warm-up run, then
``--help-runs`` timed runs (wall clock around ``subprocess.run``); the interpreter's own floor
(``python -c pass``) is measured the same way.  The daemons are started as the test harness does
(``python -m astrowatch run --config ...`` with a real ``NOTIFY_SOCKET``); READY=1 is timed from
just before ``Popen`` to the datagram's arrival.  Bytecode caching on (a service writes its
``__pycache__`` once; this sandbox's ``PYTHONDONTWRITEBYTECODE=1`` is removed for the children).

Target: ``--help`` < 0.3 s.  READY=1 has no numeric target in the issue.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

TARGET_HELP_S = 0.3
VENV_BIN = Path(sys.executable).parent


def _time_cmd(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=True)  # warm-up (page cache, __pycache__)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return times


def help_timing(runs: int = 10) -> dict[str, Any]:
    script = VENV_BIN / "astrowatch"
    cmd = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "astrowatch", "--help"]
    times = _time_cmd(cmd, runs)
    floor = _time_cmd([sys.executable, "-c", "pass"], runs)
    probe = subprocess.run([sys.executable, "-c", (
        "import sys\nsys.argv=['astrowatch','--help']\nfrom astrowatch.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch','pydantic','diffusers','transformers','PIL','watchdog','yaml')"
        " if m in sys.modules), file=sys.stderr)")], capture_output=True, text=True)
    heavy = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "?"
    med = common.median(times)
    return {"command": " ".join(cmd), "runs": runs, "seconds": [round(t, 4) for t in times],
            "median_s": round(med, 4), "min_s": round(min(times), 4), "max_s": round(max(times), 4),
            "python_c_pass_median_s": round(common.median(floor), 4),
            "heavy_modules_imported": heavy, "target_s": TARGET_HELP_S, "pass": med < TARGET_HELP_S}


def ready_timing(cfg: Path, runs: int) -> dict[str, Any]:
    times, stops = [], []
    for _ in range(runs):
        d = common.BenchDaemon(cfg)
        try:
            d.start(wait_ready=False)
            times.append(d.wait_arrival("READY=1", timeout=120) - (d.t_start or 0.0))
            d.pump(0.5)
            t = time.monotonic()
            d.stop(timeout=60)
            stops.append(time.monotonic() - t)
        finally:
            d.close()
    return {"runs": runs, "seconds": [round(t, 3) for t in times], "median_s": round(common.median(times), 3),
            "min_s": round(min(times), 3), "max_s": round(max(times), 3),
            "sigterm_to_exit_median_s": round(common.median(stops), 3)}


def run(help_runs: int = 10, ready_runs: int = 5, files: int = 10_000, users: int = 200,
        prepared: Path | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"help": help_timing(help_runs)}
    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-startup-"))
    try:
        if prepared is None:
            common.log(f"startup: preparing {files} ledgered files in {users} folders")
            prep = common.prepare_ledgered(tmp / "full", files, users)
            cfg = prep["config"]
        else:
            cfg = prepared
        common.log(f"startup: {ready_runs} starts to READY=1 with {files} ledgered files")
        result["ready_ledgered"] = {"files": files, "users": users, **ready_timing(cfg, ready_runs)}
        empty = common.write_bench_config(tmp / "empty")
        common.log(f"startup: {ready_runs} starts to READY=1 with an empty data folder")
        result["ready_empty"] = {"files": 0, **ready_timing(empty, ready_runs)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["target"] = f"--help < {TARGET_HELP_S} s; READY=1: no numeric target"
    result["bytecode_cache"] = "on (PYTHONDONTWRITEBYTECODE removed for the children)"
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--help-runs", type=int, default=10)
    ap.add_argument("--ready-runs", type=int, default=5)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=200)
    args = common.parse_args(ap, argv, help_runs=1, ready_runs=1, files=200, users=10)
    result = run(args.help_runs, args.ready_runs, args.files, args.users)
    result["command"] = "bench/startup.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path = common.save("startup", result)
    print(json.dumps({k: result[k] for k in ("help", "ready_ledgered", "ready_empty")}, indent=2))
    common.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
