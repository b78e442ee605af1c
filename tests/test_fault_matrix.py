"""The fault matrix (issue 27): after each fault, every output tells the same, complete story.

Faults, one stack each (a broker, a Redis and workers of its own): a worker SIGKILLed mid-
stream and restarted; Redis killed and started again empty; the broker restarted (empty, as
Tansu does); a worker and Redis killed together. Outputs, checked in every cell once the
processor is idle, against the independent recount of the events (``kpi verify``'s
reference path) and against each other:

- Redis snapshots and histories: zero mismatches with the recount;
- the ``kpi-updates`` stream and ``crm.kpi-updates``: the latest snapshot of every key equals
  its hash; a key the topic has and Redis has not is a retired segment's final snapshot;
- ``crm.dead-letters``: one letter per rejected input, from a distinct source offset, with
  the recount's reasons;
- alerts: the churn spike fires once and resolves once, in the ``kpi-alerts`` stream and on
  ``crm.kpi-alerts`` alike, also after Redis lost them (they are rebuilt from Kafka).

docs/operations.md ("What each output promises") says how to read each one after a fault.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from schemas import Alert
from stream_app.devstack import DevStack, free_port
from stream_app.eventlog import LogRecord
from stream_app.kafka import ensure_topics, read_topic
from stream_app.redis_keys import ALERTS, SNAPSHOT_PATTERN, UPDATES_STREAM, split_name
from stream_app.settings import Settings
from stream_app.simulate.config import (
    DEFAULT_CAMPAIGNS,
    DEFAULT_START,
    Behaviour,
    Campaign,
    SimulationConfig,
)
from stream_app.simulate.model import generate
from stream_app.simulate.scenarios import ChurnSpike
from stream_app.verify.compare import KEY_FIELD, Mismatch
from stream_app.verify.reference import Intake, filter_records
from tests.conftest import (
    StackEnv,
    WorkerProcess,
    describe,
    produce,
    stack_settings,
    verify_until_clean,
)
from tests.test_faults import QUICK_RESYNC, RESYNC, RestartableBroker, _wait_for_log

pytestmark = pytest.mark.integration

SPIKE_AT = DEFAULT_START + timedelta(days=2, hours=12)
EVENTS = 16_000
# The matrix's own population, apart from the simulator's defaults (calibrated to e-commerce
# benchmarks, they change with them): churnier and busier, so that the EU spike stands out
# of its region's usual churn for its three hours and fires and resolves once.
POPULATION = Behaviour(
    click_rate=0.20,
    purchase_rate=0.05,
    satisfaction_alpha=5.0,
    satisfaction_beta=2.5,
    churn_rate=0.006,
    growth_rate=0.01,
)
# Settled: the recount matches and the outputs agree; a stack that needs longer is broken.
SETTLE_S = 120.0


def _records(
    seed: int,
    start_days: int = 0,
    campaigns: tuple[Campaign, ...] = DEFAULT_CAMPAIGNS,
    events: int = EVENTS,
) -> list[LogRecord]:
    """4 days, malformed (1%) and duplicated (5%) events, and an EU churn spike.

    No late events: the simulator makes them only past 36 days of simulated time (the
    lateness bound is 31 days), too long for this budget; ``tests/test_engine_e2e.py`` has
    them, with a worker killed."""
    start = DEFAULT_START + timedelta(days=start_days)
    spike = SPIKE_AT + timedelta(days=start_days)
    config = SimulationConfig(
        campaigns=campaigns,
        seed=seed,
        start=start,
        duration=timedelta(days=4),
        customers=2_000,
        events_target=events,
        inject_bad=0.01,
        duplicates=0.05,
        behaviour=POPULATION,
        scenarios=(ChurnSpike(region="EU", at=spike, duration=timedelta(hours=3), factor=50),),
    )
    return list(generate(config))


@dataclass
class RestartableRedis:
    """A redis-server of one stack, killed (SIGKILL) and started again empty on its port."""

    servers: DevStack
    port: int = field(default_factory=free_port)
    url: str = ""

    def start(self) -> str:
        self.url = self.servers.start_redis(self.port)
        return self.url

    def kill(self) -> None:
        for process in self.servers.processes:
            process.popen.send_signal(signal.SIGKILL)
            process.popen.wait(10)
        self.servers.processes.clear()


@dataclass
class Stack:
    env: StackEnv
    redis: RestartableRedis
    broker: RestartableBroker
    settings: Settings


@pytest.fixture
def fault_stack(artifacts_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    """A broker, a Redis and (started by the test) workers of this fault alone."""
    broker_port = free_port()
    brokers = DevStack(log_dir=artifacts_dir / "matrix-broker")
    broker = RestartableBroker(brokers, broker_port, brokers.start_broker(broker_port))
    servers = RestartableRedis(DevStack(log_dir=artifacts_dir / "matrix-redis"))
    env = StackEnv(bootstrap=broker.bootstrap, redis_url=servers.start(), tmp_path=tmp_path)
    env.extra[RESYNC] = QUICK_RESYNC
    # Every bucket of the 4 days is evaluated, however fast the backlog is worked off.
    env.extra["KPI_ALERT_LOOKBACK"] = "7d"
    settings = stack_settings(env)
    asyncio.run(ensure_topics(settings))
    yield Stack(env, servers, broker, settings)
    for worker in env.workers:
        worker.stop(signal.SIGKILL)  # the stack goes with it: nothing to shut down cleanly
    servers.servers.stop()
    brokers.stop()


def _start(stack: Stack, count: int) -> list[WorkerProcess]:
    workers = [stack.env.start_worker(f"w{n}") for n in range(count)]
    for worker in workers:
        worker.wait_assigned(partitions=4 // count)
    return workers


def _wait(what: str, check: Any, workers: list[WorkerProcess], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        for worker in workers:
            assert worker.popen.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, f"no {what} within {timeout_s}s"
        time.sleep(0.5)


def _stream_alerts(url: str) -> list[Alert]:
    with redis.Redis.from_url(url) as client:
        return [Alert.model_validate_json(f[b"data"]) for _id, f in client.xrange(ALERTS)]


def _eu_fired(url: str) -> bool:
    return any(a.segment == "region:EU" and a.status == "firing" for a in _stream_alerts(url))


def _split_after_spike(records: list[LogRecord]) -> int:
    """Where the events two hours into the spike begin: its first bucket has closed there."""
    for i, record in enumerate(records):
        try:
            when = datetime.fromisoformat(orjson.loads(record.value or b"")["occurred_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a malformed message
        if when.tzinfo is not None and when >= SPIKE_AT + timedelta(hours=2):
            return i
    raise AssertionError("no event after the spike")


# -- what each output holds ------------------------------------------------------------


def _hashes(url: str) -> dict[str, dict[str, Any]]:
    with redis.Redis.from_url(url) as client:
        out = {}
        for key in client.scan_iter(SNAPSHOT_PATTERN, count=1000):
            name = split_name(key.decode(), "kpi:")
            assert name is not None
            fields = client.hgetall(key)
            out[":".join(name)] = {f.decode(): orjson.loads(v) for f, v in fields.items()}
        return out


def _latest_in_stream(url: str) -> dict[str, dict[str, Any]]:
    with redis.Redis.from_url(url) as client:
        entries = client.xrange(UPDATES_STREAM)
    return _latest(orjson.loads(f[b"data"]) for _id, f in entries)


def _latest(snapshots: Any) -> dict[str, dict[str, Any]]:
    return {f"{s['window']}:{s['segment']}": s for s in snapshots}


def _latest_on_topic(settings: Settings) -> dict[str, dict[str, Any]]:
    values = asyncio.run(read_topic(settings, settings.kpi_updates_topic))
    # Partition order is no time order, but each key lives on one partition.
    return _latest(orjson.loads(value) for value in values)


def _retired(snapshot: dict[str, Any]) -> bool:
    """A retired segment's final snapshot: no count left in it (docs/architecture.md)."""
    meta = {"window", "segment", "window_start", "window_end", "watermark", "updated_at"}
    return all(v in (0, None, "0.00") for k, v in snapshot.items() if k not in meta)


def _disagreements(
    hashes: dict[str, dict[str, Any]], latest: dict[str, dict[str, Any]], absent: Collection[str]
) -> list[str]:
    """Keys whose latest snapshot is not the hash (``absent``: keys expected to be missing)."""
    wrong = [k for k in hashes if k not in absent and latest.get(k) != hashes[k]]
    wrong += [k for k in latest if k not in hashes and not _retired(latest[k])]
    wrong += [k for k in absent if k in latest and latest[k] != hashes.get(k)]
    return sorted(wrong)


@dataclass
class Cells:
    """One fault's row of the matrix: each output's verdict, all reported together."""

    fault: str
    failures: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, output: str, ok: bool, detail: str) -> None:
        if not ok:
            self.failures[output] = detail

    def assert_all(self) -> None:
        print(f"\nfault matrix, {self.fault}: {json.dumps(self.figures, sort_keys=True)}")
        assert not self.failures, f"{self.fault}: " + json.dumps(self.failures, indent=1)


def _check_outputs(
    stack: Stack,
    cells: Cells,
    intake: Intake,
    workers: list[WorkerProcess],
    stale: Collection[str] = (),
    earlier_alerts: int = 0,
    spike: datetime = SPIKE_AT,
) -> None:
    settings = stack.settings
    url = stack.redis.url

    def leftover(mismatch: Mismatch) -> bool:  # a stale segment's keys (broker restart)
        return f"{mismatch.window}:{mismatch.segment}" in stale and mismatch.field == KEY_FIELD

    report = verify_until_clean(settings, intake, workers, SETTLE_S, tolerate=leftover)
    wrong = [m for m in report.mismatches if not leftover(m)]
    cells.check("redis snapshots and history", not wrong, describe(report))
    cells.figures["snapshots"] = report.snapshots_checked
    cells.figures["history entries"] = report.history_checked

    # Idle: the outputs converge once the publisher has nothing left to send.
    deadline = time.monotonic() + 30
    while True:
        hashes = _hashes(url)
        topic, stream = _latest_on_topic(settings), _latest_in_stream(url)
        on_topic = _disagreements(hashes, topic, stale)
        in_stream = _disagreements(hashes, stream, ())
        if not (on_topic or in_stream) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    cells.check("crm.kpi-updates latest = hash", not on_topic, f"{on_topic[:8]}")
    cells.check("kpi-updates stream latest = hash", not in_stream, f"{in_stream[:8]}")
    cells.figures["keys"] = len(hashes)

    letters = [json.loads(v) for v in asyncio.run(read_topic(settings, settings.dead_letter_topic))]
    sources = {(d["source_topic"], d["source_partition"], d["source_offset"]) for d in letters}
    expected = Counter(intake.rejected) + Counter({"too_late": intake.too_late})
    rejected = sum(expected.values())
    cells.figures["dead letters"] = f"{len(letters)} for {rejected} rejected inputs"
    cells.check(
        "crm.dead-letters once per rejected input",
        len(letters) == rejected == len(sources)
        and Counter(d["reason"] for d in letters) == expected,
        f"{len(letters)} letters, {len(sources)} sources, {rejected} rejected; "
        f"{Counter(d['reason'] for d in letters)} != {expected}",
    )

    # Alerts are judged every second once the buckets' counts are confirmed: give them time.
    deadline = time.monotonic() + 30
    while not (verdict := _alerts_verdict(settings, url, earlier_alerts, spike))[0]:
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    ok, detail, figure = verdict
    cells.figures["alerts"] = figure
    cells.check("alerts once, Redis = Kafka", ok, detail)


def _alerts_verdict(
    settings: Settings, url: str, earlier_alerts: int, spike: datetime
) -> tuple[bool, str, str]:
    """The EU spike fired and resolved once; each transition once in Redis and on Kafka."""
    in_redis = _stream_alerts(url)
    redis_once = Counter((a.alert_id, a.status) for a in in_redis)
    alerts = asyncio.run(read_topic(settings, settings.kpi_alerts_topic))
    on_kafka = Counter((a.alert_id, a.status) for a in map(Alert.model_validate_json, alerts))
    eu = [a for a in in_redis[earlier_alerts:] if a.segment == "region:EU"]
    regions = {a.segment for a in in_redis if a.segment.startswith("region:")}
    ok = (
        set(redis_once.values()) == {1}
        and set(on_kafka.values()) == {1}
        and len(in_redis) - earlier_alerts == len(on_kafka)
        and set(on_kafka) <= set(redis_once)
        and regions == {"region:EU"}
        and sorted(a.status for a in eu) == ["firing", "resolved"]
        and eu[0].bucket_start == spike
    )
    detail = f"redis {redis_once}, kafka {on_kafka}, EU {[(a.status, a.bucket_start) for a in eu]}"
    return ok, detail, f"{len(on_kafka)} on Kafka, {len(in_redis)} in Redis"


# -- the faults ------------------------------------------------------------------------


def test_a_worker_sigkilled_mid_stream(fault_stack: Stack) -> None:
    stack, cells = fault_stack, Cells("worker SIGKILL")
    records = _records(seed=81)
    workers = _start(stack, 2)
    half = len(records) // 2
    asyncio.run(produce(stack.settings, records[:half]))
    _wait("progress", lambda: "kpi_events_total{" in workers[0].get_text("/metrics"), workers)
    workers[0].popen.send_signal(signal.SIGKILL)
    workers[0].popen.wait(10)
    asyncio.run(produce(stack.settings, records[half:]))
    restarted = stack.env.start_worker("w0-restarted")
    restarted.wait_assigned(partitions=1)
    _check_outputs(stack, cells, filter_records(records, stack.settings), [workers[1], restarted])
    cells.assert_all()


def _until_the_alert(
    stack: Stack, seed: int, workers: int
) -> tuple[list[LogRecord], int, list[WorkerProcess]]:
    """Workers up, and the events until the EU alert has fired: a Redis lost after this
    loses an alert that went out, which must not go out again."""
    records = _records(seed=seed)
    started = _start(stack, workers)
    split = _split_after_spike(records)
    asyncio.run(produce(stack.settings, records[:split]))
    _wait("the EU alert", lambda: _eu_fired(stack.redis.url), started)
    return records, split, started


def test_redis_killed_and_back_empty(fault_stack: Stack) -> None:
    stack, cells = fault_stack, Cells("Redis lost")
    records, split, workers = _until_the_alert(stack, seed=82, workers=1)
    stack.redis.kill()
    asyncio.run(produce(stack.settings, records[split:]))
    time.sleep(2.0)  # the worker goes on without Redis
    stack.redis.start()
    _check_outputs(stack, cells, filter_records(records, stack.settings), workers)
    cells.assert_all()


def test_the_broker_restarted_empty(fault_stack: Stack) -> None:
    stack, cells = fault_stack, Cells("broker restarted empty")
    before = _records(seed=83, events=EVENTS // 2)  # only the second lifetime is checked
    workers = _start(stack, 1)
    asyncio.run(produce(stack.settings, before))
    report = verify_until_clean(stack.settings, filter_records(before, stack.settings), workers, 90)
    assert not report.mismatches, describe(report)
    _wait("the first lifetime's alerts", lambda: len(_stream_alerts(stack.redis.url)) >= 2, workers)
    earlier = len(_stream_alerts(stack.redis.url))
    *campaigns, quiet = DEFAULT_CAMPAIGNS
    stale = {f"{w.name}:campaign:{quiet.campaign_id}" for w in stack.settings.windows}
    stale_before = {k: v for k, v in _hashes(stack.redis.url).items() if k in stale}
    assert stale_before.keys() == stale
    stack.broker.restart_empty()
    _wait_for_log(workers[0], "starting the worker again", timeout_s=60)
    workers[0].wait_assigned(partitions=4)
    # The second lifetime, 40 days on, without one campaign: its snapshots stay as they were.
    after = _records(seed=84, start_days=40, campaigns=tuple(campaigns))
    asyncio.run(produce(stack.settings, after))
    intake = filter_records(after, stack.settings)
    spike = SPIKE_AT + timedelta(days=40)
    _check_outputs(stack, cells, intake, workers, stale, earlier_alerts=earlier, spike=spike)
    # A campaign without new events keeps its last snapshots, untouched (docs/operations.md).
    kept = {k: v for k, v in _hashes(stack.redis.url).items() if k in stale}
    cells.check("stale campaign kept as it was", kept == stale_before, f"{kept}")
    cells.assert_all()


def test_a_worker_and_redis_killed_together(fault_stack: Stack) -> None:
    stack, cells = fault_stack, Cells("worker SIGKILL + Redis lost")
    records, split, workers = _until_the_alert(stack, seed=85, workers=2)
    workers[0].popen.send_signal(signal.SIGKILL)
    stack.redis.kill()
    workers[0].popen.wait(10)
    asyncio.run(produce(stack.settings, records[split:]))
    time.sleep(1.0)
    stack.redis.start()
    restarted = stack.env.start_worker("w0-restarted")
    restarted.wait_assigned(partitions=1)
    _check_outputs(stack, cells, filter_records(records, stack.settings), [workers[1], restarted])
    cells.assert_all()
