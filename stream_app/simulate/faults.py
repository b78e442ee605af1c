"""What real producers do wrong: disorder, re-sends, late events and malformed messages."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, Literal

import orjson

from schemas import EventType
from stream_app.eventlog import LogRecord
from stream_app.simulate.config import (
    DUPLICATE_MAX_LAG,
    DUPLICATE_MAX_RECORDS,
    LATE_AFTER,
    LATE_MIN_AGE,
    SimulationConfig,
)
from stream_app.simulate.population import MS_PER_HOUR, SCHEMA_VERSION, ModelEvent
from stream_app.simulate.stats import SimulationStats

EmissionKind = Literal["event", "duplicate", "late", "bad"]

# The message is far over the contract's 64 KiB limit, not just at it.
_OVERSIZED_PADDING: Final = 70_000
_LATE_TYPES: Final[tuple[EventType, ...]] = ("purchase", "campaign_click", "survey")
_LATE_TYPE_WEIGHTS: Final = (0.4, 0.3, 0.3)
_REQUIRED: Final[dict[EventType, tuple[str, ...]]] = {
    "signup": (),
    "purchase": ("order_id", "amount", "currency"),
    "cancellation": (),
    "campaign_click": ("campaign_id",),
    "survey": ("survey_type", "score"),
}


def _ms(delta: timedelta) -> int:
    return int(delta / timedelta(milliseconds=1))


@dataclass(frozen=True, slots=True)
class Emission:
    """One record as it leaves the simulator, with what it is and the stream's event time.

    ``stream_ms`` is the simulation's clock when the record leaves (ms since the start): the
    newest event time the model has reached, never before the record's own ``occurred_at``.
    A real-time player paces by it. ``detail`` names the fault kind of a bad record.
    """

    record: LogRecord
    kind: EmissionKind
    stream_ms: int
    detail: str | None = None


class Reorderer:
    """Lets events of different customers overtake each other by up to ``disorder``.

    Each event gets a release key of its time plus a random jitter; a customer's keys never
    decrease, so the events of one customer (one partition) keep their order. An event is
    released once the simulation has passed its key, so none trails the newest event
    emitted before it by more than the jitter.
    """

    def __init__(self, disorder: timedelta, rng: random.Random) -> None:
        self._disorder = float(_ms(disorder))
        self._rng = rng
        self._heap: list[tuple[float, int, ModelEvent]] = []
        self._last_key: dict[int, float] = {}
        self._seq = 0

    def push(self, event: ModelEvent) -> Iterator[ModelEvent]:
        """Take ``event`` (in event-time order) and release what is due."""
        key = event.at_ms + self._rng.uniform(0.0, self._disorder) if self._disorder else 0.0
        key = max(key, float(event.at_ms), self._last_key.get(event.customer, key))
        self._last_key[event.customer] = key
        self._seq += 1
        heapq.heappush(self._heap, (key, self._seq, event))
        while self._heap and self._heap[0][0] <= event.at_ms:
            yield heapq.heappop(self._heap)[2]

    def flush(self) -> Iterator[ModelEvent]:
        while self._heap:
            yield heapq.heappop(self._heap)[2]


@dataclass(slots=True)
class _PendingDuplicate:
    due: int
    at_ms: int
    seq: int
    record: LogRecord


class FaultInjector:
    """Turns the model's events into records and mixes in re-sends, late and bad messages.

    Every on-time event is emitted once; then, each with its own probability, a re-send of
    it is queued (emitted within the next few hundred records and at most an hour of event
    time later), a malformed message is added, and a late event is added.
    """

    def __init__(
        self,
        config: SimulationConfig,
        rng: random.Random,
        stats: SimulationStats,
        run_tag: str,
    ) -> None:
        self._config = config
        self._rng = rng
        self._stats = stats
        self._tag = run_tag
        self._max_ms = -1  # the newest on-time occurred_at emitted
        self._clock_ms = -1
        self._count = 0
        self._pending: list[_PendingDuplicate] = []
        self._seq = 0
        self._known: list[str] = []
        self._known_index: set[int] = set()
        self._late_count = 0
        self._bad_count = 0
        self._late_after = _ms(LATE_AFTER)
        self._late_age = _ms(LATE_MIN_AGE)
        self._duplicate_lag = _ms(DUPLICATE_MAX_LAG)
        self._offsets = sorted({o for r in config.regions for o in r.offsets})
        self._builders: dict[str, Callable[[ModelEvent], LogRecord]] = {
            "invalid_json": self._invalid_json,
            "not_an_object": self._not_an_object,
            "naive_timestamp": self._naive_timestamp,
            "bad_timestamp": self._bad_timestamp,
            "wrong_currency": self._wrong_currency,
            "bad_amount": self._bad_amount,
            "score_out_of_range": self._score_out_of_range,
            "bad_region": self._bad_region,
            "non_utf8": self._non_utf8,
            "oversized": self._oversized,
            "missing_field": self._missing_field,
            "empty_value": self._empty_value,
            "null_value": self._null_value,
            "unknown_schema_version": self._unknown_schema_version,
            "key_mismatch": self._key_mismatch,
        }
        self._bad_kinds = sorted(self._builders)

    @property
    def bad_kinds(self) -> list[str]:
        return list(self._bad_kinds)

    def emit(self, event: ModelEvent, clock_ms: int) -> Iterator[Emission]:
        """Records for one on-time event, in stream order; ``clock_ms``: the model's clock.

        Pacing by the newest ``occurred_at`` emitted instead would bunch a live stream:
        reordered events leave minutes after they happened, so that time stands still
        until an event with little delay comes out, then everything held back goes at once.
        """
        yield from self._due_duplicates(max(self._max_ms, event.at_ms))
        if event.customer not in self._known_index:
            self._known_index.add(event.customer)
            self._known.append(str(event.payload["customer_id"]))
        record = LogRecord(event.event_type, event.key, event.value)
        self._max_ms = max(self._max_ms, event.at_ms)
        self._clock_ms = max(self._clock_ms, self._max_ms, clock_ms)
        self._count += 1
        self._note_event(event)
        yield Emission(record, "event", self._clock_ms)

        rng, config = self._rng, self._config
        if config.duplicates and rng.random() < config.duplicates:
            self._seq += 1
            due = self._count + rng.randint(1, DUPLICATE_MAX_RECORDS)
            self._pending.append(_PendingDuplicate(due, event.at_ms, self._seq, record))
        if config.inject_bad and rng.random() < config.inject_bad:
            kind = rng.choice(self._bad_kinds)
            self._bad_count += 1
            self._count += 1
            self._stats.bad[kind] += 1
            yield Emission(self._builders[kind](event), "bad", self._clock_ms, kind)
        if config.late and self._max_ms >= self._late_after and rng.random() < config.late:
            late = self._late_event()
            self._count += 1
            self._stats.late_by_type[late.event_type] += 1
            yield Emission(late, "late", self._clock_ms, late.event_type)

    def finish(self) -> Iterator[Emission]:
        """The re-sends still queued when the events run out."""
        pending, self._pending = self._pending, []
        for dup in sorted(pending, key=lambda d: d.seq):
            yield self._duplicate(dup)

    def _note_event(self, event: ModelEvent) -> None:
        stats = self._stats
        stats.events[event.event_type] += 1
        moment = self._moment(event.at_ms)
        if stats.first_event_at is None:
            stats.first_event_at = moment
        if stats.last_event_at is None or moment > stats.last_event_at:
            stats.last_event_at = moment

    def _moment(self, ms: int) -> datetime:
        return self._config.start + timedelta(milliseconds=ms)

    def _due_duplicates(self, horizon: int) -> Iterator[Emission]:
        """Re-sends whose turn came, or that would otherwise trail the stream by too much."""
        if not self._pending:
            return
        due = [
            d
            for d in self._pending
            if d.due <= self._count or d.at_ms < horizon - self._duplicate_lag
        ]
        if not due:
            return
        self._pending = [d for d in self._pending if d not in due]
        for dup in sorted(due, key=lambda d: d.seq):
            yield self._duplicate(dup)

    def _duplicate(self, dup: _PendingDuplicate) -> Emission:
        self._count += 1
        self._stats.duplicates += 1
        return Emission(dup.record, "duplicate", self._clock_ms)

    # -- late events ----------------------------------------------------------------------

    def _late_event(self) -> LogRecord:
        """A valid event of a known customer, 35 days or more behind the newest event."""
        rng = self._rng
        self._late_count += 1
        customer_id = rng.choice(self._known)
        newest_allowed = self._max_ms - self._late_age - MS_PER_HOUR
        at_ms = rng.randint(0, newest_allowed)
        offset = rng.choice(self._offsets)
        payload: dict[str, Any] = {
            "event_id": f"ev-{self._tag}-late-{self._late_count:06d}",
            "customer_id": customer_id,
            "occurred_at": self._render(at_ms, offset),
            "schema_version": SCHEMA_VERSION,
        }
        event_type = rng.choices(_LATE_TYPES, _LATE_TYPE_WEIGHTS)[0]
        if event_type == "purchase":
            payload["order_id"] = f"ord-{self._tag}-late-{self._late_count:06d}"
            payload["amount"] = f"{rng.lognormvariate(3.7, 0.9):.2f}"
            payload["currency"] = self._config.reporting_currency
        elif event_type == "campaign_click":
            campaign = rng.choice(self._config.campaigns)
            payload["campaign_id"] = campaign.campaign_id
            payload["cost"] = f"{float(campaign.cost_per_click):.4f}"
        else:
            payload["survey_type"] = "csat"
            payload["score"] = rng.randint(1, 5)
        return LogRecord(event_type, customer_id.encode(), orjson.dumps(payload))

    def _render(self, at_ms: int, offset: str) -> str:
        moment = self._moment(at_ms).astimezone(UTC)
        if offset == "Z":
            return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = offset[1:].split(":")
        shift = timedelta(hours=int(hours), minutes=int(minutes)) * sign
        return moment.astimezone(timezone(shift)).isoformat(timespec="seconds")

    # -- malformed messages ---------------------------------------------------------------

    def _payload(self, event: ModelEvent) -> dict[str, Any]:
        """A copy of the event's payload under an id of its own."""
        payload = dict(event.payload)
        payload["event_id"] = f"ev-{self._tag}-bad-{self._bad_count:06d}"
        return payload

    def _record(
        self, event: ModelEvent, value: bytes | None, key: bytes | None = None
    ) -> LogRecord:
        return LogRecord(event.event_type, key if key is not None else event.key, value)

    def _invalid_json(self, event: ModelEvent) -> LogRecord:
        value = orjson.dumps(self._payload(event))
        return self._record(event, value[: len(value) // 2])

    def _not_an_object(self, event: ModelEvent) -> LogRecord:
        return self._record(event, b"[" + orjson.dumps(self._payload(event)) + b"]")

    def _naive_timestamp(self, event: ModelEvent) -> LogRecord:
        payload = self._payload(event)
        payload["occurred_at"] = str(payload["occurred_at"])[:19]  # drop fraction and offset
        return self._record(event, orjson.dumps(payload))

    def _bad_timestamp(self, event: ModelEvent) -> LogRecord:
        payload = self._payload(event)
        payload["occurred_at"] = self._rng.choice(
            ("2026-13-45T25:61:00Z", "yesterday", "1730000000", "2026-11-02")
        )
        return self._record(event, orjson.dumps(payload))

    def _as_purchase(self, event: ModelEvent) -> dict[str, Any]:
        payload = self._payload(event)
        if event.event_type != "purchase":
            keep = ("event_id", "customer_id", "occurred_at", "schema_version")
            payload = {key: payload[key] for key in keep}
            payload["order_id"] = f"ord-{self._tag}-bad-{self._bad_count:06d}"
            payload["amount"] = "42.00"
            payload["currency"] = self._config.reporting_currency
        return payload

    def _wrong_currency(self, event: ModelEvent) -> LogRecord:
        payload = self._as_purchase(event)
        payload["currency"] = "EUR" if self._config.reporting_currency != "EUR" else "GBP"
        return LogRecord("purchase", event.key, orjson.dumps(payload))

    def _bad_amount(self, event: ModelEvent) -> LogRecord:
        payload = self._as_purchase(event)
        payload["amount"] = self._rng.choice(("-12.50", "0", "12.34567", "1e3", "abc", "NaN"))
        return LogRecord("purchase", event.key, orjson.dumps(payload))

    def _score_out_of_range(self, event: ModelEvent) -> LogRecord:
        payload = self._payload(event)
        keep = ("event_id", "customer_id", "occurred_at", "schema_version")
        payload = {key: payload[key] for key in keep}
        if self._rng.random() < 0.5:
            payload.update(survey_type="nps", score=self._rng.choice((-1, 11, 12, 100)))
        else:
            payload.update(survey_type="csat", score=self._rng.choice((0, 6, 10)))
        return LogRecord("survey", event.key, orjson.dumps(payload))

    def _bad_region(self, event: ModelEvent) -> LogRecord:
        payload = self._payload(event)
        keep = ("event_id", "customer_id", "occurred_at", "schema_version")
        payload = {key: payload[key] for key in keep}
        payload["region"] = self._rng.choice(("E", "EUROPE-WEST-1", "north america"))
        return LogRecord("signup", event.key, orjson.dumps(payload))

    def _non_utf8(self, event: ModelEvent) -> LogRecord:
        # A Latin-1 producer: "café" with a lone 0xE9 byte.
        return self._record(event, b'{"note":"caf\xe9",' + orjson.dumps(self._payload(event))[1:])

    def _oversized(self, event: ModelEvent) -> LogRecord:
        payload = self._payload(event)
        payload["note"] = "x" * _OVERSIZED_PADDING
        return self._record(event, orjson.dumps(payload))

    def _missing_field(self, event: ModelEvent) -> LogRecord:
        payload = self._payload(event)
        field = self._rng.choice(
            ("event_id", "customer_id", "occurred_at", *_REQUIRED[event.event_type])
        )
        del payload[field]
        return self._record(event, orjson.dumps(payload))

    def _empty_value(self, event: ModelEvent) -> LogRecord:
        return self._record(event, b"")

    def _null_value(self, event: ModelEvent) -> LogRecord:
        return self._record(event, None)

    def _unknown_schema_version(self, event: ModelEvent) -> LogRecord:
        payload = self._payload(event)
        payload["schema_version"] = self._rng.choice((0, 2, 99))
        return self._record(event, orjson.dumps(payload))

    def _key_mismatch(self, event: ModelEvent) -> LogRecord:
        others = [c for c in self._known[-50:] if c.encode() != event.key]
        other = self._rng.choice(others) if others else event.key.decode() + "-x"
        return self._record(event, orjson.dumps(self._payload(event)), other.encode())
