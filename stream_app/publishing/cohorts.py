"""Cohort publishing (contract section 6): the hash, the channel and the Kafka topic.

Part of the publisher's tick (``Publisher`` calls ``tick``, and ``restore_all`` and
``forget_unowned`` where it does the same for snapshots), so Redis errors, the back-off and a
Redis found empty are handled once, there. Coalesced like snapshots: each hash
``kpi-cohorts:<grain>:<segment>`` is written at most once per publish interval, with only the
cohorts that changed; each of those also goes to the channel and to ``crm.kpi-cohorts``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from schemas.cohort import GRAINS, Cohort, CohortUpdate, Grain
from stream_app.kpis.cohorts import (
    build_cohort,
    cohort_field,
    cohort_spec,
    newest_cohort_starts,
    parse_cohort_spec,
    shape,
)
from stream_app.metrics import RateLimitedLog
from stream_app.redis_keys import cohort_updates_channel, cohorts_key
from stream_app.segments.store import SegmentAggregate, SegmentStore

logger = logging.getLogger(__name__)
_out_of_step_log = RateLimitedLog(logger, burst=1)

KafkaSend = Callable[[bytes, bytes], Awaitable[Any]]


@dataclass
class _Hash:
    """What was published to one hash ``kpi-cohorts:<grain>:<segment>``, and what is owed."""

    partition: int
    # Per cohort start: the JSON in the hash, and the watermark shape it was built for.
    sent: dict[int, bytes] = field(default_factory=dict)
    shapes: dict[int, int] = field(default_factory=dict)
    # Cohorts changed since the last write with their JSON, or None to delete the field.
    pending: dict[int, tuple[Cohort, bytes] | None] = field(default_factory=dict)
    at: float = float("-inf")
    # Redis lost its data: write every cohort again (Kafka kept them).
    restore: bool = False


_cohort_of = lru_cache(maxsize=65_536)(parse_cohort_spec)


class CohortPublisher:
    def __init__(
        self, store: SegmentStore, kafka_send: KafkaSend | None, interval_s: float
    ) -> None:
        self.store = store
        self.kafka_send = kafka_send
        self.interval_s = interval_s
        self._hashes: dict[tuple[Grain, str], _Hash] = {}
        self._starts: dict[tuple[int, Grain], set[int]] = {}

    def restore_all(self) -> None:
        for published in self._hashes.values():
            published.restore = True
            published.at = float("-inf")

    def forget_unowned(self, owned: set[int]) -> None:
        """A partition that comes (back) to this worker is published whole, as snapshots are."""
        for key in [k for k, h in self._hashes.items() if h.partition not in owned]:
            del self._hashes[key]

    def _plan(self, aggregate: SegmentAggregate, watermark_us: int) -> None:
        """Note which cohorts of a segment changed (their sums or their watermark shape)."""
        kept: dict[Grain, set[int]] = {}
        for grain in GRAINS:
            starts = self._starts.get((watermark_us, grain))
            if starts is None:  # the same for every segment of a partition: once per tick
                starts = self._starts[(watermark_us, grain)] = set(
                    newest_cohort_starts(watermark_us, grain)
                )
            kept[grain] = starts
        segment = aggregate.segment
        # The segment's arrays, not every published start: a handful per segment and tick.
        for name, array in aggregate.totals.items():
            cohort = _cohort_of(name)
            if cohort is None:
                continue
            grain, start = cohort
            if start not in kept[grain]:
                continue
            key = (grain, segment)
            published = self._hashes.get(key)
            current = shape(start, watermark_us, grain)
            dirty = array.take_dirty() is not None
            if published is None:
                published = self._hashes[key] = _Hash(aggregate.partition)
            elif not dirty and published.shapes.get(start) == current:
                continue
            published.shapes[start] = current
            try:
                built = build_cohort(start, grain, array.value_at, watermark_us)
            except ValidationError as exc:
                # Sums not yet in step: partials re-read after a rebalance, older than the
                # ones applied, can leave a period below zero for a moment. Nothing goes
                # out, and it is looked at again each tick until they agree.
                published.pending.pop(start, None)
                published.shapes.pop(start, None)
                _out_of_step_log.warning(
                    "out-of-step", "cohort %s of %s not published yet: %s", start, segment,
                    exc.errors()[0]["msg"],
                )  # fmt: skip
                continue
            planned = None if built is None else (built, built.model_dump_json().encode())
            if (None if planned is None else planned[1]) == published.sent.get(start):
                # Back to what Redis has (a short restore healed within one interval): what
                # was planned in between must not go out, or it would stay there for good.
                published.pending.pop(start, None)
            else:
                published.pending[start] = planned
        for grain in GRAINS:
            published = self._hashes.get((grain, segment))
            if published is None:
                continue
            # Cohorts past the depth, and those the store no longer has, leave the hash.
            for start in list(published.sent):
                if start not in kept[grain] or cohort_spec(grain, start) not in aggregate.totals:
                    published.pending[start] = None
                    published.shapes.pop(start, None)

    async def tick(self, redis: aioredis.Redis, owned: set[int], now: float) -> int:
        """Write the cohorts that changed and are due; returns how many went out."""
        seen: set[tuple[Grain, str]] = set()
        self._starts.clear()
        for aggregate in self.store.owned(owned):
            watermark = self.store.watermark(aggregate.partition)
            if watermark is not None:
                self._plan(aggregate, watermark)
                seen.update((grain, aggregate.segment) for grain in GRAINS)
        for key, published in self._hashes.items():
            if key not in seen:  # the segment was retired: nothing of it is left
                published.pending.update(dict.fromkeys(published.sent))
        due = [
            (key, published)
            for key, published in self._hashes.items()
            if (published.pending or published.restore)
            and now - published.at + 1e-6 >= self.interval_s
        ]
        if not due:
            return 0
        pipe = redis.pipeline(transaction=False)
        outgoing: list[tuple[bytes, bytes]] = []
        for (grain, segment), published in due:
            name = cohorts_key(grain, segment)
            fields = dict(published.sent) if published.restore else {}
            gone: list[str] = []
            for start, planned in published.pending.items():
                if planned is None:
                    fields.pop(start, None)
                    gone.append(cohort_field(start))
                    continue
                cohort, fields[start] = planned
                update = CohortUpdate(
                    cohort_start=cohort.cohort_start,
                    size=cohort.size,
                    periods=cohort.periods,
                    grain=grain,
                    segment=segment,
                )
                message = update.model_dump_json().encode()
                pipe.publish(cohort_updates_channel(grain, segment), message)
                outgoing.append((f"{grain}:{segment}:{cohort_field(start)}".encode(), message))
            if fields:
                pipe.hset(name, mapping={cohort_field(s): v for s, v in fields.items()})
            if gone:
                pipe.hdel(name, *gone)
        await pipe.execute()
        if self.kafka_send is not None:
            for key_bytes, message in outgoing:
                await self.kafka_send(key_bytes, message)
        for _key, published in due:
            for start, planned in published.pending.items():
                if planned is None:
                    published.sent.pop(start, None)
                else:
                    published.sent[start] = planned[1]
            published.pending.clear()
            published.restore = False
            published.at = now
        for key in [k for k, h in self._hashes.items() if not h.sent and not h.pending]:
            del self._hashes[key]
        return len(outgoing)
