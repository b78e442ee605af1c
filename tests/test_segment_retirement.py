"""Segments follow the events: a refold that empties one retires it; an event brings it back.

The whole path with a real Redis and no Kafka: the customer stage's partition state, the
segment store as the segment stage feeds it, and the publisher. What Redis holds at the end
of each step is checked against the independent reference (``kpi verify``'s recount).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.eventlog import LogRecord
from stream_app.metrics import Metrics
from stream_app.publishing.publisher import HISTORY_INTERVAL_S, Publisher
from stream_app.redis_keys import UPDATES_STREAM
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings
from stream_app.verify.compare import scan_keys, verify_redis
from stream_app.verify.reference import filter_records, reference_from_intake

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, 10, tzinfo=UTC)
WINDOWS = ("1h", "24h", "7d", "30d")
TOPICS = {"signup": "crm.signups", "purchase": "crm.purchases", "cancellation": "crm.cancellations"}


class Pipeline:
    """One customer partition, the segment store it feeds, and a publisher on a hand clock."""

    def __init__(self, url: str) -> None:
        self.settings = Settings(redis_url=url, publish_interval=timedelta(seconds=1))
        self.state = PartitionState(0, self.settings, lambda: T0)
        self.now = 100.0
        self.store = SegmentStore(monotonic=lambda: self.now)
        self.client = aioredis.Redis.from_url(url)
        self.sync = redis.Redis.from_url(url)
        self.kafka: list[tuple[bytes, bytes]] = []
        self.publisher = Publisher(
            self.settings, self.store, self.client, self.send, lambda: {0}, Metrics(),
            lambda: T0, monotonic=lambda: self.now,
        )  # fmt: skip
        self.log: list[LogRecord] = []
        self.offset = 0

    async def send(self, key: bytes, value: bytes) -> None:
        self.kafka.append((key, value))

    def ingest(self, kind: str, customer: str, minutes: int, **fields: Any) -> None:
        self.offset += 1
        value = orjson.dumps(
            {
                "event_id": f"e{self.offset}",
                "customer_id": customer,
                "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
                **fields,
            }
        )
        self.log.append(LogRecord(kind, customer.encode(), value))  # type: ignore[arg-type]
        message = RawMessage(kind, TOPICS[kind], 0, self.offset, customer.encode(), value)  # type: ignore[arg-type]
        self.state.ingest([message])
        for update in self.state.checkpoint().updates:
            self.store.apply_update(orjson.loads(update.to_bytes()), 0)

    async def publish(self) -> None:
        """Tick until everything is out: history comes a budget per tick, past steps each 5 s."""
        for _ in range(6):
            self.now += HISTORY_INTERVAL_S
            await self.publisher.tick()

    def segments(self) -> set[str]:
        keys = scan_keys(self.sync)
        assert {s for _w, s in keys.snapshots} == {s for _w, s in keys.histories}
        return {segment for _window, segment in keys.snapshots}

    def check_against_reference(self) -> None:
        intake = filter_records(self.log, self.settings)
        reference = reference_from_intake(intake, self.settings)
        report = verify_redis(self.sync, reference, self.settings)
        assert not report.mismatches, report.mismatches

    def stream_snapshots(self, segment: str) -> list[dict[str, Any]]:
        entries = self.sync.xrange(UPDATES_STREAM)
        snapshots = [orjson.loads(fields[b"data"]) for _id, fields in entries]
        return [s for s in snapshots if s["segment"] == segment]

    async def close(self) -> None:
        self.sync.close()
        await self.client.aclose()


async def test_a_refold_that_empties_a_segment_retires_it(private_redis: str) -> None:
    run = Pipeline(private_redis)
    run.ingest("purchase", "ann", 0, amount="10.00", currency="USD", order_id="o1")
    await run.publish()
    assert run.segments() == {"all", "region:unknown"}
    run.check_against_reference()

    # A late signup, before the purchase: the purchase now counts in region:EU, and nothing
    # is left in region:unknown.
    run.ingest("signup", "ann", -30, region="EU")
    await run.publish()
    assert run.segments() == {"all", "region:EU"}  # hash and history gone
    run.check_against_reference()
    # Live consumers got a last snapshot of it, with what it now holds: nothing.
    last = {s["window"]: s for s in run.stream_snapshots("region:unknown")}
    assert set(last) == set(WINDOWS)
    assert all(s["orders"] == 0 and s["revenue"] == "0.00" for s in last.values())
    assert {key for key, _data in run.kafka} >= {f"{w}:region:unknown".encode() for w in WINDOWS}

    # Retired stays retired: later ticks write nothing for it.
    sent = len(run.kafka)
    await run.publish()
    assert run.segments() == {"all", "region:EU"}
    assert all(not key.endswith(b":region:unknown") for key, _data in run.kafka[sent:])
    await run.close()


async def test_a_cancellation_of_an_unknown_customer_brings_its_segment_back(
    private_redis: str,
) -> None:
    run = Pipeline(private_redis)
    run.ingest("cancellation", "bob", 0)
    await run.publish()
    # Counted nowhere, yet an event of `all` and `region:unknown` (contract section 2).
    assert run.segments() == {"all", "region:unknown"}
    run.check_against_reference()

    # Bob's late signup makes the cancellation a churn in EU: region:unknown is empty.
    run.ingest("signup", "bob", -30, region="EU")
    await run.publish()
    assert run.segments() == {"all", "region:EU"}
    run.check_against_reference()

    # A new event in the segment brings it back, with its history.
    run.ingest("cancellation", "cy", 5)
    await run.publish()
    assert run.segments() == {"all", "region:EU", "region:unknown"}
    assert run.sync.zcard("kpi-history:1h:region:unknown") > 1
    run.check_against_reference()
    await run.close()
