"""``/metrics``: Prometheus metrics read from the ledger at scrape time.

The ledger is the source of truth, so every API process (and a restart) reports the same
numbers and nothing needs ``prometheus_client``'s multi-process mode.  Counters and the
histogram are cumulative because jobs and their history are never deleted.

User names are the upstream app's users: ``astrowatch_inbox_results{user}`` is in the output only
for a scrape that presents the API token (``render(..., per_user=True)``).  Without the token, or
where none is configured, ``/metrics`` carries no user name: ``astrowatch_inbox_results_all`` (no
label) is always there.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from astrowatch.core.jobs import STATES, JobKind, JobState

if TYPE_CHECKING:  # pragma: no cover
    from astrowatch.api.service import Service

# seconds per image: CPU wheel/fake (sub-second) up to SDXL on CPU or a slow remote API (minutes)
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
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
        self._lock = threading.Lock()
        self._seen = 0  # last history row added to the histogram (it only grows: add increments)
        self._hist: dict[str, list[float]] = {}  # backend -> [count per bucket..., +Inf count, sum]

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
        for cause, n in ledger.failure_causes().items():
            by_reason[REASON_CLASS.get(cause, "other")] += n
        for reason in REASONS:
            failures.add_metric([reason], by_reason[reason])
        yield failures
        yield self._seconds(ledger)
        yield from self._webhooks(ledger, CounterMetricFamily, GaugeMetricFamily)
        last = GaugeMetricFamily("astrowatch_last_success_timestamp_seconds",
                                 "when a result last reached the inbox (Unix time; 0 = never)")
        last.add_metric([], ledger.last_entered(JobState.INBOX) or 0.0)
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
        counts = ledger.counts_by_kind()
        for state in STATES:
            for kind in JobKind:
                jobs.add_metric([state, kind], counts.get((state, kind), 0))
        yield jobs
        by_user = ledger.counts_by_user(JobState.INBOX)
        total = gauge("astrowatch_inbox_results_all", "results waiting for review, all users")
        total.add_metric([], sum(by_user.values()))
        yield total
        if per_user:  # user names: only for a scrape with the API token
            inbox = gauge("astrowatch_inbox_results", "results waiting for review, per user", labels=["user"])
            for user, n in sorted(by_user.items()):
                inbox.add_metric([user], n)
            yield inbox

    def _waiting(self, ledger: Any, gauge: Any) -> Iterator[Any]:
        waiting_jobs = ledger.by_state(JobState.WAITING)
        waiting = gauge("astrowatch_waiting_jobs", "jobs waiting for their backend to come back", labels=["backend"])
        for backend, n in sorted(Counter(self.service.backend_of(j) or "?" for j in waiting_jobs).items()):
            waiting.add_metric([backend], n)
        yield waiting
        oldest = gauge("astrowatch_waiting_oldest_seconds", "how long the oldest waiting job has waited (0 = none)")
        oldest.add_metric([], max((time.time() - j.updated_at for j in waiting_jobs), default=0.0))
        yield oldest

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

        with self._lock:
            rows, self._seen = ledger.generation_seconds(after=self._seen)
            for backend, seconds in rows:
                acc = self._hist.setdefault(backend or "?", [0.0] * (len(BUCKETS) + 2))
                for i, bound in enumerate(BUCKETS):
                    acc[i] += seconds <= bound
                acc[-2] += 1
                acc[-1] += seconds
            snapshot = {backend: list(acc) for backend, acc in self._hist.items()}
        hist = HistogramMetricFamily("astrowatch_image_seconds", "seconds per result (claim to publish), per backend",
                                     labels=["backend"])
        for backend, acc in sorted(snapshot.items()):
            buckets = [(_le(b), acc[i]) for i, b in enumerate(BUCKETS)] + [("+Inf", acc[-2])]
            hist.add_metric([backend], buckets, acc[-1])
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
