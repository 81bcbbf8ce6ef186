"""``GET /api/events``: the outbox as Server-Sent Events (``sse-starlette``).

Each event is ``id: <outbox seq>``, ``event: <type>``, ``data: <the webhook body>``.  The seq is
durable and grows in commit order, so a client reconnecting with ``Last-Event-ID`` gets exactly
what came after it, across API and daemon restarts.  Without the header the stream starts with
the next event.  An id older than what the retention kept (``events.retention_days``) gets a first
``stream.resync`` event: resynchronise (``GET /api/astro-image/{user}``, ``GET /api/inbox``), then
carry on.  ``?user=`` keeps one user's events.  A comment line is sent at least every
``events.keepalive_seconds``.  The token is required like on every ``/api`` route.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
from anyio import to_thread
from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from astrowatch.api.openapi import UserQuery, errors, exactly
from astrowatch.api.service import ApiError, Service
from astrowatch.core.config import Config
from astrowatch.storage.outbox import RESYNC

POLL_SECONDS = 0.25  # how soon a committed event reaches the stream
LAST_EVENT_ID = re.compile("[0-9]{1,18}")  # an outbox seq (SQLite INTEGER: under 2**63)


def parse_last_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    if not LAST_EVENT_ID.fullmatch(value.strip()):  # ASCII digits (isdigit() takes "²", int() not)
        raise ApiError(400, f"Last-Event-ID {value[:40]!r} is not an event id", "send back the id: of an event")
    return int(value.strip())


def event_routes(service: Service, config: Config) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/events", response_class=EventSourceResponse, responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "the event stream (endless; a comment line at least every events.keepalive_seconds)"},
        **errors(400, s400="a user name the daemon refuses, or a Last-Event-ID that is not an event id")})
    async def events(request: Request, user: UserQuery = None,
                     last_event_id: str | None = Header(
                         None, alias="Last-Event-ID", description="the id: of the last event received: the stream "
                         "resumes after it (blank or absent: from the next event)",
                         json_schema_extra=exactly({"type": "string", "pattern": "^[0-9]{0,18}$"}))
                     ) -> EventSourceResponse:
        """Server-Sent Events: the webhook payloads, with ``id:`` for ``Last-Event-ID``."""
        who = service.user(user) if user is not None else None
        last = parse_last_id(last_event_id)
        ledger = await to_thread.run_sync(service.reader)

        async def stream() -> AsyncIterator[ServerSentEvent]:
            if last is None:
                after = await to_thread.run_sync(ledger.last_event_seq)
            else:
                after = last
                pruned = await to_thread.run_sync(ledger.pruned_through)
                if after < pruned:
                    yield ServerSentEvent(json.dumps(_resync(after, pruned)), event=RESYNC, id=str(pruned))
                    after = pruned
            while True:
                batch = await to_thread.run_sync(partial(ledger.events_after, after, user=who))
                for ev in batch:
                    yield ServerSentEvent(ev.payload, event=ev.type, id=str(ev.seq))
                    after = ev.seq
                if not batch:
                    if await request.is_disconnected():
                        return
                    await anyio.sleep(POLL_SECONDS)

        return EventSourceResponse(stream(), ping=config.events.keepalive_seconds,
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return router


def _resync(last: int, pruned: int) -> dict[str, Any]:
    return {"type": RESYNC, "data": {
        "last_event_id": last, "resume_after": pruned,
        "reason": "the events after your Last-Event-ID are older than events.retention_days and were pruned",
        "hint": "read the current state (GET /api/astro-image/{user}, GET /api/inbox), then carry on"}}
