"""The publisher's outputs agree after a fault: the topic's latest message per key is the hash.

Two faults the end-to-end matrix (tests/test_fault_matrix.py) meets by chance, here on purpose:
a partition's snapshots written to Redis by a worker that died before its Kafka copies went
out, and a Redis that comes back empty while nothing changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.metrics import Metrics
from stream_app.publishing.publisher import REDIS_CHECK_S, Publisher
from stream_app.redis_keys import UPDATES_STREAM, history_key, snapshot_key
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, 10, tzinfo=UTC)
KEYS = [(w, s) for w in ("1h", "24h", "7d", "30d") for s in ("all", "region:EU")]


def _store(settings: Settings) -> SegmentStore:
    state = PartitionState(0, settings, lambda: T0)
    signup = {"event_id": "e1", "customer_id": "c1", "occurred_at": T0.isoformat(), "region": "EU"}
    state.ingest([RawMessage("signup", "t", 0, 0, b"c1", orjson.dumps(signup))])
    store = SegmentStore()
    for update in state.checkpoint().updates:
        store.apply_update(orjson.loads(update.to_bytes()), 0)
    return store


class _Topic:
    """``crm.kpi-updates`` as a list: every message any publisher got out, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []

    def latest(self) -> dict[bytes, dict[str, Any]]:
        return {key: orjson.loads(value) for key, value in self.messages}

    async def send(self, key: bytes, value: bytes) -> None:
        self.messages.append((key, value))


async def _lost(key: bytes, value: bytes) -> None:
    """The Kafka copies of a worker SIGKILLed right after its Redis write: never sent."""


def _rig(
    url: str,
) -> tuple[Settings, SegmentStore, _Topic, aioredis.Redis, redis.Redis]:
    """Settings with a short interval, a store with one signup, a topic, two Redis clients."""
    settings = Settings(redis_url=url, publish_interval=timedelta(milliseconds=100))
    return (
        settings,
        _store(settings),
        _Topic(),
        aioredis.Redis.from_url(url),
        redis.Redis.from_url(url),
    )


def _publisher(
    settings: Settings,
    store: SegmentStore,
    client: aioredis.Redis,
    send: Any,
    owned: Any,
    now: list[float],
    at: datetime = T0,
) -> Publisher:
    """A publisher on a hand-moved monotonic clock, stamping snapshots with ``at``."""
    return Publisher(
        settings, store, client, send, owned, Metrics(), lambda: at, monotonic=lambda: now[0]
    )


async def _settle(publisher: Publisher, now: list[float]) -> None:
    """Tick through every interval, history's included, until all is written."""
    for _ in range(12):
        now[0] += 1.0
        await publisher.tick()


def _hashes(sync: redis.Redis) -> dict[bytes, dict[str, Any]]:
    out: dict[bytes, dict[str, Any]] = {}
    for window, segment in KEYS:
        fields: Any = sync.hgetall(snapshot_key(window, segment))
        out[f"{window}:{segment}".encode()] = {
            f.decode(): orjson.loads(v) for f, v in fields.items()
        }
    return out


async def test_a_partition_taken_back_is_published_again_to_redis_and_kafka(
    private_redis: str,
) -> None:
    settings, store, topic, client, sync = _rig(private_redis)
    owned = [{0}]
    now = [100.0]
    first = _publisher(settings, store, client, topic.send, lambda: owned[0], now)
    assert await first.tick() == len(KEYS)
    assert topic.latest() == _hashes(sync)

    # A rebalance gives the partition to another worker, which writes Redis and dies before
    # its Kafka copies go out; then the partition comes back to the first worker.
    owned[0] = set()
    now[0] += 1
    assert await first.tick() == 0
    later = T0 + timedelta(seconds=30)
    other = _publisher(settings, store, client, _lost, lambda: {0}, now, at=later)
    assert await other.tick() == len(KEYS)
    assert topic.latest() != _hashes(sync)  # the topic lags: what issue 27 saw

    owned[0] = {0}
    now[0] += 1
    assert await first.tick() == len(KEYS)
    assert topic.latest() == _hashes(sync)
    sync.close()
    await client.aclose()


async def test_redis_back_empty_gets_every_output_again_and_kafka_no_copy(
    private_redis: str,
) -> None:
    settings, store, topic, client, sync = _rig(private_redis)
    now = [100.0]
    publisher = _publisher(settings, store, client, topic.send, lambda: {0}, now)
    assert await publisher.tick() == len(KEYS)
    await _settle(publisher, now)
    before = _hashes(sync)
    histories = {key: sync.zrange(history_key(*key), 0, -1) for key in KEYS}
    assert all(histories.values())
    sent = len(topic.messages)

    # Redis restarted empty while nothing changes: no write fails, so only a look tells.
    sync.flushall()
    now[0] += REDIS_CHECK_S
    assert await publisher.tick() == 0  # notices; nothing new to send to Kafka
    await _settle(publisher, now)
    assert _hashes(sync) == before == topic.latest()
    assert {key: sync.zrange(history_key(*key), 0, -1) for key in KEYS} == histories
    entries: Any = sync.xrange(UPDATES_STREAM)
    stream = [orjson.loads(fields[b"data"]) for _id, fields in entries]
    assert sorted(orjson.dumps(s) for s in stream) == sorted(
        orjson.dumps(s) for s in before.values()
    )
    assert len(topic.messages) == sent, "Kafka already had every snapshot"
    sync.close()
    await client.aclose()
