"""``kpi churn-eval``: how well the churn-risk model ranks and calibrates, on simulated traffic.

The simulator's churn process is known (``stream_app/simulate/population.py``): a
customer's daily churn hazard grows with their latent dissatisfaction, which shows in their
survey scores and, more faintly, in how often they buy. The model learns online from the
events of the whole run, exactly as the worker would (``observe`` at every event of an
active customer, ``cancelled``, ``advance``). From ``train_days`` on, once a week of event
time, every active customer is scored by the model and by the baseline (days since the
last purchase, or since signing up when none) and labelled by whether they cancel within
the next 30 days. A score at ``T`` uses only labels settled by ``T``: nothing the
held-out period's labels say has been learnt when it is scored.

AUC is scipy's Mann-Whitney U over (positives, negatives); calibration is the mean
prediction against the observed rate in deciles of the prediction. A tool: the worker
never imports it (tests/test_layering.py).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import numpy as np
from scipy.stats import mannwhitneyu

from schemas import Cancellation, Purchase, Signup, Survey, parse_event
from stream_app.customers.timeline import to_us
from stream_app.kpis.formulas import to_micros
from stream_app.lifecycle.profile import DAY_US, Profile
from stream_app.lifecycle.risk import HORIZON_US, ChurnRisk
from stream_app.settings import Settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate

DECILES: Final = 10


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: the simulated run, the training period and the scoring interval."""

    seed: int = 11
    customers: int = 3000
    days: int = 200
    train_days: int = 120
    every_days: int = 7

    def simulation(self) -> SimulationConfig:
        return SimulationConfig(
            seed=self.seed, customers=self.customers, duration=timedelta(days=self.days)
        )


# The documented run (docs/metrics.md, churn risk); tests/test_churn_quality.py runs it.
DOCUMENTED: Final = EvalConfig()


@dataclass
class Scored:
    """The held-out period's scores and labels (one entry per customer and scoring time)."""

    model: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    label: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class Decile:
    predicted: float
    observed: float
    count: int


@dataclass(frozen=True)
class Report:
    config: EvalConfig
    examples: int
    positives: int
    auc_model: float
    auc_baseline: float
    deciles: tuple[Decile, ...]
    learnt: int

    def lines(self) -> list[str]:
        """The figures as docs/metrics.md shows them (Markdown tables)."""
        c = self.config
        out = [
            f"Simulated run: seed {c.seed}, {c.customers} customers, {c.days} days; trained "
            f"online from the start, scored from day {c.train_days} to day "
            f"{c.days - HORIZON_US // DAY_US} every {c.every_days} days: {self.examples} "
            f"(customer, time) scores, {self.positives} cancelled within 30 days; "
            f"{self.learnt} examples learnt by the end.",
            "",
            "| score | AUC |",
            "|---|---|",
            f"| churn-risk model | {self.auc_model:.3f} |",
            f"| baseline: days since the last purchase | {self.auc_baseline:.3f} |",
            "",
            "| decile | mean predicted | observed | scores |",
            "|---|---|---|---|",
        ]
        for i, d in enumerate(self.deciles, start=1):
            out.append(f"| {i} | {d.predicted:.3f} | {d.observed:.3f} | {d.count} |")
        return out


def auc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        raise ValueError("AUC needs positives and negatives")
    u = mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u) / (len(positives) * len(negatives))


def deciles(predicted: list[float], labels: list[bool]) -> tuple[Decile, ...]:
    """Mean prediction and observed rate in ten equal-count groups of rising prediction."""
    order = np.argsort(np.asarray(predicted), kind="stable")
    p = np.asarray(predicted)[order]
    y = np.asarray(labels, dtype=float)[order]
    return tuple(
        Decile(float(pp.mean()), float(yy.mean()), len(pp))
        for pp, yy in zip(np.array_split(p, DECILES), np.array_split(y, DECILES), strict=True)
    )


Lifecycle = Signup | Purchase | Survey | Cancellation
# The customer stage's order of events at one instant (signup first, cancellation last).
_RANK: Final[dict[type, int]] = {Signup: 0, Purchase: 1, Survey: 2, Cancellation: 3}


def _events(config: SimulationConfig) -> list[tuple[int, int, str, Lifecycle]]:
    """The run's valid events as (t_us, rank, event id, event), in event-time order."""
    out: list[tuple[int, int, str, Lifecycle]] = []
    for record in generate(config):
        event = parse_event(record.event_type, record.value, record.key)
        if isinstance(event, Signup | Purchase | Survey | Cancellation):
            out.append((to_us(event.occurred_at), _RANK[type(event)], event.event_id, event))
    out.sort(key=lambda e: (e[0], e[1], e[2]))
    return out


def evaluate(config: EvalConfig) -> Report:
    """Run the simulation through the model and score the held-out period."""
    sim = config.simulation()
    start = to_us(sim.start)
    first_score = start + config.train_days * DAY_US
    last_score = start + config.days * DAY_US - HORIZON_US
    risk = ChurnRisk()
    profiles: dict[str, Profile] = {}
    cancellations: dict[str, list[int]] = {}
    pending_scores: list[tuple[int, str, float, float]] = []
    next_score = first_score
    for t, _, _, event in _events(sim):
        while next_score <= min(t, last_score):
            pending_scores += _score_all(risk, profiles, next_score)
            next_score += config.every_days * DAY_US
        risk.advance(t)
        customer = event.customer_id
        profile = profiles.setdefault(customer, Profile())
        if isinstance(event, Signup):
            profile.signup(t)
        elif isinstance(event, Purchase):
            profile.purchase(t, to_micros(event.amount))
        elif isinstance(event, Survey):
            profile.survey(t, event.survey_type, event.score)
        else:
            profile.cancellation(t)
            risk.cancelled(customer, t)
            cancellations.setdefault(customer, []).append(t)
        if profile.active:
            risk.observe(customer, t, profile)
    scored = Scored()
    for at, customer, model_score, baseline in pending_scores:
        times = cancellations.get(customer, ())
        scored.model.append(model_score)
        scored.baseline.append(baseline)
        scored.label.append(any(at < c <= at + HORIZON_US for c in times))
    return Report(
        config=config,
        examples=len(scored.label),
        positives=sum(scored.label),
        auc_model=auc(scored.model, scored.label),
        auc_baseline=auc(scored.baseline, scored.label),
        deciles=deciles(scored.model, scored.label),
        learnt=risk.examples_learnt,
    )


def _score_all(
    risk: ChurnRisk, profiles: dict[str, Profile], now: int
) -> list[tuple[int, str, float, float]]:
    out = []
    for customer in sorted(profiles):
        profile = profiles[customer]
        if profile.active:
            features = profile.features(now)
            out.append((now, customer, risk.risk(features), features["recency_days"]))
    return out


def add_parser(subparsers: Any) -> None:
    """Add the ``churn-eval`` subcommand to the ``kpi`` parser's subparsers."""
    d = DOCUMENTED
    parser = subparsers.add_parser(
        "churn-eval",
        help="measure the churn-risk model (AUC, calibration) on simulated traffic",
        description=(
            "Simulate customers whose churn follows a known process, let the churn-risk model "
            "learn online from their events, and score every active customer weekly over a "
            "held-out later period: AUC of the model and of a recency-only baseline, and "
            "calibration in deciles, as Markdown tables (docs/metrics.md shows the default "
            "run). Takes about a minute with the defaults."
        ),
    )
    parser.add_argument("--seed", type=int, default=d.seed, help=f"default: {d.seed}")
    parser.add_argument(
        "--customers", type=int, default=d.customers, help=f"default: {d.customers}"
    )
    parser.add_argument(
        "--days", type=int, default=d.days, help=f"simulated days (default: {d.days})"
    )
    parser.add_argument(
        "--train-days",
        type=int,
        default=d.train_days,
        help=f"days before the first scoring (default: {d.train_days})",
    )
    parser.set_defaults(func=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``kpi churn-eval``: print the report; 2 when the periods do not fit."""
    del settings
    config = EvalConfig(
        seed=args.seed, customers=args.customers, days=args.days, train_days=args.train_days
    )
    if config.train_days + HORIZON_US // DAY_US > config.days or config.customers < 1:
        sys.stderr.write(
            "kpi churn-eval: --days must leave 30 days after --train-days (the labels of the "
            "last scores), and --customers must be at least 1\n"
        )
        return 2
    report = evaluate(config)
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0
