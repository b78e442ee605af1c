"""Changelog recovery keeps confirmed checkpoints, drops torn ones, and survives compaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stream_app.customers.changelog import (
    CUSTOMER_APPEND_FROM_BYTES,
    CUSTOMER_RECORD_MAX_BYTES,
    MAX_CUSTOMER_PARTS,
    ChangelogReplay,
    checkpoint_records,
)
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.eventlog import LogRecord
from stream_app.kafka import input_topics
from stream_app.settings import Settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate

# (key, value, tag) in log order, as the changelog partition holds them.
Log = list[tuple[bytes, bytes | None, bytes]]
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


def _clock() -> datetime:
    return datetime(2026, 11, 23, tzinfo=UTC)


def _batches(count: int) -> list[list[RawMessage]]:
    config = SimulationConfig(
        seed=11, duration=timedelta(days=4), customers=60, events_target=2400, duplicates=0.05
    )
    records: list[LogRecord] = list(generate(config))
    topics = input_topics(SETTINGS)
    offsets: dict[str, int] = {}
    messages = []
    for record in records:
        topic = topics[record.event_type]
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        messages.append(RawMessage(record.event_type, topic, 0, offset, record.key, record.value))
    size = -(-len(messages) // count)
    return [messages[i : i + size] for i in range(0, len(messages), size)]


def _write(log: Log, state: PartitionState, generation: str, seq: int, torn: bool = False) -> None:
    tag, records = checkpoint_records(state.checkpoint(), generation, seq)
    if torn:
        records = records[: len(records) // 2]  # the crash came before the marker
    log.extend((key, value, tag) for key, value in records)


def _checkpointed(
    log: Log, state: PartitionState, batches: list[list[RawMessage]], generation: str
) -> PartitionState:
    """Ingest each batch, then write a complete checkpoint of it to the log."""
    for seq, batch in enumerate(batches, start=1):
        state.ingest(batch)
        _write(log, state, generation, seq)
    return state


def _recover(log: Log) -> tuple[PartitionState, int]:
    state = PartitionState(0, SETTINGS, _clock)
    replay = ChangelogReplay(state)
    for key, value, tag in log:
        replay.feed(key, value, tag)
    return state, replay.finish()


def _compacted(log: Log) -> Log:
    """What log compaction leaves: the newest record of each key, in log order."""
    newest = {key: index for index, (key, _value, _tag) in enumerate(log)}
    return [entry for index, entry in enumerate(log) if newest[entry[0]] == index]


def _view(state: PartitionState) -> dict[str, Any]:
    return {
        "customers": {c: r.to_json() for c, r in state.customers.items()},
        "partials": {k: dict(a.diffs) for k, a in state.partials.items() if any(a.diffs)},
        "offsets": state.committed_offsets(),
        "watermark": state.watermark_us,
    }


def _reference(batches: list[list[RawMessage]]) -> dict[str, Any]:
    state = PartitionState(0, SETTINGS, _clock)
    for batch in batches:
        state.ingest(batch)
    state.checkpoint()
    return _view(state)


def test_a_torn_checkpoint_is_discarded_and_a_new_generation_carries_on() -> None:
    batches = _batches(5)
    log: Log = []
    first = _checkpointed(log, PartitionState(0, SETTINGS, _clock), batches[:3], "g1")
    first.ingest(batches[3])
    _write(log, first, "g1", 4, torn=True)

    recovered, torn = _recover(log)
    assert torn > 0
    assert _view(recovered) == _reference(batches[:3])

    # The next owner reads batch 4 again from the recovered offsets, then batch 5.
    for batch in batches[3:]:
        recovered.ingest(batch)
    _write(log, recovered, "g2", 1)
    expected = _reference(batches)
    again, torn = _recover(log)
    assert torn == 0  # the torn keys were rewritten by g2
    assert _view(again) == expected


def test_recovery_after_compaction_keeps_every_confirmed_write() -> None:
    batches = _batches(6)
    log: Log = []
    _checkpointed(log, PartitionState(0, SETTINGS, _clock), batches[:3], "g1")
    _checkpointed(log, _recover(log)[0], batches[3:], "g2")

    compacted = _compacted(log)
    assert len(compacted) < len(log)
    # Only each generation's last marker is left, yet nothing confirmed is lost.
    assert sum(key.startswith(b"m:") for key, _v, _t in compacted) == 2
    for candidate in (log, compacted):
        recovered, torn = _recover(candidate)
        assert torn == 0
        assert _view(recovered) == _reference(batches)


def _one_busy_customer(count: int, start: datetime, first_offset: int = 0) -> list[RawMessage]:
    """``count`` purchases of one shopper id, 20 s apart (a guest checkout, say)."""
    topic = input_topics(SETTINGS)["purchase"]
    messages = []
    for i in range(count):
        moment = (start + timedelta(seconds=20 * i)).isoformat().replace("+00:00", "Z")
        value = orjson.dumps(
            {
                "event_id": f"evt-{start:%j}-{first_offset + i:08d}-0123456789abcdef",
                "customer_id": "guest",
                "occurred_at": moment,
                "order_id": f"order-{start:%j}-{first_offset + i}",
                "amount": "12.50",
                "currency": SETTINGS.reporting_currency,
            }
        )
        messages.append(RawMessage("purchase", topic, 0, first_offset + i, b"guest", value))
    return messages


def test_a_customer_too_big_for_one_record_is_split_and_recovered() -> None:
    """12,000 events of one customer are about 1 MB: Kafka's default record limit."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    batches = [_one_busy_customer(12_000, start)]
    log: Log = []
    state = _checkpointed(log, PartitionState(0, SETTINGS, _clock), batches, "g1")
    assert state.customers["guest"].parts >= 3
    assert all(len(value or b"") <= CUSTOMER_RECORD_MAX_BYTES for _k, value, _t in log)
    for candidate in (log, _compacted(log)):
        recovered, torn = _recover(candidate)
        assert torn == 0
        assert len(recovered.customers["guest"].events) == 12_000
        assert _view(recovered) == _reference(batches)

    # 40 days on, the old events fold into the base state: the parts they filled go away.
    later = start + timedelta(days=40)
    batches.append(_one_busy_customer(10, later, first_offset=12_000))
    state.ingest(batches[1])
    tag, records = checkpoint_records(state.checkpoint(), "g1", 2)
    log.extend((key, value, tag) for key, value in records)
    assert state.customers["guest"].parts == 0
    tombstones = [key for key, value in records if value is None and key.startswith(b"e:")]
    assert len(tombstones) >= 3
    for candidate in (log, _compacted(log)):
        recovered, torn = _recover(candidate)
        assert torn == 0
        assert len(recovered.customers["guest"].events) == 10
        assert _view(recovered) == _reference(batches)


def test_a_torn_checkpoint_of_a_big_customer_keeps_the_previous_one() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    first, second = (
        _one_busy_customer(6_000, start),
        _one_busy_customer(6_000, start + timedelta(seconds=20 * 6_000), first_offset=6_000),
    )
    log: Log = []
    state = _checkpointed(log, PartitionState(0, SETTINGS, _clock), [first], "g1")
    state.ingest(second)
    _write(log, state, "g1", 2, torn=True)
    recovered, torn = _recover(log)
    assert torn > 0
    assert _view(recovered) == _reference([first])
    # The next owner's first checkpoint rewrites (or, for parts it does not have, deletes)
    # every torn key, so no later recovery finds them again.
    _write(log, recovered, "g2", 1)
    again, torn = _recover(log)
    assert torn == 0
    assert _view(again) == _reference([first])
    # It then reads the rest again.
    again.ingest(second)
    _write(log, again, "g3", 1)
    final, torn = _recover(log)
    assert torn == 0
    assert _view(final) == _reference([first, second])


def _customer_writes(records: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes | None]]:
    return [(key, value) for key, value in records if key.startswith((b"c:", b"e:"))]


def _written_bytes(records: list[tuple[bytes, bytes | None]]) -> int:
    return sum(len(key) + len(value or b"") for key, value in _customer_writes(records))


def _step(log: Log, state: PartitionState, batch: list[RawMessage], seq: int) -> list[Any]:
    """Ingest one batch and checkpoint it; returns the checkpoint's customer records."""
    state.ingest(batch)
    tag, records = checkpoint_records(state.checkpoint(), "g1", seq)
    log.extend((key, value, tag) for key, value in records)
    return _customer_writes(records)


def _assert_recovers(log: Log, state: PartitionState) -> None:
    for candidate in (log, _compacted(log)):
        recovered, torn = _recover(candidate)
        assert torn == 0
        assert _view(recovered) == _view(state)


def test_a_big_customer_checkpoint_writes_its_new_events_not_its_history() -> None:
    """A busy customer used to be rewritten whole (here 0.8 MB) for every new event."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    history = _one_busy_customer(12_000, start)
    log: Log = []
    state = PartitionState(0, SETTINGS, _clock)
    full = _step(log, state, history, 1)
    assert _written_bytes(full) > 750_000
    batches = [history]
    offset = 12_000
    for seq in range(2, 12):
        batch = _one_busy_customer(5, start + timedelta(days=3, minutes=seq), offset)
        if seq == 5:
            # Arrives late, between events already persisted: recovery must sort it in.
            batch += _one_busy_customer(1, start + timedelta(hours=5, seconds=7), offset + 5)
        offset += len(batch)
        batches.append(batch)
        writes = _step(log, state, batch, seq)
        # The head (states, part count) and one part with the new events.
        assert [key[:2] for key, _ in writes] == [b"c:", b"e:"]
        assert _written_bytes(writes) < 2_000
        _assert_recovers(log, state)
    assert len(state.customers["guest"].events) == 12_051
    reference = _reference(batches)
    assert _view(state)["partials"] == reference["partials"]
    assert _view(state)["customers"] == reference["customers"]

    # A new owner carries on appending from what it recovered.
    recovered, _torn = _recover(log)
    batch = _one_busy_customer(5, start + timedelta(days=4), offset)
    writes = _step(log, recovered, batch, 12)
    assert _written_bytes(writes) < 2_000
    _assert_recovers(log, recovered)


def test_a_big_customer_is_rewritten_whole_after_many_appended_parts() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    log: Log = []
    state = PartitionState(0, SETTINGS, _clock)
    _step(log, state, _one_busy_customer(3_000, start), 1)
    whole = state.customers["guest"].parts
    assert whole >= 1
    offset = 3_000
    seq = 1
    while state.customers["guest"].parts < MAX_CUSTOMER_PARTS:
        seq += 1
        _step(
            log, state, _one_busy_customer(2, start + timedelta(days=2, minutes=seq), offset), seq
        )
        offset += 2
    seq += 1
    writes = _step(log, state, _one_busy_customer(2, start + timedelta(days=3), offset), seq)
    # Compacted into as few parts as the first write, the appended ones deleted.
    assert state.customers["guest"].parts == whole
    tombstones = [key for key, value in writes if value is None]
    assert len(tombstones) == MAX_CUSTOMER_PARTS - whole
    _assert_recovers(log, state)


def test_a_torn_append_is_discarded_and_its_part_deleted() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    log: Log = []
    state = PartitionState(0, SETTINGS, _clock)
    first = _one_busy_customer(3_000, start)
    _step(log, state, first, 1)
    state.ingest(_one_busy_customer(5, start + timedelta(days=2), 3_000))
    tag, records = checkpoint_records(state.checkpoint(), "g1", 2)
    log.extend((key, value, tag) for key, value in records[:-1])  # crashed before the marker
    recovered, torn = _recover(log)
    assert torn > 0
    assert _view(recovered) == _reference([first])
    # The next owner deletes the torn part no head counts, and appends again later.
    tag, records = checkpoint_records(recovered.checkpoint(), "g2", 1)
    log.extend((key, value, tag) for key, value in records)
    assert any(key.startswith(b"e:") and value is None for key, value in records)
    again, torn = _recover(log)
    assert torn == 0
    assert _view(again) == _reference([first])


def test_a_big_customer_is_pruned_in_steps_not_at_every_checkpoint() -> None:
    """Pruning rewrites a big customer whole, so it waits for a 16th of the dedupe horizon."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    horizon = SETTINGS.dedupe_horizon
    log: Log = []
    state = PartitionState(0, SETTINGS, _clock)
    _step(log, state, _one_busy_customer(12_000, start, 0), 1)  # 2 days 18 hours
    # An hour of events is past the horizon now: still only the new events are written.
    writes = _step(
        log, state, _one_busy_customer(5, start + horizon + timedelta(hours=1), 12_000), 2
    )
    assert _written_bytes(writes) < 2_000
    assert len(state.customers["guest"].events) == 12_005
    # Two days past, beyond the slack: pruned to the horizon and rewritten whole.
    later = start + horizon + timedelta(days=2)
    writes = _step(log, state, _one_busy_customer(5, later, 12_005), 3)
    events = state.customers["guest"].events
    assert events[0][0] >= int((later - horizon).timestamp()) * 1_000_000
    assert len(events) < 12_000
    assert _written_bytes(writes) > CUSTOMER_APPEND_FROM_BYTES
    assert any(value is None for _key, value in writes)  # parts it no longer needs
    _assert_recovers(log, state)
