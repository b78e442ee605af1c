"""``kpi verify``'s own recount of the cohorts (contract section 6) from the accepted events.

Independent of the engine's path: each customer's events are replayed in the order of section
2 with the rules of sections 2 and 6 written out here (the engine reads them off its fold),
and each period's figures are summed directly from the dated changes. Shared with the engine
are only the calendar and the published shape (``stream_app/kpis/cohorts.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from pydantic import ValidationError

from schemas import Cancellation, Event, Purchase, Signup
from schemas.cohort import GRAINS, Cohort, Grain
from stream_app.kpis.cohorts import (
    ACTIVE,
    REVENUE,
    SIZE,
    build_cohort,
    cohort_field,
    cohort_start,
    newest_cohort_starts,
    period_end,
    to_us,
)
from stream_app.kpis.formulas import to_micros
from stream_app.kpis.windows import WIDTH
from stream_app.redis_keys import COHORTS_PATTERN, COHORTS_PREFIX, cohorts_key

# The order of section 2 (``reference.fold_order``, passed in: the reference imports this).
Order = Callable[[Event], Any]
Expected = Mapping[tuple[Grain, str], Mapping[int, Cohort]]
# One difference: (grain, segment, cohort start, field, expected, actual).
Difference = tuple[Grain, str, str, str, object, object]


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


def _customer_changes(
    events: list[Event], order: Order
) -> tuple[Signup, list[tuple[int, int, int]]] | None:
    """The first signup and the dated changes from it on; None for a customer never signed up."""
    first: Signup | None = None
    active = False
    changes: list[tuple[int, int, int]] = []
    for event in sorted(events, key=order):
        t = to_us(event.occurred_at)
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
    events: Iterable[Event], watermark: datetime | None, order: Order
) -> dict[tuple[Grain, str], dict[int, Cohort]]:
    """Per (grain, segment), the published cohorts by start (microseconds)."""
    if watermark is None:
        return {}
    watermark_us = to_us(watermark)
    by_customer: defaultdict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_customer[event.customer_id].append(event)
    members: defaultdict[tuple[Grain, str, int], _Members] = defaultdict(_Members)
    for customer_events in by_customer.values():
        found = _customer_changes(customer_events, order)
        if found is None:
            continue
        first, changes = found
        segments = ["all", f"region:{first.region}"]
        if first.campaign_id is not None:
            segments.append(f"campaign:{first.campaign_id}")
        for grain in GRAINS:
            start = cohort_start(to_us(first.occurred_at), grain)
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


def _hash_names(client: redis.Redis) -> set[tuple[Grain, str]]:
    found: set[tuple[Grain, str]] = set()
    for raw in client.scan_iter(match=COHORTS_PATTERN, count=1000, _type="hash"):
        name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        grain, _, segment = name.removeprefix(COHORTS_PREFIX).partition(":")
        for known in GRAINS:
            if grain == known:
                found.add((known, segment))
    return found


def cohort_differences(client: redis.Redis, expected: Expected) -> tuple[list[Difference], int]:
    """Every published cohort field in Redis against the recount; and how many were checked.

    A cohort missing from Redis, one Redis has and the recount has not, and every figure
    that differs (``size``, or ``periods[k].<field>``) is one difference.
    """
    differences: list[Difference] = []
    checked = 0
    for grain, segment in sorted(_hash_names(client) | set(expected)):
        raw: Any = client.hgetall(cohorts_key(grain, segment))
        actual = {
            (k.decode(errors="replace") if isinstance(k, bytes) else k): v for k, v in raw.items()
        }
        wanted = {
            cohort_field(start): cohort
            for start, cohort in expected.get((grain, segment), {}).items()
        }
        for name in sorted(set(actual) | set(wanted)):
            checked += 1
            if name not in actual:
                differences.append((grain, segment, name, "(cohort)", "present", "absent"))
                continue
            if name not in wanted:
                differences.append((grain, segment, name, "(cohort)", "absent", "present"))
                continue
            try:
                found = Cohort.model_validate_json(actual[name]).model_dump(mode="json")
            except ValidationError as exc:
                differences.append((grain, segment, name, "(cohort)", "a cohort", str(exc)[:200]))
                continue
            differences.extend(
                (grain, segment, name, label, want, got)
                for label, want, got in _field_differences(
                    wanted[name].model_dump(mode="json"), found
                )
            )
    return differences, checked


def _field_differences(
    expected: dict[str, Any], actual: dict[str, Any]
) -> list[tuple[str, object, object]]:
    found = [
        (key, expected[key], actual.get(key))
        for key in ("cohort_start", "size")
        if expected[key] != actual.get(key)
    ]
    want, got = expected["periods"], actual["periods"]
    if len(want) != len(got):
        found.append(("periods", f"{len(want)} periods", f"{len(got)} periods"))
    for k, (a, b) in enumerate(zip(want, got, strict=False)):
        found.extend(
            (f"periods[{k}].{key}", a[key], b.get(key)) for key in a if a[key] != b.get(key)
        )
    return found
