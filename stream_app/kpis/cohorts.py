"""Cohort calendar arithmetic (contract section 6), in microseconds since the epoch, UTC.

A weekly cohort starts on a Monday 00:00 UTC, a monthly one on the first of a calendar
month; period ``k`` of a cohort starting at ``c`` ends at ``c + (k + 1)`` weeks, or at the
start of the ``(k + 1)``-th calendar month after ``c``. The engine, ``kpi verify``'s
recount and the readers all take these from here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from schemas.cohort import COHORT_DEPTH, Grain

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
WEEK_US: Final = 7 * 24 * 3600 * 1_000_000
# 1970-01-01 was a Thursday: Mondays are 4 days after a multiple of 7 days since the epoch.
_MONDAY_OFFSET_US: Final = 4 * 24 * 3600 * 1_000_000


def to_datetime(t_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_us)


def _to_us(moment: datetime) -> int:
    return (moment - EPOCH) // _MICROSECOND


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware ``moment`` (the inverse of ``to_datetime``)."""
    return _to_us(moment)


def month_index(t_us: int) -> int:
    """Months since January 1970 of the month holding ``t_us``."""
    moment = to_datetime(t_us)
    return (moment.year - 1970) * 12 + moment.month - 1


def _month_start(index: int) -> int:
    year, month = divmod(index, 12)
    return _to_us(datetime(1970 + year, month + 1, 1, tzinfo=UTC))


def cohort_start(t_us: int, grain: Grain) -> int:
    """Start of the week (Monday 00:00 UTC) or calendar month holding ``t_us``."""
    if grain == "week":
        return (t_us - _MONDAY_OFFSET_US) // WEEK_US * WEEK_US + _MONDAY_OFFSET_US
    return _month_start(month_index(t_us))


def period_end(start_us: int, k: int, grain: Grain) -> int:
    """End (exclusive) of period ``k`` of the cohort starting at ``start_us``."""
    if grain == "week":
        return start_us + (k + 1) * WEEK_US
    return _month_start(month_index(start_us) + k + 1)


def period_of(start_us: int, t_us: int, grain: Grain) -> int:
    """The period ``k`` whose ``[end(k-1), end(k))`` holds ``t_us`` (0 when before the cohort)."""
    if t_us < start_us:
        return 0
    if grain == "week":
        return (t_us - start_us) // WEEK_US
    return month_index(t_us) - month_index(start_us)


def published_periods(start_us: int, watermark_us: int, grain: Grain) -> int:
    """How many periods of a cohort are published: up to the one holding the watermark."""
    return min(COHORT_DEPTH[grain], period_of(start_us, watermark_us, grain) + 1)


def newest_cohort_starts(watermark_us: int, grain: Grain) -> list[int]:
    """Starts of the published cohorts, newest first: the watermark's and the depth before it."""
    newest = cohort_start(watermark_us, grain)
    if grain == "week":
        return [newest - i * WEEK_US for i in range(COHORT_DEPTH[grain])]
    index = month_index(newest)
    return [_month_start(index - i) for i in range(COHORT_DEPTH[grain])]
