"""Benchmark profiles (contract section 8): reference bands per KPI from a TOML file.

A profile is one file per industry: ``profiles/ecommerce.toml`` and
``profiles/subscription.toml`` ship with the package, and ``KPI_BENCHMARK_PROFILE`` names one
of them or the path of a file of the same layout::

    name = "my-shop"
    title = "My shop's targets"

    [[bands]]
    kpi = "churn_rate"
    windows = ["30d"]          # optional: every window when omitted
    low = 0.10                 # in the KPI's published unit (ratios as fractions)
    high = 0.15
    note = "why this band"     # optional
    source = { title = "...", publisher = "...", year = 2025, url = "https://..." }

Whether higher is better is the KPI registry's (``stream_app.kpis.registry``); a band may
state it, and must then agree. A bad file stops the start with one line per problem, each
naming the file, the line and the band, as the alert rules file does.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stream_app.kpis.registry import KPI_BY_NAME
from stream_app.settings import Settings
from stream_app.tablefile import Vocabulary, describe, read_text, suggest, toml_lines

NO_PROFILE: Final = "none"
_Text = Annotated[str, Field(min_length=1, max_length=300)]


class ProfileError(Exception):
    """A benchmark profile that cannot be used; the message says where and why."""


class Source(BaseModel):
    """The public source of a band."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: _Text
    publisher: _Text
    year: Annotated[int, Field(ge=1990, le=2100)]
    url: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=500)]


class Band(BaseModel):
    """The reference band of one KPI, on some windows (all when ``windows`` is None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kpi: str
    windows: tuple[str, ...] | None = None
    low: float
    high: float
    higher_is_better: bool | None = None
    note: Annotated[str, Field(max_length=500)] | None = None
    source: Source

    @field_validator("kpi")
    @classmethod
    def _known_kpi(cls, value: str) -> str:
        kpi = KPI_BY_NAME.get(value)
        if kpi is None:
            raise ValueError(f"unknown KPI {value!r}{suggest(value, KPI_BY_NAME)}")
        if kpi.kind == "count":
            raise ValueError(f"{value!r} is a count; bands are for ratios, money and scores")
        return value

    @field_validator("windows")
    @classmethod
    def _known_windows(
        cls, value: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        configured: Sequence[str] = (info.context or {}).get("windows", ())
        if value is not None:
            if not value:
                raise ValueError("an empty list; leave the key out for every window")
            unknown = [w for w in value if configured and w not in configured]
            if unknown:
                raise ValueError(
                    f"unknown window {unknown[0]!r}; configured windows (KPI_WINDOWS): "
                    f"{', '.join(configured)}"
                )
        return value

    @field_validator("low", "high")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Band:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        kpi = KPI_BY_NAME.get(self.kpi)
        stated = self.higher_is_better
        if kpi is not None and stated is not None and stated != kpi.higher_is_better:
            raise ValueError(
                f"higher_is_better = {str(stated).lower()} contradicts the KPI registry, "
                f"where {self.kpi} is {'better' if kpi.higher_is_better else 'worse'} higher"
            )
        return self

    @property
    def better_high(self) -> bool:
        """Whether a value above the band is good: the registry's word (a stated one agrees)."""
        return KPI_BY_NAME[self.kpi].higher_is_better

    def applies_to(self, window: str) -> bool:
        return self.windows is None or window in self.windows

    def as_json(self) -> dict[str, Any]:
        return {
            "kpi": self.kpi,
            "windows": list(self.windows) if self.windows is not None else None,
            "low": self.low,
            "high": self.high,
            "higher_is_better": self.better_high,
            "note": self.note,
            "source": self.source.model_dump(),
        }


class Profile(BaseModel):
    """A whole profile file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    title: _Text
    bands: tuple[Band, ...] = ()

    def band(self, kpi: str, window: str) -> Band | None:
        """The band of ``kpi`` on ``window``, if the profile has one."""
        for band in self.bands:
            if band.kpi == kpi and band.applies_to(window):
                return band
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "bands": [band.as_json() for band in self.bands],
        }


_WORDS = Vocabulary(
    title="invalid benchmark profile",
    table="bands",
    entry="band",
    entry_keys=tuple(Band.model_fields),
    top_keys=tuple(Profile.model_fields),
    nested_keys={"source": tuple(Source.model_fields)},
    label_key="kpi",
)


def parse_profile(text: str, *, source: str, windows: Sequence[str] = ()) -> Profile:
    """Parse and validate a profile's TOML text; ``ProfileError`` says what is wrong where."""
    try:
        data: Mapping[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}") from None
    lines = toml_lines(text, "bands")
    try:
        profile = Profile.model_validate(data, context={"windows": list(windows)})
    except ValidationError as exc:
        raise ProfileError(describe(exc, data, lines, source, _WORDS)) from None
    # Two bands of one KPI on a common window would leave it unclear which one applies.
    for index, band in enumerate(profile.bands):
        for other in profile.bands[:index]:
            if band.kpi != other.kpi:
                continue
            mine = set(band.windows or windows or ("every window",))
            theirs = set(other.windows or windows or ("every window",))
            if band.windows is None or other.windows is None or mine & theirs:
                line = lines.of(("bands", index))
                where = f"{source}:{line}" if line is not None else source
                raise ProfileError(
                    f"{_WORDS.title}:\n  {where}: band #{index + 1} {band.kpi!r}: another band "
                    f"of {band.kpi} already covers {', '.join(sorted(mine & theirs) or mine)}"
                )
    return profile


def shipped_profiles() -> tuple[str, ...]:
    """The names of the profiles that ship with the package."""
    root = resources.files(__package__).joinpath("profiles")
    names = (p.name.removesuffix(".toml") for p in root.iterdir() if p.name.endswith(".toml"))
    return tuple(sorted(names))


def load_profile(spec: str, windows: Sequence[str] = ()) -> Profile:
    """A shipped profile by name (``ecommerce``), or a ``.toml`` file by path."""
    if spec in shipped_profiles():
        resource = resources.files(__package__).joinpath("profiles", f"{spec}.toml")
        return parse_profile(resource.read_text(encoding="utf-8"), source=spec, windows=windows)
    path = Path(spec)
    if path.suffix.lower() != ".toml":
        raise ProfileError(
            f"{spec!r}: not a shipped benchmark profile ({', '.join(shipped_profiles())}) "
            "nor the path of a .toml file"
        )
    text = read_text(path, "the profile", ProfileError)
    return parse_profile(text, source=str(path), windows=windows)


def profile_from_settings(settings: Settings) -> Profile | None:
    """The profile ``KPI_BENCHMARK_PROFILE`` names (None for ``none``)."""
    spec = settings.benchmark_profile.strip()
    if spec.lower() == NO_PROFILE:
        return None
    return load_profile(spec, [window.name for window in settings.windows])
