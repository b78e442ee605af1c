"""The HTTP API and the page, as aiohttp handlers: read-only, from Redis (docs/api.md).

``install(web_app, api)`` adds the routes, the access middleware and the response headers to
any ``aiohttp.web.Application``: the worker's Faust web server and the standalone
``kpi dashboard`` use the same code. Handlers validate every query parameter first (400 with
a message), answer 404 for a well-formed segment that has no data, and 503 when Redis cannot
be read; an unexpected error is logged and answered with a 500 that carries no detail.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from redis.exceptions import RedisError

from stream_app.benchmarks.compare import positions, strengths_and_weaknesses
from stream_app.benchmarks.profile import profile_from_settings
from stream_app.settings import Settings

from . import kpimeta, openapi, params
from .atrisk import AT_RISK_LIMIT, read_at_risk
from .health import HealthSource
from .live import LiveHub
from .params import ALERTS_LIMIT, API, HISTORY_LIMIT, BadParameterError
from .reader import KpiReader
from .security import PUBLIC_PATHS, Access, add_headers, misdirected, preflight, unauthorized

logger = logging.getLogger(__name__)

PING_S: Final = 5.0
HELLO_WAIT_S: Final = 3.0
RETRY_MS: Final = 3000
STALE_AFTER_S: Final = 60
# What generate_latest writes: the Prometheus text format 0.0.4.
METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_STATIC: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
    "vendor/uplot/uPlot.iife.min.js": "text/javascript",
    "vendor/uplot/uPlot.min.css": "text/css",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """The page's files, read once from the package (an allow-list: nothing else is served)."""
    root = resources.files(__package__).joinpath("static")
    assets = {}
    for name, content_type in _STATIC.items():
        body = root.joinpath(name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[name] = Asset(body, content_type, etag)
    return assets


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    response = _json({"error": message}, status)
    if headers:
        response.headers.update(headers)
    return response


def _param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadParameterError(f"{name}: given {len(values)} times; give it once")
    return values[0] if values else None


def sse_frame(event: str, data: bytes) -> bytes:
    """One server-sent event; ``data`` is one line of JSON (orjson never writes a newline)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


@dataclass
class DashboardApi:
    """The state the handlers share; one per web server."""

    settings: Settings
    reader: KpiReader
    hub: LiveHub
    health: HealthSource
    registry: CollectorRegistry
    access: Access
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    assets: dict[str, Asset] = field(default_factory=load_assets)

    def __post_init__(self) -> None:
        self.windows = tuple(w.name for w in self.settings.windows)
        self.streams = 0  # live-update streams open (KPI_WEB_MAX_STREAMS at most)
        self.openapi = orjson.dumps(openapi.build(self.settings))
        # Checked at start by the worker and `kpi dashboard` (a bad profile stops them).
        self.profile = profile_from_settings(self.settings)
        self.stream_clients = Gauge(
            "kpi_dashboard_stream_clients",
            "Live-update (server-sent events) connections open on this server.",
            registry=self.registry,
        )
        self.stream_clients.set_function(lambda: self.hub.clients)

    # -- page ------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return self._asset(request, "index.html")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        return self._asset(request, request.match_info["name"])

    def _asset(self, request: web.Request, name: str) -> web.StreamResponse:
        asset = self.assets.get(name)
        if asset is None:
            return error_response(404, "no such asset")
        headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=asset.body, content_type=asset.content_type, headers=headers)

    # -- API -------------------------------------------------------------------------------

    async def meta(self, request: web.Request) -> web.StreamResponse:
        return _json(
            {
                "windows": [
                    {
                        "name": w.name,
                        "size_s": int(w.size.total_seconds()),
                        "step_s": int(w.step.total_seconds()),
                    }
                    for w in self.settings.windows
                ],
                "kpis": kpimeta.catalog(),
                "headline": kpimeta.HEADLINE,
                "currency": self.settings.reporting_currency,
                "stale_after_s": STALE_AFTER_S,
                "history_limit": {"default": HISTORY_LIMIT[0], "max": HISTORY_LIMIT[2]},
            }
        )

    async def segments(self, request: web.Request) -> web.StreamResponse:
        segments = await self.reader.segments()
        return _json(
            {
                "segments": segments,
                "regions": [s for s in segments if s.startswith("region:")],
                "campaigns": [s for s in segments if s.startswith("campaign:")],
            }
        )

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        window = params.window(_param(request, "window"), self.windows)
        segment = params.segment(_param(request, "segment"))
        snapshot = await self.reader.snapshot(window, segment)
        if snapshot is None:
            return error_response(404, f"no snapshot of window {window} for segment {segment}")
        return _json(snapshot)

    async def snapshots(self, request: web.Request) -> web.StreamResponse:
        segment = params.segment(_param(request, "segment"))
        windows = params.window_list(_param(request, "windows"), self.windows)
        found = await self.reader.snapshots(segment, windows)
        if not any(entry["current"] for entry in found.values()):
            return error_response(404, f"no snapshot for segment {segment}")
        profile = self.profile
        for window, entry in found.items():
            current = entry["current"]
            entry["positions"] = positions(current, window, profile) if current and profile else {}
        return _json({"segment": segment, "windows": found})

    async def benchmarks(self, request: web.Request) -> web.StreamResponse:
        if self.profile is None:
            return error_response(404, "no benchmark profile (KPI_BENCHMARK_PROFILE is none)")
        return _json(self.profile.as_json())

    async def strengths_weaknesses(self, request: web.Request) -> web.StreamResponse:
        window = params.window(_param(request, "window"), self.windows)
        segment = params.segment(_param(request, "segment"), default="all")
        if self.profile is None:
            return error_response(404, "no benchmark profile (KPI_BENCHMARK_PROFILE is none)")
        snapshot = await self.reader.snapshot(window, segment)
        if snapshot is None:
            return error_response(404, f"no snapshot of window {window} for segment {segment}")
        return _json(
            {
                "window": window,
                "segment": segment,
                "profile": self.profile.name,
                "window_end": snapshot.get("window_end"),
                **strengths_and_weaknesses(snapshot, window, self.profile),
            }
        )

    async def history(self, request: web.Request) -> web.StreamResponse:
        window = params.window(_param(request, "window"), self.windows)
        segment = params.segment(_param(request, "segment"))
        default, low, high = HISTORY_LIMIT
        limit = params.integer(
            _param(request, "limit"), "limit", default=default, low=low, high=high
        )
        since = params.timestamp(_param(request, "since"), "since")
        until = params.timestamp(_param(request, "until"), "until")
        if since is not None and until is not None and since > until:
            raise BadParameterError("since: must not be after until")
        fields = params.kpi_fields(_param(request, "fields"))
        points = await self.reader.history(
            window, segment, since=since, until=until, limit=limit, fields=fields
        )
        if not points and not await self.reader.has_data(segment):
            return error_response(404, f"no data for segment {segment}")
        return _json({"window": window, "segment": segment, "count": len(points), "points": points})

    async def alerts(self, request: web.Request) -> web.StreamResponse:
        default, low, high = ALERTS_LIMIT
        limit = params.integer(
            _param(request, "limit"), "limit", default=default, low=low, high=high
        )
        alerts = await self.reader.alerts(limit)
        return _json({"count": len(alerts), "alerts": alerts})

    async def at_risk(self, request: web.Request) -> web.StreamResponse:
        segment = params.segment(_param(request, "segment"), default="all")
        default, low, high = AT_RISK_LIMIT
        limit = params.integer(
            _param(request, "limit"), "limit", default=default, low=low, high=high
        )
        found = await read_at_risk(self.reader.redis, segment, limit, self.reader.malformed)
        return _json(found.model_dump())

    async def openapi_document(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.openapi, content_type="application/json")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        segment = params.segment(_param(request, "segment"), default="all")
        # Counted before the first await, so that concurrent requests cannot pass the cap.
        if self.streams >= self.settings.web_max_streams:
            return error_response(
                503, "too many live-update streams; try again shortly", {"Retry-After": "5"}
            )
        self.streams += 1
        try:
            return await self._stream(request, segment)
        finally:
            self.streams -= 1

    async def _stream(self, request: web.Request, segment: str) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # no buffering in a reverse proxy
            }
        )
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        subscriber = self.hub.subscribe(segment)
        try:
            # "hello" once subscribed: a client that then loads the current state misses
            # nothing published after it (unless Redis is down: then it says so).
            await self.hub.wait_subscribed(HELLO_WAIT_S)
            hello = {"segment": segment, "server_time": _now_iso(), **self.hub.status()}
            await response.write(
                f"retry: {RETRY_MS}\n\n".encode() + sse_frame("hello", orjson.dumps(hello))
            )
            while True:
                try:
                    item = await asyncio.wait_for(subscriber.queue.get(), PING_S)
                except TimeoutError:
                    ping = {"server_time": _now_iso(), **self.hub.status()}
                    await response.write(sse_frame("ping", orjson.dumps(ping)))
                    continue
                if item is None:
                    break
                await response.write(sse_frame(*item))
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        finally:
            self.hub.unsubscribe(subscriber)
        return response

    # -- observability ---------------------------------------------------------------------

    async def health_handler(self, request: web.Request) -> web.StreamResponse:
        detailed = self.access.authorized(request)
        healthy, body = await self.health(detailed)
        return _json(body, 200 if healthy else 503)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        # On the event loop: collectors read the worker's live state (consumer lag).
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def close(self) -> None:
        await self.hub.close()
        for closer in self.on_close:
            try:
                await closer()
            except Exception:  # closing must go on for the others
                logger.debug("closing a dashboard resource failed", exc_info=True)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes(api: DashboardApi) -> tuple[tuple[str, Handler], ...]:
    """Every route (all GET, HEAD too). The OpenAPI document and docs/api.md list the same."""
    return (
        ("/", api.page),
        ("/assets/{name:.+}", api.asset),
        (f"{API}/meta", api.meta),
        (f"{API}/segments", api.segments),
        (f"{API}/snapshot", api.snapshot),
        (f"{API}/snapshots", api.snapshots),
        (f"{API}/history", api.history),
        (f"{API}/alerts", api.alerts),
        (f"{API}/at-risk", api.at_risk),
        (f"{API}/benchmarks", api.benchmarks),
        (f"{API}/benchmarks/strengths-weaknesses", api.strengths_weaknesses),
        (f"{API}/stream", api.stream),
        (f"{API}/openapi.json", api.openapi_document),
        ("/health", api.health_handler),
        ("/metrics", api.metrics),
    )


def install(web_app: web.Application, api: DashboardApi) -> None:
    """Add the page, the API, ``/health`` and ``/metrics`` to an aiohttp application."""
    for path, handler in routes(api):
        web_app.router.add_get(path, handler)
    web_app.middlewares.append(_middleware(api))

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        add_headers(request, response, api.access)

    async def on_shutdown(_app: web.Application) -> None:
        await api.close()

    web_app.on_response_prepare.append(on_prepare)
    web_app.on_shutdown.append(on_shutdown)


def _middleware(api: DashboardApi) -> Any:
    access = api.access

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not access.host_allowed(request):
            return misdirected()
        if request.method == "OPTIONS" and access.cors_origins:
            return preflight(request, access)
        if request.path not in PUBLIC_PATHS and not access.authorized(request):
            return unauthorized()
        started = time.perf_counter()
        try:
            return await handler(request)
        except BadParameterError as exc:
            return error_response(400, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
            return error_response(exc.status, exc.reason.lower(), headers)
        except (RedisError, OSError) as exc:
            logger.warning(
                "%s %s: Redis unavailable (%s)",
                request.method,
                request.path,
                exc.__class__.__name__,
            )
            return error_response(503, "Redis unavailable; try again shortly", {"Retry-After": "2"})
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "%s %s failed after %.3fs",
                request.method,
                request.path,
                time.perf_counter() - started,
            )
            return error_response(500, "internal error")

    return middleware
