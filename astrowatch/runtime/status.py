"""What the service is doing, for anyone in its group, as a summary that does not grow with the
history: counts per state, kind and backend, the oldest waiting items, the slowest backend, the
failures of the last hour, the first items of the inbox (``astrowatch jobs list`` pages the rest),
free space, the daemon's heartbeat file and (``executor: celery``) the remote workers.

Read-only: the ledger opened for reading and the daemon's state file.  ``astrowatch status``, the
HTTP API and the review page all show this one snapshot.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from astrowatch.core.jobs import STATES, JobState
from astrowatch.storage.outbox import Delivery

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout


LISTED = 20  # items of each list in the summary (the oldest first); ``astrowatch jobs list`` has the rest
FAILURE_WINDOW_S = 3600.0


def collect(config: Config, *, sizes: bool = False) -> dict[str, Any]:
    """The summary.  Every figure comes from the ledger's counters or from a query bounded by an
    index, so it costs the same at 100 jobs as at 100,000; ``sizes`` adds what retention bounds
    (a walk of archive/, cache and logs: it grows with the history, hence opt-in)."""
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger_readonly import open_for_reading

    layout = Layout(config.data_dir)
    if not layout.ledger_path.exists():
        return {"data_dir": str(layout.root), "daemon": daemon_state(layout), "counts": {}, "inbox": [],
                "failures": [], "note": "no ledger yet: the daemon has never run on this data folder"}
    ledger = open_for_reading(layout)  # a reviewer may read the ledger, never write it
    by_pair = ledger.job_counts()
    counts: dict[str, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    for (state, kind), n in by_pair.items():
        counts[state] = counts.get(state, 0) + n
        by_kind.setdefault(kind, {})[state] = n
    inbox_jobs, _ = ledger.page(JobState.INBOX, limit=LISTED)
    inbox = [{"job_id": j.id, "user": j.user, "kind": j.kind,
              "image": f"inbox/{j.user}/{(j.result or {}).get('image')}",
              "backend": (j.result or {}).get("backend"), "waiting_s": round(time.time() - j.updated_at)}
             for j in inbox_jobs]
    since = time.time() - FAILURE_WINDOW_S
    failed_n, recent = ledger.recent((JobState.FAILED, JobState.FAILING), since, limit=LISTED)
    failures = [{"job_id": r["id"], "user": r["user"], "kind": r["kind"], "source": r["source"], "reason": r["error"],
                 "at": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated_at"]))} for r in recent]
    waiting_jobs, _ = ledger.page(JobState.WAITING, limit=LISTED)
    waiting = [{"job_id": j.id, "user": j.user, "reason": j.error} for j in waiting_jobs]
    info = {"data_dir": str(layout.root), "daemon": daemon_state(layout), **remote(config),
            "counts": {s: counts.get(s, 0) for s in STATES if counts.get(s)},
            "by_kind": {k: {s: v[s] for s in STATES if v.get(s)} for k, v in sorted(by_kind.items())},
            "by_backend": (per_backend := backends(ledger)), "slowest": slowest(per_backend), "oldest": oldest(ledger),
            "inbox_total": counts.get(JobState.INBOX, 0), "inbox": inbox,
            "waiting_total": counts.get(JobState.WAITING, 0), "waiting": waiting,
            "failures_last_hour": failed_n, "failures": failures, "webhooks": webhooks(ledger),
            "configured_backends": {"astro": config.astro.backend, "enhance": config.enhance.backend},
            **room(config, layout, sizes=sizes)}
    return info


def backends(ledger: Any) -> dict[str, dict[str, Any]]:
    """Per backend, the results it produced and their claim-to-publish seconds (the counters)."""
    return {name: {"results": int(d.count), "mean_s": round(d.sum / d.count, 3) if d.count else None,
                   "max_s": round(d.max, 3)} for name, d in sorted(ledger.durations().items())}


def slowest(per_backend: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The generation step that takes longest on average: which backend, its mean and max seconds."""
    timed = [(d["mean_s"], name) for name, d in per_backend.items() if d["mean_s"] is not None]
    if not timed:
        return None
    mean, name = max(timed)
    return {"step": "generate", "backend": name, "mean_s": mean, "max_s": per_backend[name]["max_s"]}


def oldest(ledger: Any) -> dict[str, Any]:
    """The items waiting longest: to run (queued, waiting) and for review (inbox)."""
    out: dict[str, Any] = {}
    for state in (JobState.QUEUED, JobState.WAITING, JobState.INBOX):
        row = ledger.oldest(state)
        if row is not None:
            out[state] = {"job_id": row["id"], "user": row["user"], "kind": row["kind"],
                          "age_s": round(time.time() - row["created_at"])}
    return out


def webhooks(ledger: Any) -> dict[str, Any]:
    """Webhook messages by state, and the latest ones that failed for good (``astrowatch webhooks``)."""
    counts: dict[str, int] = {}
    for (_endpoint, state), n in ledger.delivery_counts().items():
        counts[state] = counts.get(state, 0) + n
    failed = [{"webhook_id": r["msg_id"], "type": r["type"], "endpoint": r["endpoint"], "error": r["last_error"],
               "at": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated_at"]))}
              for r in ledger.deliveries(state=Delivery.FAILED, limit=5)]
    return {"counts": counts, "failed": failed}


def room(config: Config, layout: Layout, *, sizes: bool = False) -> dict[str, Any]:
    """Free space under data_dir (and whether jobs wait for it); with ``sizes``, what retention bounds."""
    from astrowatch.storage.diskspace import DiskGuard

    guard = DiskGuard(layout.root, config.limits.min_free_mb)
    free = guard.free_mb()
    out: dict[str, Any] = {"disk": {"free_mb": free, "min_free_mb": guard.min_free_mb,
                                    "full": free is not None and free < guard.threshold_mb}}
    if sizes:
        from astrowatch.storage.retention import sizes_mb

        out["sizes_mb"] = sizes_mb(layout)
    return out


def remote(config: Config) -> dict[str, Any]:
    """executor: celery: the GPU hosts' workers, from Celery's remote control (a broadcast, 1 s)."""
    if getattr(config, "executor", "local") != "celery":
        return {}
    from astrowatch.backends.remote.client import remote_workers

    return {"executor": "celery", "remote_workers": remote_workers(config)}


def daemon_state(layout: Layout) -> dict[str, Any]:
    try:
        state = json.loads(layout.daemon_state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"running": False}
    if not isinstance(state, dict):
        return {"running": False}
    running = not state.get("stopped") and pid_alive(state.get("pid"))
    state["running"] = running
    return state


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
