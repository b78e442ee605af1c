"""Expected volume of a simulation, and the activity scale that meets a volume target."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from stream_app.simulate.config import LATE_AFTER, Behaviour, SimulationConfig

# The scale never drops to 0: customers who never click or buy would make a dull dataset.
MIN_ACTIVITY_SCALE: Final = 0.05
_STEPS_PER_DAY: Final = 24
_QUADRATURE_POINTS: Final = 400


@dataclass(frozen=True)
class VolumePlan:
    """Expected counts of a configuration (scenarios ignored) and the chosen activity scales.

    ``activity_scale`` applies after the history (to the whole run without one);
    ``history_activity_scale`` to the history, None without one. Counts cover the whole run.
    """

    activity_scale: float
    active_customer_days: float
    lifecycle_events: float
    expected_good: float
    expected_records: float
    target_records: float | None
    history_activity_scale: float | None = None

    @property
    def reachable(self) -> bool:
        """False when a target is below what signups and cancellations alone produce."""
        scales = [self.activity_scale, self.history_activity_scale]
        return self.target_records is None or all(
            scale is None or scale > MIN_ACTIVITY_SCALE for scale in scales
        )


@dataclass
class _Part:
    """Expected exposure of one part of the run (the history or the rest), at scale 1."""

    begin: float
    end: float
    signups: float = 0.0
    cancellations: float = 0.0
    active_days: float = 0.0


def satisfaction_mean(behaviour: Behaviour) -> float:
    return behaviour.satisfaction_alpha / (
        behaviour.satisfaction_alpha + behaviour.satisfaction_beta
    )


def churn_multiplier(behaviour: Behaviour, satisfaction: float) -> float:
    """How much more (or less) than the base rate a customer of this satisfaction churns."""
    return math.exp(
        behaviour.churn_satisfaction_slope * (satisfaction_mean(behaviour) - satisfaction)
    )


def _mean_churn_multiplier(behaviour: Behaviour) -> float:
    """E[churn_multiplier(s)] for s ~ Beta(alpha, beta), by the midpoint rule."""
    alpha, beta = behaviour.satisfaction_alpha, behaviour.satisfaction_beta
    total = weighted = 0.0
    for i in range(_QUADRATURE_POINTS):
        s = (i + 0.5) / _QUADRATURE_POINTS
        density = s ** (alpha - 1) * (1 - s) ** (beta - 1)
        total += density
        weighted += density * churn_multiplier(behaviour, s)
    return weighted / total


def _activity_per_customer_day(config: SimulationConfig) -> float:
    """Expected clicks, purchases and surveys of one active customer in one day, at scale 1."""
    b = config.behaviour
    propensity = 0.5 + satisfaction_mean(b)
    weights = sum(c.weight for c in config.campaigns)
    conversion = propensity * sum(c.weight * c.conversion for c in config.campaigns) / weights
    purchases = b.purchase_rate * propensity + b.click_rate * conversion
    return b.click_rate + purchases + b.nps_rate + b.csat_probability * purchases


def plan_volume(config: SimulationConfig) -> VolumePlan:
    """Integrate the expected active population, then pick the activity scale for the target.

    The population follows signups (the initial ramp, steady growth and returns after churn)
    minus churn at the mean hazard; a step of one hour is plenty for day-scale rates. With
    a history, each part is integrated apart and gets the scale that meets its own target.
    """
    b = config.behaviour
    days = config.duration / timedelta(days=1)
    split = config.history / timedelta(days=1)
    parts = [_Part(0.0, split), _Part(split, days)] if split > 0 else [_Part(0.0, days)]
    dt = 1 / _STEPS_PER_DAY
    hazard = b.churn_rate * _mean_churn_multiplier(b)
    ramp = max(b.initial_signup_days, dt)
    active = waiting = 0.0
    for part in parts:
        t = part.begin
        while t < part.end:
            step = min(dt, part.end - t)
            inflow = config.customers * (b.growth_rate + (1 / ramp if t < ramp else 0.0))
            returns = waiting / b.resignup_delay_days
            churn = hazard * active
            part.signups += (inflow + returns) * step
            part.cancellations += churn * step
            part.active_days += active * step
            active += (inflow + returns - churn) * step
            waiting += (b.resignup_probability * churn - returns) * step
            t += step
    per_day = _activity_per_customer_day(config)
    targets = [config.target_records]
    if config.history_events is not None:
        targets.insert(0, float(config.history_events))
    late_after = LATE_AFTER / timedelta(days=1)
    scales: list[float] = []
    lifecycle = active_days = good = records = 0.0
    for part, target in zip(parts, targets, strict=True):
        preclicks = part.signups * (1 - b.organic_share) * b.preclick_probability
        part_lifecycle = part.signups + part.cancellations + preclicks
        span = part.end - part.begin
        late_share = max(0.0, part.end - max(part.begin, late_after)) / span
        fault_factor = 1 + config.inject_bad + config.duplicates + config.late * late_share
        if target is None or part.active_days <= 0 or per_day <= 0:
            scale = 1.0
        else:
            wanted_activity = target / fault_factor - part_lifecycle
            scale = max(MIN_ACTIVITY_SCALE, wanted_activity / (part.active_days * per_day))
        part_good = part_lifecycle + scale * part.active_days * per_day
        scales.append(scale)
        lifecycle += part_lifecycle
        active_days += part.active_days
        good += part_good
        records += part_good * fault_factor
    given = [target for target in targets if target is not None]
    return VolumePlan(
        activity_scale=scales[-1],
        active_customer_days=active_days,
        lifecycle_events=lifecycle,
        expected_good=good,
        expected_records=records,
        target_records=sum(given) if given else None,
        history_activity_scale=scales[0] if len(scales) > 1 else None,
    )
