"""End to end on the real broker: bad messages become dead letters, the worker carries on."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.conftest import StackEnv

pytestmark = pytest.mark.integration

NOW = "2026-11-02T09:15:00+09:00"


def _valid(event_type: str, n: int) -> dict[str, Any]:
    base = {"event_id": f"ok-{event_type}-{n}", "customer_id": f"c{n}", "occurred_at": NOW}
    extra: dict[str, dict[str, Any]] = {
        "signups": {"region": "eu"},
        "purchases": {"order_id": f"o{n}", "amount": "12.50", "currency": "USD"},
        "cancellations": {},
        "campaign-clicks": {"campaign_id": "spring", "cost": "0.40"},
        "surveys": {"survey_type": "nps", "score": 9},
    }
    return {**base, **extra[event_type]}


# (topic suffix, key, raw value, expected reason)
BAD_MESSAGES: list[tuple[str, bytes | None, bytes | None, str]] = [
    ("signups", b"c1", b"{not json", "invalid_json"),
    ("purchases", b"c1", b'[{"event_id": "x"}]', "not_an_object"),
    (
        "purchases",
        b"c2",
        json.dumps({**_valid("purchases", 2), "currency": "EUR"}).encode(),
        "wrong_currency",
    ),
    (
        "cancellations",
        b"c3",
        json.dumps({**_valid("cancellations", 3), "occurred_at": "2026-11-02T09:15:00"}).encode(),
        "naive_timestamp",
    ),
    ("surveys", b"c4", json.dumps({**_valid("surveys", 4), "score": 11}).encode(), "invalid_field"),
    ("surveys", b"c5", b"\xff\xfe\x00garbage", "invalid_encoding"),
    ("campaign-clicks", b"c6", b"{" + b'"pad": "' + b"x" * 100_000 + b'"}', "too_large"),
    ("campaign-clicks", None, b"", "empty_message"),
    (
        "signups",
        b"c7",
        json.dumps({**_valid("signups", 7), "schema_version": 9}).encode(),
        "unknown_schema_version",
    ),
    (
        "signups",
        b"c8",
        json.dumps({"customer_id": "c8", "occurred_at": NOW}).encode(),
        "missing_field",
    ),
    (
        "purchases",
        b"someone-else",
        json.dumps(_valid("purchases", 9)).encode(),
        "key_mismatch",
    ),
]


async def _produce(bootstrap: str, messages: list[tuple[str, bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, timeout_s: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


def _metric(text: str, name: str, label: str, value: str) -> float:
    match = re.search(rf'^{name}\{{{label}="{re.escape(value)}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_bad_messages_become_dead_letters_and_processing_goes_on(stack: StackEnv) -> None:
    worker = stack.start_worker()
    worker.wait_assigned(partitions=4)

    bad = [(stack.topic(suffix), key, value) for suffix, key, value, _ in BAD_MESSAGES]
    # A valid event on every topic after the bad ones: the worker must still process them.
    good = [
        (stack.topic(suffix), f"c{n}".encode(), json.dumps(_valid(suffix, n)).encode())
        for n, suffix in enumerate(
            ["signups", "purchases", "cancellations", "campaign-clicks", "surveys"], start=100
        )
    ]
    asyncio.run(_produce(stack.bootstrap, bad + good))

    letters = asyncio.run(
        _consume(stack.bootstrap, stack.topic("dead-letters"), len(BAD_MESSAGES), 60)
    )
    assert len(letters) == len(BAD_MESSAGES), worker.log_tail()
    by_reason: dict[str, list[dict[str, Any]]] = {}
    for record in letters:
        letter = json.loads(record.value)
        by_reason.setdefault(letter["reason"], []).append(letter)

    for suffix, key, value, reason in BAD_MESSAGES:
        candidates = [
            letter
            for letter in by_reason.get(reason, [])
            if letter["source_topic"] == stack.topic(suffix)
        ]
        assert candidates, f"no {reason} dead letter from {suffix}; got {sorted(by_reason)}"
        letter = candidates[0]
        original = base64.b64decode(letter["value_b64"]) if letter["value_b64"] else b""
        assert original == (value or b""), f"{reason}: original bytes not preserved"
        assert letter["message"], f"{reason}: no human message"
        assert isinstance(letter["source_partition"], int)
        assert isinstance(letter["source_offset"], int)
        assert letter["source_offset"] >= 0
        if key is not None:
            assert base64.b64decode(letter["key_b64"]) == key

    # Each good event was parsed and counted after the bad ones.
    deadline = time.monotonic() + 30
    while True:
        metrics = worker.get_text("/metrics")
        counts = {
            kind: _metric(metrics, "kpi_events_total", "event_type", kind)
            for kind in ("signup", "purchase", "cancellation", "campaign_click", "survey")
        }
        if all(value == 1 for value in counts.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert counts == dict.fromkeys(counts, 1.0), worker.log_tail()

    for reason in {reason for *_, reason in BAD_MESSAGES}:
        expected = sum(1 for *_, r in BAD_MESSAGES if r == reason)
        assert _metric(metrics, "kpi_dead_letters_total", "reason", reason) == expected, reason
    health = worker.get_json("/health")
    assert sum(health["dead_letters"].values()) == len(BAD_MESSAGES)
    assert worker.popen.poll() is None, "the worker must keep running"
