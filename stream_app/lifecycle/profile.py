"""One customer's RFM profile: recency, frequency and money over the last year, and tenure.

The profile is a function of the *set* of a customer's events, not of their order: every
field is a maximum, a minimum, a sum or a latest-by-(time, value), so events arriving out
of event-time order (within the lateness bound; duplicates are removed upstream) give the
same profile as events in order.

"The last 365 days" is counted in UTC calendar months, so that memory stays bounded: at
``now`` it is the calendar month of ``now`` and the 11 months before it, i.e. from the
first instant of the month 11 months before ``now``'s month up to the end of ``now``'s
month (purchases stamped after ``now`` in that month count too). That is 334 to 366 days
back from ``now``; a purchase leaves the window when its month turns 12 months old.
Buckets older than 13 months before the newest purchase's month are dropped (``KEEP_MONTHS``):
a query is exact for any ``now`` no more than 31 days (the lateness bound) before the newest
purchase, which is every ``now`` the processor asks about.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Final, Literal

import msgspec

from stream_app.kpis.cohorts import month_index

# Bump when the encoded shape changes; decode refuses versions it does not know.
PROFILE_FORMAT: Final = 1
DAY_US: Final = 86_400_000_000
WINDOW_MONTHS: Final = 12
# The window plus 2 months: 31 days before the newest purchase is at most 2 months back.
KEEP_MONTHS: Final = WINDOW_MONTHS + 2

SurveyKind = Literal["nps", "csat"]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class ProfileFormatError(ValueError):
    """Stored profile bytes this code cannot read (unknown format version or bad shape)."""


class MonthBucket(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Purchases and revenue (micro-units) of one UTC calendar month."""

    month: int
    purchases: NonNegative
    revenue_micros: NonNegative


def _later(t: int, value: int, at: int | None, current: int | None) -> bool:
    """Whether (t, value) replaces the latest (at, current): the later time, then the larger
    value on a tie, so that the result does not depend on arrival order."""
    return at is None or t > at or (t == at and current is not None and value > current)


class Profile(msgspec.Struct, array_like=True, gc=False):
    """A customer's profile; times are microseconds since the epoch (UTC).

    ``first_us``: the earliest event seen (normally the signup). ``signup_us`` and
    ``cancel_us``: the latest signup and cancellation; the customer is active when the
    latest signup is after the latest cancellation (on a tie the cancellation applies
    second, as in the customer stage's fold). Surveys: the latest score of each kind and
    the count and sum of all scores.
    """

    first_us: int | None = None
    signup_us: int | None = None
    cancel_us: int | None = None
    purchase_us: int | None = None
    nps_us: int | None = None
    nps_last: int | None = None
    nps_count: NonNegative = 0
    nps_sum: NonNegative = 0
    csat_us: int | None = None
    csat_last: int | None = None
    csat_count: NonNegative = 0
    csat_sum: NonNegative = 0
    months: tuple[MonthBucket, ...] = ()

    # -- updates (one per event; any order) ------------------------------------------

    def _seen(self, t_us: int) -> None:
        if self.first_us is None or t_us < self.first_us:
            self.first_us = t_us

    def signup(self, t_us: int) -> None:
        self._seen(t_us)
        if self.signup_us is None or t_us > self.signup_us:
            self.signup_us = t_us

    def cancellation(self, t_us: int) -> None:
        self._seen(t_us)
        if self.cancel_us is None or t_us > self.cancel_us:
            self.cancel_us = t_us

    def purchase(self, t_us: int, amount_micros: int) -> None:
        """A purchase of ``amount_micros`` (> 0) at ``t_us``."""
        self._seen(t_us)
        if self.purchase_us is None or t_us > self.purchase_us:
            self.purchase_us = t_us
        month = month_index(t_us)
        if self.months and self.months[-1].month == month:
            # The common case, a purchase in the newest month: nothing to drop or sort.
            last = self.months[-1]
            bucket = MonthBucket(month, last.purchases + 1, last.revenue_micros + amount_micros)
            self.months = (*self.months[:-1], bucket)
            return
        buckets = list(self.months)
        newest = max([month, *(b.month for b in buckets)])
        floor = newest - KEEP_MONTHS + 1
        kept = [b for b in buckets if b.month >= floor]
        if month >= floor:
            for i, bucket in enumerate(kept):
                if bucket.month == month:
                    kept[i] = MonthBucket(
                        month, bucket.purchases + 1, bucket.revenue_micros + amount_micros
                    )
                    break
            else:
                kept.append(MonthBucket(month, 1, amount_micros))
                kept.sort(key=lambda b: b.month)
        self.months = tuple(kept)

    def survey(self, t_us: int, kind: SurveyKind, score: int) -> None:
        """An answer to an NPS (0..10) or CSAT (1..5) survey."""
        self._seen(t_us)
        if kind == "nps":
            self.nps_count += 1
            self.nps_sum += score
            if _later(t_us, score, self.nps_us, self.nps_last):
                self.nps_us, self.nps_last = t_us, score
        else:
            self.csat_count += 1
            self.csat_sum += score
            if _later(t_us, score, self.csat_us, self.csat_last):
                self.csat_us, self.csat_last = t_us, score

    # -- readings (pure; ``now_us`` is event time) -----------------------------------

    @property
    def active(self) -> bool:
        """Signed up and not cancelled since."""
        return self.signup_us is not None and (
            self.cancel_us is None or self.cancel_us < self.signup_us
        )

    def recency_days(self, now_us: int) -> float | None:
        """Days since the latest purchase (0 if it is after ``now``); None if none."""
        if self.purchase_us is None:
            return None
        return max(0, now_us - self.purchase_us) / DAY_US

    def tenure_days(self, now_us: int) -> float:
        """Days since the customer's first event (0 before it or without any)."""
        if self.first_us is None:
            return 0.0
        return max(0, now_us - self.first_us) / DAY_US

    def _window(self, now_us: int) -> list[MonthBucket]:
        last = month_index(now_us)
        return [b for b in self.months if last - WINDOW_MONTHS < b.month <= last]

    def purchases_365d(self, now_us: int) -> int:
        """Purchases in the last 365 days (calendar months; see the module docstring)."""
        return sum(b.purchases for b in self._window(now_us))

    def revenue_365d_micros(self, now_us: int) -> int:
        """Revenue in micro-units over the same window as ``purchases_365d``."""
        return sum(b.revenue_micros for b in self._window(now_us))

    def features(self, now_us: int) -> dict[str, float]:
        """The churn model's input: numbers only, the same keys for every customer.

        A missing value (no purchase, no survey) is a 0 beside a 0/1 flag saying so, so
        that a linear model can weigh "never answered" apart from a low score.
        """
        recency = self.recency_days(now_us)
        tenure = self.tenure_days(now_us)
        window = self._window(now_us)
        return {
            "recency_days": recency if recency is not None else tenure,
            "never_purchased": 1.0 if recency is None else 0.0,
            "tenure_days": tenure,
            "purchases_365d": float(sum(b.purchases for b in window)),
            "revenue_365d": sum(b.revenue_micros for b in window) / 1_000_000,
            "nps_last": float(self.nps_last) if self.nps_last is not None else 0.0,
            "nps_mean": self.nps_sum / self.nps_count if self.nps_count else 0.0,
            "nps_none": 0.0 if self.nps_count else 1.0,
            "csat_last": float(self.csat_last) if self.csat_last is not None else 0.0,
            "csat_mean": self.csat_sum / self.csat_count if self.csat_count else 0.0,
            "csat_none": 0.0 if self.csat_count else 1.0,
            "returned": 1.0 if self.cancel_us is not None else 0.0,
        }


class _Head(msgspec.Struct, array_like=True):
    """The first element of every format's stored form (the rest is ignored here)."""

    format: int


class _Envelope(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    format: int
    profile: msgspec.Raw


_ENCODER: Final = msgspec.msgpack.Encoder()
_HEAD: Final = msgspec.msgpack.Decoder(_Head)
_ENVELOPE: Final = msgspec.msgpack.Decoder(_Envelope)
_PROFILE: Final = msgspec.msgpack.Decoder(Profile)


def encode_profile(profile: Profile) -> bytes:
    """The stored form: MessagePack ``[PROFILE_FORMAT, profile as an array]``."""
    return _ENCODER.encode((PROFILE_FORMAT, profile))


def decode_profile(data: bytes) -> Profile:
    """Read ``encode_profile``'s bytes; raises ProfileFormatError for anything else."""
    try:
        version = _HEAD.decode(data).format
    except msgspec.DecodeError as exc:
        raise ProfileFormatError(f"not a stored customer profile: {exc}") from None
    if version != PROFILE_FORMAT:
        raise ProfileFormatError(
            f"customer profile format {version} is unknown to this version "
            f"(it reads format {PROFILE_FORMAT}); upgrade the worker or rebuild the state "
            "from the input topics"
        )
    try:
        profile = _PROFILE.decode(_ENVELOPE.decode(data).profile)
    except msgspec.DecodeError as exc:
        raise ProfileFormatError(f"customer profile format {PROFILE_FORMAT}: {exc}") from None
    months = [b.month for b in profile.months]
    # Updates rely on the buckets being few, distinct and in order.
    if len(months) > KEEP_MONTHS or any(a >= b for a, b in pairwise(months)):
        raise ProfileFormatError(
            f"customer profile format {PROFILE_FORMAT}: monthly buckets out of order or more "
            f"than {KEEP_MONTHS}"
        )
    return profile


# The model's feature names, in the order ``features`` gives them (pending examples store
# the values in this order).
FEATURES: Final = tuple(Profile().features(0))
