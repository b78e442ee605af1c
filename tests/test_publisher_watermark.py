"""The current snapshot's watermark follows the segment watermark even when no count moves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from stream_app.customers.partition import PartitionState, RawMessage, watermark_tick
from stream_app.metrics import Metrics
from stream_app.publishing.publisher import (
    HISTORY_BUDGET_CATCHING_UP,
    HISTORY_BUDGET_PER_TICK,
    KafkaSend,
    Publisher,
    rfc3339,
)
from stream_app.redis_keys import UPDATES_STREAM, snapshot_key
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, 10, tzinfo=UTC)


async def test_a_moved_watermark_is_a_new_snapshot_on_every_output(private_redis: str) -> None:
    """The hash is the current snapshot, so its watermark follows the segment's even when no
    count moves; and what the hash holds also goes to the stream and to Kafka (issue 27: the
    topic's latest message per key lagged the hash by its watermark and updated_at)."""
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
    sent: dict[bytes, bytes] = {}

    async def kafka_send(key: bytes, value: bytes) -> None:
        sent[key] = value

    client = aioredis.Redis.from_url(private_redis)
    publisher = Publisher(settings, store, client, kafka_send, lambda: {0}, Metrics(), lambda: T0)
    assert await publisher.tick() == 4 * 2  # 4 windows x (all, region:EU)
    sync = redis.Redis.from_url(private_redis)
    stream_length = sync.xlen(UPDATES_STREAM)

    # Another partition reports a newer watermark in the same 5-minute step: no count moves.
    later = T0 + timedelta(seconds=90)
    later_us = int(later.timestamp() * 1_000_000)
    store.apply_update({"src": 1, "wm": later_us}, 0)
    await asyncio.sleep(0.15)
    assert await publisher.tick() == 8
    assert sync.xlen(UPDATES_STREAM) == stream_length + 8
    for window in ("1h", "24h", "7d", "30d"):
        for segment in ("all", "region:EU"):
            current = {
                field.decode(): orjson.loads(value)
                for field, value in sync.hgetall(snapshot_key(window, segment)).items()
            }
            assert current["watermark"] == rfc3339(later_us), (window, segment)
            assert orjson.loads(sent[f"{window}:{segment}".encode()]) == current
    # And once written, nothing more until it moves again.
    await asyncio.sleep(0.15)
    assert await publisher.tick() == 0
    sync.close()
    await client.aclose()


def _signup(customer: str, offset: int, at: datetime) -> RawMessage:
    value = {"event_id": f"e-{customer}", "customer_id": customer, "occurred_at": at.isoformat()}
    return RawMessage("signup", "t", 0, offset, customer.encode(), orjson.dumps(value))


class _Source:
    """One customer-stage partition feeding a segment store, as the two stages do via Kafka.

    ``now`` is the monotonic clock of the store and of its publishers, moved by hand.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = PartitionState(0, settings, lambda: T0)
        self.now = [100.0]
        self.store = SegmentStore(monotonic=lambda: self.now[0])

    def publisher(self, client: aioredis.Redis, kafka_send: KafkaSend) -> Publisher:
        return Publisher(
            self.settings, self.store, client, kafka_send, lambda: {0}, Metrics(), lambda: T0,
            monotonic=lambda: self.now[0],
        )  # fmt: skip

    def add(self, customer: str, offset: int, at: datetime | None = None) -> None:
        moment = T0 + timedelta(seconds=offset) if at is None else at
        self.state.ingest([_signup(customer, offset, moment)])
        for update in self.state.checkpoint().updates:
            self.store.apply_update(orjson.loads(update.to_bytes()), 0)

    def tick(self, catching_up: bool, eta_s: float | None = None) -> None:
        watermark = self.state.watermark_us
        assert watermark is not None
        tick = watermark_tick(0, watermark, catching_up, eta_s)
        self.store.apply_update(orjson.loads(tick), 0)


async def _ignore(key: bytes, value: bytes) -> None:
    pass


def _new_customers(url: str) -> int:
    with redis.Redis.from_url(url) as sync:
        count: int = orjson.loads(sync.hget("kpi:1h:all", "new_customers"))
    return count


async def test_a_changing_snapshot_goes_out_once_per_interval_not_a_tick_later(
    private_redis: str,
) -> None:
    """Due one interval after the tick that last wrote it, however long that write took.

    The interval used to run from the end of the write; the tick one interval later then
    always found it a few ms short, and live snapshots came every interval plus a tick.
    """
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(seconds=1))
    source = _Source(settings)
    add, now = source.add, source.now

    async def slow_kafka_send(key: bytes, value: bytes) -> None:
        now[0] += 0.01  # the round's writes take time: 8 snapshots, 80 ms

    client = aioredis.Redis.from_url(private_redis)
    publisher = source.publisher(client, slow_kafka_send)
    add("c1", 0)
    assert await publisher.tick() == 4 * 2  # 4 windows x (all, region:unknown)
    add("c2", 1)
    for at in (100.05, 100.5, 100.95):
        now[0] = at
        assert await publisher.tick() == 0, f"published again {at - 100:.2f} s later"
    now[0] = 101.0
    assert await publisher.tick() == 4 * 2
    assert _new_customers(private_redis) == 2
    await client.aclose()


async def test_a_due_snapshot_waits_for_a_backlog_about_to_end(private_redis: str) -> None:
    """Held, at most a second past its interval, only while a source working off a backlog
    expects to be done within an interval; out at the next tick once it says it is done."""
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(seconds=1))
    source = _Source(settings)
    add, tick_from_source, store, now = source.add, source.tick, source.store, source.now
    client = aioredis.Redis.from_url(private_redis)
    publisher = source.publisher(client, _ignore)

    add("c1", 0)
    tick_from_source(catching_up=True)  # no estimate yet: nothing to wait for
    assert await publisher.tick() == 8
    add("c2", 1)
    tick_from_source(catching_up=True, eta_s=5.0)  # done at 105: far off
    now[0] = 101.0
    assert await publisher.tick() == 8
    assert _new_customers(private_redis) == 2

    add("c3", 2)
    tick_from_source(catching_up=True, eta_s=0.5)  # done at 101.5
    for at in (102.0, 102.5, 102.95):
        now[0] = at
        assert await publisher.tick() == 0, f"not held at {at - 100:.2f} s"
    assert _new_customers(private_redis) == 2
    # The hold ends on its own: a source that is late, or never reports again, cannot stop
    # publishing.
    now[0] = 103.0
    assert await publisher.tick() == 8
    assert _new_customers(private_redis) == 3

    add("c4", 3)
    tick_from_source(catching_up=True, eta_s=0.8)
    now[0] = 104.2
    assert await publisher.tick() == 0
    tick_from_source(catching_up=False)  # the backlog's last checkpoint
    assert not store.is_catching_up(0)
    now[0] = 104.25
    assert await publisher.tick() == 8
    assert _new_customers(private_redis) == 4
    await client.aclose()


def _history_sizes(url: str) -> dict[str, int]:
    with redis.Redis.from_url(url) as sync:
        return {key.decode(): sync.zcard(key) for key in sync.scan_iter("kpi-history:*")}


async def test_history_of_past_steps_waits_while_a_backlog_is_worked_off(
    private_redis: str,
) -> None:
    """Every current snapshot and its step's history entry go out; past steps, which the
    backlog keeps moving, get a tenth of the budget until it ends."""
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(seconds=1))
    source = _Source(settings)
    client = aioredis.Redis.from_url(private_redis)
    publisher = source.publisher(client, _ignore)
    # A week of event time: each of the 8 (window, segment) pairs owes 1,000 past steps.
    for day in range(7):
        source.add(f"c{day}", day, T0 + timedelta(days=day))
    source.tick(catching_up=True, eta_s=60.0)
    assert await publisher.tick() == 8
    sizes = _history_sizes(private_redis)
    assert len(sizes) == 8
    assert sum(sizes.values()) == HISTORY_BUDGET_CATCHING_UP + 7  # the rest: current only
    assert all(size >= 1 for size in sizes.values())

    source.tick(catching_up=False)
    source.now[0] = 101.0
    source.add("c7", 7, T0 + timedelta(days=6, hours=1))
    assert await publisher.tick() == 8
    grown = sum(_history_sizes(private_redis).values()) - sum(sizes.values())
    # The full budget now, less the current entries rewritten in place.
    assert HISTORY_BUDGET_PER_TICK - 8 <= grown <= HISTORY_BUDGET_PER_TICK
    await client.aclose()


async def test_current_snapshots_go_out_before_the_history(private_redis: str) -> None:
    """A tick's current snapshots are in Redis before its history is even built."""
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(seconds=1))
    source = _Source(settings)
    for day in range(7):
        source.add(f"c{day}", day, T0 + timedelta(days=day))
    seen: list[tuple[int, int]] = []

    async def kafka_send(key: bytes, value: bytes) -> None:
        with redis.Redis.from_url(private_redis) as sync:
            hashes = sum(1 for _ in sync.scan_iter("kpi:*"))
        seen.append((hashes, sum(_history_sizes(private_redis).values())))

    client = aioredis.Redis.from_url(private_redis)
    publisher = source.publisher(client, kafka_send)
    assert await publisher.tick() == 8
    assert seen
    assert all(hashes == 8 and history == 0 for hashes, history in seen), seen
    assert sum(_history_sizes(private_redis).values()) == HISTORY_BUDGET_PER_TICK
    await client.aclose()
