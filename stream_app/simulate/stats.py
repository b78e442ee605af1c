"""What a simulation generated so far, by event type and by fault, for callers and logs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class SimulationStats:
    """Counts of the records emitted so far; updated as the generator is consumed."""

    # On-time valid events by event type (re-sends and late events not included).
    events: Counter[str] = field(default_factory=Counter)
    # Malformed messages by fault kind (invalid_json, oversized, key_mismatch, ...).
    bad: Counter[str] = field(default_factory=Counter)
    # Valid events >= 35 days behind the newest one, by event type.
    late_by_type: Counter[str] = field(default_factory=Counter)
    # Exact re-sends of earlier records.
    duplicates: int = 0
    # Customers the model created: the initial population up front, newcomers as they come.
    customers: int = 0
    # Signups of customers who had churned.
    resignups: int = 0
    # Event-time range of the on-time events.
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None

    @property
    def good(self) -> int:
        """On-time, valid events (each once)."""
        return sum(self.events.values())

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    @property
    def late(self) -> int:
        return sum(self.late_by_type.values())

    @property
    def records(self) -> int:
        """Every record emitted: good, bad, duplicates and late events."""
        return self.good + self.bad_total + self.duplicates + self.late

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "events": dict(sorted(self.events.items())),
            "bad": dict(sorted(self.bad.items())),
            "duplicates": self.duplicates,
            "late": self.late,
            "customers": self.customers,
            "resignups": self.resignups,
            "first_event_at": self.first_event_at.isoformat() if self.first_event_at else None,
            "last_event_at": self.last_event_at.isoformat() if self.last_event_at else None,
        }

    def summary(self) -> str:
        """One line for logs."""
        events = ", ".join(f"{k}={v}" for k, v in sorted(self.events.items())) or "none"
        bad = ", ".join(f"{k}={v}" for k, v in sorted(self.bad.items())) or "none"
        return (
            f"{self.records} records: events {events}; bad {self.bad_total} ({bad}); "
            f"duplicates {self.duplicates}; late {self.late}; customers {self.customers} "
            f"({self.resignups} re-signups)"
        )
