"""Query parameters of the HTTP API: each is checked here, and a bad one is a 400, never a 500.

Every function takes the raw text (or None when absent) and returns the parsed value or
raises ``BadParameterError`` with a message that says what is allowed. Nothing here touches Redis.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from typing import Final

from schemas import CAMPAIGN_KPIS, SEGMENT_KPIS
from schemas.cohort import GRAINS, Grain
from schemas.lifecycle import LIFECYCLE_SEGMENT_PREFIX, STAGES

API: Final = "/api/v1"
# GET /api/v1/cohorts without ``grain``: weekly cohorts, the finer of the two.
DEFAULT_GRAIN: Final[Grain] = "week"
HISTORY_LIMIT: Final = (500, 1, 5000)  # default, lowest, highest
ALERTS_LIMIT: Final = (20, 1, 500)
MAX_SEGMENT_CHARS: Final = 200
# Regions are 2..8 letters, digits, '_' or '-' (upper-cased) or `unknown`; a little wider here
# so that a future region name is a 404, not a 400.
_REGION: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Campaign ids: 1..128 characters, no whitespace or control characters (schemas/events.py).
_SPACE_OR_CONTROL: Final = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_DIGITS: Final = re.compile(r"[0-9]{1,12}")
_EPOCH: Final = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,6})?")
_KPI_NAMES: Final = frozenset(SEGMENT_KPIS) | frozenset(CAMPAIGN_KPIS)
# The fields a history point always has, whatever ``fields`` asks for.
POINT_META: Final = ("window_start", "window_end")


class BadParameterError(ValueError):
    """A query parameter that is missing or not what the API accepts (HTTP 400)."""


def _show(text: str) -> str:
    """A bounded, printable rendering of user input for error messages."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    return repr(shown)


def window(text: str | None, windows: Collection[str]) -> str:
    if text is None or text == "":
        raise BadParameterError(f"window: required, one of {', '.join(windows)}")
    if text not in windows:
        raise BadParameterError(
            f"window: {_show(text)} is not a window; use one of {', '.join(windows)}"
        )
    return text


def window_list(text: str | None, windows: Collection[str]) -> tuple[str, ...]:
    """Comma-separated window names; absent = every configured window."""
    if text is None or text == "":
        return tuple(windows)
    names: list[str] = []
    for part in text.split(","):
        name = window(part.strip(), windows)
        if name not in names:
            names.append(name)
    return tuple(names)


def grain(text: str | None) -> Grain:
    """``week`` or ``month`` (``schemas.cohort.GRAINS``); absent = ``DEFAULT_GRAIN``."""
    if text is None or text == "":
        return DEFAULT_GRAIN
    for name in GRAINS:
        if text == name:
            return name
    raise BadParameterError(f"grain: {_show(text)} is not a grain; use {' or '.join(GRAINS)}")


def segment(text: str | None, *, default: str | None = None) -> str:
    """``all``, ``region:<REGION>`` or ``campaign:<campaign_id>``; anything else is a 400.

    A well-formed segment that has no data is not an error here: the handler answers 404.
    """
    if text is None or text == "":
        if default is not None:
            return default
        raise BadParameterError("segment: required: all, region:<REGION> or campaign:<campaign_id>")
    if len(text) > MAX_SEGMENT_CHARS:
        raise BadParameterError(f"segment: longer than {MAX_SEGMENT_CHARS} characters")
    kind, sep, rest = text.partition(":")
    if text == "all":
        return text
    if sep and kind == "region" and _REGION.fullmatch(rest):
        return text
    if sep and kind + sep == LIFECYCLE_SEGMENT_PREFIX and rest in set(STAGES):
        return text
    if sep and kind == "campaign" and 1 <= len(rest) <= 128 and not _SPACE_OR_CONTROL.search(rest):
        return text
    raise BadParameterError(
        f"segment: {_show(text)} is not a segment: all, region:<REGION> (letters, digits, "
        "'_' or '-'), lifecycle:<stage> ("
        + ", ".join(STAGES)
        + ") or campaign:<campaign_id> (1 to 128 characters, no spaces or control characters)"
    )


def integer(text: str | None, name: str, *, default: int, low: int, high: int) -> int:
    """A plain decimal integer in ``[low, high]`` (no sign, spaces, exponent or other digits)."""
    if text is None:
        return default
    if not _DIGITS.fullmatch(text):
        raise BadParameterError(f"{name}: {_show(text)} is not an integer from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise BadParameterError(f"{name}: {value} is out of range; use {low} to {high}")
    return value


def timestamp(text: str | None, name: str) -> float | None:
    """Unix seconds (``1763856000``) or RFC 3339 with an offset; returns Unix seconds."""
    if text is None or text == "":
        return None
    if _EPOCH.fullmatch(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("no offset")
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise BadParameterError(
            f"{name}: {_show(text)} is not a time: Unix seconds or RFC 3339 with an offset "
            "(2026-11-02T09:00:00Z)"
        ) from None


def kpi_fields(text: str | None) -> tuple[str, ...] | None:
    """Comma-separated KPI names to keep in history points; absent = every field."""
    if text is None or text == "":
        return None
    names: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if name not in _KPI_NAMES:
            raise BadParameterError(f"fields: {_show(name)} is not a KPI (see GET /api/v1/meta)")
        if name not in names:
            names.append(name)
    return tuple(names)
