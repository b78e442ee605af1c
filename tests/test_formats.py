"""Versioned state: what a worker of this version does with every format it may meet.

Changelogs and the segment table outlive the process that wrote them, and partials messages
cross versions during an upgrade. Format 1 (no version field) must be read as it was
written; a newer format must stop the worker with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer

from stream_app.customers.changelog import (
    CHECKPOINT_HEADER,
    MARKER_PREFIX,
    PARTIAL_PREFIX,
    ChangelogReplay,
    checkpoint_records,
)
from stream_app.customers.partition import PartitionState
from stream_app.kafka import changelog_topic, ensure_topics, partials_topic
from stream_app.kpis import formats
from stream_app.kpis.formats import FORMAT, LAYOUTS, FormatError, layout_migration
from stream_app.kpis.formulas import BASE_COUNTS
from stream_app.segments.store import SegmentStore
from tests.conftest import StackEnv, metric_samples, stack_settings
from tests.test_changelog_replay import SETTINGS, Log, _batches, _clock, _reference, _view
from tests.test_intake_integration import _produce

REFUSED_EXIT = 3  # documented in docs/operations.md


def test_the_code_writes_the_newest_format_with_the_current_layout() -> None:
    assert max(LAYOUTS) == FORMAT, "add the layout of the new format to LAYOUTS"
    assert LAYOUTS[FORMAT] == BASE_COUNTS, (
        "BASE_COUNTS changed: freeze the new layout as a new format in "
        "stream_app/kpis/formats.py and bump FORMAT, so older changelogs are migrated"
    )


def test_a_layout_migration_maps_counts_by_name() -> None:
    old = ("orders", "gone", "clicks")
    new = ("clicks", "orders", "added")
    migrate = layout_migration(old, new)
    assert migrate is not None
    assert migrate([5, 7, 11]) == [11, 5, 0]
    assert layout_migration(new, new) is None
    with pytest.raises(FormatError, match="2 counts where its format has 3"):
        migrate([1, 2])


def _log_of(batches: list[list[Any]], *, marker_format: int | None) -> Log:
    """A changelog of ``batches``, one checkpoint each, with markers in ``marker_format``.

    None writes markers without a version field, as format 1 did. Window-sum vectors are
    written in that format's layout (``LAYOUTS``), as a worker of that format wrote them.
    """
    state = PartitionState(0, SETTINGS, _clock)
    layout = formats.LAYOUTS.get(1 if marker_format is None else marker_format, BASE_COUNTS)
    to_layout = layout_migration(BASE_COUNTS, layout)
    log: Log = []
    for seq, batch in enumerate(batches, start=1):
        state.ingest(batch)
        tag, records = checkpoint_records(state.checkpoint(), "g1", seq)
        for key, value in records:
            if key.startswith(PARTIAL_PREFIX) and value is not None and to_layout is not None:
                value = orjson.dumps(to_layout(orjson.loads(value)))
            if key.startswith(MARKER_PREFIX) and value is not None:
                marker = orjson.loads(value)
                del marker["v"]
                if marker_format is not None:
                    marker["v"] = marker_format
                value = orjson.dumps(marker)
            log.append((key, value, tag))
    return log


def _recover(log: Log) -> PartitionState:
    state = PartitionState(0, SETTINGS, _clock)
    replay = ChangelogReplay(state)
    for key, value, tag in log:
        replay.feed(key, value, tag)
    replay.finish()
    return state


def test_a_format_1_changelog_recovers_the_same_state() -> None:
    batches = _batches(3)
    assert _view(_recover(_log_of(batches, marker_format=None))) == _reference(batches)


def test_a_format_1_changelog_with_another_layout_is_migrated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if format 1 had laid its vectors out in reverse: the recovered windows must come
    # out in today's layout all the same.
    reversed_layout = tuple(reversed(BASE_COUNTS))
    monkeypatch.setitem(formats.LAYOUTS, 1, reversed_layout)  # type: ignore[index]
    batches = _batches(3)
    log = _log_of(batches, marker_format=None)  # vectors written in the reversed layout
    assert any(key.startswith(PARTIAL_PREFIX) for key, _value, _tag in log)
    assert _view(_recover(log)) == _reference(batches)


def test_a_changelog_in_a_newer_format_is_refused_with_the_cure() -> None:
    log = _log_of(_batches(2), marker_format=FORMAT + 1)
    with pytest.raises(FormatError) as refused:
        _recover(log)
    message = str(refused.value)
    assert f"format {FORMAT + 1}" in message
    assert "newer version" in message
    assert "KPI_TOPIC_PREFIX" in message


@pytest.mark.parametrize("bad", ["2", -1, 0, None, 2.0])
def test_a_marker_whose_format_is_no_number_is_refused(bad: object) -> None:
    log = _log_of(_batches(1), marker_format=FORMAT)
    key, value, tag = log[-1]
    log[-1] = (key, orjson.dumps({**orjson.loads(value or b"{}"), "v": bad}), tag)
    with pytest.raises(FormatError, match="not a format number"):
        _recover(log)


def _update(version: int | None) -> dict[str, Any]:
    """One entry in ``version``'s layout: 1 for every count format 1 had, else 0."""
    layout = LAYOUTS[1 if version is None else min(version, FORMAT)]
    vector = [1 if name in LAYOUTS[1] else 0 for name in layout]
    message: dict[str, Any] = {"src": 1, "wm": 10, "seg": "all", "e": [["1h", 3, vector]]}
    if version is not None:
        message["v"] = version
    return message


def test_the_segment_stage_reads_format_1_messages_and_table_entries() -> None:
    old, new = SegmentStore(), SegmentStore()
    assert old.apply_update(_update(None), 0) == new.apply_update(_update(FORMAT), 0)
    expected = list(new.aggregates["all"].totals["1h"].entries())
    assert expected
    assert list(old.aggregates["all"].totals["1h"].entries()) == expected

    persisted = new.aggregates["all"].chunk("1h", 1, 0)
    assert persisted is not None
    assert persisted["v"] == FORMAT
    from_current, from_format_1 = SegmentStore(), SegmentStore()
    from_current.load_chunk("all|1|1h|0", persisted, 0)
    to_format_1 = layout_migration(BASE_COUNTS, LAYOUTS[1])
    assert to_format_1 is not None
    # Format 1 stored the entries themselves, in its own layout.
    entries_1 = {k: to_format_1(vector) for k, vector in persisted["e"].items()}
    from_format_1.load_chunk("all|1|1h|0", entries_1, 0)
    assert list(from_current.aggregates["all"].totals["1h"].entries()) == expected
    assert list(from_format_1.aggregates["all"].totals["1h"].entries()) == expected


def test_the_segment_stage_applies_nothing_of_a_newer_format() -> None:
    store = SegmentStore()
    with pytest.raises(FormatError, match="newer version"):
        store.apply_update(_update(FORMAT + 1), 0)
    with pytest.raises(FormatError, match="newer version"):
        store.load_chunk("all|1|1h|0", {"v": FORMAT + 1, "e": {"3": [1] * 18}}, 0)
    assert store.watermarks == {}
    assert all(not aggregate.sources for aggregate in store.aggregates.values())


async def _plant_marker(stack: StackEnv, marker: dict[str, Any]) -> None:
    """Write one confirmed checkpoint marker to changelog partition 0 of the stack."""
    settings = stack_settings(stack)
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            changelog_topic(settings),
            orjson.dumps(marker),
            key=MARKER_PREFIX + b"g-newer",
            partition=0,
            headers=[(CHECKPOINT_HEADER, b"g-newer:1")],
        )
    finally:
        await producer.stop()


@pytest.mark.integration
def test_a_worker_refuses_to_start_on_a_changelog_of_a_newer_format(
    stack: StackEnv, tmp_path: Path
) -> None:
    asyncio.run(_plant_marker(stack, {"v": FORMAT + 1, "offsets": {}, "wm": None}))
    worker = stack.start_worker()
    try:
        status = worker.popen.wait(timeout=90)
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert status == REFUSED_EXIT, log[-3000:]
    assert f"changelog partition 0 was written in format {FORMAT + 1}" in log
    assert "refused to start" in log
    assert "Traceback" not in log


async def _send_partials(stack: StackEnv, values: list[bytes]) -> None:
    settings = stack_settings(stack)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(partials_topic(settings), value, key=b"all", partition=0)
    finally:
        await producer.stop()


@pytest.mark.integration
def test_the_segment_stage_counts_partials_it_cannot_apply_and_goes_on(stack: StackEnv) -> None:
    worker = stack.start_worker()
    worker.wait_assigned(partitions=4)
    newer = orjson.dumps({"v": FORMAT + 1, "src": 0, "wm": 1, "seg": "all", "e": []})
    broken = [b"not json", b"[1, 2]", orjson.dumps({"v": FORMAT}), b'{"src": "x"}']
    asyncio.run(_send_partials(stack, [newer, *broken]))
    expected = {'reason="format"': 1.0, 'reason="undecodable"': float(len(broken))}
    deadline = time.monotonic() + 60
    refused: dict[str, float] = {}
    while time.monotonic() < deadline and refused != expected:
        assert worker.popen.poll() is None, worker.log_tail()
        refused = metric_samples(worker.get_text("/metrics"), "kpi_stage_messages_refused_total")
        time.sleep(0.5)
    assert refused == expected, worker.log_tail()
    # The stage still works: a valid event after them reaches Redis.
    signup = {
        "event_id": "after-1",
        "customer_id": "c-after",
        "occurred_at": "2026-11-02T09:15:00+00:00",
        "region": "EU",
    }
    asyncio.run(
        _produce(stack.bootstrap, [(stack.topic("signups"), b"c-after", orjson.dumps(signup))])
    )
    client = redis.Redis.from_url(stack.redis_url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not client.hget("kpi:1h:all", "new_customers"):
            assert worker.popen.poll() is None, worker.log_tail()
            time.sleep(0.5)
        assert client.hget("kpi:1h:all", "new_customers") == b"1", worker.log_tail()
    finally:
        client.close()
    assert "Traceback" not in worker.log_path.read_text(errors="replace")
