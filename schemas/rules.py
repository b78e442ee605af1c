"""The field rules of the input events that msgspec cannot express, as plain functions.

``schemas.events`` declares each event once and names these rules beside its fields; this
module only holds their bodies. It is typed for mypyc, which compiles it where a C compiler
exists (setup.py): every input message runs several of these, and a compiled call costs a
fraction of an interpreted one. The same file runs interpreted elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from msgspec import Struct
from msgspec.structs import force_setattr

UNKNOWN_REGION: Final = "unknown"
MAX_AMOUNT: Final = 1_000_000_000
# Micro-units (the customer stage's money unit) per whole unit of the currency.
MICROS_PER_UNIT: Final = 1_000_000

# Rules with a rejection reason of their own; schemas.parse maps them 1:1.
UNKNOWN_SCHEMA_VERSION: Final = "unknown_schema_version"
NAIVE_TIMESTAMP: Final = "naive_timestamp"
WRONG_CURRENCY: Final = "wrong_currency"
INVALID_FIELD: Final = "invalid_field"

# JSON Schema patterns (ECMA-262) for producers; the checks below compile the same strings.
ID_PATTERN: Final = r"^[^\u0000-\u001f\u007f-\u009f]*$"
CAMPAIGN_ID_PATTERN: Final = r"^[^\s\u0000-\u001f\u007f-\u009f]+$"
REGION_PATTERN: Final = r"^[A-Za-z0-9_-]{2,8}$"
CURRENCY_PATTERN: Final = r"^[A-Z]{3}$"
DECIMAL_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?$"
_ID: Final = re.compile(ID_PATTERN)
_CAMPAIGN_ID: Final = re.compile(CAMPAIGN_ID_PATTERN)
_REGION: Final = re.compile(REGION_PATTERN)
_CURRENCY: Final = re.compile(CURRENCY_PATTERN)
_DECIMAL: Final = re.compile(DECIMAL_PATTERN)


class RuleError(ValueError):
    """A broken rule: the rejection reason and a phrase that never quotes the input."""

    def __init__(self, reason: str, phrase: str, field: str | None = None) -> None:
        super().__init__(f"{field} {phrase}" if field else phrase)
        self.reason = reason
        self.phrase = phrase
        self.field = field


def invalid(phrase: str) -> RuleError:
    return RuleError(INVALID_FIELD, phrase)


_SURROGATES: Final = re.compile("[" + chr(0xD800) + "-" + chr(0xDFFF) + "]")


def _no_surrogates(value: str) -> bool:
    # Surrogates only come from Python callers (msgspec refuses lone ones in JSON) but would
    # break the UTF-8 of Redis and Kafka keys.
    return _SURROGATES.search(value) is None


def check_id(value: str) -> str:
    """Ids: ``isprintable`` passes nearly all at once; only the rest meet the exact pattern."""
    if value.isprintable() or (_ID.fullmatch(value) is not None and _no_surrogates(value)):
        return value
    raise invalid("must not contain control characters")


def check_campaign_id(value: str | None) -> str | None:
    if value is None or (value.isprintable() and " " not in value):
        return value
    if _CAMPAIGN_ID.fullmatch(value) is not None and _no_surrogates(value):
        return value
    raise invalid("must not contain whitespace or control characters")


def check_currency(value: str) -> str:
    if _CURRENCY.fullmatch(value) is not None:
        return value
    raise invalid("must be an ISO 4217 code of 3 upper-case letters")


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
        raise invalid("is out of the representable range once converted to UTC") from None


def check_reporting_currency(currency: str, reporting_currency: str) -> None:
    """The reporting currency is a setting, so this rule runs in the parser, not on decode."""
    if currency != reporting_currency:
        raise RuleError(
            WRONG_CURRENCY,
            f"is {currency}, not the reporting currency {reporting_currency}",
            "currency",
        )


_DIGITS: Final = "0123456789"
# Whole digits up to which a plain decimal is below MAX_AMOUNT whatever its fraction.
_SAFE_WHOLE_DIGITS: Final = len(str(MAX_AMOUNT)) - 1
# Micro-units per unit of the last digit of a fraction of n digits.
_FRACTION_SCALE: Final = tuple(10 ** (6 - digits) for digits in range(7))


def plain_fraction_digits(value: str, places: int) -> int:
    """The fraction digits of a plain decimal string (ASCII digits, an optional '.' with up to
    ``places`` digits after it, fewer than 10 whole digits), or -1 when it is not that plain
    and needs the exact look. A strip and a find in C: a regular expression took longer."""
    rest = value.strip(_DIGITS)
    if not rest:
        return 0 if 0 < len(value) <= _SAFE_WHOLE_DIGITS else -1
    if rest != ".":
        return -1
    dot = value.find(".")
    fraction = len(value) - dot - 1
    return fraction if 0 < dot <= _SAFE_WHOLE_DIGITS and 0 < fraction <= places else -1


def _with_micros(amount: Decimal, micro_units: int) -> Decimal:
    # Amount and Cost keep their micro-units in a slot: the customer stage sums those.
    setattr(amount, "micros", micro_units)  # noqa: B010  # a slot of the subclass, not typed here
    return amount


def money(
    kind: type[Decimal],
    value: object,
    places: int,
    exclusive: bool,
    null: Decimal | None = None,
) -> Decimal:
    """A decimal number or decimal string (exact) as ``kind``: > 0 (``exclusive``) or >= 0,
    at most MAX_AMOUNT, at most ``places`` decimal places (trailing zeros past them go);
    ``null`` is what a JSON null means, where the field may be null."""
    if value is None and null is not None:
        return null
    if type(value) is str:
        fraction = plain_fraction_digits(value, places)
        if fraction >= 0:
            digits = int(value.replace(".", "") if fraction else value)
            micro_units = digits * _FRACTION_SCALE[fraction]
            if micro_units:
                return _with_micros(kind(value), micro_units)
            if not exclusive:
                return _with_micros(kind(0), 0)  # a valid "0.00" cost is 0
        if not _DECIMAL.fullmatch(value):
            raise invalid("must be a decimal string like \"19.99\" (digits, optional '.')")
    elif type(value) is not int and type(value) is not Decimal:
        raise invalid(f"must be a decimal number or decimal string, not {json_kind(value)}")
    number = Decimal(value)  # str, int or Decimal, as checked
    if not number.is_finite():
        raise invalid("must be a finite number")
    if number < 0 or (exclusive and number == 0) or number > MAX_AMOUNT:
        bound = "greater than" if exclusive else "at least"
        raise invalid(f"must be {bound} 0 and at most {MAX_AMOUNT}")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < 0:
        if exponent < -places:
            # "1.500000000": only the trailing zeros may go, keeping sums exact and short.
            quantized = number.quantize(Decimal(1).scaleb(-places))
            if quantized != number:
                raise invalid(f"must have at most {places} decimal places")
            number = quantized
    elif exponent:
        number = number.quantize(Decimal(1))  # 1E+3 from a JSON number reads 1000
    number = number if number else Decimal(0)  # a valid "-0" cost is 0, never "-0.00"
    return _with_micros(kind(number), int(number.scaleb(6)))


def micros(amount: Decimal) -> int:
    """A validated money amount (at most 6 places) as exact integer micro-units."""
    known: int | None = getattr(amount, "micros", None)
    return int(amount.scaleb(6)) if known is None else known


def region(kind: type[str], value: object, unknown: str) -> str:
    """A region code as ``kind``, upper-cased; ``null`` is ``unknown``."""
    if value is None:
        return unknown
    if type(value) is not str:
        raise invalid(f"must be a string, not {json_kind(value)}")
    if 2 <= len(value) <= 8 and value.isascii() and value.isalnum():
        return kind(value.upper())
    if _REGION.fullmatch(value) is None:
        raise invalid("must be 2 to 8 letters, digits, '_' or '-'")
    return kind(value.upper())


class OutOfRange:
    """A JSON number no Decimal can hold."""

    def __repr__(self) -> str:
        return "OUT_OF_RANGE"


OUT_OF_RANGE: Final = OutOfRange()


def exact_number(text: str) -> object:
    """msgspec's ``float_hook``: a JSON number as an exact Decimal.

    Exponents past Decimal's limits (``1E+1000000000000000000``) become ``OUT_OF_RANGE``,
    which no field accepts: raising here would escape msgspec as a bare InvalidOperation.
    """
    try:
        return Decimal(text)
    except InvalidOperation:
        return OUT_OF_RANGE


def json_kind(value: object) -> str:
    """The JSON type of a parsed value, for messages that must not echo the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal | OutOfRange):
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


# The custom field types' decoders, by type; schemas.events fills it beside the types.
DECODE_HOOKS: Final[dict[type, Callable[[object], object]]] = {}


def decode_hook(kind: type, value: object) -> object:
    """msgspec's ``dec_hook``: a custom field type from the JSON value."""
    decode = DECODE_HOOKS.get(kind)
    if decode is None:
        raise TypeError(f"no decoder for {kind.__name__}")
    return decode(value)


def run_checks(event: Struct, checks: tuple[tuple[str, Callable[[Any], Any]], ...]) -> None:
    """Apply each (field name, rule) to a decoded event; a rule may normalise its value."""
    for name, check in checks:
        value = getattr(event, name)
        checked = check(value)
        if checked is not value:
            force_setattr(event, name, checked)
