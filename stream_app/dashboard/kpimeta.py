"""What the page needs to know about each KPI: label, how to show it, which way is good.

Served by ``GET /api/v1/meta`` so the page never keeps its own copy of the KPI list: all of
it comes from the KPI registry (``stream_app.kpis.registry``); only the headline tiles of
each window card are chosen here.
"""

from __future__ import annotations

from typing import Any, Final

from stream_app.kpis.registry import KPIS

# The numbers a CRM team reads first: the demo must show each of them in every long window.
CRM_HEADLINE: Final = (
    "churn_rate",
    "retention_rate",
    "clv",
    "ltv_cac_ratio",
    "nps",
    "csat",
    "conversion_rate",
    "cac",
    "repeat_purchase_rate",
)

# The tiles of each window card, in order; the rest are in the "All KPIs" table.
HEADLINE: Final[dict[str, tuple[str, ...]]] = {
    "segment": (*CRM_HEADLINE, "aov", "revenue", "orders"),
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


def catalog() -> list[dict[str, Any]]:
    """Every KPI of the registry, in snapshot order."""
    return [
        {
            "name": kpi.name,
            "label": kpi.label,
            "kind": kpi.display,
            "group": kpi.group,
            "worse_when_up": not kpi.higher_is_better,
            "segment_kinds": [kind for kind in ("segment", "campaign") if kind in kpi.applies_to],
        }
        for kpi in KPIS
    ]
