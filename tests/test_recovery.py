"""Reading a changelog back from the real broker, in one go or prefetched and then resumed.

A restarted worker starts reading the partitions it owned last before the group assigns
them (``Prefetch``); whatever is written to the changelog in between (another owner's last
checkpoints) must still be part of the state it recovers.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_app.customers.changelog import CHECKPOINT_HEADER, checkpoint_records
from stream_app.customers.partition import PartitionState, RawMessage
from stream_app.customers.recovery import AssignmentMemo, ChangelogReader, Prefetch
from stream_app.settings import Settings
from tests.test_changelog_replay import SETTINGS, Log, _batches, _clock, _reference, _view


def _log(batches: list[list[RawMessage]], state: PartitionState, first_seq: int) -> Log:
    """Checkpoint ``state`` after each batch, as generation g1 from ``first_seq`` on."""
    log: Log = []
    for seq, batch in enumerate(batches, start=first_seq):
        state.ingest(batch)
        tag, records = checkpoint_records(state.checkpoint(), "g1", seq)
        log.extend((key, value, tag) for key, value in records)
    return log


async def _write(bootstrap: str, topic: str, log: Log) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(
                topic, value, key=key, partition=0, headers=[(CHECKPOINT_HEADER, tag)]
            )
            for key, value, tag in log
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _topic(bootstrap: str) -> str:
    name = f"changelog-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return name


@pytest.mark.integration
def test_a_prefetched_changelog_resumes_with_what_was_written_after_it(broker: str) -> None:
    settings = SETTINGS.model_copy(update={"kafka_bootstrap_servers": broker})
    batches = _batches(4)

    async def scenario() -> PartitionState:
        topic = await _topic(broker)
        writer = PartitionState(0, SETTINGS, _clock)
        await _write(broker, topic, _log(batches[:2], writer, 1))
        prefetch = Prefetch()
        prefetch.start(topic, [PartitionState(0, SETTINGS, _clock)], settings)
        reader = await prefetch.take(0)
        assert reader is not None
        # The previous owner was not done: its last checkpoints land after the prefetch read.
        await _write(broker, topic, _log(batches[2:], writer, 3))
        try:
            assert await reader.read_to_end() is None  # read to the end
            reader.replay.finish()
        finally:
            await reader.close()
        return reader.replay.state

    recovered = asyncio.run(scenario())
    assert _view(recovered) == _reference(batches)


@pytest.mark.integration
def test_a_prefetch_of_a_partition_the_group_gives_elsewhere_is_discarded(broker: str) -> None:
    settings = SETTINGS.model_copy(update={"kafka_bootstrap_servers": broker})

    async def scenario() -> tuple[ChangelogReader | None, ChangelogReader | None]:
        topic = await _topic(broker)
        prefetch = Prefetch()
        prefetch.start(topic, [PartitionState(0, SETTINGS, _clock)], settings)
        await prefetch.discard()
        return await prefetch.take(0), await prefetch.take(1)

    assert asyncio.run(scenario()) == (None, None)


def _settings(tmp_path: Path, instance: str = "") -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path, topic_partitions=4, group_instance_id=instance
    )


def test_the_memo_remembers_the_last_assignment_per_instance(tmp_path: Path) -> None:
    AssignmentMemo(_settings(tmp_path, "worker-a")).write([3, 1])
    AssignmentMemo(_settings(tmp_path, "worker-b")).write([0])
    assert AssignmentMemo(_settings(tmp_path, "worker-a")).read() == [1, 3]
    assert AssignmentMemo(_settings(tmp_path, "worker-b")).read() == [0]
    assert AssignmentMemo(_settings(tmp_path)).read() == []  # never written


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b'{"a": 1}', b'[1, "2", 9, -1, 2.0, true, 2]', b"\xff\xfe", b"[" * 5000],
)
def test_a_damaged_memo_costs_only_the_head_start(tmp_path: Path, content: bytes) -> None:
    memo = AssignmentMemo(_settings(tmp_path))
    memo.path.write_bytes(content)
    # Only whole numbers of existing partitions survive: 1 and 2 of the mixed list.
    assert memo.read() in ([], [1, 2])
