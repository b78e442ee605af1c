"""Churn-spike detection as pure functions of hourly counts: no clock, no I/O, no state.

A bucket is the half-open event-time hour ``[(k - 1) * 1h, k * 1h)``, named by its end index
``k`` like every window (``stream_app/kpis/windows.py``). It *closes* once the watermark
has passed its end by the grace period. A closed bucket is compared with the buckets before
it: the baseline is the last ``baseline_buckets`` of them since the segment first had any
activity, and the bucket is a spike when its count reaches ``min_count`` and its z-score
(count minus the baseline mean, over the baseline standard deviation, floored) reaches
``z_threshold``. The same inputs always give the same verdict, which is what lets any
worker, before or after a restart, reach the same decision about the same bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from stream_app.kpis.specs import HOUR_US

if TYPE_CHECKING:
    from stream_app.settings import Settings

Severity = Literal["warning", "critical"]
Status = Literal["breach", "ok", "insufficient"]
Transition = Literal["fire", "resolve"]


@dataclass(frozen=True)
class DetectorParams:
    """The detector's knobs (each one a ``KPI_CHURN_*`` setting)."""

    min_count: int = 5
    z_threshold: float = 3.0
    z_critical: float = 5.0
    baseline_buckets: int = 168
    min_baseline_buckets: int = 24
    std_floor: float = 1.0

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError("min_count must be at least 1")
        if not 0 < self.z_threshold <= self.z_critical:
            raise ValueError("need 0 < z_threshold <= z_critical")
        if not 1 <= self.min_baseline_buckets <= self.baseline_buckets:
            raise ValueError("need 1 <= min_baseline_buckets <= baseline_buckets")
        if self.std_floor <= 0:
            raise ValueError("std_floor must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectorParams:
        return cls(
            min_count=settings.churn_min_count,
            z_threshold=settings.churn_z_threshold,
            z_critical=settings.churn_z_critical,
            baseline_buckets=int(settings.churn_baseline.total_seconds()) // 3600,
            min_baseline_buckets=int(settings.churn_min_baseline.total_seconds()) // 3600,
            std_floor=settings.churn_std_floor,
        )


@dataclass(frozen=True)
class Verdict:
    """What the detector says about one closed bucket."""

    status: Status
    count: int
    mean: float | None = None
    std: float | None = None
    z: float | None = None
    severity: Severity | None = None


def baseline_stats(values: Sequence[int]) -> tuple[float, float]:
    """Mean and (population) standard deviation of the baseline counts."""
    if not values:
        raise ValueError("an empty baseline has no statistics")
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / n
    return mean, math.sqrt(variance)


def z_score(count: int, mean: float, std: float, floor: float) -> float:
    """How many (floored) standard deviations ``count`` lies above the mean."""
    return (count - mean) / max(std, floor)


def severity(z: float, params: DetectorParams) -> Severity | None:
    if z >= params.z_critical:
        return "critical"
    if z >= params.z_threshold:
        return "warning"
    return None


def evaluate(count: int, history: Sequence[int], params: DetectorParams) -> Verdict:
    """Judge one bucket's ``count`` against the buckets before it (oldest first).

    ``history`` holds the counts of the buckets since the segment's first activity, up to
    the one just before; only its last ``baseline_buckets`` are the baseline. With fewer than
    ``min_baseline_buckets`` there is no verdict (``insufficient``).
    """
    baseline = history[-params.baseline_buckets :]
    if len(baseline) < params.min_baseline_buckets:
        return Verdict("insufficient", count)
    mean, std = baseline_stats(baseline)
    z = z_score(count, mean, std, params.std_floor)
    level = severity(z, params)
    status: Status = "breach" if count >= params.min_count and level is not None else "ok"
    return Verdict(status, count, mean, std, z, level if status == "breach" else None)


def last_closed(watermark_us: int, grace_us: int, bucket_us: int = HOUR_US) -> int:
    """End index of the newest closed bucket: its end is at or before watermark - grace."""
    return (watermark_us - grace_us) // bucket_us


def transition(firing: bool, status: Status) -> Transition | None:
    """Alert state machine of one (rule, segment): fire on a breach, resolve when it clears.

    A bucket without a verdict (too little baseline, too little volume) changes nothing.
    """
    if status == "breach" and not firing:
        return "fire"
    if status == "ok" and firing:
        return "resolve"
    return None
