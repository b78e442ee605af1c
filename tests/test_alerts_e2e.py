"""Alerts end to end: real broker, real Redis, real workers, the simulator's churn_spike scenario.

Each test has a redis-server of its own (other suites flush the shared one) and a topic
prefix and app id of its own.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import orjson
import pytest
import redis
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import Alert
from stream_app.devstack import free_port
from stream_app.eventlog import LogRecord
from stream_app.kafka import ensure_topics
from stream_app.redis_keys import ALERT_STATE, ALERTS
from stream_app.settings import Settings
from stream_app.simulate.config import DEFAULT_START, SimulationConfig
from stream_app.simulate.model import generate
from stream_app.simulate.scenarios import ChurnSpike
from stream_app.verify.compare import verify_redis
from stream_app.verify.reference import filter_records, reference_from_intake
from tests.conftest import StackEnv, WorkerProcess, produce, stack_settings

pytestmark = pytest.mark.integration

SPIKE_AT = DEFAULT_START + timedelta(days=2, hours=12)


def spike_records() -> list[LogRecord]:
    """4 simulated days, 2,000 customers, EU customers churning 50x as often for 3 hours."""
    config = SimulationConfig(
        seed=5,
        duration=timedelta(days=4),
        customers=2000,
        events_target=4000,
        scenarios=(ChurnSpike(region="EU", at=SPIKE_AT, duration=timedelta(hours=3), factor=50),),
    )
    return list(generate(config))


def occurred_at(record: LogRecord) -> datetime:
    assert record.value is not None
    return datetime.fromisoformat(orjson.loads(record.value)["occurred_at"])


async def kafka_alerts(settings: Settings) -> list[Alert]:
    """Every message of the alerts topic, from the beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        topic = settings.kpi_alerts_topic
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        alerts: list[Alert] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(*tps, timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    alert = Alert.model_validate_json(record.value)
                    assert record.key == alert.alert_id.encode()
                    alerts.append(alert)
        return alerts
    finally:
        await consumer.stop()


def stream_alerts(url: str) -> list[Alert]:
    client = redis.Redis.from_url(url)
    try:
        return [Alert.model_validate_json(f[b"data"]) for _i, f in client.xrange(ALERTS)]
    finally:
        client.close()


def wait_for(
    what: str, check: Callable[[], bool], workers: list[WorkerProcess], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.popen.poll() is None, worker.log_tail()
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n" + workers[-1].log_tail(80))


def metric(worker: WorkerProcess, name: str, labels: str = "") -> float:
    """A counter's value, summed over the label sets that contain ``labels``."""
    total = 0.0
    for found, value in re.findall(
        rf"^{name}(\{{[^}}]*\}})? (\S+)$", worker.get_text("/metrics"), re.M
    ):
        if labels in found:
            total += float(value)
    return total


def transitions(alerts: list[Alert]) -> Counter[tuple[str, str]]:
    return Counter((a.alert_id, a.status) for a in alerts)


def test_churn_spike_alerted_once_across_restarts(stack: StackEnv, private_redis: str) -> None:
    stack.redis_url = private_redis
    settings = stack_settings(stack)
    asyncio.run(ensure_topics(settings))
    records = spike_records()
    split = next(
        i for i, r in enumerate(records) if occurred_at(r) >= SPIKE_AT + timedelta(hours=2)
    )

    first = stack.start_worker("first")
    first.wait_assigned(partitions=4)
    asyncio.run(produce(settings, records[:split]))

    def eu_fired() -> bool:
        return any(
            a.segment == "region:EU" and a.status == "firing" for a in stream_alerts(private_redis)
        )

    wait_for("the EU churn alert", eu_fired, [first], timeout_s=60)
    time.sleep(2.0)  # room for any wrong alert to show up too
    fired = [a for a in stream_alerts(private_redis) if a.status == "firing"]
    assert {a.segment for a in fired if a.segment.startswith("region:")} == {"region:EU"}
    eu = next(a for a in fired if a.segment == "region:EU")
    # The first bucket that closes after the spike started is the spike's first hour.
    assert eu.bucket_start == SPIKE_AT
    assert eu.kind == "churn_spike"
    assert eu.rule == "churn_spike"
    assert eu.z_score is not None
    assert eu.z_score >= 3

    # Restart: the new worker carries on from the cursors in Redis; the rest of the data
    # brings the resolve, sent once.
    assert first.stop(signal.SIGTERM) == 0
    second = stack.start_worker("second")
    second.wait_assigned(partitions=4)
    asyncio.run(produce(settings, records[split:]))

    def eu_resolved() -> bool:
        return any(
            a.alert_id == eu.alert_id and a.status == "resolved"
            for a in stream_alerts(private_redis)
        )

    wait_for("the EU resolve", eu_resolved, [second], timeout_s=60)
    time.sleep(2.0)
    before = stream_alerts(private_redis)
    assert metric(second, "kpi_alerts_suppressed_total") == 0  # it had nothing to redo
    assert metric(second, "kpi_alerts_total", 'status="resolved"') >= 1
    health = second.get_json("/health")["alerts"]
    assert health["watchers"] == ["churn_spike"]
    assert "churn_spike region:EU" not in health["firing"]

    # Restart once more with the alert state wiped and a 14-day lookback: every alert is
    # evaluated again, and the markers keep each one from going out a second time.
    assert second.stop(signal.SIGTERM) == 0
    client = redis.Redis.from_url(private_redis)
    assert client.delete(ALERT_STATE) == 1
    client.close()
    third = stack.start_worker("third", KPI_ALERT_LOOKBACK="14d")
    third.wait_assigned(partitions=4)
    wait_for(
        "the re-evaluation",
        lambda: metric(third, "kpi_alerts_suppressed_total") >= len(before),
        [third],
        timeout_s=60,
    )
    after = stream_alerts(private_redis)
    assert after == before
    once = transitions(after)
    assert set(once.values()) == {1}
    assert (eu.alert_id, "firing") in once
    assert (eu.alert_id, "resolved") in once
    assert transitions(asyncio.run(kafka_alerts(settings))) == once


class WebhookServers:
    """Local endpoints in a thread of their own: one answers 500, one answers after 3 s."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.ports = {"failing": free_port(), "slow": free_port()}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runners: list[web.AppRunner] = []

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        async def failing(request: web.Request) -> web.Response:
            self.hits["failing"] += 1
            self.bodies.append(await request.read())
            return web.Response(status=500)

        async def slow(request: web.Request) -> web.Response:
            self.hits["slow"] += 1
            await asyncio.sleep(3.0)
            return web.Response(status=200)

        for name, handler in (("failing", failing), ("slow", slow)):
            app = web.Application()
            app.router.add_post("/hook", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", self.ports[name]).start()

    def __enter__(self) -> WebhookServers:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def test_failing_slow_and_dead_webhooks_leave_kpis_exact(
    stack: StackEnv, private_redis: str
) -> None:
    stack.redis_url = private_redis
    settings = stack_settings(stack)
    asyncio.run(ensure_topics(settings))
    records = spike_records()
    dead_port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", dead_port)) != 0  # nobody listens there

    with WebhookServers() as servers:
        hooks = ",".join(
            [
                f"http://127.0.0.1:{servers.ports['failing']}/hook?token=SeCrEt-123",
                f"http://127.0.0.1:{servers.ports['slow']}/hook",
                f"http://127.0.0.1:{dead_port}/hook",
            ]
        )
        worker = stack.start_worker(
            "webhooks",
            KPI_ALERT_WEBHOOKS=hooks,
            KPI_ALERT_WEBHOOK_TIMEOUT="1s",
            KPI_ALERT_WEBHOOK_RETRIES="2",
            KPI_ALERT_WEBHOOK_BACKOFF="100ms",
            # All 4 days arrive at once: alert on all of them, not only the newest day.
            KPI_ALERT_LOOKBACK="7d",
        )
        worker.wait_assigned(partitions=4)
        asyncio.run(produce(settings, records))

        reference = reference_from_intake(filter_records(records, settings), settings)
        client = redis.Redis.from_url(private_redis)
        deadline = time.monotonic() + 90
        report = verify_redis(client, reference, settings)
        while report.mismatches and time.monotonic() < deadline:
            assert worker.popen.poll() is None, worker.log_tail()
            time.sleep(2.0)
            report = verify_redis(client, reference, settings)
        client.close()
        assert not report.mismatches, report.mismatches[:5]
        assert report.snapshots_checked >= 4 * 6

        alerts = stream_alerts(private_redis)
        assert any(a.segment == "region:EU" and a.status == "firing" for a in alerts)
        # Each endpoint got every alert 1 + 2 retries times, then gave it up.
        wait_for(
            "the webhook retries",
            lambda: (
                metric(worker, "kpi_alert_webhook_requests_total", 'result="failed"')
                == 3 * len(alerts)
            ),
            [worker],
            timeout_s=60,
        )
        assert servers.hits["failing"] == 3 * len(alerts)
        assert servers.hits["slow"] == 3 * len(alerts)
        assert metric(worker, "kpi_alert_webhook_requests_total", 'result="retry"') == 6 * len(
            alerts
        )
        assert Counter(Alert.model_validate_json(b).alert_id for b in servers.bodies) == Counter(
            a.alert_id for a in alerts for _ in range(3)
        )
    assert "SeCrEt-123" not in worker.log_path.read_text()
    assert worker.stop() == 0
