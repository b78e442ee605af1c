"""The Faust application factory: ``create_app(settings)``; nothing runs at import time."""

from __future__ import annotations

import faust

from stream_app import intake, web
from stream_app.clock import Clock, utc_now
from stream_app.context import AppContext
from stream_app.intake.dead_letters import DEAD_LETTER_MAX_BYTES
from stream_app.kafka import ssl_context
from stream_app.metrics import Metrics
from stream_app.settings import Settings


def create_app(
    settings: Settings, *, clock: Clock = utc_now, metrics: Metrics | None = None
) -> faust.App:
    """Build the worker's Faust app with its topics, agents and web pages."""
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
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
    )
    app.kpi_context = ctx  # type: ignore[attr-defined]
    intake.agents.register(app, ctx)
    web.register(app, ctx)
    return app


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
