"""Scenarios: named disturbances that multiply one knob of the population model for a while."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from stream_app.settings import parse_duration


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Multiplies model knobs by ``factor`` during the event-time interval ``[at, at + duration)``.

    A new scenario is a subclass that overrides one or more of the ``*_factor`` hooks (they
    return 1.0, "no effect", by default) and is registered with :func:`register_scenario`;
    its dataclass fields then become ``name:field=value`` options of ``--scenario``. Effects
    are constant over the interval, which keeps the model's sampling exact.
    """

    name: ClassVar[str] = "scenario"

    at: datetime
    duration: timedelta
    factor: float

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise ValueError(f"{self.name}: 'at' must be timezone-aware")
        if self.duration <= timedelta(0):
            raise ValueError(f"{self.name}: the duration must be positive")
        if not 0 <= self.factor <= 1000:
            raise ValueError(f"{self.name}: factor must be between 0 and 1000")

    @property
    def end(self) -> datetime:
        return self.at + self.duration

    def churn_factor(self, region: str) -> float:
        """Multiplier of the churn hazard of customers in ``region``."""
        return 1.0

    def conversion_factor(self, campaign_id: str) -> float:
        """Multiplier of the chance that a click on ``campaign_id`` leads to a purchase."""
        return 1.0

    def activity_factor(self, region: str) -> float:
        """Multiplier of clicks, purchases and surveys of customers in ``region``."""
        return 1.0

    def describe(self) -> str:
        params = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("at", "duration", "factor")
        }
        target = ",".join(f"{key}={value}" for key, value in params.items())
        return (
            f"{self.name}:{target + ',' if target else ''}at={self.at.isoformat()},"
            f"hours={self.duration / timedelta(hours=1):g},factor={self.factor:g}"
        )


@dataclass(frozen=True, kw_only=True)
class ChurnSpike(Scenario):
    """Customers of one region cancel ``factor`` times as often (an outage, a price rise)."""

    name: ClassVar[str] = "churn_spike"

    region: str

    def churn_factor(self, region: str) -> float:
        return self.factor if region.upper() == self.region.upper() else 1.0


@dataclass(frozen=True, kw_only=True)
class ConversionCollapse(Scenario):
    """Clicks on one campaign lead to purchases ``factor`` times as often (0: a broken page)."""

    name: ClassVar[str] = "conversion_collapse"

    campaign: str

    def conversion_factor(self, campaign_id: str) -> float:
        return self.factor if campaign_id == self.campaign else 1.0


@dataclass(frozen=True, kw_only=True)
class TrafficSurge(Scenario):
    """Customers of one region (or all: ``region=*``) are ``factor`` times as active."""

    name: ClassVar[str] = "traffic_surge"

    region: str = "*"

    def activity_factor(self, region: str) -> float:
        return self.factor if self.region.upper() in ("*", region.upper()) else 1.0


S = TypeVar("S", bound=type[Scenario])

SCENARIO_TYPES: dict[str, type[Scenario]] = {}


def register_scenario(cls: S) -> S:
    """Make a scenario class available to :func:`parse_scenario` under its ``name``."""
    SCENARIO_TYPES[cls.name] = cls
    return cls


for _cls in (ChurnSpike, ConversionCollapse, TrafficSurge):
    register_scenario(_cls)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp with ``Z`` or an offset; naive times are refused, never guessed."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp") from None
    if value.utcoffset() is None:
        raise ValueError(f"{text!r} has no UTC offset; add Z or +HH:MM")
    return value


def _parse_timedelta(text: str) -> timedelta:
    value = parse_duration(text)
    if not isinstance(value, timedelta):
        raise ValueError(f"{text!r} is not a duration such as 90m, 6h or 2d")
    return value


_CONVERTERS: dict[object, Callable[[str], object]] = {
    float: float,
    int: int,
    str: str,
    datetime: parse_timestamp,
    timedelta: _parse_timedelta,
}
_DURATION_UNITS: Mapping[str, timedelta] = {
    "minutes": timedelta(minutes=1),
    "hours": timedelta(hours=1),
    "days": timedelta(days=1),
}


def parse_scenario(text: str) -> Scenario:
    """``churn_spike:region=EU,at=2026-11-10T00:00:00Z,hours=6,factor=8`` as a Scenario.

    The duration is ``duration=6h`` or one of ``minutes=``, ``hours=``, ``days=``.
    """
    name, _, rest = text.partition(":")
    cls = SCENARIO_TYPES.get(name.strip())
    if cls is None:
        known = ", ".join(sorted(SCENARIO_TYPES))
        raise ValueError(f"unknown scenario {name!r}; known: {known}")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{name}: {part!r} is not key=value")
        params[key.strip()] = value.strip()
    for unit, size in _DURATION_UNITS.items():
        if unit in params:
            if "duration" in params:
                raise ValueError(f"{name}: give either duration= or {unit}=, not both")
            params["duration"] = f"{float(params.pop(unit)) * size.total_seconds():.0f}"
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(unknown)}; options: "
            f"{', '.join([*fields, *_DURATION_UNITS])}"
        )
    missing = sorted(
        f.name
        for f in fields.values()
        if f.name not in params
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{name}: missing option(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in params.items():
        convert = _CONVERTERS.get(hints[key], str)
        try:
            values[key] = convert(raw)
        except ValueError as exc:
            raise ValueError(f"{name}: {key}={raw!r}: {exc}") from None
    return cls(**values)
