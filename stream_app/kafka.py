"""Kafka connection options and topic administration shared by the worker and the tools."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from schemas import TOPIC_SUFFIXES
from stream_app.settings import Settings

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


def input_topics(settings: Settings) -> dict[str, str]:
    """Input topic name by event type, after the configured prefix."""
    return {event_type: settings.topic(suffix) for event_type, suffix in TOPIC_SUFFIXES.items()}


def public_topics(settings: Settings) -> list[str]:
    """Every topic of the contract: inputs, dead letters, KPI updates and alerts."""
    return [
        *input_topics(settings).values(),
        settings.dead_letter_topic,
        settings.kpi_updates_topic,
        settings.kpi_alerts_topic,
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
        wanted = public_topics(settings)
        existing = await _partition_counts(admin, wanted)
        missing = [name for name in wanted if name not in existing]
        if missing:
            new = [
                NewTopic(name, settings.topic_partitions, settings.topic_replication_factor)
                for name in missing
            ]
            try:
                await admin.create_topics(new, timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                logger.info("topics were created concurrently by another worker")
            logger.info("created topics: %s", ", ".join(missing))
        mismatched = tuple(
            (name, count)
            for name, count in existing.items()
            if name in input_topics(settings).values() and count != settings.topic_partitions
        )
        for name, count in mismatched:
            logger.error(
                "topic %s has %d partitions but KPI_TOPIC_PARTITIONS=%d: input topics must "
                "all have the configured partition count",
                name,
                count,
                settings.topic_partitions,
            )
        return TopicReport(created=tuple(missing), mismatched=mismatched)
    finally:
        await admin.close()


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
