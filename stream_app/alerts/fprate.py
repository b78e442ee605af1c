"""False positives (and detection) of the churn-spike detector, measured on simulated traffic.

No Kafka and no worker: the simulator generates a log, the independent batch reference
(``stream_app/verify/reference.py``) folds it into exact hourly churn counts per segment,
and the detector runs over them with the same functions and the same state machine the
worker uses. Each firing transition is one alert. ``python -m stream_app.alerts fp-rate``
prints the figures quoted in docs/alerts.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from stream_app.alerts.detector import (
    DetectorParams,
    Verdict,
    evaluate,
    last_closed,
    transition,
)
from stream_app.kpis.specs import HOUR_US
from stream_app.settings import Settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate
from stream_app.simulate.scenarios import Scenario
from stream_app.verify.reference import Reference, filter_records, reference_from_intake


@dataclass(frozen=True)
class Fired:
    segment: str
    bucket: int  # end index of the hour that fired
    verdict: Verdict


@dataclass
class RunResult:
    """One simulated run: the alerts that fired and how many buckets had a verdict."""

    fired: list[Fired] = field(default_factory=list)
    buckets: int = 0
    # Mean churned customers per hour in 'all' (a sense of the volume).
    hourly_churn_all: float = 0.0


def churn_segments(reference: Reference) -> list[str]:
    return sorted(s for s in reference.segments if s == "all" or s.startswith("region:"))


def first_activity_hour(reference: Reference, segment: str) -> int | None:
    """End index of the hour of the segment's first fact of any kind (as the worker sees it)."""
    times = [tl.times[0] for tl in reference.amounts.get(segment, {}).values() if tl.times]
    activity = reference.activity.get(segment)
    if activity is not None and activity.times:
        times.append(activity.times[0])
    buyers = reference.buyers.get(segment)
    if buyers is not None and buyers.times:
        times.append(buyers.times[0])
    return min(times) // HOUR_US + 1 if times else None


def hourly_churn(reference: Reference, segment: str, first: int, last: int) -> list[int]:
    """Churned customers per hour, for the hours with end index ``first`` to ``last``."""
    timeline = reference.amounts.get(segment, {}).get("churned_customers")
    if timeline is None:
        return [0] * (last - first + 1)
    return [timeline.total_between((h - 1) * HOUR_US, h * HOUR_US) for h in range(first, last + 1)]


def scan(
    counts: Sequence[int], params: DetectorParams, count_from: int = 0
) -> tuple[list[tuple[int, Verdict]], int]:
    """Run the detector and its state machine over consecutive hours (oldest first).

    Returns the (offset, verdict) of each firing transition from offset ``count_from`` on,
    and how many of those hours had a verdict.
    """
    fired: list[tuple[int, Verdict]] = []
    judged = 0
    firing = False
    for i, count in enumerate(counts):
        verdict = evaluate(count, counts[max(0, i - params.baseline_buckets) : i], params)
        if verdict.status != "insufficient" and i >= count_from:
            judged += 1
        move = transition(firing, verdict.status)
        if move == "fire":
            if i >= count_from:
                fired.append((i, verdict))
            firing = True
        elif move == "resolve":
            firing = False
    return fired, judged


def run(
    seed: int,
    customers: int,
    days: float,
    params: DetectorParams,
    *,
    grace: timedelta = timedelta(minutes=15),
    scenarios: Sequence[Scenario] = (),
    settings: Settings | None = None,
    warmup_days: float = 0.0,
) -> RunResult:
    """Simulate one run (lifecycle events only: activity is irrelevant to churn) and scan it.

    With ``warmup_days`` the simulation is that much longer, and only alerts and verdicts
    after the warm-up count: the simulator's customers all sign up in its first 2 days, so
    churn ramps up from zero then, which is not steady traffic.
    """
    settings = settings or Settings()
    config = SimulationConfig(
        seed=seed,
        duration=timedelta(days=warmup_days + days),
        customers=customers,
        events_target=1,  # scales clicks, purchases and surveys away; signups and churn stay
        scenarios=tuple(scenarios),
    )
    simulate_log = logging.getLogger("stream_app.simulate")
    level = simulate_log.level
    simulate_log.setLevel(logging.ERROR)  # the volume warning the tiny target causes
    try:
        records = list(generate(config))
    finally:
        simulate_log.setLevel(level)
    reference = reference_from_intake(filter_records(records, settings), settings)
    result = RunResult()
    if reference.watermark is None:
        return result
    watermark_us = int(reference.watermark.timestamp() * 1_000_000)
    last = last_closed(watermark_us, int(grace.total_seconds() * 1_000_000))
    counted_from = int(config.start.timestamp()) // 3600 + 1 + round(warmup_days * 24)
    for segment in churn_segments(reference):
        first = first_activity_hour(reference, segment)
        if first is None or first > last:
            continue
        counts = hourly_churn(reference, segment, first, last)
        skip = max(0, counted_from - first)
        fired, judged = scan(counts, params, count_from=skip)
        result.buckets += judged
        if segment == "all" and counts[skip:]:
            result.hourly_churn_all = sum(counts[skip:]) / len(counts[skip:])
        result.fired.extend(Fired(segment, first + i, verdict) for i, verdict in fired)
    return result


@dataclass(frozen=True)
class Summary:
    """False positives over many seeds of steady traffic."""

    customers: int
    days: float
    seeds: int
    alerts: int
    runs_with_alert: int
    buckets: int
    hourly_churn_all: float

    @property
    def per_bucket(self) -> float:
        return self.alerts / self.buckets if self.buckets else 0.0

    @property
    def per_run(self) -> float:
        return self.alerts / self.seeds

    @property
    def per_segment_week(self) -> float:
        return self.per_bucket * 168

    @property
    def share_of_runs(self) -> float:
        return self.runs_with_alert / self.seeds


def measure(
    seeds: Iterable[int],
    customers: int,
    days: float,
    params: DetectorParams,
    grace: timedelta = timedelta(minutes=15),
    warmup_days: float = 0.0,
) -> Summary:
    seeds = list(seeds)
    alerts = runs_with = buckets = 0
    churn = 0.0
    for seed in seeds:
        result = run(seed, customers, days, params, grace=grace, warmup_days=warmup_days)
        alerts += len(result.fired)
        runs_with += bool(result.fired)
        buckets += result.buckets
        churn += result.hourly_churn_all
    return Summary(
        customers, days, len(seeds), alerts, runs_with, buckets, churn / max(1, len(seeds))
    )
