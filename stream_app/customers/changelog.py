"""The customer stage's changelog: how a partition's state is written, and read back.

Kept apart from the logic that uses it (``partition.PartitionState``): this module knows
the record keys, the layout of big customers and the checkpoint protocol, and nothing of
events or windows. Every record carries a header ``ckp: <generation>:<seq>``; a checkpoint
ends with a marker that confirms it (docs/architecture.md, "Checkpoints").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from stream_app.customers.timeline import CustomerRecord, StoredEvent
from stream_app.kpis.formats import FORMAT, VERSION_KEY, Migration, format_of, migration

if TYPE_CHECKING:
    from stream_app.customers.partition import Checkpoint, PartitionState

# The header of every record: ``<generation>:<seq>`` of the checkpoint that wrote it.
CHECKPOINT_HEADER = "ckp"
CUSTOMER_PREFIX = b"c:"
# The further events of a customer too big for one record: ``e:<index>|<customer>``.
PART_PREFIX = b"e:"
# A customer record's events per changelog record at most this many bytes (about): Kafka
# refuses records over 1 MB by default, and one shopper id can carry 100,000 events a month
# (a guest checkout, a bot, a busy business account).
CUSTOMER_RECORD_MAX_BYTES = 256 * 1024
# A customer whose record is bigger is written so that later checkpoints append its new
# events as a part instead of rewriting them all: without it, every checkpoint touching a
# customer with 60,000 events in the dedupe horizon wrote 4 MB for one new event.
CUSTOMER_APPEND_FROM_BYTES = 16 * 1024
# Appended parts before a customer is rewritten whole (compacted into the fewest parts).
MAX_CUSTOMER_PARTS = 32
PARTIAL_PREFIX = b"p:"
# A customer's lifecycle state (``lifecycle/tracker.py``): ``l:<customer>``.
LIFECYCLE_PREFIX = b"l:"
# The partition's churn model with its pending examples (``lifecycle/risk.py``).
RISK_KEY = b"r:model"
# A checkpoint's marker: the prefix plus the writer's generation. Compaction keeps the newest
# record of each key, so one key per generation keeps each generation's last marker, which
# confirms every earlier checkpoint of that generation. b"m" alone was the key before.
MARKER_PREFIX = b"m:"
LEGACY_MARKER_KEY = b"m"


def checkpoint_records(
    checkpoint: Checkpoint, generation: str, seq: int
) -> tuple[bytes, list[tuple[bytes, bytes | None]]]:
    """The tag and the changelog records of one checkpoint: its writes, then its marker."""
    tag = f"{generation}:{seq}".encode()
    marker = {VERSION_KEY: FORMAT, "offsets": checkpoint.offsets, "wm": checkpoint.watermark_us}
    if checkpoint.dead_letter_mark is not None:
        marker["dl"] = checkpoint.dead_letter_mark
    if checkpoint.lifecycle_mark is not None:
        marker["lc"] = checkpoint.lifecycle_mark
    return tag, [*checkpoint.changelog, (MARKER_PREFIX + generation.encode(), orjson.dumps(marker))]


class ChangelogReplay:
    """Rebuilds a partition from its changelog, read in order, keeping confirmed writes only.

    A write tagged ``<generation>:<seq>`` counts once a later marker of the same generation
    has a seq at least as high: one writer checkpoints a partition one checkpoint after the
    other, so its marker confirms every earlier checkpoint too. That still holds after
    compaction, which removes older markers. Writes no marker confirms were torn by a crash;
    ``finish`` discards them and marks their keys for rewriting. A marker also names the
    format its checkpoint was written in: older ones are migrated as they load, and a newer
    one raises ``FormatError`` (the worker must not build on state it cannot read).
    """

    def __init__(self, state: PartitionState) -> None:
        self.state = state
        self.records = 0
        self._pending: dict[bytes, tuple[str, int, bytes | None]] = {}
        # The newest confirmed value of each key, decoded once at the end: a worker writes a
        # busy customer at many checkpoints, and only the last write counts.
        self._confirmed: dict[bytes, tuple[bytes | None, Migration | None]] = {}
        self._tag: tuple[bytes, str, int] = (b"", "", -1)

    def feed(self, key: bytes | None, value: bytes | None, tag: bytes) -> None:
        self.records += 1
        if key is None:
            return
        # The records of one checkpoint share their tag: parse it once.
        last_tag, generation, seq = self._tag
        if tag != last_tag:
            generation, _, seq_text = tag.decode(errors="replace").rpartition(":")
            seq = int(seq_text) if seq_text.isdigit() else -1
            self._tag = (tag, generation, seq)
        if key == LEGACY_MARKER_KEY or key.startswith(MARKER_PREFIX):
            marker = orjson.loads(value) if value is not None else None
            version = (
                FORMAT
                if marker is None
                else format_of(marker, f"changelog partition {self.state.partition}")
            )
            how = migration(version)
            confirmed = [
                pending_key
                for pending_key, (pending_generation, pending_seq, _) in self._pending.items()
                if pending_generation == generation and pending_seq <= seq
            ]
            for pending_key in confirmed:
                self._confirmed[pending_key] = (self._pending.pop(pending_key)[2], how)
            if marker is not None:
                self.state.load_marker(marker)
        else:
            self._pending[key] = (generation, seq, value)

    def finish(self) -> int:
        """Load what was confirmed, discard unconfirmed writes and mark their keys dirty;
        returns how many were discarded."""
        load = self.state.load
        for key, (value, how) in self._confirmed.items():
            load(key, value, how)
        self._confirmed.clear()
        torn = len(self._pending)
        for key in self._pending:
            self.state.mark_dirty(key)
        self._pending.clear()
        self.state.finish_recovery()
        return torn


def customer_records(customer: str, record: CustomerRecord) -> list[tuple[bytes, bytes | None]]:
    """A customer's changelog records: one, or a head and parts when it is big.

    A small customer is one record, rewritten whole. A big one is a head with the states
    and the number of parts, and parts with the events; as long as nothing was pruned,
    the next writes append its new events as further parts, so a checkpoint writes what
    changed, not the customer's whole history. Every ``MAX_CUSTOMER_PARTS`` parts, and
    after a prune, it is rewritten whole; parts it had beyond that get a tombstone so that
    compaction drops them.
    """
    key = CUSTOMER_PREFIX + customer.encode()
    previous_parts = record.parts
    unsaved = record.unsaved
    if unsaved and previous_parts < MAX_CUSTOMER_PARTS:
        pieces = _event_pieces(unsaved)
        record.parts += len(pieces)
        record.unsaved = []
        return [
            (key, _head(record)),
            *(
                (part_key(index, customer), piece)
                for index, piece in enumerate(pieces, 1 + previous_parts)
            ),
        ]
    value = orjson.dumps(record.to_json())
    if len(value) <= CUSTOMER_APPEND_FROM_BYTES:
        record.unsaved = None
        if not previous_parts:
            return [(key, value)]  # the common case: small, and always was
        record.parts = 0
        records: list[tuple[bytes, bytes | None]] = [(key, value)]
    else:
        pieces = _event_pieces(record.events)
        record.parts = len(pieces)
        record.unsaved = []
        records = [(key, _head(record))]
        records.extend(
            (part_key(index, customer), piece) for index, piece in enumerate(pieces, start=1)
        )
    records.extend(
        (part_key(index, customer), None) for index in range(record.parts + 1, previous_parts + 1)
    )
    return records


def _head(record: CustomerRecord) -> bytes:
    """The head of a big customer: what its whole record has but the events, and how many
    parts hold those (its first signup too: without it, the cohort was lost at recovery
    once the signup was pruned)."""
    head = record.to_json()
    head["ev"] = []
    head["parts"] = record.parts
    return orjson.dumps(head)


def _event_pieces(events: list[StoredEvent]) -> list[bytes]:
    """``events`` as encoded parts of at most ``CUSTOMER_RECORD_MAX_BYTES`` (about) each."""
    encoded = orjson.dumps({"ev": events})
    if len(encoded) <= CUSTOMER_RECORD_MAX_BYTES:
        return [encoded]
    # Sized from the average event, then halved until every piece fits: event sizes differ
    # (ids and campaigns are up to 128 characters).
    per_piece = max(1, len(events) * CUSTOMER_RECORD_MAX_BYTES // len(encoded))
    while True:
        pieces = [
            orjson.dumps({"ev": events[i : i + per_piece]})
            for i in range(0, len(events), per_piece)
        ]
        if per_piece == 1 or all(len(piece) <= CUSTOMER_RECORD_MAX_BYTES for piece in pieces):
            return pieces
        per_piece //= 2


def part_key(index: int, customer: str) -> bytes:
    return PART_PREFIX + f"{index}|{customer}".encode()


def parse_part_key(key: bytes) -> tuple[int, str]:
    index, customer = key[len(PART_PREFIX) :].decode().split("|", 1)
    return int(index), customer


def partial_key(spec_name: str, segment: str, k: int) -> bytes:
    return PARTIAL_PREFIX + f"{spec_name}|{k}|{segment}".encode()


def parse_partial_key(key: bytes) -> tuple[str, str, int]:
    spec_name, k, segment = key[len(PARTIAL_PREFIX) :].decode().split("|", 2)
    return spec_name, segment, int(k)
