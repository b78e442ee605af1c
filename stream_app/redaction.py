"""Redis URLs fit for messages (every credential replaced by ``***``), and checked before use.

Its own small module because the settings, the worker, the web server and the terminal tools
all handle the Redis URL, and none of them should import another just for this.

redis-py (``parse_url``) takes credentials from the userinfo (``user:pass@``, ``:pass@``) and
from any query parameter, which it passes on as a connection argument (``?password=``,
``?ssl_password=`` for the TLS key, ...), for ``redis://``, ``rediss://`` and ``unix://``.
redis-cli reads a userinfo without a colon (``secret@``) as the password.
"""

from __future__ import annotations

import argparse
from urllib.parse import SplitResult, unquote_plus, urlsplit

SCHEMES = ("redis://", "rediss://", "unix://")
REDACTED = "***"
# Query parameters whose value is shown: redis-py's typed options (numbers, flags) and names
# that are no secret. Any other value, known secret or unknown, is redacted.
_SHOWN_PARAMETERS = frozenset(
    {
        "db",
        "protocol",
        "timeout",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_read_size",
        "socket_keepalive",
        "retry_on_timeout",
        "retry_on_error",
        "max_connections",
        "health_check_interval",
        "client_name",
        "decode_responses",
        "username",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
    }
)


def redacted(url: str) -> str:
    """The URL with every password and unknown query value as ``***``, fit for messages.

    A URL whose parts cannot be told apart keeps only its scheme.
    """
    parts = _split(url)
    if parts is None:
        scheme = next((s for s in SCHEMES if url.lower().startswith(s)), "redis://")
        return f"{scheme}{REDACTED}"
    userinfo, at, host = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{REDACTED}" if colon else REDACTED
    query = f"?{_redacted_query(parts.query)}" if parts.query else ""
    # Not urlunsplit: it drops the empty host of unix:///path.
    return f"{parts.scheme}://{userinfo}{at}{host}{parts.path}{query}"


def _split(url: str) -> SplitResult | None:
    """The URL's parts; None when a password may have run into the host, path or query."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError when the part after ':' is no number
    except ValueError:
        return None
    # An '@' after the host: a password with '/', '?' or '#' in it, not percent-encoded,
    # that split the URL there (the part before it would pass for a host or port).
    if "@" in parts.path + parts.query or parts.fragment:
        return None
    return parts


def _redacted_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        shown = unquote_plus(name) in _SHOWN_PARAMETERS
        pairs.append(f"{name}{equals}{value if shown or not equals else REDACTED}")
    return "&".join(pairs)


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is no Redis URL redis-py can use, naming the cure; None when it is one.

    The message never quotes the URL: a malformed one may have its password anywhere.
    """
    if not url.lower().startswith(SCHEMES):
        return "must start with redis://, rediss:// or unix://, e.g. redis://127.0.0.1:6379/0"
    from redis.connection import parse_url  # redis-py's own parser: exactly what it accepts

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        if "Invalid value for" in str(exc):  # names the query parameter, never its value
            return f"{exc} Fix that query parameter, e.g. db=0."
        if "Port" not in str(exc):
            return "is not a Redis URL like redis://127.0.0.1:6379/0"
    if _split(url) is None:
        return (
            "the port is not a number from 0 to 65535, or a password has a / ? or # that is "
            "not percent-encoded: write redis://:PASSWORD@HOST:PORT/DB with the password "
            "percent-encoded, or set it in KPI_REDIS_PASSWORD"
        )
    return None


def redis_url_option(text: str) -> str:
    """argparse ``type`` of the ``--redis-url`` options: a usage error that never echoes it."""
    problem = redis_url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text
