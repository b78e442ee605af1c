"""The ``kpi replay`` subcommand: send a JSONL event log or a mapped CSV export to the topics."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from schemas import EventType
from stream_app.cliutil import non_negative, positive, with_signals
from stream_app.replay.dryrun import dry_run, render_report
from stream_app.replay.records import (
    EVENT_TYPES,
    CsvMapping,
    Format,
    Source,
    SourceError,
    detect_format,
    open_source,
)
from stream_app.replay.sender import ReplayResult
from stream_app.settings import Settings

logger = logging.getLogger("kpi.replay")

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_ERROR = 2

_CSV_OPTIONS = ("event_type", "type_column", "type_map", "map", "set", "event_id_column")
# CSV options with a default: given on JSONL only when they differ from it.
_CSV_DEFAULTS = {"delimiter": ",", "encoding": "utf-8-sig"}

_DESCRIPTION = """\
Produce every record of FILE to its input topic, keyed by customer id, as a producer
would. FILE is an event log in JSONL (the format of `kpi simulate --out`) or a CSV export
whose columns are mapped to event fields. Values are sent as they are: the processor
validates them and dead-letters what breaks the contract. Run with --dry-run first to see
exactly which rows it would reject, without touching Kafka.
"""

_EPILOG = """\
bootstrapping the existing customer base:
  The processor only knows the customers it has seen sign up. Before going live, export
  the current customers as signup events, with their ORIGINAL signup time as occurred_at
  (and their region and acquisition campaign), and replay them; then start the live
  producers. Customers who have already left can be exported too, followed by their
  cancellation. Events older than the newest one minus KPI_MAX_LATENESS (31 days by
  default) are dead-lettered as too_late, so replay the history in time order, before
  live traffic moves the watermark on. Dedupe makes it safe to run the same replay again.

csv mapping:
  --map FIELD=COLUMN     read FIELD from COLUMN (a column named like a field is used
                         for it without --map); only the fields of each row's event
                         type are sent, other columns stay private
  --set FIELD=VALUE      the same value on every row, e.g. --set currency=USD
  --event-type TYPE      every row is one type, or
  --type-column COL      the type is in COL; --type-map VALUE=TYPE translates its values
                         (values that are already a type or a topic suffix need no entry)
  --event-id-column COL  event ids from COL; without it each row gets the id
                         replay-<sha256(file name, row number)>, so replaying the same
                         file again is deduplicated by the processor. Give every export
                         its own file name (customers-2026-11-02.csv): row 1 of two
                         different files named customers.csv would share an id.
  Cells are stripped; an empty cell leaves its field out. score and schema_version
  become JSON integers, amount and cost stay exact decimal strings.

examples:
  kpi replay events.jsonl --rate 2000
  kpi replay customers-2026-11-02.csv --event-type signup --dry-run \\
      --map customer_id=cust_id --map occurred_at=signed_up_at --map region=country
  kpi replay orders.csv --event-type purchase --map customer_id=cust_id \\
      --map occurred_at=created --map amount=total --map order_id=id --set currency=USD
  kpi replay crm.csv --type-column kind --type-map order=purchase --type-map churn=cancellation

exit status:
  0 every record was sent (or, with --dry-run, every record would be accepted);
  1 some rows were skipped or rejected, or the replay was stopped or failed part-way;
  2 nothing was sent: bad options, unreadable file, or no broker.
"""


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name.strip(), value


def _delimiter(text: str) -> str:
    # A literal tab is awkward to type in a shell.
    return {"\\t": "\t", "tab": "\t"}.get(text, text)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay`` to the ``kpi`` command's subparsers."""
    parser = subparsers.add_parser(
        "replay",
        help="send a JSONL event log or a CSV export to the input topics (bootstrap, backfill)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", type=Path, help="the JSONL or CSV file")
    parser.add_argument(
        "--format",
        choices=("jsonl", "csv"),
        default=None,
        help="input format (default: csv for a .csv file, jsonl otherwise)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="parse every record as the processor would (with KPI_REPORTING_CURRENCY), print "
        "the totals and the rejected rows, and send nothing; exit 1 if any would be rejected",
    )
    parser.add_argument(
        "--max-rows",
        type=non_negative,
        default=50,
        metavar="N",
        help="with --dry-run: list at most N rejected rows (default: 50)",
    )

    mapping = parser.add_argument_group("CSV mapping (see below)")
    kind = mapping.add_mutually_exclusive_group()
    kind.add_argument(
        "--event-type", choices=EVENT_TYPES, default=None, help="the event type of every row"
    )
    kind.add_argument(
        "--type-column", metavar="COL", default=None, help="the column holding each row's type"
    )
    mapping.add_argument(
        "--type-map",
        type=_pair,
        action="append",
        default=[],
        metavar="VALUE=TYPE",
        help="with --type-column: rows whose type is VALUE are TYPE events (repeatable)",
    )
    mapping.add_argument(
        "--map",
        type=_pair,
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read event field FIELD from column COLUMN (repeatable)",
    )
    mapping.add_argument(
        "--set",
        type=_pair,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set FIELD to VALUE on every row, e.g. currency=USD (repeatable)",
    )
    mapping.add_argument(
        "--event-id-column",
        metavar="COL",
        default=None,
        help="the column of event ids (default: an id derived from file name and row number)",
    )
    mapping.add_argument(
        "--delimiter",
        type=_delimiter,
        default=",",
        metavar="CHAR",
        help="field separator; 'tab' for TSV (default: ,)",
    )
    mapping.add_argument(
        "--encoding", default="utf-8-sig", help="text encoding of the CSV (default: utf-8-sig)"
    )

    sending = parser.add_argument_group("sending")
    sending.add_argument(
        "--rate",
        type=positive(float),
        default=None,
        metavar="N",
        help="send at most N events per wall-clock second (default: as fast as possible)",
    )
    sending.add_argument(
        "--batch-size",
        type=positive(int),
        default=500,
        metavar="N",
        help="Kafka sends awaited together (default: 500)",
    )
    sending.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar even when stdout is not a terminal",
    )
    sending.add_argument(
        "--no-create-topics",
        action="store_true",
        help="do not create missing topics or check their partitions (for producers "
        "without admin rights on the cluster)",
    )
    parser.set_defaults(func=run)


def csv_mapping(args: argparse.Namespace) -> CsvMapping:
    """The CSV mapping the options describe; ValueError names what is wrong."""
    type_values: dict[str, EventType] = {}
    for value, event_type in args.type_map:
        if event_type not in EVENT_TYPES:
            raise ValueError(
                f"--type-map {value}={event_type}: {event_type!r} is not one of "
                f"{', '.join(EVENT_TYPES)}"
            )
        type_values[value] = event_type
    # Header names are stripped, so a blank around a column name could never match.
    columns = {name: column.strip() for name, column in args.map}
    if args.event_id_column is not None:
        if "event_id" in columns:
            raise ValueError("give the event id column once: --event-id-column or --map")
        columns["event_id"] = args.event_id_column
    if args.event_type is None and args.type_column is None:
        raise ValueError("a CSV needs --event-type TYPE or --type-column COL")
    return CsvMapping(
        event_type=args.event_type,
        type_column=args.type_column,
        type_values=type_values,
        columns=columns,
        constants=dict(args.set),
        delimiter=args.delimiter,
        encoding=args.encoding,
    )


def build_source(args: argparse.Namespace) -> Source:
    """The source the options describe; ValueError or SourceError names what is wrong."""
    file_format: Format = detect_format(args.file, args.format)
    if file_format == "jsonl":
        given = [name for name in _CSV_OPTIONS if getattr(args, name) not in (None, [])]
        given += [name for name, default in _CSV_DEFAULTS.items() if getattr(args, name) != default]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(
                f"{args.file} is read as JSONL, and {options} {verb} only to CSV input "
                "(name the file .csv or give --format csv)"
            )
        return open_source(args.file, "jsonl", None)
    return open_source(args.file, "csv", csv_mapping(args))


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``kpi replay``; see the exit status in ``kpi replay --help``."""
    try:
        source = build_source(args)
    except (ValueError, SourceError) as exc:
        logger.error("replay: %s", exc)
        return EXIT_ERROR
    # The bar is drawn on stderr: it is wanted when stderr is a terminal.
    show_bar = args.progress or sys.stderr.isatty()
    if args.dry_run:
        return _dry_run(settings, source, args.max_rows, show_bar)
    return _send(settings, source, args, show_bar)


def _dry_run(settings: Settings, source: Source, max_rows: int, show_bar: bool) -> int:
    from stream_app.kafka import input_topics

    progress = FileProgress(source.size, "checking") if show_bar else None
    try:
        report = dry_run(
            source,
            reporting_currency=settings.reporting_currency,
            limit=max_rows,
            on_record=(lambda n: progress.update(n, source.position)) if progress else None,
        )
    except SourceError as exc:
        logger.error("replay: %s", exc)
        return EXIT_ERROR
    finally:
        if progress is not None:
            progress.close()
    topics: dict[str, str] = {str(t): name for t, name in input_topics(settings).items()}
    Console(file=sys.stdout).print(render_report(report, topics, str(source.path)))
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


def _send(settings: Settings, source: Source, args: argparse.Namespace, show_bar: bool) -> int:
    from aiokafka.errors import KafkaError

    from stream_app.kafka import topics_ready
    from stream_app.replay.sender import replay_to_kafka

    progress: FileProgress | LogProgress = (
        FileProgress(source.size, "replay") if show_bar else LogProgress(source.size)
    )

    async def main() -> ReplayResult | None:
        if not args.no_create_topics and not await topics_ready(settings):
            return None
        return await with_signals(
            lambda stop: replay_to_kafka(
                source,
                settings,
                rate=args.rate,
                batch_size=args.batch_size,
                progress=progress,
                position=lambda: source.position,
                stop=stop,
            )
        )

    try:
        result = asyncio.run(main())
    except KeyboardInterrupt:
        logger.warning("interrupted before sending")
        return EXIT_INCOMPLETE
    except (KafkaError, OSError) as exc:
        logger.error(
            "no Kafka broker answers at %s (%s: %s)",
            settings.kafka_bootstrap_servers,
            exc.__class__.__name__,
            exc,
        )
        return EXIT_ERROR
    finally:
        progress.close()
    if result is None:
        return EXIT_ERROR
    by_type = ", ".join(f"{t} {n}" for t, n in sorted(result.sent_by_type.items())) or "nothing"
    logger.info(
        "%s %d records (%s) to %s* in %.1fs%s",
        "stopped after" if result.interrupted else "sent",
        result.sent,
        by_type,
        settings.topic_prefix,
        result.elapsed,
        f"; {result.skipped} line(s) skipped" if result.skipped else "",
    )
    if result.interrupted or result.error:
        # Event ids make a second run harmless: what already arrived is deduplicated.
        logger.warning("the replay is incomplete; running it again is safe")
    return EXIT_INCOMPLETE if result.skipped or result.interrupted or result.error else EXIT_OK


class FileProgress:
    """A rich progress bar (on stderr) over the bytes of the file, with the records so far."""

    def __init__(self, size: int, label: str) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[records]:,} records"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(label, total=max(size, 1), records=0)
        self._progress.start()

    def update(self, records: int, position: int) -> None:
        self._progress.update(self._task, completed=position, records=records)

    def close(self) -> None:
        self._progress.stop()


class LogProgress:
    """A log line every ``interval`` seconds when no terminal shows a bar."""

    def __init__(
        self, size: int, interval: float = 5.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._size = max(size, 1)
        self._interval = interval
        self._monotonic = monotonic
        self._next = monotonic() + interval

    def update(self, records: int, position: int) -> None:
        now = self._monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        logger.info(
            "%d records sent, %.0f%% of the file read", records, 100 * position / self._size
        )

    def close(self) -> None:
        """Nothing to tear down: the summary is logged by ``run``."""
