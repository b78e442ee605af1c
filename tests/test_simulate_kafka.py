"""The simulator's Kafka sink on the real broker: every record lands on its topic, keyed."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from schemas import Rejection, parse_event
from stream_app.kafka import aiokafka_options, ensure_topics, input_topics
from stream_app.settings import Settings
from stream_app.simulate import Simulation, SimulationConfig, generate
from stream_app.simulate.runner import Pacing, send_to_kafka
from tests.conftest import unique_name

pytestmark = pytest.mark.integration

CONFIG = SimulationConfig(
    seed=21,
    customers=150,
    duration=timedelta(days=6),
    events_target=2000,
    inject_bad=0.02,
    duplicates=0.02,
)


async def _consume(
    settings: Settings, count: int, timeout_s: float
) -> list[tuple[str, bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(
        *input_topics(settings).values(),
        auto_offset_reset="earliest",
        group_id=None,
        **aiokafka_options(settings),
    )
    await consumer.start()
    received: list[tuple[str, bytes | None, bytes | None]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(received) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                received.extend((m.topic, m.key, m.value) for m in messages)
    finally:
        await consumer.stop()
    return received


async def test_kafka_sink_delivers_every_record_keyed_by_customer(broker: str) -> None:
    settings = Settings(
        kafka_bootstrap_servers=broker,
        topic_prefix=unique_name("sim") + ".",
        topic_partitions=4,
    )
    await ensure_topics(settings)
    expected = list(generate(CONFIG))
    assert 1500 <= len(expected) <= 2500

    simulation = Simulation(CONFIG)
    result = await send_to_kafka(simulation, settings, pacing=Pacing(rate=20_000), batch_size=200)
    assert result.sent == len(expected)
    assert not result.interrupted
    assert result.error is None

    received = await _consume(settings, len(expected), timeout_s=60)
    assert len(received) == len(expected)
    topics = input_topics(settings)
    want = Counter((topics[r.event_type], r.key, r.value) for r in expected)
    got = Counter(received)
    assert got == want
    per_topic = Counter(topic for topic, _, _ in received)
    assert set(per_topic) == set(topics.values())
    # Valid messages are keyed by their customer_id; only the injected bad ones are rejected.
    by_topic = {topic: event_type for event_type, topic in topics.items()}
    rejected = 0
    for topic, key, value in received:
        parsed = parse_event(by_topic[topic], value, key)
        if isinstance(parsed, Rejection):
            rejected += 1
        else:
            assert key == parsed.customer_id.encode()
    assert rejected == simulation.stats.bad_total > 0
