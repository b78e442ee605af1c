"""Type stub of the compiled intake fast path and loops (_intake.c)."""

from typing import Any

def fast_stored(
    event_type: str,
    value: bytes | None,
    key: bytes | None,
    reporting_currency: str,
    max_bytes: int = ...,
) -> tuple[str, list[Any]] | None: ...
def offer_run(
    messages: list[Any],
    start: int,
    topic: str,
    event_type: str,
    reporting_currency: str,
    next_offset: int,
    head: int | None,
    lateness_us: int,
    customers: dict[str, Any],
    buffered_ids: set[Any],
    buffer: list[Any],
    seq: int,
    /,
) -> tuple[int, int, int | None, int, int]: ...
def drain_run(
    ready: list[Any],
    start: int,
    buffered_ids: set[Any],
    customers: dict[str, Any],
    pending: dict[str, list[Any]],
    ranks: list[int],
    watermark: int | None,
    lateness_us: int,
    /,
) -> tuple[int, int | None, int]: ...
