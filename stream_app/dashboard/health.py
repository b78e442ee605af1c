"""``GET /health``: what is checked, and when the answer is 503.

A worker is **unhealthy** (503) when any of these holds:

- **redis**: a PING does not answer within 2 s;
- **broker**: no broker answers a metadata request within 3 s (probed at most every 2 s);
- **publisher**: the publish timer has not run for ``KPI_HEALTH_STALL_AFTER``, or snapshots
  have been due but failed to go out for that long;
- **consumer**: the customer stage has input waiting (lag > 0) but read nothing for
  ``KPI_HEALTH_STALL_AFTER``;
- **live**: clients wait for live updates but the hub that feeds them is not running, or
  its last attempt failed with an unexpected error (``LiveHub.check``).

A quiet worker (no traffic, nothing to publish) is healthy, and so is one that owns no
partition (more workers than partitions). The standalone ``kpi dashboard`` checks Redis and
the live updates.
Error details are exception class names: never a URL, password or message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from stream_app.kafka import aiokafka_options, partials_topic
from stream_app.settings import Settings

from .live import LiveHub
from .reader import KpiReader

if TYPE_CHECKING:
    import faust

    from stream_app.context import AppContext
    from stream_app.customers.engine import CustomerEngine

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_S: Final = 2.0
BROKER_TIMEOUT_S: Final = 3.0
BROKER_CACHE_S: Final = 2.0

Check = dict[str, Any]


class HealthSource(Protocol):
    """Answers ``(healthy, body)``; ``detailed`` is False for a caller without the token."""

    async def __call__(self, detailed: bool) -> tuple[bool, dict[str, Any]]: ...


def _error(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else exc.__class__.__name__


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


async def check_redis(reader: KpiReader) -> Check:
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            latency = await reader.ping()
    except Exception as exc:  # any failure to answer is the finding, not an error of ours
        return {"ok": False, "error": _error(exc)}
    return {"ok": True, "latency_ms": round(latency * 1000, 2)}


class KafkaProbe:
    """A metadata request to the brokers, on a client of its own; cached for a moment."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout_s: float = BROKER_TIMEOUT_S,
        cache_s: float = BROKER_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._options = aiokafka_options(settings)
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._clock = clock
        self._client: Any = None
        self._last: tuple[float, Check] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> Check:
        async with self._lock:  # concurrent /health calls share one probe
            if self._last is not None and self._clock() - self._last[0] < self.cache_s:
                return self._last[1]
            result = await self._probe()
            self._last = (self._clock(), result)
            return result

    async def _probe(self) -> Check:
        from aiokafka import AIOKafkaClient

        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._client is None:
                    client = AIOKafkaClient(
                        request_timeout_ms=int(self.timeout_s * 1000), **self._options
                    )
                    self._client = client
                    await client.bootstrap()
                metadata = await self._client.fetch_all_metadata()
        except Exception as exc:  # unreachable, refused, auth failed: all "not ok"
            await self.close()  # bootstrap again next time
            return {"ok": False, "error": _error(exc)}
        return {
            "ok": True,
            "brokers": len(metadata.brokers()),
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


def consumer_lag(engine: CustomerEngine | None) -> dict[tuple[str, int], int]:
    """Per input topic partition the customer stage owns: high watermark - next offset to read."""
    return engine.lags() if engine is not None else {}


class WorkerHealth:
    """The worker's ``/health``: Redis, broker, publisher and consumer, plus what it owns."""

    def __init__(
        self,
        app: faust.App,
        ctx: AppContext,
        reader: KpiReader,
        kafka: KafkaProbe,
        *,
        hub: LiveHub | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.hub = hub
        self.ctx = ctx
        self.reader = reader
        self.kafka = kafka
        self._clock = clock
        self.stall_after_s = ctx.settings.health_stall_after.total_seconds()
        self._partials = partials_topic(ctx.settings)
        # Consumer progress: the offsets read, and when they last moved.
        self._read_total: int | None = None
        self._read_moved_at = clock()

    async def __call__(self, detailed: bool) -> tuple[bool, dict[str, Any]]:
        redis, broker = await asyncio.gather(check_redis(self.reader), self.kafka.check())
        lags = consumer_lag(self.ctx.engine)
        checks = {
            "redis": redis,
            "broker": broker,
            "publisher": self._publisher(),
            "consumer": self._consumer(lags),
        }
        if self.hub is not None:
            checks["live"] = self.hub.check()
        problems = [name for name, check in checks.items() if not check["ok"]]
        healthy = not problems
        body: dict[str, Any] = {"status": "ok" if healthy else "unhealthy"}
        if not detailed:
            return healthy, body
        engine = self.ctx.engine
        publisher = self.ctx.publisher
        consumer = self.app.consumer
        body.update(
            {
                "problems": problems,
                "app_id": self.ctx.settings.app_id,
                "checks": checks,
                "consumer_lag": {
                    "total": sum(lags.values()),
                    "partitions": [
                        {"topic": topic, "partition": partition, "lag": lag}
                        for (topic, partition), lag in sorted(lags.items())
                    ],
                },
                "customer_partitions": sorted(engine.states) if engine is not None else [],
                "first_input_at": _iso(engine.first_input_at if engine is not None else None),
                "segment_partitions": sorted(
                    tp.partition
                    for tp in (consumer.assignment() if consumer is not None else ())
                    if tp.topic == self._partials
                ),
                "last_publish_at": _iso(publisher.last_publish_at if publisher else None),
                "dead_letters": self.ctx.metrics.dead_letter_counts(),
                "alerts": _alerts_health(self.ctx),
            }
        )
        return healthy, body

    def _publisher(self) -> Check:
        publisher = self.ctx.publisher
        if publisher is None:
            return {"ok": True, "state": "not started"}
        now = self._clock()
        check: Check = {"ok": True, "last_publish_at": _iso(publisher.last_publish_at)}
        if publisher.last_tick_at is not None and now - publisher.last_tick_at > self.stall_after_s:
            check.update(
                ok=False, error=f"publish timer idle for {now - publisher.last_tick_at:.0f}s"
            )
        elif publisher.pending_since is not None:
            waiting = now - publisher.pending_since
            check["failing_for_s"] = round(waiting, 1)
            if waiting > self.stall_after_s:
                check.update(ok=False, error=f"snapshots due but unpublished for {waiting:.0f}s")
        return check

    def _consumer(self, lags: Mapping[tuple[str, int], int]) -> Check:
        engine = self.ctx.engine
        if engine is None or engine.consumer is None:
            return {"ok": True, "state": "not started"}
        now = self._clock()
        read = sum(
            state.next_fetch(topic) for state in engine.states.values() for topic in engine.topics
        )
        if read != self._read_total:
            self._read_total = read
            self._read_moved_at = now
        lag = sum(lags.values())
        idle = now - self._read_moved_at
        if lag > 0 and idle > self.stall_after_s:
            return {
                "ok": False,
                "lag": lag,
                "error": f"{lag} messages waiting, none read for {idle:.0f}s",
            }
        return {"ok": True, "lag": lag}


def _alerts_health(ctx: AppContext) -> dict[str, object] | None:
    """What the alert service is doing on this worker (None when alerting is off)."""
    alerts = ctx.alerts
    if alerts is None:
        return None
    webhooks = alerts.webhooks
    return {
        "watchers": [watcher.name for watcher in alerts.watchers],
        "firing": [f"{rule} {segment}" for rule, segment in alerts.firing],
        "last_evaluation_at": alerts.last_tick_at.isoformat() if alerts.last_tick_at else None,
        "webhook_queue": webhooks.pending() if webhooks is not None else 0,
    }


class DashboardHealth:
    """The standalone dashboard's ``/health``: Redis answers and live updates run."""

    def __init__(self, reader: KpiReader, hub: LiveHub) -> None:
        self.reader = reader
        self.hub = hub

    async def __call__(self, detailed: bool) -> tuple[bool, dict[str, Any]]:
        checks = {"redis": await check_redis(self.reader), "live": self.hub.check()}
        problems = [name for name, check in checks.items() if not check["ok"]]
        healthy = not problems
        body: dict[str, Any] = {"status": "ok" if healthy else "unhealthy"}
        if detailed:
            body.update({"problems": problems, "checks": checks, "live_clients": self.hub.clients})
        return healthy, body
