"""The Faust application factory: ``create_app(settings)``; nothing runs at import time."""

from __future__ import annotations

from typing import Any

import faust
import redis.asyncio as aioredis

from stream_app import web
from stream_app.clock import Clock, utc_now
from stream_app.context import AppContext
from stream_app.customers.engine import CustomerEngine
from stream_app.kafka import DEAD_LETTER_MAX_BYTES, partials_topic, ssl_context
from stream_app.metrics import Metrics
from stream_app.publishing.publisher import Publisher
from stream_app.segments import agent as segment_agent
from stream_app.settings import Settings

# The publisher looks for due snapshots this often; each (window, segment) is still
# published at most once per KPI_PUBLISH_INTERVAL.
PUBLISH_TICK_S = 0.2


def create_app(
    settings: Settings, *, clock: Clock = utc_now, metrics: Metrics | None = None
) -> faust.App:
    """Build the worker's Faust app: customer stage, segment stage, publisher and web pages."""
    ctx = AppContext(settings=settings, metrics=metrics or Metrics(), clock=clock)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_credentials=_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir / f"{settings.app_id}-data"),
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        broker_session_timeout=settings.broker_session_timeout.total_seconds(),
        broker_rebalance_timeout=settings.broker_rebalance_timeout.total_seconds(),
        broker_heartbeat_interval=settings.broker_heartbeat_interval.total_seconds(),
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

    app.service(_bound_engine(app, ctx))
    segment_agent.register(app, ctx, ctx.store)
    _register_publisher(app, ctx)
    web.register(app, ctx)
    return app


def _bound_engine(app: faust.App, ctx: AppContext) -> type[CustomerEngine]:
    class BoundCustomerEngine(CustomerEngine):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(app, ctx, **kwargs)
            ctx.engine = self

    return BoundCustomerEngine


def _register_publisher(app: faust.App, ctx: AppContext) -> None:
    settings = ctx.settings
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    redis = aioredis.Redis.from_url(
        settings.redis_url,
        password=password,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )
    updates = app.topic(
        settings.kpi_updates_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    partials = partials_topic(settings)

    async def kafka_send(key: bytes, value: bytes) -> None:
        await updates.send(key=key, value=value)

    def owned() -> set[int]:
        consumer = app.consumer
        return {tp.partition for tp in consumer.assignment() if tp.topic == partials}

    publisher = Publisher(settings, ctx.store, redis, kafka_send, owned, ctx.metrics, ctx.clock)
    ctx.publisher = publisher

    @app.timer(interval=PUBLISH_TICK_S)  # type: ignore[untyped-decorator]
    async def publish() -> None:
        await publisher.tick()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        ctx.store.drop_partitions(tp.partition for tp in revoked if tp.topic == partials)


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
