"""The replay dry run: parse every record as the processor would and report what it rejects."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from schemas import Rejection, parse_event
from stream_app.replay.records import EVENT_TYPES, ReplayRecord, SourceItem


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """One record the processor would dead-letter (or replay could not route)."""

    line: int
    event_type: str | None
    reason: str
    field: str | None
    message: str
    event_id: str | None = None


@dataclass
class TypeTotals:
    """Records of one event type: how many the processor would accept and reject."""

    records: int = 0
    accepted: int = 0
    rejected: int = 0


@dataclass
class DryRunReport:
    """Everything a dry run found; only the first ``limit`` rejected rows are kept."""

    totals: dict[str, TypeTotals] = field(
        default_factory=lambda: {event_type: TypeTotals() for event_type in EVENT_TYPES}
    )
    unroutable: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    rejected_total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0

    @property
    def records(self) -> int:
        return self.unroutable + sum(t.records for t in self.totals.values())

    @property
    def ok(self) -> bool:
        return self.rejected_total == 0


def dry_run(
    items: Iterable[SourceItem],
    *,
    reporting_currency: str,
    limit: int | None = None,
    on_record: Callable[[int], None] | None = None,
) -> DryRunReport:
    """Check every item with ``schemas.parse_event``, key included, as the intake agents do.

    ``limit`` bounds the rejected rows kept for printing (counts stay exact); ``on_record``
    is told how many records were checked so far (for a progress bar).
    """
    report = DryRunReport()
    seen: set[str] = set()
    for count, item in enumerate(items, start=1):
        if isinstance(item, ReplayRecord):
            totals = report.totals[item.event_type]
            totals.records += 1
            parsed = parse_event(
                item.event_type, item.value, item.key, reporting_currency=reporting_currency
            )
            if isinstance(parsed, Rejection):
                totals.rejected += 1
                row = RejectedRow(
                    item.line,
                    item.event_type,
                    parsed.reason.value,
                    parsed.field,
                    parsed.message,
                    parsed.event_id,
                )
                _reject(report, row, limit)
            else:
                totals.accepted += 1
                # The processor ignores a re-sent event_id: worth knowing, not an error.
                if parsed.event_id in seen:
                    report.duplicates += 1
                seen.add(parsed.event_id)
        else:
            report.unroutable += 1
            row = RejectedRow(item.line, None, item.reason, item.field, item.message)
            _reject(report, row, limit)
        if on_record is not None:
            on_record(count)
    return report


def _reject(report: DryRunReport, row: RejectedRow, limit: int | None) -> None:
    report.rejected_total += 1
    report.by_reason[row.reason] += 1
    if limit is None or len(report.rejected) < limit:
        report.rejected.append(row)


def render_report(
    report: DryRunReport, topics: Mapping[str, str], source: str, line_label: str = "line"
) -> RenderableType:
    """The dry-run report as rich tables: totals by event type, then the rejected rows."""
    totals = Table(title=f"dry run of {source}", title_justify="left")
    totals.add_column("event type")
    totals.add_column("topic")
    for name in ("records", "accepted", "rejected"):
        totals.add_column(name, justify="right")
    for event_type, counts in report.totals.items():
        if counts.records:
            totals.add_row(
                event_type,
                Text(topics.get(event_type, "")),
                f"{counts.records:,}",
                f"{counts.accepted:,}",
                _red(counts.rejected),
            )
    if report.unroutable:
        totals.add_row(
            "(no event type)", "", f"{report.unroutable:,}", "0", _red(report.unroutable)
        )
    accepted = sum(t.accepted for t in report.totals.values())
    totals.add_section()
    totals.add_row("total", "", f"{report.records:,}", f"{accepted:,}", _red(report.rejected_total))
    parts: list[RenderableType] = [totals]
    if report.duplicates:
        parts.append(
            Text(
                f"{report.duplicates:,} accepted record(s) repeat an earlier event_id; the "
                "processor counts each event_id once.",
                style="yellow",
            )
        )
    if report.ok:
        parts.append(Text("Every record would be accepted.", style="green"))
        return Group(*parts)
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in report.by_reason.most_common())
    rejected = Table(
        title=f"{report.rejected_total:,} record(s) would be rejected: {reasons}",
        title_justify="left",
    )
    rejected.add_column(line_label, justify="right")
    for name in ("event type", "reason", "field", "message"):
        rejected.add_column(name, overflow="fold")
    for row in report.rejected:
        # Text cells: messages and fields come from the data, never rich markup.
        rejected.add_row(
            str(row.line),
            Text(row.event_type or "—"),
            Text(row.reason, style="red"),
            Text(row.field or "—"),
            Text(row.message),
        )
    parts.append(rejected)
    hidden = report.rejected_total - len(report.rejected)
    if hidden > 0:
        parts.append(Text(f"... and {hidden:,} more (raise --max-rows to see them)"))
    return Group(*parts)


def _red(count: int) -> Text:
    return Text(f"{count:,}", style="red" if count else "")
