"""The KPI registry: one declaration per published KPI, and the survey score thresholds.

Everything else reads its KPI list from here: the snapshot models and JSON Schemas
(``schemas.kpi``), the publisher and ``kpi verify`` (``derive_kpis``), alert rules, the
dashboard and ``kpi watch`` (labels, groups, display), and the tables of docs/metrics.md
(``python -m stream_app.kpis.docs``). Adding a KPI is adding one ``Kpi`` to ``KPIS``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from stream_app.kpis.formulas import (
    Counts,
    Exact,
    KpiValue,
    Rational,
    SegmentKind,
    amount,
    money,
    per,
    percent,
    quotient,
    share,
)

# -- survey thresholds (contract section 4): the one place scores become categories ----------

NPS_PROMOTER_MIN: Final = 9  # 9-10 promoter
NPS_PASSIVE_MIN: Final = 7  # 7-8 passive, 0-6 detractor
CSAT_SATISFIED_MIN: Final = 4  # 4-5 satisfied

NpsCategory = Literal["promoters", "passives", "detractors"]


def nps_category(score: int) -> NpsCategory:
    """The base count an NPS answer adds to."""
    if score >= NPS_PROMOTER_MIN:
        return "promoters"
    return "passives" if score >= NPS_PASSIVE_MIN else "detractors"


def is_csat_satisfied(score: int) -> bool:
    return score >= CSAT_SATISFIED_MIN


# -- the declaration --------------------------------------------------------------------------

Kind = Literal["count", "ratio", "money", "score"]
Group = Literal["customers", "orders", "campaigns", "satisfaction"]
GROUP_TITLES: Final[dict[Group, str]] = {
    "customers": "Customers",
    "orders": "Purchases",
    "campaigns": "Campaigns",
    "satisfaction": "Satisfaction",
}
# A read that is a setting, not a count: the gross margin ``clv`` is multiplied by.
GROSS_MARGIN: Final = "gross_margin"
# The unit of ratios shown as percentages (0.05 = 5 %).
FRACTION: Final = "fraction"
SEGMENT: Final[frozenset[SegmentKind]] = frozenset({"segment"})
BOTH: Final[frozenset[SegmentKind]] = frozenset({"segment", "campaign"})


@dataclass(frozen=True)
class Kpi:
    """One published KPI: what it reads, how it is computed, and how people see it."""

    name: str
    kind: Kind
    reads: tuple[str, ...]  # base counts, other KPIs (their exact values) or GROSS_MARGIN
    formula: Callable[..., Exact]  # called with the exact values of ``reads``, in order
    label: str
    group: Group
    definition: str  # one line, in the user's words
    shown_formula: str  # the formula as docs/metrics.md writes it
    null_when: str
    unit: str
    applies_to: frozenset[SegmentKind] = SEGMENT
    higher_is_better: bool = True
    volume: str | None = None  # the count an alert's min_volume guards, if not the KPI itself

    @property
    def display(self) -> Literal["count", "money", "percent", "score", "ratio"]:
        """How dashboard and watch format it: fractions as percentages."""
        return "percent" if self.kind == "ratio" and self.unit == FRACTION else self.kind

    @property
    def nullable(self) -> bool:
        return not self.null_when.startswith("never")


def count(
    name: str,
    label: str,
    group: Group,
    definition: str,
    unit: str,
    *,
    shown: str = "count",
    applies_to: frozenset[SegmentKind] = SEGMENT,
    higher_is_better: bool = True,
) -> Kpi:
    """A KPI that is a base count, published as it is."""
    return Kpi(
        name, "count", (name,), int, label, group, definition, shown, "never", unit,
        applies_to, higher_is_better,
    )  # fmt: skip


def click_total(name: str, micros: str, label: str, definition: str, shown: str = "sum") -> Kpi:
    """A campaign money KPI that is a sum of micro-units (never null: nothing is "0.00")."""
    return Kpi(
        name, "money", (micros,), amount, label, "campaigns", definition, shown,
        'never (`"0.00"`)', "money", BOTH, volume="clicks",
    )  # fmt: skip


def _clv(revenue_micros: int, buyers: int, churn_rate: Rational | None, margin: Rational) -> Exact:
    # Reads the exact churn rate C / S: dividing by it is multiplying by S / C, no float.
    value = quotient(per(revenue_micros, buyers), churn_rate)
    return None if value is None else value * margin


def _retention(active_end: int, new: int, active_start: int) -> Exact:
    return share(active_end - new, active_start)


def _nps(promoters: int, detractors: int, responses: int) -> Exact:
    return percent(promoters - detractors, responses)


# -- the KPIs, in the order snapshots publish them --------------------------------------------

KPIS: Final[tuple[Kpi, ...]] = (
    count("active_start", "Active at start", "customers",
          "customers active when the window starts", "customers", shown="S"),
    count("active_end", "Active customers", "customers",
          "customers active when the window ends", "customers", shown="E"),
    count("new_customers", "New customers", "customers",
          "effective signups in the window; in a campaign segment, those it acquired",
          "customers", shown="N", applies_to=BOTH),
    count("churned_customers", "Churned customers", "customers",
          "effective cancellations in the window", "customers", shown="C",
          higher_is_better=False),
    Kpi("churn_rate", "ratio", ("churned_customers", "active_start"), share, "Churn rate",
        "customers", "share of the starting customers who left", "C / S", "S = 0", FRACTION,
        higher_is_better=False, volume="active_start"),
    Kpi("retention_rate", "ratio", ("active_end", "new_customers", "active_start"), _retention,
        "Retention rate", "customers",
        "share of the starting customers still there at the end (the classic CRM formula)",
        "(E - N) / S", "S = 0", FRACTION, volume="active_start"),
    count("orders", "Orders", "orders", "purchases in the window", "orders"),
    Kpi("revenue", "money", ("revenue_micros",), amount, "Revenue", "orders",
        "total amount of the purchases in the window", "sum of `amount`", 'never (`"0.00"`)',
        "money", volume="orders"),
    Kpi("aov", "money", ("revenue_micros", "orders"), per, "Avg order value", "orders",
        "average order value", "revenue / orders", "orders = 0", "money", volume="orders"),
    count("purchasing_customers", "Buyers", "orders",
          "distinct customers with at least one purchase in the window", "customers"),
    count("repeat_customers", "Repeat buyers", "orders",
          "distinct customers with at least two purchases in the window", "customers"),
    Kpi("repeat_purchase_rate", "ratio", ("repeat_customers", "purchasing_customers"), share,
        "Repeat purchase rate", "orders", "share of buyers who bought more than once",
        "repeat_customers / purchasing_customers", "no buyers", FRACTION,
        volume="purchasing_customers"),
    Kpi("purchase_frequency", "ratio", ("orders", "purchasing_customers"), share,
        "Orders per buyer", "orders", "orders per buyer", "orders / purchasing_customers",
        "no buyers", "orders per customer", volume="purchasing_customers"),
    Kpi("clv", "money", ("revenue_micros", "purchasing_customers", "churn_rate", GROSS_MARGIN),
        _clv, "Customer lifetime value", "orders",
        "revenue per buyer over their expected lifetime",
        "(revenue / purchasing_customers) / churn_rate x gross margin",
        "no buyers, S = 0, or C = 0", "money", volume="purchasing_customers"),
    count("clicks", "Campaign clicks", "campaigns", "campaign clicks in the window", "clicks",
          applies_to=BOTH),
    count("converted_clicks", "Converted clicks", "campaigns",
          "clicks in the window that later led to a purchase", "clicks", applies_to=BOTH),
    Kpi("conversion_rate", "ratio", ("converted_clicks", "clicks"), share, "Conversion rate",
        "campaigns", "share of clicks that converted", "converted_clicks / clicks",
        "clicks = 0", FRACTION, BOTH, volume="clicks"),
    click_total("spend", "spend_micros", "Spend", "what the clicks cost", "sum of `cost`"),
    Kpi("cac", "money", ("spend_micros", "new_customers"), per, "Acquisition cost (CAC)",
        "campaigns", "customer acquisition cost", "spend / new_customers", "N = 0", "money",
        BOTH, higher_is_better=False, volume="new_customers"),
    click_total("attributed_revenue", "attributed_revenue_micros", "Attributed revenue",
                "amounts of the purchases that converted clicks of the window"),
    Kpi("roas", "ratio", ("attributed_revenue_micros", "spend_micros"), share, "ROAS",
        "campaigns", "return on ad spend", "attributed_revenue / spend", "spend = 0",
        "ratio (18.7 = 18.70 earned per 1.00 spent)", BOTH, volume="clicks"),
    Kpi("ltv_cac_ratio", "ratio", ("clv", "cac"), quotient, "LTV / CAC", "campaigns",
        "what a customer is worth for each 1.00 spent acquiring one",
        "clv / cac, exact (not from the rounded strings)", "clv or cac is null, or cac = 0",
        "ratio (3.0 = worth three times its acquisition cost)", volume="new_customers"),
    count("nps_responses", "NPS responses", "satisfaction", "NPS answers in the window",
          "answers"),
    count("promoters", "Promoters", "satisfaction", f"NPS scores {NPS_PROMOTER_MIN} or 10",
          "answers"),
    count("passives", "Passives", "satisfaction",
          f"NPS scores {NPS_PASSIVE_MIN} or {NPS_PROMOTER_MIN - 1}", "answers"),
    count("detractors", "Detractors", "satisfaction",
          f"NPS scores 0 to {NPS_PASSIVE_MIN - 1}", "answers", higher_is_better=False),
    Kpi("nps", "score", ("promoters", "detractors", "nps_responses"), _nps, "NPS",
        "satisfaction", "net promoter score", "100 x (promoters - detractors) / nps_responses",
        "no NPS answers", "score from -100 to 100", volume="nps_responses"),
    count("csat_responses", "CSAT responses", "satisfaction", "CSAT answers in the window",
          "answers"),
    count("csat_satisfied", "CSAT satisfied", "satisfaction",
          f"CSAT scores {CSAT_SATISFIED_MIN} or 5", "answers"),
    Kpi("csat", "score", ("csat_satisfied", "csat_responses"), percent, "CSAT",
        "satisfaction", "customer satisfaction", "100 x csat_satisfied / csat_responses",
        "no CSAT answers", "percent", volume="csat_responses"),
)  # fmt: skip
KPI_BY_NAME: Final[dict[str, Kpi]] = {kpi.name: kpi for kpi in KPIS}


@functools.cache
def names_for(kind: SegmentKind) -> tuple[str, ...]:
    """The KPIs a segment of ``kind`` publishes, in snapshot order."""
    return tuple(kpi.name for kpi in KPIS if kind in kpi.applies_to)


def segment_kind(segment: str) -> SegmentKind:
    """``campaign:<id>`` segments carry the campaign KPIs only; every other segment all."""
    return "campaign" if segment.startswith("campaign:") else "segment"


# -- evaluation -------------------------------------------------------------------------------


class ExactValues:
    """The exact value of every KPI of one window, each computed once, when first read."""

    def __init__(self, counts: Counts, gross_margin: Decimal = Decimal(1)) -> None:
        self._values: dict[str, Exact] = {**counts, GROSS_MARGIN: Rational.of(gross_margin)}

    def __getitem__(self, name: str) -> Exact:
        if name not in self._values:
            kpi = KPI_BY_NAME[name]
            self._values[name] = kpi.formula(*(self[read] for read in kpi.reads))
        return self._values[name]

    def published(self, name: str) -> KpiValue:
        """The value as snapshots carry it: money rounded to cents, ratios as floats."""
        value, kind = self[name], KPI_BY_NAME[name].kind
        if value is None or isinstance(value, int):
            return value  # null, or a count
        return money(value) if kind == "money" else float(value)


@functools.cache
def _plan(kind: SegmentKind) -> tuple[tuple[Kpi, bool], ...]:
    """The KPIs to compute for ``kind`` in an order where reads come first (the registry's),
    each with whether it is published or only read by another."""
    published = set(names_for(kind))
    needed = set(published)
    for kpi in reversed(KPIS):
        if kpi.name in needed:
            needed.update(kpi.reads)
    return tuple((kpi, kpi.name in published) for kpi in KPIS if kpi.name in needed)


def derive_kpis(
    counts: Counts, kind: SegmentKind, gross_margin: Decimal = Decimal(1)
) -> dict[str, KpiValue]:
    """Every KPI that applies to ``kind``, from one window's base counts.

    One pass over a precomputed plan: the publisher derives thousands of snapshots while
    history catches up, and a lookup per read made that a tenth of a busy worker.
    """
    values: dict[str, Exact] = {**counts, GROSS_MARGIN: Rational.of(gross_margin)}
    snapshot: dict[str, KpiValue] = {}  # filled in the plan's order, which is snapshot order
    for kpi, publish in _plan(kind):
        name = kpi.name
        if kpi.kind == "count":
            if publish:
                snapshot[name] = counts[name]
            continue
        value = values[name] = kpi.formula(*[values[read] for read in kpi.reads])
        if publish:
            snapshot[name] = (
                value
                if value is None or isinstance(value, int)
                else money(value)
                if kpi.kind == "money"
                else float(value)
            )
    return snapshot


def value_of(name: str, counts: Counts, gross_margin: Decimal = Decimal(1)) -> KpiValue:
    """One KPI's published value from one window's base counts (what alert rules watch)."""
    return ExactValues(counts, gross_margin).published(name)
