"""``kpi dashboard``: the page and the API on their own, read-only from Redis.

The worker serves the same routes on its Faust web server (``stream_app/web.py``); this
command is for a dashboard apart from the workers (the compose ``dashboard`` service), and
needs only Redis. Its ``/health`` checks Redis; its ``/metrics`` has its own counters.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Final

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from stream_app.benchmarks.profile import ProfileError, profile_from_settings
from stream_app.cliutil import with_signals
from stream_app.metrics import MalformedReads
from stream_app.redaction import redacted, redis_url_option
from stream_app.settings import Settings

from .api import DashboardApi, install
from .health import DashboardHealth, HealthSource
from .httpserver import ServerRunner
from .live import LiveHub
from .reader import KpiReader
from .security import Access, exposure_warning, served_hosts

logger = logging.getLogger("kpi.dashboard")

EXIT_OK: Final = 0
EXIT_ERROR: Final = 2

_DESCRIPTION = """\
Serve the live KPI dashboard page and the read-only HTTP API (docs/api.md) from Redis,
without a worker: current snapshots, history charts, segments, alerts, and live updates
over server-sent events. Binds to KPI_WEB_HOST:KPI_WEB_PORT (127.0.0.1:6066) unless --host
and --port say otherwise; a worker serves the same page on its own port, so give this one
another port when both run on one machine. KPI_API_TOKEN protects the page and the API;
KPI_CORS_ORIGINS lets other origins call the API (off by default).
"""


def redis_client(settings: Settings, url: str | None = None) -> aioredis.Redis:
    """A client for reading KPIs: short timeouts, so a Redis outage is a quick 503."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return aioredis.Redis.from_url(
        url or settings.redis_url,
        password=password,
        socket_timeout=3.0,
        socket_connect_timeout=2.0,
        health_check_interval=15,
    )


def live_hub(
    settings: Settings, redis_url: str | None = None, *, malformed: MalformedReads | None = None
) -> LiveHub:
    """The live-update hub; it opens its own Redis connection while clients listen."""
    return LiveHub(lambda: redis_client(settings, redis_url), malformed=malformed)


def build_api(
    settings: Settings,
    *,
    host: str,
    reader: KpiReader,
    hub: LiveHub,
    health: HealthSource,
    registry: CollectorRegistry,
) -> DashboardApi:
    """The handlers' shared state; closing it closes the reader's Redis client.

    ``host`` is the address the server listens on: a Host it serves without a token.
    """
    access = Access(
        settings.api_token, settings.cors_origins, served_hosts(settings.web_allowed_hosts, host)
    )
    api = DashboardApi(
        settings=settings,
        reader=reader,
        hub=hub,
        health=health,
        registry=registry,
        access=access,
    )
    api.on_close.append(reader.redis.aclose)
    return api


def standalone_app(
    settings: Settings,
    *,
    host: str | None = None,
    redis_url: str | None = None,
    segments_ttl_s: float = 5.0,
) -> web.Application:
    """The aiohttp application of ``kpi dashboard``, listening on ``host`` (KPI_WEB_HOST)."""
    windows = [w.name for w in settings.windows]
    registry = CollectorRegistry(auto_describe=True)
    malformed = MalformedReads(registry)
    reader = KpiReader(
        redis_client(settings, redis_url),
        windows,
        segments_ttl_s=segments_ttl_s,
        malformed=malformed,
    )
    hub = live_hub(settings, redis_url, malformed=malformed)
    health = DashboardHealth(reader, hub)
    api = build_api(
        settings,
        host=settings.web_host if host is None else host,
        reader=reader,
        hub=hub,
        health=health,
        registry=registry,
    )
    app = web.Application()
    install(app, api)
    return app


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a port: 1 to 65535")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dashboard`` to the ``kpi`` command's subparsers."""
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the live KPI dashboard and the read-only HTTP API (from Redis)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: KPI_WEB_HOST, 127.0.0.1 unless configured)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port to listen on (default: KPI_WEB_PORT, 6066 unless configured)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        type=redis_url_option,
        metavar="URL",
        help="read this Redis instead of KPI_REDIS_URL",
    )
    parser.set_defaults(func=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; exit 2 when the address cannot be bound."""
    host = args.host if args.host is not None else settings.web_host
    port = args.port if args.port is not None else settings.web_port
    try:  # a bad benchmark profile stops the start, as it does the worker's
        profile_from_settings(settings)
    except ProfileError as exc:
        logger.error("dashboard: %s", exc)
        return EXIT_ERROR
    try:
        return asyncio.run(_serve(settings, host, port, args.redis_url))
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve(settings: Settings, host: str, port: int, redis_url: str | None) -> int:
    async def serve(stop: asyncio.Event) -> int:
        return await _serve_until(stop, settings, host, port, redis_url)

    return await with_signals(serve)


async def _serve_until(
    stop: asyncio.Event, settings: Settings, host: str, port: int, redis_url: str | None
) -> int:
    app = standalone_app(settings, host=host, redis_url=redis_url)
    runner = ServerRunner(app, settings)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        logger.error("dashboard: cannot listen on %s:%d (%s)", host, port, exc.strerror or exc)
        await runner.cleanup()
        return EXIT_ERROR
    warning = exposure_warning(host, Access(settings.api_token))
    if warning:
        logger.warning("%s", warning)
    shown = f"[{host}]" if ":" in host else host
    logger.info(
        "dashboard on http://%s:%d/ (API under /api/v1, %s), reading Redis at %s",
        shown,
        port,
        "token required" if settings.api_token else "no token",
        redacted(redis_url or settings.redis_url),
    )
    try:
        await stop.wait()
    finally:
        logger.info("dashboard stopping")
        await runner.cleanup()
    return EXIT_OK
