"""Cohort retention (contract section 6) in the customer stage, list in, list out.

Events go through the real partition state (offer, drain, checkpoint) and the segment store;
the published cohorts are compared with ``kpi verify``'s own recount
(``stream_app/verify/cohorts.py``) and, for the small cases, with figures worked by hand.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.cohort import Cohort, Grain
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.eventlog import LogRecord
from stream_app.kpis.cohorts import published_cohorts
from stream_app.kpis.formats import FORMAT
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings
from stream_app.verify.cohorts import expected_cohorts
from stream_app.verify.reference import epoch_us, filter_records, fold_order
from tests.test_pipeline_inprocess import _events, _run_pipeline

MONDAY = datetime(2026, 6, 1, tzinfo=UTC)  # a Monday, and the first of a month


def event(kind: str, customer: str, event_id: str, at: datetime, **fields: Any) -> LogRecord:
    value: dict[str, Any] = {"event_id": event_id, "customer_id": customer}
    value["occurred_at"] = at.isoformat()
    if kind == "signup":
        value.setdefault("region", "EU")
    if kind == "purchase":
        value.update(order_id=f"o-{event_id}", currency="USD")
    value.update(fields)
    return LogRecord(kind, customer.encode(), orjson.dumps(value))  # type: ignore[arg-type]


def signup(
    customer: str, event_id: str, at: datetime, region: str = "EU", campaign: str | None = None
) -> LogRecord:
    return event("signup", customer, event_id, at, region=region, campaign_id=campaign)


def cancel(customer: str, event_id: str, at: datetime) -> LogRecord:
    return event("cancellation", customer, event_id, at)


def buy(customer: str, event_id: str, at: datetime, amount: str) -> LogRecord:
    return event("purchase", customer, event_id, at, amount=amount)


def feed(state: PartitionState, records: list[LogRecord]) -> None:
    """One record at a time, in the given order (arrival order, not event time)."""
    offsets: dict[str, int] = {}
    for record in records:
        topic = f"t.{record.event_type}"
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        state.ingest([RawMessage(record.event_type, topic, 0, offset, record.key, record.value)])


def cohorts_of(
    store: SegmentStore, watermark_us: int
) -> dict[tuple[Grain, str], dict[int, Cohort]]:
    found: dict[tuple[Grain, str], dict[int, Cohort]] = {}
    for segment, aggregate in store.aggregates.items():
        for (grain, start), cohort in published_cohorts(aggregate.totals, watermark_us).items():
            found.setdefault((grain, segment), {})[start] = cohort
    return found


def run(
    records: list[LogRecord], settings: Settings | None = None
) -> tuple[PartitionState, SegmentStore]:
    state = PartitionState(0, settings or Settings(), lambda: datetime.now(UTC))
    feed(state, records)
    store = SegmentStore()
    for update in state.checkpoint().updates:
        store.apply_update(orjson.loads(update.to_bytes()), 0)
    return state, store


def table(cohort: Cohort) -> list[tuple[int, bool, int, str | None]]:
    return [(p.k, p.complete, p.active, p.revenue) for p in cohort.periods]


def test_a_small_week_by_hand() -> None:
    day = timedelta(days=1)
    records = [
        signup("a", "a1", MONDAY + 1 * day, campaign="spring"),
        buy("a", "a2", MONDAY + 2 * day, "10.00"),
        signup("b", "b1", MONDAY + 3 * day, region="NA"),
        cancel("b", "b2", MONDAY + 9 * day),
        buy("a", "a3", MONDAY + 15 * day, "5.50"),
        signup("c", "c1", MONDAY + 8 * day),  # the next week: another cohort
        cancel("a", "a4", MONDAY + 16 * day + timedelta(hours=1)),
    ]
    state, store = run(records)
    found = cohorts_of(store, state.watermark_us or 0)
    first = found[("week", "all")][epoch_us(MONDAY)]
    assert first.size == 2
    # period 0 ends on day 7 (both active, 10.00), 1 on day 14 (b churned on day 9), 2 holds
    # the watermark (day 16): a's cancellation and second purchase are in, as of then.
    assert table(first) == [(0, True, 2, "10.00"), (1, True, 1, "10.00"), (2, False, 0, "15.50")]
    assert first.periods[0].retention == 1.0
    assert first.periods[1].retention == 0.5
    assert first.periods[2].revenue_per_customer == "7.75"
    assert found[("week", "campaign:spring")][epoch_us(MONDAY)].size == 1
    assert found[("week", "region:NA")][epoch_us(MONDAY)].size == 1
    assert table(found[("week", "all")][epoch_us(MONDAY + 7 * day)]) == [
        (0, True, 1, "0.00"),
        (1, False, 1, "0.00"),
    ]
    month = found[("month", "all")][epoch_us(MONDAY)]
    assert month.size == 3
    assert table(month) == [(0, False, 1, "15.50")]
    assert found == expected_cohorts(
        filter_records(records, Settings()).events, _watermark(state), fold_order
    )


def _watermark(state: PartitionState) -> datetime:
    assert state.watermark_us is not None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=state.watermark_us)


def test_the_cohort_is_fixed_at_the_first_signup_even_when_it_arrives_late() -> None:
    day = timedelta(days=1)
    records = [
        signup("a", "a2", MONDAY + 10 * day, region="NA", campaign="late"),
        buy("a", "a3", MONDAY + 11 * day, "7.00"),
        cancel("a", "a4", MONDAY + 12 * day),
        cancel("a", "a4b", MONDAY + 12 * day + timedelta(hours=1)),  # ignored: inactive
        signup("a", "a5", MONDAY + 13 * day, region="APAC"),  # a re-signup: same cohort
        # Late (within the lateness bound): the true first signup, a week earlier.
        signup("a", "a1", MONDAY + 1 * day, region="EU", campaign="early"),
        buy("a", "a0", MONDAY, "3.00"),  # before any signup: in no cohort
        signup("a", "a1", MONDAY + 1 * day, region="EU", campaign="early"),  # a duplicate
    ]
    state, store = run(records)
    found = cohorts_of(store, state.watermark_us or 0)
    assert set(found) == {
        ("week", "all"), ("week", "region:EU"), ("week", "campaign:early"),
        ("month", "all"), ("month", "region:EU"), ("month", "campaign:early"),
    }  # fmt: skip
    cohort = found[("week", "region:EU")][epoch_us(MONDAY)]
    # The signup of day 10 is ignored (already active since day 1): the cancellation on day
    # 12 ends the first stay; the re-signup on day 13 is effective again.
    assert table(cohort) == [(0, True, 1, "0.00"), (1, False, 1, "7.00")]
    assert found == expected_cohorts(
        filter_records(records, Settings()).events, _watermark(state), fold_order
    )


def test_old_cohorts_are_dropped_and_their_entries_deleted() -> None:
    week = timedelta(days=7)
    records = [signup(f"c{i}", f"e{i}", MONDAY + i * week) for i in range(30)]
    state, store = run(records)
    weekly = cohorts_of(store, state.watermark_us or 0)[("week", "all")]
    assert sorted(weekly) == [epoch_us(MONDAY + i * week) for i in range(4, 30)]
    # The customer stage keeps nothing for cohorts no longer published either: what it would
    # resend after a recovery names the 26 newest weeks only.
    state.checkpoint()
    kept = {
        spec
        for update in state.full_updates()
        for spec, _k, _vector in update.entries
        if spec.startswith("cohort:week:")
    }
    assert kept == {f"cohort:week:{start}" for start in weekly}
    months = cohorts_of(store, state.watermark_us or 0)[("month", "all")]
    assert len(months) == 7  # June 2026 to December 2026: all within 12


@pytest.mark.parametrize("clicks", [0, 400], ids=["small-customer", "big-customer"])
def test_restart_recovers_the_first_signup_from_the_changelog(clicks: int) -> None:
    """Also for a customer big enough to be written as a head and parts (``clicks``)."""
    settings = Settings()
    day = timedelta(days=1)
    before = [signup("a", "a1", MONDAY, region="NA"), buy("a", "a2", MONDAY + day, "1.00")]
    # Over the retention horizon later: the first signup's event is pruned by then.
    after = [
        cancel("a", "a3", MONDAY + 40 * day),
        signup("a", "a4", MONDAY + 41 * day, region="EU"),
        buy("a", "a5", MONDAY + 42 * day, "2.00"),
    ]
    click_at, click = MONDAY + 40 * day, {"campaign_id": "spring-sale-2026", "cost": "0.25"}
    after[1:1] = [
        event("campaign_click", "a", f"k{n}", click_at + timedelta(minutes=n), **click)
        for n in range(clicks)
    ]
    state = PartitionState(0, settings, lambda: datetime.now(UTC))
    feed(state, before)
    log = [(k, v) for k, v in state.checkpoint().changelog]
    restarted = PartitionState(0, settings, lambda: datetime.now(UTC))
    for key, value in log:
        restarted.load(key, value)
    restarted.finish_recovery()
    offsets = {f"t.{kind}": 1 for kind in ("signup", "purchase")}
    restarted.offsets = offsets
    feed_from = {"t.cancellation": 0, "t.signup": 1, "t.purchase": 1, "t.campaign_click": 0}
    for record in after:
        topic = f"t.{record.event_type}"
        offset = feed_from[topic]
        feed_from[topic] += 1
        restarted.ingest(
            [RawMessage(record.event_type, topic, 0, offset, record.key, record.value)]
        )
    # This checkpoint prunes the first signup's event: only the record keeps it.
    later = restarted.checkpoint().changelog
    assert restarted.watermark_us is not None
    head = next(v for k, v in later if k == b"c:a" and v is not None)
    assert b'"a1"' not in head.split(b'"f"')[0]
    assert any(k.startswith(b"e:") for k, _ in later) == bool(clicks)
    recovered = PartitionState(0, settings, lambda: datetime.now(UTC))
    for state_log in (log, later):
        for key, value in state_log:
            recovered.load(key, value)
    recovered.finish_recovery()
    # Once more after the restart: the cancellation comes off the NA cohort recovered.
    last = cancel("a", "a6", MONDAY + 43 * day)
    recovered.ingest([RawMessage("cancellation", "t.cancellation", 0, 1, last.key, last.value)])
    after.append(last)
    store = SegmentStore()
    for update in recovered.full_updates():
        store.apply_update(orjson.loads(update.to_bytes()), 0)
    found = cohorts_of(store, recovered.watermark_us or 0)
    # Still in June's cohort of region NA, not a new EU one.
    assert set(found[("month", "region:NA")]) == {epoch_us(MONDAY)}
    assert ("month", "region:EU") not in found
    assert found == expected_cohorts(
        filter_records(before + after, settings).events, _watermark(recovered), fold_order
    )


def test_a_customer_record_of_format_3_derives_its_first_signup() -> None:
    settings = Settings()
    state = PartitionState(0, settings, lambda: datetime.now(UTC))
    feed(state, [signup("a", "a1", MONDAY, region="NA")])
    log = state.checkpoint().changelog
    old_log = []
    for key, value in log:
        if key.startswith(b"c:") and value is not None:
            data = orjson.loads(value)
            del data["f"]  # what a format 3 worker wrote
            value = orjson.dumps(data)
        old_log.append((key, value))
    recovered = PartitionState(0, settings, lambda: datetime.now(UTC))
    for key, value in old_log:
        recovered.load(key, value)
    recovered.finish_recovery()
    feed_later = [buy("a", "a2", MONDAY + timedelta(days=1), "4.00")]
    for record in feed_later:
        recovered.ingest([RawMessage("purchase", "t.purchase", 0, 0, record.key, record.value)])
    store = SegmentStore()
    for update in recovered.full_updates():
        store.apply_update(orjson.loads(update.to_bytes()), 0)
    cohort = cohorts_of(store, recovered.watermark_us or 0)[("week", "region:NA")][epoch_us(MONDAY)]
    assert table(cohort) == [(0, False, 1, "4.00")]


@pytest.mark.parametrize(
    ("seed", "count", "days", "batch"), [(5, 4000, 60, 50), (6, 6000, 250, 400)]
)
def test_scrambled_traffic_matches_the_recount(
    seed: int, count: int, days: int, batch: int
) -> None:
    """Out of order across topics, late, too late, duplicated: the same as the recount."""
    settings = Settings()
    records = _events(seed, count, days, customers=150)
    store, states = _run_pipeline(records, settings, partitions=4, seed=seed, batch=batch)
    watermark_us = max(state.watermark_us or 0 for state in states)
    intake = filter_records(records, settings)
    assert intake.watermark is not None
    assert epoch_us(intake.watermark) == watermark_us
    expected = expected_cohorts(intake.events, intake.watermark, fold_order)
    assert sum(len(cohorts) for cohorts in expected.values()) > 20
    assert cohorts_of(store, watermark_us) == expected
    assert FORMAT >= 4


def test_the_worked_example_of_docs_metrics_md() -> None:
    """The page's table, row by row, from the workers' own computation (and the recount)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    section = text.split("## Cohort retention", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```jsonl\n(.*?)```", section, re.S)
    assert block is not None
    records = [LogRecord.from_line(line) for line in block.group(1).splitlines() if line.strip()]
    state, store = run(records)
    found = cohorts_of(store, state.watermark_us or 0)
    assert found == expected_cohorts(
        filter_records(records, Settings()).events, _watermark(state), fold_order
    )
    rows = [
        line
        for line in section.splitlines()
        if line.startswith("| week") or line.startswith("| month")
    ]
    assert len(rows) == 9
    for row in rows:
        grain, start, segment, size, k, *figures = (
            cell.strip() for cell in row.strip("|").split("|")
        )
        cohort = found[(grain, segment)][  # type: ignore[index]
            epoch_us(datetime.fromisoformat(start).replace(tzinfo=UTC))
        ]
        period = cohort.periods[int(k)]
        shown = [
            str(period.complete).lower(), str(period.active), str(period.retention),
            period.revenue, period.revenue_per_customer,
        ]  # fmt: skip
        assert (str(cohort.size), shown) == (size, figures), row
    # Every cohort of ``all`` is in the table.
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    listed = {(cell[0], cell[1]) for cell in cells if cell[2] == "all"}
    assert len(listed) == sum(len(c) for (_g, segment), c in found.items() if segment == "all")
