"""Window boundaries as tables: which windows an event, an active customer or a buyer counts in.

The contract (section 3 and docs/metrics.md): a window is the half-open interval
``[start, end)`` with ``end`` a multiple of ``step`` since the epoch and ``start = end - size``;
an event exactly at the start counts, one exactly at the end belongs to the next window. The
current window ends at the first step boundary strictly after the watermark. A customer is
active at a moment when their events strictly before it leave them active. Every expected
window below is written out by hand as a UTC time; a naive recount cross-checks the
difference arrays.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stream_app.kpis.formulas import BASE_INDEX
from stream_app.kpis.windows import WIDTH, DiffArray, Fact, Spec, fact_ranges
from stream_app.settings import DEFAULT_WINDOWS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_S = 1_000_000
MINUTE = 60 * US_PER_S
HOUR = 60 * MINUTE
DAY = 24 * HOUR

ORDERS = BASE_INDEX["orders"]
REVENUE = BASE_INDEX["revenue_micros"]
CLICKS = BASE_INDEX["clicks"]
ACTIVE_START = BASE_INDEX["active_start"]
ACTIVE_END = BASE_INDEX["active_end"]
PURCHASING = BASE_INDEX["purchasing_customers"]
REPEAT = BASE_INDEX["repeat_customers"]

SPEC_1H = Spec("1h", HOUR, 5 * MINUTE)
SPEC_24H = Spec("24h", DAY, HOUR)
SPEC_7D = Spec("7d", 7 * DAY, HOUR)
SPEC_30D = Spec("30d", 30 * DAY, DAY)
SPEC_TUMBLING = Spec("hourly", HOUR, HOUR)
SPEC_2H = Spec("2h", 2 * HOUR, HOUR)
SPECS = {s.name: s for s in (SPEC_1H, SPEC_24H, SPEC_7D, SPEC_30D, SPEC_TUMBLING, SPEC_2H)}


def us(stamp: str) -> int:
    """``2026-11-02T09:17:30Z`` (optionally with microseconds) as epoch microseconds."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert moment.tzinfo is not None
    return (moment - EPOCH) // timedelta(microseconds=1)


def end_k(spec: Spec, stamp: str) -> int:
    """The window-end index of the window ending at ``stamp`` (which must be a step boundary)."""
    t = us(stamp)
    assert t % spec.step_us == 0, f"{stamp} is not a {spec.name} step boundary"
    return t // spec.step_us


def test_default_specs_are_the_contract_windows() -> None:
    specs = [Spec.from_window(window) for window in DEFAULT_WINDOWS]
    assert specs == [SPEC_1H, SPEC_24H, SPEC_7D, SPEC_30D]
    assert [s.steps for s in specs] == [12, 24, 168, 30]


# ---------------------------------------------------------------------------------------------
# The current window of a watermark (the table of docs/metrics.md, and its edges)

CURRENT = [
    # (spec, watermark, window_start, window_end)
    ("1h", "2026-11-02T09:17:30Z", "2026-11-02T08:20:00Z", "2026-11-02T09:20:00Z"),
    ("24h", "2026-11-02T09:17:30Z", "2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z"),
    ("7d", "2026-11-02T09:17:30Z", "2026-10-26T10:00:00Z", "2026-11-02T10:00:00Z"),
    ("30d", "2026-11-02T09:17:30Z", "2026-10-04T00:00:00Z", "2026-11-03T00:00:00Z"),
    # a watermark exactly on a boundary already belongs to the next window
    ("1h", "2026-11-02T09:20:00Z", "2026-11-02T08:25:00Z", "2026-11-02T09:25:00Z"),
    ("1h", "2026-11-02T09:19:59.999999Z", "2026-11-02T08:20:00Z", "2026-11-02T09:20:00Z"),
    ("1h", "2026-11-02T09:20:00.000001Z", "2026-11-02T08:25:00Z", "2026-11-02T09:25:00Z"),
    ("24h", "2026-11-02T10:00:00Z", "2026-11-01T11:00:00Z", "2026-11-02T11:00:00Z"),
    ("30d", "2026-11-02T23:59:59.999999Z", "2026-10-04T00:00:00Z", "2026-11-03T00:00:00Z"),
    ("30d", "2026-11-03T00:00:00Z", "2026-10-05T00:00:00Z", "2026-11-04T00:00:00Z"),
    ("hourly", "2026-11-02T09:00:00Z", "2026-11-02T09:00:00Z", "2026-11-02T10:00:00Z"),
    ("hourly", "2026-11-02T08:59:59.999999Z", "2026-11-02T08:00:00Z", "2026-11-02T09:00:00Z"),
    ("30d", "1970-01-01T00:00:00Z", "1969-12-03T00:00:00Z", "1970-01-02T00:00:00Z"),
]


@pytest.mark.parametrize(
    ("spec_name", "watermark", "start", "end"),
    [pytest.param(*row, id=f"{row[0]}@{row[1]}") for row in CURRENT],
)
def test_current_window(spec_name: str, watermark: str, start: str, end: str) -> None:
    spec = SPECS[spec_name]
    k = spec.current_index(us(watermark))
    assert spec.bounds_us(k) == (us(start), us(end))
    assert us(start) <= us(watermark) < us(end), "the current window contains the watermark"
    assert spec.end_index(us(watermark)) == k


# ---------------------------------------------------------------------------------------------
# Which windows an event counts in: exactly at a start (in), at an end (out), 1 µs either side

EVENT_WINDOWS = [
    # (spec, event time, end of the first window holding it, end of the last one)
    ("1h", "2026-11-02T09:00:00Z", "2026-11-02T09:05:00Z", "2026-11-02T10:00:00Z"),
    ("1h", "2026-11-02T08:59:59.999999Z", "2026-11-02T09:00:00Z", "2026-11-02T09:55:00Z"),
    ("1h", "2026-11-02T09:00:00.000001Z", "2026-11-02T09:05:00Z", "2026-11-02T10:00:00Z"),
    ("1h", "2026-11-02T09:04:59.999999Z", "2026-11-02T09:05:00Z", "2026-11-02T10:00:00Z"),
    ("1h", "2026-11-02T09:05:00Z", "2026-11-02T09:10:00Z", "2026-11-02T10:05:00Z"),
    ("1h", "2026-11-02T09:17:30Z", "2026-11-02T09:20:00Z", "2026-11-02T10:15:00Z"),
    ("24h", "2026-11-02T00:00:00Z", "2026-11-02T01:00:00Z", "2026-11-03T00:00:00Z"),
    ("24h", "2026-11-01T23:59:59.999999Z", "2026-11-02T00:00:00Z", "2026-11-02T23:00:00Z"),
    ("7d", "2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z", "2026-11-09T10:00:00Z"),
    ("7d", "2026-11-02T09:59:59.999999Z", "2026-11-02T10:00:00Z", "2026-11-09T09:00:00Z"),
    ("30d", "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z", "2026-12-02T00:00:00Z"),
    ("30d", "2026-11-01T23:59:59.999999Z", "2026-11-02T00:00:00Z", "2026-12-01T00:00:00Z"),
    ("hourly", "2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z", "2026-11-02T11:00:00Z"),
    ("hourly", "2026-11-02T09:59:59.999999Z", "2026-11-02T10:00:00Z", "2026-11-02T10:00:00Z"),
    ("2h", "2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z", "2026-11-02T12:00:00Z"),
]


@pytest.mark.parametrize(
    ("spec_name", "at", "first_end", "last_end"),
    [pytest.param(*row, id=f"{row[0]}@{row[1]}") for row in EVENT_WINDOWS],
)
def test_event_windows(spec_name: str, at: str, first_end: str, last_end: str) -> None:
    spec = SPECS[spec_name]
    t = us(at)
    first, last = end_k(spec, first_end), end_k(spec, last_end)
    # The table itself obeys [start, end): the first window holds t, the one before ends at or
    # before it, the last holds it, the one after starts after it.
    assert spec.bounds_us(first)[0] <= t < spec.bounds_us(first)[1]
    assert spec.bounds_us(first - 1)[1] <= t
    assert spec.bounds_us(last)[0] <= t < spec.bounds_us(last)[1]
    assert spec.bounds_us(last + 1)[0] > t
    assert last - first + 1 == spec.steps

    assert spec.end_index(t) == first
    assert list(fact_ranges(("pt", "all", ORDERS, t), spec)) == [(ORDERS, first, last)]

    array = DiffArray()
    for metric, lo, hi in fact_ranges(("pt", "all", ORDERS, t), spec):
        array.add_range(metric, lo, hi, 3)
    assert [array.value_at(k)[ORDERS] for k in (first - 1, first, last, last + 1)] == [0, 3, 3, 0]


# ---------------------------------------------------------------------------------------------
# Facts that span: a customer active over an interval, seen at window starts and ends

ACTIVE = [
    # (id, spec, [(active from, until or None)], {window end: (active_start, active_end)})
    (
        "signup_and_cancel_on_boundaries",
        "2h",
        [("2026-11-02T10:00:00Z", "2026-11-02T13:00:00Z")],
        {
            "2026-11-02T10:00:00Z": (0, 0),  # the signup at 10:00 is not before 10:00
            "2026-11-02T11:00:00Z": (0, 1),
            "2026-11-02T12:00:00Z": (0, 1),  # starts at 10:00: not active yet
            "2026-11-02T13:00:00Z": (1, 1),  # the cancellation at 13:00 is not before 13:00
            "2026-11-02T14:00:00Z": (1, 0),
            "2026-11-02T15:00:00Z": (1, 0),  # starts at 13:00: still active then
            "2026-11-02T16:00:00Z": (0, 0),
        },
    ),
    (
        "one_microsecond_before_the_boundaries",
        "2h",
        [("2026-11-02T09:59:59.999999Z", "2026-11-02T12:59:59.999999Z")],
        {
            "2026-11-02T10:00:00Z": (0, 1),
            "2026-11-02T11:00:00Z": (0, 1),
            "2026-11-02T12:00:00Z": (1, 1),
            "2026-11-02T13:00:00Z": (1, 0),
            "2026-11-02T14:00:00Z": (1, 0),
            "2026-11-02T15:00:00Z": (0, 0),
        },
    ),
    (
        "open_ended_and_a_short_stay",
        "1h",
        [
            ("2026-11-02T09:02:00Z", None),
            ("2026-11-02T09:03:00Z", "2026-11-02T09:04:00Z"),  # within one step
        ],
        {
            "2026-11-02T09:00:00Z": (0, 0),
            "2026-11-02T09:05:00Z": (0, 1),
            "2026-11-02T10:00:00Z": (0, 1),
            "2026-11-02T10:05:00Z": (1, 1),  # starts 09:05, after both changes
            "2026-11-03T09:05:00Z": (1, 1),
        },
    ),
    (
        "two_customers_overlapping",
        "24h",
        [
            ("2026-11-01T12:00:00Z", "2026-11-03T00:00:00Z"),
            ("2026-11-02T06:00:00Z", None),
        ],
        {
            "2026-11-02T00:00:00Z": (0, 1),
            "2026-11-02T07:00:00Z": (0, 2),
            "2026-11-02T13:00:00Z": (1, 2),  # starts 11-01 13:00
            "2026-11-03T00:00:00Z": (1, 2),  # cancellation at the end: still active at it
            "2026-11-03T01:00:00Z": (1, 1),
            "2026-11-03T06:00:00Z": (1, 1),  # starts 11-02 06:00: the second not yet
            "2026-11-03T07:00:00Z": (2, 1),
            "2026-11-04T00:00:00Z": (2, 1),  # starts 11-03 00:00: first still active
            "2026-11-04T01:00:00Z": (1, 1),
        },
    ),
    (
        "reactivation",
        "hourly",
        [
            ("2026-11-02T09:30:00Z", "2026-11-02T10:15:00Z"),
            ("2026-11-02T10:45:00Z", None),
        ],
        {
            "2026-11-02T10:00:00Z": (0, 1),
            "2026-11-02T11:00:00Z": (1, 1),
            "2026-11-02T12:00:00Z": (1, 1),
        },
    ),
    (
        "thirty_days",
        "30d",
        [("2026-11-02T00:00:00Z", "2026-11-20T12:00:00Z")],
        {
            "2026-11-02T00:00:00Z": (0, 0),
            "2026-11-03T00:00:00Z": (0, 1),
            "2026-11-20T00:00:00Z": (0, 1),
            "2026-11-21T00:00:00Z": (0, 0),
            "2026-12-02T00:00:00Z": (0, 0),  # starts 11-02 00:00, the signup instant
            "2026-12-03T00:00:00Z": (1, 0),
            "2026-12-20T00:00:00Z": (1, 0),  # starts 11-20 00:00
            "2026-12-21T00:00:00Z": (0, 0),  # starts 11-21
        },
    ),
]


@pytest.mark.parametrize(
    ("spec_name", "intervals", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in ACTIVE],
)
def test_active_customers(
    spec_name: str,
    intervals: list[tuple[str, str | None]],
    expected: dict[str, tuple[int, int]],
) -> None:
    spec = SPECS[spec_name]
    array = DiffArray()
    for since, until in intervals:
        facts: list[tuple[Fact, int]] = [(("act", "all", us(since)), 1)]
        if until is not None:
            facts.append((("act", "all", us(until)), -1))
        for fact, value in facts:
            for metric, lo, hi in fact_ranges(fact, spec):
                array.add_range(metric, lo, hi, value)
    for end, (active_start, active_end) in expected.items():
        vector = array.value_at(end_k(spec, end))
        assert (vector[ACTIVE_START], vector[ACTIVE_END]) == (active_start, active_end), end
        assert not any(v for i, v in enumerate(vector) if i not in (ACTIVE_START, ACTIVE_END))


# ---------------------------------------------------------------------------------------------
# Distinct buyers: "dp" (first purchase of a window) and "dr" (second) facts

DISTINCT = [
    # (id, fact kind, its times, (first window end, last window end) or None), spec 2h/1h
    # dp(p, q): p is a first purchase in the windows holding p but not q (the one before it)
    ("dp_no_previous", "dp", ("10:30", None), ("11:00", "12:00")),
    ("dp_previous_only_in_earlier", "dp", ("10:30", "09:30"), ("12:00", "12:00")),
    ("dp_previous_at_window_start", "dp", ("10:30", "09:00"), ("12:00", "12:00")),
    ("dp_previous_1us_before_start", "dp", ("10:30", "08:59:59.999999"), ("11:00", "12:00")),
    ("dp_previous_in_every_window", "dp", ("10:30", "10:00"), None),
    ("dp_same_instant", "dp", ("10:30", "10:30"), None),
    # dr(p, q, q2): p is a second purchase in the windows holding p and q but not q2
    ("dr_no_third", "dr", ("11:30", "10:30", None), ("12:00", "12:00")),
    ("dr_third_far_back", "dr", ("11:30", "11:00", "09:30"), ("12:00", "13:00")),
    ("dr_third_at_window_start", "dr", ("11:30", "11:00", "10:00"), ("13:00", "13:00")),
    ("dr_pair_never_together", "dr", ("12:30", "10:30", None), None),
    ("dr_pair_on_window_edges", "dr", ("11:59:59.999999", "10:00", None), ("12:00", "12:00")),
    ("dr_same_instant_third", "dr", ("11:30", "11:00", "11:00"), None),
]


def _day(clock: str | None) -> int | None:
    return None if clock is None else us(f"2026-11-02T{clock}Z")


@pytest.mark.parametrize(
    ("kind", "times", "expected"), [pytest.param(*r[1:], id=r[0]) for r in DISTINCT]
)
def test_distinct_buyer_facts(
    kind: str, times: tuple[str | None, ...], expected: tuple[str, str] | None
) -> None:
    fact = (kind, "all", *(_day(clock) for clock in times))
    ranges = list(fact_ranges(fact, SPEC_2H))
    if expected is None:
        assert ranges == []
    else:
        metric = PURCHASING if kind == "dp" else REPEAT
        first, last = (end_k(SPEC_2H, f"2026-11-02T{clock}Z") for clock in expected)
        assert ranges == [(metric, first, last)]


def _naive_buyers(purchases: dict[str, list[int]], spec: Spec, k: int) -> tuple[int, int]:
    start, end = spec.bounds_us(k)
    counts = [sum(1 for t in times if start <= t < end) for times in purchases.values()]
    return sum(1 for n in counts if n >= 1), sum(1 for n in counts if n >= 2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spec_name", ["1h", "2h", "hourly", "30d"])
def test_distinct_buyers_match_a_naive_recount(spec_name: str, seed: int) -> None:
    """Each purchase p_i of a customer (sorted) gives dp(p_i, p_i-1) and dr(p_i, p_i-1, p_i-2)."""
    spec = SPECS[spec_name]
    rnd = random.Random(seed)
    base = us("2026-11-02T00:00:00Z")
    horizon = spec.size_us * 3
    purchases: dict[str, list[int]] = {}
    for customer in range(6):
        times = []
        for _ in range(rnd.randrange(0, 8)):
            # on and next to step boundaries as often as between them
            t = base + rnd.randrange(0, horizon // spec.step_us) * spec.step_us
            t += rnd.choice([0, 0, -1, 1, rnd.randrange(spec.step_us)])
            times.append(t)
        if times and rnd.random() < 0.3:
            times.append(times[-1])  # two purchases at the same instant
        purchases[f"c{customer}"] = sorted(times)
    array = DiffArray()
    for times in purchases.values():
        for i, p in enumerate(times):
            q = times[i - 1] if i >= 1 else None
            facts: list[Fact] = [("dp", "all", p, q)]
            if q is not None:
                facts.append(("dr", "all", p, q, times[i - 2] if i >= 2 else None))
            for fact in facts:
                for metric, lo, hi in fact_ranges(fact, spec):
                    array.add_range(metric, lo, hi, 1)
    first = base // spec.step_us - 2
    last = (base + horizon + spec.size_us) // spec.step_us + 2
    for k in range(first, last + 1):
        vector = array.value_at(k)
        assert (vector[PURCHASING], vector[REPEAT]) == _naive_buyers(purchases, spec, k), k


def test_unknown_fact_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown fact kind"):
        list(fact_ranges(("nope", "all", 0), SPEC_1H))


# ---------------------------------------------------------------------------------------------
# oldest_kept: the oldest window that must stay exact

OLDEST = [
    # (spec, watermark, frozen, history steps, end of the oldest kept window)
    # the frozen horizon is older than the history: it decides
    ("1h", "2026-11-02T09:17:30Z", HOUR, 10, "2026-11-02T08:20:00Z"),
    # the history is older: it decides (current 09:20 minus 9 steps of 5 minutes)
    ("1h", "2026-11-02T09:17:30Z", 10 * MINUTE, 10, "2026-11-02T08:35:00Z"),
    # watermark - frozen exactly on a boundary: the first window ending strictly after it
    ("1h", "2026-11-02T09:20:00Z", HOUR, 10, "2026-11-02T08:25:00Z"),
    ("1h", "2026-11-02T09:20:00.000001Z", HOUR, 10, "2026-11-02T08:25:00Z"),
    ("1h", "2026-11-02T09:19:59.999999Z", HOUR, 10, "2026-11-02T08:20:00Z"),
    # the defaults, lateness 31d + attribution 7d and 1000 steps: 999 hours before 11-02T10:00
    ("24h", "2026-11-02T09:17:30Z", 38 * DAY, 1000, "2026-09-21T19:00:00Z"),
    # 500 steps reach back to 10-12T15:00 only: 38 days before the watermark decides
    ("24h", "2026-11-02T09:17:30Z", 38 * DAY, 500, "2026-09-25T10:00:00Z"),
    # 999 days before 2026-11-03 is 2024-02-08
    ("30d", "2026-11-02T09:17:30Z", 38 * DAY, 1000, "2024-02-08T00:00:00Z"),
    ("30d", "2026-11-02T09:17:30Z", 38 * DAY, 1, "2026-09-26T00:00:00Z"),
]


@pytest.mark.parametrize(
    ("spec_name", "watermark", "frozen", "history", "expected"),
    [pytest.param(*row, id=f"{row[0]}-{row[1]}-{row[3]}") for row in OLDEST],
)
def test_oldest_kept(
    spec_name: str, watermark: str, frozen: int, history: int, expected: str
) -> None:
    spec = SPECS[spec_name]
    k = spec.oldest_kept(us(watermark), frozen, history)
    assert spec.bounds_us(k)[1] == us(expected)
    # It is one of the two bounds: past the frozen horizon, or exactly the history length.
    assert spec.bounds_us(k)[1] > us(watermark) - frozen or (
        spec.current_index(us(watermark)) - k + 1 == history
    )


# ---------------------------------------------------------------------------------------------
# DiffArray: add_range / value_at / compact against a naive recount

Op = tuple[Any, ...]

DIFF_CASES = [
    (
        "closed_and_open_ranges",
        [("add", ORDERS, 3, 5, 1), ("add", ORDERS, 4, None, 2), ("add", REVENUE, 7, 9, 10)],
        {
            2: {},
            3: {ORDERS: 1},
            4: {ORDERS: 3},
            5: {ORDERS: 3},
            6: {ORDERS: 2},
            7: {ORDERS: 2, REVENUE: 10},
            9: {ORDERS: 2, REVENUE: 10},
            10: {ORDERS: 2},
            10_000: {ORDERS: 2},
        },
    ),
    (
        "queries_between_updates",
        [
            ("add", CLICKS, 10, 12, 1),
            ("query", 11, {CLICKS: 1}),
            ("add", CLICKS, 5, 10, 4),  # before the cached prefix
            ("query", 11, {CLICKS: 1}),
            ("query", 10, {CLICKS: 5}),
            ("add", CLICKS, 11, 11, -1),
            ("query", 12, {CLICKS: 1}),
        ],
        {4: {}, 5: {CLICKS: 4}, 10: {CLICKS: 5}, 11: {}, 12: {CLICKS: 1}, 13: {}},
    ),
    (
        "a_fact_and_its_retraction_cancel",
        [("add", ORDERS, 3, 8, 1), ("add", ORDERS, 3, 8, -1), ("add", REVENUE, 4, None, 5)],
        {3: {}, 4: {REVENUE: 5}, 9: {REVENUE: 5}},
    ),
    (
        "set_entry_zero_removes",
        [
            ("add", ORDERS, 2, 4, 1),
            ("set", 5, [0] * WIDTH),  # index 5 holds -1: overwriting it opens the range
            ("query", 6, {ORDERS: 1}),
            ("set", 2, [0] * WIDTH),
        ],
        {1: {}, 2: {}, 6: {}},
    ),
    (
        "compact_folds_into_the_base",
        [
            ("add", ORDERS, 3, 5, 1),
            ("add", ORDERS, 4, None, 2),
            ("add", REVENUE, 7, 9, 10),
            ("compact", 6, [0, 3, 4]),  # entries 3 and 4 folded away
            ("compact", 6, []),  # nothing left below 6
            ("query", 6, {ORDERS: 2}),  # 1 + 2 (folded) - 1 (at 6)
            ("add", ORDERS, 8, 8, 1),
            ("compact", 8, [0, 6, 7]),
            ("compact", 2, []),
        ],
        {8: {ORDERS: 3, REVENUE: 10}, 9: {ORDERS: 2, REVENUE: 10}, 10: {ORDERS: 2}},
    ),
]


@pytest.mark.parametrize(("ops", "expected"), [pytest.param(*c[1:], id=c[0]) for c in DIFF_CASES])
def test_diff_array(ops: Sequence[Op], expected: dict[int, dict[int, int]]) -> None:
    array = DiffArray()
    for op in ops:
        if op[0] == "add":
            array.add_range(op[1], op[2], op[3], op[4])
        elif op[0] == "set":
            array.set_entry(op[1], op[2])
        elif op[0] == "compact":
            assert sorted(array.compact(op[1])) == op[2]
        else:
            assert array.value_at(op[1]) == _vector(op[2]), op
    for k, values in expected.items():
        assert array.value_at(k) == _vector(values), k


def _vector(values: dict[int, int]) -> list[int]:
    vector = [0] * WIDTH
    for metric, value in values.items():
        vector[metric] = value
    return vector


@pytest.mark.parametrize("seed", range(10))
def test_diff_array_matches_a_naive_recount(seed: int) -> None:
    """Random ranges, queries and compactions; every exact window equals the plain sum."""
    rnd = random.Random(seed)
    top = 60
    naive = [[0] * WIDTH for _ in range(top + 1)]
    array = DiffArray()
    exact_from = 0  # windows before the last compaction are folded away
    for _ in range(200):
        roll = rnd.random()
        if roll < 0.7:
            metric = rnd.randrange(WIDTH)
            first = rnd.randrange(exact_from, top)
            last = rnd.choice([None, rnd.randrange(first, top)])
            value = rnd.choice([-3, -1, 1, 2, 5])
            array.add_range(metric, first, last, value)
            for k in range(first, top + 1 if last is None else last + 1):
                naive[k][metric] += value
        elif roll < 0.9:
            k = rnd.randrange(exact_from, top + 1)
            assert array.value_at(k) == naive[k], k
        else:
            below = rnd.randrange(exact_from, exact_from + (top - exact_from) // 3 + 1)
            touched = array.compact(below)
            assert all(k < below for k in touched)
            assert not any(0 < k < below for k in array.diffs)
            exact_from = max(exact_from, below)
    for k in range(exact_from, top + 1):
        assert array.value_at(k) == naive[k], k
