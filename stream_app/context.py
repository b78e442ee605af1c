"""What every domain of the worker shares: settings, counters, the clock and live components."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stream_app.clock import Clock, utc_now
from stream_app.metrics import Metrics
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings

if TYPE_CHECKING:
    from stream_app.alerts.service import AlertService
    from stream_app.customers.engine import CustomerEngine
    from stream_app.publishing.publisher import Publisher


@dataclass
class AppContext:
    """Built once by ``create_app`` and handed to each domain's ``register`` function."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    clock: Clock = utc_now
    store: SegmentStore = field(default_factory=SegmentStore)
    engine: CustomerEngine | None = None
    publisher: Publisher | None = None
    alerts: AlertService | None = None
    # Called with the reason when the worker must not go on: its state is in a format it
    # cannot read. Stops the process with a non-zero status (``kpi worker``).
    refuse: Callable[[str], None] | None = None
