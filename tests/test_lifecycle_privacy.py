"""Customer ids stay out of what is published, and ``kpi forget`` erases a customer.

After a run whose KPIs (lifecycle segments included) equal the independent recount, no
Redis key or value holds a customer id. Then ``kpi forget`` (twice: it is idempotent) erases
one customer: the changelog read back the way recovery reads it has nothing of them, every
one of their keys ends in a tombstone, and the KPIs still equal the recount.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer

from stream_app.customers.changelog import ChangelogReplay
from stream_app.customers.partition import PartitionState
from stream_app.eventlog import LogRecord
from stream_app.kafka import changelog_topic, ensure_topics
from stream_app.settings import Settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate
from stream_app.verify.reference import filter_records
from tests.conftest import StackEnv, describe, produce, stack_settings, verify_until_clean

pytestmark = pytest.mark.integration

ID = re.compile(rb"cust-\d{6}")
# The one place customer ids may appear in Redis (contract section 7).
AT_RISK_PREFIX = b"kpi-at-risk:"


def _redis_dump(client: redis.Redis) -> list[tuple[bytes, bytes]]:
    """Every key and every value in the database, as bytes."""
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"hash":
            values: list[Any] = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == b"zset":
            values = [member for member, _score in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            values = [
                b for _id, fields in client.xrange(key) for pair in fields.items() for b in pair
            ]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        else:
            values = [client.get(key) or b""]
        found.extend((key, value) for value in [key, *values])
    return found


async def _changelog(settings: Settings) -> list[tuple[int, bytes | None, bytes | None, bytes]]:
    """Every changelog record: (partition, key, value, checkpoint tag)."""
    consumer = AIOKafkaConsumer(
        changelog_topic(settings),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    records: list[tuple[int, bytes | None, bytes | None, bytes]] = []
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=1000)
            idle = 0 if batch else idle + 1
            for tp, messages in batch.items():
                for m in messages:
                    tag = dict(m.headers or ()).get("ckp", b"")
                    records.append((tp.partition, m.key, m.value, tag))
    finally:
        await consumer.stop()
    return records


def test_no_customer_id_is_published_and_forget_leaves_no_trace(stack: StackEnv) -> None:
    stack.extra["KPI_LIFECYCLE_ENABLED"] = "true"
    settings = stack_settings(stack).model_copy(update={"lifecycle_enabled": True})
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    asyncio.run(ensure_topics(settings))
    config = SimulationConfig(
        seed=26, duration=timedelta(days=40), customers=300, events_target=6000
    )
    records: list[LogRecord] = list(generate(config))
    worker = stack.start_worker()
    worker.wait_assigned(partitions=4)
    asyncio.run(produce(settings, records))
    intake = filter_records(records, settings)
    report = verify_until_clean(settings, intake, [worker], 120)
    assert not report.mismatches, describe(report)
    assert any(key.startswith(b"kpi:30d:lifecycle:") for key in client.scan_iter(count=1000))

    leaks = [(key, value[:80]) for key, value in _redis_dump(client) if ID.search(value)]
    assert [leak for leak in leaks if not leak[0].startswith(AT_RISK_PREFIX)] == []

    # The at-risk sets: customer ids scored by the churn model, the top of all partitions.
    deadline = time.monotonic() + 30
    while not client.zcard("kpi-at-risk:all") and time.monotonic() < deadline:
        time.sleep(0.5)
    at_risk = client.zrevrange("kpi-at-risk:all", 0, -1, withscores=True)
    assert 0 < len(at_risk) <= settings.lifecycle_at_risk_size
    assert all(0 <= score <= 1 for _member, score in at_risk)
    assert any(key.startswith(b"kpi-at-risk:region:") for key in client.scan_iter(count=1000))
    target = at_risk[0][0].decode()
    assert ID.fullmatch(target.encode())  # the scan above would have seen it
    for _ in range(2):  # idempotent
        subprocess.run(
            [sys.executable, "-m", "stream_app", "forget", target],
            env=stack.env(),
            cwd=stack.tmp_path,
            check=True,
            timeout=60,
        )
    key_of_target = re.compile(rb"(^|[:|])" + re.escape(target.encode()) + rb"$")
    deadline = time.monotonic() + 60
    while True:
        log = asyncio.run(_changelog(settings))
        last: dict[bytes, bytes | None] = {}
        for _p, key, value, _tag in log:
            if key is not None and key_of_target.search(key):
                last[key] = value
        if last and all(value is None for value in last.values()):
            break
        assert time.monotonic() < deadline, f"not all tombstoned: {sorted(last)}"
        time.sleep(1.0)
    # Read back as recovery does: nothing of the customer comes back.
    for partition in range(settings.topic_partitions):
        state = PartitionState(partition, settings, lambda: intake.watermark)  # type: ignore[arg-type,return-value]
        replay = ChangelogReplay(state)
        for p, key, value, tag in log:
            if p == partition:
                replay.feed(key, value, tag)
        replay.finish()
        assert target not in state.customers
        assert state.lifecycle is not None
        assert target not in state.lifecycle.customers
    assert not any(target.encode() in value for _key, value in _redis_dump(client))
    # The KPIs keep the customer's past counts: still the recount's.
    report = verify_until_clean(settings, intake, [worker], 30)
    assert not report.mismatches, describe(report)
    client.close()
