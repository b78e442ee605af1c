"""The KPI registry: its declarations hang together, and what is generated from it is current."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import CAMPAIGN_KPIS, MONEY_KPIS, SEGMENT_KPIS
from stream_app.kpis import docs
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


def test_docs_tables_match_the_registry() -> None:
    assert docs.main(["--check"]) == 0, "docs/metrics.md drifted: run `make docs`"


def test_docs_rewrite_replaces_only_the_marked_block(tmp_path: Path) -> None:
    page = tmp_path / "metrics.md"
    page.write_text(f"before\n{docs.BEGIN}\nstale table\n{docs.END}\nafter\n", encoding="utf-8")
    assert docs.main(["--check", "--file", str(page)]) == 1
    assert docs.main(["--file", str(page)]) == 0
    text = page.read_text("utf-8")
    assert text.startswith("before\n")
    assert text.endswith("\nafter\n")
    assert "stale table" not in text
    assert "| `churn_rate` | share of the starting customers who left | C / S | S = 0 |" in text
    assert docs.main(["--check", "--file", str(page)]) == 0


def test_docs_rewrite_needs_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "metrics.md"
    page.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="markers"):
        docs.main(["--file", str(page)])
