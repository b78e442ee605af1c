"""The current snapshot's watermark follows the segment watermark even when no count moves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from stream_app.customers.partition import PartitionState, RawMessage, watermark_tick
from stream_app.devstack import DevStack, free_port
from stream_app.metrics import Metrics
from stream_app.publishing.publisher import (
    STREAM_KEY,
    KafkaSend,
    Publisher,
    rfc3339,
    snapshot_key,
)
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, 10, tzinfo=UTC)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    stack = DevStack(log_dir=tmp_path / "redis")
    url = stack.start_redis(free_port())
    yield url
    stack.stop()


async def test_a_moved_watermark_refreshes_the_hash_only(private_redis: str) -> None:
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(milliseconds=100))
    state = PartitionState(0, settings, lambda: T0)
    signup = {
        "event_id": "e1",
        "customer_id": "c1",
        "occurred_at": T0.isoformat(),
        "region": "EU",
    }
    state.ingest([RawMessage("signup", "t", 0, 0, b"c1", orjson.dumps(signup))])
    store = SegmentStore()
    for update in state.checkpoint().updates:
        store.apply_update(orjson.loads(update.to_bytes()), 0)
    sent: list[bytes] = []

    async def kafka_send(key: bytes, value: bytes) -> None:
        sent.append(key)

    client = aioredis.Redis.from_url(private_redis)
    publisher = Publisher(settings, store, client, kafka_send, lambda: {0}, Metrics(), lambda: T0)
    assert await publisher.tick() == 4 * 2  # 4 windows x (all, region:EU)
    sync = redis.Redis.from_url(private_redis)
    stream_length = sync.xlen(STREAM_KEY)
    assert orjson.loads(sync.hget(snapshot_key("24h", "all"), "watermark")) == rfc3339(
        int(T0.timestamp() * 1_000_000)
    )

    # Another partition reports a newer watermark in the same 5-minute step: no count moves.
    later = T0 + timedelta(seconds=90)
    later_us = int(later.timestamp() * 1_000_000)
    store.apply_update({"src": 1, "wm": later_us}, 0)
    await asyncio.sleep(0.15)
    assert await publisher.tick() == 0  # no snapshot went out again...
    for window in ("1h", "24h", "7d", "30d"):
        for segment in ("all", "region:EU"):
            stamp = sync.hget(snapshot_key(window, segment), "watermark")
            assert orjson.loads(stamp) == rfc3339(later_us), (window, segment)
    assert sync.xlen(STREAM_KEY) == stream_length  # ...but every hash is current
    assert len(sent) == 8
    # And once written, nothing more until it moves again.
    await asyncio.sleep(0.15)
    assert await publisher.tick() == 0
    sync.close()
    await client.aclose()


def _signup(customer: str, offset: int, at: datetime) -> RawMessage:
    value = {"event_id": f"e-{customer}", "customer_id": customer, "occurred_at": at.isoformat()}
    return RawMessage("signup", "t", 0, offset, customer.encode(), orjson.dumps(value))


class _Source:
    """One customer-stage partition feeding a segment store, as the two stages do via Kafka."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = PartitionState(0, settings, lambda: T0)
        self.store = SegmentStore()

    def publisher(
        self, client: aioredis.Redis, kafka_send: KafkaSend, now: list[float]
    ) -> Publisher:
        """A publisher of this store on a clock the test moves by hand."""
        return Publisher(
            self.settings, self.store, client, kafka_send, lambda: {0}, Metrics(), lambda: T0,
            monotonic=lambda: now[0],
        )  # fmt: skip

    def add(self, customer: str, offset: int) -> None:
        self.state.ingest([_signup(customer, offset, T0 + timedelta(seconds=offset))])
        for update in self.state.checkpoint().updates:
            self.store.apply_update(orjson.loads(update.to_bytes()), 0)

    def tick(self, catching_up: bool) -> None:
        watermark = self.state.watermark_us
        assert watermark is not None
        self.store.apply_update(orjson.loads(watermark_tick(0, watermark, catching_up)), 0)


async def test_a_changing_snapshot_goes_out_once_per_interval_not_a_tick_later(
    private_redis: str,
) -> None:
    """Due one interval after the tick that last wrote it, however long that write took.

    The interval used to run from the end of the write; the tick one interval later then
    always found it a few ms short, and live snapshots came every interval plus a tick.
    """
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(seconds=1))
    source = _Source(settings)
    add = source.add
    now = [100.0]

    async def slow_kafka_send(key: bytes, value: bytes) -> None:
        now[0] += 0.01  # the round's writes take time: 8 snapshots, 80 ms

    client = aioredis.Redis.from_url(private_redis)
    publisher = source.publisher(client, slow_kafka_send, now)
    add("c1", 0)
    assert await publisher.tick() == 4 * 2  # 4 windows x (all, region:unknown)
    add("c2", 1)
    for at in (100.05, 100.5, 100.95):
        now[0] = at
        assert await publisher.tick() == 0, f"published again {at - 100:.2f} s later"
    now[0] = 101.0
    assert await publisher.tick() == 4 * 2
    new_customers = orjson.loads(
        redis.Redis.from_url(private_redis).hget("kpi:1h:all", "new_customers")
    )
    assert new_customers == 2
    await client.aclose()


async def test_a_due_snapshot_waits_for_a_source_working_off_a_backlog(
    private_redis: str,
) -> None:
    """Held at most a second past its interval while a source says it is catching up, and
    out at the next tick once the source says the backlog is done."""
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(seconds=1))
    source = _Source(settings)
    add, tick_from_source, store = source.add, source.tick, source.store
    now = [100.0]

    async def kafka_send(key: bytes, value: bytes) -> None:
        pass

    def new_customers() -> int:
        with redis.Redis.from_url(private_redis) as sync:
            count: int = orjson.loads(sync.hget("kpi:1h:all", "new_customers"))
        return count

    client = aioredis.Redis.from_url(private_redis)
    publisher = source.publisher(client, kafka_send, now)
    add("c1", 0)
    tick_from_source(catching_up=True)
    assert await publisher.tick() == 0  # a first snapshot is held too
    now[0] = 101.0
    assert await publisher.tick() == 8
    add("c2", 1)
    tick_from_source(catching_up=True)
    for at in (102.0, 102.5, 102.95):
        now[0] = at
        assert await publisher.tick() == 0, f"not held at {at - 100:.2f} s"
    assert new_customers() == 1
    # The hold ends on its own: a source that never reports again cannot stop publishing.
    now[0] = 103.0
    assert await publisher.tick() == 8
    assert new_customers() == 2

    add("c3", 2)
    tick_from_source(catching_up=True)
    now[0] = 104.2
    assert await publisher.tick() == 0
    tick_from_source(catching_up=False)  # the backlog's last checkpoint
    assert not store.is_catching_up(0)
    now[0] = 104.25
    assert await publisher.tick() == 8
    assert new_customers() == 3
    await client.aclose()
