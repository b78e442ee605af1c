"""The per-customer RFM profile: events in (any order), readings out; its stored form."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from stream_app.lifecycle.profile import (
    KEEP_MONTHS,
    PROFILE_FORMAT,
    Profile,
    ProfileFormatError,
    decode_profile,
    encode_profile,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def at(year: int, month: int, day: int, hour: int = 0) -> int:
    return us(datetime(year, month, day, hour, tzinfo=UTC))


# An event: (kind, t_us, value); value is the amount in micros or (survey kind, score).
Event = tuple[str, int, object]


def profile_of(events: list[Event]) -> Profile:
    profile = Profile()
    for kind, t, value in events:
        if kind == "signup":
            profile.signup(t)
        elif kind == "cancellation":
            profile.cancellation(t)
        elif kind == "purchase":
            assert isinstance(value, int)
            profile.purchase(t, value)
        else:
            assert isinstance(value, tuple)
            profile.survey(t, value[0], value[1])
    return profile


HISTORY: list[Event] = [
    ("signup", at(2025, 11, 20), None),
    ("purchase", at(2025, 12, 5), 10_000_000),
    ("purchase", at(2026, 1, 31, 23), 2_500_000),
    ("survey", at(2026, 2, 1), ("nps", 9)),
    ("purchase", at(2026, 6, 1), 40_000_000),
    ("survey", at(2026, 6, 2), ("csat", 2)),
    ("survey", at(2026, 6, 3), ("nps", 3)),
    ("purchase", at(2026, 11, 30), 1_000_000),
]


@pytest.mark.parametrize(
    ("now", "recency", "purchases", "revenue"),
    [
        # December 2026: the window is January to December 2026.
        (at(2026, 12, 7), 7.0, 3, 43_500_000),
        # November 2026: December 2025 is the 12th month back, still in.
        (at(2026, 11, 30, 12), 0.5, 4, 53_500_000),
        # February 2027: January 2026 has turned 13 months old.
        (at(2027, 2, 1), 63.0, 2, 41_000_000),
        # A year on, every month has left the window.
        (at(2027, 11, 30), 365.0, 0, 0),
    ],
)
def test_readings_over_the_calendar_month_window(
    now: int, recency: float, purchases: int, revenue: int
) -> None:
    profile = profile_of(HISTORY)
    assert profile.recency_days(now) == pytest.approx(recency)
    assert profile.purchases_365d(now) == purchases
    assert profile.revenue_365d_micros(now) == revenue


def test_tenure_activity_and_the_features() -> None:
    profile = profile_of(HISTORY)
    now = at(2026, 12, 7)
    assert profile.tenure_days(now) == (now - at(2025, 11, 20)) / 86_400_000_000
    assert profile.active
    features = profile.features(now)
    assert features == {
        "recency_days": 7.0,
        "never_purchased": 0.0,
        "tenure_days": profile.tenure_days(now),
        "purchases_365d": 3.0,
        "revenue_365d": 43.5,
        "nps_last": 3.0,
        "nps_mean": 6.0,
        "nps_none": 0.0,
        "csat_last": 2.0,
        "csat_mean": 2.0,
        "csat_none": 0.0,
        "returned": 0.0,
    }


def test_a_customer_without_purchases_or_surveys() -> None:
    profile = profile_of([("signup", at(2026, 12, 1), None)])
    now = at(2026, 12, 4)
    assert profile.recency_days(now) is None
    assert (profile.purchases_365d(now), profile.revenue_365d_micros(now)) == (0, 0)
    features = profile.features(now)
    assert features["recency_days"] == features["tenure_days"] == 3.0
    assert (features["never_purchased"], features["nps_none"], features["csat_none"]) == (1, 1, 1)
    assert Profile().tenure_days(now) == 0.0
    assert not Profile().active


@pytest.mark.parametrize(
    ("events", "active"),
    [
        ([("signup", 1, None)], True),
        ([("signup", 1, None), ("cancellation", 2, None)], False),
        ([("signup", 1, None), ("cancellation", 2, None), ("signup", 3, None)], True),
        # On a tie the cancellation applies after the signup (as in the customer stage).
        ([("signup", 5, None), ("cancellation", 5, None)], False),
        ([("cancellation", 1, None)], False),
        ([("cancellation", 1, None), ("signup", 2, None)], True),
    ],
)
def test_active_follows_the_latest_signup_and_cancellation(
    events: list[Event], active: bool
) -> None:
    assert profile_of(events).active is active


def test_the_profile_does_not_depend_on_the_order_of_events() -> None:
    rng = random.Random(7)
    base = at(2026, 3, 1)
    events: list[Event] = [("signup", base, None)]
    for _ in range(30):
        t = base + rng.randrange(0, 400) * 86_400_000_000 // 3
        kind = rng.choice(["purchase", "purchase", "survey", "cancellation", "signup"])
        value: object = None
        if kind == "purchase":
            value = rng.randrange(1, 10**9)
        elif kind == "survey":
            value = rng.choice([("nps", rng.randrange(11)), ("csat", rng.randrange(1, 6))])
        events.append((kind, t, value))
    # Same time, different scores: the latest score must not depend on arrival order.
    events += [("survey", base + 5, ("nps", 2)), ("survey", base + 5, ("nps", 8))]
    expected = encode_profile(profile_of(sorted(events, key=lambda e: e[1])))
    for _ in range(20):
        rng.shuffle(events)
        assert encode_profile(profile_of(events)) == expected


def calendar_count(purchases: list[int], now: int) -> int:
    """An independent recount: purchases in now's UTC month and the 11 before it."""

    def month(t: int) -> int:
        moment = EPOCH + timedelta(microseconds=t)
        return moment.year * 12 + moment.month

    return sum(1 for t in purchases if month(now) - 12 < month(t) <= month(now))


def test_memory_stays_bounded_and_late_purchases_within_the_bound_count() -> None:
    rng = random.Random(3)
    day = 86_400_000_000
    times = sorted(at(2024, 1, 1) + rng.randrange(0, 3 * 365 * day) for _ in range(60))
    # Each purchase arrives up to 31 days late (the lateness bound), in shuffled order.
    arrival = sorted(times, key=lambda t: t + rng.randrange(0, 31 * day))
    profile = Profile()
    for i, t in enumerate(arrival):
        profile.purchase(t, 1_000_000)
        assert len(profile.months) <= KEEP_MONTHS
        newest = max(arrival[: i + 1])
        seen = arrival[: i + 1]
        for now in (newest - 31 * day, newest, newest + 200 * day, newest + 400 * day):
            assert profile.purchases_365d(now) == calendar_count(seen, now)
            assert profile.revenue_365d_micros(now) == 1_000_000 * calendar_count(seen, now)


def test_the_stored_form_round_trips_and_refuses_what_it_does_not_know() -> None:
    profile = profile_of(HISTORY)
    data = encode_profile(profile)
    assert decode_profile(data) == profile
    assert decode_profile(encode_profile(Profile())) == Profile()
    future = msgspec.msgpack.encode((PROFILE_FORMAT + 1, profile))
    with pytest.raises(ProfileFormatError, match="format 2 is unknown"):
        decode_profile(future)
    for bad in [
        b"",
        b"\xc1",
        msgspec.msgpack.encode({"format": 1}),
        msgspec.msgpack.encode((1, [1, "x"])),
    ]:
        with pytest.raises(ProfileFormatError):
            decode_profile(bad)
    for months in ([[5, 1, 1], [4, 1, 1]], [[4, 1, 1], [4, 1, 1]], [[m, 1, 1] for m in range(15)]):
        fields: list[object] = [None] * 6 + [0, 0, None, None, 0, 0, months]
        with pytest.raises(ProfileFormatError, match="monthly buckets"):
            decode_profile(msgspec.msgpack.encode((PROFILE_FORMAT, fields)))
    negative = msgspec.msgpack.encode((PROFILE_FORMAT, [None] * 6 + [-1]))
    with pytest.raises(ProfileFormatError):
        decode_profile(negative)
