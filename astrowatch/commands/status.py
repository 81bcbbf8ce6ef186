"""``astrowatch status``: a summary — counts by state, kind and backend, the oldest waiting items, the
slowest step, the failures of the last hour, the backends in use — that stays small and fast however
long the history (``astrowatch jobs list`` has the detail; ``--sizes`` walks the folders retention bounds).

Works whether or not the daemon runs, for anyone in the service's group: it reads the ledger
(read-only) and the daemon's state file.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from astrowatch.core.jobs import JobState
from astrowatch.runtime.status import collect


def _remote_lines(info: dict[str, Any]) -> list[str]:
    workers = info.get("remote_workers")
    if workers is None:
        return []
    if isinstance(workers, str):
        return [f"remote workers: {workers}"]
    if not workers:
        return ["remote workers: none answered (start `astrowatch worker` on the GPU hosts)"]
    lines = [f"remote workers ({len(workers)}):"]
    for w in workers:
        st = w.get("stats", {})
        backends = ", ".join(f"{k}={v}" for k, v in (w.get("backends") or {}).items())
        models = ", ".join(f"{m}" for m in (w.get("models") or {}).values() if m)
        busy = f"busy with {w['current_job']}" if w.get("current_job") else "idle"
        rate = f", {st['s_per_image']:.2f} s/image" if st.get("s_per_image") else ""
        lines.append(f"  {w.get('name')} [{w.get('device') or 'default device'}]: {busy}, {backends}"
                     f"{f' ({models})' if models else ''}, {st.get('jobs', 0)} images{rate}, "
                     f"astrowatch {w.get('astrowatch')} schema {w.get('schema')}")
    return lines


def _worker_line(w: dict[str, Any]) -> str:
    st = w.get("stats", {})
    busy = f"busy with {w['current_job']}" if w.get("current_job") else "idle"
    if w.get("current_job") and w.get("progress"):
        from astrowatch.backends.base import progress_text

        busy += f" ({progress_text(w['progress'])})"
    text = f"{w['name']}: {busy}, {st.get('jobs', 0)} images"
    jobs = st.get("jobs", 0)
    if jobs > 1 and st.get("first_seconds") is not None:  # steady state: without the first image
        text += f", steady {(st['seconds'] - st['first_seconds']) / (jobs - 1):.2f} s/image"
    elif jobs:
        text += f", {st['seconds'] / jobs:.2f} s/image"
    loads = {n: b.get("load_seconds") for n, b in w.get("backends", {}).items() if b.get("load_seconds")}
    if loads:
        text += ", load " + ", ".join(f"{n} {s} s" for n, s in loads.items())
    return text


def render(info: dict[str, Any]) -> str:
    d = info["daemon"]
    lines = [f"data folder: {info['data_dir']}"]
    up = bool(d.get("running"))  # daemon.json's flag (not a job state)
    if up:
        lines.append(f"daemon: running (pid {d['pid']}), backends: "
                     + ", ".join(f"{k}={v}" for k, v in d.get("backends", {}).items()))
        for w in d.get("workers", []):
            lines.append("  " + _worker_line(w))
    else:
        lines.append("daemon: not running; configured backends: "
                     + ", ".join(f"{k}={v}" for k, v in info.get("configured_backends", {}).items()))
    lines += _remote_lines(info)
    if info.get("note"):
        lines.append(info["note"])
    lines.append("jobs: " + (", ".join(f"{s} {n}" for s, n in info["counts"].items()) or "none"))
    for kind, by_state in (info.get("by_kind") or {}).items():
        lines.append(f"  {kind}: " + ", ".join(f"{s} {n}" for s, n in by_state.items()))
    for name, b in (info.get("by_backend") or {}).items():
        lines.append(f"  backend {name}: {b['results']} results, mean {b['mean_s']} s, max {b['max_s']} s")
    if slow := info.get("slowest"):
        lines.append(f"slowest step: {slow['step']} on {slow['backend']} ({slow['mean_s']} s mean, {slow['max_s']} s max)")
    for state, o in (info.get("oldest") or {}).items():
        lines.append(f"oldest {state}: job {o['job_id']} ({o['kind']}, {o['age_s']} s old)")
    inbox = info[JobState.INBOX]
    total = info.get("inbox_total", len(inbox))
    lines.append(f"inbox ({total}{', the oldest ' + str(len(inbox)) + ' here' if total > len(inbox) else ''}):")
    lines += [f"  {i['image']}  [{i['kind']}, {i['backend']}, job {i['job_id']}]" for i in inbox] or ["  (empty)"]
    if total > len(inbox):
        lines.append("  (all of them: astrowatch review list, a page at a time)")
    disk, sizes = info.get("disk") or {}, info.get("sizes_mb") or {}
    if disk.get("full"):
        lines.append(f"DISK FULL: {disk['free_mb']} MB free under data_dir (limits.min_free_mb="
                     f"{disk['min_free_mb']}): no job starts, nothing is failed; free space to resume")
    elif disk:
        lines.append(f"disk: {disk.get('free_mb')} MB free under data_dir")
    if sizes:
        lines.append("sizes: " + ", ".join(f"{k} {v} MB" for k, v in sizes.items()))
    if waiting := info.get(JobState.WAITING):
        lines.append(f"waiting ({info.get('waiting_total', len(waiting))}): " + "; ".join(
            f"{w['job_id']} ({w['reason']})" for w in waiting[:5]))
    paused = {n: why for w in d.get("workers", []) if up for n, why in (w.get("paused") or {}).items()}
    lines += [f"paused backend {n}: {why} (fix it, then 'systemctl reload astrowatch')" for n, why in paused.items()]
    hooks = info.get("webhooks") or {}
    if hooks.get("counts"):
        lines.append("webhooks: " + ", ".join(f"{s} {n}" for s, n in sorted(hooks["counts"].items())))
    lines += [f"  FAILED {f['at']}  {f['type']} {f['webhook_id']} -> {f['endpoint']}: {f['error']} "
              f"('astrowatch webhooks retry {f['webhook_id']}')" for f in hooks.get("failed", [])]
    lines.append(f"failures in the last hour: {info.get('failures_last_hour', len(info['failures']))}")
    lines += [f"  {f['at']}  {f['source']}: {f['reason']}" for f in info["failures"]] or ["  (none)"]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from astrowatch.runtime.settings import load_config

    info = collect(load_config(args.config), sizes=bool(getattr(args, "sizes", False)))
    from astrowatch.core.secrets import redact

    print(redact(json.dumps(info, indent=2, default=str) if args.json else render(info)))  # no secret, ever
    return 0
