"""``kpi verify``'s own recount of the cohorts (contract section 6) from the accepted events.

Independent of the engine's path: each customer's events are replayed in the order of section
2 with the rules of sections 2 and 6 written out here (the engine reads them off its fold),
and each period's figures are summed directly from the dated changes. Shared with the engine
are only the calendar and the published shape (``stream_app/kpis/cohorts.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from schemas import Cancellation, Event, Purchase, Signup
from schemas.cohort import GRAINS, Cohort, Grain
from stream_app.kpis.cohorts import (
    ACTIVE,
    REVENUE,
    SIZE,
    build_cohort,
    cohort_start,
    newest_cohort_starts,
    period_end,
)
from stream_app.kpis.formulas import to_micros
from stream_app.kpis.windows import WIDTH
from stream_app.verify.reference import epoch_us, fold_order


@dataclass
class _Members:
    """One cohort of one segment: its customers and their dated changes."""

    size: int = 0
    # (time, change of active customers, revenue in micro-units)
    changes: list[tuple[int, int, int]] = field(default_factory=list)

    def value_at(self, end_us: int) -> list[int]:
        vector = [0] * WIDTH
        vector[SIZE] = self.size
        vector[ACTIVE] = sum(active for t, active, _ in self.changes if t < end_us)
        vector[REVENUE] = sum(revenue for t, _, revenue in self.changes if t < end_us)
        return vector


def _customer_changes(events: list[Event]) -> tuple[Signup, list[tuple[int, int, int]]] | None:
    """The first signup and the dated changes from it on; None for a customer never signed up."""
    first: Signup | None = None
    active = False
    changes: list[tuple[int, int, int]] = []
    for event in sorted(events, key=fold_order):
        t = epoch_us(event.occurred_at)
        if isinstance(event, Signup):
            if not active:
                active = True
                first = first or event
                changes.append((t, 1, 0))
        elif isinstance(event, Cancellation):
            if active:
                active = False
                changes.append((t, -1, 0))
        elif isinstance(event, Purchase) and first is not None:
            changes.append((t, 0, to_micros(event.amount)))
    return None if first is None else (first, changes)


def expected_cohorts(
    events: Iterable[Event], watermark: datetime | None
) -> dict[tuple[Grain, str], dict[int, Cohort]]:
    """Per (grain, segment), the published cohorts by start (microseconds)."""
    if watermark is None:
        return {}
    watermark_us = epoch_us(watermark)
    by_customer: defaultdict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)
    members: defaultdict[tuple[Grain, str, int], _Members] = defaultdict(_Members)
    for customer_events in by_customer.values():
        found = _customer_changes(customer_events)
        if found is None:
            continue
        first, changes = found
        segments = ["all", f"region:{first.region}"]
        if first.campaign_id is not None:
            segments.append(f"campaign:{first.campaign_id}")
        for grain in GRAINS:
            start = cohort_start(epoch_us(first.occurred_at), grain)
            for segment in segments:
                cohort = members[(grain, segment, start)]
                cohort.size += 1
                cohort.changes.extend(changes)
    published = {grain: set(newest_cohort_starts(watermark_us, grain)) for grain in GRAINS}
    expected: dict[tuple[Grain, str], dict[int, Cohort]] = {}
    for (grain, segment, start), cohort in members.items():
        if start not in published[grain]:
            continue

        def value_at(
            k: int, cohort: _Members = cohort, start: int = start, grain: Grain = grain
        ) -> list[int]:
            return cohort.value_at(period_end(start, k, grain))

        built = build_cohort(start, grain, value_at, watermark_us)
        if built is not None:
            expected.setdefault((grain, segment), {})[start] = built
    return expected
