"""Cohorts reach Redis and Kafka (contract section 6), coalesced, and again after Redis is lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from schemas.cohort import Cohort, CohortUpdate, Grain
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.metrics import Metrics
from stream_app.published import decode_cohorts
from stream_app.publishing.publisher import REDIS_CHECK_S, Publisher
from stream_app.redis_keys import cohort_updates_channel, cohorts_key
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, 10, tzinfo=UTC)  # a Monday


def _signup(state: PartitionState, n: int, at: datetime, region: str = "EU") -> None:
    value = {"event_id": f"e{n}", "customer_id": f"c{n}", "occurred_at": at.isoformat()}
    value |= {"region": region, "campaign_id": "k1"}
    state.ingest([RawMessage("signup", "t", 0, n, f"c{n}".encode(), orjson.dumps(value))])


def _checkpoint(state: PartitionState, store: SegmentStore) -> None:
    for update in state.checkpoint().updates:
        store.apply_update(orjson.loads(update.to_bytes()), 0)


class _Topic:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.messages.append((key, value))

    def latest(self) -> dict[bytes, dict[str, Any]]:
        return {key: orjson.loads(value) for key, value in self.messages}


async def _nothing(key: bytes, value: bytes) -> None:
    """Snapshots are not what these tests look at."""


def _publisher(
    settings: Settings,
    store: SegmentStore,
    client: aioredis.Redis,
    now: list[float],
    topic: _Topic | None = None,
) -> Publisher:
    """A publisher of partition 0's segments on the test's clock (``now[0]`` seconds)."""
    return Publisher(
        settings, store, client, _nothing, lambda: {0}, Metrics(), lambda: T0,
        monotonic=lambda: now[0], cohort_send=(topic or _Topic()).send,
    )  # fmt: skip


async def test_cohorts_are_published_coalesced_and_rewritten_when_redis_comes_back_empty(
    private_redis: str,
) -> None:
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(milliseconds=500))
    state = PartitionState(0, settings, lambda: T0)
    store = SegmentStore()
    _signup(state, 0, T0)
    _checkpoint(state, store)
    topic = _Topic()
    now = [100.0]
    client = aioredis.Redis.from_url(private_redis)
    sync = redis.Redis.from_url(private_redis)
    pubsub = sync.pubsub()
    pubsub.subscribe(cohort_updates_channel("week", "region:EU"))
    publisher = _publisher(settings, store, client, now, topic)
    await publisher.tick()
    week = _read(sync, "week", "all")
    assert [(c.size, c.periods[0].active, c.periods[0].complete) for c in week] == [(1, 1, False)]
    assert {(g, s) for g, s in _keys(sync)} == {
        (grain, segment)
        for grain in ("week", "month")
        for segment in ("all", "region:EU", "campaign:k1")
    }
    # Kafka: one message per cohort, keyed <grain>:<segment>:<cohort_start>.
    assert b"week:all:2026-11-02T00:00:00Z" in topic.latest()

    # A second signup within the interval waits for it: at most one write per interval.
    _signup(state, 1, T0 + timedelta(minutes=1))
    _checkpoint(state, store)
    now[0] += 0.1
    await publisher.tick()
    assert _read(sync, "week", "all")[0].size == 1
    now[0] += 0.5
    await publisher.tick()
    assert _read(sync, "week", "all")[0].size == 2
    latest = topic.latest()[b"week:region:EU:2026-11-02T00:00:00Z"]
    assert CohortUpdate.model_validate(latest).size == 2
    message = None
    for _ in range(10):
        got = pubsub.get_message(timeout=0.2)
        if got is not None and got["type"] == "message":
            message = got
    assert message is not None
    assert CohortUpdate.model_validate_json(message["data"]).segment == "region:EU"

    # Redis restarted empty while nothing changes: every cohort is written again, Kafka
    # (which kept them) gets no copy.
    before = {key: sync.hgetall(cohorts_key(*key)) for key in _keys(sync)}
    sent = len(topic.messages)
    sync.flushall()
    now[0] += REDIS_CHECK_S
    await publisher.tick()
    now[0] += 1
    await publisher.tick()
    assert {key: sync.hgetall(cohorts_key(*key)) for key in _keys(sync)} == before
    assert len(topic.messages) == sent
    pubsub.close()
    sync.close()
    await client.aclose()


async def test_a_cohort_that_changes_and_changes_back_within_an_interval_ends_as_it_is(
    private_redis: str,
) -> None:
    """A segment partition restored short and healed by a resync before its cohorts were
    due: what goes out is the healed cohort, not the short one planned in between."""
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(milliseconds=500))
    state, short = PartitionState(0, settings, lambda: T0), PartitionState(0, settings, lambda: T0)
    store = SegmentStore()
    _signup(state, 0, T0)
    _signup(state, 1, T0 + timedelta(minutes=1))
    _signup(short, 0, T0)
    _checkpoint(state, store)
    _checkpoint(short, SegmentStore())
    now = [100.0]
    client = aioredis.Redis.from_url(private_redis)
    sync = redis.Redis.from_url(private_redis)
    publisher = _publisher(settings, store, client, now)
    await publisher.tick()
    assert _read(sync, "week", "all")[0].size == 2
    for healed in (short, state):  # short first, then the resync; both within the interval
        for update in healed.full_updates():
            store.apply_update(orjson.loads(update.to_bytes()), 0)
        now[0] += 0.1
        await publisher.tick()
    now[0] += 0.5
    await publisher.tick()
    assert [c.size for c in _read(sync, "week", "all")] == [2]
    assert [c.size for c in _read(sync, "month", "region:EU")] == [2]
    sync.close()
    await client.aclose()


async def test_partials_read_again_after_a_rebalance_never_stop_the_publisher(
    private_redis: str,
) -> None:
    """An older partial applied after a newer one (a new owner re-reads from its committed
    offset) can leave a period below zero for a moment: not published, and no crash."""
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(milliseconds=100))
    state = PartitionState(0, settings, lambda: T0)
    _signup(state, 0, T0)
    older = [orjson.loads(u.to_bytes()) for u in state.checkpoint().updates]
    _signup(state, 1, T0 + timedelta(minutes=1))
    for n in (0, 1):  # both cancel in the second week
        value = {"event_id": f"x{n}", "customer_id": f"c{n}"}
        value["occurred_at"] = (T0 + timedelta(days=8)).isoformat()
        state.ingest([RawMessage("cancellation", "x", 0, n, f"c{n}".encode(), orjson.dumps(value))])
    newer = [orjson.loads(u.to_bytes()) for u in state.checkpoint().updates]
    store = SegmentStore()
    now = [100.0]
    client = aioredis.Redis.from_url(private_redis)
    sync = redis.Redis.from_url(private_redis)
    publisher = _publisher(settings, store, client, now)
    for message in (*older, *newer, *older):  # period 1 is 1 - 2 customers active now
        store.apply_update(message, 0)
    await publisher.tick()
    assert _read(sync, "week", "all") == []
    for message in newer:  # read up to where it was
        store.apply_update(message, 0)
    now[0] += 1
    await publisher.tick()
    assert [(p.k, p.active) for p in _read(sync, "week", "all")[0].periods] == [(0, 2), (1, 0)]
    sync.close()
    await client.aclose()


async def test_a_cohort_past_the_depth_leaves_the_hash(private_redis: str) -> None:
    settings = Settings(redis_url=private_redis, publish_interval=timedelta(milliseconds=100))
    state = PartitionState(0, settings, lambda: T0)
    store = SegmentStore()
    _signup(state, 0, T0)
    _checkpoint(state, store)
    now = [100.0]
    client = aioredis.Redis.from_url(private_redis)
    sync = redis.Redis.from_url(private_redis)
    publisher = _publisher(settings, store, client, now)
    await publisher.tick()
    assert [c.cohort_start for c in _read(sync, "week", "all")] == [
        T0.replace(hour=0, minute=0, second=0)
    ]
    # 26 weeks later the first week is the 27th newest: no longer published.
    later = T0 + timedelta(weeks=26)
    _signup(state, 1, later)
    _checkpoint(state, store)  # the customer stage drops it at this checkpoint
    _checkpoint(state, store)
    now[0] += 1
    await publisher.tick()
    assert [c.cohort_start for c in _read(sync, "week", "all")] == [
        later.replace(hour=0, minute=0, second=0)
    ]
    assert len(_read(sync, "month", "all")) == 2  # November and May: within 12
    sync.close()
    await client.aclose()


def _read(sync: redis.Redis, grain: Grain, segment: str) -> list[Cohort]:
    fields: Any = sync.hgetall(cohorts_key(grain, segment))
    return decode_cohorts(fields, grain)[0]


def _keys(sync: redis.Redis) -> list[tuple[str, str]]:
    names: Any = sync.keys("kpi-cohorts:*")
    return [tuple(name.decode().split(":", 2)[1:]) for name in names]


def test_read_cohorts_refuses_what_is_not_a_cohort(private_redis: str) -> None:
    sync = redis.Redis.from_url(private_redis)
    good = Cohort(cohort_start=T0.replace(hour=0, minute=0, second=0), size=1, periods=[])
    sync.hset(
        cohorts_key("week", "all"),
        mapping={"2026-11-02T00:00:00Z": good.model_dump_json(), "x": b"{not json"},
    )
    assert decode_cohorts(sync.hgetall(cohorts_key("week", "all")), "week") == ([good], 1)
    sync.close()
