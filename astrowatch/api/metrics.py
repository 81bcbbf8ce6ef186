"""``/metrics``: Prometheus metrics read from the ledger at scrape time.

The ledger is the source of truth, so every API process (and a restart) reports the same
numbers and nothing needs ``prometheus_client``'s multi-process mode.  Totals come from the
ledger's counters (:mod:`astrowatch.storage.counters`), written in the same transaction as each
state change: a scrape reads a few rows, however long the history.  Counters and the histogram
are cumulative because jobs are never deleted.

User names are the upstream app's users, and a label set that grows with them is a cost for the
Prometheus server: ``astrowatch_inbox_results{user}`` is in the output only where
``api.metrics_per_user`` is set and the scrape presents the API token (``render(...,
per_user=True)``).  Otherwise ``/metrics`` carries no user name and its size does not depend on
the number of users: ``astrowatch_inbox_results_all`` (no label) is always there.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from astrowatch.core.jobs import STATES, BackendName, JobKind, JobState
from astrowatch.storage.counters import BUCKETS

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.api.service import Service

# the history note of a job's move to ``failing`` is the exception class; Prometheus gets its family
REASON_CLASS = {
    "input": "input", "InputError": "input", "UnsafePathError": "input", "PermanentBackendError": "refused",
    "BackendError": "backend", "BackendUnavailable": "backend", "ConfigError": "config",
    "Interrupted": "interrupted", None: "unknown",
}
REASONS = ("input", "refused", "backend", "config", "interrupted", "other", "unknown")


class LedgerCollector:
    """A ``prometheus_client`` custom collector (``collect()`` yields metric families)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def describe(self) -> list[Any]:
        return []  # no collect() at registration time (the ledger may not exist yet)

    def collect(self, *, per_user: bool = False) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from astrowatch.api.service import ApiError

        ok, health = self.service.health()
        up = GaugeMetricFamily("astrowatch_daemon_up", "1 when the daemon's heartbeat is fresh (as /healthz)")
        up.add_metric([], 1.0 if health["daemon_up"] else 0.0)
        yield up
        yield self._supervision(CounterMetricFamily)
        try:
            ledger = self.service.reader()
        except ApiError:
            return
        yield from self._jobs(ledger, GaugeMetricFamily, per_user=per_user)
        yield from self._waiting(ledger, GaugeMetricFamily)
        failures = CounterMetricFamily("astrowatch_failures", "failed jobs by reason class", labels=["reason"])
        by_reason: Counter[str] = Counter()
        for cause, n in ledger.failure_counts().items():
            by_reason[REASON_CLASS.get(cause, "other")] += n
        for reason in REASONS:
            failures.add_metric([reason], by_reason[reason])
        yield failures
        yield self._seconds(ledger)
        yield from self._webhooks(ledger, CounterMetricFamily, GaugeMetricFamily)
        last = GaugeMetricFamily("astrowatch_last_success_timestamp_seconds",
                                 "when a result last reached the inbox (Unix time; 0 = never)")
        last.add_metric([], ledger.last_inbox_at() or 0.0)
        yield last

    def _supervision(self, counter: Any) -> Any:
        """The daemon's own thread deaths and stuck jobs (its state file, counted across restarts)."""
        from astrowatch.runtime.status import daemon_state

        facts = daemon_state(self.service.layout).get("supervision") or {}
        deaths = counter("astrowatch_thread_deaths", "daemon threads that died or were stuck in a job "
                         "(each stops the daemon, non-zero; systemd restarts it)", labels=["what"])
        deaths.add_metric(["died"], float(facts.get("thread_deaths") or 0))
        deaths.add_metric(["stuck"], float(facts.get("jobs_stuck") or 0))
        return deaths

    def _jobs(self, ledger: Any, gauge: Any, *, per_user: bool) -> Iterator[Any]:
        jobs = gauge("astrowatch_jobs", "jobs by state and kind", labels=["state", "kind"])
        counts = ledger.job_counts()
        for state in STATES:
            for kind in JobKind:
                jobs.add_metric([state, kind], counts.get((state, kind), 0))
        yield jobs
        total = gauge("astrowatch_inbox_results_all", "results waiting for review, all users")
        total.add_metric([], sum(n for (state, _kind), n in counts.items() if state == JobState.INBOX))
        yield total
        if per_user:  # user names: only for a scrape with the API token (one series per user)
            inbox = gauge("astrowatch_inbox_results", "results waiting for review, per user", labels=["user"])
            for user, n in sorted(ledger.counts_by_user(JobState.INBOX).items()):
                inbox.add_metric([user], n)
            yield inbox

    def _waiting(self, ledger: Any, gauge: Any) -> Iterator[Any]:
        groups = ledger.waiting_groups()  # one row per kind and requested backend, not per job
        by_backend: Counter[str] = Counter()
        for g in groups:
            by_backend[self._backend(g["kind"], g["backend"])] += g["n"]
        waiting = gauge("astrowatch_waiting_jobs", "jobs waiting for their backend to come back", labels=["backend"])
        for backend, n in sorted(by_backend.items()):
            waiting.add_metric([backend], n)
        yield waiting
        oldest = gauge("astrowatch_waiting_oldest_seconds", "how long the oldest waiting job has waited (0 = none)")
        oldest.add_metric([], max((time.time() - g["since"] for g in groups), default=0.0))
        yield oldest

    def _backend(self, kind: str, requested: Any) -> str:
        """The backend a waiting job of ``kind`` runs on (as :meth:`Service.backend_of` without a result)."""
        from astrowatch.runtime.status import daemon_state

        if isinstance(requested, str) and requested:
            return requested
        default = str(getattr(self.service.config, kind).backend)
        if default == BackendName.AUTO:
            default = str((daemon_state(self.service.layout).get("backends") or {}).get(kind, default))
        return default or "?"

    def _webhooks(self, ledger: Any, counter: Any, gauge: Any) -> Iterator[Any]:
        """Webhook messages per endpoint and state (delivered and failed ones within
        events.retention_days), the backlog still to send, and the newest event id."""
        counts = ledger.delivery_counts()
        messages = counter("astrowatch_webhook_messages", "webhook messages by endpoint and outcome "
                           "(kept events.retention_days)", labels=["endpoint", "state"])
        backlog = gauge("astrowatch_webhook_backlog", "webhook messages not delivered yet", labels=["endpoint"])
        for (endpoint, state), n in sorted(counts.items()):
            if state == "pending":
                backlog.add_metric([endpoint], n)
            else:
                messages.add_metric([endpoint, state], n)
        yield messages
        yield backlog
        seq = gauge("astrowatch_events_last_id", "the newest event's id (GET /api/events)")
        seq.add_metric([], ledger.last_event_seq())
        yield seq

    def _seconds(self, ledger: Any) -> Any:
        from prometheus_client.core import HistogramMetricFamily

        hist = HistogramMetricFamily("astrowatch_image_seconds", "seconds per result (claim to publish), per backend",
                                     labels=["backend"])
        for backend, d in sorted(ledger.durations().items()):
            buckets, running = [], 0.0
            for bound, n in zip(BUCKETS, d.buckets, strict=True):
                running += n
                buckets.append((_le(bound), running))
            hist.add_metric([backend], [*buckets, ("+Inf", d.count)], d.sum)
        return hist


def _le(bound: float) -> str:
    return repr(float(bound))


class _View:
    """One scrape's view of the collector: with or without the per-user series."""

    def __init__(self, collector: LedgerCollector, per_user: bool) -> None:
        self.collector, self.per_user = collector, per_user

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        return self.collector.collect(per_user=self.per_user)


def render(collector: LedgerCollector, *, per_user: bool = False) -> tuple[bytes, str]:
    """The text exposition and its content type; ``per_user`` only for a scrape with the token."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_View(collector, per_user))
    return generate_latest(registry), CONTENT_TYPE_LATEST
