"""The worker's HTTP server: the dashboard page, the read-only API, ``/health`` and ``/metrics``.

The routes are the dashboard's (``stream_app/dashboard``), mounted on Faust's aiohttp
application; Faust's own debugging views are not served (``KpiApp``). ``/health`` adds the
worker's checks (broker, publisher, consumer lag) to Redis; ``/metrics`` is the worker's
registry, with ``kpi_consumer_lag`` read from the customer stage at scrape time.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from stream_app.context import AppContext
from stream_app.dashboard.api import install
from stream_app.dashboard.health import KafkaProbe, WorkerHealth, consumer_lag
from stream_app.dashboard.httpserver import ServerRunner
from stream_app.dashboard.reader import KpiReader
from stream_app.dashboard.security import exposure_warning
from stream_app.dashboard.server import build_api, live_hub, redis_client
from stream_app.metrics import MalformedReads

logger = logging.getLogger(__name__)


def register(app: faust.App, ctx: AppContext) -> None:
    """Mount the dashboard, the API and the observability routes on the worker's web server."""
    settings = ctx.settings
    malformed = MalformedReads(ctx.metrics.registry)
    windows = [w.name for w in settings.windows]
    reader = KpiReader(redis_client(settings), windows, malformed=malformed)
    hub = live_hub(settings, malformed=malformed)
    kafka = KafkaProbe(settings)
    health = WorkerHealth(app, ctx, reader, kafka, hub=hub)
    ctx.metrics.set_lag_source(lambda: consumer_lag(ctx.engine))
    api = build_api(
        settings,
        host=settings.web_host,
        reader=reader,
        hub=hub,
        health=health,
        registry=ctx.metrics.registry,
    )
    api.on_close.append(kafka.close)
    web_server: Any = app.web  # transport._Web: Faust's aiohttp server
    install(web_server.web_app, api)
    web_server.use_runner(ServerRunner(web_server.web_app, settings))
    warning = exposure_warning(settings.web_host, api.access)
    if warning:
        logger.warning("%s", warning)
