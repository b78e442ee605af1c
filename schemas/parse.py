"""Turn one Kafka message of an input topic into an event or a rejection with a reason."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.events import (
    EVENT_MODELS,
    INVALID_FIELD,
    NAIVE_TIMESTAMP,
    UNKNOWN_SCHEMA_VERSION,
    WRONG_CURRENCY,
    CampaignClick,
    Event,
    EventType,
    Purchase,
    is_identifier,
    json_kind,
)

DEFAULT_MAX_BYTES: Final = 64 * 1024


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
    # Validation itself raised: a message the rules above did not foresee, never a crash.
    UNEXPECTED_ERROR = "unexpected_error"
    # Set by the KPI engine (event older than watermark - max lateness), never by the parser.
    TOO_LATE = "too_late"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that breaks the contract: machine reason, one human sentence, where."""

    reason: RejectReason
    message: str
    field: str | None = None
    event_id: str | None = None


_PRIORITY: Final = {reason: rank for rank, reason in enumerate(RejectReason)}

# Pydantic-core reads JSON numbers as floats: a literal of 16+ significant digits may be
# rounded before the decimal checks (pydantic-core#1688). Valid amounts and costs have at most
# 15, which floats keep exactly, so only messages with a run of 16 digits or dots (a cheap
# superset of such literals) get the exact second look.
_LONG_NUMBER = re.compile(rb"[0-9.]{16}")
_EXACT_MODELS: Final = (Purchase, CampaignClick)

# Phrases for Pydantic's own error types; `{...}` placeholders come from the error context.
_PHRASES: Final[dict[str, str]] = {
    "missing": "is required",
    "string_type": "must be a string, not {kind}",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} characters",
    "int_type": "must be an integer, not {kind}",
    "decimal_type": "must be a decimal number or decimal string, not {kind}",
    "decimal_parsing": "must be a decimal number or decimal string",
    "finite_number": "must be a finite number",
    "decimal_max_places": "must have at most {decimal_places} decimal places",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be {expected}",
}


def parse_event(
    event_type: EventType,
    value: bytes | None,
    key: bytes | None = None,
    *,
    reporting_currency: str = "USD",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Event | Rejection:
    """Validate one message value (and key) of the ``event_type`` topic; never raises.

    A valid message is parsed once; only rejections (and rare suspicious inputs) pay for a
    second parse that finds the most relevant reason.
    """
    try:
        return _parse_event(
            event_type, value, key, reporting_currency=reporting_currency, max_bytes=max_bytes
        )
    except Exception as exc:  # one message never stops a worker, whatever it holds
        return unexpected_rejection(exc)


def unexpected_rejection(error: Exception) -> Rejection:
    """The rejection of a message whose validation raised: the message is kept, not the worker."""
    return Rejection(
        RejectReason.UNEXPECTED_ERROR,
        f"Validating the message raised {type(error).__name__}; it was kept as a dead letter.",
    )


def _parse_event(
    event_type: EventType,
    value: bytes | None,
    key: bytes | None = None,
    *,
    reporting_currency: str = "USD",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Event | Rejection:
    if value is not None and len(value) > max_bytes:
        return Rejection(
            RejectReason.TOO_LARGE,
            f"The message is {len(value)} bytes, over the limit of {max_bytes} bytes.",
        )
    if not value:
        return Rejection(RejectReason.EMPTY_MESSAGE, "The message has no value (null or empty).")
    model = EVENT_MODELS[event_type]
    context = {"reporting_currency": reporting_currency}
    try:
        event = model.model_validate_json(value, context=context)
    except ValidationError as exc:
        return _explain(value, exc)
    rejection = _second_look(event, value, context)
    if rejection is not None:
        return rejection
    if key is not None and key != event.customer_id.encode():
        return Rejection(
            RejectReason.KEY_MISMATCH,
            "The message key is not the customer_id encoded as UTF-8.",
            "customer_id",
            event.event_id,
        )
    return event


def _second_look(event: Event, value: bytes, context: dict[str, Any]) -> Rejection | None:
    """Catch what the fast parser lets through: NaN/Infinity literals and rounded numbers."""
    suspicious_constant = b"NaN" in value or b"Infinity" in value
    long_number = isinstance(event, _EXACT_MODELS) and _LONG_NUMBER.search(value) is not None
    if not (suspicious_constant or long_number):
        return None
    try:
        data = _load_exact(value.decode())
    except (ValueError, RecursionError) as exc:
        return _invalid_json(exc)
    if long_number:
        try:
            type(event).model_validate(data, context=context)
        except ValidationError as exc:
            return _from_errors(exc, data)
    return None


def _explain(value: bytes, exc: ValidationError) -> Rejection:
    """The single most relevant reason a message failed validation."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return Rejection(RejectReason.INVALID_ENCODING, "The message is not valid UTF-8.")
    try:
        data = _load_exact(text)
    except (ValueError, RecursionError) as error:
        return _invalid_json(error)
    if not isinstance(data, dict):
        return Rejection(
            RejectReason.NOT_AN_OBJECT, f"The message is {json_kind(data)}, not a JSON object."
        )
    return _from_errors(exc, data)


def _load_exact(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _invalid_json(error: Exception) -> Rejection:
    if isinstance(error, RecursionError):
        detail = "it is nested too deeply"
    elif isinstance(error, json.JSONDecodeError):
        detail = f"{error.msg} at line {error.lineno} column {error.colno}"
    else:
        detail = str(error)[:120]
    return Rejection(RejectReason.INVALID_JSON, f"The message is not valid JSON: {detail}.")


def _from_errors(exc: ValidationError, data: dict[str, Any]) -> Rejection:
    errors = exc.errors(include_url=False, include_input=True)
    # min() keeps the first of equal rank, i.e. the earliest field in declaration order.
    error = min(errors, key=lambda e: _PRIORITY[_reason(e)])
    reason = _reason(error)
    field = ".".join(str(part) for part in error["loc"]) or None
    if reason is RejectReason.INVALID_JSON:
        message = f"The message is not valid JSON: {error['msg'].removeprefix('Invalid JSON: ')}."
    else:
        message = f"{field or 'The message'} {_phrase(error)}."
    return Rejection(reason, message, field, _readable_event_id(data.get("event_id")))


def _reason(error: ErrorDetails) -> RejectReason:
    kind = error["type"]
    if kind == "missing":
        return RejectReason.MISSING_FIELD
    if kind == "json_invalid":
        # Inputs only the fast parser refuses, e.g. nesting over its depth limit.
        return RejectReason.INVALID_JSON
    if not error["loc"] and kind in ("model_type", "model_attributes_type", "dict_type"):
        return RejectReason.NOT_AN_OBJECT
    if kind in (UNKNOWN_SCHEMA_VERSION, NAIVE_TIMESTAMP, WRONG_CURRENCY):
        return RejectReason(kind)
    return RejectReason.INVALID_FIELD


def _phrase(error: ErrorDetails) -> str:
    template = _PHRASES.get(error["type"])
    if template is None:
        # Our own errors already read as a phrase; Pydantic's messages never quote the input.
        return error["msg"][:160] if _is_own(error) else f"is invalid: {error['msg'][:120]}"
    context = dict(error.get("ctx") or {})
    context["kind"] = json_kind(error.get("input"))
    try:
        return template.format(**context)
    except (KeyError, IndexError):
        return f"is invalid: {error['msg'][:120]}"


def _is_own(error: ErrorDetails) -> bool:
    return error["type"] in (INVALID_FIELD, UNKNOWN_SCHEMA_VERSION, NAIVE_TIMESTAMP, WRONG_CURRENCY)


def _readable_event_id(value: object) -> str | None:
    """The payload's event_id for operators, only when it is itself a valid id."""
    return value if isinstance(value, str) and is_identifier(value) else None
