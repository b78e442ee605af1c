"""aiohttp's server under the dashboard's routes, with limits and quiet error answers.

Both HTTP servers (the worker's and ``kpi dashboard``'s) run through ``ServerRunner``:

- **Header timeout**: a connection must deliver a complete request head within
  ``KPI_WEB_HEADER_TIMEOUT`` of its start or of its previous response, else it is closed.
  This is aiohttp's keep-alive timer: it runs while the server waits for a request head
  and is not pushed back by bytes trickling in, so slow headers cannot hold a connection.
- **Connection cap**: beyond ``KPI_WEB_MAX_CONNECTIONS`` open connections, a new one is
  answered 503 (``Retry-After``) for everything but ``/health``, so a full server still
  tells its load balancer how it is. Live-update streams have their own, lower cap
  (``KPI_WEB_MAX_STREAMS``, in the stream handler).
- **aiohttp's own errors** (a request line over 8190 bytes, malformed headers): a short
  JSON error with the app's security headers instead of a text echo of the request, and
  one log line a minute at most instead of an ERROR traceback per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from stream_app.settings import Settings

from .api import error_response
from .security import PUBLIC_PATHS, secure

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S: Final = 5.0
ERROR_LOG_INTERVAL_S: Final = 60.0


def answer(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error answered outside the app (so without its response signal): headers added here."""
    response = error_response(status, message, headers)
    secure(response)
    response.force_close()
    return response


class ErrorLog:
    """One log line per ``interval_s`` at most, counting the errors answered in between."""

    def __init__(
        self, interval_s: float = ERROR_LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._count = 0
        self._logged_at: float | None = None

    def record(self, status: int, exc: BaseException | None) -> None:
        self._count += 1
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self.interval_s:
            return
        # The class name only: exception texts of the parser quote the request. A 5xx is a
        # fault of ours (a handler failed outside the app's middleware): its traceback too.
        logger.warning(
            "HTTP server: answered %d malformed or failed request(s) since the last report "
            "(latest: %d, %s); at most one such line per %.0fs",
            self._count,
            status,
            exc.__class__.__name__ if exc is not None else "no exception",
            self.interval_s,
            exc_info=exc if status >= 500 else None,
        )
        self._count = 0
        self._logged_at = now


class _Connection(web.RequestHandler):
    """aiohttp's per-connection protocol, answering what it cannot parse the app's way."""

    def __init__(self, manager: web.Server, *, errors: ErrorLog, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.errors = errors

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        self.errors.record(status, exc)
        if request.writer.output_size > 0:
            # As aiohttp does: part of a response went out, so the connection is broken.
            raise ConnectionError("response already started")
        return answer(status, HTTPStatus(status).phrase.lower())


class _Server(web.Server):
    """aiohttp's server with the connection cap and the error answers of ``_Connection``."""

    def __init__(
        self,
        app_server: web.Server,
        *,
        max_connections: int,
        connection_args: dict[str, Any],
    ) -> None:
        self._app_handler = app_server.request_handler
        super().__init__(
            self._guarded,
            request_factory=app_server.request_factory,
            # A client that leaves ends its handler at once: a live stream frees its place
            # under KPI_WEB_MAX_STREAMS now, not at its next ping.
            handler_cancellation=True,
        )
        self.max_connections = max_connections
        self.errors = ErrorLog()
        self._connection_args = {"loop": asyncio.get_running_loop(), **connection_args}
        self._over_cap: weakref.WeakSet[web.RequestHandler] = weakref.WeakSet()

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, errors=self.errors, **self._connection_args)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        if len(self.connections) >= self.max_connections:
            self._over_cap.add(handler)
        super().connection_made(handler, transport)

    async def _guarded(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.protocol in self._over_cap and request.path not in PUBLIC_PATHS:
            return answer(503, "too many connections; try again shortly", {"Retry-After": "2"})
        return await self._app_handler(request)


class ServerRunner(web.AppRunner):
    """An ``AppRunner`` whose server applies the header timeout, the cap and the error answers."""

    def __init__(
        self,
        app: web.Application,
        settings: Settings,
        *,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT_S,
    ) -> None:
        super().__init__(app, access_log=None, shutdown_timeout=shutdown_timeout)
        self._max_connections = settings.web_max_connections
        self._connection_args: dict[str, Any] = {
            "keepalive_timeout": settings.web_header_timeout.total_seconds(),
            "access_log": None,
        }

    async def _make_server(self) -> web.Server:
        # aiohttp's own server starts the app and names its handler; ours serves them.
        app_server = await super()._make_server()
        return _Server(
            app_server,
            max_connections=self._max_connections,
            connection_args=self._connection_args,
        )
