"""Reading a partition's changelog back from Kafka: the IO half of recovery.

``changelog.ChangelogReplay`` decides what the records mean; this module only moves them
from the broker into it. A worker that restarts usually gets its partitions back, so it
starts reading them (``Prefetch``) while it still waits for the group to assign them: on
the embedded broker a group join takes most of ten seconds, which replay can use. Reading
resumes where the prefetch stopped once the assignment is known, so records written in the
meantime (by another owner, had the group moved the partition) are read too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from stream_app.customers.changelog import CHECKPOINT_HEADER, ChangelogReplay
from stream_app.customers.partition import PartitionState
from stream_app.kafka import aiokafka_options
from stream_app.settings import Settings, duration_ms

logger = logging.getLogger(__name__)

# After the reported end of a changelog, one more fetch this long looks for records beyond it.
RECOVERY_PROBE_MS = 300
# Empty fetches (of up to a second each) before recovery stops waiting for records the broker
# reports but never serves (Tansu, for a partition written to right after it restarted empty).
RECOVERY_STALL_FETCHES = 10


class ChangelogReader:
    """One changelog partition read into a ``ChangelogReplay``, in as many goes as needed."""

    def __init__(self, topic: str, state: PartitionState, settings: Settings) -> None:
        self.tp = TopicPartition(topic, state.partition)
        self.replay = ChangelogReplay(state)
        self.started = time.monotonic()
        self._consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # Brokers that answer a waiting fetch only when the wait runs out (Tansu) made
            # every empty changelog partition take a second to recover.
            fetch_max_wait_ms=duration_ms(settings.fetch_max_wait),
            **aiokafka_options(settings),
        )
        self._opened = False

    async def read_to_end(self) -> tuple[int, int] | None:
        """Feed every record up to the partition's end; None when done, or ``(position, end)``
        when the broker would not serve records it reports (the caller logs it and carries on
        with what was read)."""
        reader, tp, feed = self._consumer, self.tp, self.replay.feed
        if not self._opened:
            await reader.start()
            self._opened = True
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]
        idle = 0
        while True:
            position = await reader.position(tp)
            batch = await reader.getmany(
                tp, timeout_ms=1000 if position < end else RECOVERY_PROBE_MS, max_records=10_000
            )
            fetched = batch.get(tp, [])
            for record in fetched:
                # The stage writes this one header: a lookup per record cost a tenth of
                # a replay.
                headers = record.headers
                tag = headers[0][1] if headers and headers[0][0] == CHECKPOINT_HEADER else b""
                feed(record.key, record.value, tag)
            position = await reader.position(tp)
            idle = 0 if fetched else idle + 1
            if position < end and idle >= RECOVERY_STALL_FETCHES:
                return position, end
            if position < end or fetched:
                continue
            # Read to the end the broker reported: ask again. Tansu has been seen to report an
            # end behind records it already holds right after a peer was killed; stopping
            # there would take a checkpoint's records for torn and start a new generation on
            # top of newer, confirmed ones.
            end = (await reader.end_offsets([tp]))[tp]
            if position >= end:
                return None

    async def close(self) -> None:
        if self._opened:
            await self._consumer.stop()


class Prefetch:
    """Changelog reads started before the group assigns partitions, keyed by partition."""

    def __init__(self) -> None:
        self._reads: dict[int, asyncio.Task[ChangelogReader]] = {}

    def start(self, topic: str, states: list[PartitionState], settings: Settings) -> None:
        for state in states:
            self._reads[state.partition] = asyncio.create_task(
                _read(ChangelogReader(topic, state, settings)),
                name=f"changelog-prefetch-{state.partition}",
            )

    async def take(self, partition: int) -> ChangelogReader | None:
        """The reader of ``partition`` if one was started (read up to where it got)."""
        task = self._reads.pop(partition, None)
        if task is None:
            return None
        try:
            return await task
        except Exception:
            logger.warning("changelog prefetch of partition %d failed; reading it again", partition)
            return None

    async def discard(self) -> None:
        """Stop reads of partitions the group gave to others."""
        tasks, self._reads = list(self._reads.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await (await task).close()


async def _read(reader: ChangelogReader) -> ChangelogReader:
    try:
        await reader.read_to_end()
    except BaseException:
        await reader.close()
        raise
    return reader


class AssignmentMemo:
    """The partitions a worker owned last, in its data directory: what to prefetch at start.

    Local and advisory: a missing, stale or damaged file costs only the head start.
    """

    def __init__(self, settings: Settings) -> None:
        instance = settings.group_instance_id or "dynamic"
        name = f"customer-partitions-{settings.app_id}-{instance}.json"
        self.path: Path = settings.data_dir / name
        self.partitions = settings.topic_partitions

    def read(self) -> list[int]:
        try:
            owned = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return []
        if not isinstance(owned, list):
            return []
        return sorted({p for p in owned if type(p) is int and 0 <= p < self.partitions})

    def write(self, owned: list[int]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".tmp")
            partial.write_bytes(orjson.dumps(sorted(owned)))
            os.replace(partial, self.path)
        except OSError as exc:
            logger.warning("could not note the owned partitions in %s: %s", self.path, exc)


async def sent_dead_letters(
    settings: Settings,
    dead_letter_partition: int,
    source_partition: int,
    start: int | None,
    committed: dict[str, int],
) -> tuple[list[tuple[int, str, int]], int]:
    """The letters of ``source_partition`` in the dead-letter partition from ``start`` (None:
    its beginning) whose input lies at or past ``committed``, and the partition's end.

    Each as (dead-letter offset, source topic, source offset). A record that is no dead
    letter of this project is passed over: the topic is shared with nobody, but it is read.
    """
    tp = TopicPartition(settings.dead_letter_topic, dead_letter_partition)
    records, end = await read_partition_from(settings, tp, start)
    found: list[tuple[int, str, int]] = []
    for record in records:
        letter = _dead_letter_source(record.value)
        if letter is None or letter[0] != source_partition:
            continue
        _, topic, offset = letter
        if offset >= committed.get(topic, 0):
            found.append((record.offset, topic, offset))
    return found, end


async def read_partition_from(
    settings: Settings, tp: TopicPartition, start: int | None
) -> tuple[list[ConsumerRecord[Any, Any]], int]:
    """The records of ``tp`` from ``start`` (None: its beginning) to the end it had when
    asked, and that end. What a new owner reads back of what its predecessor sent (dead
    letters, lifecycle messages) past the last checkpoint's mark."""
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=duration_ms(settings.fetch_max_wait),
        **aiokafka_options(settings),
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, min(start, end))
        found: list[ConsumerRecord[Any, Any]] = []
        idle = 0
        while await consumer.position(tp) < end and idle < RECOVERY_STALL_FETCHES:
            records = (await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)).get(tp, [])
            idle = 0 if records else idle + 1
            found.extend(records)
        return found, end
    finally:
        await consumer.stop()


def _dead_letter_source(value: bytes | None) -> tuple[int, str, int] | None:
    """(source partition, topic, offset) of a dead letter's JSON, None if it is none."""
    try:
        letter = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(letter, dict):
        return None
    partition, topic, offset = (
        letter.get("source_partition"),
        letter.get("source_topic"),
        letter.get("source_offset"),
    )
    if type(partition) is int and isinstance(topic, str) and type(offset) is int:
        return partition, topic, offset
    return None
