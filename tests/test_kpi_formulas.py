"""The KPI formulas of contract section 4 as one table: base counts in, published values out.

Every expected value below is worked out by hand from the contract's definitions (the
formula column, "a ratio whose denominator is 0 is null", money half-even to 2 places), not
taken from the code. Counts not named in a row are 0. Floats are compared to a relative
1e-12 (``kpi verify`` allows 1e-9) and must be floats; counts must be ints, money strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from stream_app.kpis.formulas import BASE_COUNTS, KpiValue, SegmentKind, money, ratio, to_micros
from stream_app.kpis.registry import derive_kpis, segment_kind

# Contract section 4, in its order: every KPI of `all` and region segments ...
SEGMENT_KPIS = (
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
    "ltv_cac_ratio",
    "nps_responses",
    "promoters",
    "passives",
    "detractors",
    "nps",
    "csat_responses",
    "csat_satisfied",
    "csat",
)
# ... and the campaign KPIs, the only ones of `campaign:<id>` segments.
CAMPAIGN_KPIS = (
    "clicks",
    "converted_clicks",
    "conversion_rate",
    "spend",
    "new_customers",
    "cac",
    "attributed_revenue",
    "roas",
)
MONEY_KPIS = {"revenue", "aov", "clv", "spend", "cac", "attributed_revenue"}
RATIO_KPIS = {
    "churn_rate",
    "retention_rate",
    "repeat_purchase_rate",
    "purchase_frequency",
    "conversion_rate",
    "roas",
    "ltv_cac_ratio",
    "nps",
    "csat",
}


def usd(amount: str) -> int:
    """An amount in micro-units (1e-6 USD), the unit of the ``*_micros`` base counts."""
    micros = Decimal(amount) * 1_000_000
    assert micros == int(micros), amount
    return int(micros)


def case(
    case_id: str,
    counts: dict[str, int],
    expected: dict[str, KpiValue],
    *,
    kind: str = "segment",
    gross_margin: str = "1",
) -> Any:
    return pytest.param(kind, counts, gross_margin, expected, id=case_id)


ZERO_SEGMENT: dict[str, KpiValue] = {
    "active_start": 0,
    "active_end": 0,
    "new_customers": 0,
    "churned_customers": 0,
    "churn_rate": None,
    "retention_rate": None,
    "orders": 0,
    "revenue": "0.00",
    "aov": None,
    "purchasing_customers": 0,
    "repeat_customers": 0,
    "repeat_purchase_rate": None,
    "purchase_frequency": None,
    "clv": None,
    "clicks": 0,
    "converted_clicks": 0,
    "conversion_rate": None,
    "spend": "0.00",
    "cac": None,
    "attributed_revenue": "0.00",
    "roas": None,
    "ltv_cac_ratio": None,
    "nps_responses": 0,
    "promoters": 0,
    "passives": 0,
    "detractors": 0,
    "nps": None,
    "csat_responses": 0,
    "csat_satisfied": 0,
    "csat": None,
}

TABLE = [
    # -- nothing happened: every count 0, every money "0.00", every ratio null ---------------
    case("empty_segment", {}, ZERO_SEGMENT),
    case(
        "empty_campaign",
        {},
        {
            "clicks": 0,
            "converted_clicks": 0,
            "conversion_rate": None,
            "spend": "0.00",
            "new_customers": 0,
            "cac": None,
            "attributed_revenue": "0.00",
            "roas": None,
        },
        kind="campaign",
    ),
    # -- the worked example of docs/metrics.md, every KPI of each column ----------------------
    case(
        "worked_example_all",
        {
            "active_start": 2,
            "active_end": 2,
            "new_customers": 1,
            "churned_customers": 1,
            "orders": 4,
            "revenue_micros": usd("119.99"),
            "purchasing_customers": 3,
            "repeat_customers": 1,
            "clicks": 2,
            "spend_micros": usd("1.60"),
            "converted_clicks": 1,
            "attributed_revenue_micros": usd("29.99"),
            "nps_responses": 2,
            "promoters": 1,
            "detractors": 1,
            "csat_responses": 1,
            "csat_satisfied": 1,
        },
        {
            "active_start": 2,
            "active_end": 2,
            "new_customers": 1,
            "churned_customers": 1,
            "churn_rate": 0.5,  # 1 / 2
            "retention_rate": 0.5,  # (2 - 1) / 2
            "orders": 4,
            "revenue": "119.99",
            "aov": "30.00",  # 29.9975
            "purchasing_customers": 3,
            "repeat_customers": 1,
            "repeat_purchase_rate": 0.3333333333333333,  # 1 / 3
            "purchase_frequency": 1.3333333333333333,  # 4 / 3
            "clv": "79.99",  # (119.99 / 3) / (1 / 2) = 79.99333...
            "clicks": 2,
            "converted_clicks": 1,
            "conversion_rate": 0.5,
            "spend": "1.60",
            "cac": "1.60",  # 1.60 / 1
            "attributed_revenue": "29.99",
            "roas": 18.74375,  # 29.99 / 1.60
            # exact clv 79.99333... / cac 1.60, not the rounded "79.99" / "1.60" = 49.99375
            "ltv_cac_ratio": 49.99583333333333,
            "nps_responses": 2,
            "promoters": 1,
            "passives": 0,
            "detractors": 1,
            "nps": 0.0,  # 100 x (1 - 1) / 2
            "csat_responses": 1,
            "csat_satisfied": 1,
            "csat": 100.0,
        },
    ),
    case(
        "worked_example_region_EU",
        {
            "active_start": 1,
            "active_end": 2,
            "new_customers": 1,
            "orders": 3,
            "revenue_micros": usd("69.99"),
            "purchasing_customers": 2,
            "repeat_customers": 1,
            "clicks": 2,
            "spend_micros": usd("1.60"),
            "converted_clicks": 1,
            "attributed_revenue_micros": usd("29.99"),
            "nps_responses": 2,
            "promoters": 1,
            "detractors": 1,
            "csat_responses": 1,
            "csat_satisfied": 1,
        },
        {
            "active_start": 1,
            "active_end": 2,
            "new_customers": 1,
            "churned_customers": 0,
            "churn_rate": 0.0,  # 0 / 1: zero, not null
            "retention_rate": 1.0,  # (2 - 1) / 1
            "orders": 3,
            "revenue": "69.99",
            "aov": "23.33",  # 23.33
            "purchasing_customers": 2,
            "repeat_customers": 1,
            "repeat_purchase_rate": 0.5,
            "purchase_frequency": 1.5,
            "clv": None,  # nobody churned: unbounded lifetime
            "clicks": 2,
            "converted_clicks": 1,
            "conversion_rate": 0.5,
            "spend": "1.60",
            "cac": "1.60",
            "attributed_revenue": "29.99",
            "roas": 18.74375,
            "ltv_cac_ratio": None,  # clv is null
            "nps_responses": 2,
            "promoters": 1,
            "passives": 0,
            "detractors": 1,
            "nps": 0.0,
            "csat_responses": 1,
            "csat_satisfied": 1,
            "csat": 100.0,
        },
    ),
    case(
        "worked_example_region_US",
        {
            "active_start": 1,
            "churned_customers": 1,
            "orders": 1,
            "revenue_micros": usd("50.00"),
            "purchasing_customers": 1,
        },
        {
            "active_start": 1,
            "active_end": 0,
            "new_customers": 0,
            "churned_customers": 1,
            "churn_rate": 1.0,
            "retention_rate": 0.0,  # (0 - 0) / 1
            "orders": 1,
            "revenue": "50.00",
            "aov": "50.00",
            "purchasing_customers": 1,
            "repeat_customers": 0,
            "repeat_purchase_rate": 0.0,
            "purchase_frequency": 1.0,
            "clv": "50.00",  # (50 / 1) / (1 / 1)
            "clicks": 0,
            "converted_clicks": 0,
            "conversion_rate": None,
            "spend": "0.00",
            "cac": None,
            "attributed_revenue": "0.00",
            "roas": None,
            "ltv_cac_ratio": None,  # cac is null: no new customers
            "nps_responses": 0,
            "promoters": 0,
            "passives": 0,
            "detractors": 0,
            "nps": None,
            "csat_responses": 0,
            "csat_satisfied": 0,
            "csat": None,
        },
    ),
    case(
        "worked_example_campaign_spring",
        {
            "new_customers": 1,
            "clicks": 2,
            "spend_micros": usd("1.60"),
            "converted_clicks": 1,
            "attributed_revenue_micros": usd("29.99"),
        },
        {
            "clicks": 2,
            "converted_clicks": 1,
            "conversion_rate": 0.5,
            "spend": "1.60",
            "new_customers": 1,
            "cac": "1.60",
            "attributed_revenue": "29.99",
            "roas": 18.74375,
        },
        kind="campaign",
    ),
    # -- campaign segments carry the campaign KPIs only, whatever else the counts hold ---------
    case(
        "campaign_ignores_segment_counts",
        {
            "active_start": 7,
            "active_end": 9,
            "churned_customers": 2,
            "orders": 5,
            "revenue_micros": usd("100.00"),
            "purchasing_customers": 4,
            "nps_responses": 3,
            "promoters": 3,
            "csat_responses": 1,
            "new_customers": 3,
            "clicks": 4,
            "spend_micros": usd("2.00"),
            "converted_clicks": 1,
            "attributed_revenue_micros": usd("50.00"),
        },
        {
            "clicks": 4,
            "converted_clicks": 1,
            "conversion_rate": 0.25,
            "spend": "2.00",
            "new_customers": 3,
            "cac": "0.67",  # 2.00 / 3 = 0.666...
            "attributed_revenue": "50.00",
            "roas": 25.0,  # 50 / 2
        },
        kind="campaign",
    ),
    # -- customers: S = 0 makes churn, retention and clv null ---------------------------------
    case(
        "no_starting_customers",
        {
            "new_customers": 1,
            "churned_customers": 1,
            "orders": 1,
            "revenue_micros": usd("10.00"),
            "purchasing_customers": 1,
        },
        {
            "active_start": 0,
            "active_end": 0,
            "churn_rate": None,
            "retention_rate": None,
            "clv": None,  # buyers and churn, but S = 0
            "aov": "10.00",
        },
    ),
    case(
        "nobody_churned",
        {
            "active_start": 4,
            "active_end": 4,
            "orders": 2,
            "revenue_micros": usd("30.00"),
            "purchasing_customers": 2,
        },
        {
            "churn_rate": 0.0,
            "retention_rate": 1.0,  # (4 - 0) / 4
            "clv": None,  # churn rate 0
        },
    ),
    case(
        "everybody_churned",
        {"active_start": 2, "churned_customers": 2},
        {"churn_rate": 1.0, "retention_rate": 0.0, "clv": None},  # clv: no buyers
    ),
    case(
        "retention_discounts_new_customers",
        {"active_start": 4, "active_end": 6, "new_customers": 3, "churned_customers": 1},
        {"churn_rate": 0.25, "retention_rate": 0.75},  # (6 - 3) / 4
    ),
    case(
        "retention_is_the_plain_formula_not_clamped",
        # S=1, two newcomers, both leave: E = 1 + 2 - 2 = 1
        {"active_start": 1, "active_end": 1, "new_customers": 2, "churned_customers": 2},
        {"churn_rate": 2.0, "retention_rate": -1.0},  # (1 - 2) / 1
    ),
    # -- purchases ------------------------------------------------------------------------------
    case(
        "no_orders",
        {"active_start": 3, "active_end": 2, "churned_customers": 1},
        {
            "orders": 0,
            "revenue": "0.00",
            "aov": None,
            "purchasing_customers": 0,
            "repeat_customers": 0,
            "repeat_purchase_rate": None,
            "purchase_frequency": None,
            "clv": None,  # churn rate 1/3 but no buyers
        },
    ),
    case(
        "one_order_one_buyer",
        {"orders": 1, "revenue_micros": usd("19.99"), "purchasing_customers": 1},
        {
            "revenue": "19.99",
            "aov": "19.99",
            "repeat_purchase_rate": 0.0,
            "purchase_frequency": 1.0,
        },
    ),
    case(
        "every_buyer_repeats",
        {
            "orders": 6,
            "revenue_micros": usd("60.00"),
            "purchasing_customers": 2,
            "repeat_customers": 2,
        },
        {"aov": "10.00", "repeat_purchase_rate": 1.0, "purchase_frequency": 3.0},
    ),
    case(
        "clv_basic",
        {
            "active_start": 10,
            "active_end": 8,
            "churned_customers": 2,
            "orders": 4,
            "revenue_micros": usd("300.00"),
            "purchasing_customers": 3,
        },
        {"clv": "500.00", "churn_rate": 0.2},  # (300 / 3) / (2 / 10) = 100 x 5
    ),
    case(
        "clv_gross_margin_exact_not_float",
        {
            "active_start": 2,
            "active_end": 1,
            "churned_customers": 1,
            "orders": 3,
            "revenue_micros": usd("100.00"),
            "purchasing_customers": 3,
        },
        {"clv": "20.00"},  # (100 / 3) / (1 / 2) x 0.3 = 20 exactly
        gross_margin="0.3",
    ),
    case(
        "clv_gross_margin_half_even",
        {
            "active_start": 1,
            "churned_customers": 1,
            "orders": 1,
            "revenue_micros": usd("1.25"),
            "purchasing_customers": 1,
        },
        {"clv": "0.62"},  # 1.25 / 1 x 0.5 = 0.625 -> even cent
        gross_margin="0.5",
    ),
    # -- ltv_cac_ratio: exact clv / exact cac, a JSON number --------------------------------------
    case(
        "ltv_cac_exact_both_sides",
        {
            "active_start": 3,
            "churned_customers": 1,
            "new_customers": 3,
            "orders": 3,
            "revenue_micros": usd("10.00"),
            "purchasing_customers": 3,
            "spend_micros": usd("1.00"),
        },
        # clv = (10 / 3) / (1 / 3) = 10.00; cac = 1 / 3 = 0.333... ("0.33"): 10 / (1/3) = 30,
        # where the rounded strings would give 10.00 / 0.33 = 30.3030...
        {"clv": "10.00", "cac": "0.33", "ltv_cac_ratio": 30.0},
    ),
    case(
        "ltv_cac_with_gross_margin",
        {
            "active_start": 2,
            "churned_customers": 1,
            "new_customers": 1,
            "orders": 1,
            "revenue_micros": usd("100.00"),
            "purchasing_customers": 1,
            "spend_micros": usd("8.00"),
        },
        {"clv": "50.00", "cac": "8.00", "ltv_cac_ratio": 6.25},  # 100 x 2 x 0.25 / 8
        gross_margin="0.25",
    ),
    case(
        "ltv_cac_null_when_cac_is_zero",
        {
            "active_start": 1,
            "churned_customers": 1,
            "new_customers": 2,
            "orders": 1,
            "revenue_micros": usd("5.00"),
            "purchasing_customers": 1,
        },
        {"clv": "5.00", "cac": "0.00", "ltv_cac_ratio": None},  # free customers: no ratio
    ),
    case(
        "ltv_cac_null_when_clv_is_null",
        {
            "active_start": 4,
            "new_customers": 2,
            "spend_micros": usd("3.00"),
            "orders": 1,
            "revenue_micros": usd("9.00"),
            "purchasing_customers": 1,
        },
        {"clv": None, "cac": "1.50", "ltv_cac_ratio": None},  # C = 0: unbounded lifetime
    ),
    case(
        "ltv_cac_tiny_cac_is_not_rounded_to_zero",
        {
            "active_start": 1,
            "churned_customers": 1,
            "new_customers": 1000,
            "orders": 1,
            "revenue_micros": usd("1.00"),
            "purchasing_customers": 1,
            "spend_micros": usd("1.00"),
        },
        # cac = 0.001 is published "0.00", yet the ratio uses it: 1.00 / 0.001 = 1000
        {"clv": "1.00", "cac": "0.00", "ltv_cac_ratio": 1000.0},
    ),
    # -- money: half-even to 2 places (a tie goes to the even cent) ------------------------------
    case("revenue_tie_rounds_down_to_even", {"revenue_micros": usd("0.105")}, {"revenue": "0.10"}),
    case("revenue_tie_rounds_up_to_even", {"revenue_micros": usd("0.315")}, {"revenue": "0.32"}),
    case("revenue_tie_1_005", {"revenue_micros": usd("1.005")}, {"revenue": "1.00"}),
    case("revenue_tie_1_015", {"revenue_micros": usd("1.015")}, {"revenue": "1.02"}),
    case("revenue_tie_2_675_not_float", {"revenue_micros": usd("2.675")}, {"revenue": "2.68"}),
    case("revenue_half_cent_to_zero", {"revenue_micros": usd("0.005")}, {"revenue": "0.00"}),
    case("spend_just_below_tie", {"spend_micros": usd("0.004999")}, {"spend": "0.00"}),
    case("spend_just_above_tie", {"spend_micros": usd("0.005001")}, {"spend": "0.01"}),
    case("spend_tie", {"spend_micros": usd("0.125")}, {"spend": "0.12"}),
    case(
        "attributed_revenue_tie",
        {"attributed_revenue_micros": usd("0.135")},
        {"attributed_revenue": "0.14"},
    ),
    case(
        "aov_tie_down",
        {"orders": 2, "revenue_micros": usd("0.25"), "purchasing_customers": 1},
        {"aov": "0.12"},  # 0.125
    ),
    case(
        "aov_tie_up",
        {"orders": 2, "revenue_micros": usd("0.75"), "purchasing_customers": 1},
        {"aov": "0.38"},  # 0.375
    ),
    case(
        "aov_repeating_decimal",
        {"orders": 3, "revenue_micros": usd("20.00"), "purchasing_customers": 3},
        {"aov": "6.67", "purchase_frequency": 1.0},  # 6.666...
    ),
    case(
        "rounded_once_from_exact_sum",
        # three orders of 0.0049: revenue 0.0147 is rounded once, not 0.00 + 0.00 + 0.00
        {"orders": 3, "revenue_micros": usd("0.0147"), "purchasing_customers": 1},
        {"revenue": "0.01", "aov": "0.00"},  # aov 0.0049
    ),
    case(
        "cac_tie_up",
        {"new_customers": 2, "spend_micros": usd("0.35")},
        {"cac": "0.18"},  # 0.175
    ),
    case(
        "cac_tie_down",
        {"new_customers": 2, "spend_micros": usd("0.05")},
        {"cac": "0.02"},  # 0.025
    ),
    case(
        "clv_tie",
        {
            "active_start": 4,
            "churned_customers": 2,
            "orders": 1,
            "revenue_micros": usd("0.0625"),
            "purchasing_customers": 1,
        },
        {"clv": "0.12"},  # 0.0625 / (2 / 4) = 0.125
    ),
    # -- huge values stay exact ---------------------------------------------------------------
    case(
        "huge_revenue",
        {
            "orders": 1_000_000,
            "revenue_micros": 1_000_000 * usd("1000000000"),
            "purchasing_customers": 1_000_000,
        },
        {
            "orders": 1_000_000,
            "revenue": "1000000000000000.00",
            "aov": "1000000000.00",
            "purchase_frequency": 1.0,
        },
    ),
    case(
        "revenue_beyond_float_precision_tie",
        # 2**53 + 1 = 9007199254740993 has no float; .005 is a tie -> even cent
        {"orders": 1, "revenue_micros": usd("9007199254740993.005"), "purchasing_customers": 1},
        {"revenue": "9007199254740993.00", "aov": "9007199254740993.00"},
    ),
    case(
        "revenue_beyond_float_precision_tie_up",
        {"orders": 1, "revenue_micros": usd("9007199254740993.015"), "purchasing_customers": 1},
        {"revenue": "9007199254740993.02"},
    ),
    case(
        "max_amounts",
        # three purchases of the largest amount with 4 decimals
        {
            "orders": 3,
            "revenue_micros": 3 * usd("999999999.9999"),
            "purchasing_customers": 1,
            "repeat_customers": 1,
            "active_start": 7,
            "churned_customers": 3,
        },
        {
            "revenue": "3000000000.00",  # 2999999999.9997
            "aov": "1000000000.00",  # 999999999.9999
            "clv": "7000000000.00",  # 2999999999.9997 x 7 / 3 = 6999999999.9993
            "purchase_frequency": 3.0,
        },
    ),
    case(
        "huge_roas",
        {"attributed_revenue_micros": usd("1000000000000000"), "spend_micros": 1},
        {"roas": 1e21, "spend": "0.00", "attributed_revenue": "1000000000000000.00"},
    ),
    case(
        "huge_counts",
        {"active_start": 1_000_000_000, "churned_customers": 999_999_999, "active_end": 1},
        {"churn_rate": 0.999999999, "retention_rate": 1e-9, "active_start": 1_000_000_000},
    ),
    # -- clicks and campaigns -------------------------------------------------------------------
    case(
        "clicks_without_conversions",
        {"clicks": 5, "spend_micros": usd("2.50")},
        {"conversion_rate": 0.0, "roas": 0.0, "cac": None},  # no new customers
    ),
    case(
        "free_clicks_make_roas_null",
        {
            "clicks": 3,
            "converted_clicks": 1,
            "attributed_revenue_micros": usd("10.00"),
            "new_customers": 2,
        },
        {
            "conversion_rate": 0.3333333333333333,
            "spend": "0.00",
            "roas": None,  # spend 0
            "cac": "0.00",  # 0 / 2
            "attributed_revenue": "10.00",
        },
    ),
    case(
        "campaign_cac_null_without_acquisitions",
        {"clicks": 2, "spend_micros": usd("1.00"), "converted_clicks": 2},
        {"conversion_rate": 1.0, "cac": None, "roas": 0.0},
        kind="campaign",
    ),
    # -- surveys --------------------------------------------------------------------------------
    case(
        "nps_all_promoters",
        {"nps_responses": 3, "promoters": 3},
        {"nps": 100.0, "csat": None},
    ),
    case(
        "nps_all_detractors",
        {"nps_responses": 2, "detractors": 2},
        {"nps": -100.0},
    ),
    case(
        "nps_only_passives_is_zero_not_null",
        {"nps_responses": 4, "passives": 4},
        {"nps": 0.0, "promoters": 0, "passives": 4},
    ),
    case(
        "nps_thirds",
        {"nps_responses": 3, "promoters": 1, "passives": 2},
        {"nps": 33.333333333333336},  # 100 / 3
    ),
    case(
        "nps_negative",
        {"nps_responses": 4, "promoters": 1, "detractors": 3},
        {"nps": -50.0},  # 100 x (1 - 3) / 4
    ),
    case(
        "csat_three_of_four",
        {"csat_responses": 4, "csat_satisfied": 3},
        {"csat": 75.0, "nps": None},
    ),
    case(
        "csat_none_satisfied",
        {"csat_responses": 2},
        {"csat": 0.0, "csat_satisfied": 0},
    ),
    case(
        "csat_two_of_three",
        {"csat_responses": 3, "csat_satisfied": 2},
        {"csat": 66.66666666666667},
    ),
]


@pytest.mark.parametrize(("kind", "counts", "gross_margin", "expected"), TABLE)
def test_kpis_from_counts(
    kind: SegmentKind, counts: dict[str, int], gross_margin: str, expected: dict[str, KpiValue]
) -> None:
    assert set(counts) <= set(BASE_COUNTS), "typo in the table"
    contract = SEGMENT_KPIS if kind == "segment" else CAMPAIGN_KPIS
    assert set(expected) <= set(contract), "the table expects a KPI the segment does not carry"
    full = {name: counts.get(name, 0) for name in BASE_COUNTS}

    actual = derive_kpis(full, kind, Decimal(gross_margin))

    assert sorted(actual) == sorted(contract)
    for name, want in expected.items():
        got = actual[name]
        if want is None:
            assert got is None, (name, got)
        elif name in MONEY_KPIS:
            assert isinstance(got, str), (name, got)
            assert got == want, name
        elif name in RATIO_KPIS:
            assert isinstance(got, float), (name, got)
            assert got == pytest.approx(want, rel=1e-12, abs=0), name
        else:
            assert type(got) is int, (name, got)
            assert got == want, name
    # Counts not named in a row are published as they are.
    for name in contract:
        if name in BASE_COUNTS and name not in expected:
            assert actual[name] == full[name], name


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("0.000001", 1, id="one_micro"),
        pytest.param("19.99", 19_990_000, id="cents"),
        pytest.param("999999999.9999", 999_999_999_999_900, id="largest_amount"),
        pytest.param("1E+3", 1_000_000_000, id="exponent_notation"),
        pytest.param("1.1234560", 1_123_456, id="trailing_zero_beyond_6_places"),
        pytest.param("0.0000001", ValueError, id="seven_places"),
        pytest.param("1.1234567", ValueError, id="seven_places_with_units"),
        pytest.param("1E-7", ValueError, id="seven_places_exponent"),
    ],
)
def test_to_micros(amount: str, expected: int | type[Exception]) -> None:
    if isinstance(expected, int):
        got = to_micros(Decimal(amount))
        assert type(got) is int
        assert got == expected
    else:
        with pytest.raises(expected, match="more than 6 decimal places"):
            to_micros(Decimal(amount))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="null"),
        pytest.param("0", "0.00", id="zero"),
        pytest.param("0.125", "0.12", id="tie_down"),
        pytest.param("0.135", "0.14", id="tie_up"),
        pytest.param("0.12500001", "0.13", id="above_tie"),
        pytest.param("1204.5", "1204.50", id="pads_to_two_places"),
        pytest.param("123456789012345678901234567.895", "123456789012345678901234567.90", id="big"),
    ],
)
def test_money(value: str | None, expected: str | None) -> None:
    assert money(None if value is None else Decimal(value)) == expected


@pytest.mark.parametrize(
    ("numerator", "denominator", "scale", "expected"),
    [
        pytest.param(0, 0, 1, None, id="zero_over_zero"),
        pytest.param(5, 0, 100, None, id="nonzero_over_zero"),
        pytest.param(0, 7, 1, 0.0, id="zero_numerator"),
        pytest.param(1, 3, 100, 33.333333333333336, id="scaled"),
        pytest.param(-2, 4, 100, -50.0, id="negative"),
    ],
)
def test_ratio(numerator: int, denominator: int, scale: int, expected: float | None) -> None:
    got = ratio(numerator, denominator, scale)
    if expected is None:
        assert got is None
    else:
        assert isinstance(got, float)
        assert got == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("segment", "kind"),
    [
        ("all", "segment"),
        ("region:EU", "segment"),
        ("region:unknown", "segment"),
        ("campaign:spring", "campaign"),
        ("campaign:region:EU", "campaign"),
    ],
)
def test_segment_kind(segment: str, kind: str) -> None:
    assert segment_kind(segment) == kind
