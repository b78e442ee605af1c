"""Compare the KPI snapshots the engine published to Redis with the batch reference."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import orjson
import redis

from schemas import SNAPSHOT_META
from stream_app.kpis.formulas import KpiValue
from stream_app.kpis.registry import names_for, segment_kind
from stream_app.redis_keys import (
    HISTORY_PATTERN,
    HISTORY_PREFIX,
    SNAPSHOT_PATTERN,
    SNAPSHOT_PREFIX,
    history_key,
    snapshot_key,
    split_name,
)
from stream_app.settings import Settings, WindowSpec
from stream_app.verify.cohorts import cohort_differences
from stream_app.verify.reference import Reference, Window, current_window, epoch_us

logger = logging.getLogger(__name__)

REL_TOLERANCE: Final = 1e-9

# Pseudo field names for problems that are not about one snapshot field.
KEY_FIELD: Final = "(key)"
SCORE_FIELD: Final = "(score)"
MEMBER_FIELD: Final = "(member)"
LENGTH_FIELD: Final = "(length)"

# Shown as the expected or actual side when a key or field is not there.
PRESENT: Final = "present"
ABSENT: Final = "absent"

Where = Literal["current", "history", "cohort"]


@dataclass(frozen=True)
class Mismatch:
    """One difference between Redis and the reference; ``where`` says which Redis key kind."""

    window: str
    segment: str
    window_end: datetime | None
    field: str
    expected: object
    actual: object
    where: Where


@dataclass
class Report:
    """Everything a verification found, and how much it looked at."""

    mismatches: list[Mismatch] = field(default_factory=list)
    snapshots_checked: int = 0
    history_checked: int = 0
    cohorts_checked: int = 0


@dataclass(frozen=True)
class RedisKeys:
    """The snapshot hashes and history sorted sets present in Redis, as (window, segment)."""

    snapshots: frozenset[tuple[str, str]]
    histories: frozenset[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.snapshots) + len(self.histories)


# ---------------------------------------------------------------------------------------------
# Reading Redis


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _scan(client: redis.Redis, pattern: str, prefix: str, kind: str) -> frozenset[tuple[str, str]]:
    # SCAN, never KEYS: the server stays responsive however many keys there are.
    found = set()
    for raw in client.scan_iter(match=pattern, count=1000, _type=kind):
        parts = split_name(_text(raw), prefix)
        if parts is None:
            logger.warning("ignoring key %r: not <prefix><window>:<segment>", raw)
            continue
        found.add(parts)
    return frozenset(found)


def scan_keys(client: redis.Redis) -> RedisKeys:
    return RedisKeys(
        snapshots=_scan(client, SNAPSHOT_PATTERN, SNAPSHOT_PREFIX, "hash"),
        histories=_scan(client, HISTORY_PATTERN, HISTORY_PREFIX, "zset"),
    )


@dataclass(frozen=True)
class _Undecodable:
    """A stored value that is not JSON; kept so it can be shown as it is."""

    raw: str


def read_snapshot(client: redis.Redis, window: str, segment: str) -> dict[str, object]:
    """The current snapshot hash, each field JSON-decoded (or kept raw if it is not JSON)."""
    stored = client.hgetall(snapshot_key(window, segment))
    return {_text(name): _decode(_text(value)) for name, value in stored.items()}


def _decode(text: str) -> object:
    try:
        decoded: object = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _Undecodable(text)
    return decoded


def read_history(
    client: redis.Redis, window: str, segment: str, newest: int | None
) -> list[tuple[float, str]]:
    """(score, member) of the history, oldest first; only the ``newest`` entries if given."""
    if newest == 0:
        return []
    start = 0 if newest is None else -newest
    entries = client.zrange(history_key(window, segment), start, -1, withscores=True)
    return [_scored(entry) for entry in entries]


def _scored(entry: Any) -> tuple[float, str]:
    member, score = entry
    return float(score), _text(member)


def history_length(client: redis.Redis, window: str, segment: str) -> int:
    return client.zcard(history_key(window, segment))


# ---------------------------------------------------------------------------------------------
# Comparing values


def values_match(expected: KpiValue, actual: object) -> bool:
    """Counts and money strings exactly, ratios within a relative 1e-9, null only as null."""
    if isinstance(actual, bool):
        return False  # JSON true/false is never a KPI; bool is an int subclass in Python
    if expected is None or isinstance(expected, str):
        return actual == expected and type(actual) is type(expected)
    if isinstance(expected, int):
        return type(actual) is int and actual == expected
    if isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=REL_TOLERANCE)
    return False


def parse_timestamp(value: object) -> datetime | None:
    """A snapshot timestamp, or None if it is not an RFC 3339 string with an offset."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None


def shown(value: object) -> object:
    """A value as a person should read it in a report (raw text for non-JSON values)."""
    return value.raw if isinstance(value, _Undecodable) else value


def kpi_names(segment: str) -> tuple[str, ...]:
    return names_for(segment_kind(segment))


@dataclass
class _Findings:
    """Mismatches of one snapshot, all sharing its window, segment, window end and place."""

    window: str
    segment: str
    where: Where
    window_end: datetime | None = None
    found: list[Mismatch] = field(default_factory=list)

    def add(self, name: str, expected: object, actual: object) -> None:
        self.found.append(
            Mismatch(
                self.window,
                self.segment,
                self.window_end,
                name,
                expected,
                shown(actual),
                self.where,
            )
        )


def check_snapshot(
    reference: Reference,
    spec: WindowSpec,
    segment: str,
    snapshot: Mapping[str, object],
    where: Where,
) -> list[Mismatch]:
    """Every field of one snapshot against the reference for its own window."""
    findings = _Findings(spec.name, segment, where)
    stamps = {name: parse_timestamp(snapshot.get(name)) for name in SNAPSHOT_META[2:]}
    findings.window_end = stamps["window_end"]
    expected_names = (*SNAPSHOT_META, *kpi_names(segment))
    for name in expected_names:
        if name not in snapshot:
            findings.add(name, PRESENT, ABSENT)
        elif isinstance(snapshot[name], _Undecodable):
            findings.add(name, "a JSON value", snapshot[name])
    for name in sorted(set(snapshot) - set(expected_names)):
        findings.add(name, ABSENT, snapshot[name])
    for name, wanted in (("window", spec.name), ("segment", segment)):
        if name in snapshot and snapshot[name] != wanted:
            findings.add(name, wanted, snapshot[name])
    for name, stamp in stamps.items():
        if name in snapshot and stamp is None:
            findings.add(name, "an RFC 3339 timestamp", snapshot[name])
    start, end, watermark = stamps["window_start"], stamps["window_end"], stamps["watermark"]
    if start is None or end is None:
        return findings.found
    if where == "current":
        _check_current_window(reference, spec, start, end, watermark, findings)
    else:
        _check_past_window(reference, spec, start, end, watermark, findings)
    if start < end:
        _check_kpis(reference, segment, start, end, snapshot, findings)
    return findings.found


def _check_current_window(
    reference: Reference,
    spec: WindowSpec,
    start: datetime,
    end: datetime,
    watermark: datetime | None,
    findings: _Findings,
) -> None:
    assert reference.watermark is not None  # only called for keys the reference expects
    expected = current_window(spec, reference.watermark)
    if end != expected.end:
        findings.add("window_end", expected.end, end)
    if start != expected.start:
        findings.add("window_start", expected.start, start)
    if watermark is not None and watermark != reference.watermark:
        findings.add("watermark", reference.watermark, watermark)


def _check_past_window(
    reference: Reference,
    spec: WindowSpec,
    start: datetime,
    end: datetime,
    watermark: datetime | None,
    findings: _Findings,
) -> None:
    end_us = epoch_us(end)
    if end_us % (spec.step_ms * 1000) != 0:
        findings.add("window_end", f"a multiple of {spec.step_ms} ms since the epoch", end)
    if start != end - spec.size:
        findings.add("window_start", end - spec.size, start)
    # A past snapshot was computed before the newest events; it can never be ahead of them.
    assert reference.watermark is not None
    if watermark is not None and watermark > reference.watermark:
        findings.add("watermark", f"<= {reference.watermark.isoformat()}", watermark)


def _check_kpis(
    reference: Reference,
    segment: str,
    start: datetime,
    end: datetime,
    snapshot: Mapping[str, object],
    findings: _Findings,
) -> None:
    # Windows are whole milliseconds; a sub-millisecond bound was reported above already.
    start_ms, end_ms = epoch_us(start) // 1000, epoch_us(end) // 1000
    expected = reference.expected_kpis(segment, start_ms, end_ms)
    for name, value in expected.items():
        if name not in snapshot or isinstance(snapshot[name], _Undecodable):
            continue  # already reported
        if not values_match(value, snapshot[name]):
            findings.add(name, value, snapshot[name])


def check_history(
    reference: Reference,
    spec: WindowSpec,
    segment: str,
    entries: Iterable[tuple[float, str]],
    total: int,
    max_steps: int,
) -> tuple[list[Mismatch], int]:
    """Every member of one history sorted set; returns the mismatches and entries checked."""
    found: list[Mismatch] = []
    if total > max_steps:
        found.append(
            Mismatch(spec.name, segment, None, LENGTH_FIELD, f"<= {max_steps}", total, "history")
        )
    checked = 0
    ends: Counter[datetime] = Counter()
    for score, member in entries:
        checked += 1
        snapshot = _decode(member)
        if not isinstance(snapshot, dict):
            found.append(
                Mismatch(spec.name, segment, None, MEMBER_FIELD, "a JSON object", member, "history")
            )
            continue
        mismatches = check_snapshot(reference, spec, segment, snapshot, "history")
        end = parse_timestamp(snapshot.get("window_end"))
        if end is not None:
            ends[end] += 1
            if score != epoch_us(end) / 1_000_000:
                mismatches.append(
                    Mismatch(
                        spec.name,
                        segment,
                        end,
                        SCORE_FIELD,
                        epoch_us(end) / 1_000_000,
                        score,
                        "history",
                    )
                )
        found.extend(mismatches)
    for end, count in sorted(ends.items()):
        if count > 1:
            found.append(
                Mismatch(
                    spec.name, segment, end, MEMBER_FIELD, "1 per window_end", count, "history"
                )
            )
    return found, checked


# ---------------------------------------------------------------------------------------------
# The whole check


def missing_keys(reference: Reference, keys: RedisKeys) -> list[Mismatch]:
    """Expected (window, segment) pairs with no snapshot hash or no history in Redis."""
    ends = {window.name: window for window in reference.current_windows()}
    found = []
    for window, segment in reference.expected_keys():
        current: Window = ends[window]
        if (window, segment) not in keys.snapshots:
            found.append(
                Mismatch(window, segment, current.end, KEY_FIELD, PRESENT, ABSENT, "current")
            )
        if (window, segment) not in keys.histories:
            found.append(
                Mismatch(window, segment, current.end, KEY_FIELD, PRESENT, ABSENT, "history")
            )
    return found


def _unexpected(window: str, segment: str, where: Where) -> Mismatch:
    return Mismatch(window, segment, None, KEY_FIELD, ABSENT, PRESENT, where)


def verify_redis(
    client: redis.Redis,
    reference: Reference,
    settings: Settings,
    *,
    keys: RedisKeys | None = None,
    history: int | None = None,
    advance: Callable[[], None] | None = None,
) -> Report:
    """Check every KPI key in Redis against the reference and report what is missing.

    ``history`` limits the check to the newest entries of each history; ``advance`` is called
    once per key checked (for a progress bar).
    """
    keys = scan_keys(client) if keys is None else keys
    specs = {spec.name: spec for spec in settings.windows}
    expected = set(reference.expected_keys())
    report = Report(mismatches=missing_keys(reference, keys))
    for window, segment in sorted(keys.snapshots):
        spec = specs.get(window)
        if spec is None or (window, segment) not in expected:
            report.mismatches.append(_unexpected(window, segment, "current"))
        else:
            snapshot = read_snapshot(client, window, segment)
            report.mismatches.extend(check_snapshot(reference, spec, segment, snapshot, "current"))
            report.snapshots_checked += 1
        if advance is not None:
            advance()
    for window, segment in sorted(keys.histories):
        spec = specs.get(window)
        if spec is None or (window, segment) not in expected:
            report.mismatches.append(_unexpected(window, segment, "history"))
        else:
            entries = read_history(client, window, segment, history)
            total = history_length(client, window, segment)
            found, checked = check_history(
                reference, spec, segment, entries, total, settings.history_steps
            )
            report.mismatches.extend(found)
            report.history_checked += checked
        if advance is not None:
            advance()
    differences, report.cohorts_checked = cohort_differences(client, reference.cohorts)
    report.mismatches.extend(
        # ``window`` names the grain, ``field`` the cohort and its figure.
        Mismatch(f"cohort:{grain}", segment, None, f"{start} {name}", expected, actual, "cohort")
        for grain, segment, start, name, expected, actual in differences
    )
    return report
