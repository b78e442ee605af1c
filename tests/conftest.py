"""Shared fixtures: the real embedded broker, a real Redis, and worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaProducer

from stream_app.devstack import DevStack, free_port, redis_answers
from stream_app.eventlog import LogRecord
from stream_app.kafka import input_topics
from stream_app.settings import Settings
from stream_app.verify.compare import Mismatch, Report, verify_redis
from stream_app.verify.reference import Intake, reference_from_intake

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# Only where redis-server is not installed: a database of its own on the machine's Redis.
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def broker(artifacts_dir: Path) -> Iterator[str]:
    """A Tansu broker on a free port for the whole session (in memory, so always fresh)."""
    stack = DevStack(log_dir=artifacts_dir / "broker")
    bootstrap = stack.start_broker(free_port())
    yield bootstrap
    stack.stop()


@pytest.fixture(scope="session")
def redis_url(artifacts_dir: Path) -> Iterator[str]:
    """``KPI_TEST_REDIS_URL`` if set; else a private redis-server; else the machine's Redis.

    Private first: tests empty their database, and two runs on one machine (two checkouts,
    CI next to a developer) sharing the machine's Redis emptied each other's.
    """
    url = os.environ.get("KPI_TEST_REDIS_URL")
    if url is None and shutil.which("redis-server") is None:
        url = MACHINE_REDIS_URL
    if url is not None:
        # Parallel test processes (pytest-xdist) share that Redis: a database each, counting
        # down from the one given (gw0 keeps it).
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        base, _, db = url.rpartition("/")
        if db.isdigit() and worker[2:].isdigit():
            url = f"{base}/{max(0, int(db) - int(worker[2:]))}"
        if not redis_answers(url):
            pytest.exit(f"no Redis answers at {url} and redis-server is not installed", 2)
        yield url
        return
    stack = DevStack(log_dir=artifacts_dir / "redis")
    private = stack.start_redis(free_port())
    yield private.rsplit("/", 1)[0] + "/13"
    stack.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own, empty, for tests that check what Redis holds."""
    stack = DevStack(log_dir=tmp_path / "redis")
    url = stack.start_redis(free_port())
    yield url
    stack.stop()


def unique_name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


@dataclass
class WorkerProcess:
    """A real ``kpi worker`` in a child process, with its HTTP port and log."""

    popen: subprocess.Popen[bytes]
    web_port: int
    log_path: Path

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as r:
            return json.load(r)

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as r:
            text: str = r.read().decode()
            return text

    def wait_assigned(self, partitions: int, timeout_s: float = 90.0) -> None:
        """Wait until this worker owns at least ``partitions`` customer partitions."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            try:
                last = self.get_json("/health")
                if len(last["customer_partitions"]) >= partitions:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"worker not assigned in {timeout_s}s: {last}\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


@dataclass
class StackEnv:
    """Settings of one isolated test deployment: its own app id, topic prefix and data dir."""

    bootstrap: str
    redis_url: str
    tmp_path: Path
    app_id: str = field(default_factory=lambda: unique_name("test"))
    prefix: str = field(default_factory=lambda: unique_name("t") + ".")
    extra: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
        env.update(
            {
                "KPI_APP_ID": self.app_id,
                "KPI_TOPIC_PREFIX": self.prefix,
                "KPI_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KPI_REDIS_URL": self.redis_url,
                "KPI_DATA_DIR": str(self.tmp_path / "data"),
                "KPI_TOPIC_PARTITIONS": "4",
                "KPI_BROKER_SESSION_TIMEOUT": "6s",
                "KPI_BROKER_REBALANCE_TIMEOUT": "6s",
                "KPI_BROKER_HEARTBEAT_INTERVAL": "1s",
                "KPI_LOG_LEVEL": "INFO",
            }
        )
        env.update(self.extra)
        env.update(overrides)
        return env

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    def start_worker(self, name: str = "worker", **overrides: str) -> WorkerProcess:
        port = free_port()
        log_path = self.tmp_path / f"{name}-{len(self.workers)}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "stream_app", "worker"],
                env=self.env(KPI_WEB_PORT=str(port), **overrides),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.tmp_path,
            )
        worker = WorkerProcess(popen, port, log_path)
        self.workers.append(worker)
        return worker


# History entries per key that ``verify_until_clean`` checks while it waits for the publisher.
VERIFY_NEWEST_WHILE_WAITING = 24


def stack_settings(stack: StackEnv) -> Settings:
    """The settings the stack's workers run with, for the test's own clients and checks."""
    env = stack.env()
    return Settings(
        app_id=env["KPI_APP_ID"],
        topic_prefix=env["KPI_TOPIC_PREFIX"],
        kafka_bootstrap_servers=env["KPI_KAFKA_BOOTSTRAP_SERVERS"],
        redis_url=env["KPI_REDIS_URL"],
        topic_partitions=4,
    )


async def produce(settings: Settings, records: list[LogRecord]) -> None:
    """Send records to their input topics, keyed as logged, and wait until all are acked."""
    topics = input_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topics[record.event_type], record.value, key=record.key)
            for record in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def verify_until_clean(
    settings: Settings,
    intake: Intake,
    workers: list[WorkerProcess],
    timeout_s: float,
    tolerate: Callable[[Mismatch], bool] = lambda mismatch: False,
) -> Report:
    """Poll the independent verification until Redis matches it (or time runs out).

    Mismatches that ``tolerate`` accepts do not keep it waiting; they stay in the report.
    """
    reference = reference_from_intake(intake, settings)
    client = redis.Redis.from_url(settings.redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        # While the publisher still writes, a look at the newest history entries is enough
        # to see it is not done, at a fraction of the cost; only then the whole check.
        for history in (VERIFY_NEWEST_WHILE_WAITING, None):
            report = verify_redis(client, reference, settings, history=history)
            while not all(map(tolerate, report.mismatches)) and time.monotonic() < deadline:
                for worker in workers:
                    assert worker.popen.poll() is None, worker.log_tail()
                time.sleep(1.0)
                report = verify_redis(client, reference, settings, history=history)
    finally:
        client.close()
    return report


def describe(report: Report) -> str:
    rows = [
        f"{m.where} {m.window} {m.segment} {m.window_end} {m.field}: "
        f"expected {m.expected!r}, got {m.actual!r}"
        for m in report.mismatches[:15]
    ]
    return f"{len(report.mismatches)} mismatches:\n" + "\n".join(rows)


def metric_samples(text: str, name: str) -> dict[str, float]:
    """Samples of one metric in Prometheus text, by their label set ('' for none)."""
    pattern = rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$"
    return {labels or "": float(value) for labels, value in re.findall(pattern, text, re.M)}


@pytest.fixture
def stack(broker: str, redis_url: str, tmp_path: Path) -> Iterator[StackEnv]:
    env = StackEnv(bootstrap=broker, redis_url=redis_url, tmp_path=tmp_path)
    yield env
    for worker in env.workers:
        worker.stop()
