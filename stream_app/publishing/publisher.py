"""The publisher: coalesced KPI snapshots to Redis (hash, pub/sub, stream, history) and Kafka."""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from stream_app.clock import Clock
from stream_app.customers.timeline import EPOCH
from stream_app.gctune import collection_paused
from stream_app.kpis.formulas import counts_from_vector
from stream_app.kpis.registry import derive_kpis, segment_kind
from stream_app.kpis.windows import DiffArray, Spec
from stream_app.metrics import Metrics, RateLimitedLog
from stream_app.publishing.atrisk import Boards, write_at_risk
from stream_app.publishing.cohorts import CohortPublisher
from stream_app.redis_keys import (
    UPDATES_STREAM,
    history_key,
    publisher_alive_key,
    snapshot_key,
    updates_channel,
)
from stream_app.segments.store import SegmentAggregate, SegmentStore
from stream_app.settings import Settings, duration_ms

logger = logging.getLogger(__name__)

_NO_WATERMARK = -(2**62)
# History snapshots written per tick at most, so a backfill never stalls the event loop.
HISTORY_BUDGET_PER_TICK = 2_000
# The same budget while the segment's source partitions work off a backlog. Every past step
# moves with each checkpoint then, so entries written now are rewritten soon; at the full
# budget, history a catch-up made obsolete took a tenth of a busy worker. Not zero: a worker
# that never catches up still fills in its history, slower.
HISTORY_BUDGET_CATCHING_UP = 200
# Past steps of one window and segment are rewritten at most this often (the current one
# every publish interval): while a backlog is processed every step moves every second, and
# rewriting them all took a sixth of a busy worker.
HISTORY_INTERVAL_S = 5.0
# KPIs derived from one count vector, kept for the next snapshot with the same counts: the
# history holds many equal steps (a quiet segment, the empty steps before its first event),
# and deriving them again was half of writing a history entry.
DERIVED_CACHE_SIZE = 4_096
# How long past its interval a due snapshot may wait while a source partition working off a
# backlog expects to be done within an interval. Published now, the snapshot with the
# backlog's end would have to wait out a whole interval after this one, which is when ops
# look for the numbers to be right again. A backlog further from its end holds nothing.
BACKLOG_HOLD_S = 1.0
# How often the publisher asks Redis whether it still holds the key this publisher set: a Redis
# restarted empty between two writes (or while nothing changes) raises no error on the next
# one, since the client reconnects, and would otherwise stay empty until counts move.
REDIS_CHECK_S = 1.0
# The key's lifetime: far longer than any pause between checks, short enough that the keys of
# workers long gone do not pile up.
REDIS_ALIVE_TTL_S = 3600

KafkaSend = Callable[[bytes, bytes], Awaitable[Any]]


@functools.lru_cache(maxsize=16_384)  # window bounds repeat for every segment and history
def rfc3339(t_us: int) -> str:
    moment = EPOCH + timedelta(microseconds=t_us)
    return moment.isoformat().replace("+00:00", "Z")


def _stamp(moment: datetime) -> str:
    """``updated_at`` as snapshots carry it: RFC 3339 in UTC with ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class _Published:
    """What was last published for one window and segment, and what is still owed."""

    k: int | None = None
    vector: list[int] | None = None
    at: float = float("-inf")
    # The watermark the hash was last written with: it moves even when no count does.
    watermark: int | None = None
    # History entries [lo, hi] still to (re)write, newest first.
    history: tuple[int, int] | None = None
    history_at: float = float("-inf")
    # The segment-stage partition it belongs to: forgotten once this worker no longer owns it.
    partition: int = -1
    # The last snapshot written whole to Redis and sent to Kafka (JSON), and whether Redis
    # lost it: it is then written to Redis again as it was, not sent to Kafka a second time.
    sent: bytes | None = None
    restore: bool = False


class Publisher:
    """Turns the segment totals into snapshots; every call to ``tick`` publishes what is due."""

    def __init__(
        self,
        settings: Settings,
        store: SegmentStore,
        redis: aioredis.Redis,
        kafka_send: KafkaSend,
        owned: Callable[[], set[int]],
        metrics: Metrics,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
        at_risk: Boards = lambda: [],
        cohort_send: KafkaSend | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.redis = redis
        self.kafka_send = kafka_send
        self.owned = owned
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        # The owned customer partitions' churn risks, for the at-risk sets.
        self.at_risk = at_risk
        self.specs = [Spec.from_window(window) for window in settings.windows]
        self.interval_s = duration_ms(settings.publish_interval) / 1000
        self.history_interval_s = max(HISTORY_INTERVAL_S, self.interval_s)
        self.frozen_us = (
            duration_ms(settings.max_lateness) + duration_ms(settings.attribution_window)
        ) * 1000
        self._published: dict[tuple[str, str], _Published] = {}
        self._derived: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._backoff_until = 0.0
        self._backoff_s = 0.5
        self._redis_down = False
        self._log = RateLimitedLog(logger)
        self.last_publish_at: datetime | None = None
        # For /health: the timer is alive, and since when due work has failed to go out.
        self.last_tick_at: float | None = None
        self.pending_since: float | None = None
        # The newest watermark (event time, microseconds) whose latency was observed.
        self._latency_mark = _NO_WATERMARK
        self._owned: set[int] = set()
        self._alive_key = publisher_alive_key(secrets.token_hex(8))
        self._alive_seen = False
        self._alive_due = float("-inf")
        # Cohorts (contract section 6) go out in this tick too, to ``crm.kpi-cohorts``.
        self.cohorts = CohortPublisher(store, cohort_send, self.interval_s)

    async def tick(self) -> int:
        """Publish every snapshot that is due; returns how many current snapshots went out."""
        now = self.monotonic()
        self.last_tick_at = now
        if now < self._backoff_until:
            return 0
        if now >= self._alive_due:
            try:
                if await self._redis_lost(now):
                    logger.warning("Redis lost its data; writing every snapshot and history again")
                    self._restore_all()
            except (RedisError, OSError) as exc:
                return self._redis_failed(now, exc)
            self._redis_answered(wrote=False)
        updated_at = self.clock()
        owned = self.owned()
        if owned != self._owned:
            self._forget_unowned(owned)
        work: list[tuple[SegmentAggregate, Spec, _Published, int, list[int] | None, list[int]]] = []
        retiring: list[SegmentAggregate] = []
        budget = HISTORY_BUDGET_PER_TICK
        backlog_budget = HISTORY_BUDGET_CATCHING_UP
        for aggregate in self.store.owned(owned):
            watermark = self.store.watermark(aggregate.partition)
            if watermark is None:
                continue
            if aggregate.is_empty():
                if self._retirement_due(aggregate.segment, now):
                    retiring.append(aggregate)
                continue
            catching_up = self.store.is_catching_up(aggregate.partition)
            for spec in self.specs:
                totals = aggregate.totals.get(spec.name)
                if totals is None:
                    continue
                past_budget = min(budget, backlog_budget) if catching_up else budget
                item = self._plan(
                    aggregate, spec, totals, watermark, now, budget, past_budget, catching_up
                )
                if item is not None:
                    budget -= len(item[5])
                    if catching_up:
                        backlog_budget -= len(item[5])
                    work.append(item)
        try:
            await write_at_risk(self.redis, self.at_risk(), self.settings.lifecycle_at_risk_size)
        except (RedisError, OSError) as exc:
            return self._redis_failed(now, exc)
        try:
            sent = await self._write(work, updated_at, now) if work else 0
            if retiring:
                sent += await self._retire(retiring, updated_at)
            await self.cohorts.tick(self.redis, owned, now)
            if not work and not retiring:
                return 0
        except (RedisError, OSError) as exc:
            return self._redis_failed(now, exc)
        self._redis_answered(wrote=True)
        return sent

    def _redis_failed(self, now: float, exc: BaseException) -> int:
        """Back off (everything is kept) and write it all again once Redis answers."""
        if self.pending_since is None:
            self.pending_since = now
        self._redis_down = True
        self._backoff_until = now + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, 10.0)
        self._log.warning(
            "redis", "Redis unavailable (%s); KPI state is kept, retrying", exc.__class__.__name__
        )
        return 0

    def _redis_answered(self, *, wrote: bool) -> None:
        self._backoff_s = 0.5
        if wrote:  # a check that answers says nothing of the writes: /health waits for one
            self.pending_since = None
        if self._redis_down:
            # Redis may have come back empty: write every current snapshot and history again.
            self._redis_down = False
            logger.info("Redis is back; writing every snapshot and history again")
            self._restore_all()

    async def _redis_lost(self, now: float) -> bool:
        """Whether Redis no longer holds the key this publisher keeps there (it lost its data).

        One round trip a second: the key is set again each time, with its TTL.
        """
        self._alive_due = now + REDIS_CHECK_S
        previous = await self.redis.set(self._alive_key, b"1", ex=REDIS_ALIVE_TTL_S, get=True)
        lost = previous is None and self._alive_seen
        self._alive_seen = True
        return lost

    def _restore_all(self) -> None:
        """Write every known snapshot to Redis again, as last published, with its history.

        Kafka kept what it was sent: a snapshot whose counts and watermark did not change
        since goes to Redis only (hash, channel, stream), so the topic gets no second copy.
        """
        for board in self.at_risk():
            board.rewrite_all()
        self.cohorts.restore_all()
        for published in self._published.values():
            published.restore = True
            published.at = float("-inf")
            published.history = None
            published.history_at = float("-inf")

    def _forget_unowned(self, owned: set[int]) -> None:
        """Drop what was published for partitions this worker no longer owns.

        Another worker may write them meanwhile, and a worker that dies after its Redis write
        loses the Kafka copy it had not sent yet: when a partition comes (back) to this one,
        each of its snapshots is published whole again, to Redis and to Kafka, so the topic's
        latest message per key ends up equal to the hash.
        """
        self._owned = set(owned)
        self.cohorts.forget_unowned(owned)
        for key in [k for k, p in self._published.items() if p.partition not in owned]:
            del self._published[key]

    def _observe_latency(self, newest_us: int) -> None:
        """Event-to-publish latency of the newest event this round wrote (docs/api.md).

        Observed only when the watermark moved forward: then the event that moved it is in
        this round's snapshots for the first time. One observation per round, none per event.
        """
        written_at = self.clock().timestamp()
        self.metrics.last_publish.set(written_at)
        if newest_us <= self._latency_mark:
            return
        self._latency_mark = newest_us
        self.metrics.event_to_publish.observe(max(0.0, written_at - newest_us / 1_000_000))

    def _plan(
        self,
        aggregate: SegmentAggregate,
        spec: Spec,
        totals: DiffArray,
        watermark_us: int,
        now: float,
        budget: int,
        past_budget: int,
        catching_up: bool,
    ) -> tuple[SegmentAggregate, Spec, _Published, int, list[int] | None, list[int]] | None:
        key = (aggregate.segment, spec.name)
        published = self._published.get(key)
        if published is None:
            # Due now, and held like any other while its source catches up: a worker that
            # starts on a backlog would otherwise publish its first, partial snapshot at
            # once and make the one with the backlog's end wait out a whole interval.
            published = self._published[key] = _Published(
                at=now - self.interval_s, partition=aggregate.partition
            )
        # Rounded up by a microsecond: ``now - (now - interval)`` can come out a hair short,
        # which held a first snapshot (and some due ones) for a tick more.
        since_s = now - published.at + 1e-6
        if since_s < self.interval_s:
            return None  # what changed meanwhile is still marked, and goes out when due
        if (
            since_s < self.interval_s + BACKLOG_HOLD_S
            and catching_up
            and self.store.backlog_ends_within(aggregate.partition, self.interval_s)
        ):
            return None  # held: published now, the backlog's end would wait an interval
        k = spec.current_index(watermark_us)
        # Both bounds hold: what the customer stage still keeps exact, and the history length.
        oldest = max(
            k - self.settings.history_steps + 1,
            spec.oldest_kept(watermark_us, self.frozen_us, self.settings.history_steps),
        )
        dirty = totals.take_dirty()
        pending = published.history
        if published.k is None or published.restore:
            pending = (oldest, k)
        else:
            lo = k + 1
            if dirty is not None:
                lo = min(lo, dirty)
            if published.k < k:
                lo = min(lo, published.k + 1)
            if lo <= k:
                pending = (lo, k) if pending is None else (min(pending[0], lo), k)
        if pending is not None:
            pending = (max(pending[0], oldest), pending[1])
            if pending[0] > pending[1]:
                pending = None
        published.history = pending
        moved = published.watermark != watermark_us
        if pending is None and published.k == k and not moved and not published.restore:
            return None
        current = totals.value_at(k)
        # A moved watermark is a new snapshot too: the hash is the current snapshot, and
        # what reaches the hash also reaches the channel, the stream and Kafka.
        changed = published.k != k or current != published.vector or moved
        vector = current if changed else None
        history: list[int] = []
        if pending is not None and budget > 0:
            lo, hi = pending
            if now - published.history_at < self.history_interval_s or past_budget <= 1:
                # Only the current step's entry now, if it changed; the past ones later.
                lo = k if vector is not None else k + 1
            if lo <= hi:
                first = max(lo, hi - max(past_budget, 1) + 1)
                history = list(range(first, hi + 1))
        if vector is None and not history and not published.restore:
            return None
        return aggregate, spec, published, k, vector, history

    def _snapshot(
        self, aggregate: SegmentAggregate, spec: Spec, k: int, watermark_us: int, at: str
    ) -> dict[str, Any]:
        start_us, end_us = spec.bounds_us(k)
        vector = aggregate.totals[spec.name].value_at(k)
        kind = segment_kind(aggregate.segment)
        cache_key = (kind, *vector)
        kpis = self._derived.get(cache_key)
        if kpis is None:
            if len(self._derived) >= DERIVED_CACHE_SIZE:
                self._derived.clear()
            kpis = self._derived[cache_key] = derive_kpis(
                counts_from_vector(vector), kind, self.settings.gross_margin
            )
        snapshot: dict[str, Any] = {
            "window": spec.name,
            "segment": aggregate.segment,
            "window_start": rfc3339(start_us),
            "window_end": rfc3339(end_us),
            "watermark": rfc3339(watermark_us),
            "updated_at": at,
        }
        snapshot.update(kpis)
        return snapshot

    def _current_commands(
        self,
        work: list[tuple[SegmentAggregate, Spec, _Published, int, list[int] | None, list[int]]],
        written: list[int],
        at: str,
    ) -> tuple[Pipeline, list[tuple[bytes, bytes]], list[bytes | None]]:
        """The hash, pub/sub and stream writes of a tick, its Kafka messages, and per item
        the snapshot that goes out whole (None: only history)."""
        pipe = self.redis.pipeline(transaction=False)
        outgoing: list[tuple[bytes, bytes]] = []
        snapshots: list[bytes | None] = []
        for (aggregate, spec, published, k, vector, _history), watermark in zip(
            work, written, strict=True
        ):
            data: bytes | None = None
            if vector is not None:
                snapshot = self._snapshot(aggregate, spec, k, watermark, at)
                data = self._announce(pipe, outgoing, snapshot, kafka=True)
            elif published.restore and published.sent is not None:
                # Redis lost it, Kafka has it: the same snapshot again, to Redis alone.
                data = self._announce(pipe, outgoing, orjson.loads(published.sent), kafka=False)
            snapshots.append(data)
        return pipe, outgoing, snapshots

    def _announce(
        self,
        pipe: Pipeline,
        outgoing: list[tuple[bytes, bytes]],
        snapshot: dict[str, Any],
        *,
        kafka: bool,
        current: bool = True,
    ) -> bytes:
        """A snapshot to the hash (``current``), the channel, the stream and, with ``kafka``,
        queued for Kafka; returns its JSON."""
        window, segment = snapshot["window"], snapshot["segment"]
        if current:
            pipe.hset(
                snapshot_key(window, segment),
                mapping={field: orjson.dumps(value) for field, value in snapshot.items()},
            )
        data = orjson.dumps(snapshot)
        pipe.publish(updates_channel(window, segment), data)
        pipe.xadd(UPDATES_STREAM, {"data": data}, maxlen=self.settings.stream_maxlen,
                  approximate=True)  # fmt: skip
        if kafka:
            outgoing.append((f"{window}:{segment}".encode(), data))
        return data

    def _retirement_due(self, segment: str, now: float) -> bool:
        """Whether every window of an empty segment may go out again (once per interval)."""
        for spec in self.specs:
            published = self._published.get((segment, spec.name))
            if published is not None and now - published.at + 1e-6 < self.interval_s:
                return False
        return True

    async def _retire(self, aggregates: list[SegmentAggregate], updated_at: datetime) -> int:
        """Retire segments left without any count (a refold moved them all elsewhere).

        Each window's last snapshot (all zeros, which is what the segment now holds) goes to
        the channel, the stream and Kafka like any other, so live views see the change; then
        its hash and history are deleted, so the segment leaves every list of segments (a
        SCAN of ``kpi:*``) instead of showing zeros forever. An event that falls in it later
        brings it back, with its whole history.
        """
        at = _stamp(updated_at)
        pipe = self.redis.pipeline(transaction=False)
        outgoing: list[tuple[bytes, bytes]] = []
        for aggregate in aggregates:
            watermark = self.store.watermark(aggregate.partition)
            assert watermark is not None  # planned with one, and nothing awaited since
            for spec in self.specs:
                if spec.name in aggregate.totals:
                    k = spec.current_index(watermark)
                    snapshot = self._snapshot(aggregate, spec, k, watermark, at)
                    self._announce(pipe, outgoing, snapshot, kafka=True, current=False)
                # Deleted whichever worker wrote them: ownership may have moved since.
                segment = aggregate.segment
                pipe.delete(snapshot_key(spec.name, segment), history_key(spec.name, segment))
        await pipe.execute()
        for payload_key, data in outgoing:
            await self.kafka_send(payload_key, data)
        for aggregate in aggregates:
            for spec in self.specs:
                self._published.pop((aggregate.segment, spec.name), None)
            # Counts that arrived meanwhile keep it: without ``_published`` it is written
            # again whole at the next tick.
            if self.store.retire(aggregate):
                logger.info("segment %s has no counts left: retired", aggregate.segment)
        self.metrics.snapshots.inc(len(outgoing))
        return len(outgoing)

    def _history_commands(
        self,
        work: list[tuple[SegmentAggregate, Spec, _Published, int, list[int] | None, list[int]]],
        written: list[int],
        at: str,
    ) -> Pipeline:
        """The history writes of a tick."""
        pipe = self.redis.pipeline(transaction=False)
        for (aggregate, spec, _published, _k, _vector, history), watermark in zip(
            work, written, strict=True
        ):
            if not history:
                continue
            # The steps are consecutive and each is scored by its window's end, so one range
            # removal and one ZADD replace them all: a command per step made parsing Redis's
            # replies 7% of a busy worker.
            key = history_key(spec.name, aggregate.segment)
            scores = [spec.bounds_us(hk)[1] // 1_000_000 for hk in history]
            entries = {
                orjson.dumps(self._snapshot(aggregate, spec, hk, watermark, at)): score
                for hk, score in zip(history, scores, strict=True)
            }
            pipe.zremrangebyscore(key, scores[0], scores[-1])
            pipe.zadd(key, entries)
            pipe.zremrangebyrank(key, 0, -(self.settings.history_steps + 1))
        return pipe

    async def _write(
        self,
        work: list[tuple[SegmentAggregate, Spec, _Published, int, list[int] | None, list[int]]],
        updated_at: datetime,
        tick_at: float,
    ) -> int:
        at = _stamp(updated_at)
        written: list[int] = []
        for item in work:
            watermark = self.store.watermark(item[0].partition)
            assert watermark is not None  # planned with one, and nothing awaited since
            written.append(watermark)
        # Current snapshots first, in a round trip of their own: they are what dashboards
        # and alerts wait for, and a tick's history (up to 2,000 entries, tenths of a
        # second to build) held every one of them back, most at the end of a backlog.
        with collection_paused():
            pipe, outgoing, snapshots = self._current_commands(work, written, at)
        started = time.perf_counter()
        await pipe.execute()
        self.metrics.publish_seconds.observe(time.perf_counter() - started)
        # Set before the Kafka sends: a reader that sees the snapshots in Redis sees this too.
        self.last_publish_at = updated_at
        self._observe_latency(max(written))
        for payload_key, data in outgoing:
            await self.kafka_send(payload_key, data)
        if any(item[5] for item in work):
            with collection_paused():
                pipe = self._history_commands(work, written, at)
            await pipe.execute()
        # The tick's start, not the end of the writes: the next tick one interval later is
        # due. Stamped after a write of tens of ms, every key waited a tick more (1.2 s).
        now = tick_at
        for (_aggregate, _spec, published, k, vector, history), watermark, whole in zip(
            work, written, snapshots, strict=True
        ):
            if whole is not None:
                published.at = now
                published.sent = whole
            published.restore = False
            if vector is not None:
                published.vector = vector
            published.watermark = watermark
            published.k = k
            if history and published.history is not None:
                lo, _hi = published.history
                first = history[0]
                published.history = (lo, first - 1) if first > lo else None
                if first < k:
                    published.history_at = now
        self.metrics.snapshots.inc(len(outgoing))
        return len(outgoing)
