"""What to simulate: population, regions, campaigns, behaviour, volume, scenarios and faults."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from stream_app.simulate.scenarios import Scenario

DEFAULT_START: Final = datetime(2026, 11, 1, tzinfo=UTC)

# Lateness the generator must respect (contract: max lateness defaults to 31 days).
LATE_MIN_AGE: Final = timedelta(days=35)
LATE_AFTER: Final = timedelta(days=36)
# On-time events trail the newest one by at most this (disorder and re-sends included).
MAX_DISORDER: Final = timedelta(hours=3)
DUPLICATE_MAX_LAG: Final = timedelta(hours=1)
DUPLICATE_MAX_RECORDS: Final = 300

_REGION_CODE = re.compile(r"[A-Z0-9_-]{2,8}")
_CAMPAIGN_ID = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]{1,128}")
_OFFSET = re.compile(r"Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]")


@dataclass(frozen=True)
class Region:
    """A market: its code, its share of new customers and the UTC offsets its customers write.

    Activity follows the local time of the customer's offset (the first one is the most
    common); ``Z`` means the customer's systems write UTC.
    """

    code: str
    weight: float
    offsets: tuple[str, ...] = ("Z",)

    def __post_init__(self) -> None:
        if not _REGION_CODE.fullmatch(self.code):
            raise ValueError(f"region {self.code!r}: 2 to 8 upper-case letters, digits, _ or -")
        if self.weight <= 0:
            raise ValueError(f"region {self.code}: the weight must be positive")
        if not self.offsets or not all(_OFFSET.fullmatch(o) for o in self.offsets):
            raise ValueError(f"region {self.code}: offsets must be like Z, +01:00 or -05:30")


@dataclass(frozen=True)
class Campaign:
    """A marketing campaign: share of clicks and acquisitions, cost per click, conversion."""

    campaign_id: str
    weight: float
    cost_per_click: Decimal
    conversion: float

    def __post_init__(self) -> None:
        if not _CAMPAIGN_ID.fullmatch(self.campaign_id):
            raise ValueError(f"campaign {self.campaign_id!r}: 1 to 128 chars, no whitespace")
        if self.weight <= 0:
            raise ValueError(f"campaign {self.campaign_id}: the weight must be positive")
        if not Decimal(0) <= self.cost_per_click <= Decimal(1000):
            raise ValueError(f"campaign {self.campaign_id}: cost per click out of range")
        if not 0 <= self.conversion <= 1:
            raise ValueError(f"campaign {self.campaign_id}: conversion must be in [0, 1]")


DEFAULT_REGIONS: Final = (
    Region("EU", 0.4, ("+01:00", "+01:00", "+02:00", "Z")),
    Region("NA", 0.3, ("-05:00", "-06:00", "-08:00")),
    Region("APAC", 0.2, ("+08:00", "+09:00", "+05:30", "+10:00")),
    Region("LATAM", 0.1, ("-03:00", "-05:00")),
)
# Calibrated to the ecommerce benchmark profile (stream_app/benchmarks/profiles/ecommerce.toml,
# which names each source). Last-touch attribution credits any purchase within 7 days of a
# click, so click-to-purchase conversion is about purchases / clicks: some 40 clicks per
# purchase put it at 2.5-3 %, inside 1-4 % (VWO citing Monetate, 2020). Costs per click of
# about 1.00 on average then make CAC about 70, inside 53-91 (First Page Sage, 2024). The
# campaign's own conversion is the small extra pull a click has on a purchase.
DEFAULT_CAMPAIGNS: Final = (
    Campaign("spring-sale", 0.35, Decimal("0.9500"), 0.012),
    Campaign("newsletter", 0.25, Decimal("0.1500"), 0.020),
    Campaign("search-brand", 0.2, Decimal("1.9000"), 0.015),
    Campaign("social-retarget", 0.2, Decimal("1.1000"), 0.008),
)


@dataclass(frozen=True)
class Behaviour:
    """How customers behave; rates are means over customers, per active customer and day.

    The activity rates (clicks, organic purchases, NPS surveys) are scaled together when a
    volume target is set; lifecycle rates (arrivals, churn, returns) never are, so a volume
    target does not change how the population evolves.
    """

    # The defaults are calibrated to the ecommerce benchmark profile
    # (stream_app/benchmarks/profiles/ecommerce.toml, one source per band; the 30d window of
    # a default run lands inside each band: tests/test_simulate_calibration.py).
    # Clicks: about 40 per purchase (conversion 1-4 %, VWO citing Monetate, 2020).
    click_rate: float = 0.40
    # Organic purchases: with the clicks' conversions, a quarter of a month's buyers buy
    # twice or more (repeat purchase rate 15-30 %, Opensend, 2025).
    purchase_rate: float = 0.005
    nps_rate: float = 1 / 30
    # Gamma shape of per-customer rates: below 1, a few heavy users and many occasional ones.
    rate_shape: float = 0.8
    csat_probability: float = 0.25
    # Satisfaction is latent, in (0, 1), Beta-distributed at signup. Skewed high with a tail
    # of unhappy customers: NPS about 40 (28-55, NPSpack, 2025) and CSAT about 80 % satisfied
    # (ACSI online retail 75-85, 2025).
    satisfaction_alpha: float = 1.4
    satisfaction_beta: float = 0.3
    # Churn hazard per day at average satisfaction; x e^slope per unit of satisfaction lost.
    # About 12 % of the customers at a month's start leave within it (10-15 % a month,
    # Opensend, 2025).
    churn_rate: float = 0.0032
    churn_satisfaction_slope: float = 3.0
    # New customers per day, as a share of the initial population (about 15 % a month).
    growth_rate: float = 0.005
    # Initial customers sign up within this many days of the start.
    initial_signup_days: float = 2.0
    organic_share: float = 0.3
    preclick_probability: float = 0.6
    resignup_probability: float = 0.3
    resignup_delay_days: float = 14.0
    region_switch_probability: float = 0.25
    # Order values: lognormal around a per-customer median (heavy tail: some > 1000). AOV about
    # 75, inside 50-192 (Opensend, 2025, citing Littledata: 60 % of Shopify stores).
    order_median: float = 40.0
    order_customer_sigma: float = 0.6
    order_sigma: float = 0.9
    bulk_order_probability: float = 0.002
    # Click -> purchase delay: lognormal, median hours; capped below the attribution window.
    conversion_delay_hours: float = 5.0
    conversion_delay_sigma: float = 1.3
    conversion_delay_cap: timedelta = timedelta(days=6, hours=12)
    # Share of events whose occurred_at is written in UTC (Z) instead of the local offset.
    utc_share: float = 0.15

    def __post_init__(self) -> None:
        rates = ("click_rate", "purchase_rate", "nps_rate", "churn_rate", "growth_rate")
        for name in rates:
            if getattr(self, name) < 0:
                raise ValueError(f"behaviour.{name} must not be negative")
        shares = (
            "csat_probability",
            "organic_share",
            "preclick_probability",
            "resignup_probability",
            "region_switch_probability",
            "bulk_order_probability",
            "utc_share",
        )
        for name in shares:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"behaviour.{name} must be between 0 and 1")
        positive = (
            "rate_shape",
            "satisfaction_alpha",
            "satisfaction_beta",
            "resignup_delay_days",
            "order_median",
            "conversion_delay_hours",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"behaviour.{name} must be positive")
        if self.initial_signup_days < 0:
            raise ValueError("behaviour.initial_signup_days must not be negative")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulation; equal configs give byte-identical output.

    Volume: ``events_target`` (total records, faults included) or ``rate_per_day`` (total
    records per simulated day) scale the customers' activity rates so that the total lands
    near the target; with neither, ``behaviour``'s rates apply unscaled (about 0.5 events
    per customer and day). Lifecycle events (signups, cancellations) are not scaled, so a
    target far below them cannot be met; the generator logs a warning then.

    A history played at another volume (a real-time run's recent past, sent at once, then
    live traffic at a few events per second): ``history_events`` records for the first
    ``history`` of the period; ``events_target`` or ``rate_per_day`` then cover the rest
    only (without either, the rest is unscaled). Each part gets its own activity scale.

    Fault ratios are per on-time event: ``inject_bad`` adds that many malformed messages,
    ``duplicates`` that many exact re-sends, ``late`` that many events at least 35 days
    older than the newest event (only once 36 days of simulated time have passed).
    """

    seed: int = 1
    start: datetime = DEFAULT_START
    duration: timedelta = timedelta(days=40)
    customers: int = 1000
    events_target: int | None = None
    rate_per_day: float | None = None
    history: timedelta = timedelta(0)
    history_events: int | None = None
    regions: tuple[Region, ...] = DEFAULT_REGIONS
    campaigns: tuple[Campaign, ...] = DEFAULT_CAMPAIGNS
    behaviour: Behaviour = field(default_factory=Behaviour)
    scenarios: tuple[Scenario, ...] = ()
    disorder: timedelta = timedelta(minutes=10)
    inject_bad: float = 0.0
    duplicates: float = 0.0
    late: float = 0.0
    reporting_currency: str = "USD"

    def __post_init__(self) -> None:
        if self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        # One spelling of the start (UTC) keeps ids and output independent of its offset.
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        if self.duration <= timedelta(0):
            raise ValueError("duration must be positive")
        if self.customers < 1:
            raise ValueError("customers must be at least 1")
        if self.events_target is not None and self.rate_per_day is not None:
            raise ValueError("give events_target or rate_per_day, not both")
        if self.events_target is not None and self.events_target < 1:
            raise ValueError("events_target must be at least 1")
        if self.rate_per_day is not None and self.rate_per_day <= 0:
            raise ValueError("rate_per_day must be positive")
        if (self.history_events is None) != (self.history == timedelta(0)):
            raise ValueError("history and history_events go together")
        if self.history_events is not None:
            if self.history_events < 1:
                raise ValueError("history_events must be at least 1")
            if not timedelta(0) < self.history < self.duration:
                raise ValueError("history must be positive and shorter than the duration")
        if not self.regions or not self.campaigns:
            raise ValueError("at least one region and one campaign are required")
        if len({r.code for r in self.regions}) != len(self.regions):
            raise ValueError("region codes must be unique")
        if len({c.campaign_id for c in self.campaigns}) != len(self.campaigns):
            raise ValueError("campaign ids must be unique")
        if not timedelta(0) <= self.disorder <= MAX_DISORDER:
            raise ValueError(f"disorder must be between 0 and {MAX_DISORDER}")
        for name in ("inject_bad", "duplicates", "late"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a ratio between 0 and 1")
        if not re.fullmatch(r"[A-Z]{3}", self.reporting_currency):
            raise ValueError("reporting_currency must be an ISO 4217 code")

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    @property
    def target_records(self) -> float | None:
        """The requested number of records after the history (all of them without one)."""
        if self.events_target is not None:
            return float(self.events_target)
        if self.rate_per_day is not None:
            return self.rate_per_day * ((self.duration - self.history) / timedelta(days=1))
        return None
