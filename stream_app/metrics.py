"""Prometheus counters of one worker, in a registry of its own so apps can share a process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "RateLimitedLog"]


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
