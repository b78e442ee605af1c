"""Threshold alert rules: a TOML (or YAML) file validated with pydantic, errors with line numbers.

One rule watches one KPI on one window for every segment matching a pattern::

    [[rules]]
    name = "nps-low"
    kpi = "nps"
    window = "7d"
    segment = "region:*"
    op = "<"
    value = 20
    min_volume = 30        # at least 30 nps_responses in the window

The file is read once at start: rule changes need a restart, and a bad file stops the start
with one line per problem, each naming the file, the line and the rule.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stream_app.kpis.formulas import BASE_INDEX, KpiValue, SegmentKind
from stream_app.kpis.registry import KPIS
from stream_app.settings import Duration, Settings
from stream_app.tablefile import Lines, Vocabulary, describe, read_text, suggest, toml_lines

CHURN_RULE = "churn_spike"

Op = Literal["<", "<=", ">", ">="]

KPI_KINDS: dict[str, frozenset[SegmentKind]] = {kpi.name: kpi.applies_to for kpi in KPIS}
# KPIs that are plain counts: what a minimum-volume guard can count.
COUNT_KPIS: frozenset[str] = frozenset(kpi.name for kpi in KPIS if kpi.name in BASE_INDEX)
# The count a rule's ``min_volume`` applies to unless ``volume_kpi`` names another: the
# denominator of a ratio (declared with each KPI in the registry), the KPI itself for a count.
DEFAULT_VOLUME: dict[str, str] = {kpi.name: kpi.volume for kpi in KPIS if kpi.volume is not None}

_PATTERN_RE = re.compile(r"^(all|\*|region:\S{1,128}|campaign:\S{1,128})$")


class RulesError(Exception):
    """An alert rules file that cannot be used; the message says where and why."""


def pattern_kinds(pattern: str) -> frozenset[SegmentKind]:
    """The segment kinds a segment pattern can match."""
    if pattern.startswith("campaign:"):
        return frozenset({"campaign"})
    if pattern == "*":
        return frozenset({"segment", "campaign"})
    return frozenset({"segment"})


class ThresholdRule(BaseModel):
    """Alert when a KPI of a window crosses a value, for each segment matching a pattern."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    kpi: str
    window: str
    segment: str = "all"
    op: Op
    value: Annotated[float, Field(allow_inf_nan=False)]
    min_volume: Annotated[int, Field(ge=0)] = 0
    volume_kpi: str | None = None
    severity: Literal["warning", "critical"] = "warning"
    grace: Duration | None = None
    description: Annotated[str, Field(max_length=500)] | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == CHURN_RULE:
            raise ValueError(f"{CHURN_RULE!r} is the built-in churn-spike detector's name")
        return value

    @field_validator("kpi")
    @classmethod
    def _known_kpi(cls, value: str) -> str:
        if value not in KPI_KINDS:
            raise ValueError(f"unknown KPI {value!r}{suggest(value, KPI_KINDS)}")
        return value

    @field_validator("window")
    @classmethod
    def _known_window(cls, value: str, info: ValidationInfo) -> str:
        windows: Sequence[str] = (info.context or {}).get("windows", ())
        if windows and value not in windows:
            raise ValueError(
                f"unknown window {value!r}; configured windows (KPI_WINDOWS): {', '.join(windows)}"
            )
        return value

    @field_validator("segment")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        if not _PATTERN_RE.match(value):
            raise ValueError(
                f"{value!r} is not a segment pattern: use all, region:<glob>, campaign:<glob> "
                "or * (globs as in region:* or campaign:spring-*)"
            )
        return value

    @field_validator("volume_kpi")
    @classmethod
    def _count_kpi(cls, value: str | None) -> str | None:
        if value is not None and value not in COUNT_KPIS:
            names = ", ".join(sorted(COUNT_KPIS))
            raise ValueError(f"{value!r} is not a count KPI; one of: {names}")
        return value

    @field_validator("grace")
    @classmethod
    def _grace_range(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(0) <= value <= timedelta(days=31):
            raise ValueError("must be between 0 and 31d")
        return value

    @model_validator(mode="after")
    def _kpi_fits_segments(self) -> ThresholdRule:
        kinds = KPI_KINDS.get(self.kpi, frozenset())
        if kinds and not kinds & pattern_kinds(self.segment):
            raise ValueError(
                f"KPI {self.kpi!r} is not published for segments like {self.segment!r} "
                "(campaign segments carry the campaign KPIs only)"
            )
        volume = self.volume_kpi
        if volume is not None and not KPI_KINDS[volume] & pattern_kinds(self.segment):
            raise ValueError(f"volume_kpi {volume!r} is not published for {self.segment!r}")
        return self

    @property
    def volume_metric(self) -> str | None:
        """The base count ``min_volume`` applies to (None: the KPI is money, not a count)."""
        if self.volume_kpi is not None:
            return self.volume_kpi
        if self.kpi in COUNT_KPIS:
            return self.kpi
        return DEFAULT_VOLUME.get(self.kpi)

    def matches(self, segment: str, kind: SegmentKind) -> bool:
        return kind in KPI_KINDS[self.kpi] and fnmatchcase(segment, self.segment)

    def breached(self, observed: KpiValue) -> bool | None:
        """Whether ``observed`` crosses the threshold; None when there is no value."""
        if observed is None:
            return None
        left = Decimal(observed) if isinstance(observed, str) else Decimal(str(observed))
        right = Decimal(str(self.value))
        if self.op == "<":
            return left < right
        if self.op == "<=":
            return left <= right
        if self.op == ">":
            return left > right
        return left >= right


class RulesFile(BaseModel):
    """The whole file: a list of rules (``[[rules]]`` tables in TOML)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[ThresholdRule, ...] = ()


# -- locating errors ---------------------------------------------------------------------------

_WORDS = Vocabulary(
    title="invalid alert rules",
    table="rules",
    entry="rule",
    entry_keys=tuple(ThresholdRule.model_fields),
    top_keys=tuple(RulesFile.model_fields),
)


def _yaml_lines(node: Any) -> Lines:
    import yaml

    rules: list[int] = []
    keys: list[dict[str, int]] = []
    top: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            top[str(key.value)] = key.start_mark.line + 1
            if key.value == "rules" and isinstance(value, yaml.SequenceNode):
                for item in value.value:
                    rules.append(item.start_mark.line + 1)
                    fields: dict[str, int] = {}
                    if isinstance(item, yaml.MappingNode):
                        for field_key, _ in item.value:
                            fields[str(field_key.value)] = field_key.start_mark.line + 1
                    keys.append(fields)
    return Lines("rules", rules, keys, top)


# -- loading -----------------------------------------------------------------------------------


def parse_rules(
    text: str, *, fmt: Literal["toml", "yaml"], source: str, windows: Sequence[str] = ()
) -> tuple[ThresholdRule, ...]:
    """Parse and validate the text of a rules file; ``RulesError`` says what is wrong where."""
    data: Any
    if fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RulesError(f"{source}: not valid TOML: {exc}") from None
        lines = toml_lines(text, "rules")
    else:
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML ships with the project
            raise RulesError(f"{source}: YAML rules need PyYAML; use TOML instead") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise RulesError(f"{source}{where}: not valid YAML: {problem}") from None
        lines = _yaml_lines(node)
        if data is None:
            data = {}
    if not isinstance(data, Mapping):
        raise RulesError(f"{source}: the file must be a table with a 'rules' list")
    try:
        parsed = RulesFile.model_validate(data, context={"windows": list(windows)})
    except ValidationError as exc:
        raise RulesError(describe(exc, data, lines, source, _WORDS)) from None
    first: dict[str, int] = {}
    for index, rule in enumerate(parsed.rules):
        if rule.name in first:
            line = lines.of(("rules", index, "name"))
            where = f"{source}:{line}" if line is not None else source
            raise RulesError(
                f"invalid alert rules:\n  {where}: rule #{index + 1} {rule.name!r}: name: "
                f"already used by rule #{first[rule.name] + 1}; names must be unique"
            )
        first[rule.name] = index
    return parsed.rules


def load_rules(path: Path, windows: Sequence[str] = ()) -> tuple[ThresholdRule, ...]:
    """Read a ``.toml``, ``.yaml`` or ``.yml`` rules file."""
    suffix = path.suffix.lower()
    if suffix == ".toml":
        fmt: Literal["toml", "yaml"] = "toml"
    elif suffix in (".yaml", ".yml"):
        fmt = "yaml"
    else:
        raise RulesError(f"{path}: rules files end in .toml, .yaml or .yml")
    text = read_text(path, "the rules file", RulesError)
    return parse_rules(text, fmt=fmt, source=str(path), windows=windows)


def rules_from_settings(settings: Settings) -> tuple[ThresholdRule, ...]:
    """The rules of ``KPI_ALERT_RULES_FILE`` (none when unset), checked against the windows."""
    if settings.alert_rules_file is None:
        return ()
    return load_rules(settings.alert_rules_file, [window.name for window in settings.windows])
