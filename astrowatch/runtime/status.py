"""What the service is doing, for anyone in its group: counts by state, the inbox, recent
failures, free space, the daemon's heartbeat file and (``executor: celery``) the remote workers.

Read-only: the ledger opened for reading and the daemon's state file.  ``astrowatch status``, the
HTTP API and the review page all show this one snapshot.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config
    from astrowatch.storage.layout import Layout


def collect(config: Config) -> dict[str, Any]:
    from astrowatch.core.jobs import STATES
    from astrowatch.storage.layout import Layout
    from astrowatch.storage.ledger_readonly import open_for_reading

    layout = Layout(config.data_dir)
    if not layout.ledger_path.exists():
        return {"data_dir": str(layout.root), "daemon": daemon_state(layout), "counts": {}, "inbox": [],
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
    return {"data_dir": str(layout.root), "daemon": daemon_state(layout), **remote(config),
            "counts": {s: counts.get(s, 0) for s in STATES if counts.get(s)},
            "inbox": inbox, "waiting": waiting, "failures": failures, "webhooks": webhooks(ledger),
            "configured_backends": {"astro": config.astro.backend, "enhance": config.enhance.backend},
            **room(config, layout)}


def webhooks(ledger: Any) -> dict[str, Any]:
    """Webhook messages by state, and the latest ones that failed for good (``astrowatch webhooks``)."""
    counts: dict[str, int] = {}
    for (_endpoint, state), n in ledger.delivery_counts().items():
        counts[state] = counts.get(state, 0) + n
    failed = [{"webhook_id": r["msg_id"], "type": r["type"], "endpoint": r["endpoint"], "error": r["last_error"],
               "at": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated_at"]))}
              for r in ledger.deliveries(state="failed", limit=5)]
    return {"counts": counts, "failed": failed}


def room(config: Config, layout: Layout) -> dict[str, Any]:
    """Free space under data_dir (and whether jobs wait for it), and what retention bounds."""
    from astrowatch.storage.diskspace import DiskGuard
    from astrowatch.storage.retention import sizes_mb

    guard = DiskGuard(layout.root, config.limits.min_free_mb)
    free = guard.free_mb()
    return {"disk": {"free_mb": free, "min_free_mb": guard.min_free_mb, "full": free is not None and free < guard.threshold_mb},
            "sizes_mb": sizes_mb(layout)}


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
