"""The simulator's entry point: a config (seed included) in, a deterministic record stream out."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from stream_app.eventlog import LogRecord
from stream_app.simulate.config import (
    LATE_AFTER,
    Behaviour,
    Campaign,
    Region,
    SimulationConfig,
)
from stream_app.simulate.faults import Emission, FaultInjector, Reorderer
from stream_app.simulate.population import PopulationModel
from stream_app.simulate.stats import SimulationStats
from stream_app.simulate.volume import VolumePlan, plan_volume

__all__ = [
    "Behaviour",
    "Campaign",
    "Emission",
    "Region",
    "Simulation",
    "SimulationConfig",
    "SimulationStats",
    "generate",
    "run_tag",
]

logger = logging.getLogger(__name__)


def run_tag(config: SimulationConfig) -> str:
    """Short id of a run, part of every event and order id.

    It depends on the seed and the start only: re-running a config replays the same ids
    (the processor dedupes them), while a run with another seed or start never collides.
    """
    text = f"{config.seed}|{config.start.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:6]


class Simulation:
    """One run of a config: its volume plan, its records and the stats of what it emitted.

    The random source is injected (default ``random.Random(config.seed)``); the model, the
    disorder and the faults each draw from a stream of their own, split off it at the start,
    so turning faults on or off leaves the valid events unchanged. A Simulation runs once.
    """

    def __init__(
        self,
        config: SimulationConfig,
        rng: random.Random | None = None,
        stats: SimulationStats | None = None,
    ) -> None:
        source = rng if rng is not None else random.Random(config.seed)
        self.config = config
        self.stats = stats if stats is not None else SimulationStats()
        self.plan: VolumePlan = plan_volume(config)
        self.run_tag = run_tag(config)
        self._model_rng = random.Random(source.getrandbits(64))
        self._order_rng = random.Random(source.getrandbits(64))
        self._fault_rng = random.Random(source.getrandbits(64))
        self._started = False

    def moment(self, ms: int) -> datetime:
        """The instant ``ms`` milliseconds after the start."""
        return self.config.start + timedelta(milliseconds=ms)

    def emissions(self) -> Iterator[Emission]:
        """Every record with what it is, in stream order."""
        if self._started:
            raise RuntimeError("a Simulation runs once; create another for a second run")
        self._started = True
        self._warn_about_config()
        config = self.config
        model = PopulationModel(
            config,
            self._model_rng,
            self.plan.activity_scale,
            self.stats,
            self.run_tag,
            history_scale=self.plan.history_activity_scale,
        )
        reorder = Reorderer(config.disorder, self._order_rng)
        faults = FaultInjector(config, self._fault_rng, self.stats, self.run_tag)
        clock_ms = -1
        for event in model.events():
            clock_ms = event.at_ms
            for ready in reorder.push(event):
                yield from faults.emit(ready, clock_ms)
        for ready in reorder.flush():
            yield from faults.emit(ready, clock_ms)
        yield from faults.finish()

    def records(self) -> Iterator[LogRecord]:
        for emission in self.emissions():
            yield emission.record

    def _warn_about_config(self) -> None:
        config, plan = self.config, self.plan
        if not plan.reachable:
            logger.warning(
                "a target of %.0f records is below what %d customers' signups and "
                "cancellations alone produce (about %.0f): expect about %.0f",
                plan.target_records or 0,
                config.customers,
                plan.lifecycle_events,
                plan.expected_records,
            )
        if config.late and config.duration < LATE_AFTER:
            logger.warning(
                "late events need more than %d days of simulated time; none will be made",
                LATE_AFTER.days,
            )
        for scenario in config.scenarios:
            if scenario.end <= config.start or scenario.at >= config.end:
                logger.warning(
                    "scenario %s lies outside the simulated period %s to %s",
                    scenario.describe(),
                    config.start.isoformat(),
                    config.end.isoformat(),
                )


def generate(config: SimulationConfig, stats: SimulationStats | None = None) -> Iterator[LogRecord]:
    """The records of ``config`` in stream order; ``stats`` (if given) counts them as they go."""
    return Simulation(config, stats=stats).records()
