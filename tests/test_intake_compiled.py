"""The compiled intake (``_intake.c``) answers as the Python fast path wherever it answers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from schemas import EventType, Rejection, parse_event
from stream_app.customers import intake
from stream_app.customers.intake import fast_stored_python
from stream_app.customers.timeline import stored
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate
from tests.messages import COMMON, PLAIN, allocations_grown, random_timestamp

pytestmark = pytest.mark.skipif(not intake.COMPILED, reason="the compiled intake is not built")

EVENT_TYPES: list[EventType] = ["signup", "purchase", "cancellation", "campaign_click", "survey"]
HEAD = b'{"event_id":"a","customer_id":"c","occurred_at":"2026-01-01T00:00:00Z"'
# Bytes that change what a JSON text means: structure, escapes, signs, exponents, literals,
# whitespace, non-ASCII and control bytes.
INTERESTING = b'"\\{}[],:-+.eE0195 \t\nnultrZT\x00\x7f\xc3\xa9\xff'


def compiled(event_type: EventType, value: Any, key: Any, currency: str = "USD") -> Any:
    return intake.fast_stored(event_type, value, key, currency)


def _agree(event_type: EventType, value: bytes, key: bytes | None) -> bool:
    """Assert the compiled answer is None or the reference's; True if it took the message."""
    answer = compiled(event_type, value, key)
    if answer is None:
        return False
    assert answer == fast_stored_python(event_type, value, key, "USD"), value
    full = parse_event(event_type, value, key, reporting_currency="USD")
    assert not isinstance(full, Rejection), (value, full)
    assert answer == (full.customer_id, stored(full)), value
    return True


def _mutations(plain: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        data = bytearray(plain)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            action = rng.randrange(4)
            byte = INTERESTING[rng.randrange(len(INTERESTING))]
            if action == 0:
                data[at] = byte
            elif action == 1:
                data.insert(at, byte)
            elif action == 2 and len(data) > 1:
                del data[at]
            else:  # a digit for a digit: keeps the shape, changes the number or the date
                if chr(data[at]).isdigit():
                    data[at] = ord(str(rng.randrange(10)))
        out.append(bytes(data))
    return out


def test_the_compiled_intake_is_built() -> None:
    # The install compiles it (pyproject.toml); without it the worker runs a fifth slower.
    assert intake.COMPILED
    assert intake.fast_stored is not fast_stored_python


def test_mutated_messages_agree_with_the_reference() -> None:
    rng = random.Random(7)
    taken = refused = 0
    for event_type in EVENT_TYPES:
        for fields in ({**COMMON, **PLAIN[event_type]}, {**PLAIN[event_type], **COMMON}):
            plain = orjson.dumps(fields)
            for value in _mutations(plain, rng, 3000):
                for key in (None, b"cust-1"):
                    if _agree(event_type, value, key):
                        taken += 1
                    else:
                        refused += 1
    # Both sides well populated: mutations that keep the shape and ones that break it.
    assert taken > 3000
    assert refused > 10000


def test_timestamps_convert_exactly() -> None:
    rng = random.Random(11)
    for _ in range(20_000):
        stamp = random_timestamp(rng)
        value = orjson.dumps({**COMMON, "occurred_at": stamp})
        answer = compiled("cancellation", value, None)
        assert answer is not None, stamp
        moment = datetime.fromisoformat(stamp)
        expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        assert answer[1][0] == expected, stamp
        assert answer == fast_stored_python("cancellation", value, None, "USD")


@pytest.mark.parametrize(
    "stamp",
    [
        "1900-02-29T00:00:00Z",  # 1900 is not a leap year
        "2100-01-01T00:00:00Z",
        "1899-12-31T23:59:59Z",
        "2026-04-31T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-13-10T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:60:00Z",
        "2026-01-01T00:00:60Z",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00+00:60",
        "2026-01-01T00:00:00.1234567Z",
        "2026-01-01T00:00:00.Z",
        "2026-01-01T00:00:00",
        "2026-01-01T00:00:00+0100",
        "2026-01-01T00:00:00z",
        "2026-01-01t00:00:00Z",
        "2026-01-01 00:00:00Z",
        "2026-1-01T00:00:00Z",
        "2026-01-01T00:00:00ZZ",
        "+2026-01-01T00:00:00Z",
    ],
)
def test_unusual_timestamps_are_refused(stamp: str) -> None:
    value = orjson.dumps({**COMMON, "occurred_at": stamp})
    assert compiled("cancellation", value, None) is None


@pytest.mark.parametrize(
    "stamp", ["2000-02-29T12:00:00Z", "2024-02-29T23:59:59.999999-12:00", "2099-12-31T23:59:59Z"]
)
def test_edge_dates_are_taken(stamp: str) -> None:
    value = orjson.dumps({**COMMON, "occurred_at": stamp})
    assert _agree("cancellation", value, None)


@pytest.mark.parametrize(
    ("event_type", "raw"),
    [
        # JSON the reference reads but the compiled path leaves to it: escapes, non-ASCII,
        # a duplicate key (the last one counts), a negative zero, an exponent.
        (
            "cancellation",
            b'{"event_id":"ev\\u002d1","customer_id":"c","occurred_at":"2026-01-01T00:00:00Z"}',
        ),
        (
            "cancellation",
            '{"event_id":"é","customer_id":"c","occurred_at":"2026-01-01T00:00:00Z"}'.encode(),
        ),
        (
            "cancellation",
            b'{"event_id":"a","event_id":"b","customer_id":"c","occurred_at":"2026-01-01T00:00:00Z"}',
        ),
        (
            "survey",
            HEAD + b',"survey_type":"nps","score":-0}',
        ),
        (
            "survey",
            HEAD + b',"survey_type":"nps","score":1e0}',
        ),
        (
            "survey",
            HEAD + b',"survey_type":"nps","score":05}',
        ),
        (
            "purchase",
            HEAD + b',"order_id":"o","amount":"1.5","currency":"USD","amount":"2"}',
        ),
        (
            "signup",
            HEAD + b',"channel":true}',
        ),
        (
            "signup",
            HEAD + b',"region":"eu","channel":{}}',
        ),
        (
            "signup",
            HEAD + b',"region":"eu","campaign_id":"a b"}',
        ),
        (
            "campaign_click",
            HEAD + b',"campaign_id":"x","cost":"1.1234567"}',
        ),
        (
            "campaign_click",
            HEAD + b',"campaign_id":"x","cost":"12345678901"}',
        ),
        (
            "campaign_click",
            HEAD + b',"campaign_id":"x","cost":99999999999999999999}',
        ),
        (
            "cancellation",
            HEAD + b"} x",
        ),
        (
            "cancellation",
            HEAD + b",}",
        ),
        ("cancellation", HEAD),
        (
            "cancellation",
            HEAD + b',"schema_version":null}',
        ),
        (
            "cancellation",
            HEAD + b',"schema_version":2}',
        ),
        ("cancellation", b'{"event_id":"","customer_id":"c","occurred_at":"2026-01-01T00:00:00Z"}'),
        ("cancellation", b"{}"),
        ("cancellation", b"[]"),
        ("cancellation", b" "),
    ],
)
def test_unusual_json_is_left_to_the_reference(event_type: EventType, raw: bytes) -> None:
    assert compiled(event_type, raw, None) is None


def test_plain_traffic_is_taken_exactly_as_the_reference_takes_it() -> None:
    config = SimulationConfig(seed=5, duration=timedelta(days=2), customers=400, events_target=6000)
    records = list(generate(config))
    for record in records:
        value = record.value or b""
        answer = compiled(record.event_type, value, record.key)
        assert answer is not None, value
        assert answer == fast_stored_python(record.event_type, value, record.key, "USD")


def test_arguments_are_checked() -> None:
    plain = orjson.dumps({**COMMON, **PLAIN["cancellation"]})
    with pytest.raises(TypeError):
        intake.fast_stored("cancellation", plain, None)  # type: ignore[call-arg]
    with pytest.raises(KeyError):
        compiled("refund", plain, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        intake.fast_stored(b"cancellation", plain, None, "USD")  # type: ignore[arg-type]
    # Other buffers, a text key, too many bytes: left to the reference, not an error.
    assert compiled("cancellation", bytearray(plain), None) is None
    assert compiled("cancellation", plain.decode(), None) is None
    assert compiled("cancellation", None, None) is None
    assert compiled("cancellation", plain, "cust-1") is None
    assert intake.fast_stored("cancellation", plain, None, "USD", len(plain) - 1) is None
    assert intake.fast_stored("cancellation", plain, None, "USD", len(plain)) is not None
    # The reporting currency is compared as given.
    purchase = orjson.dumps({**COMMON, **PLAIN["purchase"], "currency": "EUR"})
    assert compiled("purchase", purchase, None) is None
    assert compiled("purchase", purchase, None, "EUR") is not None


def test_no_references_leak_on_any_path() -> None:
    # Messages that allocate part of an event before being refused, and accepted ones.
    values = [
        orjson.dumps({**COMMON, **PLAIN["signup"], "channel": 1}),
        orjson.dumps({**COMMON, **PLAIN["signup"], "campaign_id": "a b"}),
        orjson.dumps({**COMMON, **PLAIN["signup"], "region": None, "channel": 1}),
        orjson.dumps({**COMMON, **PLAIN["signup"]}),
        orjson.dumps({**COMMON, **PLAIN["survey"]}),
        orjson.dumps({**COMMON, **PLAIN["campaign_click"]}),
    ]
    types: list[EventType] = ["signup", "signup", "signup", "signup", "survey", "campaign_click"]

    def run(times: int) -> None:
        for _ in range(times):
            for event_type, value in zip(types, values, strict=True):
                compiled(event_type, value, b"cust-1")

    grown = allocations_grown(run, 20_000)
    assert grown < 100_000, grown


@pytest.mark.parametrize("offset", [UTC, timezone(timedelta(hours=-5))])
def test_an_event_time_is_the_reference_time(offset: timezone) -> None:
    moment = datetime(2026, 11, 2, 9, 15, 7, 250_000, tzinfo=offset)
    value = orjson.dumps({**COMMON, "occurred_at": moment.isoformat()})
    answer = compiled("cancellation", value, None)
    assert answer is not None
    assert answer[1][0] == (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
