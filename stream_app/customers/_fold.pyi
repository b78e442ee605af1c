"""Type stub of the compiled customer fold (_fold.c)."""

from typing import Any

def fold(
    state: list[Any],
    events: list[list[Any]],
    attribution_us: int,
    points: dict[tuple[str, int], list[int]] | None,
    spans: dict[tuple[Any, ...], int] | None,
    sign: int,
    grain_us: int,
    /,
) -> list[Any]: ...
def configure(base_index: dict[str, int], /) -> None: ...
