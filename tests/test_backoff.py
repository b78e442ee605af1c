"""Waiting for a broker: exponential backoff with a cap, one line at most every 5 s, the cure."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from stream_app import kafka
from stream_app.backoff import Backoff
from stream_app.devstack import free_port
from stream_app.kafka import NO_BROKER_CURE, NoBrokerError, wait_for_topics
from stream_app.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_double_up_to_the_cap_and_end_at_the_deadline() -> None:
    clock = FakeClock()
    backoff = Backoff(60.0, first_s=0.5, cap_s=10.0, clock=clock)
    waits = []
    while not (step := backoff.failed()).give_up:
        waits.append(step.wait_s)
        clock.sleep(step.wait_s)
    assert waits[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert max(waits) == 10.0
    assert sum(waits) == pytest.approx(60.0)  # the last wait is cut to the deadline
    assert step.elapsed_s == pytest.approx(60.0)
    assert step.attempt == len(waits) + 1


def test_failures_are_reported_at_most_once_per_interval() -> None:
    clock = FakeClock()
    backoff = Backoff(3600.0, first_s=0.5, cap_s=2.0, report_every_s=5.0, clock=clock)
    reported: list[float] = []
    for _ in range(200):
        step = backoff.failed()
        if step.report:
            reported.append(step.elapsed_s)
        clock.sleep(step.wait_s + 0.01)  # each attempt takes a little time too
    assert reported[0] == 0.0, "the first failure is always reported"
    gaps = [later - earlier for earlier, later in itertools.pairwise(reported)]
    assert all(gap >= 5.0 for gap in gaps)
    assert all(gap < 5.0 + 2.0 + 0.02 for gap in gaps), "but reported again once the wait is up"


def test_a_slow_attempt_past_the_deadline_gives_up() -> None:
    clock = FakeClock()
    backoff = Backoff(5.0, clock=clock)
    clock.now += 30.0  # one attempt that hung for 30 s
    step = backoff.failed()
    assert step.give_up
    assert step.wait_s == 0.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="first_s <= cap_s"):
        Backoff(10.0, first_s=5.0, cap_s=1.0)


def test_wait_for_topics_sleeps_as_the_backoff_says_and_names_the_cure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def no_broker(settings: Settings, timeout_ms: int = 30_000) -> kafka.TopicReport:
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    monkeypatch.setattr(kafka, "ensure_topics", no_broker)
    clock = FakeClock()
    with pytest.raises(NoBrokerError) as info:
        wait_for_topics(
            Settings(kafka_bootstrap_servers="127.0.0.1:1"),
            30.0,
            backoff=Backoff(30.0, clock=clock),
            sleep=clock.sleep,
        )
    message = str(info.value)
    assert message.count("KafkaConnectionError") == 1
    assert NO_BROKER_CURE in message
    assert "127.0.0.1:1" in message
    lines = [r.getMessage() for r in caplog.records if r.name == "stream_app.kafka"]
    assert 1 <= len(lines) <= 30 // 5 + 1
    assert all(NO_BROKER_CURE in line for line in lines)


def test_kpi_worker_without_a_broker_backs_off_quietly_and_names_the_cure(tmp_path: Path) -> None:
    wait_s = 8.0
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    env["KPI_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "stream_app", "worker", "--broker-wait", str(wait_s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    lines = output.splitlines()
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert "Unable connect" not in output, "aiokafka's line per attempt"
    waiting = [line for line in lines if "waiting for a Kafka broker" in line]
    # Attempts at 0, 0.5, 1.5, 3.5 and 7.5 s: reported at 0 and 7.5, at most every 5 s.
    assert 1 <= len(waiting) <= int(wait_s // 5) + 1, output
    assert len(lines) == len(waiting) + 1, output
    assert lines[-1].startswith("kpi: no Kafka broker answers at 127.0.0.1:")
    for line in lines:
        assert NO_BROKER_CURE in line
        assert line.count("KafkaConnectionError") <= 1, line
    assert wait_s <= took < wait_s + 10
