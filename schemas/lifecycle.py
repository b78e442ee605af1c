"""A customer's lifecycle stage change, one message of ``crm.customer-lifecycle`` (contract §7).

The stage names are declared here, once: the rules (``stream_app/lifecycle/stages.py``), the
``lifecycle:<stage>`` segments and this message read them from ``Stage``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from schemas.timestamps import UtcDatetime


class Stage(StrEnum):
    """A lifecycle stage; the rules that give one are in ``stream_app/lifecycle/stages.py``."""

    NEW = "new"
    ACTIVE = "active"
    LOYAL = "loyal"
    AT_RISK = "at_risk"
    DORMANT = "dormant"
    CHURNED = "churned"


STAGES: Final[tuple[Stage, ...]] = tuple(Stage)
LIFECYCLE_SEGMENT_PREFIX: Final = "lifecycle:"


def lifecycle_segment(stage: Stage) -> str:
    """The KPI segment of customers in ``stage``: ``lifecycle:<stage>``."""
    return f"{LIFECYCLE_SEGMENT_PREFIX}{stage.value}"


class LifecycleChange(BaseModel):
    """One stage change of one customer; the Kafka key is the customer id (UTF-8)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    customer_id: str = Field(min_length=1, max_length=128, description="The customer.")
    from_stage: Stage | None = Field(
        alias="from",
        description="The stage before the change; null for a customer's first stage.",
    )
    to: Stage = Field(description="The stage after the change.")
    at: UtcDatetime = Field(
        description=(
            "Event time of the change: the event that caused it, or the instant a threshold "
            "of the rules was crossed with no event (recency grows with the watermark)."
        )
    )
    reason: str = Field(
        min_length=1,
        max_length=64,
        description="Which rule gave the new stage (see docs/metrics.md, Lifecycle stages).",
    )
    churn_risk: float | None = Field(
        ge=0,
        le=1,
        description=(
            "The churn model's probability that the customer cancels within 30 days of `at`; "
            "null when the customer is not active or the model has not learnt yet."
        ),
    )
