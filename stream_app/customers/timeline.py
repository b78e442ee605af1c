"""One customer's recent events in event-time order, and the KPI facts they imply.

A customer's events are applied in ``(occurred_at, rank, event_id)`` order whatever order
they arrive in: the five input topics interleave differently on every run and after every
crash, and only event-time order makes the result a function of the events alone. When a
batch brings events, the facts of the affected suffix are computed before and after (the
prefix cannot change: each event's facts depend only on what precedes it) and the caller
receives the difference. Events arriving in time order cost one fold step each.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple, Protocol

import orjson

from schemas import CampaignClick, Cancellation, Event, Purchase, Signup, Survey
from stream_app.kpis.formulas import BASE_COUNTS, BASE_INDEX, to_micros
from stream_app.kpis.registry import CSAT_SATISFIED_MIN, NPS_PASSIVE_MIN, NPS_PROMOTER_MIN

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

SIGNUP, CLICK, PURCHASE, SURVEY, CANCELLATION = range(5)

_NEW = BASE_INDEX["new_customers"]
_CHURNED = BASE_INDEX["churned_customers"]
_ORDERS = BASE_INDEX["orders"]
_PURCHASING = BASE_INDEX["purchasing_customers"]
_REVENUE = BASE_INDEX["revenue_micros"]
_CLICKS = BASE_INDEX["clicks"]
_SPEND = BASE_INDEX["spend_micros"]
_CONVERTED = BASE_INDEX["converted_clicks"]
_ATTRIBUTED = BASE_INDEX["attributed_revenue_micros"]
_NPS = BASE_INDEX["nps_responses"]
_PROMOTERS = BASE_INDEX["promoters"]
_PASSIVES = BASE_INDEX["passives"]
_DETRACTORS = BASE_INDEX["detractors"]
_CSAT = BASE_INDEX["csat_responses"]
_SATISFIED = BASE_INDEX["csat_satisfied"]
_IGNORED_CANCEL = BASE_INDEX["ignored_cancellations"]
_WIDTH = len(BASE_COUNTS)

# A stored event: [t_us, rank, event_id, *payload]; lists so that they sort and serialise.
StoredEvent = list[Any]
# The fold state: [active, region, acquisition campaign, last click, previous purchases]
# where last click = [t_us, campaign, region, converted] and previous purchases maps a
# segment to the times of the customer's last two purchases in it.
State = list[Any]


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (no float on the way)."""
    return (moment - EPOCH) // _MICROSECOND


def stored(event: Event) -> StoredEvent:
    """The compact, JSON-friendly form of a parsed event."""
    t = to_us(event.occurred_at)
    if isinstance(event, Purchase):
        return [t, PURCHASE, event.event_id, to_micros(event.amount)]
    if isinstance(event, CampaignClick):
        return [t, CLICK, event.event_id, event.campaign_id, to_micros(event.cost)]
    if isinstance(event, Signup):
        return [t, SIGNUP, event.event_id, event.region, event.campaign_id]
    if isinstance(event, Survey):
        return [t, SURVEY, event.event_id, "n" if event.survey_type == "nps" else "c", event.score]
    if isinstance(event, Cancellation):
        return [t, CANCELLATION, event.event_id]
    raise TypeError(f"not an event: {type(event).__name__}")


def initial_state() -> State:
    return [False, "unknown", None, None, {}]


def _zeros() -> list[int]:
    return [0] * _WIDTH


class Facts:
    """The KPI facts of a batch: per-time counts, and facts that span windows.

    ``points`` maps ``(segment, t)`` to a vector of base counts that happened at ``t``
    (``BASE_COUNTS`` order): a click adds to two of its metrics, in three segments, so one
    key per segment instead of one per metric halves the dictionary work of the commonest
    event. ``spans`` holds the other kinds (``stream_app.kpis.windows``): activity and a
    purchase's first or second purchase in the window, keyed by the fact, valued by a count.
    """

    __slots__ = ("points", "spans")

    def __init__(self) -> None:
        # Missing keys start at zero in C: a lookup per segment and no test.
        self.points: defaultdict[tuple[str, int], list[int]] = defaultdict(_zeros)
        self.spans: dict[tuple[Any, ...], int] = {}


def fold_python(
    state: State,
    events: list[StoredEvent],
    attribution_us: int,
    facts: Facts | None = None,
    sign: int = 1,
    grain_us: int = 1,
) -> State:
    """Apply ``events`` (sorted) to a copy of ``state``; add their facts times ``sign``.

    Fact times are floored to ``grain_us``, a divisor of every window step: windows read a
    time only as ``t // step``, which flooring to such a grain leaves unchanged, and facts
    of one grain merge into one entry, so a busy batch yields few window updates. A fact
    can sum to zero (a signup and a cancellation in one grain, a click without cost): it
    stays in ``facts`` with value 0, which callers skip.
    """
    active, region, campaign, click, prev = state
    click = list(click) if click else None
    prev = {segment: list(times) for segment, times in prev.items()}
    sink = Facts() if facts is None else facts
    points = sink.points
    # Inlined ``spans[key] = spans.get(key, 0) + value`` below: a helper call per fact was
    # a tenth of the customer stage.
    spans = sink.spans
    get = spans.get
    by_region = "region:" + region
    for event in events:
        t = event[0]
        tc = t - t % grain_us
        rank = event[1]
        if rank == CLICK:
            cost = sign * event[4]
            for segment in ("all", by_region, "campaign:" + event[3]):
                vector = points[(segment, tc)]
                vector[_CLICKS] += sign
                vector[_SPEND] += cost
            click = [t, event[3], region, False]
        elif rank == PURCHASE:
            amount = sign * event[3]
            for segment in ("all", by_region):
                vector = points[(segment, tc)]
                vector[_ORDERS] += sign
                vector[_REVENUE] += amount
                times = prev.get(segment)
                if times is None:
                    # The first purchase: every window containing it has a purchasing
                    # customer more, which is what a count at this time means.
                    vector[_PURCHASING] += sign
                    q = None
                else:
                    q, q2 = times
                    qc = q - q % grain_us
                    key: tuple[Any, ...] = ("dp", segment, tc, qc)
                    spans[key] = get(key, 0) + sign
                    key = ("dr", segment, tc, qc, None if q2 is None else q2 - q2 % grain_us)
                    spans[key] = get(key, 0) + sign
                prev[segment] = [t, q]
            if click is not None and not click[3] and t - click[0] <= attribution_us:
                click[3] = True
                click_t = click[0] - click[0] % grain_us
                for segment in ("all", "region:" + click[2], "campaign:" + click[1]):
                    vector = points[(segment, click_t)]
                    vector[_CONVERTED] += sign
                    vector[_ATTRIBUTED] += amount
        elif rank == SURVEY:
            score = event[4]
            if event[3] == "n":
                bucket = (
                    _PROMOTERS
                    if score >= NPS_PROMOTER_MIN
                    else _PASSIVES
                    if score >= NPS_PASSIVE_MIN
                    else _DETRACTORS
                )
                metrics: tuple[int, ...] = (_NPS, bucket)
            else:
                metrics = (_CSAT, _SATISFIED) if score >= CSAT_SATISFIED_MIN else (_CSAT,)
            for segment in ("all", by_region):
                vector = points[(segment, tc)]
                for metric in metrics:
                    vector[metric] += sign
        elif rank == SIGNUP:
            if not active:
                active, region, campaign = True, event[3], event[4]
                by_region = "region:" + region
                segments = (
                    ("all", by_region)
                    if campaign is None
                    else ("all", by_region, "campaign:" + campaign)
                )
                for segment in segments:
                    vector = points[(segment, tc)]
                    vector[_NEW] += sign
                for segment in ("all", by_region):
                    key = ("act", segment, tc)
                    spans[key] = get(key, 0) + sign
        elif rank == CANCELLATION:
            if active:
                active = False
                for segment in ("all", by_region):
                    vector = points[(segment, tc)]
                    vector[_CHURNED] += sign
                    key = ("act", segment, tc)
                    spans[key] = get(key, 0) - sign
            else:
                # Ignored, yet an event of its segments: counted so they exist (and stop
                # existing when a refold makes it effective elsewhere).
                for segment in ("all", by_region):
                    points[(segment, tc)][_IGNORED_CANCEL] += sign
    return [active, region, campaign, click, prev]


class Fold(Protocol):
    def __call__(
        self,
        state: State,
        events: list[StoredEvent],
        attribution_us: int,
        facts: Facts | None = ...,
        sign: int = ...,
        grain_us: int = ...,
        /,
    ) -> State: ...


fold: Fold
try:
    from stream_app.customers import _fold
except ImportError:  # installed without a C compiler: the same results, slower
    fold = fold_python
else:
    _fold.configure(BASE_INDEX, NPS_PROMOTER_MIN, NPS_PASSIVE_MIN, CSAT_SATISFIED_MIN)
    fold = _fold.fold  # the compiled twin of ``fold_python``

COMPILED_FOLD: Final = fold is not fold_python


class FirstSignup(NamedTuple):
    """A customer's first effective signup: the cohort's time, region and campaign."""

    t_us: int
    event_id: str
    region: str
    campaign: str | None

    def to_json(self) -> list[Any]:
        return [self.t_us, self.event_id, self.region, self.campaign]

    @classmethod
    def from_json(cls, data: Any) -> FirstSignup | None:
        if data is None:
            return None
        t_us, event_id, region, campaign = data
        if type(t_us) is not int or not isinstance(event_id, str) or not isinstance(region, str):
            raise ValueError(f"not a first signup: {data!r}")
        if campaign is not None and not isinstance(campaign, str):
            raise ValueError(f"not a first signup: {data!r}")
        return cls(t_us, event_id, region, campaign)

    def segments(self) -> tuple[str, ...]:
        """The cohort segments: ``all``, the signup's region, its campaign if it has one."""
        region = "region:" + self.region
        return (
            ("all", region)
            if self.campaign is None
            else ("all", region, "campaign:" + self.campaign)
        )


def earliest_signup(events: Iterable[StoredEvent], known: FirstSignup | None) -> FirstSignup | None:
    """The first signup among ``known`` and ``events`` in the order of section 2.

    Every signup shares one rank, so ``(time, event id)`` orders them; the first is effective
    since nobody is active before any signup.
    """
    best = known
    for event in events:
        if event[1] == SIGNUP and (best is None or (event[0], event[2]) < best[:2]):
            best = FirstSignup(event[0], event[2], event[3], event[4])
    return best


def recovered_first(data: dict[str, Any]) -> FirstSignup | None:
    """The first signup of a decoded customer record (``"f"``, from format 4 on).

    An older record has none: its first signup is derived from its retained events when no
    signup was pruned (the base state still has no region); otherwise its time is lost and the
    customer is in no cohort (docs/metrics.md).
    """
    if "f" in data:
        return FirstSignup.from_json(data["f"])
    if data["base"][1] != "unknown":
        return None
    return earliest_signup(data["ev"], None)


class CustomerRecord:
    """A customer's retained events (sorted), the state before them, and the state after."""

    __slots__ = ("base", "end", "events", "first", "ids", "parts", "unsaved")

    def __init__(
        self,
        events: list[StoredEvent],
        base: State,
        end: State,
        parts: int = 0,
        unsaved: list[StoredEvent] | None = None,
        ids: set[str] | None = None,
        first: FirstSignup | None = None,
    ) -> None:
        self.events = events
        # The first effective signup ever (the cohort), kept when its event is pruned.
        self.first = first
        self.base = base
        self.end = end
        # ``ids`` only when it is the ids of ``events``: a new customer's empty set.
        self.ids = {event[2] for event in events} if ids is None else ids
        # Changelog records beyond the first that hold this customer's events (a big one).
        self.parts = parts
        # None: the next changelog write is the whole record. A list: every event is
        # persisted but these, so the next write may append them as a part of their own
        # (a big customer; see ``customer_records``).
        self.unsaved = unsaved

    @classmethod
    def new(cls) -> CustomerRecord:
        return cls([], initial_state(), initial_state(), ids=set())

    def to_json(self) -> dict[str, Any]:
        first = None if self.first is None else self.first.to_json()
        return {"ev": self.events, "base": self.base, "end": self.end, "f": first}

    def apply(
        self,
        new_events: list[StoredEvent],
        attribution_us: int,
        facts: Facts,
        grain_us: int = 1,
        exact: Facts | None = None,
    ) -> None:
        """Insert not-yet-seen events and add the change of this customer's facts to ``facts``.

        ``exact`` receives the same change at exact times (grain 1), for the cohorts.
        """
        if not new_events:
            return
        events = self.events
        if len(new_events) > 1:
            new_events.sort()
        first = new_events[0]
        # Usually after everything the customer had: one comparison instead of a search.
        if not events or events[-1] < first:
            if exact is not None:
                fold(self.end, new_events, attribution_us, exact)
            self.end = fold(self.end, new_events, attribution_us, facts, 1, grain_us)
            events.extend(new_events)
        else:
            pos = bisect_left(events, first)
            start = fold(self.base, events[:pos], attribution_us)
            old_suffix = events[pos:]
            fold(start, old_suffix, attribution_us, facts, -1, grain_us)
            suffix = sorted(old_suffix + new_events)
            if exact is not None:
                fold(start, old_suffix, attribution_us, exact, -1)
                fold(start, suffix, attribution_us, exact, 1)
            self.end = fold(start, suffix, attribution_us, facts, 1, grain_us)
            events[pos:] = suffix
        add = self.ids.add
        for event in new_events:
            add(event[2])
        if self.unsaved is not None:
            self.unsaved.extend(new_events)

    def prune(self, before_us: int, attribution_us: int, slack_us: int = 0) -> bool:
        """Fold events older than ``before_us`` into the base state; True if any were.

        A record whose writes append (``unsaved`` is a list) is pruned only once an event is
        ``slack_us`` past due: dropping persisted events means rewriting it whole, and a
        busy customer has events coming due at every checkpoint.
        """
        events = self.events
        if not events or events[0][0] >= before_us - (slack_us if self.unsaved is not None else 0):
            return False
        count = bisect_left(events, [before_us])
        dropped = events[:count]
        self.base = fold(self.base, dropped, attribution_us)
        del events[:count]
        self.ids.difference_update(event[2] for event in dropped)
        self.unsaved = None
        return True


class StoredCustomerRecord(CustomerRecord):
    """A customer read back from the changelog, decoded when first used.

    A worker taking over a million customers would spend most of its recovery decoding
    them, although few see an event soon: each one is decoded at its first use instead (an
    event, a checkpoint, the expiry sweep), and until then it costs its encoded bytes.
    """

    __slots__ = ("_encoded",)

    def __init__(self, encoded: bytes) -> None:
        # The other slots stay unset until the first read of one of them.
        self._encoded = encoded

    def __getattr__(self, name: str) -> Any:
        # Called only for an attribute that is not set: before decoding, every slot but this.
        try:
            encoded = object.__getattribute__(self, "_encoded")
        except AttributeError:
            raise AttributeError(name) from None
        data = orjson.loads(encoded)
        parts = data.get("parts", 0)
        # A head without events and with parts is the appendable layout; a head with events
        # (one record, or the older split layout) is rewritten whole at its next write.
        appendable = bool(parts) and not data["ev"]
        CustomerRecord.__init__(
            self,
            data["ev"],
            data["base"],
            data["end"],
            parts,
            [] if appendable else None,
            first=recovered_first(data),
        )
        del self._encoded
        return object.__getattribute__(self, name)
