"""``astrowatch status``: counts by state, the inbox, recent failures, the backends in use.

Works whether or not the daemon runs, for anyone in the service's group: it reads the ledger
(read-only) and the daemon's state file.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def collect(config) -> dict[str, Any]:  # noqa: ANN001
    from ..layout import Layout
    from ..ledger import STATES
    from ..ledger_readonly import open_for_reading

    layout = Layout(config.data_dir)
    if not layout.ledger_path.exists():
        return {"data_dir": str(layout.root), "daemon": _daemon(layout), "counts": {}, "inbox": [],
                "failures": [], "note": "no ledger yet: the daemon has never run on this data folder"}
    ledger = open_for_reading(layout)  # a reviewer may read the ledger, never write it
    counts = ledger.counts()
    inbox = [{"job_id": j.id, "user": j.user, "kind": j.kind,
              "image": f"inbox/{j.user}/{(j.result or {}).get('image')}",
              "backend": (j.result or {}).get("backend"), "waiting_s": round(time.time() - j.updated_at)}
             for j in ledger.by_state("inbox")]
    failures = [{"job_id": j.id, "user": j.user, "kind": j.kind, "source": j.source, "reason": j.error,
                 "at": time.strftime("%Y-%m-%d %H:%M", time.localtime(j.updated_at))}
                for j in ledger.by_state("failed", limit=10)]
    waiting = [{"job_id": j.id, "user": j.user, "reason": j.error} for j in ledger.by_state("waiting")]
    return {"data_dir": str(layout.root), "daemon": _daemon(layout),
            "counts": {s: counts.get(s, 0) for s in STATES if counts.get(s)},
            "inbox": inbox, "waiting": waiting, "failures": failures,
            "configured_backends": {"astro": config.astro.backend, "enhance": config.enhance.backend},
            **_room(config, layout)}


def _room(config, layout) -> dict[str, Any]:  # noqa: ANN001
    """Free space under data_dir (and whether jobs wait for it), and what retention bounds."""
    from ..diskspace import DiskGuard
    from ..retention import sizes_mb

    guard = DiskGuard(layout.root, config.limits.min_free_mb)
    free = guard.free_mb()
    return {"disk": {"free_mb": free, "min_free_mb": guard.min_free_mb, "full": free is not None and free < guard.threshold_mb},
            "sizes_mb": sizes_mb(layout)}


def _daemon(layout) -> dict[str, Any]:  # noqa: ANN001
    try:
        state = json.loads(layout.daemon_state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"running": False}
    running = not state.get("stopped") and _pid_alive(state.get("pid"))
    state["running"] = running
    return state


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_line(w: dict[str, Any]) -> str:
    st = w.get("stats", {})
    busy = f"busy with {w['current_job']}" if w.get("current_job") else "idle"
    if w.get("current_job") and w.get("progress"):
        from ..backends.base import progress_text

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
    if d.get("running"):
        lines.append(f"daemon: running (pid {d['pid']}), backends: "
                     + ", ".join(f"{k}={v}" for k, v in d.get("backends", {}).items()))
        for w in d.get("workers", []):
            lines.append("  " + _worker_line(w))
    else:
        lines.append("daemon: not running; configured backends: "
                     + ", ".join(f"{k}={v}" for k, v in info.get("configured_backends", {}).items()))
    if info.get("note"):
        lines.append(info["note"])
    lines.append("jobs: " + (", ".join(f"{s} {n}" for s, n in info["counts"].items()) or "none"))
    lines.append(f"inbox ({len(info['inbox'])}):")
    lines += [f"  {i['image']}  [{i['kind']}, {i['backend']}, job {i['job_id']}]" for i in info["inbox"]] or ["  (empty)"]
    disk, sizes = info.get("disk") or {}, info.get("sizes_mb") or {}
    if disk.get("full"):
        lines.append(f"DISK FULL: {disk['free_mb']} MB free under data_dir (limits.min_free_mb="
                     f"{disk['min_free_mb']}): no job starts, nothing is failed; free space to resume")
    elif disk:
        lines.append(f"disk: {disk.get('free_mb')} MB free under data_dir")
    if sizes:
        lines.append("sizes: " + ", ".join(f"{k} {v} MB" for k, v in sizes.items()))
    if info.get("waiting"):
        lines.append(f"waiting ({len(info['waiting'])}): " + "; ".join(
            f"{w['job_id']} ({w['reason']})" for w in info["waiting"][:5]))
    paused = {n: why for w in d.get("workers", []) if d.get("running") for n, why in (w.get("paused") or {}).items()}
    lines += [f"paused backend {n}: {why} (fix it, then 'systemctl reload astrowatch')" for n, why in paused.items()]
    lines.append("recent failures:")
    lines += [f"  {f['at']}  {f['source']}: {f['reason']}" for f in info["failures"]] or ["  (none)"]
    return "\n".join(lines)


def main(args) -> int:  # noqa: ANN001
    from ..config import load_config

    info = collect(load_config(args.config))
    print(json.dumps(info, indent=2, default=str) if args.json else render(info))
    return 0
