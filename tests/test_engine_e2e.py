"""End to end on the real broker and Redis: 2 workers, 4 partitions, and a SIGKILL midway.

Each test ends with ``kpi verify``'s comparison at zero mismatches: snapshots, histories and
cohorts."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from stream_app.devstack import DevStack, free_port, redis_answers
from stream_app.eventlog import LogRecord, write_log
from stream_app.kafka import ensure_topics
from stream_app.settings import Settings
from stream_app.simulate.config import SimulationConfig
from stream_app.simulate.model import generate
from stream_app.verify.compare import Report
from stream_app.verify.reference import filter_records
from tests.conftest import StackEnv, WorkerProcess, verify_until_clean
from tests.conftest import describe as _describe
from tests.conftest import produce as _produce
from tests.conftest import stack_settings as _settings

pytestmark = pytest.mark.integration

EVENTS = 20_000


def _records(seed: int) -> list[LogRecord]:
    config = SimulationConfig(
        seed=seed,
        duration=timedelta(days=40),
        customers=1000,
        events_target=EVENTS,
        inject_bad=0.01,
        duplicates=0.05,
        late=0.01,
    )
    return list(generate(config))


def _wait_for_zero_mismatches(
    settings: Settings, records: list[LogRecord], workers: list[WorkerProcess], timeout_s: float
) -> Report:
    """Poll the independent verification until Redis matches it (or time runs out)."""
    intake = filter_records(records, settings)
    report = verify_until_clean(settings, intake, workers, timeout_s)
    assert intake.too_late > 0
    assert intake.duplicates > 0
    assert intake.rejected
    return report


def _fresh(stack: StackEnv) -> Settings:
    """The stack's settings, with its Redis emptied and its topics made."""
    settings = _settings(stack)
    flush = redis.Redis.from_url(settings.redis_url)
    flush.flushdb()
    flush.close()
    asyncio.run(ensure_topics(settings))
    return settings


def _start_two(stack: StackEnv) -> list[WorkerProcess]:
    workers = [stack.start_worker("a"), stack.start_worker("b")]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        owned = [len(w.get_json("/health")["customer_partitions"]) for w in _alive(workers)]
        if owned == [2, 2]:
            return workers
        time.sleep(1.0)
    raise AssertionError(f"partitions not split across two workers: {owned}")


def _alive(workers: list[WorkerProcess]) -> list[WorkerProcess]:
    for worker in workers:
        worker.wait_assigned(partitions=1)
    return workers


def test_two_workers_publish_exact_kpis(stack: StackEnv, tmp_path: Path) -> None:
    settings = _fresh(stack)
    records = _records(seed=11)
    with (tmp_path / "events.jsonl").open("wb") as handle:
        write_log(records, handle)
    workers = _start_two(stack)

    asyncio.run(_produce(settings, records))

    report = _wait_for_zero_mismatches(settings, records, workers, timeout_s=180)
    assert not report.mismatches, _describe(report)
    assert report.snapshots_checked >= 4 * 8
    assert report.history_checked > 1000


def test_three_workers_each_own_whole_customer_shards(stack: StackEnv) -> None:
    """Three workers on four partitions: every partition number is one member's in all five
    input topics (aiokafka's default round robin split them once the members were three),
    nobody crashes, and the KPIs are exact."""
    settings = _fresh(stack)
    records = _records(seed=14)
    workers = [stack.start_worker(name) for name in ("a", "b", "c")]
    deadline = time.monotonic() + 120
    owned: list[list[int]] = []
    while time.monotonic() < deadline:
        owned = sorted(w.get_json("/health")["customer_partitions"] for w in _alive(workers))
        if sum(len(partitions) for partitions in owned) == 4 and all(owned):
            break
        time.sleep(1.0)
    assert sorted(p for partitions in owned for p in partitions) == [0, 1, 2, 3], owned

    asyncio.run(_produce(settings, records))

    report = _wait_for_zero_mismatches(settings, records, workers, timeout_s=180)
    assert not report.mismatches, _describe(report)
    for worker in workers:
        assert worker.popen.poll() is None, worker.log_tail()
        assert "is assigned for" not in worker.log_tail(5000), worker.log_tail()


def test_a_worker_killed_midway_loses_and_doubles_nothing(stack: StackEnv) -> None:
    settings = _fresh(stack)
    records = _records(seed=12)
    workers = _start_two(stack)
    half = len(records) // 2

    asyncio.run(_produce(settings, records[:half]))
    # Let the victim make some progress (and checkpoints), then kill it without warning.
    victim = workers[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        metrics = victim.get_text("/metrics")
        if "kpi_events_total" in metrics and 'event_type="purchase"}' in metrics:
            break
        time.sleep(0.5)
    time.sleep(1.0)
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(10)

    asyncio.run(_produce(settings, records[half:]))
    restarted = stack.start_worker("a-restarted")
    restarted.wait_assigned(partitions=1)

    report = _wait_for_zero_mismatches(settings, records, [workers[1], restarted], timeout_s=240)
    assert not report.mismatches, _describe(report)
    # Cohorts too (contract section 6): every published cohort equals the recount, and the
    # 40 days make several weekly and two monthly cohorts in every segment.
    assert report.cohorts_checked > 50, report.cohorts_checked
    # The victim's partitions really were rebuilt from the changelog, not started empty.
    logs = restarted.log_tail(2000) + workers[1].log_tail(2000)
    recovered = [int(n) for n in re.findall(r"recovered partition \d+: (\d+) customers", logs)]
    assert any(count > 0 for count in recovered), recovered


def test_redis_outage_keeps_state_and_rewrites_snapshots(
    stack: StackEnv, artifacts_dir: Path
) -> None:
    """Redis stopped mid-stream and started again empty: processing goes on, KPIs come back."""
    port = free_port()
    redis_stack = DevStack(log_dir=artifacts_dir / "redis-outage")
    url = redis_stack.start_redis(port)
    try:
        stack.redis_url = url
        settings = _settings(stack)
        asyncio.run(ensure_topics(settings))
        records = _records(seed=13)
        worker = stack.start_worker()
        worker.wait_assigned(partitions=4)
        third = len(records) // 3
        asyncio.run(_produce(settings, records[:third]))
        time.sleep(3)
        redis_stack.stop()
        assert not redis_answers(url)

        asyncio.run(_produce(settings, records[third:]))
        # The worker keeps consuming while Redis is down.
        deadline = time.monotonic() + 60
        accepted = 0.0
        while time.monotonic() < deadline:
            text = worker.get_text("/metrics")
            accepted = sum(
                float(v) for v in re.findall(r"^kpi_events_total\{[^}]*\} (\S+)$", text, re.M)
            )
            if accepted >= 0.9 * EVENTS:
                break
            time.sleep(1)
        assert accepted >= 0.9 * EVENTS, worker.log_tail()
        assert worker.popen.poll() is None

        redis_stack.start_redis(port)
        report = _wait_for_zero_mismatches(settings, records, [worker], timeout_s=120)
        assert not report.mismatches, _describe(report)
    finally:
        redis_stack.stop()
