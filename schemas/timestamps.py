"""The UTC timestamp type every output model uses: aware, normalised, serialised with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; naive datetimes are refused, never guessed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return value.astimezone(UTC)


# Pydantic writes an aware UTC datetime as e.g. 2026-11-02T09:00:00Z.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(to_utc)]
