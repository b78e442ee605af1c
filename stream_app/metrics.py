"""Prometheus counters of one worker, in a registry of its own so apps can share a process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "LagSource", "MalformedReads", "Metrics", "RateLimitedLog"]

# Consumer lag by (topic, partition), computed when scraped.
LagSource = Callable[[], Mapping[tuple[str, int], int]]

# Event-to-publish latency: sub-second to a few seconds live; minutes to hours while a backlog
# or replay is worked off.
LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class _LagCollector:
    """``kpi_consumer_lag{topic,partition}``, read from the customer stage at scrape time.

    A collector rather than a gauge that is set: partitions come and go with rebalances, and
    a revoked partition must disappear from the scrape instead of keeping its last value.
    """

    NAME = "kpi_consumer_lag"
    HELP = (
        "Messages of an input topic partition this worker owns that its customer stage has "
        "not read yet (high watermark minus next offset to read)."
    )

    def __init__(self) -> None:
        self.source: LagSource | None = None

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.NAME, self.HELP, labels=["topic", "partition"])

    def describe(self) -> Iterator[Any]:
        yield self._family()

    def collect(self) -> Iterator[Any]:
        family = self._family()
        source = self.source
        if source is not None:
            for (topic, partition), lag in sorted(source().items()):
                family.add_metric([topic, str(partition)], lag)
        yield family


class Metrics:
    """The worker's counters; exposed as text on ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "kpi_events_total",
            "Valid input events accepted, by event type.",
            ["event_type"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "kpi_dead_letters_total",
            "Messages sent to the dead-letter topic, by machine-readable reason.",
            ["reason"],
            registry=self.registry,
        )

        self.duplicates = Counter(
            "kpi_duplicates_total",
            "Events ignored because their event_id was already processed.",
            registry=self.registry,
        )
        self.stage_messages_refused = Counter(
            "kpi_stage_messages_refused_total",
            "Messages from the customer stage the segment stage did not apply: undecodable, "
            "or in a format this worker cannot read (a newer version shares the group).",
            ["reason"],
            registry=self.registry,
        )
        self.snapshots = Counter(
            "kpi_snapshots_published_total",
            "KPI snapshots published (Redis hash, pub/sub, stream and Kafka).",
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "kpi_publish_seconds",
            "Time of one pipelined Redis publish round.",
            registry=self.registry,
        )
        self.event_to_publish = Histogram(
            "kpi_event_to_publish_seconds",
            "Wall-clock time from the occurred_at of the newest event a publish round includes "
            "(the watermark) to the end of that round's Redis write; observed once per round "
            "that moves the watermark forward.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.last_publish = Gauge(
            "kpi_last_publish_timestamp_seconds",
            "Unix time of this worker's last successful publish round (0: none yet).",
            registry=self.registry,
        )
        self._lag = _LagCollector()
        self.registry.register(self._lag)

        self.alerts = Counter(
            "kpi_alerts_total",
            "Alert transitions this worker published (Redis, Kafka, webhooks), by kind and status.",
            ["kind", "status"],
            registry=self.registry,
        )
        self.alerts_suppressed = Counter(
            "kpi_alerts_suppressed_total",
            "Alert transitions found already sent (by another worker or before a restart).",
            registry=self.registry,
        )
        self.alert_evaluations = Counter(
            "kpi_alert_evaluations_total",
            "Closed buckets (churn) and windows (rules) evaluated, per segment and rule.",
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "kpi_alert_webhook_requests_total",
            "Webhook POST outcomes: ok, retry (will try again) or failed (gave up).",
            ["result"],
            registry=self.registry,
        )
        self.webhook_dropped = Counter(
            "kpi_alert_webhook_dropped_total",
            "Alerts dropped for a webhook because its queue was full.",
            registry=self.registry,
        )

    def set_lag_source(self, source: LagSource | None) -> None:
        """Where ``kpi_consumer_lag`` comes from (the customer stage of this worker)."""
        self._lag.source = source

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters by reason so far, for logs and the health endpoint."""
        counts: dict[str, int] = {}
        for metric in self.dead_letters.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["reason"]] = int(sample.value)
        return counts

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RateLimitedLog:
    """Logs at most ``burst`` lines per key per ``period_s``, then one summary of what it held back.

    Hostile input can produce a dead letter per message; the log must stay readable.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        period_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._period_s = period_s
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = self._clock()
        started, count = self._windows.get(key, (now, 0))
        if now - started >= self._period_s:
            suppressed = count - self._burst
            if suppressed > 0:
                self._logger.warning(
                    "%d more %s messages were not logged in the last %.0fs",
                    suppressed,
                    key,
                    self._period_s,
                )
            started, count = now, 0
        count += 1
        self._windows[key] = (started, count)
        if count <= self._burst:
            self._logger.warning(msg, *args)


class MalformedReads:
    """``kpi_dashboard_malformed_total{record}``: what the API and live updates read from Redis
    and left out because it does not fit the contract, with one log line per kind a minute.

    Redis is writable by more than the publisher (an operator, a bug, another service), so
    its data is untrusted: one bad record is skipped, never fatal to a response or the hub.
    """

    RECORDS = ("field", "snapshot", "history", "alert", "message", "key", "at_risk")

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counter = Counter(
            "kpi_dashboard_malformed_total",
            "Records read from Redis and left out as not what the contract says, by kind: "
            "field (of a snapshot), snapshot, history (entry), alert, message (live), key, "
            "at_risk (entry of an at-risk set).",
            ["record"],
            registry=registry if registry is not None else CollectorRegistry(),
        )
        for record in self.RECORDS:
            self.counter.labels(record)  # every kind shows, at 0, before the first
        self._log = RateLimitedLog(
            logger or logging.getLogger("stream_app.dashboard"), burst=1, clock=clock
        )

    def skipped(self, record: str, where: str, count: int = 1) -> None:
        """``count`` malformed ``record``s read at ``where`` (a key or channel) were left out."""
        if count <= 0:
            return
        self.counter.labels(record).inc(count)
        self._log.warning(
            record,
            "left out %d malformed %s(s) read from Redis at %r (not what the contract says)",
            count,
            record,
            where[:200],
        )
