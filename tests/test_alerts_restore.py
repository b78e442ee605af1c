"""Alerts after Redis came back empty: history, markers and states rebuilt from Kafka.

In process like test_alerts_service.py: the service's Kafka hand-off is a list, and the same
list is what a restore reads back as ``crm.kpi-alerts``. The end-to-end case, with a real
broker and workers, is in tests/test_fault_matrix.py.
"""

from __future__ import annotations

from datetime import timedelta

import redis

from stream_app.alerts.service import AlertService
from stream_app.redis_keys import ALERT_STATE, ALERTS_RESTORED, alert_sent_key
from stream_app.settings import Settings
from tests.test_alerts_service import (
    Pipeline,
    make_service,
    private_redis,
    redis_url,
    run_stream,
    spike_records,
    stream_alerts,
)

__all__ = ["private_redis", "redis_url"]  # the fixtures this module's tests use


def _with_log(service: AlertService, sent: list[tuple[bytes, bytes]]) -> AlertService:
    async def alert_log() -> list[bytes]:
        return [value for _key, value in sent]

    service.alert_log = alert_log
    return service


async def test_an_alert_that_fired_does_not_fire_again_after_redis_comes_back_empty(
    redis_url: str,
) -> None:
    settings = Settings(redis_url=redis_url)
    pipeline = Pipeline(settings)
    sent: list[tuple[bytes, bytes]] = []
    service, _metrics = make_service(settings, pipeline.store, redis_url, sent)
    _with_log(service, sent)
    await run_stream(pipeline, spike_records(), service)
    alerts = stream_alerts(redis_url)
    assert {a.status for a in alerts} == {"firing", "resolved"}
    delivered = list(sent)
    client = redis.Redis.from_url(redis_url)

    # Redis restarted empty under a running worker: its next tick rebuilds the record.
    client.flushall()
    await service.tick()
    await service.tick()
    assert stream_alerts(redis_url) == alerts
    assert sent == delivered

    # Redis and the worker both lost (a fresh service, and a lookback of two weeks that covers
    # every bucket again): the states rebuilt from Kafka say where evaluation stands.
    client.flushall()
    wiped = settings.model_copy(update={"alert_lookback": timedelta(days=14)})
    restarted, metrics = make_service(wiped, pipeline.store, redis_url, sent)
    _with_log(restarted, sent)
    await restarted.tick()
    await restarted.tick()
    assert sent == delivered, "an alert that had fired went out again"
    assert metrics.alerts_suppressed._value.get() == 0  # not even tried: the cursors held
    assert stream_alerts(redis_url) == alerts
    assert client.exists(ALERTS_RESTORED)
    for alert in alerts:
        assert client.exists(alert_sent_key(alert.alert_id, alert.status)), alert
    assert client.hlen(ALERT_STATE) >= len({(a.rule, a.segment) for a in alerts})
    client.close()


async def test_nothing_is_published_into_a_redis_that_lost_the_record(redis_url: str) -> None:
    """Redis lost between the check and the write: the alert waits for the rebuild."""
    # A lookback over the whole stream: the buckets that closed while alerts waited count.
    settings = Settings(redis_url=redis_url, alert_lookback=timedelta(days=14))
    pipeline = Pipeline(settings)
    sent: list[tuple[bytes, bytes]] = []
    service, _metrics = make_service(settings, pipeline.store, redis_url, sent)
    _with_log(service, sent)
    client = redis.Redis.from_url(redis_url)
    await service.tick()  # restored (nothing to restore), so alerts may flow
    assert client.exists(ALERTS_RESTORED)

    # Another worker is in the middle of rebuilding: this one publishes nothing meanwhile.
    client.delete(ALERTS_RESTORED)
    client.set("kpi-alerts-restoring", b"someone else")
    await run_stream(pipeline, spike_records(), service)
    assert sent == []
    assert stream_alerts(redis_url) == []
    client.delete("kpi-alerts-restoring")
    await service.tick()
    await service.tick()
    assert {a.status for a in stream_alerts(redis_url)} == {"firing", "resolved"}
    assert len(sent) == len(stream_alerts(redis_url))
    client.close()
