"""What the processor published, read back: snapshots and alerts checked against the contract.

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
import redis
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas import Alert, CampaignSnapshot, SegmentSnapshot
from schemas.cohort import Cohort, Grain
from schemas.timestamps import UtcDatetime
from stream_app.kpis.cohorts import cohort_field, to_us
from stream_app.kpis.formulas import SegmentKind
from stream_app.kpis.registry import KPI_BY_NAME, segment_kind
from stream_app.redis_keys import cohorts_key

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


def decode_cohorts(fields: Mapping[bytes | str, bytes | str]) -> list[Cohort]:
    """The valid cohorts of a hash ``kpi-cohorts:<grain>:<segment>``, newest first.

    A field that is not a cohort (undecodable, failing the contract, or filed under another
    start than its own) is left out: what Redis holds is untrusted.
    """
    cohorts: list[Cohort] = []
    for name, value in fields.items():
        try:
            cohort = Cohort.model_validate_json(value)
        except ValidationError:
            continue
        field_name = name.decode(errors="replace") if isinstance(name, bytes) else name
        if cohort_field(to_us(cohort.cohort_start)) == field_name:
            cohorts.append(cohort)
    return sorted(cohorts, key=lambda cohort: cohort.cohort_start, reverse=True)


def read_cohorts(client: redis.Redis, grain: Grain, segment: str) -> list[Cohort]:
    """The published cohorts of one grain and segment (sync client; ``decode_cohorts`` for
    others)."""
    fields: Any = client.hgetall(cohorts_key(grain, segment))
    return decode_cohorts(fields)
