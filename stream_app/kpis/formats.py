"""Format versions of what outlives a process: changelogs, stage messages, the segment table.

Base-count vectors are persisted and sent by position (``BASE_COUNTS`` order), which is
compact but means a reader must know the layout the writer used. Every record and message
therefore carries the format it was written in (``"v"``), and ``LAYOUTS`` keeps each
format's layout, frozen, the way a database keeps its migrations: a reader migrates the
vectors of an older format by name and refuses a newer one with a message that names the
cure. Format 1 is everything written before formats were numbered; it had no ``"v"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from stream_app.kpis.formulas import BASE_COUNTS

# The format this code writes. Changing BASE_COUNTS means a new format: add its layout
# below and bump this (tests/test_formats.py fails until both are done).
FORMAT: Final = 4
# The key that holds a record's or message's format; absent means format 1.
VERSION_KEY: Final = "v"

_LAYOUT_1: Final = (
    "active_start",
    "active_end",
    "new_customers",
    "churned_customers",
    "orders",
    "revenue_micros",
    "purchasing_customers",
    "repeat_customers",
    "clicks",
    "spend_micros",
    "converted_clicks",
    "attributed_revenue_micros",
    "nps_responses",
    "promoters",
    "passives",
    "detractors",
    "csat_responses",
    "csat_satisfied",
)
# Each format's vector layout. Format 2 added the version field and kept the layout; format 3
# added ``ignored_cancellations``; format 4 kept it and added each customer record's first
# signup (``"f"``, the cohort; ``customers/timeline.recovered_first`` derives it for older ones).
LAYOUTS: Final[Mapping[int, tuple[str, ...]]] = {
    1: _LAYOUT_1,
    2: _LAYOUT_1,
    3: (*_LAYOUT_1, "ignored_cancellations"),
    4: (*_LAYOUT_1, "ignored_cancellations"),
}

Vector = list[int]
Migration = Callable[[Vector], Vector]


class FormatError(ValueError):
    """Data in a format this worker cannot read: written by a newer version, or damaged."""


def format_of(data: Mapping[str, Any], what: str) -> int:
    """The format ``data`` (a decoded record or message) was written in; raises when unreadable.

    ``what`` names the data for the message, e.g. "changelog partition 3".
    """
    version = data.get(VERSION_KEY, 1)
    if type(version) is not int or version < 1:
        raise FormatError(f"{what}: format {version!r} is not a format number")
    if version > FORMAT:
        raise FormatError(
            f"{what} was written in format {version} by a newer version of this project; "
            f"this worker reads formats 1 to {FORMAT}. Run the newer version on every worker "
            "(a rolling downgrade is not supported), or start afresh with new topics "
            "(KPI_TOPIC_PREFIX) to rebuild the state from the input topics"
        )
    return version


def migration(version: int) -> Migration | None:
    """How to turn a vector of format ``version`` into the current layout; None if as is."""
    return layout_migration(LAYOUTS[version], BASE_COUNTS)


def layout_migration(old: tuple[str, ...], new: tuple[str, ...]) -> Migration | None:
    """Map vectors laid out as ``old`` onto ``new`` by name: new counts start at 0.

    A count ``new`` no longer has is dropped with its values (its KPI was removed).
    """
    if old == new:
        return None
    source = {name: i for i, name in enumerate(old)}
    picks = [source.get(name) for name in new]

    def migrate(vector: Vector) -> Vector:
        if len(vector) != len(old):
            raise FormatError(f"a vector of {len(vector)} counts where its format has {len(old)}")
        return [0 if i is None else vector[i] for i in picks]

    return migrate


def migrated(vector: Vector, how: Migration | None) -> Vector:
    """``vector`` in the current layout (``how`` from ``migration``)."""
    return vector if how is None else how(vector)
