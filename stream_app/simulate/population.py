"""The customer population as a discrete-event simulation: events come out in event-time order."""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from typing import Any, Final

import orjson

from schemas import EventType
from stream_app.simulate.config import Campaign, Region, SimulationConfig
from stream_app.simulate.stats import SimulationStats
from stream_app.simulate.volume import churn_multiplier, satisfaction_mean

MS_PER_HOUR: Final = 3_600_000
MS_PER_DAY: Final = 86_400_000
SCHEMA_VERSION: Final = 1

# Local-time activity by hour of day: a night trough, a lunch bump and an evening peak.
_DAILY_RAW: Final = (
    0.25, 0.18, 0.14, 0.12, 0.14, 0.25, 0.50, 0.85, 1.10, 1.25, 1.30, 1.35,
    1.45, 1.40, 1.30, 1.25, 1.30, 1.45, 1.65, 1.80, 1.75, 1.50, 1.05, 0.60,
)  # fmt: skip
# Monday first: busier towards and on the weekend.
_WEEKLY_RAW: Final = (0.93, 0.94, 0.96, 0.98, 1.04, 1.12, 1.03)
DAILY: Final = tuple(v * len(_DAILY_RAW) / sum(_DAILY_RAW) for v in _DAILY_RAW)
WEEKLY: Final = tuple(v * len(_WEEKLY_RAW) / sum(_WEEKLY_RAW) for v in _WEEKLY_RAW)
SEASON_MAX: Final = max(DAILY) * max(WEEKLY)
# 1970-01-01 was a Thursday: weekday index (Monday = 0) of epoch day 0.
_EPOCH_WEEKDAY: Final = 3

_ORGANIC_CHANNELS: Final = ("organic", "referral", "direct", "app-store")
_CANCEL_REASONS_UNHAPPY: Final = ("poor service", "too expensive", "switched to competitor")
_CANCEL_REASONS_OTHER: Final = ("no longer needed", "moving abroad", "budget cuts")


class _Action(IntEnum):
    """What a scheduled entry does when its time comes; the value breaks ties in the heap."""

    GROWTH = 0
    ARRIVAL = 1
    SIGNUP = 2
    ACTIVITY = 3
    CHURN = 4
    CONVERSION = 5
    CSAT = 6
    RESIGNUP = 7


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """One valid event: when (ms since the start), whose, its type and its JSON payload."""

    at_ms: int
    customer: int
    event_type: EventType
    payload: dict[str, Any]
    value: bytes

    @property
    def key(self) -> bytes:
        return str(self.payload["customer_id"]).encode()


@dataclass(slots=True)
class _Customer:
    """The model's state of one customer."""

    index: int
    customer_id: str
    region: Region
    offset_ms: int
    tz: timezone
    utc_writer: bool
    precise: bool
    campaign: str | None
    base_satisfaction: float
    satisfaction: float
    click_rate: float
    purchase_rate: float
    basket_mu: float
    active: bool = False
    # `life` counts churns: deferred actions of an earlier life are void. `version` voids
    # the pending spontaneous action whenever the state changes and it is re-drawn.
    life: int = 0
    version: int = 0


class _Timeline:
    """Scenario effects as factors that are constant between breakpoints (ms since start).

    A history played at another volume is one more piece: before its end, activity is
    multiplied by ``history_factor`` (its scale relative to the rest's).
    """

    def __init__(self, config: SimulationConfig, history_factor: float = 1.0) -> None:
        start = config.start

        def ms(moment: datetime) -> int:
            return int((moment - start) / timedelta(milliseconds=1))

        spans = [(ms(s.at), ms(s.end), s) for s in config.scenarios]
        history_end = int(config.history / timedelta(milliseconds=1))
        edges = {edge for lo, hi, _ in spans for edge in (lo, hi)}
        if history_end > 0:
            edges.add(history_end)
        self.breaks: list[int] = sorted(edges)
        # Piece i covers [breaks[i-1], breaks[i]); piece 0 starts at minus infinity.
        reps = [None, *self.breaks]

        def product(hook: str, name: str) -> list[float]:
            factors = []
            for rep in reps:
                value = 1.0
                for lo, hi, scenario in spans:
                    if rep is not None and lo <= rep < hi:
                        value *= getattr(scenario, hook)(name)
                factors.append(value)
            return factors

        # Piece 0 starts at minus infinity: with a history, it lies in it.
        history = [
            history_factor if history_end > 0 and (rep is None or rep < history_end) else 1.0
            for rep in reps
        ]
        self.churn = {r.code: product("churn_factor", r.code) for r in config.regions}
        self.activity = {
            r.code: [
                f * h for f, h in zip(product("activity_factor", r.code), history, strict=True)
            ]
            for r in config.regions
        }
        self.conversion = {
            c.campaign_id: product("conversion_factor", c.campaign_id) for c in config.campaigns
        }

    def piece(self, t: float, end: float) -> tuple[int, float]:
        """Index of the piece holding ``t`` and where it ends (at most ``end``)."""
        i = bisect_right(self.breaks, t)
        return i, min(self.breaks[i], end) if i < len(self.breaks) else end


class PopulationModel:
    """Customers arrive, sign up, click, buy, answer surveys, churn and sometimes come back.

    Each customer has one pending spontaneous action (the next activity or the churn, the
    earlier of two draws from time-varying Poisson processes) plus deferred actions
    (a purchase after a click, a CSAT survey after a purchase, a return after churn). All
    live in one heap ordered by time, so events come out in event-time order. The processes
    are memoryless, so re-drawing the spontaneous action after every state change is exact.
    """

    def __init__(
        self,
        config: SimulationConfig,
        rng: random.Random,
        activity_scale: float,
        stats: SimulationStats,
        run_tag: str,
        history_scale: float | None = None,
    ) -> None:
        self._config = config
        self._b = config.behaviour
        self._rng = rng
        self._scale = activity_scale
        self._stats = stats
        self._tag = run_tag
        self._start = config.start
        self._start_ms = int(config.start.timestamp() * 1000)
        self._end = float(config.duration / timedelta(milliseconds=1))
        self._timeline = _Timeline(
            config, 1.0 if history_scale is None else history_scale / activity_scale
        )
        self._mean_satisfaction = satisfaction_mean(self._b)
        self._heap: list[tuple[int, int, int, int, int]] = []
        self._seq = 0
        self._customers: list[_Customer] = []
        self._out: list[ModelEvent] = []
        self._event_count = 0
        self._order_count = 0
        self._tz_cache: dict[str, timezone] = {}
        self._region_weights = [r.weight for r in config.regions]
        self._campaign_weights = [c.weight for c in config.campaigns]
        self._campaigns = {c.campaign_id: c for c in config.campaigns}

    # -- the event loop ------------------------------------------------------------------

    def events(self) -> Iterator[ModelEvent]:
        """Every valid event of the simulated period, in event-time order."""
        self._seed_population()
        heap = self._heap
        while heap and heap[0][0] < self._end:
            t, _, action, index, token = heapq.heappop(heap)
            self._dispatch(_Action(action), t, index, token)
            if self._out:
                yield from self._out
                self._out.clear()

    def _push(self, t: float, action: _Action, index: int = -1, token: int = 0) -> None:
        if t < self._end:
            self._seq += 1
            heapq.heappush(self._heap, (int(t), self._seq, action, index, token))

    def _seed_population(self) -> None:
        ramp = max(self._b.initial_signup_days * MS_PER_DAY, 1.0)
        for _ in range(self._config.customers):
            customer = self._new_customer()
            self._push(self._seasonal_time(customer, ramp), _Action.ARRIVAL, customer.index)
        self._push(self._next_growth(0.0), _Action.GROWTH)

    def _dispatch(self, action: _Action, t: int, index: int, token: int) -> None:
        if action is _Action.GROWTH:
            customer = self._new_customer()
            self._arrive(customer, t)
            self._push(self._next_growth(t), _Action.GROWTH)
            return
        c = self._customers[index]
        if action is _Action.ARRIVAL:
            self._arrive(c, t)
        elif action is _Action.ACTIVITY or action is _Action.CHURN:
            if token != c.version or not c.active:
                return  # superseded by a later draw
            if action is _Action.CHURN:
                self._churn(c, t)
            else:
                self._activity(c, t)
        elif token != c.life:
            return  # deferred action of an earlier life
        elif action is _Action.SIGNUP:
            if not c.active:
                self._signup(c, t)
        elif action is _Action.RESIGNUP:
            if not c.active:
                self._return(c, t)
        elif c.active:
            if action is _Action.CONVERSION:
                self._purchase(c, t)
            else:
                self._survey(c, t, "csat")
            self._reschedule(c, t)

    # -- customers ------------------------------------------------------------------------

    def _new_customer(self) -> _Customer:
        rng, b = self._rng, self._b
        index = len(self._customers)
        region = rng.choices(self._config.regions, self._region_weights)[0]
        offset = rng.choice(region.offsets)
        satisfaction = rng.betavariate(b.satisfaction_alpha, b.satisfaction_beta)
        customer = _Customer(
            index=index,
            customer_id=f"cust-{index:06d}",
            region=region,
            offset_ms=_offset_minutes(offset) * 60_000,
            tz=self._tz(offset),
            utc_writer=offset == "Z",
            precise=rng.random() < 0.5,
            campaign=self._pick_acquisition(),
            base_satisfaction=satisfaction,
            satisfaction=satisfaction,
            click_rate=self._gamma(b.click_rate),
            purchase_rate=self._gamma(b.purchase_rate),
            basket_mu=math.log(b.order_median) + rng.gauss(0.0, b.order_customer_sigma),
        )
        self._customers.append(customer)
        self._stats.customers += 1
        return customer

    def _gamma(self, mean: float) -> float:
        shape = self._b.rate_shape
        return self._rng.gammavariate(shape, mean / shape) if mean > 0 else 0.0

    def _pick_acquisition(self) -> str | None:
        if self._rng.random() < self._b.organic_share:
            return None
        return self._rng.choices(self._config.campaigns, self._campaign_weights)[0].campaign_id

    def _arrive(self, c: _Customer, t: float) -> None:
        """A prospect comes in: often through a campaign click a little before signing up."""
        if c.campaign is not None and self._rng.random() < self._b.preclick_probability:
            self._click(c, t, self._campaigns[c.campaign])
            self._push(t + self._rng.uniform(2, 120) * 60_000, _Action.SIGNUP, c.index, c.life)
        else:
            self._signup(c, t)

    def _signup(self, c: _Customer, t: float) -> None:
        c.active = True
        region = c.region.code.lower() if self._rng.random() < 0.05 else c.region.code
        fields: dict[str, Any] = {"region": region}
        if c.campaign is not None:
            fields["campaign_id"] = c.campaign
            fields["channel"] = "campaign"
        else:
            fields["channel"] = self._rng.choice(_ORGANIC_CHANNELS)
        self._emit(c, t, "signup", fields)
        self._reschedule(c, t)

    def _churn(self, c: _Customer, t: float) -> None:
        rng, b = self._rng, self._b
        fields: dict[str, Any] = {}
        if rng.random() < 0.8:
            unhappy = c.satisfaction < self._mean_satisfaction
            reasons = _CANCEL_REASONS_UNHAPPY if unhappy else _CANCEL_REASONS_OTHER
            fields["reason"] = rng.choice(reasons)
        self._emit(c, t, "cancellation", fields)
        c.active = False
        c.life += 1
        c.version += 1
        if rng.random() < b.resignup_probability:
            delay_days = rng.gammavariate(2.0, b.resignup_delay_days / 2)
            self._push(t + delay_days * MS_PER_DAY, _Action.RESIGNUP, c.index, c.life)

    def _return(self, c: _Customer, t: float) -> None:
        """A churned customer signs up again, maybe in another region, with a fresh mood."""
        rng, b = self._rng, self._b
        if len(self._config.regions) > 1 and rng.random() < b.region_switch_probability:
            others = [r for r in self._config.regions if r is not c.region]
            c.region = rng.choices(others, [r.weight for r in others])[0]
            offset = rng.choice(c.region.offsets)
            c.offset_ms = _offset_minutes(offset) * 60_000
            c.tz = self._tz(offset)
            c.utc_writer = offset == "Z"
        c.campaign = self._pick_acquisition()
        c.base_satisfaction = rng.betavariate(b.satisfaction_alpha, b.satisfaction_beta)
        c.satisfaction = c.base_satisfaction
        self._stats.resignups += 1
        self._arrive(c, t)

    def _activity(self, c: _Customer, t: float) -> None:
        click, purchase, survey = self._activity_rates(c)
        pick = self._rng.random() * (click + purchase + survey)
        if pick < click:
            self._click(c, t, self._pick_click_campaign(c))
        elif pick < click + purchase:
            self._purchase(c, t)
        else:
            self._survey(c, t, "nps")
        self._reschedule(c, t)

    def _activity_rates(self, c: _Customer) -> tuple[float, float, float]:
        """Clicks, purchases and NPS answers per day; happier customers buy more."""
        scale = self._scale
        return (
            scale * c.click_rate,
            scale * c.purchase_rate * (0.5 + c.satisfaction),
            scale * self._b.nps_rate,
        )

    def _pick_click_campaign(self, c: _Customer) -> Campaign:
        # Retargeting: the campaign that acquired the customer gets more of their clicks.
        campaigns = self._config.campaigns
        weights = [
            w * (3.0 if camp.campaign_id == c.campaign else 1.0)
            for camp, w in zip(campaigns, self._campaign_weights, strict=True)
        ]
        return self._rng.choices(campaigns, weights)[0]

    def _click(self, c: _Customer, t: float, campaign: Campaign) -> None:
        rng, b = self._rng, self._b
        cost = float(campaign.cost_per_click) * rng.uniform(0.7, 1.3)
        self._emit(
            c, t, "campaign_click", {"campaign_id": campaign.campaign_id, "cost": f"{cost:.4f}"}
        )
        i, _ = self._timeline.piece(t, self._end)
        chance = (
            campaign.conversion
            * (0.5 + c.satisfaction)
            * self._timeline.conversion[campaign.campaign_id][i]
        )
        if rng.random() < chance:
            cap = b.conversion_delay_cap / timedelta(milliseconds=1)
            median = b.conversion_delay_hours * MS_PER_HOUR
            delay = min(median * rng.lognormvariate(0.0, b.conversion_delay_sigma), cap)
            self._push(t + delay, _Action.CONVERSION, c.index, c.life)

    def _purchase(self, c: _Customer, t: float) -> None:
        rng, b = self._rng, self._b
        amount = rng.lognormvariate(c.basket_mu, b.order_sigma)
        if rng.random() < b.bulk_order_probability:
            amount *= rng.uniform(10, 40)
        amount = min(max(amount, 0.5), 999_999.0)
        self._order_count += 1
        order_id = f"ord-{self._tag}-{self._order_count:07d}"
        currency = self._config.reporting_currency
        self._emit(
            c,
            t,
            "purchase",
            {"order_id": order_id, "amount": f"{amount:.2f}", "currency": currency},
        )
        # Experiences move satisfaction: drift back to the customer's norm, noise, incidents.
        s = c.satisfaction
        s += 0.1 * (c.base_satisfaction - s) + rng.gauss(0.0, 0.05)
        if rng.random() < 0.04:
            s -= rng.uniform(0.1, 0.3)
        c.satisfaction = min(max(s, 0.02), 0.98)
        if rng.random() < b.csat_probability:
            self._push(t + rng.uniform(1, 72) * MS_PER_HOUR, _Action.CSAT, c.index, c.life)

    def _survey(self, c: _Customer, t: float, survey_type: str) -> None:
        s, gauss = c.satisfaction, self._rng.gauss
        if survey_type == "nps":
            score = min(max(round(10 * s + gauss(0.0, 1.2)), 0), 10)
        else:
            # A CSAT answer rates one order, so it scatters more around the customer's mood
            # than an NPS answer (a point: the share satisfied lands in the ACSI band).
            score = min(max(round(1 + 4 * s + gauss(0.0, 1.0)), 1), 5)
        self._emit(c, t, "survey", {"survey_type": survey_type, "score": score})

    # -- timing ---------------------------------------------------------------------------

    def _reschedule(self, c: _Customer, t: float) -> None:
        """Draw the next spontaneous action: whichever of activity and churn comes first."""
        c.version += 1
        activity = self._next_activity(c, t)
        churn = self._next_churn(c, t)
        if churn < activity:
            self._push(churn, _Action.CHURN, c.index, c.version)
        else:
            self._push(activity, _Action.ACTIVITY, c.index, c.version)

    def _season(self, offset_ms: int, t: float) -> float:
        local = self._start_ms + int(t) + offset_ms
        return (
            DAILY[(local // MS_PER_HOUR) % 24] * WEEKLY[(local // MS_PER_DAY + _EPOCH_WEEKDAY) % 7]
        )

    def _next_activity(self, c: _Customer, t: float) -> float:
        """Thinning: candidates at the piece's peak rate, kept with the season's share."""
        rate = sum(self._activity_rates(c)) / MS_PER_DAY
        factors = self._timeline.activity[c.region.code]
        rng, end = self._rng, self._end
        while t < end:
            i, until = self._timeline.piece(t, end)
            bound = rate * factors[i] * SEASON_MAX
            candidate = t + rng.expovariate(bound) if bound > 0 else until
            if candidate >= until:
                t = until
                continue
            t = candidate
            if rng.random() * SEASON_MAX < self._season(c.offset_ms, t):
                return t
        return math.inf

    def _next_churn(self, c: _Customer, t: float) -> float:
        """Constant hazard within each scenario piece: exact exponential draws per piece."""
        rate = self._b.churn_rate * churn_multiplier(self._b, c.satisfaction) / MS_PER_DAY
        factors = self._timeline.churn[c.region.code]
        rng, end = self._rng, self._end
        while t < end:
            i, until = self._timeline.piece(t, end)
            hazard = rate * factors[i]
            candidate = t + rng.expovariate(hazard) if hazard > 0 else until
            if candidate < until:
                return candidate
            t = until
        return math.inf

    def _next_growth(self, t: float) -> float:
        """New customers arrive all the time, following the activity of UTC hours."""
        rate = self._config.customers * self._b.growth_rate / MS_PER_DAY * SEASON_MAX
        rng = self._rng
        while rate > 0 and t < self._end:
            t += rng.expovariate(rate)
            if rng.random() * SEASON_MAX < self._season(0, t):
                return t
        return math.inf

    def _seasonal_time(self, c: _Customer, span: float) -> float:
        """A time in [0, span) distributed like the customer's activity."""
        while True:
            t = self._rng.uniform(0, span)
            if self._rng.random() * SEASON_MAX < self._season(c.offset_ms, t):
                return t

    # -- output ---------------------------------------------------------------------------

    def _emit(self, c: _Customer, t: float, event_type: EventType, fields: dict[str, Any]) -> None:
        self._event_count += 1
        payload: dict[str, Any] = {
            "event_id": f"ev-{self._tag}-{self._event_count:08d}",
            "customer_id": c.customer_id,
            "occurred_at": self._stamp(c, int(t)),
            **fields,
            "schema_version": SCHEMA_VERSION,
        }
        self._out.append(ModelEvent(int(t), c.index, event_type, payload, orjson.dumps(payload)))

    def _stamp(self, c: _Customer, t: int) -> str:
        """RFC 3339 in the customer's offset, or in UTC (Z) now and then."""
        moment = self._start + timedelta(milliseconds=t)
        spec = "milliseconds" if c.precise else "seconds"
        if c.utc_writer or self._rng.random() < self._b.utc_share:
            return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")
        return moment.astimezone(c.tz).isoformat(timespec=spec)

    def _tz(self, offset: str) -> timezone:
        tz = self._tz_cache.get(offset)
        if tz is None:
            tz = timezone(timedelta(minutes=_offset_minutes(offset)))
            self._tz_cache[offset] = tz
        return tz


def _offset_minutes(offset: str) -> int:
    if offset == "Z":
        return 0
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = offset[1:].split(":")
    return sign * (int(hours) * 60 + int(minutes))
