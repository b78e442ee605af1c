"""The KPI path without Kafka: partitions, checkpoints, segment store, checked by the reference."""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.eventlog import LogRecord
from stream_app.kpis.formats import FORMAT
from stream_app.kpis.windows import DiffArray, Spec
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings
from stream_app.verify.reference import filter_records, reference_from_intake

T0 = datetime(2026, 9, 1, tzinfo=UTC)
TYPES = ["signup", "purchase", "cancellation", "campaign_click", "survey"]


def _events(seed: int, count: int, days: int, customers: int) -> list[LogRecord]:
    rnd = random.Random(seed)
    records: list[LogRecord] = []
    for i in range(count):
        customer = f"c{rnd.randrange(customers)}"
        moment = T0 + timedelta(seconds=i * days * 86400 // count + rnd.randrange(0, 7200))
        event_type = rnd.choice(TYPES)
        value: dict[str, Any] = {
            "event_id": f"e{i}",
            "customer_id": customer,
            "occurred_at": moment.isoformat(),
        }
        if event_type == "signup":
            value["region"] = rnd.choice(["EU", "NA", "APAC"])
            value["campaign_id"] = rnd.choice([None, "k1", "k2"])
        elif event_type == "purchase":
            value.update(
                order_id=f"o{i}", amount=f"{rnd.randrange(1, 100000) / 100}", currency="USD"
            )
        elif event_type == "campaign_click":
            value.update(campaign_id=rnd.choice(["k1", "k2"]), cost=f"0.{rnd.randrange(10, 99)}")
        elif event_type == "survey":
            kind = rnd.choice(["nps", "csat"])
            value.update(
                survey_type=kind,
                score=rnd.randrange(0, 11) if kind == "nps" else rnd.randrange(1, 6),
            )
        if i > count // 2 and rnd.random() < 0.01:
            # Clearly too late: 40 days before the events around it.
            value["occurred_at"] = (moment - timedelta(days=40)).isoformat()
        record = LogRecord(event_type, customer.encode(), orjson.dumps(value))  # type: ignore[arg-type]
        records.append(record)
        if rnd.random() < 0.05:
            records.append(record)
    return records


def _run_pipeline(
    records: list[LogRecord], settings: Settings, partitions: int, seed: int, batch: int
) -> tuple[SegmentStore, list[PartitionState]]:
    """Feed records to per-partition states in a scrambled cross-topic order, as Kafka might."""
    rnd = random.Random(seed)
    queues: dict[tuple[int, str], list[tuple[int, LogRecord]]] = {}
    for record in records:
        assert record.key is not None
        partition = zlib.crc32(record.key) % partitions
        queue = queues.setdefault((partition, record.event_type), [])
        queue.append((len(queue), record))
    states = [PartitionState(p, settings, lambda: datetime.now(UTC)) for p in range(partitions)]
    store = SegmentStore()
    keys = list(queues)
    while any(queues[key] for key in keys):
        # Each "fetch" takes a random chunk of one topic partition: topics drift apart.
        key = rnd.choice([key for key in keys if queues[key]])
        take = rnd.randrange(1, batch)
        chunk, queues[key] = queues[key][:take], queues[key][take:]
        partition, event_type = key
        state = states[partition]
        state.offer(
            RawMessage(
                record.event_type, f"t.{event_type}", partition, offset, record.key, record.value
            )
            for offset, record in chunk
        )
        # As the engine does: apply up to the newest time of the slowest unfinished topic.
        lagging = [
            state.heads.get(f"t.{t}") for (p, t) in keys if p == partition and queues[(p, t)]
        ]
        if None not in lagging:
            state.drain(min(lagging, default=None))  # type: ignore[type-var]
        if rnd.random() < 0.3:
            for update in state.checkpoint().updates:
                store.apply_update(orjson.loads(update.to_bytes()), hash(update.segment) % 3)
    for state in states:
        state.drain()
        for update in state.checkpoint().updates:
            store.apply_update(orjson.loads(update.to_bytes()), hash(update.segment) % 3)
    return store, states


@pytest.mark.parametrize(
    ("seed", "count", "days", "batch"),
    [(1, 3000, 20, 50), (2, 6000, 90, 400), (3, 4000, 45, 5), (4, 8000, 80, 2000)],
)
def test_pipeline_matches_the_reference(seed: int, count: int, days: int, batch: int) -> None:
    settings = Settings(lifecycle_enabled=True)  # the lifecycle segments are checked too
    records = _events(seed, count, days, customers=150)
    store, states = _run_pipeline(records, settings, partitions=4, seed=seed, batch=batch)
    intake = filter_records(records, settings)
    reference = reference_from_intake(intake, settings)
    watermark_us = max(state.watermark_us or 0 for state in states)

    mismatches: list[str] = []
    checked = 0
    for window in settings.windows:
        spec = Spec.from_window(window)
        current = spec.current_index(watermark_us)
        for segment, aggregate in store.aggregates.items():
            # A segment whose facts all lie before the window's kept steps (nobody is new
            # after the first month) has no entries of that window left: all zeros.
            totals = aggregate.totals.get(spec.name, DiffArray())
            for k in range(current - min(settings.history_steps, 300), current + 1, 7):
                start_us, end_us = spec.bounds_us(k)
                expected = reference.counts_for(segment, start_us // 1000, end_us // 1000)
                actual = dict(zip(expected, totals.value_at(k), strict=False))
                from stream_app.kpis.formulas import counts_from_vector

                actual = counts_from_vector(totals.value_at(k))
                if segment.startswith("campaign:"):
                    names = [
                        "clicks",
                        "spend_micros",
                        "converted_clicks",
                        "attributed_revenue_micros",
                        "new_customers",
                    ]
                    expected = {n: expected[n] for n in names}
                    actual = {n: actual[n] for n in names}
                checked += 1
                if expected != actual:
                    diff = {
                        n: (expected[n], actual[n]) for n in expected if expected[n] != actual[n]
                    }
                    mismatches.append(f"{window.name} {segment} k={k}: {diff}")
    assert intake.too_late > 0 or days < 40
    assert sum(state.watermark_us is not None for state in states) == 4
    assert checked > 500
    assert not mismatches, f"{len(mismatches)} of {checked} windows differ, e.g. {mismatches[:3]}"


def test_watermark_ticks_say_which_sources_are_catching_up() -> None:
    from stream_app.customers.partition import watermark_tick

    assert orjson.loads(watermark_tick(2, 5_000, False)) == {"v": FORMAT, "src": 2, "wm": 5_000}
    tick = {"v": FORMAT, "src": 2, "wm": 5_000, "cu": True}
    assert orjson.loads(watermark_tick(2, 5_000, True)) == tick
    store = SegmentStore()
    store.apply_update(orjson.loads(watermark_tick(2, 5_000, True)), 0)
    store.apply_update(orjson.loads(watermark_tick(3, 5_000, True)), 1)
    assert store.is_catching_up(0)
    assert store.is_catching_up(1)
    assert store.confirmed_watermarks(0) == {2: 5_000}
    store.apply_update(orjson.loads(watermark_tick(2, 6_000, False)), 0)
    assert not store.is_catching_up(0)
    assert store.is_catching_up(1)
    store.drop_partitions([1])  # a rebalance forgets what the sources said
    assert not store.is_catching_up(1)


def test_watermark_ticks_say_when_a_backlog_expects_to_end() -> None:
    from stream_app.customers.partition import watermark_tick

    tick = orjson.loads(watermark_tick(2, 5_000, True, 1.25))
    assert tick == {"v": FORMAT, "src": 2, "wm": 5_000, "cu": True, "eta_ms": 1250}
    assert "eta_ms" not in orjson.loads(watermark_tick(2, 5_000, False, 1.25))
    now = [50.0]
    store = SegmentStore(monotonic=lambda: now[0])
    store.apply_update(tick, 0)  # done at 51.25
    store.apply_update(orjson.loads(watermark_tick(3, 5_000, True)), 1)  # no estimate
    assert store.backlog_ends_within(0, 1.25)
    assert not store.backlog_ends_within(0, 1.0)
    assert not store.backlog_ends_within(1, 3600.0)  # unknown is not close
    now[0] = 52.0
    assert store.backlog_ends_within(0, 0.0)  # overdue: still close
    store.apply_update(orjson.loads(watermark_tick(2, 6_000, False)), 0)
    assert not store.backlog_ends_within(0, 3600.0)
