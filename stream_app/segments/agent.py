"""The segment stage in Faust: an agent keyed by segment sums every partition's partials."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable
from typing import Any

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TableT

from stream_app.context import AppContext
from stream_app.kafka import partials_topic
from stream_app.kpis.formats import FormatError
from stream_app.metrics import RateLimitedLog
from stream_app.segments.store import SegmentStore, chunk_key, parse_chunk_key

logger = logging.getLogger(__name__)
# A newer worker in the group sends every message in its format: one line per minute.
_refused_log = RateLimitedLog(logger, burst=1)

_PARTITIONER = DefaultPartitioner()


def segment_partition(segment: str, partitions: int) -> int:
    """The partition the customer stage's producer picks for a segment (murmur2 of the key)."""
    all_partitions = list(range(partitions))
    partition: int = _PARTITIONER(segment.encode(), all_partitions, all_partitions)
    return partition


def register(app: faust.App, ctx: AppContext, store: SegmentStore) -> TableT[Any, Any]:
    """Declare the partials topic, the table that persists it, and the agent that folds it in."""
    settings = ctx.settings
    partitions = settings.topic_partitions
    topic = app.topic(
        partials_topic(settings),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=True,
    )
    table = app.Table(
        "segment-partials",
        default=None,
        partitions=partitions,
        help="Partial window sums per segment, source partition, window spec and chunk.",
    )

    def refuse(reason: str) -> None:
        logger.error("the segment stage cannot start: %s", reason)
        if ctx.refuse is not None:
            ctx.refuse(reason)

    @table.on_recover
    async def rebuild() -> None:
        """After a rebalance, rebuild the in-memory totals from the recovered table."""
        store.aggregates.clear()
        store.watermarks.clear()
        store.confirmed.clear()
        for key, value in table.items():
            if value is None:
                continue
            if key.startswith("wm|"):
                _, partition, source = key.split("|")
                store.watermarks[(int(partition), int(source))] = int(value)
                # The recovered entries are all the agent applied up to this watermark.
                store.confirmed[(int(partition), int(source))] = int(value)
                continue
            segment = parse_chunk_key(key)[0]
            try:
                store.load_chunk(key, value, segment_partition(segment, partitions))
            except FormatError as exc:
                refuse(str(exc))
                return
        for aggregate in store.aggregates.values():
            for totals in aggregate.totals.values():
                totals.dirty_from = 0
        logger.info("segment stage holds %d segments after recovery", len(store.aggregates))

    async def segment_stage(stream: faust.StreamT[bytes]) -> None:
        events: AsyncIterable[Any] = stream.events()
        async for event in events:
            try:
                message = orjson.loads(event.message.value)
            except orjson.JSONDecodeError:
                logger.error("undecodable partials message at offset %d", event.message.offset)
                ctx.metrics.stage_messages_refused.labels("undecodable").inc()
                continue
            partition = event.message.partition
            try:
                _segments, chunks = store.apply_update(message, partition)
            except FormatError as exc:
                # Not applied, and nothing waits for it: a worker of a newer version shares
                # the group, which the operator must fix (the error names how).
                ctx.metrics.stage_messages_refused.labels("format").inc()
                _refused_log.warning("format", "partials message not applied: %s", exc)
                continue
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                # Only our own workers write here, but one odd message must not stop the agent.
                ctx.metrics.stage_messages_refused.labels("undecodable").inc()
                _refused_log.warning("undecodable", "malformed partials message: %r", exc)
                continue
            if "wm" in message:
                wm_key = f"wm|{partition}|{message['src']}"
                stored = store.watermarks.get((partition, int(message["src"])))
                if stored is not None and table.get(wm_key) != stored:
                    table[wm_key] = stored
            for segment, source, spec_name, chunk in chunks:
                value = store.aggregates[segment].chunk(spec_name, source, chunk)
                key = chunk_key(segment, source, spec_name, chunk)
                if value is not None:
                    table[key] = value
                elif key in table:
                    del table[key]

    app.agent(topic, name="segment-stage")(segment_stage)
    return table
