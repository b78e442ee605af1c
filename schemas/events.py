"""The five input events of contract section 1, validated straight from JSON bytes."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

EventType = Literal["signup", "purchase", "cancellation", "campaign_click", "survey"]

# Input topic name = topic prefix setting (default "crm.") + suffix.
TOPIC_SUFFIXES: Final[dict[EventType, str]] = {
    "signup": "signups",
    "purchase": "purchases",
    "cancellation": "cancellations",
    "campaign_click": "campaign-clicks",
    "survey": "surveys",
}

SCHEMA_VERSION: Final = 1
UNKNOWN_REGION: Final = "unknown"
MAX_AMOUNT: Final = 1_000_000_000

# Error types of the rules that have their own rejection reason; the parser maps them 1:1.
UNKNOWN_SCHEMA_VERSION: Final = "unknown_schema_version"
NAIVE_TIMESTAMP: Final = "naive_timestamp"
WRONG_CURRENCY: Final = "wrong_currency"
INVALID_FIELD: Final = "invalid_field"

# Surrogates can only come from Python callers (the JSON parser rejects lone ones), but they
# would break the UTF-8 encoding of Redis keys and Kafka message keys.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_REGION = re.compile(r"[A-Za-z0-9_-]{2,8}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL_STRING = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt ]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<off_hour>[0-9]{2}):(?P<off_minute>[0-9]{2}))?"
)
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SCORE_RANGES: Final[dict[str, tuple[int, int]]] = {"nps": (0, 10), "csat": (1, 5)}

# The same rules as JSON Schema patterns (ECMA-262), for producers in other languages.
_NO_CONTROL_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
_NO_SPACE_PATTERN = r"^[^\s\u0000-\u001f\u007f-\u009f]+$"
_REGION_PATTERN = r"^[A-Za-z0-9_-]{2,8}$"
_CURRENCY_PATTERN = r"^[A-Z]{3}$"
_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def json_kind(value: object) -> str:
    """The JSON type of a parsed value, for messages that must not echo the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object"


def is_identifier(value: object) -> bool:
    """Whether ``value`` obeys the event_id / customer_id rule (for ids read from bad input)."""
    return isinstance(value, str) and 1 <= len(value) <= 128 and not _CONTROL_CHARS.search(value)


def _invalid(message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(INVALID_FIELD, message, context or None)


def _check_id(value: str) -> str:
    if _CONTROL_CHARS.search(value):
        raise _invalid("must not contain control characters")
    return value


def _check_campaign_id(value: str) -> str:
    if _SPACE_OR_CONTROL.search(value):
        raise _invalid("must not contain whitespace or control characters")
    return value


def _check_currency(value: str) -> str:
    if not _CURRENCY.fullmatch(value):
        raise _invalid("must be an ISO 4217 code of 3 upper-case letters")
    return value


def _check_schema_version(value: Any) -> int:
    # 1 exactly: `true` and `1.0` compare equal to 1 in Python, so check the type too.
    if type(value) is not int or value != SCHEMA_VERSION:
        raise PydanticCustomError(
            UNKNOWN_SCHEMA_VERSION,
            "must be the integer {version} (the only version this processor reads)",
            {"version": SCHEMA_VERSION},
        )
    return value


def _parse_region(value: Any) -> Any:
    if value is None:
        return UNKNOWN_REGION
    if not isinstance(value, str):
        return value  # the str validator reports the type
    if not _REGION.fullmatch(value):
        raise _invalid("must be 2 to 8 letters, digits, '_' or '-'")
    return value.upper()


def _parse_decimal(value: Any) -> Any:
    """Only decimal strings and numbers reach Decimal(): it would accept ' 1', '1_0', 'NaN'."""
    if isinstance(value, bool):
        raise _invalid("must be a decimal number or decimal string, not a boolean")
    if isinstance(value, str) and not _DECIMAL_STRING.fullmatch(value):
        raise _invalid("must be a decimal string like \"19.99\" (digits, optional '.' fraction)")
    return value


def _parse_optional_decimal(value: Any) -> Any:
    return Decimal(0) if value is None else _parse_decimal(value)


def _at_most_places(places: int) -> AfterValidator:
    """Drop trailing zeros past ``places``: "1.500000000" would cost sums their exactness."""
    quantum = Decimal(1).scaleb(-places)

    def trim(value: Decimal) -> Decimal:
        if not value:
            return Decimal(0)  # also turns a valid "-0" cost into 0, never printed "-0.00"
        exponent = value.as_tuple().exponent
        return (
            value.quantize(quantum) if isinstance(exponent, int) and exponent < -places else value
        )

    return AfterValidator(trim)


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _invalid("is out of the representable range once converted to UTC") from None


def _parse_rfc3339(value: Any) -> datetime:
    """RFC 3339 with an offset only: Pydantic alone also takes naive, date-only and epoch input."""
    if isinstance(value, datetime):  # built in Python rather than read from JSON
        if value.utcoffset() is None:
            raise PydanticCustomError(NAIVE_TIMESTAMP, "has no UTC offset")
        return _to_utc(value)
    if not isinstance(value, str):
        raise _invalid("must be an RFC 3339 timestamp string, not {kind}", kind=json_kind(value))
    match = _RFC3339.fullmatch(value)
    if match is None:
        if _DATE_ONLY.fullmatch(value):
            raise _invalid("is a date without a time; send an RFC 3339 timestamp with an offset")
        raise _invalid("is not an RFC 3339 timestamp such as 2026-11-02T09:15:00+09:00")
    if match["utc"] is None and match["sign"] is None:
        raise PydanticCustomError(NAIVE_TIMESTAMP, "has no UTC offset; add Z or +HH:MM")
    off_minute = match["off_minute"]
    if off_minute is None or off_minute < "60":
        # The shape is checked: the C parser builds the value several times faster (it
        # also truncates nanoseconds); what it refuses gets the precise error below.
        try:
            return _to_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    try:
        stamp = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            # Python datetimes stop at microseconds: nanoseconds are truncated.
            int((match["fraction"] or "0")[:6].ljust(6, "0")),
            tzinfo=_offset(match["sign"], match["off_hour"], match["off_minute"]),
        )
    except ValueError:
        raise _invalid("is not a valid date, time or UTC offset") from None
    return _to_utc(stamp)


@functools.lru_cache(maxsize=256)
def _offset(sign: str | None, hours: str | None, minutes: str | None) -> timezone:
    if sign is None or hours is None or minutes is None:
        return UTC
    if int(minutes) >= 60:
        raise ValueError("offset minutes out of range")
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return timezone(-delta if sign == "-" else delta)


Identifier = Annotated[
    str,
    Field(min_length=1, max_length=128, json_schema_extra={"pattern": _NO_CONTROL_PATTERN}),
    AfterValidator(_check_id),
]
CampaignId = Annotated[
    str,
    Field(min_length=1, max_length=128, json_schema_extra={"pattern": _NO_SPACE_PATTERN}),
    AfterValidator(_check_campaign_id),
]
OccurredAt = Annotated[
    datetime,
    BeforeValidator(_parse_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _RFC3339_PATTERN}),
]


def _decimal_json_schema(minimum: dict[str, int], places: int, *, nullable: bool) -> WithJsonSchema:
    forms: list[dict[str, Any]] = [
        {"type": "number", **minimum, "maximum": MAX_AMOUNT},
        {"type": "string", "pattern": _DECIMAL_PATTERN},
    ]
    if nullable:
        forms.append({"type": "null"})
    return WithJsonSchema(
        {"anyOf": forms, "$comment": f"at most {places} decimal places; strings are exact"}
    )


Amount = Annotated[
    Decimal,
    BeforeValidator(_parse_decimal),
    Field(gt=0, le=MAX_AMOUNT, decimal_places=4, allow_inf_nan=False),
    _at_most_places(4),
    _decimal_json_schema({"exclusiveMinimum": 0}, 4, nullable=False),
]
Cost = Annotated[
    Decimal,
    BeforeValidator(_parse_optional_decimal),
    Field(ge=0, le=MAX_AMOUNT, decimal_places=6, allow_inf_nan=False),
    _at_most_places(6),
    _decimal_json_schema({"minimum": 0}, 6, nullable=True),
]
Region = Annotated[
    str,
    BeforeValidator(_parse_region),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": _REGION_PATTERN}, {"type": "null"}]}),
]


class BaseEvent(BaseModel):
    """Fields every input event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    event_type: ClassVar[EventType]

    event_id: Identifier = Field(
        description="Unique id of the event (the dedupe key): 1 to 128 characters, no control "
        "characters."
    )
    customer_id: Identifier = Field(
        description="The customer: 1 to 128 characters, no control characters; the Kafka "
        "message key must be this id as UTF-8."
    )
    occurred_at: OccurredAt = Field(
        description="Event time, RFC 3339 with a UTC offset (Z or +HH:MM), e.g. "
        "2026-11-02T09:15:00+09:00; a timestamp without offset is invalid. Read as UTC."
    )
    schema_version: Annotated[int, BeforeValidator(_check_schema_version)] = Field(
        default=SCHEMA_VERSION,
        description="Version of the event schema; optional, only 1 is accepted.",
        json_schema_extra={"const": SCHEMA_VERSION},
    )


class Signup(BaseEvent):
    """A customer signs up (topic suffix 'signups')."""

    event_type: ClassVar[EventType] = "signup"

    region: Region = Field(
        default=UNKNOWN_REGION,
        description="Region code: 2 to 8 letters, digits, '_' or '-'; upper-cased. Absent or "
        "null means the region 'unknown'.",
    )
    campaign_id: CampaignId | None = Field(
        default=None,
        description="The campaign that acquired the customer: 1 to 128 characters, no "
        "whitespace or control characters.",
    )
    channel: str | None = Field(default=None, description="Acquisition channel, free text.")


class Purchase(BaseEvent):
    """A customer places an order (topic suffix 'purchases')."""

    event_type: ClassVar[EventType] = "purchase"

    order_id: str = Field(min_length=1, max_length=128, description="The order, 1 to 128 chars.")
    amount: Amount = Field(
        description="Order amount, > 0 and <= 1000000000, at most 4 decimal places; a JSON "
        'number or a decimal string such as "19.99" (exact).'
    )
    currency: Annotated[str, AfterValidator(_check_currency)] = Field(
        description="ISO 4217 code (3 upper-case letters); must equal the processor's "
        "reporting currency (default USD).",
        json_schema_extra={"pattern": _CURRENCY_PATTERN},
    )

    @field_validator("currency")
    @classmethod
    def _reporting_currency(cls, value: str, info: ValidationInfo) -> str:
        # The reporting currency is a setting, so it comes in the validation context.
        context = info.context if isinstance(info.context, dict) else {}
        expected = context.get("reporting_currency")
        if expected is not None and value != expected:
            raise PydanticCustomError(
                WRONG_CURRENCY,
                "is {currency}, not the reporting currency {expected}",
                {"currency": value, "expected": expected},
            )
        return value


class Cancellation(BaseEvent):
    """A customer cancels (topic suffix 'cancellations')."""

    event_type: ClassVar[EventType] = "cancellation"

    reason: str | None = Field(default=None, description="Why the customer left, free text.")


class CampaignClick(BaseEvent):
    """A customer clicks a campaign (topic suffix 'campaign-clicks')."""

    event_type: ClassVar[EventType] = "campaign_click"

    campaign_id: CampaignId = Field(
        description="The campaign: 1 to 128 characters, no whitespace or control characters."
    )
    cost: Cost = Field(
        default=Decimal(0),
        description="Cost of the click, >= 0 and <= 1000000000, at most 6 decimal places; a "
        "JSON number or a decimal string. Absent or null means 0.",
    )


class Survey(BaseEvent):
    """A customer answers an NPS or CSAT survey (topic suffix 'surveys')."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"survey_type": {"const": "csat"}}},
            "then": {"properties": {"score": {"minimum": 1, "maximum": 5}}},
        }
    )

    event_type: ClassVar[EventType] = "survey"

    survey_type: Literal["nps", "csat"] = Field(description="Which survey: 'nps' or 'csat'.")
    score: StrictInt = Field(
        description="Integer score: 0 to 10 for nps, 1 to 5 for csat.",
        json_schema_extra={"minimum": 0, "maximum": 10},
    )

    @field_validator("score")
    @classmethod
    def _score_in_range(cls, value: int, info: ValidationInfo) -> int:
        survey_type = info.data.get("survey_type")
        # Without a valid survey_type there is no range; that field's own error is reported.
        if survey_type not in _SCORE_RANGES:
            return value
        low, high = _SCORE_RANGES[survey_type]
        if not low <= value <= high:
            raise _invalid(
                "must be between {low} and {high} for {survey_type}",
                low=low,
                high=high,
                survey_type=survey_type,
            )
        return value


Event: TypeAlias = Signup | Purchase | Cancellation | CampaignClick | Survey

EVENT_MODELS: Final[dict[EventType, type[Event]]] = {
    "signup": Signup,
    "purchase": Purchase,
    "cancellation": Cancellation,
    "campaign_click": CampaignClick,
    "survey": Survey,
}
