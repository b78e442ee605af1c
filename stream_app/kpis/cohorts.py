"""Cohort calendar arithmetic (contract section 6), in microseconds since the epoch, UTC.

A weekly cohort starts on a Monday 00:00 UTC, a monthly one on the first of a calendar
month; period ``k`` of a cohort starting at ``c`` ends at ``c + (k + 1)`` weeks, or at the
start of the ``(k + 1)``-th calendar month after ``c``. The engine, ``kpi verify``'s
recount and the readers all take these from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from schemas.cohort import COHORT_DEPTH, GRAINS, Cohort, CohortPeriod, Grain
from stream_app.kpis.formulas import BASE_INDEX, amount, money, per, ratio
from stream_app.kpis.windows import DiffArray

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
WEEK_US: Final = 7 * 24 * 3600 * 1_000_000
# 1970-01-01 was a Thursday: Mondays are 4 days after a multiple of 7 days since the epoch.
_MONDAY_OFFSET_US: Final = 4 * 24 * 3600 * 1_000_000


def to_datetime(t_us: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_us)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware ``moment`` (the inverse of ``to_datetime``)."""
    return (moment - EPOCH) // _MICROSECOND


def month_index(t_us: int) -> int:
    """Months since January 1970 of the month holding ``t_us``."""
    moment = to_datetime(t_us)
    return (moment.year - 1970) * 12 + moment.month - 1


def _month_start(index: int) -> int:
    year, month = divmod(index, 12)
    return to_us(datetime(1970 + year, month + 1, 1, tzinfo=UTC))


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


# -- cohort sums on the window machinery -----------------------------------------------------
# A cohort's sums travel and persist like window sums: a difference array per (cohort spec,
# segment) over period indexes, of base-count vectors (so their layout, format versions and
# migrations are the window sums' own). Three counts are used, by what they mean for a cohort:
# the cohort's new customers (first effective signups: the size), the change of its active
# customers, and its revenue. The value of period ``k`` is the prefix sum up to ``k``.
SIZE: Final = BASE_INDEX["new_customers"]
ACTIVE: Final = BASE_INDEX["active_end"]
REVENUE: Final = BASE_INDEX["revenue_micros"]
_SPEC_PREFIX: Final = "cohort:"


def cohort_spec(grain: Grain, start_us: int) -> str:
    """The spec name a cohort's sums are kept under (``cohort:<grain>:<start_us>``)."""
    return f"{_SPEC_PREFIX}{grain}:{start_us}"


def parse_cohort_spec(name: str) -> tuple[Grain, int] | None:
    """``(grain, start_us)`` of a cohort spec name; None for a window spec (or anything else)."""
    if not name.startswith(_SPEC_PREFIX):
        return None
    grain, _, start = name[len(_SPEC_PREFIX) :].partition(":")
    for known in GRAINS:
        if grain == known and start.lstrip("-").isdigit():
            return known, int(start)
    return None


def oldest_published_start(watermark_us: int, grain: Grain) -> int:
    """The oldest cohort start still published at ``watermark_us``; older ones are dropped."""
    return newest_cohort_starts(watermark_us, grain)[-1]


def build_cohort(
    start_us: int, grain: Grain, value_at: Callable[[int], Sequence[int]], watermark_us: int
) -> Cohort | None:
    """The published cohort from its prefix sums (``value_at(k)``); None when it has nobody.

    ``value_at(k)`` is the sum of the cohort's vectors of periods ``0..k``. Periods run up to
    the one holding the watermark; ``complete`` says whether a period's end is at or before it.
    """
    periods: list[CohortPeriod] = []
    size = 0
    for k in range(published_periods(start_us, watermark_us, grain)):
        vector = value_at(k)
        size = vector[SIZE]
        end = period_end(start_us, k, grain)
        periods.append(
            CohortPeriod(
                k=k,
                end=to_datetime(end),
                complete=end <= watermark_us,
                active=vector[ACTIVE],
                retention=ratio(vector[ACTIVE], size),
                revenue=money(amount(vector[REVENUE])),
                revenue_per_customer=money(per(vector[REVENUE], size)),
            )
        )
    if size <= 0:
        return None
    return Cohort(cohort_start=to_datetime(start_us), size=size, periods=periods)


def published_cohorts(
    totals: Mapping[str, DiffArray], watermark_us: int
) -> dict[tuple[Grain, int], Cohort]:
    """Every published cohort of one segment from its summed arrays (by spec name)."""
    found: dict[tuple[Grain, int], Cohort] = {}
    for grain in GRAINS:
        for start in newest_cohort_starts(watermark_us, grain):
            array = totals.get(cohort_spec(grain, start))
            if array is None:
                continue
            cohort = build_cohort(start, grain, array.value_at, watermark_us)
            if cohort is not None:
                found[(grain, start)] = cohort
    return found


def cohort_field(start_us: int) -> str:
    """A cohort's field in its Redis hash: its start in RFC 3339, UTC, as the JSON writes it."""
    return to_datetime(start_us).isoformat().replace("+00:00", "Z")


def shape(start_us: int, watermark_us: int, grain: Grain) -> int:
    """What of a cohort the watermark decides (its published and complete periods), as one
    number: a cohort whose sums did not change is published again only when this moves."""
    return min(period_of(start_us, watermark_us, grain), COHORT_DEPTH[grain])
