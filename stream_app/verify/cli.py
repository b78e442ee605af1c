"""The ``kpi verify`` command: recompute KPIs from an event log and check Redis against them."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from stream_app.cliutil import non_negative
from stream_app.redaction import redacted, redis_url_option
from stream_app.settings import Settings
from stream_app.verify.compare import (
    ABSENT,
    PRESENT,
    Mismatch,
    Report,
    scan_keys,
    verify_redis,
)
from stream_app.verify.reference import (
    Intake,
    Reference,
    format_timestamp,
    load_log,
    reference_from_intake,
)

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_ERROR = 2


def add_parser(subparsers: Any) -> None:
    """Add the ``verify`` subcommand to the ``kpi`` parser's subparsers."""
    parser = subparsers.add_parser(
        "verify",
        help="check the KPIs in Redis against a batch recomputation from an event log",
        description=(
            "Read a JSONL event log, recompute every KPI independently of the workers, and "
            "compare each snapshot in Redis (kpi:* hashes and kpi-history:* sorted sets) with "
            "it, field by field, for the snapshot's own window. Exit 0 when everything "
            "matches, 1 on any mismatch, 2 when the log or Redis cannot be read."
        ),
    )
    parser.add_argument("events", metavar="EVENTS", type=Path, help="the JSONL event log")
    parser.add_argument(
        "--history",
        type=non_negative,
        default=None,
        metavar="N",
        help="check only the N newest history entries of each key (default: all)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        type=redis_url_option,
        help="Redis to check (default: KPI_REDIS_URL)",
    )
    parser.add_argument(
        "--max-rows",
        type=non_negative,
        default=50,
        metavar="N",
        help="print at most N mismatches (default: 50)",
    )
    parser.set_defaults(func=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Verify Redis against the log in ``args.events``; the exit code of ``kpi verify``."""
    console = Console(file=sys.stdout)
    errors = Console(file=sys.stderr)
    try:
        intake = load_log(args.events, settings)
    except (OSError, ValueError) as exc:
        errors.print(f"kpi verify: cannot read the event log: {exc}", markup=False)
        return EXIT_ERROR
    reference = reference_from_intake(intake, settings)
    url = args.redis_url or settings.redis_url
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client = redis.Redis.from_url(
        url, password=password, socket_connect_timeout=5, socket_timeout=30
    )
    try:
        report = _check(client, reference, settings, args.history, console)
    except (redis.RedisError, OSError) as exc:
        errors.print(f"kpi verify: cannot read Redis at {redacted(url)}: {exc}", markup=False)
        return EXIT_ERROR
    finally:
        client.close()
    _print_summary(console, intake, reference, report)
    _print_mismatches(console, report.mismatches, args.max_rows)
    return EXIT_MISMATCH if report.mismatches else EXIT_OK


def _check(
    client: redis.Redis,
    reference: Reference,
    settings: Settings,
    history: int | None,
    console: Console,
) -> Report:
    keys = scan_keys(client)
    with Progress(
        TextColumn("checking Redis"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("keys", total=len(keys))
        return verify_redis(
            client,
            reference,
            settings,
            keys=keys,
            history=history,
            advance=lambda: progress.advance(task),
        )


def _print_summary(console: Console, intake: Intake, reference: Reference, report: Report) -> None:
    summary = Table.grid(padding=(0, 2))
    summary.add_column()
    summary.add_column(justify="right")
    summary.add_row("events read", str(intake.records_read))
    summary.add_row("accepted", str(intake.accepted))
    for reason, count in sorted(intake.rejected.items()):
        summary.add_row(f"rejected: {reason}", str(count))
    summary.add_row("too late", str(intake.too_late))
    summary.add_row("duplicates", str(intake.duplicates))
    watermark = format_timestamp(reference.watermark) if reference.watermark else "none"
    summary.add_row("watermark", watermark)
    summary.add_row("snapshots expected", str(len(reference.expected_keys())))
    summary.add_row("snapshots checked", str(report.snapshots_checked))
    summary.add_row("history entries checked", str(report.history_checked))
    summary.add_row("cohorts checked", str(report.cohorts_checked))
    summary.add_row("mismatches", str(len(report.mismatches)))
    console.print(summary)


def _print_mismatches(console: Console, mismatches: list[Mismatch], max_rows: int) -> None:
    if not mismatches:
        console.print("[green]Redis matches the reference.[/green]")
        return
    table = Table(title=f"{len(mismatches)} mismatch(es)", title_justify="left")
    for column in ("where", "window", "segment", "window_end", "field", "expected", "actual"):
        table.add_column(column, overflow="fold")
    for mismatch in mismatches[:max_rows]:
        # Text cells: segment names and values are data, never rich markup.
        table.add_row(
            Text(mismatch.where),
            Text(mismatch.window),
            Text(mismatch.segment),
            Text(_cell(mismatch.window_end) if mismatch.window_end else ""),
            Text(mismatch.field),
            Text(_cell(mismatch.expected)),
            Text(_cell(mismatch.actual)),
        )
    console.print(table)
    if len(mismatches) > max_rows:
        console.print(f"... and {len(mismatches) - max_rows} more (raise --max-rows to see them)")


def _cell(value: object) -> str:
    """JSON spelling for snapshot values, so null, "12.50" and 12.5 stay distinguishable."""
    if value in (PRESENT, ABSENT):
        return str(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return str(value)
