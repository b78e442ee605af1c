"""KPI snapshots (contract section 5): one JSON object per window and segment.

The KPI fields are generated from the registry (``stream_app.kpis.registry``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, create_model

from schemas.lifecycle import LIFECYCLE_SEGMENT_PREFIX, STAGES
from schemas.timestamps import UtcDatetime
from stream_app.kpis.formulas import SegmentKind
from stream_app.kpis.registry import KPI_BY_NAME, KPIS, Kpi, names_for

MONEY_PATTERN: Final = r"^-?[0-9]+\.[0-9]{2}$"
WINDOW_PATTERN: Final = r"^[A-Za-z0-9_-]{1,32}$"
SEGMENT_PATTERN: Final = (
    r"^(all|region:([A-Z0-9_-]{2,8}|unknown)|"
    + LIFECYCLE_SEGMENT_PREFIX
    + "("
    + "|".join(stage.value for stage in STAGES)
    + "))$"
)
CAMPAIGN_SEGMENT_PATTERN: Final = r"^campaign:[^\s\u0000-\u001f\u007f-\u009f]{1,128}$"

SNAPSHOT_META: Final[tuple[str, ...]] = (
    "window",
    "segment",
    "window_start",
    "window_end",
    "watermark",
    "updated_at",
)
SEGMENT_KPIS: Final[tuple[str, ...]] = names_for("segment")
CAMPAIGN_KPIS: Final[tuple[str, ...]] = names_for("campaign")
MONEY_KPIS: Final[tuple[str, ...]] = tuple(kpi.name for kpi in KPIS if kpi.kind == "money")

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


def _field(kpi: Kpi) -> tuple[Any, Any]:
    """A snapshot field of ``kpi``: its JSON type by kind, its description from the registry."""
    kind: Any = {"count": Count, "money": Money}.get(kpi.kind, Ratio)
    text = kpi.definition[:1].upper() + kpi.definition[1:]
    if kpi.kind == "count" and kpi.shown_formula != "count":
        text += f" ({kpi.shown_formula})"  # S, E, N, C of the contract
    elif kpi.kind != "count" and not kpi.shown_formula.startswith("sum"):
        text += f": {kpi.shown_formula}"
    if kpi.kind == "money":
        text += ", decimal string with 2 places"
    if kpi.nullable:
        text += f"; null when {kpi.null_when}"
    return kind, Field(description=text + ".")


def _fields(kind: SegmentKind) -> dict[str, Any]:
    return {name: _field(KPI_BY_NAME[name]) for name in names_for(kind)}


class _SegmentMeta(_SnapshotMeta):
    segment: str = Field(
        pattern=SEGMENT_PATTERN,
        description="'all', 'region:<REGION>' (e.g. region:EU) or 'lifecycle:<stage>'.",
    )


class _CampaignMeta(_SnapshotMeta):
    segment: str = Field(pattern=CAMPAIGN_SEGMENT_PATTERN, description="'campaign:<campaign_id>'.")


# The KPI fields come from the registry, so a new KPI needs no edit here.
SegmentSnapshot = create_model(
    "SegmentSnapshot",
    __base__=_SegmentMeta,
    __doc__="Every KPI of contract section 4 for segment 'all' or 'region:<REGION>'.",
    __module__=__name__,
    **_fields("segment"),
)
CampaignSnapshot = create_model(
    "CampaignSnapshot",
    __base__=_CampaignMeta,
    __doc__="The campaign KPIs of contract section 4 for segment 'campaign:<campaign_id>'.",
    __module__=__name__,
    **_fields("campaign"),
)
