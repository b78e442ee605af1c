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
    """Expected counts of a configuration (scenarios ignored) and the chosen activity scale."""

    activity_scale: float
    active_customer_days: float
    lifecycle_events: float
    expected_good: float
    expected_records: float
    target_records: float | None

    @property
    def reachable(self) -> bool:
        """False when the target is below what signups and cancellations alone produce."""
        return self.target_records is None or self.activity_scale > MIN_ACTIVITY_SCALE


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
    minus churn at the mean hazard; a step of one hour is plenty for day-scale rates.
    """
    b = config.behaviour
    days = config.duration / timedelta(days=1)
    dt = 1 / _STEPS_PER_DAY
    hazard = b.churn_rate * _mean_churn_multiplier(b)
    ramp = max(b.initial_signup_days, dt)
    active = waiting = signups = cancellations = active_days = 0.0
    t = 0.0
    while t < days:
        step = min(dt, days - t)
        inflow = config.customers * (b.growth_rate + (1 / ramp if t < ramp else 0.0))
        returns = waiting / b.resignup_delay_days
        churn = hazard * active
        signups += (inflow + returns) * step
        cancellations += churn * step
        active_days += active * step
        active += (inflow + returns - churn) * step
        waiting += (b.resignup_probability * churn - returns) * step
        t += step
    preclicks = signups * (1 - b.organic_share) * b.preclick_probability
    lifecycle = signups + cancellations + preclicks
    per_day = _activity_per_customer_day(config)

    late_share = max(0.0, days - LATE_AFTER / timedelta(days=1)) / days
    fault_factor = 1 + config.inject_bad + config.duplicates + config.late * late_share
    target = config.target_records
    if target is None or active_days <= 0 or per_day <= 0:
        scale = 1.0
    else:
        wanted_activity = target / fault_factor - lifecycle
        scale = max(MIN_ACTIVITY_SCALE, wanted_activity / (active_days * per_day))
    good = lifecycle + scale * active_days * per_day
    return VolumePlan(
        activity_scale=scale,
        active_customer_days=active_days,
        lifecycle_events=lifecycle,
        expected_good=good,
        expected_records=good * fault_factor,
        target_records=target,
    )
