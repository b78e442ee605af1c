"""The worker's read-only HTTP endpoints: ``/health`` and ``/metrics``."""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from stream_app.context import AppContext
from stream_app.metrics import CONTENT_TYPE_LATEST


def register(app: faust.App, ctx: AppContext) -> None:
    """Add the observability pages to the worker's Faust web server."""

    @app.page("/health", name="health")
    async def health(self: View, request: Request) -> Response:
        assignment = app.consumer.assignment() if app.consumer is not None else set()
        body = {
            "status": "ok",
            "app_id": ctx.settings.app_id,
            "assigned_partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assignment),
            "dead_letters": ctx.metrics.dead_letter_counts(),
        }
        return self.json(body)

    @app.page("/metrics", name="metrics")
    async def metrics(self: View, request: Request) -> Response:
        return self.bytes(ctx.metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
