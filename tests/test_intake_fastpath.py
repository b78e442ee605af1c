"""The intake fast path accepts a strict subset of what full validation accepts, identically.

Every test runs on both implementations: the Python reference and its compiled twin.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from schemas import Event, EventType, Rejection, parse_event
from stream_app.customers import intake
from stream_app.customers.intake import FastStored, fast_stored_python
from stream_app.customers.timeline import stored
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate
from tests.messages import COMMON, PLAIN

# Borderline and hostile values for each field; every one is tried in every event type
# that has the field, and in the others as an extra field.
VARIANTS: dict[str, list[Any]] = {
    "event_id": [
        *("", "x" * 128, "x" * 129, "a\x00b", "a\x7fb", "é✓", " ", 1, None, [], {}),
        # Invisible, separator and unassigned characters: valid ids, but the fast path's
        # ``isprintable`` leaves them to full validation.
        *("a\u200bb", "a\u00a0b", "a\u2028b", "\U000e0001", "a\u0378"),
    ],
    "customer_id": ["", "c" * 128, "c" * 129, "a\nb", "ü", "c\u200d", "c\u3000", 7, True, None],
    "occurred_at": [
        "2026-11-02T09:15:00Z",
        "2026-11-02T09:15:00z",
        "2026-11-02t09:15:00Z",
        "2026-11-02 09:15:00Z",
        "2026-11-02T09:15:00.1Z",
        "2026-11-02T09:15:00.1234Z",
        "2026-11-02T09:15:00.123456Z",
        "2026-11-02T09:15:00.123456789Z",
        # Seconds and fractions at the edges, other offsets, a leap day, a bare dot.
        "2026-11-02T09:15:59.999999Z",
        "2026-11-02T09:15:07.05Z",
        "2026-11-02T09:15:07.000001+05:30",
        "2026-11-02T09:15:61Z",
        "2026-11-02T09:60:00Z",
        "2024-02-29T23:59:59.5-03:00",
        "2026-11-02T09:15:00.Z",
        "2026-11-02T09:15:00-00:00",
        "2026-11-02T09:15:00+23:59",
        "2026-11-02T09:15:00+24:00",
        "2026-11-02T09:15:00+05:60",
        "2026-11-02T09:15:00",
        "2026-11-02",
        "2026-02-30T09:15:00Z",
        "2026-11-02T24:00:00Z",
        "2026-11-02T23:59:60Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "1900-01-01T00:00:00+14:00",
        "2099-12-31T23:59:59-12:00",
        1762000000,
        None,
    ],
    "schema_version": [1, 2, 0, 1.0, True, "1", None],
    "region": ["eu", "EU-west", "e", "toolongxx", "e u", "unknown", "", None, 5],
    "campaign_id": ["c", "a b", "a\tb", "a\u00a0b", "x" * 128, "x" * 129, "", None, 3],
    "channel": ["", "any text\n", None, 1],
    "order_id": ["", "o" * 128, "o" * 129, "a\x00", None, 9],
    "amount": [
        "0.01",
        "1",
        "1.2345",
        "1.23456",
        "1.50000",
        "0",
        "0.0000",
        "-1",
        "-0",
        "+1",
        "1e3",
        " 1",
        "1_0",
        "NaN",
        "00012.5",
        "1.",
        ".5",
        "1.2.3",
        "1.5 ",
        "\u0661\u0662",  # Arabic-Indic digits: str.isdigit() says yes
        "\uff11.5",  # a fullwidth 1
        "1.\u00b2",  # a superscript two
        "1000000000",
        "1000000000.0001",
        "9999999999",
        "12345678901",
        5,
        0,
        -5,
        1000000000,
        1000000001,
        19.99,
        1.23456789012345678,
        True,
        None,
    ],
    "currency": ["USD", "usd", "EUR", "US", None, 1],
    "cost": [
        "0",
        "0.000001",
        "0.0000001",
        "1.123456",
        "-0",
        "-0.5",
        "1000000000",
        "1000000000.000001",
        0,
        3,
        0.5,
        None,
        False,
    ],
    "survey_type": ["nps", "csat", "NPS", "", None, ["nps"], {"a": 1}],
    "score": [0, 1, 5, 6, 9, 10, 11, -1, 7.0, "7", True, None],
    "reason": ["", "x" * 10_000, None, 3, ["a"]],
    "extra": ["anything", {"nested": [1, 2]}],
}


def _message(event_type: EventType, **changes: Any) -> dict[str, Any]:
    data = {**COMMON, **PLAIN[event_type]}
    for name, value in changes.items():
        data[name] = value
    return data


def _corpus() -> list[tuple[EventType, bytes, bytes | None]]:
    cases: list[tuple[EventType, bytes, bytes | None]] = []
    for event_type in PLAIN:
        plain = orjson.dumps(_message(event_type))
        cases.append((event_type, plain, b"cust-1"))
        cases.append((event_type, plain, None))
        cases.append((event_type, plain, b"someone-else"))
        for name, values in VARIANTS.items():
            for value in values:
                data = _message(event_type, **{name: value})
                cases.append((event_type, orjson.dumps(data), None))
                del data[name]
                cases.append((event_type, orjson.dumps(data), None))
        raw_variants = [
            b"",
            b"null",
            b"[]",
            b'"text"',
            b"{",
            plain + b" trailing",
            b"\xef\xbb\xbf" + plain,
            b"  " + plain + b"\n",
            plain.replace(b'"ev-1"', b'"\\ud800"'),
            plain.replace(b'"ev-1"', b'"\xff\xfe"'),
            plain[:-1] + b',"event_id":"ev-2"}',
            plain.replace(b"{", b'{"event_id":"ev-0",', 1),
            plain + b" " * 70_000,
        ]
        cases.extend((event_type, raw, None) for raw in raw_variants)
    return cases


IMPLEMENTATIONS = [
    pytest.param(fast_stored_python, id="python"),
    pytest.param(
        intake.fast_stored,
        id="compiled",
        marks=pytest.mark.skipif(
            not intake.COMPILED, reason="not built; tests/test_intake_compiled.py fails for that"
        ),
    ),
]


@pytest.fixture(params=IMPLEMENTATIONS)
def fast_stored(request: pytest.FixtureRequest) -> FastStored:
    implementation: FastStored = request.param
    return implementation


def _check(fast_stored: FastStored, event_type: EventType, value: bytes, key: bytes | None) -> bool:
    """Assert the fast answer agrees with full validation; True if the fast path took it."""
    fast = fast_stored(event_type, value, key, "USD")
    full = parse_event(event_type, value, key, reporting_currency="USD")
    if fast is None:
        return False
    assert not isinstance(full, Rejection), (value, full)
    assert isinstance(full, Event.__args__)  # type: ignore[attr-defined]
    assert fast == (full.customer_id, stored(full)), value
    return True


def test_borderline_and_hostile_messages_agree_with_full_validation(
    fast_stored: FastStored,
) -> None:
    taken = [_check(fast_stored, event_type, value, key) for event_type, value, key in _corpus()]
    # The table has plenty on both sides; both counts guard against a vacuous pass.
    assert sum(taken) > 200
    assert len(taken) - sum(taken) > 500


def test_simulated_traffic_takes_the_fast_path(fast_stored: FastStored) -> None:
    config = SimulationConfig(
        seed=3, duration=timedelta(days=3), customers=500, events_target=5000, inject_bad=0.05
    )
    records = list(generate(config))
    taken = [_check(fast_stored, r.event_type, r.value or b"", r.key) for r in records]
    # Injected faults take the full path; nearly every plain event should not.
    assert sum(taken) >= 0.9 * len(records)


@pytest.mark.parametrize(
    ("event_type", "changes", "expected"),
    [
        ("purchase", {"amount": "19.99"}, ["cust-1", [1793578500000000, 2, "ev-1", 19_990_000]]),
        ("purchase", {"amount": 7}, ["cust-1", [1793578500000000, 2, "ev-1", 7_000_000]]),
        (
            "campaign_click",
            {"cost": None, "occurred_at": "2026-11-02T00:15:00.5Z"},
            ["cust-1", [1793578500500000, 1, "ev-1", "spring-1", 0]],
        ),
        (
            "signup",
            {"region": None, "campaign_id": None},
            ["cust-1", [1793578500000000, 0, "ev-1", "unknown", None]],
        ),
        (
            "survey",
            {"survey_type": "csat", "score": 4},
            ["cust-1", [1793578500000000, 3, "ev-1", "c", 4]],
        ),
        ("cancellation", {}, ["cust-1", [1793578500000000, 4, "ev-1"]]),
    ],
)
def test_plain_messages_become_stored_events(
    fast_stored: FastStored, event_type: EventType, changes: dict[str, Any], expected: list[Any]
) -> None:
    value = orjson.dumps(_message(event_type, **changes))
    assert fast_stored(event_type, value, b"cust-1", "USD") == tuple(expected)
    assert _check(fast_stored, event_type, value, b"cust-1")


@pytest.mark.parametrize(
    ("event_type", "changes"),
    [
        ("purchase", {"amount": 19.99}),  # a float literal may have been rounded
        ("purchase", {"amount": "1.50000"}),  # trailing zeros past 4 places: full path trims
        ("purchase", {"currency": "EUR"}),
        ("campaign_click", {"cost": "-0"}),
        ("signup", {"extra": 1}),
        ("survey", {"score": 11}),
        ("purchase", {"event_id": "ev\u200b1"}),  # a zero-width space: valid, but unusual
        ("campaign_click", {"campaign_id": "spring\u00a01"}),  # no-break space: invalid
    ],
)
def test_unusual_messages_take_the_full_path(
    fast_stored: FastStored, event_type: EventType, changes: dict[str, Any]
) -> None:
    assert (
        fast_stored(event_type, orjson.dumps(_message(event_type, **changes)), None, "USD") is None
    )
