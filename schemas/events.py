"""The five input events of contract section 1, each declared once as a msgspec Struct.

A field's type and ``msgspec.Meta`` carry what msgspec checks in C while decoding (types,
lengths, bounds, aware timestamps); a ``Check`` beside it in the same ``Annotated`` carries
the rule msgspec cannot express, run by ``__post_init__``. Money and regions are small
custom types decoded by ``decode_hook`` (they must see the JSON text or ``null``). The
parser (``schemas.parse``), the JSON Schemas (``schemas.jsonschema``) and ``kpi replay``
all read these declarations; no rule is written twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias, cast, get_args

import msgspec
from msgspec import Meta

from schemas import rules
from schemas.rules import (
    CAMPAIGN_ID_PATTERN,
    CURRENCY_PATTERN,
    DECIMAL_PATTERN,
    ID_PATTERN,
    INVALID_FIELD,
    MAX_AMOUNT,
    REGION_PATTERN,
    UNKNOWN_REGION,
    RuleError,
    check_campaign_id,
    check_currency,
    check_id,
    check_occurred_at,
    decode_hook,
    exact_number,
)

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
SCORE_RANGES: Final[dict[str, tuple[int, int]]] = {"nps": (0, 10), "csat": (1, 5)}
# msgspec's RFC 3339 parser takes any number of fraction digits (rounded to microseconds).
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


@dataclass(frozen=True, slots=True)
class Check:
    """A rule msgspec cannot express: returns the (normalised) value or raises RuleError."""

    run: Callable[[Any], Any]


def check_reporting_currency(event: Purchase, reporting_currency: str) -> None:
    """The reporting currency is a setting, so this rule runs in the parser, not on decode."""
    rules.check_reporting_currency(event.currency, reporting_currency)


class Amount(Decimal):
    """An order amount: > 0, at most 4 decimal places (``rules.money``)."""

    # Exact micro-units, set by rules.money as it reads the amount (rules.micros reads it).
    __slots__ = ("micros",)
    micros: int


class Cost(Decimal):
    """A click's cost: >= 0, at most 6 decimal places; ``null`` is 0 (``rules.money``)."""

    __slots__ = ("micros",)
    micros: int


class Region(str):
    """Region code, upper-cased; ``null`` is the region ``unknown`` (``rules.region``)."""

    __slots__ = ()


ZERO_COST: Final = Cost(0)
ZERO_COST.micros = 0
UNKNOWN: Final = Region(UNKNOWN_REGION)
rules.DECODE_HOOKS.update(
    {
        Amount: functools.partial(rules.money, Amount, places=4, exclusive=True),
        Cost: functools.partial(rules.money, Cost, places=6, exclusive=False, null=ZERO_COST),
        Region: functools.partial(rules.region, Region, unknown=UNKNOWN),
    }
)


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
        # The field rules in a compiled loop (msgspec binds this method when the class is
        # made, so the body cannot be swapped per class); then the rules across fields.
        rules.run_checks(self, self.checks)
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


def _declared_checks(model: type[BaseEvent]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """(field name, rule) of every ``Check`` in ``model``'s declarations, in field order."""
    return tuple(
        (field.name, meta.run)
        for field in msgspec.structs.fields(model)
        for meta in _metadata(field.type)
        if isinstance(meta, Check)
    )


for _model in EVENT_MODELS.values():
    _model.checks = _declared_checks(_model)

# One decoder per event: custom types through decode_hook, JSON numbers in them exact.
DECODERS: Final[dict[EventType, msgspec.json.Decoder[Any]]] = {
    name: msgspec.json.Decoder(model, dec_hook=decode_hook, float_hook=exact_number)
    for name, model in EVENT_MODELS.items()
}


def field_names(model: type[Event]) -> tuple[str, ...]:
    """The JSON field names of an event, in declaration order."""
    return tuple(field.encode_name for field in msgspec.structs.fields(model))
