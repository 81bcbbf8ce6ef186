"""The webhook sender: drains the ledger's outbox to each configured receiver (Standard Webhooks v1).

One thread per endpoint, so a slow or dead receiver holds up neither the others nor the daemon.
Each round it copies new events into its deliveries (:meth:`Ledger.schedule_deliveries`), then
POSTs what is due, oldest first, and records the outcome with the message's next due time
(``events.retry_schedule``: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h by default; after
the last attempt the message is ``failed`` for that endpoint).  Everything is in the ledger, so a
restart, even after ``SIGKILL``, resumes with the same ``webhook-id`` and the same backoff.

Each attempt is signed afresh (``webhook-timestamp`` is the attempt's time) with every secret in
the endpoint's ``secret_file`` (two during a rotation), by the ``standardwebhooks`` package.
Requests time out after ``events.timeout_seconds``, redirects are never followed (a 3xx is a
failure), and a host resolving to a link-local or cloud-metadata address is refused unless the
endpoint sets ``allow_link_local``; the connection goes to the address that was checked.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from astrowatch.core.errors import ConfigError
from astrowatch.core.jobs import EventType, IngestOutcome
from astrowatch.core.secrets import read_secret_file, redact
from astrowatch.storage.layout import USERS, Layout, is_ignored_name
from astrowatch.storage.outbox import Delivery, Event

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.core.config import Config, EventsConfig, WebhookConfig
    from astrowatch.storage.ledger import Ledger

log = structlog.get_logger("astrowatch.webhooks")

POLL_SECONDS = 0.5  # how soon a new event is picked up
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "astrowatch-webhooks/1"
METADATA = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
            ipaddress.ip_network("fd00:ec2::254/128"))


class Refused(Exception):
    """A target the sender will not call (its address, its scheme)."""


def load_signers(hook: WebhookConfig) -> list[Any]:
    """One ``standardwebhooks.Webhook`` per secret in ``secret_file`` (one a line); ConfigError if
    the file is unsafe or holds no usable ``whsec_`` secret."""
    try:
        from standardwebhooks import Webhook
    except ImportError:
        raise ConfigError("webhooks: the standardwebhooks package is not installed",
                          hint="pip install 'astrowatch[api]'") from None
    what = f"webhooks[{hook.url}].secret_file"
    text = read_secret_file(hook.secret_file, what)
    signers = []
    for line in (x.strip() for x in text.splitlines()):
        if not line:
            continue
        if not line.startswith("whsec_"):
            raise ConfigError(f"{what}: each line must be a secret written whsec_<base64>")
        try:
            signers.append(Webhook(line))
        except Exception as exc:  # binascii.Error, EmptyWebhookSecretError...
            raise ConfigError(f"{what}: not a valid whsec_ secret ({type(exc).__name__})") from None
    if not signers:
        raise ConfigError(f"{what}: the file holds no secret", hint="write one whsec_<base64> line")
    return signers


def signature(signers: list[Any], msg_id: str, at: datetime, body: bytes) -> str:
    return " ".join(s.sign(msg_id, at, body) for s in signers)


def forbidden(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in METADATA if net.version == ip.version)


class _Pinned(http.client.HTTPConnection):
    """An HTTP(S) connection to one already-checked address (no second DNS lookup)."""

    def __init__(self, host: str, port: int, addr: str, timeout: float, tls: bool) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addr, self._tls = addr, tls

    def connect(self) -> None:
        sock = socket.create_connection((self._addr, self.port), self.timeout)
        if self._tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_link_local: bool = False) -> int:
    """POST ``body``; returns the HTTP status (redirects are returned, never followed).  Raises
    :class:`Refused` for a forbidden target, ``OSError`` for network errors and timeouts."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"{url!r} is not an http(s) URL")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    addrs = [str(info[4][0]) for info in infos]
    if not allow_link_local and any(forbidden(a) for a in addrs):
        raise Refused(f"{parts.hostname} resolves to a link-local or cloud-metadata address "
                      "(set allow_link_local on this webhook to allow it)")
    conn = _Pinned(parts.hostname, port, addrs[0], timeout, tls)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", target, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(MAX_RESPONSE_BYTES)
        return int(resp.status)
    finally:
        conn.close()


def next_attempt(schedule: list[float], attempts: int, now: float) -> float | None:
    """When attempt ``attempts + 1`` is due after ``attempts`` failed ones, or None: give up."""
    return now + schedule[attempts] if attempts < len(schedule) else None


class EndpointSender(threading.Thread):
    """Delivers one endpoint's messages until :meth:`stop`."""

    def __init__(self, ledger: Ledger, hook: WebhookConfig, events: EventsConfig,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name=f"webhook {urlsplit(hook.url).netloc}", daemon=True)
        self.ledger, self.hook, self.events, self.clock = ledger, hook, events, clock
        self.signers = load_signers(hook)
        self.types = frozenset(hook.events) if hook.events is not None else None
        self._stop_event = threading.Event()
        ledger.schedule_deliveries(hook.url, self.types, clock())  # a new endpoint starts from now

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                busy = self.round()
            except Exception:
                log.exception("webhook sender error; retrying", endpoint=self.hook.url)
                busy = False
            if not busy:
                self._stop_event.wait(POLL_SECONDS)
        self.ledger.close()

    def round(self) -> bool:
        """Schedule new events and send what is due; True if there may be more due right now."""
        now = self.clock()
        self.ledger.schedule_deliveries(self.hook.url, self.types, now)
        due = self.ledger.due_deliveries(self.hook.url, now)
        for event, attempts in due:
            if self._stop_event.is_set():
                return False
            self.deliver(event, attempts)
        return len(due) > 0

    def deliver(self, event: Event, attempts: int) -> bool:
        body = event.payload.encode("utf-8")
        at = datetime.now(UTC)
        headers = {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": event.msg_id,
                   "webhook-timestamp": str(int(at.timestamp())),
                   "webhook-signature": signature(self.signers, event.msg_id, at, body)}
        error: str | None = None
        try:
            status = post(self.hook.url, body, headers, timeout=self.events.timeout_seconds,
                          allow_link_local=self.hook.allow_link_local)
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except Refused as exc:
            error = f"refused: {exc}"
        except (OSError, http.client.HTTPException) as exc:
            error = redact(f"{type(exc).__name__}: {exc}")[:500]
        attempts += 1
        now = self.clock()
        if error is None:
            self.ledger.delivery_done(event.seq, self.hook.url, attempts=attempts, state=Delivery.DELIVERED,
                                      next_at=now, error=None)
            log.debug("webhook delivered", endpoint=self.hook.url, type=event.type, webhook_id=event.msg_id)
            return True
        due = next_attempt(self.events.retry_schedule, attempts, now)
        state = Delivery.PENDING if due is not None else Delivery.FAILED
        self.ledger.delivery_done(event.seq, self.hook.url, attempts=attempts, state=state,
                                  next_at=due if due is not None else now, error=error)
        emit = log.warning if state == Delivery.PENDING else log.error
        emit("webhook not delivered" if due is not None else "webhook failed for good", endpoint=self.hook.url,
             type=event.type, webhook_id=event.msg_id, attempt=attempts, error=error,
             retry_in_s=None if due is None else round(due - now, 1))
        return False


class WebhookSenders:
    """The daemon's senders: one thread per ``webhooks`` entry; restarted on a config reload."""

    def __init__(self, config: Config, ledger: Ledger) -> None:
        self.ledger = ledger
        self.threads = [EndpointSender(ledger, hook, config.events) for hook in config.webhooks]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        for thread in self.threads:
            thread.stop()
        for thread in self.threads:
            thread.join(timeout=1.0)  # daemon threads: a request stuck in its timeout does not hold the exit

    def reload(self, config: Config) -> None:
        new = [EndpointSender(self.ledger, hook, config.events) for hook in config.webhooks]  # ConfigError: keep the old
        self.stop()
        self.threads = new
        self.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def restart_dead(self) -> None:
        for i, thread in enumerate(self.threads):
            if thread.ident is not None and not thread.is_alive() and not thread.stopping:
                log.error("webhook sender thread died; starting a new one", endpoint=thread.hook.url)
                self.threads[i] = EndpointSender(self.ledger, thread.hook, thread.events)
                self.threads[i].start()


def send_test(hook: WebhookConfig, events: EventsConfig, payload: dict[str, Any], msg_id: str) -> tuple[bool, str]:
    """One signed test message to ``hook`` (``astrowatch webhooks test``): ``(ok, what happened)``."""
    import json

    body = json.dumps(payload, separators=(",", ":")).encode()
    at = datetime.now(UTC)
    headers = {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": msg_id,
               "webhook-timestamp": str(int(at.timestamp())),
               "webhook-signature": signature(load_signers(hook), msg_id, at, body)}
    try:
        status = post(hook.url, body, headers, timeout=events.timeout_seconds, allow_link_local=hook.allow_link_local)
    except Refused as exc:
        return False, f"refused: {exc}"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return 200 <= status < 300, f"HTTP {status}"


# what ingest made of a user-folder file that made no job -> the reason given in input.skipped
SKIP_REASONS: dict[str, str] = {IngestOutcome.UNCHANGED: "unchanged", IngestOutcome.DUPLICATE: "duplicate",
                IngestOutcome.SAME_RENDER: "same render", IngestOutcome.IGNORED: "not an input",
                IngestOutcome.FAILED: "refused"}
SKIP_HINTS = {"unchanged": "the same bytes as the last job made from this file",
              "duplicate": "the same bytes as a job of this user not finished yet",
              "same render": "another file, but it would render the same picture",
              "not an input": "accepted: theme_<user>.json and photos",
              "refused": "see failed/<user>/ for the reason"}


def record_skipped(layout: Layout, ledger: Ledger, path: str, outcome: object) -> bool:
    """``input.skipped`` for a file dropped or uploaded into ``Utilisateurs/<user>/`` that made no
    job (hidden and temporary files, the daemon's own deliveries and style images say nothing)."""
    reason = SKIP_REASONS.get(outcome) if isinstance(outcome, str) else None
    if reason is None:
        return False
    try:
        parts = Path(path).relative_to(layout.root).parts
    except ValueError:
        return False
    if len(parts) != 3 or parts[0] != USERS:
        return False
    user, name = parts[1], parts[2]
    lower = name.lower()
    if reason == "not an input" and (is_ignored_name(name) or lower == f"theme_{user.lower()}.png"
                                     or lower.startswith("moodboard.")):
        return False
    ledger.record_event(EventType.INPUT_SKIPPED, user=user, data={
        "user": user, "source": name, "path": f"{USERS}/{user}/{name}", "reason": reason,
        "hint": SKIP_HINTS[reason]})
    return True
