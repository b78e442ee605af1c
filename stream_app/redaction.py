"""URLs fit for messages: the password replaced by ``***``.

Its own small module because the worker, the web server and the terminal tools all log the
Redis URL, and none of them should import another just for this.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redacted(url: str) -> str:
    """The URL without its password, fit for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
