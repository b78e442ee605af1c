"""The page's files: an allow-list read once from the package, each with its ETag."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

_STATIC: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "cohorts.js": "text/javascript",
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
