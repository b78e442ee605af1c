"""Lifecycle messages on Kafka: sending a partition's stage changes, and reading back what a
crashed owner sent (``lifecycle/ledger.py`` holds the protocol, docs/architecture.md
"Lifecycle messages" the reasoning)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from schemas.lifecycle import LifecycleChange
from stream_app.customers.recovery import read_partition_from
from stream_app.lifecycle.ledger import SOURCE_HEADER, ChangeLedger, Identity, sent_identity
from stream_app.lifecycle.tracker import Change
from stream_app.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The churn risk of a customer at an instant (None: no model, or not active).
RiskOf = Callable[[str, int], float | None]


def message_of(change: Change, churn_risk: float | None) -> bytes:
    """The JSON of one ``crm.customer-lifecycle`` message (``schemas.lifecycle``)."""
    return (
        LifecycleChange(
            customer_id=change.customer_id,
            from_stage=change.from_stage,
            to=change.to,
            at=_EPOCH + timedelta(microseconds=change.at_us),
            reason=change.reason,
            churn_risk=churn_risk,
        )
        .model_dump_json(by_alias=True)
        .encode()
    )


async def send_changes(
    producer: AIOKafkaProducer,
    topic: str,
    topic_partitions: int,
    source: int,
    ledger: ChangeLedger,
    changes: list[Change],
    risk_of: RiskOf | None = None,
) -> int:
    """Send the changes one partition decided, skipping those an earlier owner sent; waits
    until the broker has them all (a checkpoint may follow); returns how many went out."""
    futures: list[asyncio.Future[Any]] = []
    headers = [(SOURCE_HEADER, str(source).encode())]
    for change in changes:
        if not ledger.take(change.identity):
            continue
        risk = None if risk_of is None else risk_of(change.customer_id, change.at_us)
        futures.append(
            await producer.send(
                topic,
                message_of(change, risk),
                key=change.customer_id.encode(),
                partition=source % topic_partitions,
                headers=headers,
            )
        )
    for written in await asyncio.gather(*futures):
        ledger.record(written.offset)
    return len(futures)


async def sent_lifecycle_changes(
    settings: Settings, lifecycle_partition: int, source_partition: int, start: int | None
) -> tuple[list[tuple[int, Identity]], int]:
    """The messages of ``source_partition`` in the lifecycle partition from ``start`` (None:
    its beginning), as (offset, identity), and the partition's end."""
    tp = TopicPartition(settings.lifecycle_topic, lifecycle_partition)
    records, end = await read_partition_from(settings, tp, start)
    source = str(source_partition).encode()
    found: list[tuple[int, Identity]] = []
    for record in records:
        if dict(record.headers or ()).get(SOURCE_HEADER) != source:
            continue
        identity = sent_identity(record.value)
        if identity is not None:
            found.append((record.offset, identity))
    return found, end
