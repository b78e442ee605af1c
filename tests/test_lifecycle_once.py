"""Each lifecycle stage change is one message of crm.customer-lifecycle, also across a SIGKILL.

Changes go out as soon as they are decided, checkpoints later: a worker killed in between
leaves messages its successor decides again. The successor must find and skip them, and the
topic must hold exactly the changes an uninterrupted run over the same events decides.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from schemas.lifecycle import LifecycleChange
from stream_app.customers.timeline import CANCELLATION, PURCHASE, SIGNUP, to_us
from stream_app.lifecycle.ledger import Identity
from stream_app.lifecycle.stages import Rules
from stream_app.lifecycle.tracker import StageBook
from stream_app.settings import Settings
from tests.conftest import StackEnv
from tests.test_intake_integration import _consume

START = datetime(2026, 1, 5, tzinfo=UTC)
CUSTOMERS = 120
PARTITIONS = [0, 1, 2, 3]  # KPI_TOPIC_PARTITIONS of the test stack
NO_CHECKPOINT = {"KPI_CHECKPOINT_INTERVAL": "1m", "KPI_CHECKPOINT_INTERVAL_BACKLOG": "1m"}
ON = {"KPI_LIFECYCLE_ENABLED": "true"}


def _events() -> list[tuple[datetime, str, str, dict[str, Any]]]:
    """(time, topic suffix, customer, message) of a population over 200 days, time-ordered:
    signups, purchases at varied gaps (some customers loyal, some lapsing), cancellations."""
    events = []
    for i in range(CUSTOMERS):
        customer = f"lc{i}"
        joined = START + timedelta(days=i % 25, minutes=i)
        events.append((joined, "signups", customer, {"region": "EU"}))
        gap = 5 + (i % 9) * 8  # 5 to 69 days between purchases
        for n in range(1 + i % 6):
            at = joined + timedelta(days=1 + n * gap, hours=n)
            order = {
                "order_id": f"o{i}-{n}",
                "amount": f"{20 + (i % 7) * 30}.00",
                "currency": "USD",
            }
            events.append((at, "purchases", customer, order))
        if i % 5 == 0:
            events.append((joined + timedelta(days=150), "cancellations", customer, {}))
    # A signup on every partition pushes its watermark past each customer's last threshold
    # (the watermark is per partition; keys go where the producer's default partitioner says).
    partitioner = DefaultPartitioner()
    ticks: dict[int, str] = {}
    for n in range(100):
        ticks.setdefault(partitioner(f"tick{n}".encode(), PARTITIONS, PARTITIONS), f"tick{n}")
    assert len(ticks) == len(PARTITIONS)
    for tick in ticks.values():
        events.append((START + timedelta(days=400), "signups", tick, {"region": "EU"}))
    events.sort(key=lambda e: (e[0], e[2]))
    return events


def _message(n: int, at: datetime, customer: str, extra: dict[str, Any]) -> bytes:
    body = {"event_id": f"lc-{n}", "customer_id": customer, "occurred_at": at.isoformat()}
    return json.dumps({**body, **extra}).encode()


def _expected(events: list[tuple[datetime, str, str, dict[str, Any]]]) -> Counter[Identity]:
    """What an uninterrupted run decides: the pure book fed the same events in order."""
    ranks = {"signups": SIGNUP, "purchases": PURCHASE, "cancellations": CANCELLATION}
    book = StageBook(Rules.from_settings(Settings()))
    for n, (at, suffix, customer, extra) in enumerate(events):
        stored: list[Any] = [to_us(at), ranks[suffix], f"lc-{n}"]
        if suffix == "purchases":
            stored.append(int(extra["amount"].split(".")[0]) * 1_000_000)
        elif suffix == "signups":
            stored.extend(["EU", None])
        book.observe(customer, [stored])
    book.advance(to_us(events[-1][0]))
    return Counter(change.identity for change in book.take())


async def _produce_in_order(stack: StackEnv, events: list[Any], first: int) -> None:
    """Send in time order, a few at a time: the worker never reads one far ahead of another."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=2)
    await producer.start()
    try:
        for start in range(0, len(events), 20):
            chunk = events[start : start + 20]
            await asyncio.gather(
                *[
                    await producer.send(
                        stack.topic(suffix),
                        _message(first + start + k, at, customer, extra),
                        key=customer.encode(),
                    )
                    for k, (at, suffix, customer, extra) in enumerate(chunk)
                ]
            )
    finally:
        await producer.stop()


def _received(stack: StackEnv, at_least: int, timeout_s: float) -> Counter[Identity]:
    records = asyncio.run(
        _consume(stack.bootstrap, stack.topic("customer-lifecycle"), at_least, timeout_s)
    )
    found: Counter[Identity] = Counter()
    for record in records:
        change = LifecycleChange.model_validate_json(record.value)
        assert record.key == change.customer_id.encode()
        found[
            (
                change.customer_id,
                change.from_stage or "",
                change.to.value,
                to_us(change.at),
            )
        ] += 1
    return found


@pytest.mark.integration
def test_lifecycle_messages_are_exactly_once_across_a_sigkill(stack: StackEnv) -> None:
    events = _events()
    expected = _expected(events)
    assert sum(expected.values()) > 3 * CUSTOMERS  # several changes per customer
    cut1, cut2 = len(events) * 2 // 5, len(events) * 7 // 10

    # The first worker checkpoints as usual; the second never does before its SIGKILL, so
    # everything it sends lies past the first one's last mark; the third finds it there.
    first = stack.start_worker(**ON)
    first.wait_assigned(partitions=4)
    asyncio.run(_produce_in_order(stack, events[:cut1], 0))
    assert sum(_received(stack, 1, 60).values()) > 0, first.log_tail()
    time.sleep(2)  # checkpointed
    first.stop(signal.SIGKILL)

    second = stack.start_worker(**NO_CHECKPOINT, **ON)
    second.wait_assigned(partitions=4)
    before = sum(_received(stack, 10**6, 3).values())
    asyncio.run(_produce_in_order(stack, events[cut1:cut2], cut1))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(_received(stack, 10**6, 2).values()) == before:
        pass
    time.sleep(1)
    second.stop(signal.SIGKILL)

    again = stack.start_worker(**ON)
    again.wait_assigned(partitions=4)
    assert "lifecycle messages sent past the last checkpoint" in again.log_tail(200)
    asyncio.run(_produce_in_order(stack, events[cut2:], cut2))
    total = sum(expected.values())
    deadline = time.monotonic() + 90
    found: Counter[Identity] = Counter()
    while time.monotonic() < deadline:
        found = _received(stack, total, 5)
        if sum(found.values()) >= total:
            break
    time.sleep(3)  # anything sent twice would arrive by now
    found = _received(stack, total + 1, 5)
    duplicated = {identity: n for identity, n in found.items() if n > 1}
    assert duplicated == {}, again.log_tail()
    # None missing: each customer's messages chain, from its first stage to its last. (Not
    # the set of the pure book's changes: a stage is read when the customer's events are,
    # and a purchase fetched after the watermark moved the customer on is not revised, so
    # which changes happen can depend on how the five topics interleave; docs/metrics.md.)
    chains = _chains(found)
    broken = {customer: left for customer, (left, _) in chains.items() if left}
    assert broken == {}, again.log_tail()
    # Nor the last: each chain ends where the uninterrupted run ends (the ticks move every
    # watermark past every threshold, so the final stage depends on the events alone).
    ends = {customer: end for customer, (_, end) in chains.items()}
    assert ends == {customer: end for customer, (_, end) in _chains(expected).items()}


def _chains(found: Counter[Identity]) -> dict[str, tuple[list[Identity], str]]:
    """Per customer, the messages left over when its changes are followed from its first
    stage in time order (empty: a complete chain, none missing), and the stage reached."""
    by_customer: dict[str, list[Identity]] = {}
    for identity in found:
        by_customer.setdefault(identity[0], []).append(identity)
    chains: dict[str, tuple[list[Identity], str]] = {}
    for customer, changes in by_customer.items():
        pending = sorted(changes, key=lambda change: change[3])
        stage = ""
        while pending:
            step = next((c for c in pending if str(c[1]) == stage), None)
            if step is None or step[3] > pending[0][3]:
                break
            pending.remove(step)
            stage = str(step[2])
        chains[customer] = (pending, stage)
    return chains
