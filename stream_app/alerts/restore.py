"""Alerts after Redis lost its data: history, once-only markers and states rebuilt from Kafka.

Redis holds everything that makes an alert fire once: the marker of each transition, the
cursor and firing alert per (rule, segment), and the history the API and dashboard show (the
``kpi-alerts`` stream). A Redis restarted empty loses all three, and a worker that evaluated
the same buckets again would fire every alert a second time. ``crm.kpi-alerts`` keeps every
alert that went out, so it is the record to rebuild from.

The key ``kpi-alerts-restored`` says this Redis holds the rebuilt record. Every alert and
every state is written only while it exists (``delivery.PUBLISH_ONCE``, ``SAVE_STATES``): a
Redis that lost it refuses them, and the first worker to notice rebuilds, under a lock, in
one MULTI/EXEC, before anything is published again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from stream_app.customers.timeline import EPOCH
from stream_app.redis_keys import (
    ALERT_STATE,
    ALERTS,
    ALERTS_RESTORE_LOCK,
    ALERTS_RESTORED,
    alert_sent_key,
)

logger = logging.getLogger(__name__)

# Every alert that went to Kafka, as sent (JSON), oldest first per partition.
AlertLog = Callable[[], Awaitable[list[bytes]]]
# Long enough for one worker to read the alert topic (READ_TIMEOUT_S at most) and write it
# back; short, since a worker killed while it holds the lock holds every alert up this long.
LOCK_TTL_S = 15
READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LoggedAlert:
    """What a restore needs of one alert from the topic."""

    payload: bytes
    alert_id: str
    status: str
    rule: str
    segment: str
    severity: str | None
    bucket_end_us: int
    fired_at: str

    @classmethod
    def parse(cls, payload: bytes) -> LoggedAlert | None:
        try:
            data: Any = orjson.loads(payload)
            end = datetime.fromisoformat(data["bucket_end"])
            return cls(
                payload,
                str(data["alert_id"]),
                str(data["status"]),
                str(data["rule"]),
                str(data["segment"]),
                data.get("severity"),
                (end - EPOCH) // timedelta(microseconds=1),
                str(data["fired_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def last_states(
    alerts: list[LoggedAlert], steps_us: Mapping[str, int]
) -> dict[tuple[str, str], tuple[int, str | None, str | None]]:
    """Per (rule, segment), from its newest transition: (cursor, firing alert id, severity).

    The cursor is the bucket of that transition: evaluation resumes after it, so a rule
    firing stays firing (its next breach fires nothing) and the next transition is new.
    Rules no longer configured are left out.
    """
    states: dict[tuple[str, str], tuple[int, str | None, str | None]] = {}
    for alert in alerts:
        step = steps_us.get(alert.rule)
        if step is None:
            continue
        k = alert.bucket_end_us // step
        key = (alert.rule, alert.segment)
        if key in states and states[key][0] > k:
            continue
        firing = alert.status == "firing"
        states[key] = (k, alert.alert_id if firing else None, alert.severity if firing else None)
    return states


async def restore(
    redis: aioredis.Redis,
    log: list[bytes],
    states: Callable[[list[LoggedAlert]], Mapping[str, bytes]],
    *,
    marker_ttl_s: int,
    maxlen: int,
) -> int:
    """Write the alert record of ``log`` back into Redis; returns how many alerts it held.

    An empty stream gets the newest ``maxlen`` alerts, oldest first, each transition once;
    a stream that survived (only the key was lost, or a deployment from before the key)
    is left as it is, since alerts added after its newest would stand out of order. Every
    transition gets its marker; each (rule, segment) without a state gets the one
    ``states`` derives. All in one MULTI/EXEC, with the key that lets alerts flow again.
    """
    parsed = (a for a in map(LoggedAlert.parse, log) if a is not None)
    alerts = sorted(parsed, key=lambda a: a.fired_at)
    async with redis.pipeline(transaction=True) as pipe:
        # A worker whose lock ran out may rebuild at the same time: the first one wins, the
        # other's transaction fails on the watched keys and writes nothing.
        await pipe.watch(ALERTS, ALERTS_RESTORED)
        if await pipe.exists(ALERTS_RESTORED):
            return 0
        empty = not await pipe.xlen(ALERTS)
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        if empty:
            once: dict[tuple[str, str], LoggedAlert] = {}
            for alert in alerts:  # a transition sent twice (see docs/alerts.md) shows once
                once.setdefault((alert.alert_id, alert.status), alert)
            for alert in list(once.values())[-maxlen:]:
                pipe.xadd(ALERTS, {"data": alert.payload}, maxlen=maxlen, approximate=True)
        for alert in alerts:
            pipe.set(alert_sent_key(alert.alert_id, alert.status), b"1", nx=True, ex=marker_ttl_s)
        for field, value in states(alerts).items():
            pipe.hsetnx(ALERT_STATE, field, value)
        pipe.set(ALERTS_RESTORED, b"1")
        try:
            await pipe.execute()
        except WatchError:
            return 0
    return len(alerts)


async def ensure_restored(
    redis: aioredis.Redis,
    alert_log: AlertLog | None,
    states: Callable[[list[LoggedAlert]], Mapping[str, bytes]],
    *,
    token: str,
    marker_ttl_s: int,
    maxlen: int,
) -> bool | None:
    """Rebuild the alert record if this Redis lacks it.

    True: it was there. False: it was missing and is rebuilt now (by this worker). None:
    missing, and another worker is rebuilding it: publish nothing yet.
    """
    if await redis.exists(ALERTS_RESTORED):
        return True
    if not await redis.set(ALERTS_RESTORE_LOCK, token.encode(), nx=True, ex=LOCK_TTL_S):
        return None
    try:
        log = await alert_log() if alert_log is not None else []
        count = await restore(redis, log, states, marker_ttl_s=marker_ttl_s, maxlen=maxlen)
    finally:
        await redis.delete(ALERTS_RESTORE_LOCK)
    if count:
        logger.warning(
            "Redis had lost the alert record: %d alerts rebuilt from Kafka (history, once-only "
            "markers, states); none fires again",
            count,
        )
    return False
