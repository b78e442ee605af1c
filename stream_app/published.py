"""What the processor published, read back: snapshots, cohorts and alerts, checked.

Shared by the terminal view (``kpi watch``) and the web (the dashboard's API and live
updates), so both show the same values and neither imports the other. Each value is checked
against the contract's models (``schemas``), never a second copy of their rules. Nothing
here raises on bad input: a field that is not what the contract says is dropped and counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.exceptions import ResponseError

from schemas import Alert, CampaignSnapshot, SegmentSnapshot
from schemas.cohort import COHORT_DEPTH, GRAINS, Cohort, CohortUpdate, Grain
from schemas.timestamps import UtcDatetime
from stream_app.kpis.cohorts import cohort_start, period_end, to_us
from stream_app.kpis.formulas import SegmentKind
from stream_app.kpis.registry import KPI_BY_NAME, segment_kind
from stream_app.redis_keys import COHORTS_PATTERN, COHORTS_PREFIX, cohorts_key, split_name

Kind = Literal["count", "money", "percent", "score", "ratio"]

# Size caps on what is read: a 5 MB money string fits the contract's pattern, but no
# published value is near 1 KB (a campaign segment, JSON-escaped, is at most ~800 bytes).
MAX_FIELD_BYTES: Final = 1024
MAX_RECORD_BYTES: Final = 64 * 1024


def _field_type(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """The type and constraints of one field of a contract model, to check a value alone."""
    info = model.model_fields[name]
    field_type: Any = Annotated[info.annotation, info]  # a runtime form mypy cannot follow
    return TypeAdapter(field_type)


# Every rule comes from the snapshot models (schemas/kpi.py): a KPI has the same type in both,
# only ``segment`` differs by the segment's kind.
_MODELS: Final[dict[SegmentKind, type[BaseModel]]] = {
    "segment": SegmentSnapshot,
    "campaign": CampaignSnapshot,
}
_FIELD_TYPES: Final = {
    name: _field_type(model, name)
    for model in reversed(_MODELS.values())
    for name in model.model_fields
    if name != "segment"
}
_SEGMENT_TYPES: Final = {kind: _field_type(model, "segment") for kind, model in _MODELS.items()}
_KNOWN_FIELDS: Final = frozenset(_FIELD_TYPES) | {"segment"}
_TIME: Final = TypeAdapter(UtcDatetime)


def kpi_kind(name: str) -> Kind:
    """How a KPI is shown: money strings, percentages, 0-100 scores, plain ratios or counts."""
    kpi = KPI_BY_NAME.get(name)
    return "count" if kpi is None else kpi.display


def _check(adapter: TypeAdapter[Any], value: Any) -> tuple[bool, Any]:
    # Strict JSON mode: what the publisher wrote is JSON, and no "2" passes for a number.
    if isinstance(value, str) and len(value) > MAX_FIELD_BYTES:
        return False, None
    try:
        return True, adapter.validate_json(orjson.dumps(value), strict=True)
    except (ValidationError, orjson.JSONEncodeError):
        return False, None


def clean_value(name: str, value: Any) -> tuple[bool, Any]:
    """``(True, value)`` if ``value`` fits the snapshot model's field ``name``, else False.

    The value comes back as the model reads it: times as UTC ``datetime``, ratios as float.
    """
    if name == "segment":
        if not isinstance(value, str):
            return False, None
        return _check(_SEGMENT_TYPES[segment_kind(value)], value)
    adapter = _FIELD_TYPES.get(name)
    return (False, None) if adapter is None else _check(adapter, value)


def is_segment(text: str) -> bool:
    """Whether ``text`` is a segment name the contract's snapshots can have."""
    return clean_value("segment", text)[0]


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 timestamp with an offset, in UTC; None if it is not one (or has no UTC form)."""
    moment = _check(_TIME, text)[1]
    return moment if isinstance(moment, datetime) else None


def describes(snapshot: Mapping[str, Any], window: str, segment: str) -> bool:
    """Whether a cleaned snapshot says it is the one of ``window`` and ``segment``.

    One whose ``window`` or ``segment`` is missing, malformed or another key's would show
    some other numbers under this key, so readers leave it out whole.
    """
    return snapshot.get("window") == window and snapshot.get("segment") == segment


def clean_snapshot(
    raw: Mapping[str, Any], *, as_published: bool = False
) -> tuple[dict[str, Any], int]:
    """The known fields of a decoded snapshot that pass ``clean_value``, and how many failed.

    Fields the view does not know (a newer processor's KPIs) are ignored, not counted. With
    ``as_published`` the values that pass are kept as they were published (timestamps stay
    RFC 3339 strings), for the HTTP API; otherwise cleaned (timestamps as ``datetime``).
    """
    known = _KNOWN_FIELDS
    snapshot: dict[str, Any] = {}
    bad = 0
    for name, value in raw.items():
        if name not in known:
            continue
        ok, cleaned = clean_value(name, value)
        if ok:
            snapshot[name] = value if as_published else cleaned
        else:
            bad += 1
    return snapshot, bad


def decode_hash(
    fields: Mapping[bytes | str, bytes | str], *, as_published: bool = False
) -> tuple[dict[str, Any], int]:
    """A ``HGETALL kpi:<window>:<segment>`` reply (values JSON-encoded) as a clean snapshot."""
    raw: dict[str, Any] = {}
    bad = 0
    for name, encoded in fields.items():
        if len(encoded) > MAX_FIELD_BYTES:
            bad += 1
            continue
        try:
            key = name.decode() if isinstance(name, bytes) else name
            raw[key] = orjson.loads(encoded)
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            bad += 1
    snapshot, invalid = clean_snapshot(raw, as_published=as_published)
    return snapshot, bad + invalid


def decode_snapshot(
    data: bytes | str, *, as_published: bool = False
) -> tuple[dict[str, Any], int] | None:
    """A snapshot published as one JSON object; None if it is not one (or is over the cap)."""
    if len(data) > MAX_RECORD_BYTES:
        return None
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    return clean_snapshot(raw, as_published=as_published)


# --- cohorts (contract section 6) ---------------------------------------------------------

# A cohort of 26 periods is about 5 KB of JSON; a field name is one RFC 3339 time.
MAX_COHORT_BYTES: Final = 32 * 1024
# Fields read of one cohort hash at most (the engine keeps 26 or 12): a hash grown huge by
# something else is read in part, not whole into memory.
MAX_COHORT_FIELDS: Final = 1000
MAX_COHORT_SEGMENTS: Final = 10_000
_COHORT_SEGMENT: Final = _field_type(CohortUpdate, "segment")


def is_cohort_segment(text: str) -> bool:
    """Whether ``text`` is a cohort segment the contract allows (``schemas.cohort``)."""
    return _check(_COHORT_SEGMENT, text)[0]


def _consistent(cohort: Cohort, grain: Grain) -> bool:
    """The rules of section 6 the model alone cannot see: the cohort starts on its grain's
    calendar, periods run 0, 1, ... with the calendar's ends, only the last is incomplete."""
    try:
        return _on_calendar(cohort, grain)
    except (ValueError, OverflowError):  # a period would end past year 9999
        return False


def _on_calendar(cohort: Cohort, grain: Grain) -> bool:
    start = to_us(cohort.cohort_start)
    periods = cohort.periods
    if cohort_start(start, grain) != start or len(periods) > COHORT_DEPTH[grain]:
        return False
    for k, period in enumerate(periods):
        if period.k != k or to_us(period.end) != period_end(start, k, grain):
            return False
        if period.active > cohort.size or (not period.complete and k != len(periods) - 1):
            return False
    return True


def decode_cohort(data: bytes | str, grain: Grain) -> Cohort | None:
    """One cohort's JSON (a hash value); None if it is not one of ``grain``."""
    if len(data) > MAX_COHORT_BYTES:
        return None
    try:
        cohort = Cohort.model_validate_json(data, strict=True)
    except ValidationError:
        return None
    return cohort if _consistent(cohort, grain) else None


def decode_cohort_update(data: bytes | str, grain: Grain, segment: str) -> CohortUpdate | None:
    """A message of ``kpi-cohort-updates:<grain>:<segment>``; None if it is not one of its
    channel (another grain or segment would show some other cohort under this one)."""
    if len(data) > MAX_COHORT_BYTES:
        return None
    try:
        update = CohortUpdate.model_validate_json(data, strict=True)
    except ValidationError:
        return None
    if update.grain != grain or update.segment != segment or not _consistent(update, grain):
        return None
    return update


def decode_cohorts(
    fields: Mapping[bytes | str, bytes | str], grain: Grain
) -> tuple[list[Cohort], int]:
    """A ``HGETALL kpi-cohorts:<grain>:<segment>`` reply as its cohorts, newest first, and
    how many fields were left out (not a cohort, or not the one its field name says)."""
    cohorts: list[Cohort] = []
    bad = 0
    for name, encoded in fields.items():
        start = parse_time(name.decode("utf-8", "replace") if isinstance(name, bytes) else name)
        cohort = decode_cohort(encoded, grain) if start is not None else None
        if cohort is None or cohort.cohort_start != start:
            bad += 1
        else:
            cohorts.append(cohort)
    cohorts.sort(key=lambda c: c.cohort_start, reverse=True)
    return cohorts, bad


async def read_cohorts(
    redis: aioredis.Redis, grain: Grain, segment: str
) -> tuple[list[Cohort], int] | None:
    """The cohorts of ``grain`` and ``segment``, newest first, and how many fields were left
    out; None when there is no such hash. May raise ``RedisError``/``OSError``."""
    key = cohorts_key(grain, segment)
    try:
        size = await redis.hlen(key)
        if size <= MAX_COHORT_FIELDS:
            fields = await redis.hgetall(key)
        else:
            fields = {}
            async for name, value in redis.hscan_iter(key, count=MAX_COHORT_FIELDS):
                fields[name] = value
                if len(fields) >= MAX_COHORT_FIELDS:
                    break
    except ResponseError:  # WRONGTYPE: something else took the name
        return None
    if not fields:
        return None
    cohorts, bad = decode_cohorts(fields, grain)
    return cohorts, bad + max(0, size - len(fields))


def split_cohort_name(name: str, prefix: str = COHORTS_PREFIX) -> tuple[Grain, str] | None:
    """``<prefix><grain>:<segment>`` (a cohort hash or channel) as (grain, segment); None if
    the grain or the segment is not one the contract has."""
    parts = split_name(name, prefix)
    if parts is None or not is_cohort_segment(parts[1]):
        return None
    for grain in GRAINS:
        if parts[0] == grain:
            return grain, parts[1]
    return None


async def cohort_segments(redis: aioredis.Redis) -> tuple[dict[Grain, list[str]], list[str]]:
    """Per grain, the segments with a cohort hash (a SCAN of ``kpi-cohorts:*``, unsorted),
    and the names under that prefix that are none. May raise ``RedisError``/``OSError``."""
    found: dict[Grain, list[str]] = {grain: [] for grain in GRAINS}
    malformed: list[str] = []
    seen = 0
    async for key in redis.scan_iter(match=COHORTS_PATTERN, count=1000, _type="hash"):
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        parts = split_cohort_name(name)
        if parts is None:
            malformed.append(name)
            continue
        found[parts[0]].append(parts[1])
        seen += 1
        if seen >= MAX_COHORT_SEGMENTS:
            break
    return found, malformed


@dataclass(frozen=True)
class AlertRow:
    """One alert as the feed shows it (from ``schemas.Alert``, or a lenient reading)."""

    alert_id: str
    status: str
    severity: str
    segment: str
    kpi: str
    window: str | None
    summary: str
    fired_at: datetime | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.alert_id, self.status)


def parse_alert(data: bytes | str) -> AlertRow | None:
    """An alert from its JSON; None if it is not an alert.

    Strict ``schemas.Alert`` first; a JSON object with a text ``summary`` is still shown (a
    newer producer may add fields), with what it has, unless its ``fired_at`` is no time.
    """
    if len(data) > MAX_RECORD_BYTES:
        return None
    try:
        alert = Alert.model_validate_json(data)
    except ValidationError:
        pass
    else:
        return AlertRow(
            alert.alert_id,
            alert.status,
            alert.severity,
            alert.segment,
            alert.kpi,
            alert.window,
            alert.summary,
            alert.fired_at,
        )
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("summary"), str):
        return None

    def text(name: str) -> str:
        value = raw.get(name)
        return value if isinstance(value, str) else "?"

    window = raw.get("window")
    fired = raw.get("fired_at")
    fired_at = parse_time(fired) if isinstance(fired, str) else None
    if fired is not None and fired_at is None:
        return None
    return AlertRow(
        text("alert_id"),
        text("status"),
        text("severity"),
        text("segment"),
        text("kpi"),
        window if isinstance(window, str) else None,
        raw["summary"],
        fired_at,
    )
