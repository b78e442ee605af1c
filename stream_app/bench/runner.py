"""The measurements of ``kpi bench``: plain-consumer limit, engine throughput, latency, memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from stream_app.devstack import DevStack, DevStackError, ManagedProcess, free_port
from stream_app.eventlog import LogRecord
from stream_app.kafka import ensure_topics, input_topics
from stream_app.redis_keys import snapshot_key, updates_channel
from stream_app.settings import Settings
from stream_app.verify.compare import check_snapshot, read_snapshot
from stream_app.verify.reference import Reference, filter_records, reference_from_intake

logger = logging.getLogger("kpi.bench")

# Lowered so that a fresh consumer group joins in seconds on the embedded broker.
WORKER_ENV = {
    "KPI_BROKER_SESSION_TIMEOUT": "6s",
    "KPI_BROKER_REBALANCE_TIMEOUT": "6s",
    "KPI_BROKER_HEARTBEAT_INTERVAL": "1s",
    "KPI_LOG_LEVEL": "WARNING",
}
PRODUCE_BATCH = 2000
Progress = Callable[[str, int, int], None]


@dataclass
class Deployment:
    """One isolated run: its own app id (consumer groups, internal topics) and topic prefix."""

    bootstrap: str
    redis_url: str
    partitions: int
    data_dir: Path
    app_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    # ``--lifecycle``: the workers run lifecycle stages, segments and churn risk.
    lifecycle: bool = False

    @property
    def prefix(self) -> str:
        return f"{self.app_id}."

    def settings(self) -> Settings:
        return Settings(
            app_id=self.app_id,
            topic_prefix=self.prefix,
            kafka_bootstrap_servers=self.bootstrap,
            redis_url=self.redis_url,
            topic_partitions=self.partitions,
            lifecycle_enabled=self.lifecycle,
        )

    def env(self, web_port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
        env.update(WORKER_ENV)
        env.update(
            {
                "KPI_APP_ID": self.app_id,
                "KPI_TOPIC_PREFIX": self.prefix,
                "KPI_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KPI_REDIS_URL": self.redis_url,
                "KPI_TOPIC_PARTITIONS": str(self.partitions),
                "KPI_DATA_DIR": str(self.data_dir / self.app_id),
                "KPI_WEB_PORT": str(web_port),
            }
        )
        if self.lifecycle:
            env["KPI_LIFECYCLE_ENABLED"] = "true"
        return env


@dataclass
class Worker:
    process: ManagedProcess
    web_port: int

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.web_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body: dict[str, Any] = json.load(response)
                return body
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
            return body
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return None

    def rss_bytes(self) -> int:
        """Resident memory of the worker process, from /proc."""
        status = Path(f"/proc/{self.process.popen.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise DevStackError("no VmRSS in /proc status")


@dataclass(frozen=True)
class EngineResult:
    workers: int
    events: int
    seconds: float
    produce_seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def events_per_s_per_worker(self) -> float:
        return self.events_per_s / self.workers


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not interpolated)."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


async def produce(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    progress: Progress | None = None,
    total: int = 0,
) -> float:
    """Send (topic, key, value) records as fast as the broker takes them; returns seconds."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        sent = 0
        for topic, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= PRODUCE_BATCH:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending.clear()
                if progress:
                    progress("produce", sent, total)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def as_sends(
    settings: Settings, records: Iterable[LogRecord]
) -> list[tuple[str, bytes | None, bytes | None]]:
    topics = input_topics(settings)
    return [(topics[r.event_type], r.key, r.value) for r in records]


async def plain_consumer(
    bootstrap: str, topics: Sequence[str], partitions: int, expected: int, passes: int = 3
) -> list[float]:
    """The limit: read and JSON-decode ``expected`` messages ``passes`` times; the seconds
    from first to last message of each pass.

    One pass takes under a second here, so a single stall or quiet moment on the machine
    moves it by a third; the caller takes the median of the passes.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
        consumer.assign(assigned)
        return [await _read_all(consumer, assigned, expected) for _ in range(passes)]
    finally:
        await consumer.stop()


async def _read_all(
    consumer: AIOKafkaConsumer, assigned: list[TopicPartition], expected: int
) -> float:
    await consumer.seek_to_beginning(*assigned)
    seen = 0
    first: float | None = None
    while seen < expected:
        batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
        for records in batch.values():
            if first is None and records:
                first = time.perf_counter()
            for record in records:
                # Not contextlib.suppress: a context manager per message would slow the
                # baseline and flatter the ratio.
                try:  # noqa: SIM105
                    orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    pass
            seen += len(records)
    assert first is not None
    return time.perf_counter() - first


def start_workers(stack: DevStack, deployment: Deployment, count: int) -> list[Worker]:
    workers = []
    for index in range(count):
        port = free_port()
        process = stack.spawn(
            f"{deployment.app_id}-worker-{index}",
            [sys.executable, "-m", "stream_app", "worker"],
            env=deployment.env(port),
        )
        workers.append(Worker(process, port))
    return workers


def wait_split(workers: Sequence[Worker], partitions: int, timeout_s: float = 120.0) -> None:
    """Wait until the workers own every customer partition between them, none idle."""
    deadline = time.monotonic() + timeout_s
    owned: list[int] = []
    while time.monotonic() < deadline:
        for worker in workers:
            if not worker.process.alive:
                raise DevStackError(f"a worker exited; see {worker.process.log_path}")
        healths = [worker.health() for worker in workers]
        owned = [len(h["customer_partitions"]) if h else 0 for h in healths]
        if sum(owned) == partitions and all(owned):
            return
        time.sleep(0.5)
    raise DevStackError(f"workers did not split the partitions in {timeout_s}s: {owned}")


def kpis_match(client: redis.Redis, reference: Reference, settings: Settings) -> bool:
    """Whether the current snapshot of segment ``all`` matches the reference in every window."""
    for spec in settings.windows:
        snapshot = read_snapshot(client, spec.name, "all")
        if not snapshot or check_snapshot(reference, spec, "all", snapshot, "current"):
            return False
    return True


def run_engine(
    stack: DevStack,
    deployment: Deployment,
    records: Sequence[LogRecord],
    reference: Reference,
    workers: int,
    timeout_s: float,
    progress: Progress | None = None,
) -> tuple[EngineResult, list[Worker]]:
    """Every event in the topics first; then the workers, timed from the first event one reads
    until Redis matches the reference.

    A backlog keeps the producer off the CPU while the engine runs, and the clock starts at
    the input, not at the worker's start-up and group join.
    """
    settings = deployment.settings()
    client = redis.Redis.from_url(deployment.redis_url)
    client.flushdb()
    asyncio.run(ensure_topics(settings))
    produce_s = asyncio.run(
        produce(deployment.bootstrap, as_sends(settings, records), progress, len(records))
    )
    running = start_workers(stack, deployment, workers)
    deadline = time.monotonic() + timeout_s
    while not kpis_match(client, reference, settings):
        if time.monotonic() > deadline:
            raise DevStackError(f"KPIs did not match the reference within {timeout_s}s")
        for worker in running:
            if not worker.process.alive:
                raise DevStackError(f"a worker exited; see {worker.process.log_path}")
        time.sleep(0.05)
    finished = datetime.now(UTC)
    client.close()
    starts = [first_input_at(worker) for worker in running]
    started = min(start for start in starts if start is not None)
    seconds = (finished - started).total_seconds()
    return EngineResult(workers, len(records), seconds, produce_s), running


def first_input_at(worker: Worker) -> datetime | None:
    """When the worker first read input, from its /health."""
    health = worker.health()
    stamp = health.get("first_input_at") if health else None
    return datetime.fromisoformat(stamp) if stamp else None


def reference_for(records: Sequence[LogRecord], settings: Settings) -> Reference:
    return reference_from_intake(filter_records(records, settings), settings)


async def measure_latency(
    deployment: Deployment, rate_per_s: float, duration_s: float
) -> list[float]:
    """Signups of new customers at a steady rate, stamped now; seconds until Redis shows each.

    Event ``i`` is visible once a snapshot of ``kpi:1h:all`` counts more than ``i`` new
    customers; the snapshots arrive on the pub/sub channel the dashboards use.
    """
    settings = deployment.settings()
    window = min(settings.windows, key=lambda spec: spec.size).name
    topic = input_topics(settings)["signup"]
    client = aioredis.Redis.from_url(deployment.redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(updates_channel(window, "all"))
    # Redis is flushed before each measurement: every new customer is one of ours.
    baseline = await _new_customers(client, window)
    seen: list[tuple[float, int]] = []
    total = int(rate_per_s * duration_s)
    all_seen = asyncio.Event()

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            snapshot = orjson.loads(message["data"])
            seen.append((time.perf_counter(), int(snapshot["new_customers"]) - baseline))
            if seen[-1][1] >= total:
                all_seen.set()

    listener = asyncio.create_task(listen())
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, linger_ms=1)
    await producer.start()
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    sent_at: list[float] = []
    started = time.perf_counter()
    run = uuid.uuid4().hex[:6]
    try:
        # In small bursts: a sleep per event cannot keep thousands of events per second.
        # Each burst goes as one record batch per partition (placed as the producer's
        # default partitioner would): the load generator shares the cores with the worker
        # it measures, and a ``send`` per event cost it most of a core at 35,000 a second.
        while len(sent_at) < total:
            due = min(total, int((time.perf_counter() - started) * rate_per_s) + 1)
            now_text = datetime.now(UTC).isoformat()
            batches: dict[int, Any] = {}
            for i in range(len(sent_at), due):
                customer = f"lat-{run}-{i}"
                key = customer.encode()
                value = orjson.dumps(
                    {
                        "event_id": f"{customer}-signup",
                        "customer_id": customer,
                        "occurred_at": now_text,
                        "region": "EU",
                        "schema_version": 1,
                    }
                )
                partition = partitioner(key, partitions, partitions)
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                sent_at.append(time.perf_counter())
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await producer.send_batch(batch, topic, partition=partition)
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            for partition, batch in batches.items():
                await producer.send_batch(batch, topic, partition=partition)
            await asyncio.sleep(0.005)
        await producer.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), timeout=30)
    finally:
        await producer.stop()
        listener.cancel()
        await pubsub.aclose()
        await client.aclose()
    latencies = []
    position = 0
    for i, sent in enumerate(sent_at):
        while position < len(seen) and seen[position][1] <= i:
            position += 1
        if position == len(seen):
            raise DevStackError(f"event {i} of {total} never showed up in Redis")
        latencies.append(seen[position][0] - sent)
    return latencies


async def _new_customers(client: aioredis.Redis, window: str) -> int:
    value = await client.hget(snapshot_key(window, "all"), "new_customers")
    return int(json.loads(value)) if value else 0


def signups(
    settings: Settings, count: int, start: datetime, prefix: str = "mem"
) -> Iterable[tuple[str, bytes | None, bytes | None]]:
    """``count`` distinct customers signing up, one per second of event time from ``start``."""
    topic = input_topics(settings)["signup"]
    for i in range(count):
        customer = f"{prefix}-{i}"
        occurred = start + timedelta(seconds=i)
        yield (
            topic,
            customer.encode(),
            orjson.dumps(
                {
                    "event_id": f"{customer}-signup",
                    "customer_id": customer,
                    "occurred_at": occurred.isoformat(),
                    "region": ("EU", "NA", "APAC")[i % 3],
                    "schema_version": 1,
                }
            ),
        )


def wait_accepted(workers: Sequence[Worker], expected: int, timeout_s: float) -> None:
    """Wait until the workers' metrics count ``expected`` accepted events between them."""
    deadline = time.monotonic() + timeout_s
    total = 0
    while time.monotonic() < deadline:
        total = sum(_accepted(worker) for worker in workers)
        if total >= expected:
            return
        time.sleep(0.5)
    raise DevStackError(f"only {total} of {expected} events accepted in {timeout_s}s")


def _accepted(worker: Worker) -> int:
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("kpi_events_total{")
        )
    )
