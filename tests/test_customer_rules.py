"""The customer rules (contract section 2, docs/metrics.md) as a table of small scenarios.

Each scenario is a few JSON events sent in batches, in the order written, to one
``PartitionState`` (the customer stage without Kafka), with a checkpoint after every batch.
The window sums the checkpoints hand downstream are rebuilt and compared, window by window,
with counts worked out by hand from the contract; the independent batch reference
(``stream_app/verify/reference.py``) must give the same counts from the same events.

Windows are whole UTC days (size = step = 1 day) so the hand counts stay readable: day ``d``
is ``[T0 + d days, T0 + d + 1 days)`` with ``T0`` = 2026-11-02T00:00:00Z. A count not listed
for a (segment, day) is 0; every segment and every day of the scenario's range is checked.

Order of a customer's events: docs/metrics.md ("Order of events") reads contract section 2 as
event-time order, and at the same instant signup, click, purchase, survey, cancellation. The
scenarios that send events out of that order test exactly this reading; the others send them
in time order so they hold under either reading.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from schemas import EventType
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.eventlog import LogRecord
from stream_app.kpis.formulas import BASE_COUNTS, counts_from_vector
from stream_app.kpis.windows import WIDTH, DiffArray
from stream_app.settings import Settings, WindowSpec
from stream_app.verify.reference import Reference, filter_records, reference_from_intake

T0 = datetime(2026, 11, 2, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
MS = timedelta(milliseconds=1)
SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SPEC = "1d"
TOPICS: dict[str, str] = {
    "signup": "crm.signups",
    "purchase": "crm.purchases",
    "cancellation": "crm.cancellations",
    "campaign_click": "crm.campaign-clicks",
    "survey": "crm.surveys",
}


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class Ev:
    kind: EventType
    customer: str
    event_id: str
    at: timedelta
    fields: tuple[tuple[str, Any], ...] = ()

    def value(self) -> bytes:
        occurred = (T0 + self.at).isoformat().replace("+00:00", "Z")
        body = {"event_id": self.event_id, "customer_id": self.customer, "occurred_at": occurred}
        body.update(dict(self.fields))
        return json.dumps(body).encode()


def signup(
    customer: str, event_id: str, at: timedelta, region: str | None = None, campaign: str = ""
) -> Ev:
    fields: dict[str, Any] = {}
    if region is not None:
        fields["region"] = region
    if campaign:
        fields["campaign_id"] = campaign
    return Ev("signup", customer, event_id, at, tuple(fields.items()))


def purchase(customer: str, event_id: str, at: timedelta, amount: str) -> Ev:
    fields = {"order_id": f"o-{event_id}", "amount": amount, "currency": "USD"}
    return Ev("purchase", customer, event_id, at, tuple(fields.items()))


def cancel(customer: str, event_id: str, at: timedelta) -> Ev:
    return Ev("cancellation", customer, event_id, at)


def click(
    customer: str, event_id: str, at: timedelta, campaign: str, cost: str | None = None
) -> Ev:
    fields: dict[str, Any] = {"campaign_id": campaign}
    if cost is not None:
        fields["cost"] = cost
    return Ev("campaign_click", customer, event_id, at, tuple(fields.items()))


def survey(customer: str, event_id: str, at: timedelta, kind: str, score: int) -> Ev:
    return Ev("survey", customer, event_id, at, (("survey_type", kind), ("score", score)))


def usd(amount: str) -> int:
    """Money in the base counts' unit, micro-USD."""
    micros = Decimal(amount) * 1_000_000
    assert micros == int(micros)
    return int(micros)


# ---------------------------------------------------------------------------------------------
# The table

Expected = dict[tuple[str, int], dict[str, int]]


@dataclass(frozen=True)
class Scenario:
    id: str
    batches: list[list[Ev]]
    expected: Expected
    days: range
    segments: frozenset[str]
    dead: list[tuple[str, str]] = field(default_factory=list)  # (reason, event_id)
    duplicates: int = 0
    # Why the engine is known to differ from the contract, if it does (xfail, strict).
    engine_counts_bug: str | None = None
    engine_segments_bug: str | None = None


def segs(*names: str) -> frozenset[str]:
    return frozenset(names)


SCENARIOS = [
    Scenario(
        "signup_twice_second_ignored",
        [
            [
                signup("ann", "s1", 0 * HOUR, region="eu", campaign="k1"),  # exactly at T0
                signup("ann", "s2", 2 * HOUR, region="US", campaign="k2"),  # active: ignored
                purchase("ann", "p1", 3 * HOUR, "10.00"),  # still in EU
            ]
        ],
        {
            ("all", 0): {"new_customers": 1, "active_end": 1, "orders": 1,
                         "revenue_micros": usd("10.00"), "purchasing_customers": 1},
            ("region:EU", 0): {"new_customers": 1, "active_end": 1, "orders": 1,
                               "revenue_micros": usd("10.00"), "purchasing_customers": 1},
            ("campaign:k1", 0): {"new_customers": 1},
            ("all", 1): {"active_start": 1, "active_end": 1},
            ("region:EU", 1): {"active_start": 1, "active_end": 1},
        },
        range(-1, 2),
        segs("all", "region:EU", "campaign:k1"),
    ),
    Scenario(
        "cancel_unknown_customer_ignored",
        [[cancel("bob", "c1", 5 * HOUR)]],
        {
            ("all", 0): {"ignored_cancellations": 1},
            ("region:unknown", 0): {"ignored_cancellations": 1},
        },
        range(-1, 2),
        # The cancellation is accepted and its segment region is `unknown` (metrics.md: "a
        # region [exists] as soon as it is the segment region of some event"); its count
        # (read by no KPI) is what makes those segments exist.
        segs("all", "region:unknown"),
    ),
    Scenario(
        "cancel_twice_second_ignored",
        [
            [
                signup("cat", "s1", 1 * HOUR, region="EU"),
                cancel("cat", "c1", 2 * HOUR),
                cancel("cat", "c2", 3 * HOUR),  # inactive: ignored
            ]
        ],
        {
            ("all", 0): {"new_customers": 1, "churned_customers": 1, "ignored_cancellations": 1},
            ("region:EU", 0): {"new_customers": 1, "churned_customers": 1,
                               "ignored_cancellations": 1},
        },
        range(-1, 2),
        segs("all", "region:EU"),
    ),
    Scenario(
        "reactivation_in_a_new_region",
        [
            [
                signup("dan", "s1", 1 * HOUR, region="EU", campaign="k1"),
                cancel("dan", "c1", 6 * HOUR),
                purchase("dan", "p1", 12 * HOUR, "20.00"),  # cancelled: still buys in EU
                signup("dan", "s2", 1 * DAY, region="US", campaign="k2"),  # new again
                purchase("dan", "p2", 1 * DAY + 1 * HOUR, "5.00"),
            ]
        ],
        {
            ("all", 0): {"new_customers": 1, "churned_customers": 1, "orders": 1,
                         "revenue_micros": usd("20.00"), "purchasing_customers": 1},
            ("region:EU", 0): {"new_customers": 1, "churned_customers": 1, "orders": 1,
                               "revenue_micros": usd("20.00"), "purchasing_customers": 1},
            ("campaign:k1", 0): {"new_customers": 1},
            ("all", 1): {"new_customers": 1, "active_end": 1, "orders": 1,
                         "revenue_micros": usd("5.00"), "purchasing_customers": 1},
            ("region:US", 1): {"new_customers": 1, "active_end": 1, "orders": 1,
                               "revenue_micros": usd("5.00"), "purchasing_customers": 1},
            ("campaign:k2", 1): {"new_customers": 1},
            ("all", 2): {"active_start": 1, "active_end": 1},
            ("region:US", 2): {"active_start": 1, "active_end": 1},
        },
        range(-1, 3),
        segs("all", "region:EU", "region:US", "campaign:k1", "campaign:k2"),
    ),
    Scenario(
        "purchase_before_signup_counts_in_unknown",
        [
            [
                purchase("eve", "p1", 1 * HOUR, "7.50"),  # no effective signup yet
                signup("eve", "s1", 2 * HOUR, region="EU"),
                purchase("eve", "p2", 3 * HOUR, "2.50"),
            ]
        ],
        {
            ("all", 0): {"new_customers": 1, "active_end": 1, "orders": 2,
                         "revenue_micros": usd("10.00"), "purchasing_customers": 1,
                         "repeat_customers": 1},
            ("region:unknown", 0): {"orders": 1, "revenue_micros": usd("7.50"),
                                    "purchasing_customers": 1},
            ("region:EU", 0): {"new_customers": 1, "active_end": 1, "orders": 1,
                               "revenue_micros": usd("2.50"), "purchasing_customers": 1},
            ("all", 1): {"active_start": 1, "active_end": 1},
            ("region:EU", 1): {"active_start": 1, "active_end": 1},
        },
        range(-1, 2),
        segs("all", "region:unknown", "region:EU"),
    ),
    Scenario(
        "same_instant_signup_then_purchase_then_cancellation",
        [
            [
                cancel("fay", "a1", 1 * HOUR),
                purchase("fay", "b1", 1 * HOUR, "3.00"),
                signup("fay", "c1", 1 * HOUR, region="EU"),
            ]
        ],
        {
            ("all", 0): {"new_customers": 1, "churned_customers": 1, "orders": 1,
                         "revenue_micros": usd("3.00"), "purchasing_customers": 1},
            ("region:EU", 0): {"new_customers": 1, "churned_customers": 1, "orders": 1,
                               "revenue_micros": usd("3.00"), "purchasing_customers": 1},
        },
        range(-1, 2),
        segs("all", "region:EU"),
    ),
    Scenario(
        "purchase_exactly_7_days_after_click_converts",
        [
            [
                click("gus", "k", 2 * HOUR, "k1", "0.50"),
                purchase("gus", "p", 7 * DAY + 2 * HOUR, "40.00"),
            ]
        ],
        {
            # The conversion counts in the click's window (day 0), the order in day 7.
            ("all", 0): {"clicks": 1, "spend_micros": usd("0.50"), "converted_clicks": 1,
                         "attributed_revenue_micros": usd("40.00")},
            ("region:unknown", 0): {"clicks": 1, "spend_micros": usd("0.50"),
                                    "converted_clicks": 1,
                                    "attributed_revenue_micros": usd("40.00")},
            ("campaign:k1", 0): {"clicks": 1, "spend_micros": usd("0.50"),
                                 "converted_clicks": 1,
                                 "attributed_revenue_micros": usd("40.00")},
            ("all", 7): {"orders": 1, "revenue_micros": usd("40.00"),
                         "purchasing_customers": 1},
            ("region:unknown", 7): {"orders": 1, "revenue_micros": usd("40.00"),
                                    "purchasing_customers": 1},
        },
        range(-1, 9),
        segs("all", "region:unknown", "campaign:k1"),
    ),
    Scenario(
        "purchase_7_days_and_1_second_after_click_does_not_convert",
        [
            [
                click("gus", "k", 2 * HOUR, "k1", "0.50"),
                purchase("gus", "p", 7 * DAY + 2 * HOUR + SECOND, "40.00"),
            ]
        ],
        {
            ("all", 0): {"clicks": 1, "spend_micros": usd("0.50")},
            ("region:unknown", 0): {"clicks": 1, "spend_micros": usd("0.50")},
            ("campaign:k1", 0): {"clicks": 1, "spend_micros": usd("0.50")},
            ("all", 7): {"orders": 1, "revenue_micros": usd("40.00"),
                         "purchasing_customers": 1},
            ("region:unknown", 7): {"orders": 1, "revenue_micros": usd("40.00"),
                                    "purchasing_customers": 1},
        },
        range(-1, 9),
        segs("all", "region:unknown", "campaign:k1"),
    ),
    Scenario(
        "purchase_7_days_and_1_millisecond_after_click_does_not_convert",
        [
            [
                click("gus", "k", 2 * HOUR, "k1", "0.50"),
                purchase("gus", "p", 7 * DAY + 2 * HOUR + MS, "40.00"),
            ]
        ],
        {
            ("all", 0): {"clicks": 1, "spend_micros": usd("0.50")},
            ("region:unknown", 0): {"clicks": 1, "spend_micros": usd("0.50")},
            ("campaign:k1", 0): {"clicks": 1, "spend_micros": usd("0.50")},
            ("all", 7): {"orders": 1, "revenue_micros": usd("40.00"),
                         "purchasing_customers": 1},
            ("region:unknown", 7): {"orders": 1, "revenue_micros": usd("40.00"),
                                    "purchasing_customers": 1},
        },
        range(-1, 9),
        segs("all", "region:unknown", "campaign:k1"),
    ),
    Scenario(
        "click_and_purchase_at_the_same_instant_convert",
        [
            [
                purchase("hal", "p", 5 * HOUR, "4.00"),
                click("hal", "k", 5 * HOUR, "k1", "1.00"),
            ]
        ],
        {
            ("all", 0): {"clicks": 1, "spend_micros": usd("1.00"), "converted_clicks": 1,
                         "attributed_revenue_micros": usd("4.00"), "orders": 1,
                         "revenue_micros": usd("4.00"), "purchasing_customers": 1},
            ("region:unknown", 0): {"clicks": 1, "spend_micros": usd("1.00"),
                                    "converted_clicks": 1,
                                    "attributed_revenue_micros": usd("4.00"), "orders": 1,
                                    "revenue_micros": usd("4.00"), "purchasing_customers": 1},
            ("campaign:k1", 0): {"clicks": 1, "spend_micros": usd("1.00"),
                                 "converted_clicks": 1,
                                 "attributed_revenue_micros": usd("4.00")},
        },
        range(-1, 2),
        segs("all", "region:unknown", "campaign:k1"),
    ),
    Scenario(
        "purchase_before_the_click_does_not_convert_it",
        [
            [
                purchase("ida", "p1", 1 * HOUR, "10.00"),
                click("ida", "k", 2 * HOUR, "k1", "1.00"),
                purchase("ida", "p2", 3 * HOUR, "4.00"),
            ]
        ],
        {
            ("all", 0): {"orders": 2, "revenue_micros": usd("14.00"),
                         "purchasing_customers": 1, "repeat_customers": 1, "clicks": 1,
                         "spend_micros": usd("1.00"), "converted_clicks": 1,
                         "attributed_revenue_micros": usd("4.00")},
            ("region:unknown", 0): {"orders": 2, "revenue_micros": usd("14.00"),
                                    "purchasing_customers": 1, "repeat_customers": 1,
                                    "clicks": 1, "spend_micros": usd("1.00"),
                                    "converted_clicks": 1,
                                    "attributed_revenue_micros": usd("4.00")},
            ("campaign:k1", 0): {"clicks": 1, "spend_micros": usd("1.00"),
                                 "converted_clicks": 1,
                                 "attributed_revenue_micros": usd("4.00")},
        },
        range(-1, 2),
        segs("all", "region:unknown", "campaign:k1"),
    ),
    Scenario(
        "last_touch_by_click_time_between_two_campaigns",
        [
            [
                signup("jay", "s", 0 * HOUR, region="EU"),
                click("jay", "k2", 3 * HOUR, "k2", "0.20"),
                click("jay", "k1", 1 * HOUR, "k1", "0.10"),  # sent later, clicked earlier
                purchase("jay", "p1", 5 * HOUR, "30.00"),  # converts the k2 click only
                purchase("jay", "p2", 6 * HOUR, "8.00"),  # last click already converted
            ]
        ],
        {
            ("all", 0): {"new_customers": 1, "active_end": 1, "clicks": 2,
                         "spend_micros": usd("0.30"), "converted_clicks": 1,
                         "attributed_revenue_micros": usd("30.00"), "orders": 2,
                         "revenue_micros": usd("38.00"), "purchasing_customers": 1,
                         "repeat_customers": 1},
            ("region:EU", 0): {"new_customers": 1, "active_end": 1, "clicks": 2,
                               "spend_micros": usd("0.30"), "converted_clicks": 1,
                               "attributed_revenue_micros": usd("30.00"), "orders": 2,
                               "revenue_micros": usd("38.00"), "purchasing_customers": 1,
                               "repeat_customers": 1},
            ("campaign:k1", 0): {"clicks": 1, "spend_micros": usd("0.10")},
            ("campaign:k2", 0): {"clicks": 1, "spend_micros": usd("0.20"),
                                 "converted_clicks": 1,
                                 "attributed_revenue_micros": usd("30.00")},
            ("all", 1): {"active_start": 1, "active_end": 1},
            ("region:EU", 1): {"active_start": 1, "active_end": 1},
        },
        range(-1, 2),
        segs("all", "region:EU", "campaign:k1", "campaign:k2"),
    ),
    Scenario(
        "a_new_click_can_convert_again",
        [
            [
                click("kay", "k1", 1 * HOUR, "k1", "0.25"),
                purchase("kay", "p1", 2 * HOUR, "6.00"),
                click("kay", "k2", 3 * HOUR, "k1", "0.25"),
                purchase("kay", "p2", 4 * HOUR, "9.00"),
                purchase("kay", "p3", 5 * HOUR, "1.00"),
            ]
        ],
        {
            ("all", 0): {"clicks": 2, "spend_micros": usd("0.50"), "converted_clicks": 2,
                         "attributed_revenue_micros": usd("15.00"), "orders": 3,
                         "revenue_micros": usd("16.00"), "purchasing_customers": 1,
                         "repeat_customers": 1},
            ("region:unknown", 0): {"clicks": 2, "spend_micros": usd("0.50"),
                                    "converted_clicks": 2,
                                    "attributed_revenue_micros": usd("15.00"), "orders": 3,
                                    "revenue_micros": usd("16.00"),
                                    "purchasing_customers": 1, "repeat_customers": 1},
            ("campaign:k1", 0): {"clicks": 2, "spend_micros": usd("0.50"),
                                 "converted_clicks": 2,
                                 "attributed_revenue_micros": usd("15.00")},
        },
        range(-1, 2),
        segs("all", "region:unknown", "campaign:k1"),
    ),
    Scenario(
        "conversion_counts_in_the_region_of_the_click",
        [
            [
                click("lou", "k", 1 * HOUR, "k1"),  # no cost: 0; region unknown at the click
                signup("lou", "s", 2 * HOUR, region="EU"),
                purchase("lou", "p", 3 * HOUR, "10.00"),
            ]
        ],
        {
            ("all", 0): {"new_customers": 1, "active_end": 1, "clicks": 1,
                         "converted_clicks": 1, "attributed_revenue_micros": usd("10.00"),
                         "orders": 1, "revenue_micros": usd("10.00"),
                         "purchasing_customers": 1},
            ("region:unknown", 0): {"clicks": 1, "converted_clicks": 1,
                                    "attributed_revenue_micros": usd("10.00")},
            ("region:EU", 0): {"new_customers": 1, "active_end": 1, "orders": 1,
                               "revenue_micros": usd("10.00"), "purchasing_customers": 1},
            ("campaign:k1", 0): {"clicks": 1, "converted_clicks": 1,
                                 "attributed_revenue_micros": usd("10.00")},
            ("all", 1): {"active_start": 1, "active_end": 1},
            ("region:EU", 1): {"active_start": 1, "active_end": 1},
        },
        range(-1, 2),
        segs("all", "region:unknown", "region:EU", "campaign:k1"),
    ),
    Scenario(
        "duplicate_event_id_counted_once",
        [
            [
                purchase("ivy", "e1", 1 * HOUR, "12.00"),
                purchase("ivy", "e1", 1 * HOUR, "99.00"),  # same id, other amount: ignored
                purchase("jon", "e1", 2 * HOUR, "5.00"),  # same id, other customer: counts
            ],
            [
                purchase("ivy", "e1", 1 * HOUR, "12.00"),  # redelivered after a checkpoint
                survey("ivy", "e1", 4 * HOUR, "nps", 10),  # same id on another topic
            ],
        ],
        {
            ("all", 0): {"orders": 2, "revenue_micros": usd("17.00"),
                         "purchasing_customers": 2},
            ("region:unknown", 0): {"orders": 2, "revenue_micros": usd("17.00"),
                                    "purchasing_customers": 2},
        },
        range(-1, 2),
        segs("all", "region:unknown"),
        duplicates=3,
    ),
    Scenario(
        "duplicate_event_id_with_another_time_in_one_batch",
        [
            [
                purchase("ivy", "e1", 3 * HOUR, "12.00"),  # first on the partition: counts
                purchase("ivy", "e1", 1 * HOUR, "99.00"),  # later copy, earlier occurred_at
            ]
        ],
        {
            ("all", 0): {"orders": 1, "revenue_micros": usd("12.00"),
                         "purchasing_customers": 1},
            ("region:unknown", 0): {"orders": 1, "revenue_micros": usd("12.00"),
                                    "purchasing_customers": 1},
        },
        range(-1, 2),
        segs("all", "region:unknown"),
        duplicates=1,
    ),
    Scenario(
        "too_late_events_are_dead_lettered",
        [
            [
                purchase("kim", "p40", 40 * DAY, "1.00"),  # the watermark: day 40
                purchase("lee", "p-late", 9 * DAY - SECOND, "2.00"),  # 31 days + 1 s before
                purchase("lee", "p-edge", 9 * DAY, "3.00"),  # exactly 31 days before: counts
            ],
            [
                survey("lee", "s-late", 8 * DAY + 12 * HOUR, "nps", 10),  # another topic
                survey("lee", "s-edge", 9 * DAY, "csat", 5),
            ],
        ],
        {
            ("all", 9): {"orders": 1, "revenue_micros": usd("3.00"), "purchasing_customers": 1,
                         "csat_responses": 1, "csat_satisfied": 1},
            ("region:unknown", 9): {"orders": 1, "revenue_micros": usd("3.00"),
                                    "purchasing_customers": 1, "csat_responses": 1,
                                    "csat_satisfied": 1},
            ("all", 40): {"orders": 1, "revenue_micros": usd("1.00"),
                          "purchasing_customers": 1},
            ("region:unknown", 40): {"orders": 1, "revenue_micros": usd("1.00"),
                                     "purchasing_customers": 1},
        },
        range(-1, 42),
        segs("all", "region:unknown"),
        dead=[("too_late", "p-late"), ("too_late", "s-late")],
    ),
    Scenario(
        "events_out_of_order_within_a_customer",
        [
            [
                purchase("mia", "p", 5 * HOUR, "10.00"),
                click("mia", "k", 4 * HOUR, "k1", "0.40"),
                cancel("mia", "c", 8 * HOUR),
            ],
            [signup("mia", "s", 2 * HOUR, region="EU")],  # arrives last, happened first
        ],
        {
            ("all", 0): {"new_customers": 1, "churned_customers": 1, "clicks": 1,
                         "spend_micros": usd("0.40"), "converted_clicks": 1,
                         "attributed_revenue_micros": usd("10.00"), "orders": 1,
                         "revenue_micros": usd("10.00"), "purchasing_customers": 1},
            ("region:EU", 0): {"new_customers": 1, "churned_customers": 1, "clicks": 1,
                               "spend_micros": usd("0.40"), "converted_clicks": 1,
                               "attributed_revenue_micros": usd("10.00"), "orders": 1,
                               "revenue_micros": usd("10.00"), "purchasing_customers": 1},
            ("campaign:k1", 0): {"clicks": 1, "spend_micros": usd("0.40"),
                                 "converted_clicks": 1,
                                 "attributed_revenue_micros": usd("10.00")},
        },
        range(-1, 2),
        segs("all", "region:EU", "campaign:k1"),
    ),
    Scenario(
        "survey_buckets",
        [
            [
                signup("ned", "s", 0 * HOUR, region="US"),
                *(survey("ned", f"n{score}", 1 * HOUR, "nps", score) for score in (0, 6, 7)),
                *(survey("ned", f"n{score}", 2 * HOUR, "nps", score) for score in (8, 9, 10)),
                *(survey("ned", f"c{score}", 3 * HOUR, "csat", score) for score in (1, 3, 4, 5)),
            ]
        ],
        {
            ("all", 0): {"new_customers": 1, "active_end": 1, "nps_responses": 6,
                         "promoters": 2, "passives": 2, "detractors": 2, "csat_responses": 4,
                         "csat_satisfied": 2},
            ("region:US", 0): {"new_customers": 1, "active_end": 1, "nps_responses": 6,
                               "promoters": 2, "passives": 2, "detractors": 2,
                               "csat_responses": 4, "csat_satisfied": 2},
            ("all", 1): {"active_start": 1, "active_end": 1},
            ("region:US", 1): {"active_start": 1, "active_end": 1},
        },
        range(-1, 2),
        segs("all", "region:US"),
    ),
    Scenario(
        "events_on_window_boundaries",
        [
            [
                purchase("ole", "p1", 1 * DAY - US, "1.00"),  # last instant of day 0
                purchase("ole", "p2", 1 * DAY, "2.00"),  # first instant of day 1
                purchase("ole", "p3", 2 * DAY - US, "3.00"),
                purchase("ole", "p4", 2 * DAY, "4.00"),
                signup("pia", "s", 1 * DAY, region="apac"),  # at day 1's start
                cancel("pia", "c", 2 * DAY),  # at day 1's end: in day 2
            ]
        ],
        {
            ("all", 0): {"orders": 1, "revenue_micros": usd("1.00"), "purchasing_customers": 1},
            ("region:unknown", 0): {"orders": 1, "revenue_micros": usd("1.00"),
                                    "purchasing_customers": 1},
            # pia: not active at day 1's start (the signup is not before it), active at its
            # end (the cancellation is not before it either)
            ("all", 1): {"orders": 2, "revenue_micros": usd("5.00"), "purchasing_customers": 1,
                         "repeat_customers": 1, "new_customers": 1, "active_end": 1},
            ("region:unknown", 1): {"orders": 2, "revenue_micros": usd("5.00"),
                                    "purchasing_customers": 1, "repeat_customers": 1},
            ("region:APAC", 1): {"new_customers": 1, "active_end": 1},
            ("all", 2): {"orders": 1, "revenue_micros": usd("4.00"), "purchasing_customers": 1,
                         "active_start": 1, "churned_customers": 1},
            ("region:unknown", 2): {"orders": 1, "revenue_micros": usd("4.00"),
                                    "purchasing_customers": 1},
            ("region:APAC", 2): {"active_start": 1, "churned_customers": 1},
        },
        range(-1, 4),
        segs("all", "region:unknown", "region:APAC"),
    ),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Running the engine and the reference


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> Settings:
    for name in list(os.environ):
        if name.startswith("KPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return Settings(
        lifecycle_enabled=False,  # these tables are about sections 2 and 4; stages have their own
        windows=(WindowSpec(name=SPEC, size=DAY, step=DAY),),
        attribution_window=timedelta(days=7),
        max_lateness=timedelta(days=31),
        dedupe_horizon=timedelta(days=31),
        gross_margin=Decimal(1),
        reporting_currency="USD",
    )


@dataclass
class EngineRun:
    state: PartitionState
    # Per segment, the window sums rebuilt from the checkpoints' absolute entries.
    received: dict[str, DiffArray]
    dead: list[tuple[str, str | None, str | None]]
    duplicates: int


def run_engine(scenario: Scenario, settings: Settings) -> EngineRun:
    state = PartitionState(0, settings, lambda: datetime(2027, 1, 1, tzinfo=UTC))
    offsets: Counter[str] = Counter()
    received: dict[str, DiffArray] = {}
    dead: list[tuple[str, str | None, str | None]] = []
    duplicates = 0
    for batch in scenario.batches:
        messages = []
        for event in batch:
            topic = TOPICS[event.kind]
            messages.append(
                RawMessage(
                    event.kind, topic, 0, offsets[topic], event.customer.encode(), event.value()
                )
            )
            offsets[topic] += 1
        result = state.ingest(messages)
        dead.extend((d.reason.value, d.event_id, d.field) for d in result.dead_letters)
        duplicates += result.duplicates
        for update in state.checkpoint().updates:
            message = orjson.loads(update.to_bytes())
            for spec_name, k, vector in message["e"]:
                if spec_name != SPEC:
                    continue  # an internal spec of the engine (e.g. for alerts)
                array = received.setdefault(message["seg"], DiffArray())
                array.set_entry(k, vector if vector is not None else [0] * WIDTH)
    return EngineRun(state, received, dead, duplicates)


def run_reference(scenario: Scenario, settings: Settings) -> tuple[Reference, int, int]:
    records = [
        LogRecord(event.kind, event.customer.encode(), event.value())
        for batch in scenario.batches
        for event in batch
    ]
    intake = filter_records(records, settings)
    return reference_from_intake(intake, settings), intake.too_late, intake.duplicates


def day_bounds_us(day: int) -> tuple[int, int]:
    start = (T0 + day * DAY - EPOCH) // US
    return start, start + DAY // US


def expected_counts(scenario: Scenario, segment: str, day: int) -> dict[str, int]:
    counts = dict.fromkeys(BASE_COUNTS, 0)
    counts.update(scenario.expected.get((segment, day), {}))
    return counts


def check_table(scenario: Scenario) -> None:
    """The table itself: known count names, days inside the checked range."""
    for (_segment, day), counts in scenario.expected.items():
        assert set(counts) <= set(BASE_COUNTS), counts
        assert day in scenario.days
    assert {segment for segment, _day in scenario.expected} <= scenario.segments


def _ids(scenarios: list[Scenario], known_bug: str | None = None) -> list[Any]:
    """One param per scenario; those with a known engine bug (attribute ``known_bug``) xfail."""
    params = []
    for s in scenarios:
        reason = getattr(s, known_bug) if known_bug else None
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(s, id=s.id, marks=marks))
    return params


# ---------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("scenario", _ids(SCENARIOS, "engine_counts_bug"))
def test_engine_counts(scenario: Scenario, settings: Settings) -> None:
    check_table(scenario)
    run = run_engine(scenario, settings)
    segments = scenario.segments | set(run.received)
    segments |= {s for spec, s in run.state.partials if spec == SPEC}
    mismatches = []
    for segment in sorted(segments):
        for day in scenario.days:
            _start_us, end_us = day_bounds_us(day)
            k = end_us // (DAY // US)
            assert settings.windows[0].step_ms * 1000 * k == end_us
            in_state = run.state.partials.get((SPEC, segment), DiffArray()).value_at(k)
            sent = run.received.get(segment, DiffArray()).value_at(k)
            assert sent == in_state, f"checkpoints disagree with the state: {segment} day {day}"
            got = counts_from_vector(sent)
            want = expected_counts(scenario, segment, day)
            if got != want:
                diff = {n: (want[n], got[n]) for n in BASE_COUNTS if want[n] != got[n]}
                mismatches.append(f"{segment} day {day}: (expected, engine) {diff}")
    assert not mismatches, "\n".join(mismatches)
    assert [(reason, event_id) for reason, event_id, _f in run.dead] == scenario.dead
    assert all(f == "occurred_at" for reason, _e, f in run.dead if reason == "too_late")
    assert run.duplicates == scenario.duplicates


@pytest.mark.parametrize("scenario", _ids(SCENARIOS))
def test_reference_counts(scenario: Scenario, settings: Settings) -> None:
    check_table(scenario)
    reference, too_late, duplicates = run_reference(scenario, settings)
    mismatches = []
    for segment in sorted(scenario.segments | reference.segments):
        for day in scenario.days:
            start_us, end_us = day_bounds_us(day)
            got = reference.counts_for(segment, start_us // 1000, end_us // 1000)
            want = expected_counts(scenario, segment, day)
            if got != want:
                diff = {n: (want[n], got[n]) for n in BASE_COUNTS if want[n] != got[n]}
                mismatches.append(f"{segment} day {day}: (expected, reference) {diff}")
    assert not mismatches, "\n".join(mismatches)
    assert too_late == sum(1 for reason, _id in scenario.dead if reason == "too_late")
    assert duplicates == scenario.duplicates


@pytest.mark.parametrize("scenario", _ids(SCENARIOS))
def test_reference_segments(scenario: Scenario, settings: Settings) -> None:
    reference, _too_late, _duplicates = run_reference(scenario, settings)
    assert reference.segments == scenario.segments


@pytest.mark.parametrize("scenario", _ids(SCENARIOS, "engine_segments_bug"))
def test_engine_segments(scenario: Scenario, settings: Settings) -> None:
    """The segments the customer stage sends non-zero window sums for."""
    run = run_engine(scenario, settings)
    sent = {
        segment
        for segment, array in run.received.items()
        if any(any(vector) for _k, vector in array.entries())
    }
    assert sent == scenario.segments


def test_a_range_delivered_twice_is_offered_once(settings: Settings) -> None:
    """A seek during a rebalance can hand the same offsets over again: no doubled output."""
    state = PartitionState(0, settings, lambda: datetime(2027, 1, 1, tzinfo=UTC))
    good = signup("c1", "e1", timedelta(hours=1))
    topic = TOPICS[good.kind]
    batch = [
        RawMessage(good.kind, topic, 0, 0, b"c1", good.value()),
        RawMessage(good.kind, topic, 0, 1, b"c2", b"{not json"),
    ]
    first = state.offer(batch)
    again = state.offer(batch)
    drained = state.drain()
    assert [d.reason.value for d in first.dead_letters] == ["invalid_json"]
    assert again.dead_letters == []
    assert again.duplicates == 0
    assert drained.duplicates == 0
    assert drained.accepted["signup"] == 1
    assert state.next_fetch(topic) == 2
