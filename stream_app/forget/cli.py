"""``kpi forget CUSTOMER_ID``: ask the customer stage to erase a customer.

The request goes to every partition of ``<app_id>-customer-forget``
(``stream_app/customers/forget.py``); each worker erases the customer from the partition it
owns: its state, its lifecycle, and (with tombstones at the next checkpoint) every changelog
record of it. Idempotent: asking again changes nothing more.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from redis.exceptions import RedisError

from stream_app.customers.forget import forget_message
from stream_app.kafka import aiokafka_options, ensure_topics, forget_topic
from stream_app.redis_keys import AT_RISK_PATTERN
from stream_app.settings import Settings

logger = logging.getLogger(__name__)


async def send_forget(settings: Settings, customer_id: str) -> int:
    """Send the request to every partition; returns how many partitions it went to."""
    await ensure_topics(settings)
    topic = forget_topic(settings)
    producer = AIOKafkaProducer(acks="all", **aiokafka_options(settings))
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic) or ())
        message = forget_message(customer_id)
        futures = [
            await producer.send(topic, message, key=customer_id.encode(), partition=partition)
            for partition in partitions
        ]
        await asyncio.gather(*futures)
        return len(partitions)
    finally:
        await producer.stop()


async def remove_from_at_risk(settings: Settings, customer_id: str) -> int:
    """Remove the customer from every at-risk set now; returns from how many. (Its owner
    also removes it from the sets it wrote when it applies the request.)"""
    client = aioredis.Redis.from_url(
        settings.redis_url,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
    )
    try:
        removed = 0
        async for key in client.scan_iter(match=AT_RISK_PATTERN, count=1000):
            removed += await client.zrem(key, customer_id)
        return removed
    finally:
        await client.aclose()


def cmd_forget(settings: Settings, args: argparse.Namespace) -> int:
    customer: str = args.customer_id
    if not 1 <= len(customer) <= 128:
        logger.error("CUSTOMER_ID must be 1 to 128 characters, as in the input events")
        return 2
    partitions = asyncio.run(send_forget(settings, customer))
    try:
        asyncio.run(remove_from_at_risk(settings, customer))
    except (RedisError, OSError) as exc:
        logger.warning(
            "Redis did not answer (%s): the workers remove the customer from the at-risk "
            "sets they wrote when they apply the request; run kpi forget again once Redis "
            "answers to be sure",
            exc.__class__.__name__,
        )
    logger.info(
        "asked the workers to forget the customer (%d partitions); it is erased from the "
        "changelog at their next checkpoint (KPI_CHECKPOINT_INTERVAL)",
        partitions,
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    forget = sub.add_parser(
        "forget",
        help="erase a customer from the processor's state and changelog",
        description=(
            "Erase CUSTOMER_ID from the customer stage: its state, lifecycle stage, and every "
            "changelog record (tombstones). Running workers apply it within a checkpoint "
            "interval; a worker started later applies it when it reads the request. "
            "Idempotent. KPI totals keep the customer's past counts (they hold no ids); the "
            "input topics are not changed (their retention is the operator's)."
        ),
    )
    forget.add_argument("customer_id", metavar="CUSTOMER_ID", help="the customer to erase")
    forget.set_defaults(func=cmd_forget)
