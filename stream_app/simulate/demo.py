"""The demo's traffic (``kpi dev --simulate``, so ``make demo``): its size and pace, declared once.

The history covers 36 days so that even the 30d window has a starting population, churn and
a lifetime value at once; it is played at the default population's own pace (activity scale
1), so the KPIs read like the industry benchmarks the simulator is calibrated to. Live events
follow at a fixed rate, stamped at most a second before they are sent (``--disorder 1s``), so
the 1h window moves and ``kpi_event_to_publish_seconds`` reads the processor's latency.

README's figures (history events, live rate) are compared with these in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Final

from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.volume import plan_volume

HISTORY: Final = timedelta(days=36)
LIVE_DAYS: Final = 30  # how long live traffic goes on if nobody stops the demo
DEMO_CUSTOMERS: Final = 6000
# Records per day of the live traffic: two a second on average (the customers' local time of
# day and week moves it between about 1.5 and 3).
LIVE_PER_DAY: Final = 172_800
DISORDER: Final = "1s"
INJECT_BAD: Final = 0.002
DUPLICATES: Final = 0.01
SEED: Final = 7


@dataclass(frozen=True)
class DemoTraffic:
    """The simulated traffic of the demo, for a population of ``customers``."""

    customers: int = DEMO_CUSTOMERS

    @cached_property
    def history_events(self) -> int:
        """Records of the history at the population's own pace (faults included), rounded."""
        config = SimulationConfig(
            seed=SEED,
            customers=self.customers,
            duration=HISTORY,
            inject_bad=INJECT_BAD,
            duplicates=DUPLICATES,
        )
        return int(round(plan_volume(config).expected_records, -3))

    @property
    def live_per_second(self) -> float:
        return LIVE_PER_DAY / 86_400

    def argv(self) -> tuple[str, ...]:
        """The ``kpi simulate`` command line (without ``kpi``)."""
        return (
            "simulate",
            "--kafka",
            "--realtime",
            "--warmup",
            f"{HISTORY.days}d",
            "--warmup-events",
            str(self.history_events),
            "--days",
            str(LIVE_DAYS),
            "--customers",
            str(self.customers),
            "--rate-per-day",
            str(LIVE_PER_DAY),
            "--disorder",
            DISORDER,
            "--inject-bad",
            str(INJECT_BAD),
            "--duplicates",
            str(DUPLICATES),
            "--seed",
            str(SEED),
        )

    def summary(self) -> str:
        """What the demo sends, in one line (the first thing ``kpi dev --simulate`` says)."""
        return (
            f"demo traffic: {self.customers:,} simulated customers; first {HISTORY.days} days "
            f"of history at once (about {self.history_events:,} events, a few malformed or "
            f"duplicated), then about {self.live_per_second:.0f} live events a second stamped "
            "with the current time"
        )
