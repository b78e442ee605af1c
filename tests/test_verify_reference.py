"""The batch reference against small hand-computed scenarios, and the worked example of the docs."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from schemas import EventType
from stream_app.eventlog import LogRecord
from stream_app.kpis.formulas import BASE_COUNTS
from stream_app.kpis.registry import derive_kpis
from stream_app.settings import DEFAULT_WINDOWS, Settings
from stream_app.verify.reference import (
    Reference,
    Window,
    current_window,
    epoch_us,
    filter_records,
    reference_from_intake,
)

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MS = timedelta(milliseconds=1)
WEEK = timedelta(days=7)  # the default attribution window


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    for name in list(os.environ):
        if name.startswith("KPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def make_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


# ---------------------------------------------------------------------------------------------
# Building logs


def record(
    event_type: EventType, customer: str, event_id: str, at: timedelta, **fields: Any
) -> LogRecord:
    """A log record for ``customer`` at ``T0 + at``."""
    moment = T0 + at
    value = {
        "event_id": event_id,
        "customer_id": customer,
        "occurred_at": moment.isoformat(timespec="microseconds"),
        **fields,
    }
    return LogRecord(event_type, customer.encode(), json.dumps(value).encode())


def signup(
    customer: str,
    event_id: str,
    at: timedelta,
    region: str | None = None,
    campaign: str | None = None,
) -> LogRecord:
    fields: dict[str, Any] = {}
    if region is not None:
        fields["region"] = region
    if campaign is not None:
        fields["campaign_id"] = campaign
    return record("signup", customer, event_id, at, **fields)


def cancel(customer: str, event_id: str, at: timedelta) -> LogRecord:
    return record("cancellation", customer, event_id, at)


def purchase(customer: str, event_id: str, at: timedelta, amount: str = "10.00") -> LogRecord:
    return record(
        "purchase", customer, event_id, at, order_id=f"o-{event_id}", amount=amount, currency="USD"
    )


def click(
    customer: str, event_id: str, at: timedelta, campaign: str = "spring", cost: str = "0.50"
) -> LogRecord:
    return record("campaign_click", customer, event_id, at, campaign_id=campaign, cost=cost)


def survey(customer: str, event_id: str, at: timedelta, kind: str, score: int) -> LogRecord:
    return record("survey", customer, event_id, at, survey_type=kind, score=score)


def build(records: list[LogRecord], **overrides: Any) -> Reference:
    settings = make_settings(**overrides)
    return reference_from_intake(filter_records(records, settings), settings)


def ms(at: timedelta) -> int:
    return epoch_us(T0 + at) // 1000


def counts(**nonzero: int) -> dict[str, int]:
    """Every base count, zero unless given."""
    unknown = set(nonzero) - set(BASE_COUNTS)
    assert not unknown, unknown
    return {name: nonzero.get(name, 0) for name in BASE_COUNTS}


# ---------------------------------------------------------------------------------------------
# Hand-computed scenarios: (events, segment, window [start, end) as offsets from T0, counts)

W = (1 * HOUR, 2 * HOUR)  # the window most scenarios look at

SCENARIOS: list[Any] = [
    pytest.param(
        [signup("c1", "e1", 70 * MINUTE, "EU"), signup("c1", "e2", 80 * MINUTE, "US")],
        "all",
        W,
        counts(new_customers=1, active_end=1),
        id="signup-twice-second-ignored",
    ),
    pytest.param(
        [signup("c1", "e1", 70 * MINUTE, "EU"), signup("c1", "e2", 80 * MINUTE, "US")],
        "region:US",
        W,
        counts(),
        id="signup-twice-region-of-first-kept",
    ),
    pytest.param(
        [cancel("c1", "e1", 70 * MINUTE)],
        "all",
        W,
        counts(ignored_cancellations=1),
        id="cancel-of-unknown-customer-ignored",
    ),
    pytest.param(
        [cancel("c1", "e1", 70 * MINUTE)],
        "region:unknown",
        W,
        counts(ignored_cancellations=1),
        id="cancel-of-unknown-customer-no-churn-in-unknown",
    ),
    pytest.param(
        [
            signup("c1", "e1", 30 * MINUTE, "EU"),
            cancel("c1", "e2", 70 * MINUTE),
            signup("c1", "e3", 80 * MINUTE, "US"),
            purchase("c1", "e4", 90 * MINUTE, "12.50"),
        ],
        "all",
        W,
        counts(
            active_start=1,
            active_end=1,
            new_customers=1,
            churned_customers=1,
            orders=1,
            revenue_micros=12_500_000,
            purchasing_customers=1,
        ),
        id="reactivation-all",
    ),
    pytest.param(
        [
            signup("c1", "e1", 30 * MINUTE, "EU"),
            cancel("c1", "e2", 70 * MINUTE),
            signup("c1", "e3", 80 * MINUTE, "US"),
            purchase("c1", "e4", 90 * MINUTE, "12.50"),
        ],
        "region:EU",
        W,
        counts(active_start=1, churned_customers=1),
        id="reactivation-old-region-loses-customer",
    ),
    pytest.param(
        [
            signup("c1", "e1", 30 * MINUTE, "EU"),
            cancel("c1", "e2", 70 * MINUTE),
            signup("c1", "e3", 80 * MINUTE, "US"),
            purchase("c1", "e4", 90 * MINUTE, "12.50"),
        ],
        "region:US",
        W,
        counts(
            active_end=1,
            new_customers=1,
            orders=1,
            revenue_micros=12_500_000,
            purchasing_customers=1,
        ),
        id="reactivation-new-region-gains-customer-and-purchase",
    ),
    pytest.param(
        [
            signup("c1", "e1", 30 * MINUTE, "EU"),
            cancel("c1", "e2", 70 * MINUTE),
            purchase("c1", "e3", 80 * MINUTE),
        ],
        "region:EU",
        W,
        counts(
            active_start=1,
            churned_customers=1,
            orders=1,
            revenue_micros=10_000_000,
            purchasing_customers=1,
        ),
        id="region-kept-after-cancellation",
    ),
    pytest.param(
        [purchase("c1", "e1", 1 * HOUR)],
        "all",
        W,
        counts(orders=1, revenue_micros=10_000_000, purchasing_customers=1),
        id="event-exactly-at-start-counts",
    ),
    pytest.param(
        [purchase("c1", "e1", 2 * HOUR), purchase("c2", "e2", 2 * HOUR - MS)],
        "all",
        W,
        counts(orders=1, revenue_micros=10_000_000, purchasing_customers=1),
        id="event-exactly-at-end-does-not-count",
    ),
    pytest.param(
        [
            # c1 cancels exactly at start: active before it (S), churned in W, gone at end.
            signup("c1", "e1", 30 * MINUTE),
            cancel("c1", "e2", 1 * HOUR),
            # c2 signs up exactly at start: new in W, not in S.
            signup("c2", "e3", 1 * HOUR),
            # c3 cancels exactly at end: still active at end (E), no churn in W.
            signup("c3", "e4", 10 * MINUTE),
            cancel("c3", "e5", 2 * HOUR),
            # c4 signs up exactly at end: neither new in W nor in E.
            signup("c4", "e6", 2 * HOUR),
        ],
        "all",
        W,
        counts(active_start=2, active_end=2, new_customers=1, churned_customers=1),
        id="active-start-and-end-at-boundaries",
    ),
    pytest.param(
        [
            signup("c1", "e1", 0 * HOUR, "EU"),
            cancel("c1", "e2", 1 * HOUR),
            signup("c1", "e3", 1 * HOUR, "US"),
        ],
        "all",
        W,
        # Same instant: the signup (rank 0) applies before the cancellation (rank 4), so it is
        # ignored (already active) and the cancellation churns the customer.
        counts(active_start=1, churned_customers=1),
        id="same-instant-signup-before-cancellation",
    ),
    pytest.param(
        [click("c1", "e1", 70 * MINUTE), purchase("c1", "e2", 70 * MINUTE + WEEK, "20.00")],
        "campaign:spring",
        W,
        counts(
            clicks=1,
            spend_micros=500_000,
            converted_clicks=1,
            attributed_revenue_micros=20_000_000,
        ),
        id="purchase-exactly-at-attribution-limit-converts",
    ),
    pytest.param(
        [click("c1", "e1", 70 * MINUTE), purchase("c1", "e2", 70 * MINUTE + WEEK + MS, "20.00")],
        "campaign:spring",
        W,
        counts(clicks=1, spend_micros=500_000),
        id="purchase-1ms-after-attribution-limit-does-not",
    ),
    pytest.param(
        [click("c1", "e1", 70 * MINUTE), purchase("c1", "e2", 70 * MINUTE + WEEK + MS, "20.00")],
        "all",
        W,
        counts(clicks=1, spend_micros=500_000),
        id="late-conversion-not-in-all-either",
    ),
    pytest.param(
        [purchase("c1", "e1", 65 * MINUTE), click("c1", "e2", 70 * MINUTE)],
        "all",
        W,
        counts(
            orders=1,
            revenue_micros=10_000_000,
            purchasing_customers=1,
            clicks=1,
            spend_micros=500_000,
        ),
        id="purchase-before-click-does-not-convert",
    ),
    pytest.param(
        [purchase("c1", "e1", 70 * MINUTE, "7.00"), click("c1", "e2", 70 * MINUTE)],
        "campaign:spring",
        W,
        # Same instant: the click (rank 1) applies before the purchase (rank 2).
        counts(
            clicks=1, spend_micros=500_000, converted_clicks=1, attributed_revenue_micros=7_000_000
        ),
        id="same-instant-click-then-purchase-converts",
    ),
    pytest.param(
        [
            click("c1", "e1", 70 * MINUTE),
            purchase("c1", "e2", 80 * MINUTE, "10.00"),
            purchase("c1", "e3", 90 * MINUTE, "30.00"),
        ],
        "all",
        W,
        counts(
            orders=2,
            revenue_micros=40_000_000,
            purchasing_customers=1,
            repeat_customers=1,
            clicks=1,
            spend_micros=500_000,
            converted_clicks=1,
            attributed_revenue_micros=10_000_000,
        ),
        id="second-purchase-does-not-reconvert",
    ),
    pytest.param(
        [
            click("c1", "e1", 65 * MINUTE, campaign="autumn"),
            click("c1", "e2", 70 * MINUTE, campaign="spring"),
            purchase("c1", "e3", 80 * MINUTE),
        ],
        "campaign:autumn",
        W,
        counts(clicks=1, spend_micros=500_000),
        id="only-the-latest-click-converts",
    ),
    pytest.param(
        [
            click("c1", "e1", 30 * MINUTE),
            signup("c1", "e2", 40 * MINUTE, "EU"),
            purchase("c1", "e3", 70 * MINUTE, "5.00"),
        ],
        "region:unknown",
        (0 * HOUR, 1 * HOUR),
        # The conversion counts at the click, in the click's segment region.
        counts(
            clicks=1, spend_micros=500_000, converted_clicks=1, attributed_revenue_micros=5_000_000
        ),
        id="conversion-in-click-window-and-click-region",
    ),
    pytest.param(
        [
            click("c1", "e1", 30 * MINUTE),
            signup("c1", "e2", 40 * MINUTE, "EU"),
            purchase("c1", "e3", 70 * MINUTE, "5.00"),
        ],
        "region:EU",
        W,
        counts(
            active_start=1, active_end=1, orders=1, revenue_micros=5_000_000, purchasing_customers=1
        ),
        id="purchase-in-its-own-window-and-region",
    ),
    pytest.param(
        [
            purchase("c1", "e1", 70 * MINUTE, "10.00"),
            purchase("c1", "e1", 80 * MINUTE, "99.00"),
            purchase("c2", "e1", 90 * MINUTE, "1.00"),
        ],
        "all",
        W,
        # The same event id of another customer is another event.
        counts(orders=2, revenue_micros=11_000_000, purchasing_customers=2),
        id="duplicate-event-id-first-wins",
    ),
    pytest.param(
        [
            purchase("c1", "e1", 40 * DAY),
            purchase("c2", "e2", 70 * MINUTE, "1.00"),
            purchase("c3", "e3", 9 * DAY + 70 * MINUTE, "2.00"),
        ],
        "all",
        (9 * DAY + HOUR, 9 * DAY + 2 * HOUR),
        counts(orders=1, revenue_micros=2_000_000, purchasing_customers=1),
        id="too-late-event-excluded",
    ),
    pytest.param(
        [
            purchase("c1", "e1", 40 * DAY),
            purchase("c2", "e2", 70 * MINUTE, "1.00"),
        ],
        "all",
        W,
        counts(),
        id="too-late-event-not-even-in-its-own-window",
    ),
    pytest.param(
        [purchase("c1", "e1", 70 * MINUTE), signup("c2", "e2", 80 * MINUTE)],
        "region:unknown",
        W,
        counts(
            orders=1,
            revenue_micros=10_000_000,
            purchasing_customers=1,
            new_customers=1,
            active_end=1,
        ),
        id="unknown-region",
    ),
    pytest.param(
        [
            signup("c1", "e1", 65 * MINUTE, "EU", campaign="spring"),
            signup("c2", "e2", 66 * MINUTE, "EU"),
            click("c2", "e3", 70 * MINUTE, cost="1.50"),
            click("c3", "e4", 75 * MINUTE, cost="1.50"),
        ],
        "campaign:spring",
        W,
        counts(new_customers=1, clicks=2, spend_micros=3_000_000),
        id="campaign-new-customers-by-acquisition",
    ),
    pytest.param(
        [
            purchase("c1", "e1", 61 * MINUTE),
            purchase("c1", "e2", 62 * MINUTE),
            purchase("c2", "e3", 63 * MINUTE),
            purchase("c3", "e4", 30 * MINUTE),
            purchase("c3", "e5", 64 * MINUTE),
            purchase("c3", "e6", 65 * MINUTE),
            purchase("c3", "e7", 66 * MINUTE),
            purchase("c4", "e8", 119 * MINUTE),
            purchase("c4", "e9", 121 * MINUTE),
        ],
        "all",
        W,
        counts(
            orders=7,
            revenue_micros=70_000_000,
            purchasing_customers=4,
            repeat_customers=2,
        ),
        id="distinct-and-repeat-customers",
    ),
    pytest.param(
        [
            signup("c1", "e0", 0 * HOUR, "EU"),
            survey("c1", "e1", 61 * MINUTE, "nps", 10),
            survey("c1", "e2", 62 * MINUTE, "nps", 9),
            survey("c1", "e3", 63 * MINUTE, "nps", 8),
            survey("c1", "e4", 64 * MINUTE, "nps", 7),
            survey("c1", "e5", 65 * MINUTE, "nps", 6),
            survey("c1", "e6", 66 * MINUTE, "nps", 0),
            survey("c1", "e7", 67 * MINUTE, "csat", 5),
            survey("c1", "e8", 68 * MINUTE, "csat", 4),
            survey("c1", "e9", 69 * MINUTE, "csat", 3),
        ],
        "region:EU",
        W,
        counts(
            active_start=1,
            active_end=1,
            nps_responses=6,
            promoters=2,
            passives=2,
            detractors=2,
            csat_responses=3,
            csat_satisfied=2,
        ),
        id="surveys",
    ),
]


@pytest.mark.parametrize(("events", "segment", "window", "expected"), SCENARIOS)
def test_counts(
    events: list[LogRecord],
    segment: str,
    window: tuple[timedelta, timedelta],
    expected: dict[str, int],
) -> None:
    reference = build(events)
    start, end = window
    assert reference.counts_for(segment, ms(start), ms(end)) == expected


# ---------------------------------------------------------------------------------------------
# Published values and nulls, through the shared formulas


def test_campaign_cac_and_roas() -> None:
    reference = build(
        [
            signup("c1", "e1", 65 * MINUTE, "EU", campaign="spring"),
            signup("c2", "e2", 66 * MINUTE, "EU", campaign="spring"),
            click("c3", "e3", 70 * MINUTE, cost="1.25"),
            click("c4", "e4", 71 * MINUTE, cost="1.25"),
            click("c5", "e5", 72 * MINUTE, cost="1.00"),
            purchase("c5", "e6", 80 * MINUTE, "35.00"),
        ]
    )
    assert reference.expected_kpis("campaign:spring", ms(W[0]), ms(W[1])) == {
        "clicks": 3,
        "converted_clicks": 1,
        "conversion_rate": 1 / 3,
        "spend": "3.50",
        "new_customers": 2,
        "cac": "1.75",
        "attributed_revenue": "35.00",
        "roas": 10.0,
    }


def test_nulls_when_denominators_are_zero() -> None:
    reference = build([survey("c1", "e1", 70 * MINUTE, "nps", 9)])
    kpis = reference.expected_kpis("all", ms(W[0]), ms(W[1]))
    for name in (
        "churn_rate",  # S = 0
        "retention_rate",  # S = 0
        "aov",  # no orders
        "repeat_purchase_rate",  # nobody purchased
        "purchase_frequency",
        "clv",
        "conversion_rate",  # no clicks
        "cac",  # no new customers
        "roas",  # no spend
        "ltv_cac_ratio",  # no clv, no cac
        "csat",  # no CSAT responses
    ):
        assert kpis[name] is None, name
    assert kpis["revenue"] == "0.00"
    assert kpis["spend"] == "0.00"
    assert kpis["nps"] == 100.0


def test_clv_null_without_churn_and_exact_with_it() -> None:
    events = [
        signup("c1", "e1", 0 * HOUR),
        signup("c2", "e2", 0 * HOUR),
        signup("c3", "e3", 0 * HOUR),
        purchase("c1", "e4", 70 * MINUTE, "10.00"),
    ]
    no_churn = build(events).expected_kpis("all", ms(W[0]), ms(W[1]))
    assert (no_churn["churn_rate"], no_churn["clv"]) == (0.0, None)
    churn = build([*events, cancel("c2", "e5", 80 * MINUTE)])
    kpis = churn.expected_kpis("all", ms(W[0]), ms(W[1]))
    # (10.00 / 1) / (1 / 3) = 30.00, and 2 of 3 stayed with 0 new: retention 2/3.
    assert kpis["churn_rate"] == 1 / 3
    assert kpis["retention_rate"] == 2 / 3
    assert kpis["clv"] == "30.00"
    halved = build([*events, cancel("c2", "e5", 80 * MINUTE)], gross_margin=Decimal("0.5"))
    assert halved.expected_kpis("all", ms(W[0]), ms(W[1]))["clv"] == "15.00"


def test_ltv_cac_ratio_from_exact_clv_and_cac() -> None:
    events = [
        signup("c1", "e1", 0 * HOUR, "EU"),
        signup("c2", "e2", 0 * HOUR, "EU"),
        signup("c3", "e3", 0 * HOUR, "EU"),
        signup("c4", "e4", 65 * MINUTE, "EU", campaign="spring"),
        signup("c5", "e5", 66 * MINUTE, "EU", campaign="spring"),
        signup("c6", "e6", 67 * MINUTE, "EU", campaign="spring"),
        click("c4", "e7", 68 * MINUTE, cost="0.50"),
        purchase("c1", "e8", 70 * MINUTE, "10.00"),
        purchase("c2", "e9", 71 * MINUTE, "0.01"),
        cancel("c3", "e10", 80 * MINUTE),
    ]
    reference = build(events, gross_margin=Decimal("0.7"))
    kpis = reference.expected_kpis("all", ms(W[0]), ms(W[1]))
    # By hand, from the events: S = 3, C = 1, 2 buyers spent 10.01, 3 new customers cost 0.50.
    clv = Fraction(1001, 100) / 2 / Fraction(1, 3) * Fraction(7, 10)  # 10.5105
    cac = Fraction(50, 100) / 3  # 0.1666...
    assert (kpis["clv"], kpis["cac"]) == ("10.51", "0.17")
    assert kpis["ltv_cac_ratio"] == float(clv / cac)  # 63.063, not 10.51 / 0.17 = 61.82...
    assert reference.expected_kpis("region:EU", ms(W[0]), ms(W[1]))["ltv_cac_ratio"] == float(
        clv / cac
    )
    assert "ltv_cac_ratio" not in reference.expected_kpis("campaign:spring", ms(W[0]), ms(W[1]))
    no_spend = build(events[:6] + events[7:]).expected_kpis("all", ms(W[0]), ms(W[1]))
    assert (no_spend["cac"], no_spend["ltv_cac_ratio"]) == ("0.00", None)


def test_money_is_exact_and_rounded_half_even() -> None:
    # 0.105 three times would drift as floats; as micro-units the sum is exactly 0.315.
    reference = build(
        [purchase(f"c{i}", f"e{i}", 70 * MINUTE, "0.105") for i in range(3)]
        + [click("c9", "e9", 70 * MINUTE, cost="0.005")]
    )
    kpis = reference.expected_kpis("all", ms(W[0]), ms(W[1]))
    assert kpis["revenue"] == "0.32"  # 0.315 -> half-even -> 0.32
    assert kpis["aov"] == "0.10"  # 0.105 -> half-even -> 0.10
    assert kpis["spend"] == "0.00"  # 0.005 -> half-even -> 0.00


# ---------------------------------------------------------------------------------------------
# Intake, segments and windows


def test_intake_counts_each_exclusion() -> None:
    bad_currency = record(
        "purchase", "c1", "e2", 0 * HOUR, order_id="o", amount="1", currency="EUR"
    )
    records = [
        purchase("c1", "e1", 40 * DAY),
        bad_currency,
        LogRecord("signup", b"c1", b"{not json"),
        purchase("c1", "e3", 1 * HOUR),  # too late: older than 40d - 31d
        purchase("c1", "e1", 40 * DAY),  # duplicate
        purchase("c2", "e4", 39 * DAY),
    ]
    intake = filter_records(records, make_settings())
    assert intake.records_read == 6
    assert intake.accepted == 2
    assert intake.rejected == {"wrong_currency": 1, "invalid_json": 1}
    assert intake.too_late == 1
    assert intake.duplicates == 1
    assert intake.watermark == T0 + 40 * DAY


def test_too_late_event_does_not_move_the_watermark() -> None:
    settings = make_settings(max_lateness=timedelta(days=1))
    intake = filter_records(
        [purchase("c1", "e1", 10 * DAY), purchase("c1", "e2", 1 * DAY)], settings
    )
    assert (intake.too_late, intake.watermark) == (1, T0 + 10 * DAY)


def test_segments_that_exist() -> None:
    reference = build(
        [
            signup("c1", "e1", 0 * HOUR, "eu", campaign="spring"),
            click("c1", "e2", 1 * HOUR, campaign="autumn"),
            signup("c1", "e3", 2 * HOUR, "US", campaign="ignored"),  # c1 is active: ignored
            cancel("c2", "e4", 3 * HOUR),  # unknown customer: region unknown
        ],
        lifecycle_enabled=True,
    )
    assert reference.segments == {
        "all",
        "region:EU",
        "region:unknown",
        "campaign:spring",
        "campaign:autumn",
        # c2's first event leaves them inactive; c1 is new, then time alone moves them on
        # (active after 30 days, at risk after 45 days without a purchase, dormant at 120).
        "lifecycle:churned",
        "lifecycle:new",
        "lifecycle:active",
        "lifecycle:at_risk",
        "lifecycle:dormant",
    }


@pytest.mark.parametrize(
    ("watermark", "window", "start", "end"),
    [
        ("2026-11-02T09:17:30.500000+00:00", "1h", "2026-11-02T08:20:00", "2026-11-02T09:20:00"),
        # On a boundary: the window ends at the next one, strictly after the watermark.
        ("2026-11-02T09:20:00+00:00", "1h", "2026-11-02T08:25:00", "2026-11-02T09:25:00"),
        ("2026-11-02T09:17:30+00:00", "24h", "2026-11-01T10:00:00", "2026-11-02T10:00:00"),
        ("2026-11-02T09:17:30+00:00", "7d", "2026-10-26T10:00:00", "2026-11-02T10:00:00"),
        ("2026-11-02T09:17:30+00:00", "30d", "2026-10-04T00:00:00", "2026-11-03T00:00:00"),
    ],
)
def test_current_window(watermark: str, window: str, start: str, end: str) -> None:
    spec = next(spec for spec in DEFAULT_WINDOWS if spec.name == window)
    current = current_window(spec, datetime.fromisoformat(watermark))
    assert current.start == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert current.end == datetime.fromisoformat(end).replace(tzinfo=UTC)


def test_reference_snapshot_layout() -> None:
    reference = build([signup("c1", "e1", 70 * MINUTE, "EU", campaign="spring")])
    window = Window("1h", ms(W[0]), ms(W[1]))
    snapshot = reference.expected_snapshot(window, "campaign:spring", T0)
    assert list(snapshot)[:6] == [
        "window",
        "segment",
        "window_start",
        "window_end",
        "watermark",
        "updated_at",
    ]
    assert snapshot["window_start"] == "2026-11-02T01:00:00Z"
    assert snapshot["watermark"] == "2026-11-02T01:10:00Z"
    assert snapshot["new_customers"] == 1
    assert "active_start" not in snapshot


# ---------------------------------------------------------------------------------------------
# The worked example of docs/metrics.md, recomputed so the page cannot drift


def _doc_example() -> tuple[str, list[LogRecord], dict[str, dict[str, str]]]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    section = text.split("## Worked example", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```jsonl\n(.*?)```", section, re.S)
    assert block is not None, "the worked example needs a ```jsonl block of log lines"
    records = [LogRecord.from_line(line) for line in block.group(1).splitlines() if line.strip()]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[0] == "KPI"
    columns: dict[str, dict[str, str]] = {segment: {} for segment in header[1:]}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for segment, cell in zip(header[1:], cells[1:], strict=True):
            columns[segment][cells[0].strip("`")] = cell.strip("`")
    return section, records, columns


def test_docs_worked_example_matches_the_reference() -> None:
    section, records, columns = _doc_example()
    settings = make_settings()
    intake = filter_records(records, settings)
    reference = reference_from_intake(intake, settings)
    assert reference.watermark is not None
    prose = " ".join(section.split())  # line breaks may fall anywhere in the text
    window = current_window(
        next(s for s in settings.windows if s.name == "24h"), reference.watermark
    )
    for name, value in (
        ("window_start", window.start),
        ("window_end", window.end),
        ("watermark", reference.watermark),
    ):
        stamp = value.isoformat().replace("+00:00", "Z")
        assert f"`{name}` = `{stamp}`" in prose, name
    assert f"{intake.duplicates} duplicate" in prose
    for segment, shown in columns.items():
        assert segment in reference.segments
        expected = reference.expected_kpis(segment, window.start_ms, window.end_ms)
        published = {name: value for name, value in shown.items() if value != "n/a"}
        assert published == {name: json.dumps(value) for name, value in expected.items()}, segment
    # The page's table shows every segment but the lifecycle stages (their own section).
    assert set(columns) == {s for s in reference.segments if not s.startswith("lifecycle:")}


def test_derive_kpis_is_what_the_reference_publishes() -> None:
    # The reference owns the counting; the published values come from the shared formulas.
    reference = build([purchase("c1", "e1", 70 * MINUTE, "3.00")])
    counts_ = reference.counts_for("all", ms(W[0]), ms(W[1]))
    assert reference.expected_kpis("all", ms(W[0]), ms(W[1])) == derive_kpis(counts_, "segment")
