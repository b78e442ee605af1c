"""Lifecycle stages: the one declaration of the rules (contract section 7), pure.

A stage is a function of a customer's profile (``stream_app.lifecycle.profile``) and an
instant of event time; the thresholds are settings (``KPI_LIFECYCLE_*``). The rules, first
match wins:

1. ``churned``: the customer is not active (cancelled, or never signed up).
2. ``dormant``: no purchase (nor signup) for ``lifecycle_dormant_after``.
3. ``at_risk``: no purchase (nor signup) for ``lifecycle_at_risk_after``.
4. ``new``: first seen less than ``lifecycle_new_for`` ago.
5. ``loyal``: at least ``lifecycle_loyal_purchases`` purchases and
   ``lifecycle_loyal_revenue`` revenue in the last 365 days (the profile's 12 calendar
   months).
6. ``active``: the rest.

Recency counts from the latest purchase or signup, whichever is later: a customer who
signed up and never bought drifts to ``at_risk`` as one who stopped buying does, and a
returning customer starts afresh. Because time alone moves a customer between stages,
``next_change`` says when the stage would change if nothing else happened; the worker
keeps that instant per customer and moves the customer when the watermark passes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.lifecycle import Stage
from stream_app.kpis.cohorts import period_end
from stream_app.kpis.formulas import to_micros
from stream_app.lifecycle.profile import WINDOW_MONTHS, Profile
from stream_app.settings import Settings, duration_ms


@dataclass(frozen=True, slots=True)
class Rules:
    """The thresholds of the rules in the units they are compared in (microseconds, micros)."""

    new_for_us: int
    at_risk_after_us: int
    dormant_after_us: int
    loyal_purchases: int
    loyal_revenue_micros: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            new_for_us=duration_ms(settings.lifecycle_new_for) * 1000,
            at_risk_after_us=duration_ms(settings.lifecycle_at_risk_after) * 1000,
            dormant_after_us=duration_ms(settings.lifecycle_dormant_after) * 1000,
            loyal_purchases=settings.lifecycle_loyal_purchases,
            loyal_revenue_micros=to_micros(settings.lifecycle_loyal_revenue),
        )


def _last_activity_us(profile: Profile) -> int | None:
    purchase, signup = profile.purchase_us, profile.signup_us
    if purchase is None:
        return signup
    return purchase if signup is None or purchase > signup else signup


def classify(profile: Profile, now_us: int, rules: Rules) -> tuple[Stage, str]:
    """The stage of a customer with ``profile`` at ``now_us``, and why (a short reason)."""
    if not profile.active:
        return Stage.CHURNED, "cancelled" if profile.cancel_us is not None else "not_signed_up"
    last = _last_activity_us(profile)
    idle_us = 0 if last is None else now_us - last
    if idle_us >= rules.dormant_after_us:
        return Stage.DORMANT, "no_purchase_for_dormant_after"
    if idle_us >= rules.at_risk_after_us:
        return Stage.AT_RISK, "no_purchase_for_at_risk_after"
    first = profile.first_us
    if first is not None and now_us - first < rules.new_for_us:
        return Stage.NEW, "tenure_below_new_for"
    # All buckets first (no calendar arithmetic): most customers have too few purchases.
    if (
        sum(b.purchases for b in profile.months) >= rules.loyal_purchases
        and profile.purchases_365d(now_us) >= rules.loyal_purchases
        and profile.revenue_365d_micros(now_us) >= rules.loyal_revenue_micros
    ):
        return Stage.LOYAL, "frequent_and_valuable"
    return Stage.ACTIVE, "purchasing"


def next_change(
    profile: Profile, now_us: int, rules: Rules, current: Stage | None = None
) -> int | None:
    """The first instant after ``now_us`` at which the stage changes with no new event;
    ``current`` is the stage at ``now_us`` if the caller has just classified it.

    Time moves a stage one way only: ``new`` ends (to ``active`` or ``loyal``), a loyal
    customer's months leave the 365-day window (to ``active``), recency passes the
    ``at_risk`` and then the ``dormant`` threshold; ``churned`` and ``dormant`` stay. So
    each stage has at most a few instants to try.
    """
    if not profile.active:
        return None
    last = _last_activity_us(profile)
    if last is None:
        return None
    at_risk = last + rules.at_risk_after_us
    if current is None:
        current = classify(profile, now_us, rules)[0]
    if current is Stage.DORMANT:
        return None
    if current is Stage.AT_RISK:
        return last + rules.dormant_after_us
    if current is Stage.NEW and profile.first_us is not None:
        return min(at_risk, profile.first_us + rules.new_for_us)
    if current is Stage.LOYAL:
        # A bucket leaves at the start of month ``b.month + 12``: the end of period
        # ``b.month + 11`` of the month calendar counted from January 1970.
        for b in profile.months:
            leaves = period_end(0, b.month + WINDOW_MONTHS - 1, "month")
            if now_us < leaves < at_risk and classify(profile, leaves, rules)[0] != current:
                return leaves
    return at_risk
