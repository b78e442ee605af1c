"""Type stub of the compiled customer fold (_fold.c)."""

from typing import Any

from stream_app.customers.timeline import Facts

def fold(
    state: list[Any],
    events: list[list[Any]],
    attribution_us: int,
    facts: Facts | None = ...,
    sign: int = ...,
    grain_us: int = ...,
    /,
) -> list[Any]: ...
def configure(
    base_index: dict[str, int],
    nps_promoter_min: int,
    nps_passive_min: int,
    csat_satisfied_min: int,
    /,
) -> None: ...
