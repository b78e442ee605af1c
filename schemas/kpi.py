"""KPI snapshots (contract section 5): one JSON object per window and segment."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

from schemas.timestamps import UtcDatetime

MONEY_PATTERN: Final = r"^-?[0-9]+\.[0-9]{2}$"
WINDOW_PATTERN: Final = r"^[A-Za-z0-9_-]{1,32}$"
SEGMENT_PATTERN: Final = r"^(all|region:([A-Z0-9_-]{2,8}|unknown))$"
CAMPAIGN_SEGMENT_PATTERN: Final = r"^campaign:[^\s\u0000-\u001f\u007f-\u009f]{1,128}$"

SNAPSHOT_META: Final[tuple[str, ...]] = (
    "window",
    "segment",
    "window_start",
    "window_end",
    "watermark",
    "updated_at",
)
SEGMENT_KPIS: Final[tuple[str, ...]] = (
    "active_start",
    "active_end",
    "new_customers",
    "churned_customers",
    "churn_rate",
    "retention_rate",
    "orders",
    "revenue",
    "aov",
    "purchasing_customers",
    "repeat_customers",
    "repeat_purchase_rate",
    "purchase_frequency",
    "clv",
    "clicks",
    "converted_clicks",
    "conversion_rate",
    "spend",
    "cac",
    "attributed_revenue",
    "roas",
    "nps_responses",
    "promoters",
    "passives",
    "detractors",
    "nps",
    "csat_responses",
    "csat_satisfied",
    "csat",
)
CAMPAIGN_KPIS: Final[tuple[str, ...]] = (
    "clicks",
    "converted_clicks",
    "conversion_rate",
    "spend",
    "new_customers",
    "cac",
    "attributed_revenue",
    "roas",
)
MONEY_KPIS: Final[tuple[str, ...]] = ("revenue", "aov", "clv", "spend", "cac", "attributed_revenue")

_CENT = Decimal("0.01")


def format_money(value: Decimal) -> str:
    """``value`` rounded half-even to 2 places as a plain decimal string, e.g. ``"1204.50"``."""
    if not value.is_finite():
        raise ValueError("money must be a finite decimal")
    with localcontext() as context:
        # quantize() fails once the result has more digits than the context precision.
        context.prec = max(context.prec, value.adjusted() + 3)
        cents = value.quantize(_CENT, rounding=ROUND_HALF_EVEN)
    return f"{cents if cents else abs(cents):f}"


def _money_input(value: Any) -> Any:
    return format_money(value) if isinstance(value, Decimal) else value


Count = Annotated[StrictInt, Field(ge=0)]
Ratio = Annotated[float, Field(allow_inf_nan=False)] | None
Money = Annotated[str, BeforeValidator(_money_input), Field(pattern=MONEY_PATTERN)] | None


class _SnapshotMeta(BaseModel):
    """Which window and segment a snapshot describes, and how fresh it is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: str = Field(pattern=WINDOW_PATTERN, description="Window name, e.g. 1h, 24h, 7d, 30d.")
    segment: str = Field(description="Segment of the snapshot.")
    window_start: UtcDatetime = Field(description="Start of the window, inclusive (UTC).")
    window_end: UtcDatetime = Field(description="End of the window, exclusive (UTC).")
    watermark: UtcDatetime = Field(description="Latest occurred_at seen when computed (UTC).")
    updated_at: UtcDatetime = Field(description="Wall-clock time of publication (UTC).")


class SegmentSnapshot(_SnapshotMeta):
    """Every KPI of contract section 4 for segment 'all' or 'region:<REGION>'."""

    segment: str = Field(
        pattern=SEGMENT_PATTERN, description="'all' or 'region:<REGION>' (e.g. region:EU)."
    )
    active_start: Count = Field(description="S: customers active at window_start.")
    active_end: Count = Field(description="E: customers active at window_end.")
    new_customers: Count = Field(description="N: effective signups in the window.")
    churned_customers: Count = Field(description="C: effective cancellations in the window.")
    churn_rate: Ratio = Field(description="C / S; null when S is 0.")
    retention_rate: Ratio = Field(description="(E - N) / S; null when S is 0.")
    orders: Count = Field(description="Purchases in the window.")
    revenue: Money = Field(description="Sum of purchase amounts, decimal string with 2 places.")
    aov: Money = Field(description="revenue / orders, 2 places; null when orders is 0.")
    purchasing_customers: Count = Field(description="Customers with at least 1 purchase.")
    repeat_customers: Count = Field(description="Customers with at least 2 purchases.")
    repeat_purchase_rate: Ratio = Field(
        description="repeat_customers / purchasing_customers; null when the latter is 0."
    )
    purchase_frequency: Ratio = Field(
        description="orders / purchasing_customers; null when the latter is 0."
    )
    clv: Money = Field(
        description="(revenue / purchasing_customers) / churn_rate x gross margin, 2 places; "
        "null when a denominator is 0 or null."
    )
    clicks: Count = Field(description="Campaign clicks in the window.")
    converted_clicks: Count = Field(description="Clicks in the window that later converted.")
    conversion_rate: Ratio = Field(description="converted_clicks / clicks; null when clicks is 0.")
    spend: Money = Field(description="Sum of click costs in the window, 2 places.")
    cac: Money = Field(description="spend / new_customers, 2 places; null when N is 0.")
    attributed_revenue: Money = Field(
        description="Amounts of the purchases that converted clicks in the window, 2 places."
    )
    roas: Ratio = Field(description="attributed_revenue / spend; null when spend is 0.")
    nps_responses: Count = Field(description="NPS surveys in the window.")
    promoters: Count = Field(description="NPS scores 9 or 10.")
    passives: Count = Field(description="NPS scores 7 or 8.")
    detractors: Count = Field(description="NPS scores 0 to 6.")
    nps: Ratio = Field(
        description="100 x (promoters - detractors) / nps_responses; null when no responses."
    )
    csat_responses: Count = Field(description="CSAT surveys in the window.")
    csat_satisfied: Count = Field(description="CSAT scores 4 or 5.")
    csat: Ratio = Field(description="100 x csat_satisfied / csat_responses; null when none.")


class CampaignSnapshot(_SnapshotMeta):
    """The campaign KPIs of contract section 4 for segment 'campaign:<campaign_id>'."""

    segment: str = Field(pattern=CAMPAIGN_SEGMENT_PATTERN, description="'campaign:<campaign_id>'.")
    clicks: Count = Field(description="Clicks on the campaign in the window.")
    converted_clicks: Count = Field(description="Clicks in the window that later converted.")
    conversion_rate: Ratio = Field(description="converted_clicks / clicks; null when clicks is 0.")
    spend: Money = Field(description="Sum of click costs in the window, 2 places.")
    new_customers: Count = Field(
        description="Effective signups in the window acquired by the campaign."
    )
    cac: Money = Field(description="spend / new_customers, 2 places; null when it is 0.")
    attributed_revenue: Money = Field(
        description="Amounts of the purchases that converted the campaign's clicks in the "
        "window, 2 places."
    )
    roas: Ratio = Field(description="attributed_revenue / spend; null when spend is 0.")
