"""Messages become the customer stage's stored events through the events' one declaration."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from schemas import EventType, Rejection, parse_event
from stream_app.customers.timeline import stored
from tests.messages import COMMON, PLAIN, random_timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _stored(event_type: EventType, value: bytes) -> tuple[str, list[Any]] | Rejection:
    parsed = parse_event(event_type, value, b"cust-1")
    if isinstance(parsed, Rejection):
        return parsed
    return parsed.customer_id, stored(parsed)


def _message(event_type: EventType, **changes: Any) -> bytes:
    return orjson.dumps(
        {**COMMON, "occurred_at": "2026-11-02T09:15:00+09:00", **PLAIN[event_type], **changes}
    )


@pytest.mark.parametrize(
    ("event_type", "changes", "expected"),
    [
        ("purchase", {"amount": "19.99"}, ["cust-1", [1793578500000000, 2, "ev-1", 19_990_000]]),
        ("purchase", {"amount": 7}, ["cust-1", [1793578500000000, 2, "ev-1", 7_000_000]]),
        ("purchase", {"amount": "1.50000"}, ["cust-1", [1793578500000000, 2, "ev-1", 1_500_000]]),
        (
            "campaign_click",
            {"cost": None, "occurred_at": "2026-11-02T00:15:00.5Z"},
            ["cust-1", [1793578500500000, 1, "ev-1", "spring-1", 0]],
        ),
        (
            "campaign_click",
            {"cost": "-0"},
            ["cust-1", [1793578500000000, 1, "ev-1", "spring-1", 0]],
        ),
        (
            "signup",
            {"region": None, "campaign_id": None},
            ["cust-1", [1793578500000000, 0, "ev-1", "unknown", None]],
        ),
        (
            "signup",
            {"region": "emea"},
            ["cust-1", [1793578500000000, 0, "ev-1", "EMEA", "spring-1"]],
        ),
        (
            "survey",
            {"survey_type": "csat", "score": 4},
            ["cust-1", [1793578500000000, 3, "ev-1", "c", 4]],
        ),
        ("cancellation", {}, ["cust-1", [1793578500000000, 4, "ev-1"]]),
    ],
)
def test_messages_become_stored_events(
    event_type: EventType, changes: dict[str, Any], expected: list[Any]
) -> None:
    assert _stored(event_type, _message(event_type, **changes)) == tuple(expected)


def test_event_times_convert_exactly_in_every_offset() -> None:
    rng = random.Random(11)
    for _ in range(20_000):
        stamp = random_timestamp(rng)
        answer = _stored("cancellation", _message("cancellation", occurred_at=stamp))
        assert not isinstance(answer, Rejection), (stamp, answer)
        expected = (datetime.fromisoformat(stamp) - EPOCH) // timedelta(microseconds=1)
        assert answer[1][0] == expected, stamp


@pytest.mark.parametrize("offset", [UTC, timezone(timedelta(hours=-5))])
def test_an_event_time_is_the_instant_it_names(offset: timezone) -> None:
    moment = datetime(2026, 11, 2, 9, 15, 7, 250_000, tzinfo=offset)
    answer = _stored("cancellation", _message("cancellation", occurred_at=moment.isoformat()))
    assert not isinstance(answer, Rejection)
    assert answer[1][0] == (moment - EPOCH) // timedelta(microseconds=1)
