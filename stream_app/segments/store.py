"""The segment stage's memory: each source partition's partial sums and their exact totals."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from stream_app.kpis.formats import FORMAT, VERSION_KEY, format_of, migrated, migration
from stream_app.kpis.windows import WIDTH, DiffArray

# Entries of one source are persisted in chunks of this many window indexes, so that one
# update rewrites a small table value rather than a source's whole history.
CHUNK = 64


def chunk_key(segment: str, source: int, spec_name: str, chunk: int) -> str:
    return f"{segment}|{source}|{spec_name}|{chunk}"


def parse_chunk_key(key: str) -> tuple[str, int, str, int]:
    segment, source, spec_name, chunk = key.rsplit("|", 3)
    return segment, int(source), spec_name, int(chunk)


@dataclass
class SegmentAggregate:
    """One segment: absolute partials per (spec, source) and the totals over sources."""

    segment: str
    partition: int
    sources: dict[tuple[str, int], dict[int, list[int]]] = field(default_factory=dict)
    totals: dict[str, DiffArray] = field(default_factory=dict)
    # The same entries by (spec, source, chunk): a table write reads one chunk, not a scan.
    chunks: dict[tuple[str, int, int], dict[int, list[int]]] = field(default_factory=dict)

    def set_entry(self, spec_name: str, source: int, k: int, vector: list[int] | None) -> bool:
        """Set one absolute entry of a source; True when it changed the totals."""
        entries = self.sources.setdefault((spec_name, source), {})
        old = entries.get(k)
        new = vector if vector is not None and any(vector) else None
        if old == new:
            return False
        chunk_key = (spec_name, source, k // CHUNK)
        if new is None:
            del entries[k]
            chunk = self.chunks[chunk_key]
            del chunk[k]
            if not chunk:
                del self.chunks[chunk_key]
        else:
            entries[k] = list(new)
            self.chunks.setdefault(chunk_key, {})[k] = entries[k]
        totals = self.totals.get(spec_name)
        if totals is None:
            totals = self.totals[spec_name] = DiffArray()
        zeros = [0] * WIDTH
        delta = [b - a for a, b in zip(old or zeros, new or zeros, strict=True)]
        for metric, value in enumerate(delta):
            if value:
                totals.add(k, metric, value)
        return True

    def is_empty(self) -> bool:
        """No source holds a non-zero entry: no event of the segment is left in any window.

        A refold can leave a segment so (a late signup moves a customer's counts from
        ``region:unknown`` to their region): it is then retired (docs/architecture.md).
        """
        return not any(self.sources.values())

    def keys_of(self, spec_name: str, source: int) -> list[int]:
        return list(self.sources.get((spec_name, source), {}))

    def chunk(self, spec_name: str, source: int, chunk: int) -> dict[str, Any] | None:
        """The persisted form of one chunk of one source's entries; None when it has none."""
        entries = self.chunks.get((spec_name, source, chunk))
        if not entries:
            return None
        return {VERSION_KEY: FORMAT, "e": {str(k): entries[k] for k in sorted(entries)}}


@dataclass
class SegmentStore:
    """All segments this worker has seen, and the watermark each source partition reported."""

    aggregates: dict[str, SegmentAggregate] = field(default_factory=dict)
    # (segment-stage partition, source partition) -> watermark in microseconds
    watermarks: dict[tuple[int, int], int] = field(default_factory=dict)
    # The same, but moved only by a source's watermark tick, which it sends after every
    # update of a checkpoint: up to it, every segment of the partition has that source's counts.
    confirmed: dict[tuple[int, int], int] = field(default_factory=dict)
    # (segment-stage partition, source partition) whose latest tick said it is catching up
    # on a backlog: its next checkpoints will move the counts a lot, and soon.
    # The value is when that source expects to be done (``monotonic`` time), None if unknown.
    catching_up: dict[tuple[int, int], float | None] = field(default_factory=dict)
    monotonic: Callable[[], float] = time.monotonic

    def aggregate(self, segment: str, partition: int) -> SegmentAggregate:
        aggregate = self.aggregates.get(segment)
        if aggregate is None:
            aggregate = self.aggregates[segment] = SegmentAggregate(segment, partition)
        return aggregate

    def apply_update(
        self, message: dict[str, Any], partition: int
    ) -> tuple[list[str], list[tuple[str, int, str, int]]]:
        """Apply one message from the customer stage; returns changed segments and chunks.

        Raises ``FormatError`` for a message in a format this worker cannot read, before
        anything is applied.
        """
        source = int(message["src"])
        how = migration(format_of(message, f"a partials message from source partition {source}"))
        watermark = message.get("wm")
        key = (partition, source)
        if watermark is not None and watermark > self.watermarks.get(key, -1):
            self.watermarks[key] = int(watermark)
        segment = message.get("seg")
        if segment is None:
            if watermark is not None and watermark > self.confirmed.get(key, -1):
                self.confirmed[key] = int(watermark)
            if message.get("cu"):
                eta_ms = message.get("eta_ms")
                self.catching_up[key] = (
                    self.monotonic() + eta_ms / 1000 if isinstance(eta_ms, int) else None
                )
            else:
                self.catching_up.pop(key, None)
            return [], []
        aggregate = self.aggregate(segment, partition)
        touched: set[tuple[str, int, str, int]] = set()
        seen: set[tuple[str, int]] = set()
        for spec_name, k, vector in message["e"]:
            seen.add((spec_name, k))
            if aggregate.set_entry(
                spec_name, source, k, None if vector is None else migrated(vector, how)
            ):
                touched.add((segment, source, spec_name, k // CHUNK))
        if message.get("full"):
            # A resynchronisation lists every entry the source has: drop the rest.
            for (spec_name, src), entries in list(aggregate.sources.items()):
                if src != source:
                    continue
                for k in [k for k in entries if (spec_name, k) not in seen]:
                    aggregate.set_entry(spec_name, source, k, None)
                    touched.add((segment, source, spec_name, k // CHUNK))
        return [segment], sorted(touched)

    def watermark(self, partition: int) -> int | None:
        """The newest event time any source partition reported to this partition."""
        values = [wm for (p, _src), wm in self.watermarks.items() if p == partition]
        return max(values) if values else None

    def is_catching_up(self, partition: int) -> bool:
        """Whether a source partition feeding ``partition`` last said it is in a backlog."""
        return any(p == partition for p, _src in self.catching_up)

    def backlog_ends_within(self, partition: int, horizon_s: float) -> bool:
        """Whether a source of ``partition`` expects its backlog done within ``horizon_s``.

        An end already past counts too: the source said it was close and is not done yet.
        """
        limit = self.monotonic() + horizon_s
        return any(
            p == partition and end is not None and end <= limit
            for (p, _src), end in self.catching_up.items()
        )

    def confirmed_watermarks(self, partition: int) -> dict[int, int]:
        """Per source partition, the watermark up to which its counts have all arrived."""
        return {src: wm for (p, src), wm in self.confirmed.items() if p == partition}

    def load_chunk(self, key: str, value: dict[str, Any], partition: int) -> None:
        """Load one recovered table value; raises ``FormatError`` if it is unreadable."""
        segment, source, spec_name, _chunk = parse_chunk_key(key)
        # Format 1 values were the entries themselves: index -> vector.
        version = format_of(value, f"segment table entry {key!r}")
        entries = value["e"] if version > 1 else value
        how = migration(version)
        aggregate = self.aggregate(segment, partition)
        for k, vector in entries.items():
            aggregate.set_entry(spec_name, source, int(k), migrated(vector, how))

    def retire(self, aggregate: SegmentAggregate) -> bool:
        """Forget an empty segment; False if it is not that one or holds counts again."""
        if self.aggregates.get(aggregate.segment) is not aggregate or not aggregate.is_empty():
            return False
        del self.aggregates[aggregate.segment]
        return True

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for segment in [s for s, a in self.aggregates.items() if a.partition in gone]:
            del self.aggregates[segment]
        for key in [key for key in self.watermarks if key[0] in gone]:
            del self.watermarks[key]
        for key in [key for key in self.confirmed if key[0] in gone]:
            del self.confirmed[key]
        self.catching_up = {key: end for key, end in self.catching_up.items() if key[0] not in gone}

    def owned(self, partitions: set[int]) -> Iterator[SegmentAggregate]:
        return (a for a in self.aggregates.values() if a.partition in partitions)
