"""Cohort weeks and months (contract section 6) against the calendar, via datetime."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from stream_app.kpis.cohorts import (
    cohort_start,
    newest_cohort_starts,
    period_end,
    period_of,
    published_periods,
    to_datetime,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def test_a_week_starts_on_monday_and_a_month_on_the_first() -> None:
    wednesday = us(datetime(2026, 12, 9, 15, 30, tzinfo=UTC))
    assert to_datetime(cohort_start(wednesday, "week")) == datetime(2026, 12, 7, tzinfo=UTC)
    assert to_datetime(cohort_start(wednesday, "month")) == datetime(2026, 12, 1, tzinfo=UTC)
    monday = us(datetime(2026, 12, 7, tzinfo=UTC))
    assert cohort_start(monday, "week") == monday


def test_period_ends_are_weeks_and_calendar_months() -> None:
    december = us(datetime(2026, 12, 1, tzinfo=UTC))
    assert to_datetime(period_end(december, 0, "month")) == datetime(2027, 1, 1, tzinfo=UTC)
    assert to_datetime(period_end(december, 2, "month")) == datetime(2027, 3, 1, tzinfo=UTC)
    week = us(datetime(2026, 12, 7, tzinfo=UTC))
    assert to_datetime(period_end(week, 1, "week")) == datetime(2026, 12, 21, tzinfo=UTC)


def test_the_period_holding_the_watermark_is_published_up_to_the_depth() -> None:
    start = us(datetime(2026, 1, 1, tzinfo=UTC))
    assert published_periods(start, us(datetime(2026, 1, 31, tzinfo=UTC)), "month") == 1
    assert published_periods(start, us(datetime(2026, 2, 1, tzinfo=UTC)), "month") == 2
    assert published_periods(start, us(datetime(2029, 2, 1, tzinfo=UTC)), "month") == 12
    starts = newest_cohort_starts(us(datetime(2026, 3, 15, tzinfo=UTC)), "month")
    assert len(starts) == 12
    assert to_datetime(starts[0]) == datetime(2026, 3, 1, tzinfo=UTC)
    assert to_datetime(starts[-1]) == datetime(2025, 4, 1, tzinfo=UTC)
    assert len(newest_cohort_starts(starts[0], "week")) == 26


def test_any_moment_lies_in_its_cohort_period_zero() -> None:
    rng = random.Random(6)
    low, high = us(datetime(1900, 1, 1, tzinfo=UTC)), us(datetime(2200, 1, 1, tzinfo=UTC))
    for t in [rng.randrange(low, high) for _ in range(3000)] + [0, -1, us(EPOCH) + 1]:
        _check_moment(t)


def _check_moment(t: int) -> None:
    moment = to_datetime(t)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    assert to_datetime(cohort_start(t, "week")) == midnight - timedelta(days=moment.weekday())
    assert to_datetime(cohort_start(t, "month")) == midnight.replace(day=1)
    for grain in ("week", "month"):
        start = cohort_start(t, grain)
        assert start <= t < period_end(start, 0, grain)
        assert period_of(start, t, grain) == 0
        later = t + 40 * 24 * 3600 * 1_000_000
        k = period_of(start, later, grain)
        previous_end = start if k == 0 else period_end(start, k - 1, grain)
        assert previous_end <= later < period_end(start, k, grain)
