"""The state of one input partition number: customers, partial window sums, watermark, offsets.

Kafka-free, so the whole customer stage can be tested and benchmarked without a broker. The
runtime (``engine.py``) feeds it raw messages and persists what ``checkpoint`` returns.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby, islice
from operator import add, itemgetter, sub
from typing import Any, NamedTuple, Protocol

import orjson

from schemas import DeadLetter, EventType, Rejection, RejectReason, parse_event
from schemas.cohort import GRAINS
from schemas.parse import unexpected_rejection
from stream_app.clock import Clock
from stream_app.customers.changelog import (
    CUSTOMER_PREFIX,
    LIFECYCLE_PREFIX,
    PART_PREFIX,
    PARTIAL_PREFIX,
    RISK_KEY,
    customer_records,
    parse_part_key,
    parse_partial_key,
    part_key,
    partial_key,
)
from stream_app.customers.cohorts import CohortDeltas
from stream_app.customers.deadletters import DeadLetterLedger
from stream_app.customers.intake import drain_run, fast_stored, offer_run
from stream_app.customers.timeline import (
    CANCELLATION,
    CLICK,
    PURCHASE,
    SIGNUP,
    SURVEY,
    CustomerRecord,
    Facts,
    StoredCustomerRecord,
    StoredEvent,
    earliest_signup,
    stored,
)
from stream_app.kpis.cohorts import oldest_published_start, parse_cohort_spec
from stream_app.kpis.formats import FORMAT, VERSION_KEY, Migration, migrated
from stream_app.kpis.specs import computed_specs
from stream_app.kpis.windows import (
    PURCHASING,
    REPEAT,
    WIDTH,
    DiffArray,
    coarsen,
    coarsen_points,
    fact_grain_us,
    fact_ranges,
)
from stream_app.lifecycle.atrisk import AtRiskBoard
from stream_app.lifecycle.ledger import ChangeLedger
from stream_app.lifecycle.segments import as_lifecycle
from stream_app.lifecycle.stages import Rules
from stream_app.lifecycle.tracker import StageBook
from stream_app.settings import Settings, duration_ms, format_duration

logger = logging.getLogger(__name__)

# A big customer's events are pruned only once one is this far past the dedupe horizon (as
# a fraction of it): a prune rewrites the record whole, at most about once per 1/16th.
PRUNE_SLACK_FRACTION = 16
# How many untouched customers each checkpoint re-examines for expired events.
SWEEP_PER_CHECKPOINT = 2_000
# How often the churn model and its pending examples go to the changelog (seconds): a crash
# loses at most this much of its learning, never a KPI.
RISK_DUMP_INTERVAL_S = 30.0


class Message(Protocol):
    """What the customer stage reads of a consumed message (aiokafka's records have it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class RawMessage(NamedTuple):
    """One consumed input message, before parsing (a tuple: one is made per message)."""

    event_type: EventType
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _event_type(message: RawMessage) -> EventType:
    return message.event_type


def _zeros() -> list[int]:
    return [0] * WIDTH


# A buffer entry's event time; a C getter, as the sort key of every buffered event.
_time_us: Callable[[tuple[Any, ...]], int] = itemgetter(0)


# The event type of each stored event rank, for the accepted counts.
_RANK_TYPES: dict[int, EventType] = {
    SIGNUP: "signup",
    CLICK: "campaign_click",
    PURCHASE: "purchase",
    SURVEY: "survey",
    CANCELLATION: "cancellation",
}


@dataclass
class PartialUpdate:
    """Absolute values of changed window entries of one segment, for the segment stage."""

    source: int
    segment: str
    watermark_us: int
    entries: list[tuple[str, int, list[int] | None]]
    full: bool = False

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                VERSION_KEY: FORMAT,
                "src": self.source,
                "seg": self.segment,
                "wm": self.watermark_us,
                "full": self.full,
                "e": self.entries,
            }
        )


@dataclass
class Checkpoint:
    """What one checkpoint must persist (changelog records) and then send (partial updates)."""

    changelog: list[tuple[bytes, bytes | None]]
    updates: list[PartialUpdate]
    offsets: dict[str, int]
    watermark_us: int | None
    # Where a next owner looks for dead letters already sent (``DeadLetterLedger.mark``).
    dead_letter_mark: int | None = None
    # ...and for lifecycle messages already sent (``ChangeLedger.mark``).
    lifecycle_mark: int | None = None


def watermark_tick(
    source: int, watermark_us: int, catching_up: bool, eta_s: float | None = None
) -> bytes:
    """The message after a checkpoint's updates: every count up to ``watermark_us`` is sent.

    ``cu`` (only when true) says the source is working off a backlog, so its counts will
    move again within moments; ``eta_ms``, when known, is how long it expects the rest of
    the backlog to take. The publisher holds a due snapshot when that end is close.
    """
    tick: dict[str, Any] = {VERSION_KEY: FORMAT, "src": source, "wm": watermark_us}
    if catching_up:
        tick["cu"] = True
        if eta_s is not None:
            tick["eta_ms"] = round(eta_s * 1000)
    return orjson.dumps(tick)


@dataclass
class IngestResult:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accepted: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0


class PartitionState:
    """Everything the customer stage keeps for one partition number of the input topics."""

    def __init__(self, partition: int, settings: Settings, clock: Clock) -> None:
        self.partition = partition
        self.settings = settings
        self.clock = clock
        # The configured windows, plus the churn detector's hourly buckets if it needs its own.
        self.specs = computed_specs(settings)
        self._grain_us = fact_grain_us(self.specs)
        self._specs_by_step = sorted(self.specs, key=lambda spec: spec.step_us)
        self.attribution_us = duration_ms(settings.attribution_window) * 1000
        self.lateness_us = duration_ms(settings.max_lateness) * 1000
        self.retention_us = max(self.lateness_us, duration_ms(settings.dedupe_horizon) * 1000)
        self.customers: dict[str, CustomerRecord] = {}
        self.partials: dict[tuple[str, str], DiffArray] = {}
        self.watermark_us: int | None = None
        self.offsets: dict[str, int] = {}
        self.dead_letters = DeadLetterLedger()
        # Lifecycle stages (contract section 7), unless KPI_LIFECYCLE_ENABLED is false.
        if settings.lifecycle_enabled:
            # Here, not at the top: river and its dependencies (a thousand modules, 60,000
            # objects for every garbage collection to walk) only in a worker that uses them.
            from stream_app.lifecycle.risk import ChurnRisk
        self.lifecycle = (
            StageBook(
                Rules.from_settings(settings),
                risk=ChurnRisk(),
                board=AtRiskBoard(settings.lifecycle_at_risk_size),
            )
            if settings.lifecycle_enabled
            else None
        )
        # The model is a pickle of some kilobytes plus a pending example per customer: it
        # is written every RISK_DUMP_INTERVAL_S, not at every checkpoint.
        self._risk_dumped_at: float | None = None
        self.lifecycle_sent = ChangeLedger()
        self._dirty_customers: set[str] = set()
        self._dirty_entries: set[tuple[str, str, int]] = set()
        self._sweep: Iterator[str] = iter(())
        # Parsed events waiting for the other topics: (t_us, arrival seq, (customer, event
        # id), event, message), in arrival order; ``drain`` sorts.
        self._buffer: list[tuple[int, int, tuple[str, str], StoredEvent, Message]] = []
        # (customer, event id) of every buffered event: the first copy to arrive counts, even
        # when a later copy carries an earlier occurred_at and would be applied first.
        self._buffered_ids: set[tuple[str, str]] = set()
        self._seq = 0
        # Next offset fetched per topic, and the newest event time offered per topic.
        self._fetched: dict[str, int] = {}
        self.heads: dict[str, int] = {}
        # Recovery only: events of big customers' part records, by customer and part index.
        self._loaded_parts: dict[str, dict[int, list[StoredEvent]]] = {}
        # Keys to delete at the next checkpoint: torn part writes, forgotten customers.
        self._tombstones: set[bytes] = set()

    # -- processing --------------------------------------------------------------------

    def offer(self, messages: Iterable[RawMessage]) -> IngestResult:
        """Parse a fetched batch: rejections come back as dead letters, events wait in the buffer.

        Nothing is applied here. ``drain`` applies buffered events in event-time order up to
        the time every input topic has reached, so a topic read ahead of the others (a
        backlog) cannot push the watermark past events the others still hold.
        """
        runs = ((event_type, list(run)) for event_type, run in groupby(messages, _event_type))
        return self.offer_runs(runs)

    def offer_runs(self, runs: Iterable[tuple[EventType, Iterable[Message]]]) -> IngestResult:
        """``offer`` for messages grouped by event type, as fetched: no wrapper per message.

        The runtime hands over aiokafka's records as they are; building a ``RawMessage`` for
        each cost a busy worker 4%.
        """
        result = IngestResult()
        currency = self.settings.reporting_currency
        lateness_us = self.lateness_us
        heads = self.heads
        fetched = self._fetched
        customers = self.customers
        buffered_ids = self._buffered_ids
        seq = self._seq
        buffer = self._buffer
        duplicates = 0
        for event_type, run in runs:
            messages = run if isinstance(run, list) else list(run)
            count = len(messages)
            # A run is one topic's (an event type has one); its next offset and newest event
            # time are kept in locals and stored when the topic changes or the run ends.
            topic = ""
            next_offset = 0
            head: int | None = None
            index = 0
            while index < count:
                message = messages[index]
                if message.topic != topic:
                    if topic:
                        fetched[topic] = next_offset
                        if head is not None:
                            heads[topic] = head
                    topic = message.topic
                    # ``next_fetch``, inlined.
                    next_offset = fetched.get(topic, self.offsets.get(topic, 0))
                    head = heads.get(topic)
                if offer_run is not None:
                    # The compiled loop takes what it can; it stops before a message of
                    # another topic, or one that needs full validation or a dead letter,
                    # which the code below handles as it handles every message without it.
                    index, next_offset, head, seq, skipped = offer_run(
                        messages, index, topic, event_type, currency, next_offset, head,
                        lateness_us, customers, buffered_ids, buffer, seq,
                    )  # fmt: skip
                    duplicates += skipped
                    if index == count:
                        break
                    message = messages[index]
                    if message.topic != topic:
                        continue
                index += 1
                offset = message.offset
                # A seek during a rebalance can deliver a fetched range twice: each offset is
                # offered once, so no dead letter or duplicate count is doubled.
                if offset < next_offset:
                    continue
                next_offset = offset + 1
                try:
                    fast = fast_stored(event_type, message.value, message.key, currency)
                    if fast is None:
                        parsed = parse_event(
                            event_type, message.value, message.key, reporting_currency=currency
                        )
                        if isinstance(parsed, Rejection):
                            result.dead_letters.append(self._dead_letter(message, parsed))
                            continue
                        customer, event = parsed.customer_id, stored(parsed)
                    else:
                        customer, event = fast
                except Exception as exc:  # one message never stops a worker
                    rejection = unexpected_rejection(exc)
                    result.dead_letters.append(self._dead_letter(message, rejection))
                    continue
                t_us, event_id = event[0], event[2]
                # Judged against what came before it on its own topic partition too: that
                # order is fixed, while how far the other topics got when it is applied is
                # not.
                if head is not None and t_us < head - lateness_us:
                    result.dead_letters.append(self._dead_letter(message, self._too_late(event_id)))
                    continue
                if head is None or t_us > head:
                    head = t_us
                ident = (customer, event_id)
                known = customers.get(customer)
                if ident in buffered_ids or (known is not None and event_id in known.ids):
                    duplicates += 1
                    continue
                buffered_ids.add(ident)
                seq += 1
                buffer.append((t_us, seq, ident, event, message))
            if topic:
                fetched[topic] = next_offset
                if head is not None:
                    heads[topic] = head
        self._seq = seq
        result.duplicates += duplicates
        return result

    def drain(self, safe_us: int | None = None) -> IngestResult:
        """Apply buffered events with ``occurred_at <= safe_us`` (all if None), oldest first."""
        result = IngestResult()
        buffer = self._buffer
        if not buffer:
            return result
        # By time alone: the sort is stable and the buffer is in arrival order (the rest of
        # the last drain, sorted, then newer arrivals), so equal times stay in arrival
        # order, as sorting by (t_us, seq) would put them, without a tuple comparison each.
        # The buffer is a few runs already in time order (one per topic), which sorting
        # merges in C; a heap cost a Python-level push and pop per event.
        buffer.sort(key=_time_us)
        cut = len(buffer) if safe_us is None else bisect_right(buffer, safe_us, key=_time_us)
        ready = buffer[:cut]
        del buffer[:cut]
        pending: dict[str, list[StoredEvent]] = {}
        customers = self.customers
        discard = self._buffered_ids.discard
        lateness_us = self.lateness_us
        watermark = self.watermark_us
        ranks = [0] * len(_RANK_TYPES)
        index = 0
        ready_count = len(ready)
        while index < ready_count:
            if drain_run is not None:
                # The compiled loop; it stops before an event too late, handled below.
                index, watermark, skipped = drain_run(
                    ready, index, self._buffered_ids, customers, pending, ranks, watermark,
                    lateness_us,
                )  # fmt: skip
                result.duplicates += skipped
                if index == ready_count:
                    break
            t_us, _seq, ident, event, message = ready[index]
            index += 1
            discard(ident)
            if watermark is not None and t_us < watermark - lateness_us:
                result.dead_letters.append(self._dead_letter(message, self._too_late(event[2])))
                continue
            if watermark is None or t_us > watermark:
                watermark = t_us
            customer = ident[0]
            record = customers.get(customer)
            # Copies of one event cannot both be in the buffer (``offer`` lets the first in),
            # so a copy here is one applied by an earlier drain.
            if record is not None and event[2] in record.ids:
                result.duplicates += 1
                continue
            events = pending.get(customer)
            if events is None:
                pending[customer] = [event]
            else:
                events.append(event)
            ranks[event[1]] += 1
        self.watermark_us = watermark
        for rank, count in enumerate(ranks):
            if count:
                result.accepted[_RANK_TYPES[rank]] = count

        facts = Facts()
        stages = self.lifecycle
        stage_facts = Facts()
        cohorts = CohortDeltas(self.attribution_us, watermark)
        grain_us = self._grain_us
        for customer, events in pending.items():
            record = customers.get(customer)
            if record is None:
                record = customers[customer] = CustomerRecord.new()
            if stages is not None:
                stages.segment_facts(
                    customer,
                    record.events,
                    events,
                    self.attribution_us,
                    stage_facts,
                    self._grain_us,
                )
            cohorts.apply(record, events, facts, grain_us)
            self._dirty_customers.add(customer)
            if stages is not None:
                stages.observe(customer, events, record.end[1])  # sorted by ``apply``
        if stages is not None:
            as_lifecycle(stage_facts, facts)
        self._apply_facts(facts)
        if stages is not None and watermark is not None:
            stages.advance(watermark)
        self._apply_cohorts(cohorts)
        return result

    def ingest(self, messages: Iterable[RawMessage]) -> IngestResult:
        """Offer and drain everything at once (no other topic to wait for)."""
        offered = self.offer(messages)
        drained = self.drain()
        drained.dead_letters[:0] = offered.dead_letters
        drained.duplicates += offered.duplicates
        return drained

    def forget(self, customer: str, topic: str, next_offset: int) -> bool:
        """Erase a customer (``kpi forget``): its record, lifecycle and buffered events; the
        next checkpoint writes tombstones for every changelog key it had and commits
        ``next_offset`` of the request ``topic``. True if the customer was known."""
        self._fetched[topic] = max(next_offset, self._fetched.get(topic, 0))
        record = self.customers.pop(customer, None)
        known = record is not None
        if self.lifecycle is not None:
            known = self.lifecycle.forget(customer) or known
        kept = [entry for entry in self._buffer if entry[2][0] != customer]
        if len(kept) != len(self._buffer):
            self._buffer[:] = kept
            self._buffered_ids = {entry[2] for entry in kept}
        self._dirty_customers.discard(customer)
        if known:
            parts = record.parts if record is not None else 0
            self._tombstones.update(
                (
                    CUSTOMER_PREFIX + customer.encode(),
                    LIFECYCLE_PREFIX + customer.encode(),
                    *(part_key(index, customer) for index in range(1, parts + 1)),
                )
            )
        return known

    def next_fetch(self, topic: str) -> int:
        """The offset of the next message of ``topic`` not yet offered."""
        return self._fetched.get(topic, self.offsets.get(topic, 0))

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def committed_offsets(self) -> dict[str, int]:
        """Per topic, the offset to resume from: the oldest message still in the buffer.

        Messages after it that were already applied are read again after a restart and
        recognised by their event ids.
        """
        offsets = dict(self.offsets)
        offsets.update(self._fetched)
        oldest: dict[str, int] = {}
        for entry in self._buffer:
            message = entry[4]
            if message.offset < oldest.get(message.topic, message.offset + 1):
                oldest[message.topic] = message.offset
        offsets.update(oldest)
        return offsets

    def _apply_facts(self, facts: Facts) -> None:
        partials = self.partials
        dirty = self._dirty_entries
        points_by_step: dict[int, dict[tuple[str, int], list[int]]] = {self._grain_us: facts.points}
        spans_by_step = {self._grain_us: facts.spans}
        for spec in self._specs_by_step:
            step_us = spec.step_us
            points = points_by_step.get(step_us)
            if points is None:
                # From the coarsest set already made whose step divides this one: fewest facts.
                source = max(step for step in points_by_step if step_us % step == 0)
                points = points_by_step[step_us] = coarsen_points(points_by_step[source], step_us)
                spans = spans_by_step[step_us] = coarsen(spans_by_step[source], step_us)
            else:
                spans = spans_by_step[step_us]
            name = spec.name
            steps = spec.steps
            # Summed here per segment and window index first, then added to the arrays once
            # per index: facts of a batch share a few hundred indexes, and a method call and
            # two dirty keys per fact were most of this function.
            changes: dict[str, defaultdict[int, list[int]]] = {}
            for (segment, t), vector in points.items():
                if not any(vector):
                    continue
                sums = changes.get(segment)
                if sums is None:
                    sums = changes[segment] = defaultdict(_zeros)
                # A run of ``steps`` windows from the one containing ``t``.
                first = t // step_us + 1
                start = sums[first]
                start[:] = map(add, start, vector)
                end = sums[first + steps]
                end[:] = map(sub, end, vector)
            for fact, value in spans.items():
                if not value:
                    continue
                segment = fact[1]
                sums = changes.get(segment)
                if sums is None:
                    sums = changes[segment] = defaultdict(_zeros)
                # ``fact_ranges`` inlined for the purchase kinds, a few per purchase.
                kind = fact[0]
                if kind == "dp" and fact[3] is not None:
                    bp = fact[2] // step_us
                    lo = max(bp, fact[3] // step_us + steps)
                    if lo < bp + steps:
                        sums[lo + 1][PURCHASING] += value
                        sums[bp + steps + 1][PURCHASING] -= value
                    continue
                if kind == "dr":
                    bq = fact[3] // step_us
                    q2 = fact[4]
                    lo = fact[2] // step_us
                    if q2 is not None:
                        lo = max(lo, q2 // step_us + steps)
                    if lo < bq + steps:
                        sums[lo + 1][REPEAT] += value
                        sums[bq + steps + 1][REPEAT] -= value
                    continue
                for metric, first, last in fact_ranges(fact, spec):
                    sums[first][metric] += value
                    if last is not None:
                        sums[last + 1][metric] -= value
            for segment, sums in changes.items():
                array = partials.get((name, segment))
                if array is None:
                    array = partials[(name, segment)] = DiffArray()
                array.add_vectors(sums)
                dirty.update([(name, segment, k) for k in sums])

    def _apply_cohorts(self, cohorts: CohortDeltas) -> None:
        """Add a batch's cohort changes to their arrays (indexed by period, not window end)."""
        partials = self.partials
        dirty = self._dirty_entries
        for (spec_name, segment), periods in cohorts.changes().items():
            array = partials.get((spec_name, segment))
            if array is None:
                array = partials[(spec_name, segment)] = DiffArray()
            array.add_vectors(periods)
            dirty.update([(spec_name, segment, k) for k in periods])

    def _drop_old_cohorts(self, watermark_us: int) -> None:
        """Cohorts past the published depth are dropped: their entries go out as deletions,
        and the emptied array itself at the next checkpoint."""
        oldest = {grain: oldest_published_start(watermark_us, grain) for grain in GRAINS}
        for (spec_name, segment), array in list(self.partials.items()):
            cohort = parse_cohort_spec(spec_name)
            if cohort is None or cohort[1] >= oldest[cohort[0]]:
                continue
            if not len(array):
                del self.partials[(spec_name, segment)]
                continue
            for k in list(array.diffs):
                array.set_entry(k, [0] * WIDTH)
                self._dirty_entries.add((spec_name, segment, k))

    def _too_late(self, event_id: str) -> Rejection:
        return Rejection(
            reason=RejectReason.TOO_LATE,
            message=(
                f"occurred_at is more than {format_duration(self.settings.max_lateness)} older "
                "than the newest event seen (the watermark)"
            ),
            field="occurred_at",
            event_id=event_id,
        )

    def _dead_letter(self, message: Message, rejection: Rejection) -> DeadLetter:
        return DeadLetter.from_rejection(
            rejection,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            now=self.clock(),
        )

    # -- persistence -------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Expire old state, then hand out every changed record and entry since the last call."""
        self._expire()
        # Tombstones first: a customer forgotten and back since then is written after them.
        changelog: list[tuple[bytes, bytes | None]] = [
            (key, None) for key in sorted(self._tombstones)
        ]
        self._tombstones.clear()
        for customer in self._dirty_customers:
            changelog.extend(customer_records(customer, self.customers[customer]))
        if self.lifecycle is not None:
            self.lifecycle.score()
            changelog.extend(
                (LIFECYCLE_PREFIX + customer.encode(), value)
                for customer, value in self.lifecycle.changed_records()
            )
            risk = self.lifecycle.risk
            now = self.clock().timestamp()
            if risk is not None and (
                self._risk_dumped_at is None or now - self._risk_dumped_at >= RISK_DUMP_INTERVAL_S
            ):
                changelog.append((RISK_KEY, risk.dump()))
                self._risk_dumped_at = now
        by_segment: dict[str, list[tuple[str, int, list[int] | None]]] = {}
        for spec_name, segment, k in sorted(self._dirty_entries):
            vector = self.partials[(spec_name, segment)].diffs.get(k)
            changelog.append(
                (
                    partial_key(spec_name, segment, k),
                    orjson.dumps(vector) if vector is not None else None,
                )
            )
            by_segment.setdefault(segment, []).append((spec_name, k, vector))
        watermark = self.watermark_us if self.watermark_us is not None else 0
        updates = [
            PartialUpdate(self.partition, segment, watermark, entries)
            for segment, entries in by_segment.items()
        ]
        self._dirty_customers.clear()
        self._dirty_entries.clear()
        self.offsets = self.committed_offsets()
        mark = self.dead_letters.mark(self.offsets)
        horizon = None if self.watermark_us is None else self.watermark_us - self.lateness_us
        return Checkpoint(
            changelog,
            updates,
            dict(self.offsets),
            self.watermark_us,
            mark,
            self.lifecycle_sent.mark(horizon),
        )

    def full_updates(self) -> list[PartialUpdate]:
        """Every entry of every segment: what the segment stage needs to resynchronise."""
        watermark = self.watermark_us if self.watermark_us is not None else 0
        by_segment: dict[str, list[tuple[str, int, list[int] | None]]] = {}
        for (spec_name, segment), array in self.partials.items():
            entries = by_segment.setdefault(segment, [])
            entries.extend((spec_name, k, vector) for k, vector in array.entries())
        return [
            PartialUpdate(self.partition, segment, watermark, entries, full=True)
            for segment, entries in by_segment.items()
        ]

    def _expire(self) -> None:
        """Fold expired events into base states and expired window entries into index 0."""
        if self.watermark_us is None:
            return
        keep_from = self.watermark_us - self.retention_us
        slack_us = self.retention_us // PRUNE_SLACK_FRACTION
        customers = self.customers
        for customer in self._dirty_customers:
            dirty = customers[customer]
            # ``prune`` does nothing unless the first event is due; most are recent.
            events = dirty.events
            if events and events[0][0] < keep_from:
                self._prune(customer, dirty, keep_from, slack_us)
        for customer in self._sweep_batch():
            record = self.customers.get(customer)
            if record is not None and self._prune(customer, record, keep_from, slack_us):
                self._dirty_customers.add(customer)
        # No event older than watermark - lateness is accepted any more, and a fact moves no
        # window entry before its event (or, for conversions, the click it converts).
        self._drop_old_cohorts(self.watermark_us)
        frozen_us = self.lateness_us + self.attribution_us
        for spec in self.specs:
            below = spec.oldest_kept(self.watermark_us, frozen_us, self.settings.history_steps)
            for (spec_name, segment), array in self.partials.items():
                if spec_name == spec.name:
                    for k in array.compact(below):
                        self._dirty_entries.add((spec_name, segment, k))

    def _prune(self, customer: str, record: CustomerRecord, keep_from: int, slack_us: int) -> bool:
        """``record.prune``, and the lifecycle pass's base follows it."""
        events = record.events
        dropped = events[: bisect_left(events, [keep_from])] if self.lifecycle is not None else []
        if not record.prune(keep_from, self.attribution_us, slack_us):
            return False
        if self.lifecycle is not None:
            self.lifecycle.pruned(customer, dropped, self.attribution_us)
        return True

    def _sweep_batch(self) -> list[str]:
        """The next customers of a round-robin walk, so idle customers expire too."""
        batch = list(islice(self._sweep, SWEEP_PER_CHECKPOINT))
        if len(batch) < SWEEP_PER_CHECKPOINT:
            self._sweep = iter(list(self.customers))
        return batch

    # -- recovery ----------------------------------------------------------------------

    def load(self, key: bytes, value: bytes | None, how: Migration | None = None) -> None:
        """Apply one committed changelog record (recovery); ``how`` migrates its vectors."""
        if key.startswith(CUSTOMER_PREFIX):
            customer = key[len(CUSTOMER_PREFIX) :].decode()
            if value is None:
                self.customers.pop(customer, None)
            else:
                self.customers[customer] = StoredCustomerRecord(value)
        elif key.startswith(PART_PREFIX):
            index, customer = parse_part_key(key)
            parts = self._loaded_parts.setdefault(customer, {})
            if value is None:
                parts.pop(index, None)
            else:
                parts[index] = orjson.loads(value)["ev"]
        elif key == RISK_KEY:
            if self.lifecycle is not None and value is not None:
                from stream_app.lifecycle.risk import ChurnRisk, RiskFormatError

                try:
                    self.lifecycle.risk = ChurnRisk.load(value)
                except RiskFormatError as exc:
                    logger.error("partition %d: churn model not restored, learning afresh: %s",
                                 self.partition, exc)  # fmt: skip
        elif key.startswith(LIFECYCLE_PREFIX):
            if self.lifecycle is not None:
                self.lifecycle.load(key[len(LIFECYCLE_PREFIX) :].decode(), value)
        elif key.startswith(PARTIAL_PREFIX):
            spec_name, segment, k = parse_partial_key(key)
            array = self.partials.setdefault((spec_name, segment), DiffArray())
            if value is None:
                array.set_entry(k, [0] * WIDTH)
            else:
                array.load_entry(k, migrated(orjson.loads(value), how))
        else:
            raise ValueError(f"unknown changelog key {key[:40]!r}")

    def load_marker(self, marker: dict[str, Any]) -> None:
        self.offsets = {topic: int(offset) for topic, offset in marker["offsets"].items()}
        self.watermark_us = marker.get("wm")
        mark = marker.get("dl")
        self.dead_letters.recovered_mark = mark if type(mark) is int and mark >= 0 else None
        mark = marker.get("lc")
        self.lifecycle_sent.recovered_mark = mark if type(mark) is int and mark >= 0 else None

    def mark_dirty(self, key: bytes) -> None:
        """Rewrite this key at the next checkpoint (it had a torn, uncommitted write)."""
        if key.startswith(CUSTOMER_PREFIX) or key.startswith(PART_PREFIX):
            if key.startswith(CUSTOMER_PREFIX):
                customer = key[len(CUSTOMER_PREFIX) :].decode()
            else:
                index, customer = parse_part_key(key)
                record = self.customers.get(customer)
                if record is None or index > record.parts:
                    # A torn write of a part the customer does not have: nothing would ever
                    # overwrite it, so a tombstone does.
                    self._tombstones.add(key)
            if customer in self.customers:
                self._dirty_customers.add(customer)
        elif key.startswith(PARTIAL_PREFIX):
            spec_name, segment, k = parse_partial_key(key)
            self.partials.setdefault((spec_name, segment), DiffArray())
            self._dirty_entries.add((spec_name, segment, k))
        elif key.startswith(LIFECYCLE_PREFIX) and self.lifecycle is not None:
            self.lifecycle.dirty.add(key[len(LIFECYCLE_PREFIX) :].decode())

    def finish_recovery(self) -> None:
        # Only customers with part records can have parts: the others stay encoded.
        for customer, parts in self._loaded_parts.items():
            record = self.customers.get(customer)
            if record is not None and record.parts:
                # The head names how many parts count: parts beyond it are left over from a
                # time the customer had more events.
                for index in range(1, record.parts + 1):
                    record.events.extend(parts.get(index, ()))
                # Appended parts hold events in arrival order, which may go back in time.
                record.events.sort()
                record.ids.update(event[2] for event in record.events)
                if record.first is None and record.base[1] == "unknown":
                    # A record older than format 4 had its events in parts: derived here.
                    record.first = earliest_signup(record.events, None)
        self._loaded_parts.clear()
        for array in self.partials.values():
            array.take_dirty()
        if self.lifecycle is not None:
            self.lifecycle.finish_recovery()
