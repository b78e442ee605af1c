"""parse_event never raises: hostile values, truncations and byte flips all become Rejections."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import schemas.parse
from schemas import EVENT_MODELS, EventType, Rejection, RejectReason, parse_event
from tests.messages import COMMON, PLAIN

VALID: dict[EventType, bytes] = {
    event_type: json.dumps({**COMMON, **fields}).encode() for event_type, fields in PLAIN.items()
}
HUGE = "1E+1000000000000000000"
HOSTILE_LITERALS = [
    HUGE,
    "-" + HUGE,
    "1E-1000000000000000000",
    "1e400",
    "-1e400",
    "9" * 5000,  # over Python's int digit limit
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"' + HUGE + '"',
    "[" * 2000 + "]" * 2000,
    "{}",
    "true",
]


def test_the_reported_crash() -> None:
    for event_type in EVENT_MODELS:
        result = parse_event(event_type, b'{"event_id":1E+1000000000000000000}')
        assert isinstance(result, Rejection)
        assert result.reason is RejectReason.MISSING_FIELD  # outranks the invalid event_id
        whole = VALID[event_type].replace(b'"ev-1"', HUGE.encode())
        result = parse_event(event_type, whole)
        assert isinstance(result, Rejection)
        assert (result.reason, result.field) == (RejectReason.INVALID_FIELD, "event_id")


@pytest.mark.parametrize("event_type", list(VALID))
def test_huge_and_odd_values_in_every_field(event_type: EventType) -> None:
    fields = [*COMMON, *PLAIN[event_type], "extra"]
    for name in fields:
        for literal in HOSTILE_LITERALS:
            data = {**COMMON, **PLAIN[event_type]}
            data.pop(name, None)
            value = json.dumps(data).encode()[:-1] + f', "{name}": {literal}}}'.encode()
            result = parse_event(event_type, value, b"cust-1")
            if isinstance(result, Rejection):
                assert result.reason is not RejectReason.UNEXPECTED_ERROR, (name, literal, result)
            else:  # strings in free-text or id fields, anything but deep nesting in extras
                assert literal.startswith('"') or (name == "extra" and literal[0] != "["), (
                    name,
                    literal,
                )


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        ("1e400", RejectReason.INVALID_FIELD),
        (HUGE, RejectReason.INVALID_FIELD),
        ('"' + HUGE + '"', RejectReason.INVALID_FIELD),
        ('"1E+3"', RejectReason.INVALID_FIELD),
    ],
)
def test_hostile_amounts(literal: str, reason: RejectReason) -> None:
    value = VALID["purchase"].replace(b'"19.99"', literal.encode())
    result = parse_event("purchase", value)
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == (reason, "amount")


@pytest.mark.parametrize(
    "value",
    [
        b"\xef\xbb\xbf" + VALID["signup"],
        VALID["signup"].replace(b'"ev-1"', b'"\\ud800"'),
        b'{"event_id": "a", "event_id": "b"' + VALID["signup"][1:],
        b"[" * 100_000,
        b"{" * 50_000,
        b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        bytes(range(256)),
        b"\x00",
    ],
)
def test_whole_message_oddities(value: bytes) -> None:
    result = parse_event("signup", value, max_bytes=1 << 20)
    if not isinstance(result, Rejection):
        return  # duplicate keys: the last one wins, as with any JSON parser
    assert result.reason is not RejectReason.UNEXPECTED_ERROR, result


@pytest.mark.parametrize("event_type", list(VALID))
def test_every_truncation(event_type: EventType) -> None:
    value = VALID[event_type]
    for end in range(len(value)):
        result = parse_event(event_type, value[:end])
        assert isinstance(result, Rejection), value[:end]
        assert result.reason is not RejectReason.UNEXPECTED_ERROR


@pytest.mark.parametrize("event_type", list(VALID))
def test_random_byte_flips(event_type: EventType) -> None:
    rng = random.Random(event_type)
    original = VALID[event_type]
    for _ in range(1500):
        value = bytearray(original)
        for _flip in range(rng.randint(1, 3)):
            value[rng.randrange(len(value))] = rng.randrange(256)
        result = parse_event(event_type, bytes(value), b"cust-1")
        if isinstance(result, Rejection):
            assert result.reason is not RejectReason.UNEXPECTED_ERROR, (bytes(value), result)
            assert len(result.message) <= 200
            assert result.message.endswith(".")
        else:
            assert isinstance(result, EVENT_MODELS[event_type])


def test_unforeseen_exceptions_become_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def decode(self, value: Any) -> Any:
            raise KeyError("boom")

    monkeypatch.setitem(schemas.parse.DECODERS, "signup", Broken())
    result = parse_event("signup", VALID["signup"])
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.UNEXPECTED_ERROR
    assert "KeyError" in result.message
    assert result.message.endswith(".")


def test_invalid_utf8_in_an_ignored_field() -> None:
    value = VALID["signup"][:-1] + b', "note": "caf\xe9"}'
    result = parse_event("signup", value)
    assert isinstance(result, Rejection)
    assert result.reason is RejectReason.INVALID_ENCODING
