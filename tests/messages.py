"""Plain input messages and a leak check, shared by the intake and compiled-code tests."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

from schemas import EventType

# The plain shape of each event type and the common fields.
PLAIN: dict[EventType, dict[str, Any]] = {
    "signup": {"region": "emea", "campaign_id": "spring-1", "channel": "web"},
    "purchase": {"order_id": "o-1", "amount": "19.99", "currency": "USD"},
    "cancellation": {"reason": "too expensive"},
    "campaign_click": {"campaign_id": "spring-1", "cost": "0.125"},
    "survey": {"survey_type": "nps", "score": 9},
}
COMMON: dict[str, Any] = {
    "event_id": "ev-1",
    "customer_id": "cust-1",
    "occurred_at": "2026-11-02T09:15:00+09:00",
    "schema_version": 1,
}


def allocations_grown(run: Callable[[int], None], times: int) -> int:
    """Bytes still allocated after ``run(times)``, measured after a warm-up round.

    tracemalloc sees objects that C code allocates too, so a reference leaked per call
    shows as that many objects' worth of bytes.
    """
    run(max(1, times // 20))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(times)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
