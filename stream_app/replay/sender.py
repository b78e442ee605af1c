"""Send replay records to the input topics with aiokafka: batched, rate limited, stoppable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import EventType
from stream_app.kafka import error_text
from stream_app.replay.records import SourceError, SourceItem, Unroutable
from stream_app.settings import Settings

logger = logging.getLogger(__name__)

Monotonic = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Waits shorter than this are not worth a sleep; the next wait catches up.
_MIN_SLEEP_S = 0.005
# Unroutable rows are logged one by one up to this many, then only counted.
_LOG_SKIPPED = 10
# Progress is refreshed at most once per this many records when sending flat out.
_PROGRESS_EVERY = 64


class RateLimit:
    """At most ``rate`` records per wall-clock second, on average since the first record."""

    def __init__(self, rate: float | None, monotonic: Monotonic = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._monotonic = monotonic
        self._t0: float | None = None

    def delay(self, index: int) -> float:
        """Seconds to wait before sending record number ``index`` (from 0)."""
        now = self._monotonic()
        if self._t0 is None:
            self._t0 = now
        if self.rate is None:
            return 0.0
        return index / self.rate - (now - self._t0)


class Progress(Protocol):
    """Told how far a replay got: records sent and bytes of the file read."""

    def update(self, records: int, position: int) -> None: ...


class Producer(Protocol):
    """The part of ``AIOKafkaProducer`` replay uses (a fake in tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[Any]: ...


@dataclass
class ReplayResult:
    """How a replay ended: records acknowledged by the broker, rows skipped, any error."""

    sent: int = 0
    sent_by_type: Counter[EventType] = field(default_factory=Counter)
    skipped: int = 0
    interrupted: bool = False
    elapsed: float = 0.0
    error: str | None = None


def default_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer for replay; options come from the settings like every other client."""
    from stream_app.kafka import aiokafka_options

    # acks=all: an acknowledged record survives a leader change, so a finished replay is
    # complete. Oversized bad records (> 64 KiB) must reach the broker to be dead-lettered.
    return AIOKafkaProducer(
        **aiokafka_options(settings),
        acks="all",
        linger_ms=20,
        max_request_size=4 * 1024 * 1024,
    )


async def send_records(
    items: Iterable[SourceItem],
    topics: Mapping[EventType, str],
    producer: Producer,
    *,
    rate: float | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
    position: Callable[[], int] = lambda: 0,
    stop: asyncio.Event | None = None,
    monotonic: Monotonic = time.monotonic,
    sleep: Sleep | None = None,
) -> ReplayResult:
    """Send ``items`` to their topics through a started ``producer``.

    Sends are awaited ``batch_size`` at a time and whenever the rate limit makes the loop
    idle, so a record only counts as sent once the broker acknowledged it. Setting ``stop``
    ends the run after the records already handed to the producer are delivered.
    """
    stop = stop if stop is not None else asyncio.Event()
    pause: Sleep = sleep if sleep is not None else (lambda seconds: _sleep_unless(stop, seconds))
    limit = RateLimit(rate, monotonic)
    result = ReplayResult()
    started = monotonic()
    pending: list[tuple[EventType, asyncio.Future[Any]]] = []

    async def settle() -> None:
        batch = pending[:]
        pending.clear()
        await asyncio.gather(*(future for _, future in batch))
        result.sent += len(batch)
        result.sent_by_type.update(event_type for event_type, _ in batch)

    index = 0
    try:
        for item in items:
            if stop.is_set():
                result.interrupted = True
                break
            if isinstance(item, Unroutable):
                _log_skipped(item, result.skipped)
                result.skipped += 1
                continue
            wait = limit.delay(index)
            if wait > _MIN_SLEEP_S:
                await settle()  # deliver what is queued before idling
                await pause(wait)
                if stop.is_set():
                    result.interrupted = True
                    break
            future = await producer.send(topics[item.event_type], item.value, key=item.key)
            pending.append((item.event_type, future))
            index += 1
            if len(pending) >= batch_size:
                await settle()
            if progress is not None and (rate is not None or index % _PROGRESS_EVERY == 0):
                progress.update(result.sent + len(pending), position())
        await settle()
    except KafkaError as exc:
        result.error = error_text(exc)
        logger.error("sending to Kafka failed after %d records: %s", result.sent, result.error)
    except SourceError as exc:
        # The file broke off mid-way (bad encoding, NUL byte): keep what was already sent.
        result.error = str(exc)
        try:
            await settle()
        except KafkaError as kafka_error:
            logger.error("sending to Kafka failed: %s", kafka_error)
        logger.error("reading stopped after %d records: %s", result.sent, exc)
    if progress is not None:
        progress.update(result.sent, position())
    result.elapsed = monotonic() - started
    return result


def _log_skipped(item: Unroutable, skipped_before: int) -> None:
    if skipped_before < _LOG_SKIPPED:
        logger.error("line %d skipped (%s): %s", item.line, item.reason, item.message)
    elif skipped_before == _LOG_SKIPPED:
        logger.error("more lines skipped; the summary counts them (--dry-run lists them all)")


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` unless ``stop`` is set first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def replay_to_kafka(
    items: Iterable[SourceItem],
    settings: Settings,
    *,
    rate: float | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
    position: Callable[[], int] = lambda: 0,
    stop: asyncio.Event | None = None,
    producer_factory: Callable[[Settings], Producer] = default_producer,
) -> ReplayResult:
    """Send ``items`` to the input topics of ``settings``; the producer is flushed at the end."""
    from stream_app.kafka import input_topics

    producer = producer_factory(settings)
    try:
        await producer.start()
    except BaseException:
        # A producer that failed to start still holds its client's connections.
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()
        raise
    try:
        return await send_records(
            items,
            input_topics(settings),
            producer,
            rate=rate,
            batch_size=batch_size,
            progress=progress,
            position=position,
            stop=stop,
        )
    finally:
        with contextlib.suppress(KafkaError):
            await producer.stop()
