"""The CPU benchmark set (``make bench``): every benchmark at its full size, one after the other,
each as its own process, then a markdown table of the figures against their targets.

    .venv/bin/python bench/run_cpu.py [--only startup,recovery,ingest,idle,overhead]

About 5 minutes on 2 cores (ingest 3 x ~17 s, idle 2 x 65 s + preparation, start-up ~20 s,
overhead ~100 s, recovery ~10 s).  Results: ``bench/out/<name>.json`` per benchmark,
``bench/out/summary.json`` and ``bench/out/summary.md`` (the table printed on stdout).
Benchmarks are not part of ``make test``.  The GPU set is ``bench/sdxl_gpu.py`` (needs a GPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

BENCH = Path(__file__).resolve().parent
# name -> arguments (full sizes from the issue)
PLAN: dict[str, list[str]] = {
    "startup": ["--help-runs", "10", "--ready-runs", "5", "--files", "10000", "--users", "200"],
    "recovery": ["--runs", "5"],
    "ingest": ["--files", "2000", "--users", "20", "--seconds", "10", "--stability", "2.0", "--runs", "3"],
    "idle": ["--files", "10000", "--users", "200", "--seconds", "60", "--modes", "inotify,polling"],
    "overhead": ["--images", "50", "--steps", "4", "--size", "64", "--threads", "1", "--init-image", "both"],
}


def _load(name: str) -> dict[str, Any] | None:
    path = common.OUT / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def rows(results: dict[str, dict[str, Any] | None]) -> list[tuple[str, str, str, str, str]]:
    """(benchmark, figure, measured, target, result)."""
    out: list[tuple[str, str, str, str, str]] = []
    v = common.verdict
    if (r := results.get("ingest")):
        runs = r.get("runs", [])
        out.append(("ingest", f"{r['params']['files']} files ({r['params']['themes']} themes + {r['params']['images']} "
                    f"images) in {r['params']['users']} folders over {r['params']['drop_seconds_planned']:g} s: jobs",
                    f"{r['jobs']} jobs, {r['distinct_sources']} distinct sources"
                    + (f" ({len(runs)} runs, all exact)" if runs and all(x['exactly_one_job_each'] for x in runs) else ""),
                    "1 job per file", v(all(x["exactly_one_job_each"] for x in runs) if runs else r["exactly_one_job_each"])))
        out.append(("ingest", "latency stable -> queued, p50 (median of runs)", f"{r['median_p50_ms']:.0f} ms", "-", "-"))
        each = ", ".join("{:.0f}".format(x["p99"]) for x in runs)
        out.append(("ingest", "latency stable -> queued, p99 (median of runs)",
                    f"{r['median_p99_ms']:.0f} ms (runs: {each})",
                    "< 100 ms", v(r["median_p99_ms"] < 100)))
    if (r := results.get("idle")):
        for m in r["modes"]:
            label = m["mode"] + (" (2 s interval)" if m["mode"] == "polling" else "")
            out.append(("idle", f"{r['params']['files']} files / {r['params']['users']} folders, {label}: CPU",
                        f"{m['cpu_pct_of_one_core']:.2f} % of one core ({m['cpu_seconds']:.2f} s in {m['window_seconds']:.0f} s)",
                        "< 0.5 %", v(m["cpu_pass"])))
            out.append(("idle", f"{label}: RSS (peak VmHWM)", f"{m['rss_mb_peak_hwm']:.1f} MB", "< 120 MB", v(m["rss_pass"])))
        rs = r["rescan"]
        out.append(("idle", "periodic rescan of the 10,000 known files (every 300 s)",
                    f"{rs['cpu_seconds_median']:.2f} s CPU = {rs['amortised_pct_over_300s']:.3f} % amortised", "-", "-"))
        if (ps := r.get("polling_snapshot_in_process")):
            out.append(("idle", "polling: cost per watched entry per interval",
                        f"{ps['us_per_entry']:.1f} us ({ps['entries']} entries: "
                        f"{ps['cpu_seconds_per_poll_median'] * 1000:.0f} ms/poll)",
                        "-", "-"))
    if (r := results.get("startup")):
        h = r["help"]
        out.append(("startup", "`astrowatch --help` wall, median of 10",
                    f"{h['median_s'] * 1000:.0f} ms (python -c pass: {h['python_c_pass_median_s'] * 1000:.0f} ms)",
                    "< 0.3 s", v(h["pass"])))
        rl, re_ = r["ready_ledgered"], r["ready_empty"]
        out.append(("startup", f"`astrowatch run` -> READY=1, {rl['files']} files ledgered (median of {rl['runs']})",
                    f"{rl['median_s']:.3f} s (empty data folder: {re_['median_s']:.3f} s)", "-", "-"))
    if (r := results.get("overhead")):
        bare, bare_c = r["bare"], r["bare_compel"]
        for d in r["daemon"]:
            ps = d["per_image_s"]
            tag = "default config (init_image: wheel)" if d["init_image"] == "wheel" else "astro.init_image: none"
            out.append(("overhead", f"{r['params']['images']} tiny-SDXL images, {tag}: daemon / bare diffusers s/image",
                        f"{d['ratio_vs_bare']['wall']:.2f} ({ps['wall']:.3f} / {bare['per_image_s']:.3f} s)",
                        "<= 1.10", v(d["pass"])))
            out.append(("overhead", f"  {tag}: daemon / bare diffusers + the same compel embeddings s/image",
                        f"{ps['wall'] / bare_c['per_image_s']:.2f} ({ps['wall']:.3f} / {bare_c['per_image_s']:.3f} s)",
                        "-", "-"))
            out.append(("overhead", f"  {tag}: other daemon measures (s/image)",
                        f"drain-load {ps['drain_minus_load']:.3f}, generations.jsonl {ps['job']:.3f}, "
                        f"sidecar backend {ps['backend']:.3f}", "-", "-"))
        bi = r.get("backend_inprocess", {})
        out.append(("overhead", "  decomposition (s/image): bare / bare+compel / SdxlBackend in-process",
                    f"{bare['per_image_s']:.3f} / {bare_c['per_image_s']:.3f} / {bi.get('per_image_s', float('nan')):.3f}"
                    f" (bare+compel images identical to the daemon's: {bare_c['identical_images']}/{r['params']['images']})",
                    "-", "-"))
    if (r := results.get("recovery")):
        m = r["median"]
        out.append(("recovery", f"SIGKILL mid-job, restart -> READY=1 (median of {r['params']['runs']})",
                    f"{m['ready_s']:.3f} s", "-", "-"))
        out.append(("recovery", "restart -> resumed result in the inbox",
                    f"{m['result_in_inbox_s']:.3f} s (checks: {'ok' if r['all_checks_ok'] else 'FAILED'})", "-",
                    v(r["all_checks_ok"])))
    return out


def table(results: dict[str, dict[str, Any] | None]) -> str:
    lines = ["| benchmark | figure | measured | target | result |", "|---|---|---|---|---|"]
    for row in rows(results):
        lines.append("| " + " | ".join(x.replace("|", "/") for x in row) + " |")
    m = common.machine()
    lines.append("")
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}, "
                 f"Python {m['python']}; {m['date']}; load average when done {m['loadavg_when_saved']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(PLAN), help="comma-separated subset of " + ",".join(PLAN))
    ap.add_argument("--table-only", action="store_true", help="print the table from bench/out/*.json")
    ap.add_argument("--smoke", action="store_true", help="each benchmark with --smoke (seconds-long sizes)")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in PLAN]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    status: dict[str, Any] = {}
    t_all = time.monotonic()
    if not args.table_only:
        for name in names:
            cmd = [sys.executable, str(BENCH / f"{name}.py"), *(["--smoke"] if args.smoke else PLAN[name])]
            common.log(f"run_cpu: {' '.join(cmd[1:])}")
            t = time.monotonic()
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            status[name] = {"rc": proc.returncode, "seconds": round(time.monotonic() - t, 1)}
            common.log(f"run_cpu: {name} exited {proc.returncode} after {status[name]['seconds']} s")
    results = {name: _load(name) for name in PLAN}
    md = table(results)
    common.OUT.mkdir(parents=True, exist_ok=True)
    (common.OUT / "summary.md").write_text(md + "\n", encoding="utf-8")
    summary = {"status": status, "total_seconds": round(time.monotonic() - t_all, 1), "rows": rows(results)}
    common.save("summary", summary)
    print(md)
    if status:
        codes = ", ".join("{}={}".format(k, v["rc"]) for k, v in status.items())
        print(f"\n{len(status)} benchmark(s) in {summary['total_seconds']:.0f} s; exit codes: {codes}")
    return 1 if any(v["rc"] != 0 for v in status.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
