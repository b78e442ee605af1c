"""What every domain of the worker shares: settings, counters and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream_app.clock import Clock, utc_now
from stream_app.metrics import Metrics
from stream_app.settings import Settings


@dataclass
class AppContext:
    """Built once by ``create_app`` and handed to each domain's ``register`` function."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    clock: Clock = utc_now
