"""The upstream app with no access to the data folder: it uploads a chart and a photo over the
API, follows both jobs on ``GET /api/events`` (reconnecting with ``Last-Event-ID``), and its
webhook receiver -- verifying with the ``standardwebhooks`` library -- gets ``job.inbox``,
``job.delivered`` and ``job.rejected``, including one raised while it was down and the daemon
then SIGKILLed: delivered after the restart with its original ``webhook-id``."""

from __future__ import annotations

import json
import sqlite3
import threading
from importlib.util import find_spec
from typing import Any

import pytest
import requests
from api_support import TOKEN, ApiProcess, free_port
from harness import DaemonProcess, make_image, theme_bytes, wait_until, write_config
from webhook_receiver import Receiver, new_secret, write_secret

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    any(find_spec(m) is None for m in ("fastapi", "uvicorn", "prometheus_client", "standardwebhooks", "sse_starlette")),
    reason="the 'api' extra is not installed")]


class Stream:
    """``GET /api/events`` read in a thread, as the upstream app's server would."""

    def __init__(self, api: ApiProcess, last_id: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.resp = requests.get(api.base + "/api/events", headers=headers, stream=True, timeout=(5, 60))
        assert self.resp.status_code == 200, self.resp.text
        self.events: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event: dict[str, str] = {}
        try:
            for line in self.resp.iter_lines(decode_unicode=True):
                if line == "":
                    if "data" in event:
                        self.events.append({"id": event.get("id"), "event": event.get("event"),
                                            "data": json.loads(event["data"])})
                    event = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(":")
                    event[key] = value.removeprefix(" ")
        except (requests.RequestException, AttributeError, ValueError):
            return

    def close(self) -> None:
        self.resp.close()

    def types(self, job_id: str) -> list[str]:
        return [e["event"] for e in self.events if e["data"]["data"].get("job_id") == job_id]


def _msg_id(data, job_id: str, type_: str) -> str | None:
    with sqlite3.connect(f"file:{data / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT msg_id FROM events WHERE job_id = ? AND type = ?", (job_id, type_)).fetchone()
    return row[0] if row else None


def _attempts(data, msg_id: str) -> int:
    with sqlite3.connect(f"file:{data / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT d.attempts FROM deliveries d JOIN events e ON e.seq = d.seq WHERE e.msg_id = ?",
                           (msg_id,)).fetchone()
    return row[0] if row else 0


def test_the_upstream_app_uploads_follows_and_hears(tmp_path) -> None:
    secret = new_secret()
    port = free_port()
    receiver = Receiver(secret, port=port).__enter__()
    config = write_config(tmp_path, astro={"backend": "fake"}, fake={"delay_seconds": 0.3},
                          webhooks=[{"url": receiver.url, "secret_file": str(write_secret(tmp_path / "secrets", secret)),
                                     "events": ["job.inbox", "job.delivered", "job.rejected", "input.skipped"]}],
                          events={"retry_schedule": [0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], "timeout_seconds": 2})
    data = tmp_path / "data"
    daemon = DaemonProcess(config).start()
    api = ApiProcess(config)
    stream = None
    try:
        api.start()
        stream = Stream(api)
        # 1. uploads, no shared disk
        up = api.http.put(api.base + "/api/users/gaby/theme", data=theme_bytes(user="gaby"), timeout=30)
        assert up.status_code == 202, up.text
        make_image(tmp_path / "beach.png", size=(64, 48))
        photo = api.post("/api/users/gaby/photos", files={"file": ("beach.png", (tmp_path / "beach.png").read_bytes())})
        assert photo.status_code == 202, photo.text
        stored = photo.json()["files"][0]

        # 2. both jobs followed on the stream, by the names the uploads answered
        def inbox_jobs() -> dict[str, str] | None:
            jobs = {e["data"]["data"]["source"]: e["data"]["data"]["job_id"] for e in stream.events
                    if e["event"] == "job.inbox"}
            return jobs if len(jobs) == 2 else None

        jobs = wait_until(inbox_jobs, timeout=60, what="both jobs in the inbox")
        astro, enhance = jobs["theme_gaby.json"], jobs[stored]
        assert stream.types(astro)[:3] == ["job.queued", "job.running", "job.inbox"]
        wait_until(lambda: sorted(receiver.types()) == ["job.inbox", "job.inbox"], timeout=20, what="webhooks")

        # 3. the stream drops; events happen meanwhile; reconnecting gets exactly those
        last_id = stream.events[-1]["id"]
        stream.close()
        assert api.post(f"/api/jobs/{astro}/approve").status_code == 202
        wait_until(lambda: "job.delivered" in receiver.types(), timeout=20, what="job.delivered webhook")

        # 4. the receiver goes down; a rejection is raised, tried, then the daemon is SIGKILLed
        receiver.close()
        assert api.post(f"/api/jobs/{enhance}/reject").status_code == 202
        msg_id = wait_until(lambda: _msg_id(data, enhance, "job.rejected"), timeout=20, what="job.rejected event")
        wait_until(lambda: _attempts(data, msg_id) >= 1, timeout=20, what="a failed attempt")
        daemon.kill()
        receiver = Receiver(secret, port=port).__enter__()  # back, on the same URL
        daemon = DaemonProcess(config).start()
        wait_until(lambda: "job.rejected" in receiver.types(), timeout=30, what="job.rejected after the restart")
        (rejected,) = [r for r in receiver.ok() if r["payload"]["type"] == "job.rejected"]
        assert rejected["id"] == msg_id  # the original webhook-id
        assert rejected["payload"]["data"]["job_id"] == enhance and not receiver.rejected

        again = Stream(api, last_id=last_id)
        wait_until(lambda: "job.rejected" in again.types(enhance), timeout=20, what="replay")
        with sqlite3.connect(f"file:{data / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True) as conn:
            missed = [str(r[0]) for r in conn.execute("SELECT seq FROM events WHERE seq > ? ORDER BY seq", (int(last_id),))]
        wait_until(lambda: [e["id"] for e in again.events] == missed, timeout=10, what="exactly the missed events")
        assert {"job.delivered", "job.rejected"} <= {e["event"] for e in again.events}
        again.close()
    finally:
        if stream is not None:
            stream.close()
        receiver.close()
        api.close()
        daemon.close()
