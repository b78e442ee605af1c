"""Cohort deltas (contract section 6) from what the fold decides, keyed by the customer's cohort.

A customer's cohort is fixed by their first effective signup (``FirstSignup``, kept on the
customer record and persisted with it). Their contribution to it is: the size (+1 in period
0), every effective signup (+1 active) and effective cancellation (-1 active), and every
purchase amount, each at its time from the first signup on. Which signups and cancellations
are effective is the fold's decision, so that part is read off the fold's facts of the
``all`` segment at exact times (grain 1): nothing here repeats the rule.

- Purchases alone decide nothing: each adds its amount at its time, no fold needed.
- Signups or cancellations after everything the customer had (the usual case): just those
  are folded from the state the customer was in.
- Out of order, or a signup earlier than the first one known (a late signup): the whole
  contribution moves, the old one out of its cohort and the new one in. Every event from
  the old first signup on is still retained then: the new events were accepted, so they are
  within the lateness bound, and events are pruned only beyond it.

A purchase before the customer's first signup belongs to no cohort: they were in none yet.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from functools import lru_cache
from itertools import repeat
from operator import itemgetter

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
    period_end,
)
from stream_app.kpis.formulas import BASE_INDEX
from stream_app.kpis.windows import WIDTH

_NEW = BASE_INDEX["new_customers"]
_CHURNED = BASE_INDEX["churned_customers"]
_REVENUE = BASE_INDEX["revenue_micros"]
_DAY_US = 24 * 3600 * 1_000_000
# (time, change of active customers, revenue in micro-units)
Move = tuple[int, int, int]
# A stored event's rank (its kind); clicks and surveys move no cohort figure.
_rank = itemgetter(1)
_time, _active, _revenue = itemgetter(0), itemgetter(1), itemgetter(2)
_STATE = frozenset((SIGNUP, CANCELLATION))


class CohortDeltas:
    """A batch's cohort changes: per (cohort spec, segment), vectors by period index."""

    __slots__ = ("_pending", "attribution_us", "watermark_us")

    def __init__(self, attribution_us: int, watermark_us: int | None) -> None:
        self.attribution_us = attribution_us
        self.watermark_us = watermark_us
        # Per (day, region, campaign) of first signups: the size change and the dated changes.
        # Customers whose first signups share a day share every cohort and segment, so a
        # busy batch turns into vectors once per such key instead of once per customer.
        self._pending: dict[tuple[int, str, str | None], tuple[list[int], list[Move]]] = {}

    def apply(
        self, record: CustomerRecord, new_events: list[StoredEvent], facts: Facts, grain_us: int
    ) -> None:
        """``record.apply``, and the batch's cohort changes it implies."""
        ranks = set(map(_rank, new_events))  # no bytecode per event: most are clicks
        old = record.first
        if SIGNUP not in ranks and CANCELLATION not in ranks:
            record.apply(new_events, self.attribution_us, facts, grain_us)
            if PURCHASE in ranks and old is not None:
                self._move(old, _purchases(new_events, old.t_us), 0)
            return
        new = earliest_signup(new_events, old)
        events = record.events
        if (not events or events[-1] < min(new_events)) and (old is None or new is old):
            # After everything the customer had, the usual case: the change is the new
            # events' own, from where the customer stood. Which signups and cancellations
            # take effect is the fold's decision (on them alone: nothing else moves it).
            before = record.end
            record.apply(new_events, self.attribution_us, facts, grain_us)
            if new is None:
                return
            record.first = new
            decisions = Facts()
            changes = [e for e in new_events if e[1] in _STATE]
            fold(before, changes, self.attribution_us, decisions)
            self._add(new, decisions, 0 if new is old else 1)
            self._move(new, _purchases(new_events, new.t_us), 0)
            return
        # Out of order, or a signup earlier than the first known: the customer's whole
        # contribution moves (rare: events from the first signup on are all retained).
        if old is not None:
            self._add(old, self._contribution(record, old), -1)
        record.apply(new_events, self.attribution_us, facts, grain_us)
        if new is not None:
            record.first = new
            self._add(new, self._contribution(record, new), 1)

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
        moves: list[Move] = []
        for (segment, t), vector in facts.points.items():
            if segment != "all" or t < first.t_us:
                continue
            active = vector[_NEW] - vector[_CHURNED]
            revenue = vector[_REVENUE]
            if active or revenue:
                moves.append((t, sign * active, sign * revenue))
        self._move(first, moves, size)

    def _move(self, first: FirstSignup, moves: list[Move], size: int) -> None:
        """Note ``(time, active, revenue)`` changes and ``size`` for the customer's cohorts."""
        if not moves and not size:
            return
        key = (first.t_us // _DAY_US, first.region, first.campaign)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = ([0], [])
        pending[0][0] += size
        pending[1].extend(moves)

    def changes(self) -> dict[tuple[str, str], dict[int, list[int]]]:
        """The batch's changes: per (cohort spec, segment), vectors by period index."""
        changes: dict[tuple[str, str], dict[int, list[int]]] = {}
        if not self._pending:
            return changes
        # Cohorts older than these are no longer published: nothing is kept for them.
        watermark_us = self.watermark_us
        oldest = {
            grain: 0 if watermark_us is None else oldest_published_start(watermark_us, grain)
            for grain in GRAINS
        }
        for (day, region, campaign), ((size,), moves) in self._pending.items():
            segments = _segments(region, campaign)
            # In time order, each grain's periods are runs of moves: found and summed in C.
            moves.sort()
            times = list(map(_time, moves))
            for grain, start, spec, ends in _cohorts_of_day(day):
                if start < oldest[grain]:
                    continue
                ks = list(map(bisect_right, repeat(ends, len(times)), times))
                sums: list[tuple[int, int, int]] = []
                lo = 0
                while lo < len(ks) and ks[lo] < len(ends):
                    # Later periods than the depth are never published (docs/metrics.md).
                    k = ks[lo]
                    hi = bisect_right(ks, k, lo)
                    run = moves[lo:hi]
                    sums.append((k, sum(map(_active, run)), sum(map(_revenue, run))))
                    lo = hi
                for segment in segments:
                    periods = changes.get((spec, segment))
                    if periods is None:
                        periods = changes[(spec, segment)] = {}
                    if size:
                        _vector(periods, 0)[SIZE] += size
                    for k, active, revenue in sums:
                        vector = _vector(periods, k)
                        vector[ACTIVE] += active
                        vector[REVENUE] += revenue
        return changes


def _purchases(events: list[StoredEvent], first_us: int) -> list[Move]:
    """Purchases decide nothing: each adds its amount at its time (from the first signup on)."""
    return [(e[0], 0, e[3]) for e in events if e[1] == PURCHASE and e[0] >= first_us]


@lru_cache(maxsize=4096)
def _segments(region: str, campaign: str | None) -> tuple[str, ...]:
    return FirstSignup(0, "", region, campaign).segments()


@lru_cache(maxsize=4096)
def _cohorts_of_day(day: int) -> tuple[tuple[Grain, int, str, tuple[int, ...]], ...]:
    """For first signups on a day: per grain the cohort start, spec name and period ends.

    Cohorts start at midnight, so a day's signups share them. Period ``k`` holds the times
    before the ``k``-th end and from the one before it on (``period_of``, without a date per
    time).
    """
    found = []
    for grain in GRAINS:
        start = cohort_start(day * _DAY_US, grain)
        ends = tuple(period_end(start, k, grain) for k in range(COHORT_DEPTH[grain]))
        found.append((grain, start, cohort_spec(grain, start), ends))
    return tuple(found)


def _vector(periods: dict[int, list[int]], k: int) -> list[int]:
    vector = periods.get(k)
    if vector is None:
        vector = periods[k] = [0] * WIDTH
    return vector
