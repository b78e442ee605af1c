"""What the processor published, read back: snapshots and alerts checked against the contract.

Shared by the terminal view (``kpi watch``) and the web (the dashboard's API and live
updates), so both show the same values and neither imports the other. Nothing here raises
on bad input: a field that is not what the contract says is dropped and counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from pydantic import ValidationError

from schemas import SNAPSHOT_META, Alert
from stream_app.kpis.registry import KPI_BY_NAME

Kind = Literal["count", "money", "percent", "score", "ratio"]

_TIME_FIELDS: Final = frozenset({"window_start", "window_end", "watermark", "updated_at"})
_DECIMAL: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_KNOWN_FIELDS: Final = frozenset(SNAPSHOT_META) | frozenset(KPI_BY_NAME)


def kpi_kind(name: str) -> Kind:
    """How a KPI is shown: money strings, percentages, 0-100 scores, plain ratios or counts."""
    kpi = KPI_BY_NAME.get(name)
    return "count" if kpi is None else kpi.display


def clean_value(name: str, value: Any) -> tuple[bool, Any]:
    """``(True, value)`` if ``value`` is what the contract publishes for ``name``, else False."""
    if name in SNAPSHOT_META:
        if not isinstance(value, str):
            return False, None
        if name in _TIME_FIELDS:
            moment = parse_time(value)
            return (moment is not None), moment
        return True, value
    if value is None:
        return True, None
    kind = kpi_kind(name)
    if kind == "count":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok, value if ok else None
    if kind == "money":
        ok = isinstance(value, str) and _DECIMAL.fullmatch(value) is not None
        return ok, value if ok else None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return ok, float(value) if ok else None


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 timestamp with an offset, in UTC; None if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


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
    """A snapshot published as one JSON object; None if it is not a JSON object at all."""
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
    newer producer may add fields), with what it has.
    """
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
    return AlertRow(
        text("alert_id"),
        text("status"),
        text("severity"),
        text("segment"),
        text("kpi"),
        window if isinstance(window, str) else None,
        raw["summary"],
        parse_time(fired) if isinstance(fired, str) else None,
    )
