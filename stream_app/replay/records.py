"""Read replay input: JSONL event logs and mapped CSV exports, as messages for the input topics."""

from __future__ import annotations

import codecs
import csv
import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

import orjson

from schemas import EVENT_MODELS, TOPIC_SUFFIXES, EventType
from schemas.events import field_names
from stream_app.eventlog import LogRecord

logger = logging.getLogger(__name__)

Format = Literal["jsonl", "csv"]

EVENT_TYPES: Final[tuple[EventType, ...]] = tuple(TOPIC_SUFFIXES)
# Every field some event type knows; --map and --set must name one of these.
EVENT_FIELDS: Final[dict[EventType, tuple[str, ...]]] = {
    event_type: field_names(model) for event_type, model in EVENT_MODELS.items()
}
KNOWN_FIELDS: Final[frozenset[str]] = frozenset(
    name for fields in EVENT_FIELDS.values() for name in fields
)
# Fields whose JSON type is an integer; a CSV cell is text, so these are converted.
INTEGER_FIELDS: Final = frozenset({"score", "schema_version"})
_INTEGER = re.compile(r"[+-]?[0-9]+")

# Reasons replay itself gives for rows it cannot route to a topic (not contract reasons).
INVALID_LINE: Final = "invalid_line"
UNKNOWN_EVENT_TYPE: Final = "unknown_event_type"


class SourceError(Exception):
    """The input cannot be replayed at all: unreadable file, or a mapping that does not fit it."""


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """One message for an input topic, and the line of the file it starts on."""

    line: int
    event_type: EventType
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Unroutable:
    """A row that names no event type replay can send: it is skipped and reported."""

    line: int
    reason: str
    message: str
    field: str | None = None


SourceItem = ReplayRecord | Unroutable


def detect_format(path: Path, explicit: Format | None = None) -> Format:
    """``explicit`` if given, else CSV for a ``.csv`` file and JSONL for anything else."""
    if explicit is not None:
        return explicit
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def deterministic_event_id(file_name: str, row: int) -> str:
    """The id of data row ``row`` (from 1) of ``file_name``: the same on every replay."""
    digest = hashlib.sha256(f"{file_name}\x00{row}".encode()).hexdigest()
    return f"replay-{digest[:32]}"


class _CountingLines:
    """The lines of a binary file, counting the bytes consumed (for the progress bar)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.position = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._handle:
            self.position += len(line)
            yield line


class Source:
    """An input file, iterated as records; ``position`` says how many bytes were read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.size = path.stat().st_size
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
        self._lines: _CountingLines | None = None

    @property
    def position(self) -> int:
        return self._lines.position if self._lines is not None else 0

    def check_readable(self) -> None:
        """SourceError now, before anything is sent, if the file cannot be opened."""
        try:
            with self.path.open("rb"):
                pass
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def __iter__(self) -> Iterator[SourceItem]:
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with handle:
            self._lines = _CountingLines(handle)
            yield from self._items(self._lines)

    def _items(self, lines: _CountingLines) -> Iterator[SourceItem]:
        raise NotImplementedError


class JsonlSource(Source):
    """An event log as written by ``kpi simulate --out`` (see ``stream_app.eventlog``).

    Values are sent byte for byte, malformed ones included, so the processor sees exactly
    what was logged. A line whose ``key`` is null is keyed by its value's ``customer_id``:
    a message without a key would land on an arbitrary partition, away from the customer's
    other events.
    """

    def _items(self, lines: _CountingLines) -> Iterator[SourceItem]:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = LogRecord.from_line(line)
            except (ValueError, TypeError) as exc:
                # TypeError: a value_b64 that is not a string (a number, an object).
                yield Unroutable(number, INVALID_LINE, f"not an event log line: {exc}")
                continue
            key = record.key if record.key is not None else _customer_key(record.value)
            yield ReplayRecord(number, record.event_type, key, record.value)


def _customer_key(value: bytes | None) -> bytes | None:
    if not value:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    customer = data.get("customer_id") if isinstance(data, dict) else None
    return customer.encode("utf-8", "surrogateescape") if isinstance(customer, str) else None


@dataclass(frozen=True)
class CsvMapping:
    """How the columns of a CSV export become events.

    ``event_type`` gives every row one type; otherwise ``type_column`` names the column
    holding it, translated by ``type_values`` (a value that is already an event type or a
    topic suffix such as ``purchases`` needs no entry). ``columns`` maps event fields to
    column names; a column named like a field is used for it unless mapped otherwise.
    ``constants`` sets fields to the same value on every row. Without an ``event_id``
    column, each row gets an id derived from the file name and its row number.
    """

    event_type: EventType | None = None
    type_column: str | None = None
    type_values: Mapping[str, EventType] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)
    constants: Mapping[str, str] = field(default_factory=dict)
    delimiter: str = ","
    encoding: str = "utf-8-sig"

    def __post_init__(self) -> None:
        if (self.event_type is None) == (self.type_column is None):
            raise ValueError("give either an event type for all rows or a type column")
        if self.type_values and self.type_column is None:
            raise ValueError("a type value mapping needs a type column")
        for name in (*self.columns, *self.constants):
            if name not in KNOWN_FIELDS:
                known = ", ".join(sorted(KNOWN_FIELDS))
                raise ValueError(f"unknown event field {name!r}; fields are: {known}")
        both = sorted(set(self.columns) & set(self.constants))
        if both:
            raise ValueError(f"field(s) both mapped to a column and set: {', '.join(both)}")
        if len(self.delimiter) != 1:
            raise ValueError("the delimiter must be one character")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None

    def event_type_of(self, value: str) -> EventType | None:
        """The event type a type-column value stands for, if any."""
        if value in self.type_values:
            return self.type_values[value]
        for event_type, suffix in TOPIC_SUFFIXES.items():
            if value in (event_type, suffix):
                return event_type
        return None

    def field_columns(self, header: list[str]) -> dict[str, int]:
        """Column index of every field read from the file; SourceError if one is missing."""
        index = {name: position for position, name in reversed(list(enumerate(header)))}
        wanted = [self.type_column] if self.type_column is not None else []
        wanted.extend(self.columns.values())
        missing = [name for name in wanted if name not in index]
        if missing:
            raise SourceError(
                f"column(s) {', '.join(repr(m) for m in missing)} not in the header; "
                f"columns are: {', '.join(repr(h) for h in header)}"
            )
        positions = {name: index[column] for name, column in self.columns.items()}
        for name in KNOWN_FIELDS:
            # Same-named columns fill the fields nobody mapped or set explicitly.
            if name not in positions and name not in self.constants and name in index:
                positions[name] = index[name]
        return positions


def convert_cell(field_name: str, text: str) -> Any:
    """A cell as the JSON value the schema expects; unconvertible text stays text.

    Replay does not validate: a bad value goes out as it is and the processor dead-letters
    it (``--dry-run`` shows which). Amounts and costs stay decimal strings, which the schema
    reads exactly; integer fields become JSON integers.
    """
    if field_name in INTEGER_FIELDS and _INTEGER.fullmatch(text):
        return int(text)
    return text


class CsvSource(Source):
    """A CSV export with a header row, turned into events by a ``CsvMapping``.

    Cells are stripped of surrounding blanks; an empty cell leaves its field out (so an
    empty region means ``unknown`` and an empty required field is reported as missing).
    Only the fields of each row's event type are sent; other columns stay private.
    """

    def __init__(self, path: Path, mapping: CsvMapping) -> None:
        super().__init__(path)
        self.mapping = mapping

    def header(self) -> list[str]:
        """The header row, checked against the mapping before anything is sent."""
        for item in self._rows():
            return item[1]
        raise SourceError(f"{self.path} is empty: a CSV needs a header row")

    def _rows(self) -> Iterator[tuple[int, list[str]]]:
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with handle:
            yield from self._parse(_CountingLines(handle))

    def _parse(self, lines: _CountingLines) -> Iterator[tuple[int, list[str]]]:
        """Rows with the line each starts on; a quoted cell may span several lines."""
        reader = csv.reader(
            _decoded(lines, self.mapping.encoding), delimiter=self.mapping.delimiter
        )
        consumed = 0
        try:
            for row in reader:
                start = consumed + 1
                consumed = reader.line_num
                if row:
                    yield start, row
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{self.path}:{consumed + 1}: not {self.mapping.encoding} ({exc.reason}); "
                "see --encoding"
            ) from None
        except csv.Error as exc:
            raise SourceError(f"{self.path}:{consumed + 1}: {exc}") from None

    def _items(self, lines: _CountingLines) -> Iterator[SourceItem]:
        mapping = self.mapping
        rows = self._parse(lines)
        header_row = next(rows, None)
        if header_row is None:
            raise SourceError(f"{self.path} is empty: a CSV needs a header row")
        header = [name.strip() for name in header_row[1]]
        positions = mapping.field_columns(header)
        type_position = header.index(mapping.type_column) if mapping.type_column else None
        generate_ids = "event_id" not in positions and "event_id" not in mapping.constants
        for row_number, (line, row) in enumerate(rows, start=1):
            cells = [cell.strip() for cell in row]
            event_type = mapping.event_type
            if type_position is not None:
                raw_type = _cell(cells, type_position)
                event_type = mapping.event_type_of(raw_type)
                if event_type is None:
                    yield Unroutable(
                        line,
                        UNKNOWN_EVENT_TYPE,
                        f"{raw_type!r} is not an event type; map it with --type-map "
                        f"{raw_type or 'VALUE'}=TYPE (types: {', '.join(EVENT_TYPES)})",
                        mapping.type_column,
                    )
                    continue
            assert event_type is not None
            event = self._event(event_type, cells, positions)
            if generate_ids:
                event = {"event_id": deterministic_event_id(self.path.name, row_number), **event}
            customer = event.get("customer_id")
            key = customer.encode() if isinstance(customer, str) else None
            yield ReplayRecord(line, event_type, key, orjson.dumps(event))

    def _event(
        self, event_type: EventType, cells: list[str], positions: Mapping[str, int]
    ) -> dict[str, Any]:
        event: dict[str, Any] = {}
        for name in EVENT_FIELDS[event_type]:
            if name in self.mapping.constants:
                text = self.mapping.constants[name]
            elif name in positions:
                text = _cell(cells, positions[name])
            else:
                continue
            if text:
                event[name] = convert_cell(name, text)
        return event


def _decoded(lines: Iterable[bytes], encoding: str) -> Iterator[str]:
    """Decode line by line; the decoder keeps state, so a character may straddle lines."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    for line in lines:
        yield decoder.decode(line)
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def _cell(cells: list[str], position: int) -> str:
    """A cell of a row; rows shorter than the header have empty trailing cells."""
    return cells[position] if position < len(cells) else ""


def open_source(path: Path, file_format: Format, mapping: CsvMapping | None) -> Source:
    """The source for ``path``; a CSV is checked against its mapping here, before any send."""
    if file_format == "jsonl":
        source: Source = JsonlSource(path)
        source.check_readable()
        return source
    if mapping is None:
        raise SourceError("a CSV needs --event-type or --type-column")
    source = CsvSource(path, mapping)
    mapping.field_columns([name.strip() for name in source.header()])
    return source
