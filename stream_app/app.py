"""The Faust application factory: ``create_app(settings)``; nothing runs at import time."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any

import faust
import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from mode import Service

from stream_app import web
from stream_app.alerts.delivery import WebhookSender
from stream_app.alerts.restore import READ_TIMEOUT_S
from stream_app.alerts.rules import ThresholdRule, rules_from_settings
from stream_app.alerts.service import AlertService
from stream_app.clock import Clock, utc_now
from stream_app.context import AppContext
from stream_app.customers.engine import CustomerEngine
from stream_app.kafka import (
    DEAD_LETTER_MAX_BYTES,
    BrokerSentinel,
    Sentinel,
    changelog_topic,
    partials_topic,
    read_topic,
    ssl_context,
)
from stream_app.lifecycle.atrisk import AtRiskBoard
from stream_app.metrics import Metrics
from stream_app.publishing.publisher import Publisher
from stream_app.segments import agent as segment_agent
from stream_app.settings import Settings, duration_ms
from stream_app.transport import KpiApp

# The publisher looks for due snapshots this often; each (window, segment) is still
# published at most once per KPI_PUBLISH_INTERVAL. A due snapshot waits up to one tick.
PUBLISH_TICK_S = 0.05
# Alerts look for closed buckets this often (they close at most every step, usually hourly).
ALERT_TICK_S = 1.0
# Each worker looks this often whether the broker still holds its sentinel record.
SENTINEL_CHECK_S = 1.0

# Called once, with the reason, when the worker must start again (the broker lost its data,
# a checkpoint failed) or must stop for good (state in a format it cannot read).
Restart = Callable[[str], None]

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    metrics: Metrics | None = None,
    rules: Sequence[ThresholdRule] | None = None,
    restart: Restart | None = None,
    refuse: Restart | None = None,
) -> faust.App:
    """Build the worker's Faust app: customer stage, segment stage, publisher, alerts, web.

    ``rules`` default to those of ``KPI_ALERT_RULES_FILE``; a bad file raises ``RulesError``.
    ``restart`` is called, with the reason, when the worker must start again: the broker
    lost its data, or the customer stage could not write its checkpoint. Without it the
    worker only halts its customer stage. ``refuse`` is called, with the reason, when the
    worker must stop for good: its state was written in a format it cannot read.
    """
    ctx = AppContext(settings=settings, metrics=metrics or Metrics(), clock=clock, refuse=refuse)
    app = KpiApp(
        settings.app_id,
        fetch_max_wait_ms=duration_ms(settings.fetch_max_wait),
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_credentials=_credentials(settings),
        store=settings.store,
        # In memory, a worker's table offsets are only what it read itself: Tansu can report
        # an end offset behind them right after a SIGKILL, which must not stop a restarted
        # peer. With RocksDB the check guards against a recreated changelog, so it stays.
        recovery_consistency_check=not str(settings.store).startswith("memory"),
        datadir=str(settings.data_dir / f"{settings.app_id}-data"),
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        broker_session_timeout=settings.broker_session_timeout.total_seconds(),
        broker_rebalance_timeout=settings.broker_rebalance_timeout.total_seconds(),
        broker_heartbeat_interval=settings.broker_heartbeat_interval.total_seconds(),
        consumer_group_instance_id=settings.group_instance_id or None,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=DEAD_LETTER_MAX_BYTES,
        # Tables (JSON); every topic of ours names its own (raw) serializers.
        key_serializer="json",
        value_serializer="json",
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
    )
    app.kpi_context = ctx  # type: ignore[attr-defined]

    watch = BrokerWatch(ctx, restart)
    ctx.engine = CustomerEngine(
        app, ctx, broker_intact=watch.intact, broker_held=watch.held, on_write_failed=restart
    )
    app.early_services.append(ctx.engine)
    _register_broker_watch(app, watch)
    segment_agent.register(app, ctx, ctx.store)
    owned = _owned_partitions(app, settings)
    _register_publisher(app, ctx, owned)
    _register_alerts(app, ctx, owned, rules_from_settings(settings) if rules is None else rules)
    web.register(app, ctx)
    return app


def _owned_partitions(app: faust.App, settings: Settings) -> Callable[[], set[int]]:
    """The segment-stage partitions this worker owns: what it publishes and alerts on."""
    partials = partials_topic(settings)

    def owned() -> set[int]:
        consumer = app.consumer
        return {tp.partition for tp in consumer.assignment() if tp.topic == partials}

    return owned


def _redis_client(settings: Settings) -> aioredis.Redis:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return aioredis.Redis.from_url(
        settings.redis_url,
        password=password,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )


def _register_publisher(app: faust.App, ctx: AppContext, owned: Callable[[], set[int]]) -> None:
    settings = ctx.settings
    redis = _redis_client(settings)
    updates = app.topic(
        settings.kpi_updates_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    cohort_topic = app.topic(
        settings.kpi_cohorts_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    partials = partials_topic(settings)

    async def kafka_send(key: bytes, value: bytes) -> None:
        await updates.send(key=key, value=value)

    def at_risk() -> list[AtRiskBoard]:
        engine = ctx.engine
        if engine is None:
            return []
        states = engine.states.values()
        return [s.lifecycle.board for s in states if s.lifecycle and s.lifecycle.board]

    async def cohort_send(key: bytes, value: bytes) -> None:
        await cohort_topic.send(key=key, value=value)

    publisher = Publisher(
        settings,
        ctx.store,
        redis,
        kafka_send,
        owned,
        ctx.metrics,
        ctx.clock,
        cohort_send=cohort_send,
        at_risk=at_risk,
    )
    ctx.publisher = publisher

    @app.timer(interval=PUBLISH_TICK_S)  # type: ignore[untyped-decorator]
    async def publish() -> None:
        await publisher.tick()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        ctx.store.drop_partitions(tp.partition for tp in revoked if tp.topic == partials)


def _register_alerts(
    app: faust.App,
    ctx: AppContext,
    owned: Callable[[], set[int]],
    rules: Sequence[ThresholdRule],
) -> None:
    """Churn spikes and threshold rules, evaluated next to the publisher (docs/alerts.md)."""
    settings = ctx.settings
    if not settings.churn_enabled and not rules:
        return
    topic = app.topic(
        settings.kpi_alerts_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def kafka_send(key: bytes, value: bytes) -> None:
        await topic.send(key=key, value=value)

    webhooks = None
    if settings.alert_webhooks:
        webhooks = WebhookSender(
            settings.alert_webhooks,
            timeout_s=settings.alert_webhook_timeout.total_seconds(),
            retries=settings.alert_webhook_retries,
            backoff_s=settings.alert_webhook_backoff.total_seconds(),
            queue_size=settings.alert_webhook_queue,
            metrics=ctx.metrics,
        )
    alerts = AlertService(
        settings,
        ctx.store,
        _redis_client(settings),
        kafka_send,
        owned,
        ctx.metrics,
        ctx.clock,
        rules=rules,
        webhooks=webhooks,
        alert_log=functools.partial(
            read_topic, settings, settings.kpi_alerts_topic, timeout_s=READ_TIMEOUT_S
        ),
    )
    ctx.alerts = alerts

    class AlertRuntime(Service):
        """Starts and stops the webhook tasks with the worker, and ticks the evaluation."""

        async def on_start(self) -> None:
            alerts.start()

        async def on_stop(self) -> None:
            await alerts.stop()

        @Service.timer(ALERT_TICK_S)
        async def _evaluate(self) -> None:
            try:
                await alerts.tick()
            except Exception:  # alerting must never take the worker down
                logger.exception("alert evaluation failed; retrying at the next tick")

    app.service(AlertRuntime)


class BrokerWatch:
    """Notices a broker that lost its data, says what that means, and has the worker restart.

    At start the worker writes a sentinel record (``BrokerSentinel``) and looks for it every
    ``SENTINEL_CHECK_S``; the customer stage also asks before it writes after a rebalance
    or after an input partition came back shorter. Once the record is gone, everything the
    worker holds (customer state, segment table, Faust's read offsets) refers to logs that
    no longer exist, and nothing of it may be written to the new ones: the worker restarts
    and builds its state from what the broker holds now.
    """

    def __init__(self, ctx: AppContext, on_lost: Restart | None) -> None:
        self.ctx = ctx
        token = f"{ctx.settings.app_id}/{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(6)}"
        self.sentinel = BrokerSentinel(ctx.settings, token)
        self.on_lost = on_lost
        self.lost = False
        self._checking = asyncio.Lock()

    async def close(self) -> None:
        await self.sentinel.close()

    async def tick(self) -> None:
        """Write the sentinel once the broker takes it, then look for it."""
        if self.lost:
            return
        if self.sentinel.offset is None:
            try:
                offset = await self.sentinel.plant()
            except KafkaError as exc:
                logger.warning("could not write the broker sentinel yet (%s)", exc)
                return
            logger.info(
                "broker sentinel written to %s[%d]@%d",
                self.sentinel.tp.topic,
                self.sentinel.tp.partition,
                offset,
            )
            return
        await self.intact()

    async def intact(self) -> bool:
        """False once the broker is known to have lost its data; True while unsure."""
        async with self._checking:
            if self.lost:
                return False
            # Twice, so that one odd answer (a broker still starting) is not taken for a loss.
            if await self.sentinel.check() is not Sentinel.GONE:
                return True
            await asyncio.sleep(0.2)
            if await self.sentinel.check() is not Sentinel.GONE:
                return True
            self._declare_lost()
            return False

    async def held(self) -> bool:
        """True only when the broker answered and still holds the sentinel.

        For writes that can wait, such as the customer stage's periodic resync: sent while
        the broker restarts (when ``intact`` is unsure, so True), the producer retries them
        into the restarted, empty broker, whose next worker then counted the old state's
        segments again (a campaign without new events got a fresh, empty snapshot).
        """
        async with self._checking:
            return not self.lost and await self.sentinel.check() is Sentinel.HELD

    def _declare_lost(self) -> None:
        self.lost = True
        settings = self.ctx.settings
        reason = (
            f"the Kafka broker at {settings.kafka_bootstrap_servers} lost its data: the "
            f"sentinel record this worker wrote to {self.sentinel.tp.topic} at offset "
            f"{self.sentinel.offset} is gone (the broker restarted with an empty store, as "
            f"Tansu does, or the topics were deleted). The input topics, the customer "
            f"changelog {changelog_topic(settings)}, the segment table's changelog and the "
            f"committed offsets went with it, and so did every event counted so far"
        )
        logger.error("%s", reason)
        if self.ctx.engine is not None:
            self.ctx.engine.halt()
        if self.on_lost is not None:
            self.on_lost(reason)
        else:
            logger.error("the customer stage has stopped; restart the worker")


def _register_broker_watch(app: faust.App, watch: BrokerWatch) -> None:
    class BrokerWatchRuntime(Service):
        """Ticks the watch with the worker and closes its client at the end."""

        async def on_stop(self) -> None:
            await watch.close()

        @Service.timer(SENTINEL_CHECK_S)
        async def _tick(self) -> None:
            await watch.tick()

    app.service(BrokerWatchRuntime)


def _credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None
