"""The worker's read-only HTTP endpoints: ``/health`` and ``/metrics``."""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from stream_app.context import AppContext
from stream_app.kafka import partials_topic
from stream_app.metrics import CONTENT_TYPE_LATEST


def register(app: faust.App, ctx: AppContext) -> None:
    """Add the observability pages to the worker's Faust web server."""
    partials = partials_topic(ctx.settings)

    @app.page("/health", name="health")
    async def health(self: View, request: Request) -> Response:
        consumer = app.consumer if app.consumer is not None else None
        segment_partitions = sorted(
            tp.partition
            for tp in (consumer.assignment() if consumer else ())
            if tp.topic == partials
        )
        engine = ctx.engine
        publisher = ctx.publisher
        body = {
            "status": "ok",
            "app_id": ctx.settings.app_id,
            "customer_partitions": sorted(engine.states) if engine is not None else [],
            "segment_partitions": segment_partitions,
            "last_publish_at": (
                publisher.last_publish_at.isoformat()
                if publisher is not None and publisher.last_publish_at
                else None
            ),
            "dead_letters": ctx.metrics.dead_letter_counts(),
            "alerts": _alerts_health(ctx),
        }
        return self.json(body)

    @app.page("/metrics", name="metrics")
    async def metrics(self: View, request: Request) -> Response:
        return self.bytes(ctx.metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


def _alerts_health(ctx: AppContext) -> dict[str, object] | None:
    """What the alert service is doing on this worker (None when alerting is off)."""
    alerts = ctx.alerts
    if alerts is None:
        return None
    webhooks = alerts.webhooks
    return {
        "watchers": [watcher.name for watcher in alerts.watchers],
        "firing": [f"{rule} {segment}" for rule, segment in alerts.firing],
        "last_evaluation_at": alerts.last_tick_at.isoformat() if alerts.last_tick_at else None,
        "webhook_queue": webhooks.pending() if webhooks is not None else 0,
    }
