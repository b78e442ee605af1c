"""What the page needs to know about each KPI: label, how to show it, which way is good.

Served by ``GET /api/v1/meta`` so the page never keeps its own copy of the KPI list: the
names come from the contract's schemas, the display kinds from ``kpi watch``.
"""

from __future__ import annotations

from typing import Any, Final

from schemas import CAMPAIGN_KPIS, SEGMENT_KPIS
from stream_app.watch.view import WORSE_WHEN_UP, kpi_kind

LABELS: Final[dict[str, str]] = {
    "active_start": "Active at start",
    "active_end": "Active customers",
    "new_customers": "New customers",
    "churned_customers": "Churned customers",
    "churn_rate": "Churn rate",
    "retention_rate": "Retention rate",
    "orders": "Orders",
    "revenue": "Revenue",
    "aov": "Avg order value",
    "purchasing_customers": "Buyers",
    "repeat_customers": "Repeat buyers",
    "repeat_purchase_rate": "Repeat purchase rate",
    "purchase_frequency": "Orders per buyer",
    "clv": "Customer lifetime value",
    "clicks": "Campaign clicks",
    "converted_clicks": "Converted clicks",
    "conversion_rate": "Conversion rate",
    "spend": "Spend",
    "cac": "Acquisition cost (CAC)",
    "attributed_revenue": "Attributed revenue",
    "roas": "ROAS",
    "nps_responses": "NPS responses",
    "promoters": "Promoters",
    "passives": "Passives",
    "detractors": "Detractors",
    "nps": "NPS",
    "csat_responses": "CSAT responses",
    "csat_satisfied": "CSAT satisfied",
    "csat": "CSAT",
}

GROUPS: Final[dict[str, tuple[str, ...]]] = {
    "customers": (
        "active_start",
        "active_end",
        "new_customers",
        "churned_customers",
        "churn_rate",
        "retention_rate",
        "clv",
    ),
    "orders": (
        "orders",
        "revenue",
        "aov",
        "purchasing_customers",
        "repeat_customers",
        "repeat_purchase_rate",
        "purchase_frequency",
    ),
    "campaigns": (
        "clicks",
        "converted_clicks",
        "conversion_rate",
        "spend",
        "cac",
        "attributed_revenue",
        "roas",
    ),
    "satisfaction": (
        "nps_responses",
        "promoters",
        "passives",
        "detractors",
        "nps",
        "csat_responses",
        "csat_satisfied",
        "csat",
    ),
}

# The tiles of each window card, in order; the rest are in the "All KPIs" table.
HEADLINE: Final[dict[str, tuple[str, ...]]] = {
    "segment": (
        "active_end",
        "new_customers",
        "churn_rate",
        "retention_rate",
        "revenue",
        "orders",
        "aov",
        "nps",
    ),
    "campaign": (
        "clicks",
        "conversion_rate",
        "spend",
        "new_customers",
        "cac",
        "attributed_revenue",
        "roas",
        "converted_clicks",
    ),
}


def _group(name: str) -> str:
    return next(group for group, names in GROUPS.items() if name in names)


def catalog() -> list[dict[str, Any]]:
    """Every KPI of the contract, in the order of ``SEGMENT_KPIS``."""
    return [
        {
            "name": name,
            "label": LABELS[name],
            "kind": kpi_kind(name),
            "group": _group(name),
            "worse_when_up": name in WORSE_WHEN_UP,
            "segment_kinds": [
                kind
                for kind, names in (("segment", SEGMENT_KPIS), ("campaign", CAMPAIGN_KPIS))
                if name in names
            ],
        }
        for name in SEGMENT_KPIS
    ]
