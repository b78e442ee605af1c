"""Batch reference: every KPI recomputed from an event log, independently of the engine."""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate
from pathlib import Path
from typing import Final

from schemas import (
    UNKNOWN_REGION,
    CampaignClick,
    Cancellation,
    Event,
    Purchase,
    Rejection,
    Signup,
    Survey,
    parse_event,
)
from stream_app.eventlog import LogRecord, read_log
from stream_app.kpis.formulas import BASE_COUNTS, KpiValue, to_micros
from stream_app.kpis.registry import derive_kpis, is_csat_satisfied, nps_category, segment_kind
from stream_app.lifecycle.stages import Rules
from stream_app.settings import Settings, WindowSpec
from stream_app.verify.cohorts import Expected, expected_cohorts
from stream_app.verify.lifecycle import StageWalk

logger = logging.getLogger(__name__)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ALL_SEGMENT: Final = "all"
_MICROSECOND: Final = timedelta(microseconds=1)

# Events of one customer at the same instant apply in this order: a signup comes first so a
# same-instant purchase already has its region, a cancellation last so it ends the day.
EVENT_RANK: Final[Mapping[str, int]] = {
    "signup": 0,
    "campaign_click": 1,
    "purchase": 2,
    "survey": 3,
    "cancellation": 4,
}

# Base counts that are plain sums of dated amounts; the other four need customer state.
STATE_COUNTS: Final = ("active_start", "active_end", "purchasing_customers", "repeat_customers")
SUM_COUNTS: Final = tuple(name for name in BASE_COUNTS if name not in STATE_COUNTS)


# ---------------------------------------------------------------------------------------------
# Time


def epoch_us(moment: datetime) -> int:
    """An aware datetime as whole microseconds since the Unix epoch (event times are exact)."""
    return (moment - EPOCH) // _MICROSECOND


def ms_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, as snapshots publish it (``2026-11-02T09:00:00Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Window:
    """One window of a spec: the half-open event-time interval ``[start_ms, end_ms)``."""

    name: str
    start_ms: int
    end_ms: int

    @property
    def start(self) -> datetime:
        return ms_to_datetime(self.start_ms)

    @property
    def end(self) -> datetime:
        return ms_to_datetime(self.end_ms)


def current_window(spec: WindowSpec, watermark: datetime) -> Window:
    """The window that ends at the first step boundary strictly after the watermark."""
    watermark_ms = epoch_us(watermark) // 1000
    end_ms = (watermark_ms // spec.step_ms + 1) * spec.step_ms
    return Window(spec.name, end_ms - spec.size_ms, end_ms)


# ---------------------------------------------------------------------------------------------
# Rules 1-3: which events of the log count at all


@dataclass(frozen=True)
class Intake:
    """The accepted events of a log, in log order, and how many were left out and why."""

    events: tuple[Event, ...]
    records_read: int
    rejected: Mapping[str, int]
    too_late: int
    duplicates: int
    watermark: datetime | None

    @property
    def accepted(self) -> int:
        return len(self.events)


def is_too_late(occurred_at: datetime, watermark: datetime | None, lateness: timedelta) -> bool:
    return watermark is not None and occurred_at < watermark - lateness


def filter_records(records: Iterable[LogRecord], settings: Settings) -> Intake:
    """Parse each record; drop rejections, too-late events and repeated (customer, event) ids."""
    events: list[Event] = []
    rejected: Counter[str] = Counter()
    too_late = duplicates = read = 0
    watermark: datetime | None = None
    seen: set[tuple[str, str]] = set()
    for record in records:
        read += 1
        event = parse_event(
            record.event_type,
            record.value,
            record.key,
            reporting_currency=settings.reporting_currency,
        )
        if isinstance(event, Rejection):
            rejected[event.reason.value] += 1
            continue
        if is_too_late(event.occurred_at, watermark, settings.max_lateness):
            too_late += 1
            continue
        # The lateness check comes before dedupe, so a repeated id still moves the watermark
        # (it normally carries the same occurred_at anyway).
        if watermark is None or event.occurred_at > watermark:
            watermark = event.occurred_at
        identity = (event.customer_id, event.event_id)
        if identity in seen:
            duplicates += 1
            continue
        seen.add(identity)
        events.append(event)
    return Intake(tuple(events), read, dict(rejected), too_late, duplicates, watermark)


def load_log(path: Path, settings: Settings) -> Intake:
    intake = filter_records(read_log(path), settings)
    logger.info(
        "%s: %d records, %d accepted, %d rejected, %d too late, %d duplicates",
        path,
        intake.records_read,
        intake.accepted,
        sum(intake.rejected.values()),
        intake.too_late,
        intake.duplicates,
    )
    return intake


# ---------------------------------------------------------------------------------------------
# Rule 4: folding each customer's events into dated facts per segment


def region_segment(region: str) -> str:
    return f"region:{region}"


def campaign_segment(campaign_id: str) -> str:
    return f"campaign:{campaign_id}"


def fold_order(event: Event) -> tuple[datetime, int, str]:
    return (event.occurred_at, EVENT_RANK[event.event_type], event.event_id)


@dataclass
class _Click:
    time_us: int
    region: str
    campaign_id: str
    converted: bool = False
    stage: str | None = None  # the lifecycle segment of the click, if any


@dataclass
class _Customer:
    active: bool = False
    region: str = UNKNOWN_REGION
    campaign_id: str | None = None
    last_click: _Click | None = None


@dataclass
class Facts:
    """What the fold found: dated amounts per segment and count, in no particular order."""

    amounts: defaultdict[str, defaultdict[str, list[tuple[int, int]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    # +1 when a customer becomes active in the segment, -1 when they stop being active.
    activity: defaultdict[str, list[tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    purchases: defaultdict[str, list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    segments: set[str] = field(default_factory=lambda: {ALL_SEGMENT})

    def add(self, segments: Sequence[str], name: str, time_us: int, amount: int = 1) -> None:
        for segment in segments:
            self.amounts[segment][name].append((time_us, amount))
            self.segments.add(segment)


def fold_customer(
    events: Iterable[Event], attribution_us: int, facts: Facts, rules: Rules | None = None
) -> None:
    """Apply one customer's events in (time, rank, id) order and record what each one counts.

    With ``rules``, each event also counts in its ``lifecycle:<stage>`` segment (``StageWalk``).
    """
    customer = _Customer()
    walk = None if rules is None else StageWalk(rules)
    for event in sorted(events, key=fold_order):
        time_us = epoch_us(event.occurred_at)
        stage: list[str] = []
        if walk is not None:
            stage.append(
                walk.before(
                    time_us, customer.active, _profile_update(event, time_us),
                    facts.activity, facts.segments,
                )
            )  # fmt: skip
        if isinstance(event, Signup):
            _signup(customer, event, time_us, facts, stage)
        elif isinstance(event, Cancellation):
            _cancellation(customer, time_us, facts, stage)
        elif isinstance(event, Purchase):
            _purchase(customer, event, time_us, attribution_us, facts, stage)
        elif isinstance(event, CampaignClick):
            _click(customer, event, time_us, facts, stage)
        else:
            _survey(customer, event, time_us, facts, stage)
        # After applying, the customer's region is the event's segment region in every case:
        # an effective signup counts in its new region, nothing else changes the region.
        facts.segments.add(region_segment(customer.region))
    if walk is not None:
        walk.finish(customer.active, facts.activity, facts.segments)


def _profile_update(event: Event, time_us: int) -> tuple[str, int, int | str | None, int | None]:
    if isinstance(event, Purchase):
        return ("purchase", time_us, to_micros(event.amount), None)
    if isinstance(event, Survey):
        return ("survey", time_us, event.survey_type, event.score)
    return (event.event_type, time_us, None, None)


def _signup(
    customer: _Customer, event: Signup, time_us: int, facts: Facts, stage: list[str]
) -> None:
    if customer.active:
        return
    customer.active = True
    customer.region = event.region
    customer.campaign_id = event.campaign_id
    region = region_segment(event.region)
    facts.add([ALL_SEGMENT, region, *stage], "new_customers", time_us)
    if event.campaign_id is not None:
        facts.add([campaign_segment(event.campaign_id)], "new_customers", time_us)
    for segment in (ALL_SEGMENT, region, *stage):
        facts.activity[segment].append((time_us, +1))


def _cancellation(customer: _Customer, time_us: int, facts: Facts, stage: list[str]) -> None:
    if not customer.active:
        # Ignored by the rules, but still an event in its segment region (contract section
        # 4, "segment region of each event"): the engine counts it so the segment exists.
        facts.add(
            [ALL_SEGMENT, region_segment(customer.region), *stage], "ignored_cancellations", time_us
        )
        return
    customer.active = False
    # The region is kept: while a customer is active it cannot change, so the -1 lands in the
    # same region segment as the +1 of the signup that activated them. The stage is where the
    # activity sits at the cancellation (moves follow the stage while active).
    region = region_segment(customer.region)
    facts.add([ALL_SEGMENT, region, *stage], "churned_customers", time_us)
    for segment in (ALL_SEGMENT, region, *stage):
        facts.activity[segment].append((time_us, -1))


def _purchase(
    customer: _Customer,
    event: Purchase,
    time_us: int,
    attribution_us: int,
    facts: Facts,
    stage: list[str],
) -> None:
    segments = [ALL_SEGMENT, region_segment(customer.region), *stage]
    amount = to_micros(event.amount)
    facts.add(segments, "orders", time_us)
    facts.add(segments, "revenue_micros", time_us, amount)
    for segment in segments:
        facts.purchases[segment].append((time_us, event.customer_id))
    click = customer.last_click
    if click is None or click.converted or not 0 <= time_us - click.time_us <= attribution_us:
        return
    click.converted = True
    # Last touch by click time: the conversion belongs to the click's window and segments.
    click_segments = [
        ALL_SEGMENT,
        region_segment(click.region),
        campaign_segment(click.campaign_id),
        *([] if click.stage is None else [click.stage]),
    ]
    facts.add(click_segments, "converted_clicks", click.time_us)
    facts.add(click_segments, "attributed_revenue_micros", click.time_us, amount)


def _click(
    customer: _Customer, event: CampaignClick, time_us: int, facts: Facts, stage: list[str]
) -> None:
    segments = [
        ALL_SEGMENT,
        region_segment(customer.region),
        campaign_segment(event.campaign_id),
        *stage,
    ]
    facts.add(segments, "clicks", time_us)
    facts.add(segments, "spend_micros", time_us, to_micros(event.cost))
    customer.last_click = _Click(
        time_us, customer.region, event.campaign_id, stage=stage[0] if stage else None
    )


def _survey(
    customer: _Customer, event: Survey, time_us: int, facts: Facts, stage: list[str]
) -> None:
    segments = [ALL_SEGMENT, region_segment(customer.region), *stage]
    if event.survey_type == "nps":
        facts.add(segments, "nps_responses", time_us)
        facts.add(segments, nps_category(event.score), time_us)
    else:
        facts.add(segments, "csat_responses", time_us)
        if is_csat_satisfied(event.score):
            facts.add(segments, "csat_satisfied", time_us)


# ---------------------------------------------------------------------------------------------
# Rule 5: counts over any window, by bisecting sorted timelines


@dataclass(frozen=True)
class Timeline:
    """Dated amounts sorted by time, with running totals so any interval sums in O(log n)."""

    times: tuple[int, ...] = ()
    totals: tuple[int, ...] = (0,)  # totals[i] = sum of the first i amounts

    @classmethod
    def of(cls, facts: Iterable[tuple[int, int]]) -> Timeline:
        ordered = sorted(facts)
        return cls(
            tuple(time for time, _ in ordered),
            tuple(accumulate((amount for _, amount in ordered), initial=0)),
        )

    def total_before(self, time_us: int) -> int:
        """Sum of the amounts dated strictly before ``time_us``."""
        return self.totals[bisect_left(self.times, time_us)]

    def total_between(self, start_us: int, end_us: int) -> int:
        """Sum of the amounts dated in ``[start_us, end_us)``."""
        return self.total_before(end_us) - self.total_before(start_us)


@dataclass(frozen=True)
class Buyers:
    """Purchases of one segment sorted by time, each with its customer."""

    times: tuple[int, ...] = ()
    customers: tuple[str, ...] = ()

    @classmethod
    def of(cls, purchases: Iterable[tuple[int, str]]) -> Buyers:
        ordered = sorted(purchases)
        return cls(tuple(time for time, _ in ordered), tuple(who for _, who in ordered))

    def orders_per_customer(self, start_us: int, end_us: int) -> Counter[str]:
        low = bisect_left(self.times, start_us)
        high = bisect_left(self.times, end_us)
        return Counter(self.customers[low:high])


_NO_TIMELINE: Final = Timeline()
_NO_BUYERS: Final = Buyers()


@dataclass(frozen=True)
class Reference:
    """The expected KPIs of every segment over any window, from the accepted events of a log."""

    watermark: datetime | None
    segments: frozenset[str]
    windows: tuple[WindowSpec, ...]
    gross_margin: Decimal
    amounts: Mapping[str, Mapping[str, Timeline]]
    activity: Mapping[str, Timeline]
    buyers: Mapping[str, Buyers]
    # The published cohorts (contract section 6), by (grain, segment) and start.
    cohorts: Expected = field(default_factory=dict)

    def active_at(self, segment: str, time_us: int) -> int:
        """Customers active in the segment after all their events before ``time_us``.

        Activations minus deactivations before that instant: a customer's region cannot change
        while active, so each one's +1 and -1 land in the same region segment.
        """
        return self.activity.get(segment, _NO_TIMELINE).total_before(time_us)

    def counts_for(self, segment: str, start_ms: int, end_ms: int) -> dict[str, int]:
        """Every base count of ``segment`` over the window ``[start_ms, end_ms)``."""
        start_us, end_us = start_ms * 1000, end_ms * 1000
        amounts = self.amounts.get(segment, {})
        counts = {
            name: amounts.get(name, _NO_TIMELINE).total_between(start_us, end_us)
            for name in SUM_COUNTS
        }
        counts["active_start"] = self.active_at(segment, start_us)
        counts["active_end"] = self.active_at(segment, end_us)
        orders = self.buyers.get(segment, _NO_BUYERS).orders_per_customer(start_us, end_us)
        counts["purchasing_customers"] = len(orders)
        counts["repeat_customers"] = sum(1 for n in orders.values() if n >= 2)
        return {name: counts[name] for name in BASE_COUNTS}

    def expected_kpis(self, segment: str, start_ms: int, end_ms: int) -> dict[str, KpiValue]:
        """The published KPI values of ``segment`` over ``[start_ms, end_ms)``."""
        counts = self.counts_for(segment, start_ms, end_ms)
        return derive_kpis(counts, segment_kind(segment), self.gross_margin)

    def expected_snapshot(
        self, window: Window, segment: str, updated_at: datetime
    ) -> dict[str, KpiValue]:
        """A whole snapshot (metadata and KPIs) as plain JSON values, as the engine publishes."""
        if self.watermark is None:
            raise ValueError("no accepted events, so there is no watermark")
        meta: dict[str, KpiValue] = {
            "window": window.name,
            "segment": segment,
            "window_start": format_timestamp(window.start),
            "window_end": format_timestamp(window.end),
            "watermark": format_timestamp(self.watermark),
            "updated_at": format_timestamp(updated_at),
        }
        return meta | self.expected_kpis(segment, window.start_ms, window.end_ms)

    def current_windows(self) -> tuple[Window, ...]:
        """The current window of every spec; none before the first accepted event."""
        if self.watermark is None:
            return ()
        watermark = self.watermark
        return tuple(current_window(spec, watermark) for spec in self.windows)

    def expected_keys(self) -> list[tuple[str, str]]:
        """Every (window name, segment) that must have a snapshot, sorted."""
        if self.watermark is None:
            return []
        return sorted((spec.name, segment) for spec in self.windows for segment in self.segments)


def build_reference(
    events: Iterable[Event], watermark: datetime | None, settings: Settings
) -> Reference:
    """Fold every customer's accepted events and index the resulting facts by segment."""
    by_customer: defaultdict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)
    facts = Facts()
    attribution_us = settings.attribution_window // _MICROSECOND
    rules = Rules.from_settings(settings) if settings.lifecycle_enabled else None
    for customer_events in by_customer.values():
        fold_customer(customer_events, attribution_us, facts, rules)
    return Reference(
        watermark=watermark,
        segments=frozenset(facts.segments),
        windows=settings.windows,
        gross_margin=settings.gross_margin,
        amounts={
            segment: {name: Timeline.of(dated) for name, dated in by_name.items()}
            for segment, by_name in facts.amounts.items()
        },
        activity={segment: Timeline.of(dated) for segment, dated in facts.activity.items()},
        buyers={segment: Buyers.of(dated) for segment, dated in facts.purchases.items()},
        cohorts=expected_cohorts(by_customer_events(by_customer), watermark, fold_order),
    )


def reference_from_intake(intake: Intake, settings: Settings) -> Reference:
    return build_reference(intake.events, intake.watermark, settings)


def by_customer_events(by_customer: Mapping[str, list[Event]]) -> Iterable[Event]:
    return (event for events in by_customer.values() for event in events)
