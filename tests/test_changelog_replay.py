"""Changelog recovery keeps confirmed checkpoints, drops torn ones, and survives compaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stream_app.customers.partition import (
    CUSTOMER_RECORD_MAX_BYTES,
    ChangelogReplay,
    PartitionState,
    RawMessage,
    checkpoint_records,
)
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
                "event_id": f"evt-{start:%j}-{i:08d}-0123456789abcdef",
                "customer_id": "guest",
                "occurred_at": moment,
                "order_id": f"order-{start:%j}-{i}",
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
