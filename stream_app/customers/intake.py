"""A fast path from the common, well-formed message straight to a stored event.

Full validation (``schemas.parse_event``) builds a Pydantic model through a dozen Python
validators: about 15 µs per message, most of the customer stage's budget. Nearly every real
message has one plain shape (string ids, an RFC 3339 timestamp with ``Z`` or an offset, money
as a short decimal string), which a few exact checks recognise for a third of the cost. This
module accepts only that shape and answers None for anything else, which then takes the full
path, so every rejection and its reason still come from ``schemas``. It must accept a strict
subset of what ``parse_event`` accepts and produce the same stored event:
``tests/test_intake_fastpath.py`` checks both on valid, hostile and borderline messages.

``fast_stored`` is the compiled twin of ``fast_stored_python`` (``_intake.c``, built by the
package install) where it was built, else the Python function itself. The compiled one reads
the JSON bytes directly and recognises a subset of these messages (no escapes, no non-ASCII
text), in an eighth of the time; ``tests/test_intake_compiled.py`` checks it against this one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Protocol

import orjson

from schemas import EventType
from schemas.events import SCHEMA_VERSION
from schemas.parse import DEFAULT_MAX_BYTES
from schemas.rules import MAX_AMOUNT
from stream_app.customers.timeline import (
    CANCELLATION,
    CLICK,
    PURCHASE,
    SIGNUP,
    SURVEY,
    StoredEvent,
    to_us,
)

# Ids: schemas.events allows 1 to 128 characters without control characters or surrogates,
# and for campaign ids without whitespace. Here ``str.isprintable`` stands in for those
# classes: it refuses all of them and more (other invisible and separator characters, which
# then take the full path), in a third of a regular expression's time.
_ID_MAX = 128
_REGION = re.compile(r"[A-Za-z0-9_-]{2,8}")
# Years 1900-2099 only: near the ends of the datetime range a UTC conversion can overflow,
# which full validation reports.
_TIMESTAMP = re.compile(
    r"(?:19|20)[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-5][0-9])"
)
# Unsigned decimal strings with at most 10 integer digits; the places are checked per field.
# Micro-units per unit of the last digit of a fraction of n digits.
_FRACTION_SCALE: Final = tuple(10 ** (6 - n) for n in range(7))
_MAX_MICROS: Final = MAX_AMOUNT * 1_000_000

_COMMON: Final = frozenset({"event_id", "customer_id", "occurred_at", "schema_version"})
_FIELDS: Final[dict[EventType, frozenset[str]]] = {
    "signup": _COMMON | {"region", "campaign_id", "channel"},
    "purchase": _COMMON | {"order_id", "amount", "currency"},
    "cancellation": _COMMON | {"reason"},
    "campaign_click": _COMMON | {"campaign_id", "cost"},
    "survey": _COMMON | {"survey_type", "score"},
}
_SCORES: Final = {"nps": ("n", 0, 10), "csat": ("c", 1, 5)}


def _micros(value: Any, places: int) -> int | None:
    """Micro-units of a plain decimal string or integer with at most ``places`` decimals."""
    if type(value) is int:
        return value * 1_000_000 if 0 <= value <= MAX_AMOUNT else None
    if type(value) is not str:
        return None  # floats keep the full path: their literal may have been rounded
    # String methods, not a regular expression: a match with groups was 6% of the stage.
    # ``isdigit`` alone also takes other scripts' digits; ``isascii`` keeps it to 0-9.
    whole, dot, fraction = value.partition(".")
    if not (0 < len(whole) <= 10 and whole.isascii() and whole.isdigit()):
        return None
    micros = int(whole) * 1_000_000
    if dot:
        if not (0 < len(fraction) <= places and fraction.isascii() and fraction.isdigit()):
            return None
        micros += int(fraction) * _FRACTION_SCALE[len(fraction)]
    return micros if micros <= _MAX_MICROS else None


def _plain_campaign(value: str) -> bool:
    return 0 < len(value) <= _ID_MAX and value.isprintable() and " " not in value


def _optional_text(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    return value is None or type(value) is str


def _signup(data: dict[str, Any], t_us: int, event_id: str, currency: str) -> StoredEvent | None:
    region = data.get("region")
    if region is None:
        region = "unknown"
    elif type(region) is str and _REGION.fullmatch(region):
        region = region.upper()
    else:
        return None
    campaign = data.get("campaign_id")
    if campaign is not None and not (type(campaign) is str and _plain_campaign(campaign)):
        return None
    if not _optional_text(data, "channel"):
        return None
    return [t_us, SIGNUP, event_id, region, campaign]


def _purchase(data: dict[str, Any], t_us: int, event_id: str, currency: str) -> StoredEvent | None:
    order = data.get("order_id")
    if type(order) is not str or not 1 <= len(order) <= 128 or data.get("currency") != currency:
        return None
    amount = _micros(data.get("amount"), 4)
    if not amount:  # absent, malformed or zero: the amount must be > 0
        return None
    return [t_us, PURCHASE, event_id, amount]


def _cancellation(
    data: dict[str, Any], t_us: int, event_id: str, currency: str
) -> StoredEvent | None:
    if not _optional_text(data, "reason"):
        return None
    return [t_us, CANCELLATION, event_id]


def _click(data: dict[str, Any], t_us: int, event_id: str, currency: str) -> StoredEvent | None:
    campaign = data.get("campaign_id")
    if type(campaign) is not str or not _plain_campaign(campaign):
        return None
    cost = data.get("cost")
    micros = 0 if cost is None else _micros(cost, 6)
    if micros is None:
        return None
    return [t_us, CLICK, event_id, campaign, micros]


def _survey(data: dict[str, Any], t_us: int, event_id: str, currency: str) -> StoredEvent | None:
    survey_type = data.get("survey_type")
    kind = _SCORES.get(survey_type) if type(survey_type) is str else None
    score = data.get("score")
    if kind is None or type(score) is not int or not kind[1] <= score <= kind[2]:
        return None
    return [t_us, SURVEY, event_id, kind[0], score]


_PAYLOAD: Final[dict[EventType, Callable[[dict[str, Any], int, str, str], StoredEvent | None]]] = {
    "signup": _signup,
    "purchase": _purchase,
    "cancellation": _cancellation,
    "campaign_click": _click,
    "survey": _survey,
}


def fast_stored_python(
    event_type: EventType,
    value: bytes | None,
    key: bytes | None,
    reporting_currency: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[str, StoredEvent] | None:
    """``(customer_id, stored event)`` for a message of the plain shape, else None."""
    if not value or len(value) > max_bytes:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not _FIELDS[event_type].issuperset(data):
        return None
    event_id = data.get("event_id")
    customer = data.get("customer_id")
    stamp = data.get("occurred_at")
    if (
        type(event_id) is not str
        or type(customer) is not str
        or type(stamp) is not str
        or not 0 < len(event_id) <= _ID_MAX
        or not 0 < len(customer) <= _ID_MAX
        or not event_id.isprintable()
        or not customer.isprintable()
        or not _TIMESTAMP.fullmatch(stamp)
    ):
        return None
    version = data.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        return None
    if key is not None and key != customer.encode():
        return None
    try:
        t_us = to_us(datetime.fromisoformat(stamp))
    except ValueError:
        return None
    event = _PAYLOAD[event_type](data, t_us, event_id, reporting_currency)
    return None if event is None else (customer, event)


class FastStored(Protocol):
    def __call__(
        self,
        event_type: EventType,
        value: bytes | None,
        key: bytes | None,
        reporting_currency: str,
        max_bytes: int = ...,
        /,
    ) -> tuple[str, StoredEvent] | None: ...


# The compiled loop of ``PartitionState.offer_runs`` over one topic's plain messages.
OfferRun = Callable[
    [list[Any], int, str, EventType, str, int, int | None, int, dict[str, Any], set[Any],
     list[Any], int],
    tuple[int, int, int | None, int, int],
]  # fmt: skip

# The compiled loop of ``PartitionState.drain`` over ready buffer entries.
DrainRun = Callable[
    [list[Any], int, set[Any], dict[str, Any], dict[str, list[Any]], list[int], int | None,
     int],
    tuple[int, int | None, int],
]  # fmt: skip

_compiled: FastStored | None
offer_run: OfferRun | None
drain_run: DrainRun | None
try:
    from stream_app.customers._intake import drain_run as _built_drain_run
    from stream_app.customers._intake import fast_stored as _built
    from stream_app.customers._intake import offer_run as _built_offer_run

    _compiled = _built
    offer_run = _built_offer_run
    drain_run = _built_drain_run
except ImportError:  # installed without a C compiler: the same answers, slower
    _compiled = None
    offer_run = None
    drain_run = None

# The engine logs which one it runs with.
COMPILED: Final = _compiled is not None
fast_stored: FastStored = fast_stored_python if _compiled is None else _compiled
