"""Which window specs the engine keeps counts for, and where hourly churn counts come from.

The engine already keeps exact additive counts (``churned_customers`` among them) per window
spec, segment and window end. A configured window of size 1h whose step divides an hour
(the contract's ``1h`` window, 5-minute steps) has, at every full hour, a window that is
exactly that hour's bucket, so the detector reads those and the hot path does no extra work.
Only when no such window is configured, or it is not kept long enough for the baseline,
the engine computes one more, internal, spec ``_hourly`` (1h tumbling windows) that is never
published.

This lives with the KPI math, not under ``stream_app/alerts/``, because the customer stage
needs ``computed_specs`` and imports point one way: alerts use the KPI math, never back.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.kpis.windows import BASE_K, DiffArray, Spec
from stream_app.settings import Settings, duration_ms

HOUR_US = 3_600_000_000
INTERNAL_HOURLY = "_hourly"
LONG_AGO = -(2**40)


@dataclass(frozen=True)
class HourlySource:
    """A computed window spec and how many of its window ends make an hour."""

    spec: Spec
    stride: int

    @property
    def internal(self) -> bool:
        return self.spec.name == INTERNAL_HOURLY

    def index(self, hour: int) -> int:
        """The spec's window-end index of the bucket with end index ``hour``."""
        return hour * self.stride

    def hour_of(self, k: int) -> int:
        """End index of the hourly bucket holding the window-end index ``k`` of the spec."""
        return (k - 1) // self.stride + 1

    def first_hour(self, totals: DiffArray) -> int | None:
        """The bucket of the segment's first activity (None: no activity yet).

        Activity older than what is kept in memory has been folded into the base entry; the
        segment is then as old as can be (``LONG_AGO``).
        """
        base = totals.diffs.get(BASE_K)
        if base is not None and any(base):
            return LONG_AGO
        first = min((k for k, v in totals.diffs.items() if k != BASE_K and any(v)), default=None)
        return None if first is None else self.hour_of(first)


def retained_us(spec: Spec, settings: Settings) -> int:
    """How much event time before the watermark a spec's windows stay exact in memory."""
    frozen_us = (
        duration_ms(settings.max_lateness) + duration_ms(settings.attribution_window)
    ) * 1000
    return max(frozen_us, settings.history_steps * spec.step_us)


def hourly_source(settings: Settings) -> HourlySource:
    """The configured 1h window if it fits the detector, else the internal hourly spec."""
    needed_us = (
        duration_ms(settings.churn_baseline) + duration_ms(settings.alert_grace)
    ) * 1000 + 2 * HOUR_US
    for window in settings.windows:
        spec = Spec.from_window(window)
        if (
            spec.size_us == HOUR_US
            and HOUR_US % spec.step_us == 0
            and retained_us(spec, settings) >= needed_us
        ):
            return HourlySource(spec, HOUR_US // spec.step_us)
    return HourlySource(Spec(INTERNAL_HOURLY, HOUR_US, HOUR_US), 1)


def computed_specs(settings: Settings) -> list[Spec]:
    """Every window spec the engine keeps counts for: the configured ones, plus ``_hourly``
    when churn detection is on and needs it."""
    specs = [Spec.from_window(window) for window in settings.windows]
    if settings.churn_enabled:
        source = hourly_source(settings)
        if source.internal:
            specs.append(source.spec)
    return specs
