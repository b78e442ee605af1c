"""The KPI registry: its declarations hang together and the public name lists follow it."""

from __future__ import annotations

import pytest

from schemas import CAMPAIGN_KPIS, MONEY_KPIS, SEGMENT_KPIS
from stream_app.kpis.formulas import BASE_COUNTS
from stream_app.kpis.registry import (
    CSAT_SATISFIED_MIN,
    GROSS_MARGIN,
    KPIS,
    NPS_PASSIVE_MIN,
    NPS_PROMOTER_MIN,
    is_csat_satisfied,
    nps_category,
)


def test_every_read_is_a_count_the_margin_or_an_earlier_kpi() -> None:
    # Reading only earlier KPIs rules out cycles; the order is the snapshot order.
    seen: set[str] = set()
    for kpi in KPIS:
        for read in kpi.reads:
            assert read in BASE_COUNTS or read == GROSS_MARGIN or read in seen, (kpi.name, read)
        seen.add(kpi.name)
    assert len(seen) == len(KPIS), "a KPI is declared twice"


def test_volumes_are_base_counts_of_the_same_segments() -> None:
    by_name = {kpi.name: kpi for kpi in KPIS}
    for kpi in KPIS:
        if kpi.volume is not None:
            assert kpi.volume in BASE_COUNTS, kpi.name
            assert kpi.applies_to <= by_name[kpi.volume].applies_to, kpi.name


def test_public_name_lists_follow_the_registry() -> None:
    assert tuple(kpi.name for kpi in KPIS) == SEGMENT_KPIS
    assert tuple(k.name for k in KPIS if "campaign" in k.applies_to) == CAMPAIGN_KPIS
    assert set(MONEY_KPIS) == {"revenue", "aov", "clv", "spend", "cac", "attributed_revenue"}


@pytest.mark.parametrize(
    ("score", "category"),
    [(0, "detractors"), (6, "detractors"), (7, "passives"), (8, "passives"), (9, "promoters"),
     (10, "promoters")],
)  # fmt: skip
def test_nps_thresholds(score: int, category: str) -> None:
    # Contract section 4: promoters 9-10, passives 7-8, detractors 0-6.
    assert (NPS_PROMOTER_MIN, NPS_PASSIVE_MIN) == (9, 7)
    assert nps_category(score) == category


def test_csat_threshold() -> None:
    assert CSAT_SATISFIED_MIN == 4
    assert [is_csat_satisfied(score) for score in range(1, 6)] == [False, False, False, True, True]
