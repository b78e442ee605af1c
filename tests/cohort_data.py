"""Cohorts written to Redis in the contract's format (section 6), through its models.

The hash ``kpi-cohorts:<grain>:<segment>`` holds one field per cohort, named by its start
(RFC 3339, UTC), valued the JSON of ``schemas.cohort.Cohort``; the channel
``kpi-cohort-updates:<grain>:<segment>`` carries ``CohortUpdate`` JSON. Values are made up
but consistent: the calendar is ``stream_app.kpis.cohorts``'s, retention is active / size.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import redis

from schemas.cohort import COHORT_DEPTH, Cohort, CohortPeriod, CohortUpdate, Grain
from schemas.kpi import format_money
from stream_app.kpis.cohorts import (
    cohort_start,
    newest_cohort_starts,
    period_end,
    published_periods,
    to_datetime,
    to_us,
)
from stream_app.redis_keys import cohort_updates_channel, cohorts_key


def cohort(start_us: int, watermark_us: int, grain: Grain, *, size: int, seed: int = 0) -> Cohort:
    """A cohort of ``size`` customers as published at ``watermark_us``: fewer active each
    period, revenue growing, the period holding the watermark incomplete."""
    periods = []
    active = size
    revenue = Decimal(0)
    for k in range(published_periods(start_us, watermark_us, grain)):
        end = period_end(start_us, k, grain)
        if k:
            active = max(0, active - (size * (1 + (seed + k) % 4)) // 50)
        revenue += Decimal(active * (7 + (seed * 3 + k) % 11)) + Decimal("0.25")
        periods.append(
            CohortPeriod(
                k=k,
                end=to_datetime(end),
                complete=end <= watermark_us,
                active=active,
                retention=active / size if size else None,
                revenue=format_money(revenue),
                revenue_per_customer=format_money(revenue / size) if size else None,
            )
        )
    return Cohort(cohort_start=to_datetime(start_us), size=size, periods=periods)


def cohorts(watermark: datetime, grain: Grain, *, seed: int = 0, count: int = 0) -> list[Cohort]:
    """The ``count`` newest cohorts (default: the published depth), newest first."""
    watermark_us = to_us(watermark)
    starts = newest_cohort_starts(watermark_us, grain)[: count or COHORT_DEPTH[grain]]
    return [
        cohort(start, watermark_us, grain, size=40 + 13 * i + seed, seed=seed + i)
        for i, start in enumerate(starts)
    ]


def field_name(c: Cohort) -> str:
    return c.cohort_start.isoformat().replace("+00:00", "Z")


def write_cohorts(client: redis.Redis, grain: Grain, segment: str, found: list[Cohort]) -> None:
    """HSET every cohort into ``kpi-cohorts:<grain>:<segment>``, as the engine writes them."""
    client.hset(
        cohorts_key(grain, segment),
        mapping={field_name(c): c.model_dump_json() for c in found},
    )


def publish_update(client: redis.Redis, grain: Grain, segment: str, c: Cohort) -> CohortUpdate:
    """Write one changed cohort and publish it on its channel; returns what was sent."""
    update = CohortUpdate(**c.model_dump(), grain=grain, segment=segment)
    write_cohorts(client, grain, segment, [c])
    client.publish(cohort_updates_channel(grain, segment), update.model_dump_json())
    return update


def start_of(moment: datetime, grain: Grain) -> int:
    return cohort_start(to_us(moment), grain)
