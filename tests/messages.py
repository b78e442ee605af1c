"""Plain input messages and a leak check, shared by the intake and compiled-code tests."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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


def random_timestamp(rng: random.Random) -> str:
    """An RFC 3339 stamp from 1900 to 2099, 0 to 6 fraction digits, Z or any offset."""
    day = datetime(1900, 1, 1, tzinfo=UTC) + timedelta(
        days=rng.randrange(200 * 365), seconds=rng.randrange(86400)
    )
    text = day.strftime("%Y-%m-%dT%H:%M:%S")
    places = rng.randrange(7)
    if places:
        text += "." + "".join(str(rng.randrange(10)) for _ in range(places))
    if rng.random() < 0.3:
        return text + "Z"
    minutes = rng.randrange(-24 * 60 + 1, 24 * 60)
    sign = "-" if minutes < 0 else "+"
    return text + f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
