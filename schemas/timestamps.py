"""The UTC timestamp type every output model uses: aware, normalised, serialised with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; naive datetimes are refused, never guessed.

    A time whose offset takes it past year 1 or 9999 (``0001-01-01T00:00:00+01:00``) parses
    but has no UTC form: a ValueError, so that validation rejects it instead of crashing.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range in UTC") from None


# Pydantic writes an aware UTC datetime as e.g. 2026-11-02T09:00:00Z.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(to_utc)]
