"""Access to the API and page: optional token, CORS (off by default) and response headers.

- ``KPI_API_TOKEN`` unset: no authentication (the server binds to localhost by default).
- ``KPI_API_TOKEN`` set: every route needs ``Authorization: Bearer <token>`` or basic auth
  with any user name and the token as password, except ``GET /health``, which answers its
  status to anyone (for load balancers and container healthchecks) and its details only
  with the token. A 401 carries ``WWW-Authenticate: Basic``, so a browser opening the page
  asks for the token once and sends it with every request of the page, the live stream too.
  The token is never taken from the URL: URLs end up in logs, history and Referer headers.
- ``KPI_CORS_ORIGINS`` empty: no CORS headers at all, so browsers keep other origins out.
  Listed origins (or ``*``) get ``Access-Control-Allow-Origin`` on GET and a preflight answer.
- Without a token, only requests whose ``Host`` is in ``KPI_WEB_ALLOWED_HOSTS`` (the loopback
  names by default) or the address the server listens on are served; others get a 421. A
  page of another site whose name was rebound to 127.0.0.1 (DNS rebinding) sends its own
  name as Host, so it cannot read the KPIs. With a token, the token keeps such pages out.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from typing import Final

from aiohttp import web
from pydantic import SecretStr

REALM: Final = 'Basic realm="crm-kpi", charset="UTF-8"'
PUBLIC_PATHS: Final = frozenset({"/health"})
# Addresses that mean "every interface": no Host name follows from them.
_ANY_ADDRESS: Final = frozenset({"", "0.0.0.0", "::"})

# The page loads nothing from anywhere but its own origin (CSP), and no one frames it.
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_COMMON_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Instead of aiohttp's "Python/3.x aiohttp/3.y": no versions for scanners to match.
    "Server": "crm-kpi",
}


class Access:
    """Who may read: the token check and the CORS origins."""

    def __init__(
        self,
        token: SecretStr | None,
        cors_origins: Sequence[str] = (),
        hosts: Sequence[str] = ("*",),
    ) -> None:
        self._token = token.get_secret_value().encode() if token is not None else None
        self.cors_origins = tuple(cors_origins)
        self.hosts = frozenset(hosts)

    @property
    def token_required(self) -> bool:
        return self._token is not None

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the token (always True without a token)."""
        if self._token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        offered: bytes | None = None
        if scheme.lower() == "bearer":
            offered = credentials.encode("utf-8", "replace")
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            _user, sep, password = decoded.partition(b":")
            offered = password if sep else None
        if offered is None:
            return False
        return hmac.compare_digest(offered, self._token)

    def host_allowed(self, request: web.Request) -> bool:
        """Whether the request's Host names this server (any Host does when a token is set)."""
        if self._token is not None or "*" in self.hosts:
            return True
        header = request.headers.get("Host")
        # Browsers always send Host: a request without one comes from no rebound page.
        return header is None or host_name(header) in self.hosts

    def allowed_origin(self, origin: str | None) -> str | None:
        """The value of ``Access-Control-Allow-Origin`` for this Origin, or None (no CORS)."""
        if not origin or not self.cors_origins:
            return None
        if "*" in self.cors_origins:
            return "*"
        return origin if origin in self.cors_origins else None


def served_hosts(allowed: Sequence[str], listen_host: str) -> tuple[str, ...]:
    """The Host names to serve without a token: the allowed ones and the listening address."""
    listen = host_name(listen_host)
    return tuple(allowed) if listen in _ANY_ADDRESS else (*allowed, listen)


def host_name(header: str) -> str:
    """The name in a Host header: lowercase, without port, IPv6 brackets or trailing dot."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    if text.count(":") > 1:
        return text  # a bare IPv6 address (a listening address, never a valid Host)
    return text.partition(":")[0].rstrip(".")


def misdirected() -> web.Response:
    # The Host is not echoed: it is the requester's text.
    return web.json_response(
        {"error": "unknown Host: this server answers for KPI_WEB_ALLOWED_HOSTS only"},
        status=421,
    )


def unauthorized() -> web.Response:
    return web.json_response(
        {"error": "authentication required: Authorization: Bearer <KPI_API_TOKEN>, or basic auth"},
        status=401,
        headers={"WWW-Authenticate": REALM},
    )


def add_headers(request: web.Request, response: web.StreamResponse, access: Access) -> None:
    """Security and CORS headers on every response, streams included (before they start)."""
    secure(response)
    if response.content_type == "text/html":
        response.headers["Content-Security-Policy"] = PAGE_CSP
    allowed = access.allowed_origin(request.headers.get("Origin"))
    if allowed is not None:
        response.headers["Access-Control-Allow-Origin"] = allowed
        if allowed != "*":
            response.headers["Vary"] = "Origin"


def secure(response: web.StreamResponse) -> None:
    """The headers every response carries, aiohttp's own error answers too.

    Set, not defaulted: aiohttp has already put its own ``Server`` header in when the app's
    response signal runs.
    """
    response.headers.update(_COMMON_HEADERS)


def preflight(request: web.Request, access: Access) -> web.Response:
    """The answer to a CORS preflight: allowed origins may GET with an Authorization header."""
    allowed = access.allowed_origin(request.headers.get("Origin"))
    if allowed is None or request.headers.get("Access-Control-Request-Method") not in (
        "GET",
        "HEAD",
    ):
        return web.json_response({"error": "CORS preflight refused"}, status=403)
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, HEAD",
            "Access-Control-Allow-Headers": "Authorization",
            "Access-Control-Max-Age": "600",
        },
    )


def exposure_warning(host: str, access: Access) -> str | None:
    """A warning when the server listens beyond this machine without a token, else None."""
    if access.token_required or host in ("localhost", "::1") or host.startswith("127."):
        return None
    return (
        f"the dashboard and the API listen on {host} without KPI_API_TOKEN: whoever reaches "
        "this port can read the KPIs (set KPI_API_TOKEN, or bind to 127.0.0.1)"
    )
