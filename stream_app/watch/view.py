"""What ``kpi watch`` shows: snapshots and alerts in, one rich renderable out (no I/O).

``WatchState`` holds the latest snapshot of each window of one segment, the one before it
(for the arrows) and the alert feed; it is fed decoded Redis data and never raises on bad
input: a field that is not what the contract says is dropped and counted. ``render`` turns
the state into a frame at a given wall-clock time, so the same state always draws the same.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stream_app.benchmarks.compare import Position, standing
from stream_app.benchmarks.profile import Profile
from stream_app.kpis.registry import KPI_BY_NAME, KPIS, names_for, segment_kind
from stream_app.published import (
    AlertRow,
    decode_hash,
    decode_snapshot,
    describes,
    kpi_kind,
    parse_alert,
)
from stream_app.redis_keys import ALERTS, UPDATES_CHANNEL_PREFIX, snapshot_key, split_name

logger = logging.getLogger(__name__)

ALERT_FEED: Final = 8
NULL: Final = "—"
UP: Final = "▲"
DOWN: Final = "▼"
SAME: Final = "="
# Where a value lies against its benchmark band (KPI_BENCHMARK_PROFILE).
BAND_MARKS: Final[dict[Position, str]] = {"below": "↓", "within": "·", "above": "↑"}

# KPIs where a rise is bad news: their arrows are coloured the other way round.
WORSE_WHEN_UP: Final = frozenset(kpi.name for kpi in KPIS if not kpi.higher_is_better)
_DEDUPE_MEMORY: Final = 1000


def kpis_of(segment: str) -> tuple[str, ...]:
    """The KPIs the contract publishes for ``segment``."""
    return names_for(segment_kind(segment))


@dataclass
class WindowView:
    """The latest snapshot of one window, the one before it, and what was dropped."""

    name: str
    current: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    malformed: int = 0

    def update(self, snapshot: dict[str, Any], malformed: int) -> bool:
        """Take a new snapshot; False if it is the one already shown or an older one."""
        if self.current is not None:
            new_at = snapshot.get("updated_at")
            old_at = self.current.get("updated_at")
            if snapshot == self.current:
                return False
            if new_at is not None and old_at is not None and new_at < old_at:
                return False
        self.previous = self.current
        self.current = snapshot
        self.malformed = malformed
        return True


@dataclass
class WatchState:
    """Everything ``kpi watch`` shows for one segment."""

    segment: str
    windows: tuple[str, ...]
    stale_after_s: float = 60.0
    views: dict[str, WindowView] = field(default_factory=dict)
    alerts: deque[AlertRow] = field(default_factory=lambda: deque(maxlen=ALERT_FEED))
    malformed_messages: int = 0
    malformed_alerts: int = 0
    # A problem to show instead of "live", e.g. Redis unreachable; None when all is well.
    status: str | None = None
    source: str = ""
    profile: Profile | None = None
    _alert_keys: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        for window in self.windows:
            self.views.setdefault(window, WindowView(window))

    def apply_hash(self, window: str, fields: Mapping[bytes | str, bytes | str]) -> bool:
        """The reply of ``HGETALL kpi:<window>:<segment>``; an empty one changes nothing."""
        if window not in self.views or not fields:
            return False
        snapshot, bad = decode_hash(fields)
        key = snapshot_key(window, self.segment)
        if not describes(snapshot, window, self.segment):
            logger.warning("%s is not a snapshot of its window and segment; skipped", key)
            return False
        if bad:
            logger.warning("%s has %d malformed field(s); they are skipped", key, bad)
        return self.views[window].update(snapshot, bad)

    def apply_message(self, channel: str, data: bytes | str) -> bool:
        """A message of ``kpi-updates:<window>:<segment>``; other channels are ignored."""
        parts = split_name(channel, UPDATES_CHANNEL_PREFIX)
        if parts is None:
            return False
        window, segment = parts
        if segment != self.segment or window not in self.views:
            return False
        decoded = decode_snapshot(data)
        if decoded is None or not describes(decoded[0], window, segment):
            self.malformed_messages += 1
            logger.warning("skipped a message on %s that is not a snapshot of it", channel)
            return False
        snapshot, bad = decoded
        if bad:
            logger.warning("a snapshot on %s has %d malformed field(s); skipped", channel, bad)
        return self.views[window].update(snapshot, bad)

    def apply_alert(self, data: bytes | str) -> bool:
        """One alert (live, or from the stream oldest first); each (id, status) shows once."""
        row = parse_alert(data)
        if row is None:
            self.malformed_alerts += 1
            logger.warning("skipped a kpi-alerts entry that is not an alert")
            return False
        if row.key in self._alert_keys:
            return False
        self._alert_keys[row.key] = None
        while len(self._alert_keys) > _DEDUPE_MEMORY:
            self._alert_keys.popitem(last=False)
        self.alerts.appendleft(row)
        return True

    def apply_alerts(self, newest_first: Iterable[bytes | str]) -> bool:
        """Entries of ``XREVRANGE kpi-alerts`` (newest first)."""
        changed = False
        for data in reversed(list(newest_first)):
            changed = self.apply_alert(data) or changed
        return changed


# -------------------------------------------------------------------------- formatting


def format_value(name: str, value: Any) -> str:
    """A clean KPI value as shown: ``3.10%``, ``1204.50``, ``42.9``, ``1.53``, ``17``, ``—``."""
    if value is None:
        return NULL
    kind = kpi_kind(name)
    if kind == "money":
        return str(value)
    if kind == "percent":
        return f"{value * 100:.2f}%"
    if kind == "score":
        return f"{value:.1f}"
    if kind == "ratio":
        return f"{value:.2f}"
    return str(value)


def _number(name: str, value: Any) -> Decimal | float | None:
    if value is None:
        return None
    if kpi_kind(name) == "money":
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return value if isinstance(value, int | float) else None


def arrow(name: str, previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str:
    """▲, ▼ or = for the change of ``name`` since the previous snapshot; '' if unknown."""
    if previous is None or name not in previous or name not in current:
        return ""
    old, new = previous[name], current[name]
    if old is None and new is None:
        return SAME
    a, b = _number(name, old), _number(name, new)
    if a is None or b is None:
        return ""
    if b > a:
        return UP
    if b < a:
        return DOWN
    return SAME


def _arrow_style(name: str, mark: str) -> str:
    if mark == SAME or not mark:
        return "dim"
    good = (mark == UP) != (name in WORSE_WHEN_UP)
    return "green" if good else "red"


def format_time(moment: datetime | None, *, seconds: bool = False) -> str:
    if moment is None:
        return NULL
    return moment.strftime("%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M")


def format_age(seconds: float) -> str:
    """A short age: ``4s``, ``12m``, ``3h``, ``2d``."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def is_stale(view: WindowView, now: datetime, stale_after_s: float) -> bool:
    """No snapshot of this window was published for more than ``stale_after_s``."""
    if view.current is None:
        return False
    updated = view.current.get("updated_at")
    if not isinstance(updated, datetime):
        return True
    return (now - updated).total_seconds() > stale_after_s


def band_mark(name: str, value: Any, window: str, profile: Profile | None) -> Text:
    """↓, · or ↑ for below, within or above the KPI's band (green: the better side or
    within, red: the worse side); a blank where there is no band or no value."""
    band = profile.band(name, window) if profile is not None else None
    entry = standing(name, value, band) if band is not None else None
    if entry is None:
        return Text(" ")
    if entry.position == "within":
        return Text(BAND_MARKS[entry.position], style="green")
    return Text(BAND_MARKS[entry.position], style="bold green" if entry.score > 0 else "bold red")


def _cell(name: str, view: WindowView, profile: Profile | None) -> Text:
    current = view.current
    if current is None:
        return Text("")
    if name not in current:
        return Text("")  # not published for this segment, or dropped as malformed
    value = current[name]
    mark = arrow(name, view.previous, current)
    cell = Text(format_value(name, value), style="dim" if value is None else "")
    cell.append(" ")
    cell.append(mark or " ", style=_arrow_style(name, mark))
    if profile is not None:
        cell.append(band_mark(name, value, view.name, profile))
    return cell


def _meta_rows(table: Table, state: WatchState, now: datetime) -> None:
    views = [state.views[w] for w in state.windows]

    def row(label: str, cell: Any) -> None:
        table.add_row(Text(label, style="bold"), *(cell(v) for v in views))

    def stamp(name: str) -> Any:
        def cell(view: WindowView) -> Text:
            if view.current is None:
                return Text("")
            return Text(format_time(view.current.get(name)))

        return cell

    def updated(view: WindowView) -> Text:
        if view.current is None:
            return Text("no snapshot", style="dim")
        moment = view.current.get("updated_at")
        if not isinstance(moment, datetime):
            return Text("stale", style="bold yellow")
        age = format_age((now - moment).total_seconds())
        # Kept short: four windows and the KPI names fit in 80 columns.
        if is_stale(view, now, state.stale_after_s):
            return Text(f"stale {age}", style="bold yellow")
        return Text(f"{age} ago")

    row("window start", stamp("window_start"))
    row("window end", stamp("window_end"))
    row("watermark", stamp("watermark"))
    row("updated", updated)


def render_table(state: WatchState, now: datetime) -> Table:
    """One row per KPI, one column per window; the window bounds and freshness on top."""
    table = Table(title_justify="left", show_edge=True, pad_edge=True)
    table.add_column("KPI (UTC)", no_wrap=True)
    for window in state.windows:
        table.add_column(window, justify="right", no_wrap=True)
    _meta_rows(table, state, now)
    table.add_section()
    group = None
    for name in kpis_of(state.segment):
        if group is not None and KPI_BY_NAME[name].group != group:
            table.add_section()
        group = KPI_BY_NAME[name].group
        cells = (_cell(name, state.views[w], state.profile) for w in state.windows)
        table.add_row(name, *cells)
    return table


def render_alerts(state: WatchState) -> RenderableType:
    """The last alerts, newest first, or 'no alerts'."""
    if not state.alerts:
        return Text("alerts: no alerts", style="dim")
    table = Table(title=f"alerts ({ALERTS}, newest first)", title_justify="left", box=None)
    for name in ("fired", "severity", "status", "segment", "kpi", "window", "summary"):
        table.add_column(name, no_wrap=name != "summary", overflow="fold")
    for alert in state.alerts:
        severity = "bold red" if alert.severity == "critical" else "yellow"
        table.add_row(
            format_time(alert.fired_at, seconds=True),
            Text(alert.severity, style=severity),
            Text(alert.status, style="green" if alert.status == "resolved" else severity),
            Text(alert.segment),
            Text(alert.kpi),
            Text(alert.window or NULL),
            Text(alert.summary),
        )
    return table


def render(state: WatchState, now: datetime) -> RenderableType:
    """The whole frame: a header line, notes, the alert feed, then the KPI table.

    The alerts come first so that a terminal too short for the whole frame crops the last
    KPI rows, not the alerts.
    """
    parts: list[RenderableType] = [
        header_line(f"segment {state.segment}", state.source, state.status)
    ]
    notes = []
    dropped = sum(view.malformed for view in state.views.values())
    if dropped:
        notes.append(f"{dropped} malformed field(s) skipped")
    if state.malformed_messages:
        notes.append(f"{state.malformed_messages} malformed snapshot message(s) skipped")
    if state.malformed_alerts:
        notes.append(f"{state.malformed_alerts} malformed alert(s) skipped")
    if notes:
        parts.append(Text("; ".join(notes), style="yellow"))
    if state.profile is not None:
        parts.append(
            Text(
                f"benchmark {state.profile.name}: ↑ above, · within, ↓ below the band "
                "(green the better side, red the worse)",
                style="dim",
            )
        )
    parts.append(render_alerts(state))
    parts.append(render_table(state, now))
    return Group(*parts)


def header_line(what: str, source: str | None, status: str | None) -> Text:
    """``crm-kpi · <what> · <source> · live`` (or the status in red): every view's first line."""
    header = Text()
    header.append("crm-kpi", style="bold")
    header.append(f" · {what}")
    if source:
        header.append(f" · {source}", style="dim")
    header.append(" · ")
    if status is None:
        header.append("live", style="bold green")
    else:
        header.append(status, style="bold red")
    return header
