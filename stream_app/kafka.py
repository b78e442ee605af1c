"""Kafka connection options and topic administration shared by the worker and the tools."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, OffsetOutOfRangeError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from schemas import TOPIC_SUFFIXES, EventType
from stream_app.backoff import Backoff
from stream_app.settings import Settings, duration_ms

logger = logging.getLogger(__name__)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL, built from the configured files."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    password = settings.kafka_ssl_key_password
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        password=password.get_secret_value() if password else None,
    )
    return context


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def input_topics(settings: Settings) -> dict[EventType, str]:
    """Input topic name by event type, after the configured prefix."""
    return {event_type: settings.topic(suffix) for event_type, suffix in TOPIC_SUFFIXES.items()}


def changelog_topic(settings: Settings) -> str:
    """The customer stage's compacted changelog (internal)."""
    return f"{settings.app_id}-customers-changelog"


def partials_topic(settings: Settings) -> str:
    """Partial window sums from the customer stage to the segment stage (internal)."""
    return f"{settings.app_id}-segment-partials"


def forget_topic(settings: Settings) -> str:
    """``kpi forget`` requests, one per partition, read by the customer stage (internal)."""
    return f"{settings.app_id}-customer-forget"


def sentinel_topic(settings: Settings) -> str:
    """One record per worker start, to notice a broker that lost its data (internal)."""
    return f"{settings.app_id}-broker-sentinels"


# Dead letters carry the original bytes in base64 (4/3 larger); the producer and the
# dead-letter topic allow this much so that any message the broker accepted fits.
DEAD_LETTER_MAX_BYTES = 4 * 1024 * 1024

_TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    # A torn checkpoint's records must outlive the recovery that discards them.
    "changelog": {"cleanup.policy": "compact", "min.compaction.lag.ms": "86400000"},
    "partials": {"retention.ms": str(7 * 86_400_000)},
    "dead-letters": {"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)},
    # Each key is written once, so compaction keeps every record: none may ever expire.
    "sentinels": {"cleanup.policy": "compact"},
}


def public_topics(settings: Settings) -> list[str]:
    """Every topic of the contract: inputs, dead letters, KPI updates and alerts."""
    return [
        *input_topics(settings).values(),
        settings.dead_letter_topic,
        settings.kpi_updates_topic,
        settings.kpi_cohorts_topic,
        settings.kpi_alerts_topic,
        settings.lifecycle_topic,
    ]


@dataclass(frozen=True)
class TopicReport:
    """What ``ensure_topics`` did: created names, and existing ones with other partitions."""

    created: tuple[str, ...]
    mismatched: tuple[tuple[str, int], ...]


async def ensure_topics(settings: Settings, timeout_ms: int = 30_000) -> TopicReport:
    """Create the contract's topics that are missing, with the configured partitions.

    Input topics must share one partition count: the customer key then maps every
    event of a customer to the same partition number on every topic, which the
    per-customer stage relies on. A mismatch is reported, not repaired.
    """
    admin = AIOKafkaAdminClient(request_timeout_ms=timeout_ms, **aiokafka_options(settings))
    await admin.start()
    try:
        sentinels = sentinel_topic(settings)
        configs = {
            changelog_topic(settings): _TOPIC_CONFIGS["changelog"],
            partials_topic(settings): _TOPIC_CONFIGS["partials"],
            settings.dead_letter_topic: _TOPIC_CONFIGS["dead-letters"],
            sentinels: _TOPIC_CONFIGS["sentinels"],
        }
        wanted = [
            *public_topics(settings),
            changelog_topic(settings),
            partials_topic(settings),
            forget_topic(settings),
            sentinels,
        ]
        existing = await _partition_counts(admin, wanted)
        missing = [name for name in wanted if name not in existing]
        if missing:
            new = [
                NewTopic(
                    name,
                    1 if name == sentinels else settings.topic_partitions,
                    settings.topic_replication_factor,
                    topic_configs=configs.get(name, {}),
                )
                for name in missing
            ]
            try:
                await admin.create_topics(new, timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                logger.info("topics were created concurrently by another worker")
            logger.info("created topics: %s", ", ".join(missing))
        # Partition p of every input topic, of the changelog and of nothing else belongs
        # to one customer partition: their counts must agree.
        must_match = {
            *input_topics(settings).values(),
            changelog_topic(settings),
            partials_topic(settings),
        }
        mismatched = tuple(
            (name, count)
            for name, count in existing.items()
            if name in must_match and count != settings.topic_partitions
        )
        for name, count in mismatched:
            logger.error(
                "topic %s has %d partitions but KPI_TOPIC_PARTITIONS=%d: input and internal "
                "topics must all have the configured partition count",
                name,
                count,
                settings.topic_partitions,
            )
        return TopicReport(created=tuple(missing), mismatched=mismatched)
    finally:
        await admin.close()


# What to do when no broker answers, in every message that says so.
NO_BROKER_CURE = "start one with `kpi dev`, or set KPI_KAFKA_BOOTSTRAP_SERVERS"


class NoBrokerError(Exception):
    """No broker answered within the wait; the message names the address and the cure."""


def error_text(exc: BaseException) -> str:
    """An exception as ``Class: message``, the class once (aiokafka's own ``str`` has it)."""
    name, text = exc.__class__.__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def wait_for_topics(
    settings: Settings,
    timeout_s: float,
    *,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TopicReport:
    """``ensure_topics``, retried with backoff while no broker answers; ``NoBrokerError`` after
    ``timeout_s``. One log line at most every few seconds, naming the cure."""
    backoff = backoff or Backoff(timeout_s)
    servers = settings.kafka_bootstrap_servers
    while True:
        try:
            # aiokafka logs an ERROR per failed connection: this loop's line says it instead.
            with _quiet("aiokafka"):
                return asyncio.run(ensure_topics(settings))
        except (KafkaError, OSError) as exc:
            step = backoff.failed()
            if step.give_up:
                raise NoBrokerError(
                    f"no Kafka broker answers at {servers} after {step.elapsed_s:.0f}s and "
                    f"{step.attempt} attempts ({error_text(exc)}): {NO_BROKER_CURE}"
                ) from None
            if step.report:
                logger.warning(
                    "waiting for a Kafka broker at %s (attempt %d, %.0fs so far: %s); "
                    "retrying in %.1fs; %s",
                    servers,
                    step.attempt,
                    step.elapsed_s,
                    error_text(exc),
                    step.wait_s,
                    NO_BROKER_CURE,
                )
            sleep(step.wait_s)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only CRITICAL records of logger ``name`` (and its children) while inside."""
    quieted = logging.getLogger(name)
    level = quieted.level
    quieted.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        quieted.setLevel(level)


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each of ``names`` that exists."""
    try:
        listed = set(await admin.list_topics())
    except KafkaError:
        logger.exception("could not list topics")
        raise
    present = [name for name in names if name in listed]
    if not present:
        return {}
    counts: dict[str, int] = {}
    for description in await admin.describe_topics(present):
        partitions = description.get("partitions") or []
        if description.get("error_code", 0) == 0:
            counts[description["topic"]] = len(partitions)
    return counts


async def topics_ready(settings: Settings) -> bool:
    """Create missing topics; False (with the reason logged) when partition counts differ."""
    report = await ensure_topics(settings)
    if report.mismatched:
        names = ", ".join(f"{name} ({count})" for name, count in report.mismatched)
        logger.error(
            "input topics must have %d partitions (KPI_TOPIC_PARTITIONS), found %s",
            settings.topic_partitions,
            names,
        )
        return False
    return True


class Sentinel(Enum):
    """What a look at the broker found of a worker's sentinel record."""

    HELD = "held"
    GONE = "gone"
    UNKNOWN = "unknown"  # the broker did not answer: no verdict


class BrokerSentinel:
    """A record a worker writes at start, and checks for: if it is gone, the broker lost its data.

    Kafka never takes back an acknowledged record, and this one sits in a compacted topic under
    a key written only once, so nothing expires it. When the broker no longer holds it, the
    broker was restarted with an empty store (Tansu keeps everything in memory) or its topics
    were deleted: the input topics, changelogs and committed offsets the worker's state refers
    to are gone too. Each check costs one fetch of the record (and an offset lookup when the
    fetch finds nothing).
    """

    def __init__(self, settings: Settings, token: str) -> None:
        self.settings = settings
        self.token = token.encode()
        self.tp = TopicPartition(sentinel_topic(settings), 0)
        self.offset: int | None = None
        self._reader: AIOKafkaConsumer | None = None

    async def plant(self) -> int:
        """Write this worker's record (acknowledged by every replica); returns its offset."""
        producer = AIOKafkaProducer(acks="all", **aiokafka_options(self.settings))
        await producer.start()
        try:
            metadata = await producer.send_and_wait(
                self.tp.topic, self.token, key=self.token, partition=self.tp.partition
            )
        finally:
            await producer.stop()
        self.offset = int(metadata.offset)
        return self.offset

    async def check(self, timeout_s: float = 5.0) -> Sentinel:
        """HELD while the broker still has the record at its offset, GONE once it has not."""
        if self.offset is None:
            return Sentinel.UNKNOWN
        try:
            async with asyncio.timeout(timeout_s):
                return await self._look(self.offset)
        except (KafkaError, OSError, TimeoutError):
            return Sentinel.UNKNOWN

    async def _look(self, offset: int) -> Sentinel:
        reader = await self._started_reader()
        reader.seek(self.tp, offset)
        try:
            batch = await reader.getmany(self.tp, timeout_ms=1000, max_records=1)
        except OffsetOutOfRangeError:
            return Sentinel.GONE
        records = batch.get(self.tp, [])
        if records:
            record = records[0]
            held = record.offset == offset and record.key == self.token
            return Sentinel.HELD if held else Sentinel.GONE
        # Nothing there: gone if the log now ends at or before it. (Tansu's end offsets can be
        # short after multi-record batches, never long; this record is a batch of its own.)
        end = (await reader.end_offsets([self.tp]))[self.tp]
        return Sentinel.GONE if end <= offset else Sentinel.UNKNOWN

    async def _started_reader(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(
                group_id=None,
                enable_auto_commit=False,
                # Out of range means the record is gone: never skip silently to another one.
                auto_offset_reset="none",
                **aiokafka_options(self.settings),
            )
            try:
                await reader.start()
            except BaseException:  # also a check's timeout: no half-started client left behind
                await reader.stop()
                raise
            reader.assign([self.tp])
            self._reader = reader
        return self._reader

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            try:
                async with asyncio.timeout(5.0):
                    await reader.stop()
            except (KafkaError, TimeoutError):
                logger.warning("sentinel reader did not stop cleanly")


async def read_topic(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[bytes]:
    """Every record value of ``topic``, each partition read to its end, in partition order.

    Read past the end the broker reports until a fetch finds nothing more: Tansu reports the
    end of a log short after a multi-record batch (docs/operations.md). Raises ``KafkaError``
    or ``TimeoutError`` when the broker does not answer within ``timeout_s``.
    """
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=duration_ms(settings.fetch_max_wait),
        **aiokafka_options(settings),
    )
    async with asyncio.timeout(timeout_s):
        await consumer.start()
        try:
            if topic not in await consumer.topics():  # also fetches fresh metadata
                return []
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            values: dict[TopicPartition, list[bytes]] = {tp: [] for tp in tps}
            while True:
                batch = await consumer.getmany(*tps, timeout_ms=500, max_records=10_000)
                for tp, records in batch.items():
                    values[tp].extend(r.value for r in records if r.value is not None)
                if batch:
                    continue
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return [value for tp in tps for value in values[tp]]
        finally:
            await consumer.stop()
