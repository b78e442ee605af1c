"""``kpi watch --cohorts``: the cohort retention matrix of one grain and segment (section 6).

``CohortState`` holds the published cohorts, read from the hash
``kpi-cohorts:<grain>:<segment>`` and kept current from the channel
``kpi-cohort-updates:<grain>:<segment>``; every value goes through ``stream_app.published``
(the models of ``schemas.cohort``), and what does not fit is counted, never fatal.
``render_cohorts`` draws one row per cohort (newest first): its start, its size and its
retention in each period, incomplete periods marked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from schemas.cohort import COHORT_DEPTH, Cohort, CohortPeriod, Grain
from stream_app.published import decode_cohort_update, read_cohorts, split_cohort_name
from stream_app.redis_keys import COHORT_UPDATES_PREFIX, cohort_updates_channel, cohorts_key
from stream_app.watch.follow import Follower
from stream_app.watch.view import header_line

logger = logging.getLogger("kpi.watch")

NULL: Final = "—"
INCOMPLETE: Final = "*"  # after the retention of a period that holds the watermark
# Retention at or above each threshold gets the style; a terminal's take on a heatmap.
SHADES: Final = ((0.75, "bold green"), (0.5, "green"), (0.25, "yellow"), (0.0, "red"))


@dataclass
class CohortState:
    """The cohorts of one grain and segment, by start; and what was left out."""

    grain: Grain
    segment: str
    source: str = ""
    status: str | None = None
    cohorts: dict[datetime, Cohort] = field(default_factory=dict)
    malformed: int = 0  # fields of the hash, at the last read
    malformed_messages: int = 0

    def apply_cohorts(self, found: tuple[list[Cohort], int] | None) -> bool:
        """Replace the cohorts with a read of the hash (None: there is none)."""
        cohorts, bad = found if found is not None else ([], 0)
        new = {cohort.cohort_start: cohort for cohort in cohorts}
        changed = new != self.cohorts or bad != self.malformed
        self.cohorts, self.malformed = new, bad
        return changed

    def apply_message(self, channel: str, data: bytes | str) -> bool:
        """One changed cohort from its channel; a message that is not one is counted."""
        update = None
        if split_cohort_name(channel, COHORT_UPDATES_PREFIX) == (self.grain, self.segment):
            update = decode_cohort_update(data, self.grain, self.segment)
        if update is None:
            self.malformed_messages += 1
            return True
        cohort = Cohort.model_validate(update.model_dump(exclude={"grain", "segment"}))
        if self.cohorts.get(cohort.cohort_start) == cohort:
            return False
        self.cohorts[cohort.cohort_start] = cohort
        # The engine drops cohorts past the published depth; so does the view.
        for start in sorted(self.cohorts, reverse=True)[COHORT_DEPTH[self.grain] :]:
            del self.cohorts[start]
        return True

    def newest_first(self) -> list[Cohort]:
        return [self.cohorts[start] for start in sorted(self.cohorts, reverse=True)]


class CohortWatcher(Follower[CohortState]):
    """Keeps a ``CohortState`` current: the hash, then the changed cohorts as they come."""

    async def subscribe(self, pubsub: PubSub) -> None:
        await pubsub.subscribe(cohort_updates_channel(self.state.grain, self.state.segment))

    async def load(self, client: aioredis.Redis) -> bool:
        found = await read_cohorts(client, self.state.grain, self.state.segment)
        if found is not None and found[1]:
            key = cohorts_key(self.state.grain, self.state.segment)
            logger.debug("%d malformed field(s) of %s skipped", found[1], key)
        return self.state.apply_cohorts(found)

    def apply(self, channel: str, data: bytes | str) -> bool:
        return self.state.apply_message(channel, data)


def cohort_label(start: datetime, grain: Grain) -> str:
    """``2026-11-23`` for a week (its Monday), ``2026-11`` for a month."""
    return start.strftime("%Y-%m-%d" if grain == "week" else "%Y-%m")


def retention_cell(period: CohortPeriod | None) -> Text:
    """Retention as a whole percentage, shaded; ``*`` when the period is incomplete."""
    if period is None:
        return Text("")
    mark = "" if period.complete else INCOMPLETE
    if period.retention is None:
        return Text(NULL + mark, style="dim")
    style = next(style for low, style in SHADES if period.retention >= low)
    return Text(f"{period.retention * 100:.0f}{mark}", style=style)


def render_matrix(state: CohortState, periods_shown: int | None = None) -> Table:
    """One row per cohort, newest first: start, size, then retention % per period k (the
    first ``periods_shown`` of them, all by default)."""
    cohorts = state.newest_first()
    depth = max((len(cohort.periods) for cohort in cohorts), default=1)
    if periods_shown is not None:
        depth = max(1, min(depth, periods_shown))
    unit = "week" if state.grain == "week" else "month"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
    table.add_column(f"{unit} of", no_wrap=True, min_width=10)
    table.add_column("size", justify="right", no_wrap=True, min_width=5)
    for k in range(depth):
        table.add_column(f"k{k}", justify="right", no_wrap=True, min_width=4)
    for cohort in cohorts:
        periods: list[CohortPeriod | None] = list(cohort.periods[:depth])
        periods += [None] * (depth - len(periods))
        table.add_row(
            cohort_label(cohort.cohort_start, state.grain),
            str(cohort.size),
            *(retention_cell(period) for period in periods),
        )
    return table


class _Matrix:
    """The matrix cut to the terminal's width: the first periods that fit, and a note."""

    def __init__(self, state: CohortState) -> None:
        self.state = state

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, render_matrix(self.state))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        depth = max((len(c.periods) for c in self.state.cohorts.values()), default=1)
        fits = depth
        unbounded = options.update(max_width=10_000)  # a measurement is capped at the width
        while fits > 1:
            table = render_matrix(self.state, fits)
            if Measurement.get(console, unbounded, table).maximum <= options.max_width:
                break
            fits -= 1
        yield render_matrix(self.state, fits)
        if fits < depth:
            yield Text(f"k{fits}..k{depth - 1} not shown: widen the terminal", style="dim")


def render_cohorts(state: CohortState, now: datetime) -> RenderableType:
    """The whole frame: a header line, notes, the legend and the matrix (``now`` unused:
    the matrix carries its own times; the signature is ``render``'s)."""
    header = header_line(
        f"cohorts by {state.grain} · segment {state.segment}", state.source, state.status
    )
    parts: list[RenderableType] = [header]
    notes = []
    if state.malformed:
        notes.append(f"{state.malformed} malformed cohort(s) skipped")
    if state.malformed_messages:
        notes.append(f"{state.malformed_messages} malformed cohort message(s) skipped")
    if notes:
        parts.append(Text("; ".join(notes), style="yellow"))
    if not state.cohorts:
        key = cohorts_key(state.grain, state.segment)
        parts.append(Text(f"no cohorts in {key} (yet)", style="dim"))
        return Group(*parts)
    parts.append(
        Text(
            f"retention %: active at the end of period k / size; {INCOMPLETE} incomplete "
            "(as of the watermark)",
            style="dim",
        )
    )
    parts.append(_Matrix(state))
    return Group(*parts)
