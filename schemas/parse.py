"""Turn one Kafka message of an input topic into an event or a rejection with a reason.

``parse_event`` never raises: a valid message is decoded once by the event's msgspec
decoder; anything else is explained field by field from the same declarations
(``schemas.events``), and an exception nobody foresaw becomes ``unexpected_error``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, get_args, get_origin

import msgspec

from schemas.events import (
    DECODERS,
    EVENT_MODELS,
    Event,
    EventType,
    Purchase,
    check_reporting_currency,
)
from schemas.rules import (
    INVALID_FIELD,
    NAIVE_TIMESTAMP,
    UNKNOWN_SCHEMA_VERSION,
    WRONG_CURRENCY,
    RuleError,
    decode_hook,
    exact_number,
    is_identifier,
    json_kind,
)

DEFAULT_MAX_BYTES: Final = 64 * 1024
# Ignored fields may nest this deep; msgspec skips any depth, the contract's users expect a
# bound (a deeper message is invalid_json, as before msgspec).
MAX_DEPTH: Final = 255


class RejectReason(StrEnum):
    """Why a message went to the dead-letter topic; declared in priority order."""

    TOO_LARGE = "too_large"
    EMPTY_MESSAGE = "empty_message"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_SCHEMA_VERSION = UNKNOWN_SCHEMA_VERSION
    NAIVE_TIMESTAMP = NAIVE_TIMESTAMP
    WRONG_CURRENCY = WRONG_CURRENCY
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = INVALID_FIELD
    KEY_MISMATCH = "key_mismatch"
    # Set by the KPI engine (event older than watermark - max lateness), never by the parser.
    TOO_LATE = "too_late"
    # A bug, not bad input: the parser caught an exception it did not foresee.
    UNEXPECTED_ERROR = "unexpected_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that breaks the contract: machine reason, one human sentence, where."""

    reason: RejectReason
    message: str
    field: str | None = None
    event_id: str | None = None


_PRIORITY: Final = {reason: rank for rank, reason in enumerate(RejectReason)}
# Untyped decoding for explanations: numbers exact, unrepresentable ones a marker.
_ANY: Final = msgspec.json.Decoder(float_hook=exact_number)
# Each field's JSON text, to decode on its own with that field's declared type.
_RAW_FIELDS: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_MISSING: Final = msgspec.Raw(b"")
_NESTED_TOO_DEEP: Final = Rejection(
    RejectReason.INVALID_JSON,
    f"The message is not valid JSON: it is nested more than {MAX_DEPTH} levels deep.",
)


def parse_event(
    event_type: EventType,
    value: bytes | None,
    key: bytes | None = None,
    *,
    reporting_currency: str = "USD",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Event | Rejection:
    """Validate one message value (and key) of the ``event_type`` topic; never raises.

    A valid message is decoded once; only rejections pay for a second, field by field look
    that finds the most relevant reason.
    """
    try:
        if value is not None and len(value) > max_bytes:
            return Rejection(
                RejectReason.TOO_LARGE,
                f"The message is {len(value)} bytes, over the limit of {max_bytes} bytes.",
            )
        if not value:
            return Rejection(
                RejectReason.EMPTY_MESSAGE, "The message has no value (null or empty)."
            )
        try:
            event: Event = DECODERS[event_type].decode(value)
        except (msgspec.DecodeError, ValueError, RecursionError):
            return explain(event_type, value, reporting_currency)
        # msgspec skips ignored fields without checking their UTF-8; ASCII (nearly all
        # messages) is valid UTF-8, so only other messages pay for the full check.
        if not value.isascii():
            try:
                value.decode()
            except UnicodeDecodeError:
                return Rejection(RejectReason.INVALID_ENCODING, "The message is not valid UTF-8.")
        # A depth over MAX_DEPTH needs 2 * MAX_DEPTH brackets: short messages skip the count.
        if len(value) > 2 * MAX_DEPTH and value.count(b"[") + value.count(b"{") > MAX_DEPTH:
            too_deep = _too_deep(value)
            if too_deep is not None:
                return too_deep
        if type(event) is Purchase and event.currency != reporting_currency:
            # Every other rule passed: this is the only reason.
            return Rejection(
                RejectReason.WRONG_CURRENCY,
                f"currency is {event.currency}, not the reporting currency {reporting_currency}.",
                "currency",
                event.event_id,
            )
        if key is not None and key != event.customer_id.encode():
            return Rejection(
                RejectReason.KEY_MISMATCH,
                "The message key is not the customer_id encoded as UTF-8.",
                "customer_id",
                event.event_id,
            )
        return event
    except Exception as exc:  # the worker must outlive any input, even a parser bug
        return unexpected_rejection(exc)


def unexpected_rejection(error: Exception) -> Rejection:
    """The rejection of a message whose checking raised: the message is kept, not the worker."""
    return Rejection(
        RejectReason.UNEXPECTED_ERROR,
        f"The message could not be checked: {type(error).__name__} in the parser.",
    )


def explain(event_type: EventType, value: bytes, reporting_currency: str = "USD") -> Rejection:
    """The single most relevant reason ``value`` is not a valid ``event_type`` event.

    Whole-message problems first, then every field of the declaration on its own (a
    message may break several rules; the reason of highest priority wins, then the
    earliest field), then the rules across fields.
    """
    try:
        value.decode()
    except UnicodeDecodeError:
        return Rejection(RejectReason.INVALID_ENCODING, "The message is not valid UTF-8.")
    try:
        data = _ANY.decode(value)
    except RecursionError:
        return _NESTED_TOO_DEEP
    except msgspec.DecodeError as exc:
        detail = str(exc).split(" (byte", 1)[0].removeprefix("JSON is malformed: ")[:120]
        return Rejection(RejectReason.INVALID_JSON, f"The message is not valid JSON: {detail}.")
    if not isinstance(data, dict):
        return Rejection(
            RejectReason.NOT_AN_OBJECT, f"The message is {json_kind(data)}, not a JSON object."
        )
    if _depth(data) > MAX_DEPTH:
        return _NESTED_TOO_DEEP
    event_id = data.get("event_id")
    readable_id = event_id if is_identifier(event_id) else None
    model = EVENT_MODELS[event_type]
    errors: list[tuple[RejectReason, str, str]] = []
    converted: dict[str, Any] = {}
    raw_fields = _RAW_FIELDS.decode(value)
    for field, decoder in _field_decoders(model):
        error = _check_field(model, field, decoder, raw_fields, converted)
        if error is not None:
            errors.append(error)
    errors.extend(_check_event(model, converted, reporting_currency))
    if not errors:
        return Rejection(
            RejectReason.UNEXPECTED_ERROR,
            "The message could not be checked: the decoder refused what the rules accept.",
            None,
            readable_id,
        )
    # min() keeps the first of equal rank, i.e. the earliest field in declaration order.
    reason, field_name, phrase = min(errors, key=lambda error: _PRIORITY[error[0]])
    return Rejection(reason, _sentence(field_name, phrase), field_name, readable_id)


@functools.cache
def _field_decoders(
    model: type[Event],
) -> tuple[tuple[msgspec.structs.FieldInfo, msgspec.json.Decoder[Any]], ...]:
    """A decoder per field of ``model``, from its declared type (built once: msgspec.convert
    rebuilt the type on every call, 60 µs per field)."""
    return tuple(
        (field, msgspec.json.Decoder(field.type, dec_hook=decode_hook, float_hook=exact_number))
        for field in msgspec.structs.fields(model)
    )


def _check_field(
    model: type[Event],
    field: msgspec.structs.FieldInfo,
    decoder: msgspec.json.Decoder[Any],
    raw_fields: dict[str, msgspec.Raw],
    out: dict[str, Any],
) -> tuple[RejectReason, str, str] | None:
    """One field alone against its declaration: type and Meta, then its Check."""
    name = field.encode_name
    raw = raw_fields.get(name, _MISSING)
    if raw is _MISSING:
        if field.required:
            return RejectReason.MISSING_FIELD, name, "is required"
        return None
    try:
        value = decoder.decode(raw)
        for check_name, check in model.checks:
            if check_name == field.name:
                value = check(value)
    except RuleError as exc:
        return RejectReason(exc.reason), name, exc.phrase
    except msgspec.ValidationError as exc:
        if "timezone component" in str(exc):  # Meta(tz=True): the stamp has no offset
            return RejectReason.NAIVE_TIMESTAMP, name, "has no UTC offset; add Z or +HH:MM"
        if name == "schema_version":
            return (
                RejectReason.UNKNOWN_SCHEMA_VERSION,
                name,
                "must be the integer 1 (the only version this processor reads)",
            )
        return RejectReason.INVALID_FIELD, name, _phrase(str(exc), _ANY.decode(raw), field.type)
    out[field.name] = value
    return None


def _check_event(
    model: type[Event], fields: dict[str, Any], reporting_currency: str
) -> list[tuple[RejectReason, str, str]]:
    """The rules across fields, each where the fields it reads passed their own rules."""
    partial: Any = _Partial(fields)
    rules: list[Callable[[Any], None]] = [model.check_event]
    if model is Purchase:
        rules.append(lambda event: check_reporting_currency(event, reporting_currency))
    errors: list[tuple[RejectReason, str, str]] = []
    for rule in rules:
        try:
            rule(partial)
        except AttributeError:
            continue  # a field it reads is missing or invalid, and reported on its own
        except RuleError as exc:
            errors.append((RejectReason(exc.reason), exc.field or "The message", exc.phrase))
    return errors


class _Partial:
    """The fields that passed, as attributes; reading any other raises AttributeError."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)


def _too_deep(value: bytes) -> Rejection | None:
    try:
        return _NESTED_TOO_DEEP if _depth(_ANY.decode(value)) > MAX_DEPTH else None
    except RecursionError:
        return _NESTED_TOO_DEEP


def _phrase(error: str, raw: object, annotation: Any) -> str:
    """msgspec's message as a phrase naming types and bounds, never the input."""
    text = error.split(" - at `", 1)[0]
    if text.startswith("Invalid enum value"):  # the only msgspec message quoting the input
        choices = ", ".join(repr(choice) for choice in _literal_choices(annotation))
        return f"must be one of {choices}"
    if text.startswith("Expected `") and text.endswith("`"):
        text = text.replace("`", "")
    if "RuleError" in text or not text:
        return "is invalid"
    kind = json_kind(raw)
    lowered = text[0].lower() + text[1:]
    if lowered.startswith("expected ") and ", got " in lowered:
        lowered = f"must be {lowered.removeprefix('expected ').split(', got ', 1)[0]}, not {kind}"
    elif lowered.startswith("expected "):
        lowered = f"must be {lowered.removeprefix('expected ')}"
    return lowered[:150]


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _sentence(field: str, phrase: str) -> str:
    return f"{field} {phrase}."[:199].rstrip(".") + "."


def _depth(data: object) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children: list[Any] = []
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest
