"""Cohort retention (contract section 6): one published cohort and its periods.

The engine writes these, the API, the dashboard, ``kpi watch --cohorts`` and ``kpi verify``
read them back through the same models; ``schemas/json/cohort.schema.json`` is generated
from them.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from schemas.kpi import CAMPAIGN_SEGMENT_PATTERN, Money, Ratio
from schemas.timestamps import UtcDatetime

Grain = Literal["week", "month"]
GRAINS: Final[tuple[Grain, ...]] = ("week", "month")
# How many of the newest cohorts, and periods of each, are published per grain.
COHORT_DEPTH: Final[dict[Grain, int]] = {"week": 26, "month": 12}
# 'all', 'region:<R>' (cohort region) or 'campaign:<id>' (acquisition campaign).
# Anchored at both ends: the campaign pattern's own '$' would end only its branch.
COHORT_SEGMENT_PATTERN: Final = (
    r"^(all|region:([A-Z0-9_-]{2,8}|unknown)|"
    + CAMPAIGN_SEGMENT_PATTERN.removeprefix("^").removesuffix("$")
    + ")$"
)

_Count = Annotated[StrictInt, Field(ge=0)]


class CohortPeriod(BaseModel):
    """Period ``k`` of a cohort: who is still active at its end, and what they spent so far."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: _Count = Field(description="Period index: 0 is the cohort's own week or month.")
    end: UtcDatetime = Field(description="End of the period, exclusive (UTC).")
    complete: StrictBool = Field(
        description="True when the end is at or before the watermark; false for the period "
        "holding the watermark, whose values are as of the watermark."
    )
    active: _Count = Field(description="Cohort customers active at the period's end.")
    retention: Ratio = Field(description="active / size; null when size is 0.")
    revenue: Money = Field(
        description="Cumulative purchase amounts of the cohort's customers with occurred_at "
        "before the end, decimal string with 2 places."
    )
    revenue_per_customer: Money = Field(
        description="revenue / size, decimal string with 2 places; null when size is 0."
    )


class Cohort(BaseModel):
    """One cohort as stored in the Redis hash ``kpi-cohorts:<grain>:<segment>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cohort_start: UtcDatetime = Field(
        description="Start of the cohort's week (Monday 00:00 UTC) or calendar month (UTC)."
    )
    size: _Count = Field(description="Customers whose first effective signup is in the cohort.")
    periods: list[CohortPeriod] = Field(
        description="Periods 0.. up to the one holding the watermark, at most 26 (week) or "
        "12 (month)."
    )


class CohortUpdate(Cohort):
    """A changed cohort, as sent on ``kpi-cohort-updates:<grain>:<segment>`` and on the
    Kafka topic ``crm.kpi-cohorts``."""

    grain: Grain = Field(description="'week' or 'month'.")
    segment: str = Field(
        pattern=COHORT_SEGMENT_PATTERN,
        description="'all', 'region:<REGION>' (cohort region) or 'campaign:<campaign_id>' "
        "(acquisition campaign).",
    )
