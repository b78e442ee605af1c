"""Cohort deltas (contract section 6) from what the fold decides, keyed by the customer's cohort.

A customer's cohort is fixed by their first effective signup (``FirstSignup``, kept on the
customer record and persisted with it). Their contribution to it is: the size (+1 in period
0), every effective signup (+1 active) and effective cancellation (-1 active), and every
purchase amount, each at its time from the first signup on. Which signups and cancellations
are effective is the fold's decision, so the contribution is read off the fold's facts of the
``all`` segment at exact times (grain 1): nothing here repeats the rule.

- The first signup unchanged: the contribution moves by the fold's difference over the
  changed suffix (``CustomerRecord.apply(..., exact=...)``), from the first signup's time on.
- The first signup new or earlier (a late signup): the whole contribution moves, the old
  one out of its cohort and the new one in. Every event from the old first signup on is still
  retained then: the new signup was accepted, so it is within the lateness bound, and events
  are pruned only beyond it.

A purchase before the customer's first signup belongs to no cohort: they were in none yet.
"""

from __future__ import annotations

from bisect import bisect_left

from schemas.cohort import COHORT_DEPTH, GRAINS, Grain
from stream_app.customers.timeline import (
    CANCELLATION,
    PURCHASE,
    SIGNUP,
    CustomerRecord,
    Facts,
    FirstSignup,
    StoredEvent,
    earliest_signup,
    fold,
)
from stream_app.kpis.cohorts import (
    ACTIVE,
    REVENUE,
    SIZE,
    cohort_spec,
    cohort_start,
    oldest_published_start,
    period_of,
)
from stream_app.kpis.formulas import BASE_INDEX
from stream_app.kpis.windows import WIDTH

_NEW = BASE_INDEX["new_customers"]
_CHURNED = BASE_INDEX["churned_customers"]
_REVENUE = BASE_INDEX["revenue_micros"]
# Ranks that can move a cohort figure; clicks and surveys never do, and cost nothing here.
COHORT_RANKS = frozenset((SIGNUP, CANCELLATION, PURCHASE))


class CohortDeltas:
    """A batch's cohort changes: per (cohort spec, segment), vectors by period index."""

    __slots__ = ("attribution_us", "changes", "oldest")

    def __init__(self, attribution_us: int, watermark_us: int | None) -> None:
        self.attribution_us = attribution_us
        self.changes: dict[tuple[str, str], dict[int, list[int]]] = {}
        # Cohorts older than these are no longer published: nothing is kept for them.
        self.oldest: dict[Grain, int] = {
            grain: (oldest_published_start(watermark_us, grain) if watermark_us is not None else 0)
            for grain in GRAINS
        }

    def apply(
        self, record: CustomerRecord, new_events: list[StoredEvent], facts: Facts, grain_us: int
    ) -> None:
        """``record.apply`` for a batch holding a signup, cancellation or purchase."""
        old = record.first
        new = earliest_signup(new_events, old)
        if new is not old:
            if old is not None:
                self._add(old, self._contribution(record, old), -1)
            record.apply(new_events, self.attribution_us, facts, grain_us)
            record.first = new
            assert new is not None
            self._add(new, self._contribution(record, new), 1)
        elif old is None:
            record.apply(new_events, self.attribution_us, facts, grain_us)
        else:
            exact = Facts()
            record.apply(new_events, self.attribution_us, facts, grain_us, exact)
            self._add(old, exact, 0)

    def _contribution(self, record: CustomerRecord, first: FirstSignup) -> Facts:
        """The facts of the customer's events from their first signup on."""
        events = record.events
        pos = bisect_left(events, [first.t_us, SIGNUP, first.event_id])
        state = fold(record.base, events[:pos], self.attribution_us)
        facts = Facts()
        fold(state, events[pos:], self.attribution_us, facts, 1, 1)
        return facts

    def _add(self, first: FirstSignup, facts: Facts, size: int) -> None:
        """Add the ``all`` facts at or after the first signup to its cohorts (``size`` too)."""
        sign = size if size else 1
        moves: list[tuple[int, int, int]] = []
        for (segment, t), vector in facts.points.items():
            if segment != "all" or t < first.t_us:
                continue
            active = vector[_NEW] - vector[_CHURNED]
            revenue = vector[_REVENUE]
            if active or revenue:
                moves.append((t, sign * active, sign * revenue))
        if not moves and not size:
            return
        segments = first.segments()
        for grain in GRAINS:
            start = cohort_start(first.t_us, grain)
            if start < self.oldest[grain]:
                continue
            spec = cohort_spec(grain, start)
            depth = COHORT_DEPTH[grain]
            for segment in segments:
                periods = self.changes.get((spec, segment))
                if periods is None:
                    periods = self.changes[(spec, segment)] = {}
                if size:
                    _vector(periods, 0)[SIZE] += size
                for t, active, revenue in moves:
                    k = period_of(start, t, grain)
                    if k < depth:  # later periods are never published (docs/metrics.md)
                        vector = _vector(periods, k)
                        vector[ACTIVE] += active
                        vector[REVENUE] += revenue


def _vector(periods: dict[int, list[int]], k: int) -> list[int]:
    vector = periods.get(k)
    if vector is None:
        vector = periods[k] = [0] * WIDTH
    return vector
