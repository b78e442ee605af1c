"""KPIs read against their bands: below, within or above, and the strengths and weaknesses.

Pure functions of a snapshot (as published: money a decimal string, ratios numbers, null
for no value) and a profile; the API, the dashboard (through the API) and ``kpi watch`` use
them, so all three read a value the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from stream_app.benchmarks.profile import Band, Profile
from stream_app.kpis.registry import KPI_BY_NAME, KPIS

Position = Literal["below", "within", "above"]


def as_number(value: Any) -> float | None:
    """A published KPI value as a number: money strings parsed, null and junk as None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            return float(Decimal(value))
        except InvalidOperation:
            return None
    return None


def position(value: Any, band: Band) -> Position | None:
    """Where a value lies against its band; the band's ends count as within."""
    entry = standing(band.kpi, value, band)
    return None if entry is None else entry.position


@dataclass(frozen=True)
class Standing:
    """One KPI of a snapshot against its band.

    ``score`` is how far outside the band the value is, in band widths, signed so that
    positive is better than the band and negative worse (0 within it).
    """

    kpi: str
    value: Any
    band: Band
    position: Position
    score: float

    def as_json(self) -> dict[str, Any]:
        return {
            "kpi": self.kpi,
            "label": KPI_BY_NAME[self.kpi].label,
            "value": self.value,
            "position": self.position,
            "score": round(self.score, 4),
            "band": self.band.as_json(),
        }


def standing(kpi: str, value: Any, band: Band) -> Standing | None:
    """The value against its band (None without a value)."""
    number = as_number(value)
    if number is None:
        return None
    width = band.high - band.low
    where: Position
    if number < band.low:
        where, outside = "below", (band.low - number) / width
        score = -outside if band.better_high else outside
    elif number > band.high:
        where, outside = "above", (number - band.high) / width
        score = outside if band.better_high else -outside
    else:
        where, score = "within", 0.0
    return Standing(kpi, value, band, where, score)


def standings(snapshot: Mapping[str, Any], window: str, profile: Profile) -> list[Standing]:
    """Every KPI of the snapshot that has a value and a band on ``window``, in snapshot order."""
    found = []
    for kpi in KPIS:
        band = profile.band(kpi.name, window)
        if band is None or kpi.name not in snapshot:
            continue
        entry = standing(kpi.name, snapshot[kpi.name], band)
        if entry is not None:
            found.append(entry)
    return found


def positions(snapshot: Mapping[str, Any], window: str, profile: Profile) -> dict[str, Position]:
    """KPI name -> below / within / above, for the KPIs with a value and a band."""
    return {entry.kpi: entry.position for entry in standings(snapshot, window, profile)}


def strengths_and_weaknesses(
    snapshot: Mapping[str, Any], window: str, profile: Profile
) -> dict[str, list[dict[str, Any]]]:
    """The KPIs outside their bands on the good side (best first) and on the bad side (worst
    first), and those within them."""
    entries = standings(snapshot, window, profile)
    strengths = sorted((e for e in entries if e.score > 0), key=lambda e: -e.score)
    weaknesses = sorted((e for e in entries if e.score < 0), key=lambda e: e.score)
    within = [e for e in entries if e.score == 0]
    return {
        "strengths": [e.as_json() for e in strengths],
        "weaknesses": [e.as_json() for e in weaknesses],
        "within": [e.as_json() for e in within],
    }
