"""The alert service in process: simulator -> customer stage -> segment store -> alerts in Redis.

No Kafka here (the end-to-end tests in test_alerts_e2e.py have it): the customer stage's
partition states feed the segment store directly, the service's Kafka hand-off is a plain
callable, and Redis is a real, private redis-server.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from schemas import Alert
from stream_app.alerts.rules import parse_rules
from stream_app.alerts.service import AlertService
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.devstack import DevStack, free_port
from stream_app.eventlog import LogRecord
from stream_app.metrics import Metrics
from stream_app.redis_keys import ALERT_STATE, ALERTS
from stream_app.segments.agent import segment_partition
from stream_app.segments.store import SegmentStore
from stream_app.settings import Settings
from stream_app.simulate.config import DEFAULT_START, Behaviour, SimulationConfig
from stream_app.simulate.model import generate
from stream_app.simulate.scenarios import ChurnSpike

pytestmark = pytest.mark.integration

PARTITIONS = 4
SPIKE_AT = DEFAULT_START + timedelta(days=2, hours=12)
SPIKE_BUCKET_END = SPIKE_AT + timedelta(hours=1)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own: other suites may flush the shared one."""
    stack = DevStack(log_dir=tmp_path_factory.mktemp("alerts-redis"))
    url = stack.start_redis(free_port())
    yield url
    stack.stop()


@pytest.fixture
def redis_url(private_redis: str) -> str:
    client = redis.Redis.from_url(private_redis)
    client.flushdb()
    client.close()
    return private_redis


def spike_records() -> list[LogRecord]:
    config = SimulationConfig(
        seed=5,
        duration=timedelta(days=4),
        customers=2000,
        events_target=4000,
        scenarios=(ChurnSpike(region="EU", at=SPIKE_AT, duration=timedelta(hours=3), factor=50),),
        # A churnier population than the default (calibrated to e-commerce, about 12 % a
        # month), so that the spike takes EU's 24h churn rate well over the rule's 5 %.
        behaviour=Behaviour(churn_rate=0.006),
    )
    return list(generate(config))


class Pipeline:
    """The customer stage and segment stage without Kafka, fed in chunks like a stream."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.states = [
            PartitionState(p, settings, lambda: datetime.now(UTC)) for p in range(PARTITIONS)
        ]
        self.store = SegmentStore()
        self.offset = 0

    def feed(self, records: list[LogRecord]) -> None:
        by_partition: dict[int, list[RawMessage]] = {}
        for record in records:
            assert record.key is not None
            p = zlib.crc32(record.key) % PARTITIONS
            self.offset += 1
            by_partition.setdefault(p, []).append(
                RawMessage(record.event_type, record.event_type, p, self.offset, record.key,
                           record.value)
            )  # fmt: skip
        for p, messages in by_partition.items():
            self.states[p].ingest(messages)
        for state in self.states:
            checkpoint = state.checkpoint()
            for update in checkpoint.updates:
                target = segment_partition(update.segment, PARTITIONS)
                self.store.apply_update(orjson.loads(update.to_bytes()), target)
            if checkpoint.updates and checkpoint.watermark_us is not None:
                tick = {"src": state.partition, "wm": checkpoint.watermark_us}
                for target in range(PARTITIONS):
                    self.store.apply_update(tick, target)


def make_service(
    settings: Settings, store: SegmentStore, url: str, sent: list[tuple[bytes, bytes]], **kw: object
) -> tuple[AlertService, Metrics]:
    metrics = Metrics()

    async def kafka_send(key: bytes, value: bytes) -> None:
        sent.append((key, value))

    service = AlertService(
        settings,
        store,
        aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0),
        kafka_send,
        lambda: set(range(PARTITIONS)),
        metrics,
        lambda: datetime(2030, 1, 1, tzinfo=UTC),
        **{"monotonic": lambda: 1000.0, **kw},  # type: ignore[arg-type]  # 1000: none idle
    )
    return service, metrics


def stream_alerts(url: str) -> list[Alert]:
    client = redis.Redis.from_url(url)
    entries = client.xrange(ALERTS)
    client.close()
    return [Alert.model_validate_json(fields[b"data"]) for _id, fields in entries]


async def run_stream(
    pipeline: Pipeline, records: list[LogRecord], service: AlertService, chunk: int = 400
) -> None:
    for start in range(0, len(records), chunk):
        pipeline.feed(records[start : start + chunk])
        await service.tick()
        await service.tick()


async def test_spike_fires_once_resolves_and_survives_restarts(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    records = spike_records()
    pipeline = Pipeline(settings)
    sent: list[tuple[bytes, bytes]] = []
    service, metrics = make_service(settings, pipeline.store, redis_url, sent)

    await run_stream(pipeline, records, service)

    alerts = stream_alerts(redis_url)
    firing = [a for a in alerts if a.status == "firing" and a.kind == "churn_spike"]
    regions = {a.segment for a in firing if a.segment.startswith("region:")}
    assert regions == {"region:EU"}, [a.summary for a in firing]
    eu = next(a for a in firing if a.segment == "region:EU")
    assert eu.bucket_start == SPIKE_AT
    assert eu.bucket_end == SPIKE_BUCKET_END
    assert eu.observed is not None
    assert float(eu.observed) >= settings.churn_min_count
    assert eu.z_score is not None
    assert eu.z_score >= settings.churn_z_threshold
    assert eu.baseline_mean is not None
    assert eu.baseline_mean < 1.0
    assert "region:EU" in eu.summary
    resolved = [a for a in alerts if a.status == "resolved" and a.alert_id == eu.alert_id]
    assert len(resolved) == 1
    assert resolved[0].bucket_start >= SPIKE_AT + timedelta(hours=1)
    # Each transition once in the stream, and each handed to Kafka once.
    keys = [(a.alert_id, a.status) for a in alerts]
    assert len(keys) == len(set(keys))
    assert sorted(orjson.loads(v)["alert_id"] for _k, v in sent) == sorted(
        a.alert_id for a in alerts
    )
    assert metrics.alerts_suppressed._value.get() == 0

    # A restart: the new service reads its cursors from Redis and has nothing to redo.
    sent_again: list[tuple[bytes, bytes]] = []
    restarted, metrics2 = make_service(settings, pipeline.store, redis_url, sent_again)
    await restarted.tick()
    await restarted.tick()
    assert stream_alerts(redis_url) == alerts
    assert sent_again == []
    assert metrics2.alert_evaluations._value.get() == 0

    # Its state lost as well, a worker evaluates the whole lookback again: the markers stop
    # every alert it recomputes from going out twice.
    client = redis.Redis.from_url(redis_url)
    client.delete(ALERT_STATE)
    client.close()
    wiped = settings.model_copy(update={"alert_lookback": timedelta(days=14)})
    again, metrics3 = make_service(wiped, pipeline.store, redis_url, sent_again)
    await again.tick()
    await again.tick()
    assert metrics3.alert_evaluations._value.get() > 24
    assert metrics3.alerts_suppressed._value.get() == len(alerts)
    assert stream_alerts(redis_url) == alerts
    assert sent_again == []


async def test_threshold_rule_fires_and_resolves(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, churn_enabled=False)
    rules = parse_rules(
        """
        [[rules]]
        name = "eu-churn-rate"
        kpi = "churn_rate"
        window = "24h"
        segment = "region:*"
        op = ">"
        value = 0.05
        min_volume = 100
        severity = "critical"
        """,
        fmt="toml",
        source="inline",
        windows=[w.name for w in settings.windows],
    )
    records = spike_records()
    pipeline = Pipeline(settings)
    sent: list[tuple[bytes, bytes]] = []
    service, _metrics = make_service(settings, pipeline.store, redis_url, sent, rules=rules)

    await run_stream(pipeline, records, service)

    alerts = stream_alerts(redis_url)
    assert alerts, "the spike pushes EU's 24h churn rate over 5%"
    assert {a.segment for a in alerts} == {"region:EU"}
    assert [a.status for a in alerts] == ["firing", "resolved"]
    fired, resolved = alerts
    assert fired.kind == "threshold"
    assert fired.rule == "eu-churn-rate"
    assert fired.window == "24h"
    assert fired.threshold == 0.05
    assert fired.severity == "critical"
    assert isinstance(fired.observed, float)
    assert fired.observed > 0.05
    assert SPIKE_AT < fired.bucket_end <= SPIKE_AT + timedelta(hours=4)
    assert fired.bucket_end - fired.bucket_start == timedelta(hours=24)
    assert resolved.alert_id == fired.alert_id
    assert isinstance(resolved.observed, float)
    assert resolved.observed <= 0.05
    assert len(sent) == 2


async def test_redis_down_pauses_alerts_and_never_raises() -> None:
    settings = Settings()
    pipeline = Pipeline(settings)
    pipeline.feed(spike_records()[:3000])
    dead = f"redis://127.0.0.1:{free_port()}/0"
    sent: list[tuple[bytes, bytes]] = []
    service, metrics = make_service(settings, pipeline.store, dead, sent)

    assert [await service.tick() for _ in range(3)] == [0, 0, 0]
    assert sent == []
    assert metrics.alert_evaluations._value.get() == 0


def test_a_bucket_waits_for_every_source_partition_heard_or_not(redis_url: str) -> None:
    """A worker that has just taken a segment partition over knows only the sources that
    confirmed since; one whose worker died has not. Its buckets must not close without it,
    until it has been silent for the idle timeout."""
    settings = Settings(redis_url=redis_url, topic_partitions=PARTITIONS)
    store = SegmentStore()
    now = [0.0]
    service, _metrics = make_service(settings, store, redis_url, [], monotonic=lambda: now[0])
    for source in range(PARTITIONS - 1):  # source 3 is the dead worker's
        store.apply_update({"src": source, "wm": 5_000_000 + source}, 0)

    assert service.closing_watermark(0, now[0]) is None
    now[0] = settings.alert_idle_timeout.total_seconds() - 1
    store.apply_update({"src": 0, "wm": 9_000_000}, 0)
    assert service.closing_watermark(0, now[0]) is None

    # Heard from: the minimum over all four.
    store.apply_update({"src": PARTITIONS - 1, "wm": 4_000_000}, 0)
    assert service.closing_watermark(0, now[0]) == 4_000_000


def test_a_source_never_heard_from_is_left_out_after_the_idle_timeout(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, topic_partitions=PARTITIONS)
    store = SegmentStore()
    now = [0.0]
    service, _metrics = make_service(settings, store, redis_url, [], monotonic=lambda: now[0])
    for source in range(PARTITIONS - 1):
        store.apply_update({"src": source, "wm": 5_000_000 + source}, 0)
    assert service.closing_watermark(0, now[0]) is None
    now[0] = settings.alert_idle_timeout.total_seconds() + 1
    for source in range(PARTITIONS - 1):  # the others move on; source 3 stays silent
        store.apply_update({"src": source, "wm": 6_000_000 + source}, 0)
    assert service.closing_watermark(0, now[0]) == 6_000_000
