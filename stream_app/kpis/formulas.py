"""KPI formulas: pure functions from a window's base counts to the published KPI values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

# Money is counted in integer micro-units (1e-6 of the reporting currency): amounts have at
# most 4 decimals and click costs at most 6, so every sum is exact integer arithmetic.
MICROS_PER_UNIT = 1_000_000
_CENT = Decimal("0.01")
_CONTEXT = Context(prec=60)

# The additive counts kept per window; everything published is derived from these.
BASE_COUNTS: tuple[str, ...] = (
    "active_start",
    "active_end",
    "new_customers",
    "churned_customers",
    "orders",
    "revenue_micros",
    "purchasing_customers",
    "repeat_customers",
    "clicks",
    "spend_micros",
    "converted_clicks",
    "attributed_revenue_micros",
    "nps_responses",
    "promoters",
    "passives",
    "detractors",
    "csat_responses",
    "csat_satisfied",
)
BASE_INDEX: dict[str, int] = {name: i for i, name in enumerate(BASE_COUNTS)}

SegmentKind = Literal["segment", "campaign"]
KpiValue = int | float | str | None
Counts = Mapping[str, int]


def to_micros(amount: Decimal) -> int:
    """An exact decimal amount as integer micro-units; raises if it has more than 6 decimals."""
    micros = amount * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError(f"{amount} has more than 6 decimal places")
    return int(micros)


def money(value: Decimal | None) -> str | None:
    """A money value as the contract publishes it: decimal string, half-even to 2 places."""
    if value is None:
        return None
    return str(value.quantize(_CENT, rounding=ROUND_HALF_EVEN, context=_CONTEXT))


def micros_to_decimal(micros: int) -> Decimal:
    return _CONTEXT.divide(Decimal(micros), Decimal(MICROS_PER_UNIT))


def ratio(numerator: int, denominator: int, scale: int = 1) -> float | None:
    """``scale * numerator / denominator`` as a correctly rounded float; None when dividing by 0."""
    if denominator == 0:
        return None
    return (scale * numerator) / denominator


def money_ratio(numerator_micros: int, denominator: int) -> Decimal | None:
    """An exact money amount divided by a count (or by money, giving a plain number)."""
    if denominator == 0:
        return None
    return _CONTEXT.divide(micros_to_decimal(numerator_micros), Decimal(denominator))


def clv(counts: Counts, gross_margin: Decimal) -> Decimal | None:
    """(revenue / purchasing_customers) / churn_rate x gross margin, exact.

    Null when nobody purchased, when S is 0 (churn rate undefined) or when nobody churned
    (a churn rate of 0 makes the lifetime unbounded).
    """
    purchasing = counts["purchasing_customers"]
    churned = counts["churned_customers"]
    active_start = counts["active_start"]
    if purchasing == 0 or active_start == 0 or churned == 0:
        return None
    revenue_per_customer = money_ratio(counts["revenue_micros"], purchasing)
    assert revenue_per_customer is not None
    # Dividing by C/S is multiplying by S/C: one exact step, no float churn rate involved.
    value = _CONTEXT.multiply(revenue_per_customer, Decimal(active_start))
    value = _CONTEXT.divide(value, Decimal(churned))
    return _CONTEXT.multiply(value, gross_margin)


@dataclass(frozen=True)
class Kpi:
    """One published KPI: its name, the segments it applies to, and how it is computed."""

    name: str
    applies_to: frozenset[SegmentKind]
    compute: Callable[[Counts, Decimal], KpiValue]


def _count(name: str) -> Callable[[Counts, Decimal], KpiValue]:
    return lambda counts, _gm: counts[name]


def _money_total(name: str) -> Callable[[Counts, Decimal], KpiValue]:
    return lambda counts, _gm: money(micros_to_decimal(counts[name]))


_BOTH: frozenset[SegmentKind] = frozenset({"segment", "campaign"})
_SEGMENT: frozenset[SegmentKind] = frozenset({"segment"})

KPIS: tuple[Kpi, ...] = (
    Kpi("active_start", _SEGMENT, _count("active_start")),
    Kpi("active_end", _SEGMENT, _count("active_end")),
    Kpi("new_customers", _BOTH, _count("new_customers")),
    Kpi("churned_customers", _SEGMENT, _count("churned_customers")),
    Kpi(
        "churn_rate",
        _SEGMENT,
        lambda c, _gm: ratio(c["churned_customers"], c["active_start"]),
    ),
    Kpi(
        "retention_rate",
        _SEGMENT,
        lambda c, _gm: ratio(c["active_end"] - c["new_customers"], c["active_start"]),
    ),
    Kpi("orders", _SEGMENT, _count("orders")),
    Kpi("revenue", _SEGMENT, _money_total("revenue_micros")),
    Kpi("aov", _SEGMENT, lambda c, _gm: money(money_ratio(c["revenue_micros"], c["orders"]))),
    Kpi("purchasing_customers", _SEGMENT, _count("purchasing_customers")),
    Kpi("repeat_customers", _SEGMENT, _count("repeat_customers")),
    Kpi(
        "repeat_purchase_rate",
        _SEGMENT,
        lambda c, _gm: ratio(c["repeat_customers"], c["purchasing_customers"]),
    ),
    Kpi(
        "purchase_frequency",
        _SEGMENT,
        lambda c, _gm: ratio(c["orders"], c["purchasing_customers"]),
    ),
    Kpi("clv", _SEGMENT, lambda c, gm: money(clv(c, gm))),
    Kpi("clicks", _BOTH, _count("clicks")),
    Kpi("converted_clicks", _BOTH, _count("converted_clicks")),
    Kpi("conversion_rate", _BOTH, lambda c, _gm: ratio(c["converted_clicks"], c["clicks"])),
    Kpi("spend", _BOTH, _money_total("spend_micros")),
    Kpi(
        "cac",
        _BOTH,
        lambda c, _gm: money(money_ratio(c["spend_micros"], c["new_customers"])),
    ),
    Kpi("attributed_revenue", _BOTH, _money_total("attributed_revenue_micros")),
    Kpi(
        "roas",
        _BOTH,
        lambda c, _gm: ratio(c["attributed_revenue_micros"], c["spend_micros"]),
    ),
    Kpi("nps_responses", _SEGMENT, _count("nps_responses")),
    Kpi("promoters", _SEGMENT, _count("promoters")),
    Kpi("passives", _SEGMENT, _count("passives")),
    Kpi("detractors", _SEGMENT, _count("detractors")),
    Kpi(
        "nps",
        _SEGMENT,
        lambda c, _gm: ratio(c["promoters"] - c["detractors"], c["nps_responses"], 100),
    ),
    Kpi("csat_responses", _SEGMENT, _count("csat_responses")),
    Kpi("csat_satisfied", _SEGMENT, _count("csat_satisfied")),
    Kpi("csat", _SEGMENT, lambda c, _gm: ratio(c["csat_satisfied"], c["csat_responses"], 100)),
)


def segment_kind(segment: str) -> SegmentKind:
    """``campaign:<id>`` segments carry the campaign KPIs only; ``all`` and regions carry all."""
    return "campaign" if segment.startswith("campaign:") else "segment"


def derive_kpis(
    counts: Counts, kind: SegmentKind, gross_margin: Decimal = Decimal(1)
) -> dict[str, KpiValue]:
    """Every KPI of the contract that applies to ``kind``, from one window's base counts."""
    return {kpi.name: kpi.compute(counts, gross_margin) for kpi in KPIS if kind in kpi.applies_to}


def counts_from_vector(vector: list[int] | tuple[int, ...]) -> dict[str, int]:
    """Name the entries of a base-count vector laid out as ``BASE_COUNTS``."""
    return dict(zip(BASE_COUNTS, vector, strict=True))
