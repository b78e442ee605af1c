"""KPI alerts (churn spikes and thresholds) published to ``kpi-alerts``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.timestamps import UtcDatetime

OptionalFloat = float | None


class Alert(BaseModel):
    """One alert transition (firing or resolved); dedupe on ('alert_id', 'status')."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    alert_id: str = Field(
        min_length=1,
        description=(
            "Deterministic id from the rule, the segment and the bucket where the alert "
            "started: the same alert always has the same id, and its resolve carries it too."
        ),
    )
    kind: Literal["churn_spike", "threshold"] = Field(description="What raised the alert.")
    status: Literal["firing", "resolved"] = Field(description="Whether it starts or ends.")
    rule: str = Field(min_length=1, description="Name of the alert rule.")
    kpi: str = Field(min_length=1, description="The KPI watched, e.g. churned_customers.")
    window: str | None = Field(description="Window name, or null when not tied to one.")
    segment: str = Field(min_length=1, description="Segment, e.g. all or region:EU.")
    bucket_start: UtcDatetime = Field(description="Start of the time bucket observed (UTC).")
    bucket_end: UtcDatetime = Field(description="End of the time bucket observed (UTC).")
    observed: float | str | None = Field(
        description="Observed value: a number, a decimal string for money, or null."
    )
    baseline_mean: OptionalFloat = Field(description="Mean of the baseline buckets, or null.")
    baseline_std: OptionalFloat = Field(description="Standard deviation of the baseline.")
    z_score: OptionalFloat = Field(description="(observed - mean) / std, or null.")
    threshold: OptionalFloat = Field(description="The threshold crossed, or null.")
    severity: Literal["warning", "critical"] = Field(description="How urgent the alert is.")
    summary: str = Field(min_length=1, description="One line of human text.")
    fired_at: UtcDatetime = Field(description="When the alert was raised (UTC).")
