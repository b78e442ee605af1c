"""The customer stage at runtime: a batched consumer of the five input topics inside the worker.

Faust's per-event stream path tops out near 5,000 events/s here, so this stage reads with
aiokafka ``getmany`` and handles whole batches. It keeps exactly-once results without Kafka
transactions: each checkpoint writes the changed customer records and partial window sums,
then a marker with the input offsets, all tagged ``<generation>:<seq>`` in a header, to a
compacted changelog. Recovery applies only writes confirmed by a marker with the same tag and
resumes from that marker's offsets, so a checkpoint torn by a crash is discarded whole.
Partial sums go downstream as absolute values, which makes re-sending them harmless.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError
from mode import Service

from schemas import DeadLetter, EventType
from stream_app.context import AppContext
from stream_app.customers import intake
from stream_app.customers.changelog import CHECKPOINT_HEADER, checkpoint_records
from stream_app.customers.checkpoints import MAX_BATCH_RECORDS, CheckpointPolicy
from stream_app.customers.deadletters import DeadLetterLedger
from stream_app.customers.forget import forget_request
from stream_app.customers.lifecycle_io import send_changes, sent_lifecycle_changes
from stream_app.customers.partition import (
    Checkpoint,
    PartialUpdate,
    PartitionState,
    watermark_tick,
)
from stream_app.customers.recovery import (
    AssignmentMemo,
    ChangelogReader,
    Prefetch,
    sent_dead_letters,
)
from stream_app.customers.timeline import COMPILED_FOLD
from stream_app.gctune import collection_paused
from stream_app.kafka import (
    DEAD_LETTER_MAX_BYTES,
    aiokafka_options,
    changelog_topic,
    error_text,
    forget_topic,
    input_topics,
    partials_topic,
)
from stream_app.kpis.formats import FormatError
from stream_app.metrics import RateLimitedLog
from stream_app.settings import duration_ms

logger = logging.getLogger(__name__)

# Parsed events a partition may hold back for slower topics before pausing faster ones.
BUFFER_LIMIT = 50_000
_NOTHING = -(2**62)
STOP_TIMEOUT_S = 5.0  # a safe time before every event: apply nothing yet
# Offsets are committed for lag monitoring only: a commit the broker cannot take (its topics
# are gone) must not hold up a rebalance.
COMMIT_TIMEOUT_S = 10.0

# True while the broker still holds what this worker wrote (see BrokerSentinel).
BrokerCheck = Callable[[], Awaitable[bool]]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: CustomerEngine) -> None:
        self._engine = engine

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._engine.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self._engine.on_assigned(assigned)


Headers = list[tuple[str, bytes]]


class CustomerEngine(Service):
    """Consumes the input topics in batches; owns the partitions its consumer is assigned."""

    def __init__(
        self,
        app: faust.App,
        ctx: AppContext,
        *,
        broker_intact: BrokerCheck | None = None,
        broker_held: BrokerCheck | None = None,
        on_write_failed: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.broker_intact = broker_intact
        # Stricter: the broker answered and holds the sentinel (not merely "not known lost").
        self.broker_held = broker_held
        self.on_write_failed = on_write_failed
        self.halted = False
        self.app = app
        self.ctx = ctx
        settings = ctx.settings
        self.topics: dict[str, EventType] = {
            name: event_type for event_type, name in input_topics(settings).items()
        }
        self.changelog = changelog_topic(settings)
        self.partials = partials_topic(settings)
        # ``kpi forget`` requests: consumed with the input, so each lands with the partition
        # that owns the customer and its offset is committed by the same checkpoints.
        self.forget_topic = forget_topic(settings)
        self.states: dict[int, PartitionState] = {}
        self.generation = secrets.token_hex(8)
        self._seq = 0
        self._lock = asyncio.Lock()
        self._prefetch = Prefetch()
        self._dead_letter_partitions = 1
        self._lifecycle_partitions = 1
        self._memo = AssignmentMemo(settings)
        self.schedule = CheckpointPolicy(
            duration_ms(settings.checkpoint_interval) / 1000,
            duration_ms(settings.checkpoint_interval_backlog) / 1000,
        )
        # What each partition's last watermark tick said of the backlog.
        self._reported_catching_up: dict[int, bool] = {}
        self._resync_every_s = duration_ms(settings.resync_interval) / 1000
        self._last_resync = time.monotonic()
        self._pending_offsets: set[int] = set()
        self._assigned_at: dict[int, float] = {}
        # Per input partition, the poll (ms) that brought its newest records: kept only with
        # lifecycle on, the one reader of it (``_safe_time``).
        self._arrived: dict[TopicPartition, int] | None = {} if settings.lifecycle_enabled else None
        self._log = RateLimitedLog(logger)
        # When this worker first read input: where a backlog's processing starts (kpi bench).
        self.first_input_at: datetime | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.partials_partitions = settings.topic_partitions

    # -- lifecycle ---------------------------------------------------------------------

    async def on_start(self) -> None:
        settings = self.ctx.settings
        options = aiokafka_options(settings)
        self.producer = AIOKafkaProducer(
            acks="all",
            linger_ms=5,
            request_timeout_ms=duration_ms(settings.write_timeout),
            max_batch_size=1024 * 1024,
            max_request_size=DEAD_LETTER_MAX_BYTES,
            **options,
        )
        self.consumer = AIOKafkaConsumer(
            group_id=f"{settings.app_id}-customers",
            group_instance_id=settings.group_instance_id or None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=duration_ms(settings.fetch_max_wait),
            session_timeout_ms=duration_ms(settings.broker_session_timeout),
            rebalance_timeout_ms=duration_ms(settings.broker_rebalance_timeout),
            heartbeat_interval_ms=duration_ms(settings.broker_heartbeat_interval),
            max_poll_interval_ms=300_000,
            # A partition number is one customer shard across the five input topics, so one
            # member must get it in every topic. The range assignor splits each topic's
            # partitions over the same ordered members alike; round robin (aiokafka's
            # default) did so only while the member count divided the partitions, and a
            # third member during a restart split shards. Round robin stays second: a group
            # in a rolling upgrade agrees on it until every member offers range.
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
            **options,
        )
        await self.producer.start()
        # Each partition's dead letters go to one dead-letter partition, which its next owner
        # reads to send none of them twice (customers/deadletters.py).
        dead_letter_partitions = await self.producer.partitions_for(settings.dead_letter_topic)
        self._dead_letter_partitions = max(1, len(dead_letter_partitions or ()))
        if settings.lifecycle_enabled:
            # The same for stage changes (customers/lifecycle_io.py).
            lifecycle_partitions = await self.producer.partitions_for(settings.lifecycle_topic)
            self._lifecycle_partitions = max(1, len(lifecycle_partitions or ()))
        # Read the partitions this worker owned last while the group join waits (seconds):
        # a restarted worker usually gets them back.
        last = self._memo.read()
        self._prefetch.start(
            self.changelog,
            [PartitionState(p, settings, self.ctx.clock) for p in last],
            settings,
        )
        self.consumer.subscribe([*self.topics, self.forget_topic], listener=_Rebalance(self))
        await self.consumer.start()
        logger.info("customer stage started (generation %s)", self.generation)
        missing = [
            name
            for name, built in (("_intake.c", intake.COMPILED), ("_fold.c", COMPILED_FOLD))
            if not built
        ]
        if missing:
            logger.warning(
                "the compiled customer stage (%s in stream_app/customers) is not built: its "
                "Python twins give the same results at about two thirds of the throughput; "
                "reinstall the package with a C compiler at hand",
                ", ".join(missing),
            )

    async def on_stop(self) -> None:
        # Bounded: with the broker gone, stopping must not hang; the next owner replays
        # from the last complete checkpoint.
        await self._prefetch.discard()
        try:
            if self.halted:
                raise TimeoutError  # nothing of this state may reach the broker any more
            async with asyncio.timeout(STOP_TIMEOUT_S):
                async with self._lock:
                    for state in list(self.states.values()):
                        await self._checkpoint(state)
        except (KafkaError, TimeoutError):
            if not self.halted:
                logger.warning(
                    "final checkpoint incomplete; the next owner replays from the last one"
                )
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await client.stop()
                except (KafkaError, TimeoutError):
                    logger.warning("Kafka client did not stop cleanly")

    @Service.task
    async def _consume(self) -> None:
        while not self.should_stop and not self.halted:
            assert self.consumer is not None
            # Paused from the fetch on, not only while a batch is applied: aiokafka builds an
            # object per record, and every young collection among them walked all those
            # built so far, a tenth of a busy worker's time (py-spy, native frames). They
            # are freed by reference counting once the batch is dropped, before collection
            # resumes. Other tasks run during the awaits in here; their cyclic garbage waits
            # for the end of the batch.
            with collection_paused():
                try:
                    batch = await self.consumer.getmany(
                        timeout_ms=self.schedule.fetch_wait_ms(
                            self._lag(), bool(self._pending_offsets)
                        ),
                        max_records=MAX_BATCH_RECORDS,
                    )
                except KafkaError as exc:
                    self._log.warning("fetch", "fetch failed (%s); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                try:
                    async with self._lock:
                        if self.should_stop or self.halted:
                            break  # on_stop made the final checkpoint and closes the clients
                        # Here, not at the fetch: a batch fetched while the assignment was
                        # still recovering waits for the lock, and its work starts only now.
                        if batch and self.first_input_at is None:
                            self.first_input_at = self.ctx.clock()
                        if batch or any(state.buffered for state in self.states.values()):
                            await self._process(batch)
                        del batch
                        if self.schedule.due(self._lag()):
                            await self._checkpoint_all()
                            if time.monotonic() - self._last_resync >= self._resync_every_s:
                                await self._resync_all()
                except KafkaError as exc:
                    self._write_failed(exc)
                    break

    def _write_failed(self, exc: KafkaError) -> None:
        """A write the producer gave up on: what was not checkpointed is not durable.

        Carrying on would mark offsets done whose state never reached the changelog, and
        the dirty sets were already handed to the failed checkpoint. A restart rebuilds the
        state from the last complete checkpoint and reads the input again from its offsets,
        which keeps every KPI exact.
        """
        reason = (
            f"the customer stage could not write to Kafka ({error_text(exc)}); "
            "its state since the last complete checkpoint is not durable"
        )
        logger.error("%s", reason)
        self.halt("a checkpoint or dead letter could not be written")
        if self.should_stop:
            return  # stopping anyway (a stop asked for is a stop); the next start recovers
        if self.on_write_failed is not None:
            self.on_write_failed(reason)
        else:
            logger.error("the customer stage has stopped; restart the worker")

    # -- processing --------------------------------------------------------------------

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        # Collection is paused by the caller, from the fetch on.
        dead = self._apply_batch(batch)
        if dead:
            await self._send_dead_letters(dead)
        await self._send_lifecycle()

    async def _send_lifecycle(self) -> None:
        """Send the stage changes decided, acknowledged before any checkpoint follows."""
        assert self.producer is not None
        topic = self.ctx.settings.lifecycle_topic
        for partition, state in self.states.items():
            if state.lifecycle is not None and state.lifecycle.outbox:
                await send_changes(
                    self.producer,
                    topic,
                    self._lifecycle_partitions,
                    partition,
                    state.lifecycle_sent,
                    state.lifecycle.take(),
                    state.lifecycle.risk_of,
                )

    def _apply_batch(self, batch: dict[TopicPartition, list[Any]]) -> list[DeadLetter]:
        """Offer a fetched batch and drain what is ready; returns the dead letters."""
        by_partition: dict[int, list[tuple[EventType, list[Any]]]] = {}
        assert self.consumer is not None
        for tp, records in batch.items():
            if tp.topic == self.forget_topic:
                self._forget(tp.partition, records)
                continue
            if records and self._arrived is not None:
                polled = self.consumer.last_poll_timestamp(tp)
                if polled is not None:
                    self._arrived[tp] = polled
            by_partition.setdefault(tp.partition, []).append((self.topics[tp.topic], records))
        metrics = self.ctx.metrics
        dead: list[DeadLetter] = []
        for partition, runs in by_partition.items():
            state = self.states.get(partition)
            if state is None:
                # Revoked between fetch and now; the new owner reads these again.
                continue
            offered = state.offer_runs(runs)
            dead.extend(offered.dead_letters)
            if offered.duplicates:
                metrics.duplicates.inc(offered.duplicates)
        for partition, state in self.states.items():
            if not state.buffered:
                continue
            safe_us = self._safe_time(state)
            result = state.drain(safe_us)
            self._pace(state, safe_us)
            self._pending_offsets.add(partition)
            dead.extend(result.dead_letters)
            for kind, count in result.accepted.items():
                metrics.events.labels(kind).inc(count)
            if result.duplicates:
                metrics.duplicates.inc(result.duplicates)
        self._pending_offsets.update(by_partition)
        return dead

    def _forget(self, partition: int, records: list[Any]) -> None:
        """Apply ``kpi forget`` requests to the partition's state (idempotent)."""
        state = self.states.get(partition)
        if state is None:
            return  # revoked meanwhile: the next owner reads them
        for record in records:
            customer = forget_request(record.value)
            if customer is None:
                self._log.warning("forget", "unreadable forget request at offset %d", record.offset)
                state.forget("", self.forget_topic, record.offset + 1)
                continue
            if state.forget(customer, self.forget_topic, record.offset + 1):
                logger.info("forgot a customer of partition %d", partition)
        self._pending_offsets.add(partition)

    def _lag(self) -> int:
        return sum(self.lags().values())

    def lags(self) -> dict[tuple[str, int], int]:
        """Per input topic partition owned: high watermark - next offset to read.

        Messages already read but held back for event-time order are not lag: they are in
        the buffer. A partition whose high watermark is not known yet is left out.
        """
        if self.consumer is None:
            return {}
        assigned = self.consumer.assignment()
        lags: dict[tuple[str, int], int] = {}
        for partition, state in list(self.states.items()):
            for topic in self.topics:
                tp = TopicPartition(topic, partition)
                if tp not in assigned:
                    continue
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    lags[(topic, partition)] = max(0, highwater - state.next_fetch(topic))
        return lags

    def _safe_time(self, state: PartitionState) -> int | None:
        """The event time every input topic of this partition has reached (None: no limit).

        A topic with unread messages holds the others back to the newest event read from
        it; a topic read to its end holds nobody back. With lifecycle on, a topic counts as
        read to its end only as of a poll no older than the one that brought the others'
        newest records: an end seen earlier let a purchase through before its signup, which
        the producer had sent first, and stage decisions depend on that order (a successor
        replaying the same input then decided other changes).
        """
        consumer = self.consumer
        assert consumer is not None
        safe: int | None = None
        assigned = consumer.assignment()
        newest = 0
        if self._arrived is not None:
            for topic in self.topics:
                newest = max(newest, self._arrived.get(TopicPartition(topic, state.partition), 0))
        for topic in self.topics:
            tp = TopicPartition(topic, state.partition)
            if tp not in assigned:
                return _NOTHING  # a shard split across members: wait, do not guess (logged)
            highwater = consumer.highwater(tp)
            if highwater is None:
                if time.monotonic() - self._assigned_at.get(state.partition, 0.0) > 10.0:
                    continue  # never answered: do not wait for it forever
                return _NOTHING
            if (
                highwater <= state.next_fetch(topic)
                and (consumer.last_poll_timestamp(tp) or 0) >= newest
            ):
                continue
            head = state.heads.get(topic)
            if head is None:
                return _NOTHING
            safe = head if safe is None else min(safe, head)
        return safe

    def _pace(self, state: PartitionState, safe_us: int | None) -> None:
        """Pause the topics that run ahead while the buffer is large; resume them after."""
        assert self.consumer is not None
        tps = [TopicPartition(topic, state.partition) for topic in self.topics]
        if state.buffered > BUFFER_LIMIT and safe_us is not None:
            assigned = self.consumer.assignment()
            ahead = [
                tp for tp in tps if tp in assigned and state.heads.get(tp.topic, safe_us) > safe_us
            ]
            if ahead:
                self.consumer.pause(*ahead)
        else:
            paused = self.consumer.paused()
            resume = [tp for tp in tps if tp in paused]
            if resume:
                self.consumer.resume(*resume)

    async def _send_dead_letters(self, letters: list[DeadLetter]) -> None:
        assert self.producer is not None
        topic = self.ctx.settings.dead_letter_topic
        futures = []
        sent: list[tuple[DeadLetterLedger | None, DeadLetter]] = []
        for letter in letters:
            # Letters come from owned partitions (applied and sent under the lock); one of
            # another partition is sent all the same rather than lost.
            state = self.states.get(letter.source_partition)
            ledger = None if state is None else state.dead_letters
            if ledger is not None and not ledger.take(letter.source_topic, letter.source_offset):
                continue  # an earlier owner sent it before a crash
            reason: str = letter.reason
            self._log.warning(
                reason,
                "dead letter %s from %s[%d]@%d: %s",
                letter.reason,
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.message,
            )
            futures.append(
                await self.producer.send(
                    topic,
                    letter.model_dump_json().encode(),
                    key=letter.original_key(),
                    partition=letter.source_partition % self._dead_letter_partitions,
                )
            )
            sent.append((ledger, letter))
            self.ctx.metrics.dead_letters.labels(letter.reason).inc()
        for (ledger, letter), written in zip(sent, await asyncio.gather(*futures), strict=True):
            if ledger is not None:
                ledger.record(written.offset, letter.source_topic, letter.source_offset)

    # -- checkpoints -------------------------------------------------------------------

    async def _checkpoint_all(self) -> None:
        if self._input_shrank() and not await self._broker_still_intact():
            return
        states = [self.states[p] for p in sorted(self._pending_offsets) if p in self.states]
        self.schedule.estimate_backlog_end(self._lag())
        # Partitions are independent: their round trips overlap instead of adding up, which
        # kept a busy worker idle for a third of its time.
        checkpoints = await asyncio.gather(*(self._persist(state) for state in states))
        # A partition with nothing new since its last checkpoint still says, in its last
        # tick, that it is catching up; a publisher would hold snapshots for it in vain.
        quiet = [
            state
            for state in self.states.values()
            if state not in states
            and state.watermark_us is not None
            and self._reported_catching_up.get(state.partition) != self.schedule.in_backlog
        ]
        ticks: list[asyncio.Future[Any]] = []
        for state in quiet:
            assert state.watermark_us is not None
            ticks.extend(await self._tick_sends(state.partition, state.watermark_us))
        await asyncio.gather(*ticks)
        await self._commit(list(zip(states, checkpoints, strict=True)))
        self._pending_offsets.clear()
        self.schedule.checkpointed()

    async def _resync_all(self) -> None:
        """Send every partition's whole, just checkpointed state to the segment stage.

        Anti-entropy: a segment partition restored by Faust from a changelog the broker
        reported short (seen on Tansu after a peer was killed) heals within one interval.
        Unchanged entries cost the segment stage a comparison, nothing more.
        """
        if not await self._broker_still_intact():
            return
        if self.broker_held is not None and not await self.broker_held():
            # A broker that does not answer may be restarting empty: the producer would
            # deliver this whole state into it. It can wait for the next interval.
            self._last_resync = time.monotonic()
            return
        for state in self.states.values():
            await self._send_updates(state.full_updates())
        self._last_resync = time.monotonic()

    async def _checkpoint(self, state: PartitionState) -> None:
        await self._commit([(state, await self._persist(state))])

    async def _persist(self, state: PartitionState) -> Checkpoint:
        """Write one partition's changelog, then its partials; returns what to commit."""
        assert self.producer is not None
        with collection_paused():
            checkpoint = state.checkpoint()
        self._seq += 1
        tag, records = checkpoint_records(checkpoint, self.generation, self._seq)
        headers = [(CHECKPOINT_HEADER, tag)]
        partition = state.partition
        *writes, (marker_key, marker) = records
        await asyncio.gather(*await self._send_batches(partition, writes, headers))
        # The marker only once every write is acknowledged: a batch the producer gives up on
        # is dropped while later batches still go out (on a retry, or the flush at stop), so
        # a marker sent along with them could confirm a checkpoint that misses records.
        await (
            await self.producer.send(
                self.changelog, marker, key=marker_key, partition=partition, headers=headers
            )
        )
        # Durable: only now may downstream see the values and the offsets move on.
        await self._send_updates(checkpoint.updates, checkpoint, partition)
        return checkpoint

    async def _send_batches(
        self, partition: int, records: list[tuple[bytes, bytes | None]], headers: Headers
    ) -> list[asyncio.Future[Any]]:
        """Hand changelog records to the producer a whole batch at a time.

        A checkpoint writes thousands of records to one partition; ``send`` per record cost
        a busy worker more than building the checkpoint did.
        """
        assert self.producer is not None
        futures = []
        batch = self.producer.create_batch()
        for key, value in records:
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                futures.append(
                    await self.producer.send_batch(batch, self.changelog, partition=partition)
                )
                batch = self.producer.create_batch()
                # A first record always fits: a batch takes one record of any size.
                batch.append(timestamp=None, key=key, value=value, headers=headers)
        if batch.record_count():
            futures.append(
                await self.producer.send_batch(batch, self.changelog, partition=partition)
            )
        return futures

    async def _send_updates(
        self,
        updates: list[PartialUpdate],
        checkpoint: Checkpoint | None = None,
        source: int | None = None,
    ) -> None:
        assert self.producer is not None
        futures = [
            await self.producer.send(self.partials, update.to_bytes(), key=update.segment.encode())
            for update in updates
        ]
        # Also without updates when the backlog just ended: a publisher holding a snapshot
        # for the backlog's end must hear of it.
        if (
            checkpoint is not None
            and checkpoint.watermark_us is not None
            and source is not None
            and (updates or self.schedule.in_backlog != self._reported_catching_up.get(source))
        ):
            futures.extend(await self._tick_sends(source, checkpoint.watermark_us))
        await asyncio.gather(*futures)

    async def _tick_sends(self, source: int, watermark_us: int) -> list[asyncio.Future[Any]]:
        """Send a source's watermark tick to every partials partition; the sends' futures."""
        assert self.producer is not None
        in_backlog = self._reported_catching_up[source] = self.schedule.in_backlog
        tick = watermark_tick(source, watermark_us, in_backlog, self.schedule.eta_s)
        return [
            await self.producer.send(self.partials, tick, partition=partition)
            for partition in range(self.partials_partitions)
        ]

    async def _commit(self, done: list[tuple[PartitionState, Checkpoint]]) -> None:
        """Commit the group offsets too: they are what lag monitoring reads."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        offsets = {
            TopicPartition(topic, state.partition): offset
            for state, checkpoint in done
            for topic, offset in checkpoint.offsets.items()
            if TopicPartition(topic, state.partition) in owned
        }
        if offsets:
            try:
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    await self.consumer.commit(offsets)
            except (KafkaError, TimeoutError) as exc:
                self._log.warning(
                    "commit", "offset commit failed (%s); state is safe", exc.__class__.__name__
                )

    # -- rebalancing -------------------------------------------------------------------

    async def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        async with self._lock:
            # A broker that restarted empty forgets the group, so this is the first thing
            # that runs once it answers again: look before writing to it.
            owned = bool(partitions & self.states.keys())
            keep = owned and await self._broker_still_intact()
            for partition in sorted(partitions):
                state = self.states.pop(partition, None)
                if state is not None and keep:
                    try:
                        await self._checkpoint(state)
                    except KafkaError:
                        logger.exception("checkpoint of revoked partition %d failed", partition)
                # Whoever owns it next says afresh whether it is catching up.
                self._reported_catching_up.pop(partition, None)
            self._pending_offsets -= partitions
        if partitions:
            logger.info("customer stage released partitions %s", sorted(partitions))

    async def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        assert self.consumer is not None
        if self.halted:
            return
        by_partition: dict[int, set[str]] = {}
        for tp in assigned:
            by_partition.setdefault(tp.partition, set()).add(tp.topic)
        async with self._lock:
            new = [partition for partition in sorted(by_partition) if partition not in self.states]
            # Each recovery mostly waits on the broker (an empty partition takes one fetch
            # wait): together, taking over 4 partitions costs about what 1 does.
            try:
                # Recovery builds millions of long-lived objects: collections in between
                # would walk them again and again (docs/benchmarks.md, change 44).
                with collection_paused():
                    recovered = await asyncio.gather(
                        *(self._recover(partition) for partition in new)
                    )
            except FormatError as exc:
                self.refuse(str(exc))
                return
            finally:
                await self._prefetch.discard()
            for partition, state in zip(new, recovered, strict=True):
                self.states[partition] = state
                self._assigned_at[partition] = time.monotonic()
            for partition, topics in sorted(by_partition.items()):
                if topics - {self.forget_topic} != set(self.topics):
                    logger.error(
                        "partition %d is assigned for %s only: input topics must have the same "
                        "partition count", partition, sorted(topics)
                    )  # fmt: skip
                state = self.states[partition]
                for topic in topics:
                    tp = TopicPartition(topic, partition)
                    offset = state.offsets.get(topic)
                    if offset is None:
                        await self.consumer.seek_to_beginning(tp)
                    else:
                        self.consumer.seek(tp, offset)
            self._memo.write(list(self.states))
        logger.info("customer stage owns partitions %s", sorted(self.states))

    async def _recover(self, partition: int) -> PartitionState:
        """Rebuild one partition from the changelog, keeping only confirmed checkpoints."""
        reader = await self._prefetch.take(partition)
        if reader is None:
            state = PartitionState(partition, self.ctx.settings, self.ctx.clock)
            reader = ChangelogReader(self.changelog, state, self.ctx.settings)
        state = reader.replay.state
        try:
            # A prefetched read carries on from where it got: anything written since counts.
            unservable = await reader.read_to_end()
            if unservable is not None:
                self._unservable(partition, *unservable)
            stale = reader.replay.finish()
            records = reader.replay.records
        finally:
            await reader.close()
        if state.lifecycle is not None:
            found, end = await sent_lifecycle_changes(
                self.ctx.settings,
                partition % self._lifecycle_partitions,
                partition,
                state.lifecycle_sent.recovered_mark,
            )
            state.lifecycle_sent.recovered(found, end)
            if found:
                logger.info(
                    "partition %d: %d lifecycle messages sent past the last checkpoint will "
                    "not be sent again",
                    partition,
                    len(found),
                )
        ledger = state.dead_letters
        ledger.recovered(
            *await sent_dead_letters(
                self.ctx.settings,
                partition % self._dead_letter_partitions,
                partition,
                ledger.recovered_mark,
                state.offsets,
            )
        )
        logger.info(
            "recovered partition %d: %d customers, %d changelog records, %d torn writes "
            "discarded, in %.1fs",
            partition,
            len(state.customers),
            records,
            stale,
            time.monotonic() - reader.started,
        )
        # The segment stage may have missed what the last owner sent: resend it all.
        if not self.halted:
            await self._send_updates(state.full_updates())
        return state

    # -- a broker that lost its data -----------------------------------------------------
    #
    # A broker restarted with an empty store (Tansu keeps everything in memory) has none of
    # the input, changelog or offsets this state refers to. Writing to it would plant this
    # state's checkpoints in a changelog that no longer holds their base, so the worker
    # stops writing at the first sign and restarts (stream_app/app.py, BrokerWatch).

    def _unservable(self, partition: int, position: int, end: int) -> None:
        logger.error(
            "changelog partition %d: the broker reports records up to offset %d but serves "
            "none from offset %d; recovering from what was read. Tansu leaves a partition "
            "like this when a client wrote to it right after the broker restarted empty: "
            "restart the broker while nothing writes to it (docs/operations.md)",
            partition,
            end,
            position,
        )

    def refuse(self, reason: str) -> None:
        """Stop for good: a changelog holds state this version cannot read."""
        logger.error("the customer stage cannot start: %s", reason)
        self.halt("its changelog is in a format this worker cannot read")
        if self.ctx.refuse is not None:
            self.ctx.refuse(reason)

    def halt(self, why: str = "its state refers to data the broker no longer holds") -> None:
        """Stop consuming and never write to the broker again (it lost what we built on)."""
        if not self.halted:
            self.halted = True
            self._pending_offsets.clear()
            logger.warning("customer stage halted: %s", why)

    async def _broker_still_intact(self) -> bool:
        """False once the broker is known to have lost its data (then the stage is halted)."""
        if self.halted:
            return False
        if self.broker_intact is not None and not await self.broker_intact():
            self.halt()
        return not self.halted

    def _input_shrank(self) -> bool:
        """Whether the broker reports an input partition shorter than what was already read.

        Kafka never shortens a log, so this means it lost data; a dictionary lookup per
        owned topic partition, cheap enough for every checkpoint.
        """
        consumer = self.consumer
        if consumer is None:
            return False
        for partition, state in self.states.items():
            for topic in self.topics:
                highwater = consumer.highwater(TopicPartition(topic, partition))
                if highwater is not None and highwater < state.next_fetch(topic):
                    return True
        return False
