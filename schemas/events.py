"""The five input events of contract section 1, each declared once as a msgspec Struct.

A field's type and ``msgspec.Meta`` carry what msgspec checks in C while decoding (types,
lengths, bounds, aware timestamps); a ``Check`` beside it in the same ``Annotated`` carries
the rule msgspec cannot express, run by ``__post_init__``. Money and regions are small
custom types decoded by ``decode_hook`` (they must see the JSON text or ``null``). The
parser (``schemas.parse``), the JSON Schemas (``schemas.jsonschema``) and ``kpi replay``
all read these declarations; no rule is written twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias, cast, get_args

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

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

# Rules with a rejection reason of their own; schemas.parse maps them 1:1.
UNKNOWN_SCHEMA_VERSION: Final = "unknown_schema_version"
NAIVE_TIMESTAMP: Final = "naive_timestamp"
WRONG_CURRENCY: Final = "wrong_currency"
INVALID_FIELD: Final = "invalid_field"

# JSON Schema patterns (ECMA-262) for producers; the Python checks compile the same strings.
ID_PATTERN: Final = r"^[^\u0000-\u001f\u007f-\u009f]*$"
CAMPAIGN_ID_PATTERN: Final = r"^[^\s\u0000-\u001f\u007f-\u009f]+$"
REGION_PATTERN: Final = r"^[A-Za-z0-9_-]{2,8}$"
CURRENCY_PATTERN: Final = r"^[A-Z]{3}$"
DECIMAL_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?$"
# msgspec's RFC 3339 parser takes any number of fraction digits (rounded to microseconds).
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_ID = re.compile(ID_PATTERN)
_CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
_REGION = re.compile(REGION_PATTERN)
_CURRENCY = re.compile(CURRENCY_PATTERN)
_DECIMAL = re.compile(DECIMAL_PATTERN)
SCORE_RANGES: Final[dict[str, tuple[int, int]]] = {"nps": (0, 10), "csat": (1, 5)}


class RuleError(ValueError):
    """A broken rule: the rejection reason and a phrase that never quotes the input."""

    def __init__(self, reason: str, phrase: str, field: str | None = None) -> None:
        super().__init__(f"{field} {phrase}" if field else phrase)
        self.reason = reason
        self.phrase = phrase
        self.field = field


def _invalid(phrase: str) -> RuleError:
    return RuleError(INVALID_FIELD, phrase)


@dataclass(frozen=True, slots=True)
class Check:
    """A rule msgspec cannot express: returns the (normalised) value or raises RuleError."""

    run: Callable[[Any], Any]


def _no_surrogates(value: str) -> bool:
    # Surrogates only come from Python callers (msgspec refuses lone ones in JSON) but would
    # break the UTF-8 of Redis and Kafka keys.
    return not any("\ud800" <= char <= "\udfff" for char in value)


def check_id(value: str) -> str:
    """Ids: ``isprintable`` passes nearly all at once; only the rest meet the exact pattern."""
    if value.isprintable() or (_ID.fullmatch(value) and _no_surrogates(value)):
        return value
    raise _invalid("must not contain control characters")


def check_campaign_id(value: str | None) -> str | None:
    if value is None or (value.isprintable() and " " not in value):
        return value
    if _CAMPAIGN_ID.fullmatch(value) and _no_surrogates(value):
        return value
    raise _invalid("must not contain whitespace or control characters")


def check_currency(value: str) -> str:
    if _CURRENCY.fullmatch(value):
        return value
    raise _invalid("must be an ISO 4217 code of 3 upper-case letters")


def check_occurred_at(value: datetime) -> datetime:
    """Aware, in UTC; decoding already refused naive stamps, Python callers may not have."""
    zone = value.tzinfo
    if zone is UTC:
        return value
    # Decoded stamps always have a fixed offset; only Python callers bring other tzinfos.
    if zone is None or (type(zone) is not timezone and value.utcoffset() is None):
        raise RuleError(NAIVE_TIMESTAMP, "has no UTC offset; add Z or +HH:MM")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _invalid("is out of the representable range once converted to UTC") from None


def check_reporting_currency(event: Purchase, reporting_currency: str) -> None:
    """The reporting currency is a setting, so this rule runs in the parser, not on decode."""
    if event.currency != reporting_currency:
        raise RuleError(
            WRONG_CURRENCY,
            f"is {event.currency}, not the reporting currency {reporting_currency}",
            "currency",
        )


class _Money(Decimal):
    """A decimal number or decimal string (exact), within the bounds of the subclass."""

    places: ClassVar[int]
    minimum: ClassVar[Decimal]
    exclusive: ClassVar[bool]

    @classmethod
    def decode(cls, value: object) -> _Money:
        # JSON numbers arrive as exact Decimals (float_hook), never as floats.
        if type(value) is str:
            if not _DECIMAL.fullmatch(value):
                raise _invalid("must be a decimal string like \"19.99\" (digits, optional '.')")
        elif type(value) is not int and type(value) is not Decimal:
            raise _invalid(f"must be a decimal number or decimal string, not {json_kind(value)}")
        number = Decimal(value)
        if not number.is_finite():
            raise _invalid("must be a finite number")
        low = cls.minimum
        if number < low or (cls.exclusive and number == low) or number > MAX_AMOUNT:
            bound = "greater than" if cls.exclusive else "at least"
            raise _invalid(f"must be {bound} {low} and at most {MAX_AMOUNT}")
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and exponent < 0:
            if exponent < -cls.places:
                # "1.500000000": only the trailing zeros may go, keeping sums exact and short.
                quantized = number.quantize(Decimal(1).scaleb(-cls.places))
                if quantized != number:
                    raise _invalid(f"must have at most {cls.places} decimal places")
                number = quantized
        elif exponent:
            number = number.quantize(Decimal(1))  # 1E+3 from a JSON number reads 1000
        if not number:
            number = Decimal(0)  # a valid "-0" cost is 0, never printed "-0.00"
        return cls(number)


class Amount(_Money):
    places = 4
    minimum = Decimal(0)
    exclusive = True


class Cost(_Money):
    places = 6
    minimum = Decimal(0)
    exclusive = False

    @classmethod
    def decode(cls, value: object) -> _Money:
        return ZERO_COST if value is None else super().decode(value)


ZERO_COST: Final = Cost(0)


class Region(str):
    """Region code, upper-cased; ``null`` is the region ``unknown``."""

    __slots__ = ()

    @classmethod
    def decode(cls, value: object) -> Region:
        if value is None:
            return UNKNOWN
        if type(value) is not str:
            raise _invalid(f"must be a string, not {json_kind(value)}")
        if not _REGION.fullmatch(value):
            raise _invalid("must be 2 to 8 letters, digits, '_' or '-'")
        return cls(value.upper())


UNKNOWN: Final = Region(UNKNOWN_REGION)
CUSTOM_TYPES: Final[dict[type, Callable[[object], object]]] = {
    Amount: Amount.decode,
    Cost: Cost.decode,
    Region: Region.decode,
}


def decode_hook(kind: type, value: object) -> object:
    """msgspec's ``dec_hook``: the custom types above from the JSON value."""
    decode = CUSTOM_TYPES.get(kind)
    if decode is None:
        raise TypeError(f"no decoder for {kind.__name__}")
    return decode(value)


def exact_number(text: str) -> object:
    """msgspec's ``float_hook``: a JSON number as an exact Decimal.

    Exponents past Decimal's limits (``1E+1000000000000000000``) become ``OUT_OF_RANGE``,
    which no field accepts: raising here would escape msgspec as a bare InvalidOperation.
    """
    try:
        return Decimal(text)
    except InvalidOperation:
        return OUT_OF_RANGE


class _OutOfRange:
    """A JSON number no Decimal can hold."""

    def __repr__(self) -> str:
        return "OUT_OF_RANGE"


OUT_OF_RANGE: Final = _OutOfRange()


def json_kind(value: object) -> str:
    """The JSON type of a parsed value, for messages that must not echo the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal | _OutOfRange):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object"


def is_identifier(value: object) -> bool:
    """Whether ``value`` obeys the event_id / customer_id rule (for ids read from bad input)."""
    if not (isinstance(value, str) and 1 <= len(value) <= 128):
        return False
    try:
        check_id(value)
    except RuleError:
        return False
    return True


Identifier = Annotated[
    str,
    Meta(min_length=1, max_length=128, extra_json_schema={"pattern": ID_PATTERN}),
    Check(check_id),
]
CampaignId = Annotated[
    str,
    Meta(min_length=1, max_length=128, extra_json_schema={"pattern": CAMPAIGN_ID_PATTERN}),
]


def _money_schema(minimum: dict[str, int], places: int, *, nullable: bool) -> dict[str, Any]:
    forms: list[dict[str, Any]] = [
        {"type": "number", **minimum, "maximum": MAX_AMOUNT},
        {"type": "string", "pattern": DECIMAL_PATTERN},
    ]
    if nullable:
        forms.append({"type": "null"})
    return {"anyOf": forms, "$comment": f"at most {places} decimal places; strings are exact"}


class BaseEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Fields every input event carries."""

    event_type: ClassVar[EventType]
    # (field name, rule) of every Check in the declarations, in field order.
    checks: ClassVar[tuple[tuple[str, Callable[[Any], Any]], ...]] = ()

    event_id: Annotated[
        Identifier,
        Meta(
            description="Unique id of the event (the dedupe key): 1 to 128 characters, no "
            "control characters."
        ),
    ]
    customer_id: Annotated[
        Identifier,
        Meta(
            description="The customer: 1 to 128 characters, no control characters; the Kafka "
            "message key must be this id as UTF-8."
        ),
    ]
    occurred_at: Annotated[
        datetime,
        Meta(
            tz=True,
            description="Event time, RFC 3339 with a UTC offset (Z or +HH:MM), e.g. "
            "2026-11-02T09:15:00+09:00; a timestamp without offset is invalid. Read as UTC.",
            extra_json_schema={"pattern": RFC3339_PATTERN},
        ),
        Check(check_occurred_at),
    ]
    schema_version: Annotated[
        Literal[1],
        Meta(
            description="Version of the event schema; optional, only 1 is accepted.",
            extra_json_schema={"type": "integer", "const": SCHEMA_VERSION},
        ),
    ] = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Replaced per event class by _compile_checks: the same rules, unrolled.
        for name, check in self.checks:
            value = getattr(self, name)
            checked = check(value)
            if checked is not value:
                force_setattr(self, name, checked)
        self.check_event()

    def check_event(self) -> None:
        """Rules across fields; each field's own rules have passed."""


def _metadata(annotation: Any) -> list[Any]:
    """Every ``Annotated`` extra of a field type, nested ones included."""
    found: list[Any] = []
    while hasattr(annotation, "__metadata__"):
        found.extend(annotation.__metadata__)
        annotation = get_args(annotation)[0]
    return found


class Signup(BaseEvent, frozen=True, kw_only=True, gc=False):
    """A customer signs up (topic suffix 'signups')."""

    event_type: ClassVar[EventType] = "signup"

    region: Annotated[
        Region,
        Meta(
            description="Region code: 2 to 8 letters, digits, '_' or '-'; upper-cased. Absent or "
            "null means the region 'unknown'.",
            extra_json_schema={
                "anyOf": [{"type": "string", "pattern": REGION_PATTERN}, {"type": "null"}]
            },
        ),
    ] = cast(Region, UNKNOWN_REGION)  # plain builtins, which the JSON Schema can show
    campaign_id: Annotated[
        CampaignId | None,
        Meta(
            description="The campaign that acquired the customer: 1 to 128 characters, no "
            "whitespace or control characters."
        ),
        Check(check_campaign_id),
    ] = None
    channel: Annotated[str | None, Meta(description="Acquisition channel, free text.")] = None


class Purchase(BaseEvent, frozen=True, kw_only=True, gc=False):
    """A customer places an order (topic suffix 'purchases')."""

    event_type: ClassVar[EventType] = "purchase"

    order_id: Annotated[
        str, Meta(min_length=1, max_length=128, description="The order, 1 to 128 chars.")
    ]
    amount: Annotated[
        Amount,
        Meta(
            description="Order amount, > 0 and <= 1000000000, at most 4 decimal places; a JSON "
            'number or a decimal string such as "19.99" (exact).',
            extra_json_schema=_money_schema({"exclusiveMinimum": 0}, 4, nullable=False),
        ),
    ]
    currency: Annotated[
        str,
        Meta(
            description="ISO 4217 code (3 upper-case letters); must equal the processor's "
            "reporting currency (default USD).",
            extra_json_schema={"pattern": CURRENCY_PATTERN},
        ),
        Check(check_currency),
    ]


class Cancellation(BaseEvent, frozen=True, kw_only=True, gc=False):
    """A customer cancels (topic suffix 'cancellations')."""

    event_type: ClassVar[EventType] = "cancellation"

    reason: Annotated[str | None, Meta(description="Why the customer left, free text.")] = None


class CampaignClick(BaseEvent, frozen=True, kw_only=True, gc=False):
    """A customer clicks a campaign (topic suffix 'campaign-clicks')."""

    event_type: ClassVar[EventType] = "campaign_click"

    campaign_id: Annotated[
        CampaignId,
        Meta(description="The campaign: 1 to 128 characters, no whitespace or control characters."),
        Check(check_campaign_id),
    ]
    cost: Annotated[
        Cost,
        Meta(
            description="Cost of the click, >= 0 and <= 1000000000, at most 6 decimal places; a "
            "JSON number or a decimal string. Absent or null means 0.",
            extra_json_schema=_money_schema({"minimum": 0}, 6, nullable=True),
        ),
    ] = cast(Cost, Decimal(0))


class Survey(BaseEvent, frozen=True, kw_only=True, gc=False):
    """A customer answers an NPS or CSAT survey (topic suffix 'surveys')."""

    event_type: ClassVar[EventType] = "survey"
    # The per-type ranges for producers; check_event below applies the same table.
    json_schema_extra: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"survey_type": {"const": "csat"}}},
        "then": {
            "properties": {
                "score": {"minimum": SCORE_RANGES["csat"][0], "maximum": SCORE_RANGES["csat"][1]}
            }
        },
    }

    survey_type: Annotated[
        Literal["nps", "csat"], Meta(description="Which survey: 'nps' or 'csat'.")
    ]
    score: Annotated[
        int,
        Meta(
            ge=min(low for low, _ in SCORE_RANGES.values()),
            le=max(high for _, high in SCORE_RANGES.values()),
            description="Integer score: 0 to 10 for nps, 1 to 5 for csat.",
        ),
    ]

    def check_event(self) -> None:
        low, high = SCORE_RANGES[self.survey_type]
        if not low <= self.score <= high:
            raise RuleError(
                INVALID_FIELD, f"must be between {low} and {high} for {self.survey_type}", "score"
            )


Event: TypeAlias = Signup | Purchase | Cancellation | CampaignClick | Survey

EVENT_MODELS: Final[dict[EventType, type[Event]]] = {
    "signup": Signup,
    "purchase": Purchase,
    "cancellation": Cancellation,
    "campaign_click": CampaignClick,
    "survey": Survey,
}


def _compile_checks(model: type[BaseEvent]) -> None:
    """Read the Checks from ``model``'s declarations and unroll them into ``__post_init__``.

    A loop over the checks cost 0.4 µs per event, as much as decoding it; generated
    straight-line code (what dataclasses do for ``__init__``) costs a third of that.
    """
    model.checks = tuple(
        (field.name, meta.run)
        for field in msgspec.structs.fields(model)
        for meta in _metadata(field.type)
        if isinstance(meta, Check)
    )
    namespace: dict[str, Any] = {"set_": force_setattr}
    lines = ["def __post_init__(self):"]
    for index, (name, check) in enumerate(model.checks):
        namespace[f"check_{index}"] = check
        lines += [
            f"    value = self.{name}",
            f"    checked = check_{index}(value)",
            f"    if checked is not value: set_(self, {name!r}, checked)",
        ]
    if model.check_event is not BaseEvent.check_event:
        lines.append("    self.check_event()")
    exec("\n".join(lines), namespace)  # source built from the field names above only
    model.__post_init__ = namespace["__post_init__"]  # type: ignore[method-assign]


for _model in EVENT_MODELS.values():
    _compile_checks(_model)

# One decoder per event: custom types through decode_hook, JSON numbers in them exact.
DECODERS: Final[dict[EventType, msgspec.json.Decoder[Any]]] = {
    name: msgspec.json.Decoder(model, dec_hook=decode_hook, float_hook=exact_number)
    for name, model in EVENT_MODELS.items()
}


def field_names(model: type[Event]) -> tuple[str, ...]:
    """The JSON field names of an event, in declaration order."""
    return tuple(field.encode_name for field in msgspec.structs.fields(model))
