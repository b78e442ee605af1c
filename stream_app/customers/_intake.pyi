"""Type stub of the compiled intake fast path (_intake.c)."""

from typing import Any

def fast_stored(
    event_type: str,
    value: bytes | None,
    key: bytes | None,
    reporting_currency: str,
    max_bytes: int = ...,
    /,
) -> tuple[str, list[Any]] | None: ...
