"""Plain input messages of every event type, shared by the intake tests."""

from __future__ import annotations

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
