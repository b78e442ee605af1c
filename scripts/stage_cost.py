"""The customer stage in process, without Kafka: its cost per event on the benchmark's data.

Feeds ``PartitionState`` the records ``kpi bench`` produces (same simulator, seed and mix),
partitioned as the producer does, a thousand records per topic and partition at a time, and
drains, checkpoints and pauses the collector as the engine does. Timings on a shared machine
move by a third between runs; for comparing two versions of the code, count instructions
instead, which repeat to within 0.3%:

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        .venv/bin/python scripts/stage_cost.py --events 50000 --runs 1

minus the same command with ``--runs 0`` (start-up and data generation), divided by the
events. docs/benchmarks.md lists what each change saved this way.
"""

from __future__ import annotations

import argparse
import logging
import time
import zlib
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from stream_app.customers.partition import PartitionState
from stream_app.eventlog import LogRecord
from stream_app.gctune import collection_paused
from stream_app.kafka import input_topics
from stream_app.settings import Settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate

logger = logging.getLogger("stage_cost")

PARTITIONS = 4
CHUNK = 1_000
CHECKPOINT_EVERY = 10_000


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _queues(records: list[LogRecord], settings: Settings) -> dict[tuple[int, str], list[Message]]:
    topics = input_topics(settings)
    queues: dict[tuple[int, str], list[Message]] = {}
    for record in records:
        partition = zlib.crc32(record.key or b"") % PARTITIONS
        queue = queues.setdefault((partition, record.event_type), [])
        topic = topics[record.event_type]
        queue.append(Message(topic, partition, len(queue), record.key, record.value))
    return queues


def run_once(
    queues: dict[tuple[int, str], list[Message]], settings: Settings
) -> tuple[float, list[PartitionState]]:
    """Process every queued record once; returns the CPU seconds it took, and the states."""
    topics = input_topics(settings)
    states = [
        PartitionState(partition, settings, lambda: datetime.now(UTC))
        for partition in range(PARTITIONS)
    ]
    positions = dict.fromkeys(queues, 0)
    since_checkpoint = [0] * PARTITIONS
    started = time.process_time()
    while any(positions[key] < len(queue) for key, queue in queues.items()):
        for partition, state in enumerate(states):
            runs = []
            taken = 0
            for (owner, event_type), queue in queues.items():
                if owner != partition:
                    continue
                position = positions[(owner, event_type)]
                chunk = queue[position : position + CHUNK]
                positions[(owner, event_type)] = position + len(chunk)
                taken += len(chunk)
                if chunk:
                    runs.append((event_type, chunk))
            with collection_paused():
                state.offer_runs(runs)
                # As the engine: up to the newest time of the slowest topic still being read.
                live = [
                    state.heads.get(topics[event_type])
                    for (owner, event_type), queue in queues.items()
                    if owner == partition and positions[(owner, event_type)] < len(queue)
                ]
                if None in live:
                    continue
                state.drain(min(head for head in live if head is not None) if live else None)
            since_checkpoint[partition] += taken
            if since_checkpoint[partition] >= CHECKPOINT_EVERY:
                with collection_paused():
                    state.checkpoint()
                since_checkpoint[partition] = 0
    for state in states:
        with collection_paused():
            state.drain()
            state.checkpoint()
    return time.process_time() - started, states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="simulated events")
    parser.add_argument("--runs", type=int, default=3, help="passes over them (best counts)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    config = SimulationConfig(
        seed=args.seed,
        duration=timedelta(days=1),
        customers=max(100, args.events // 20),
        events_target=args.events,
    )
    records = list(generate(config))
    queues = _queues(records, settings)
    timings = [run_once(queues, settings)[0] for _ in range(args.runs)]
    if timings:
        best = min(timings)
        logger.info(
            "%d records: best of %d runs %.3f s CPU, %.2f us per event",
            len(records),
            len(timings),
            best,
            best / len(records) * 1e6,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
