"""KPI arithmetic: the base counts a window keeps, and exact operations on them.

Every KPI is computed from exact values (``int`` counts, ``Rational`` ratios and money) and
only turned into what the contract publishes (float, 2-place decimal string) at the end, so a
KPI that reads another (``clv`` reads ``churn_rate``) never sees a rounded value. The KPIs
themselves are declared in ``stream_app.kpis.registry``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

# Money is counted in integer micro-units (1e-6 of the reporting currency): amounts have at
# most 4 decimals and click costs at most 6, so every sum is exact integer arithmetic.
MICROS_PER_UNIT = 1_000_000

# The additive counts kept per window; everything published is derived from these. The
# customer stage persists vectors of them by position: append only, never reorder.
BASE_COUNTS: tuple[str, ...] = (
    "active_start",
    "active_end",
    "new_customers",
    "churned_customers",
    "orders",
    "revenue_micros",
    "purchasing_customers",
    "repeat_customers",
    "clicks",
    "spend_micros",
    "converted_clicks",
    "attributed_revenue_micros",
    "nps_responses",
    "promoters",
    "passives",
    "detractors",
    "csat_responses",
    "csat_satisfied",
    # Cancellations of a customer who was not active: they change nothing, but they are
    # events of their segments, which exist because of them (docs/metrics.md, Segments).
    # No KPI reads it; it keeps such a segment's window sums from being all zero.
    "ignored_cancellations",
)
BASE_INDEX: dict[str, int] = {name: i for i, name in enumerate(BASE_COUNTS)}

SegmentKind = Literal["segment", "campaign"]
KpiValue = int | float | str | None
Counts = Mapping[str, int]


class Rational:
    """An exact ratio of two integers, kept unreduced: publishing divides once.

    ``fractions.Fraction`` reduces by a gcd at every step in Python code; a snapshot's
    thirty KPIs took four times as long with it, and the publisher derives thousands.
    """

    __slots__ = ("den", "num")

    def __init__(self, num: int, den: int = 1) -> None:
        if den <= 0:
            num, den = -num, -den
        self.num = num
        self.den = den

    @classmethod
    def of(cls, value: Decimal | int) -> Rational:
        return cls(*value.as_integer_ratio())

    def __mul__(self, other: Rational) -> Rational:
        return Rational(self.num * other.num, self.den * other.den)

    def __truediv__(self, other: Rational) -> Rational:
        return Rational(self.num * other.den, self.den * other.num)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rational):
            return self.num * other.den == other.num * self.den
        if isinstance(other, int):
            return self.num == other * self.den
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.num / self.den)

    def __float__(self) -> float:
        return self.num / self.den  # int / int is correctly rounded, whatever the size

    def __repr__(self) -> str:
        return f"Rational({self.num}, {self.den})"


# An exact KPI value before publication: a count, an exact ratio or money amount, or null.
Exact = int | Rational | None


def to_micros(amount: Decimal) -> int:
    """An exact decimal amount as integer micro-units; raises if it has more than 6 decimals."""
    micros = amount * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError(f"{amount} has more than 6 decimal places")
    return int(micros)


def money(value: Decimal | Rational | int | None) -> str | None:
    """A money value as the contract publishes it: decimal string, half-even to 2 places."""
    if value is None:
        return None
    exact = value if isinstance(value, Rational) else Rational.of(value)
    cents, rest = divmod(exact.num * 100, exact.den)
    # Half-even: up past the half, and at the half only to an even cent.
    if 2 * rest > exact.den or (2 * rest == exact.den and cents % 2):
        cents += 1
    units, hundredths = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{units}.{hundredths:02d}"


def ratio(numerator: int, denominator: int, scale: int = 1) -> float | None:
    """``scale * numerator / denominator`` as a correctly rounded float; None when dividing by 0."""
    exact = share(scale * numerator, denominator)
    return None if exact is None else float(exact)


# -- exact operations the KPI declarations are built from ------------------------------------


def share(numerator: int, denominator: int) -> Rational | None:
    """``numerator / denominator`` exactly; None when the denominator is 0."""
    return None if denominator == 0 else Rational(numerator, denominator)


def percent(numerator: int, denominator: int) -> Rational | None:
    """``100 x numerator / denominator`` exactly (NPS, CSAT); None when dividing by 0."""
    return share(100 * numerator, denominator)


def amount(micros: int) -> Rational:
    """A sum of micro-units as an exact money amount."""
    return Rational(micros, MICROS_PER_UNIT)


def per(micros: int, count: int) -> Rational | None:
    """An exact money amount per unit of ``count``; None when the count is 0."""
    return None if count == 0 else Rational(micros, MICROS_PER_UNIT * count)


def quotient(numerator: Rational | None, denominator: Rational | None) -> Rational | None:
    """``numerator / denominator`` of two exact KPI values; None if either is null or 0 divides."""
    if numerator is None or denominator is None or denominator.num == 0:
        return None
    return numerator / denominator


def counts_from_vector(vector: list[int] | tuple[int, ...]) -> dict[str, int]:
    """Name the entries of a base-count vector laid out as ``BASE_COUNTS``."""
    return dict(zip(BASE_COUNTS, vector, strict=True))
