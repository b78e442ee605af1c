"""Where simulated traffic goes: a JSONL log or the five Kafka input topics, paced or flat out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream_app.eventlog import write_log
from stream_app.kafka import aiokafka_options, error_text, input_topics
from stream_app.settings import Settings
from stream_app.simulate.faults import Emission
from stream_app.simulate.model import Simulation

logger = logging.getLogger(__name__)

Monotonic = Callable[[], float]

# Idle waits shorter than this are not worth a sleep; the next wait catches up.
_MIN_SLEEP_S = 0.005
# Progress is refreshed at most once per this many records when sending flat out.
_PROGRESS_EVERY = 64


@dataclass(frozen=True)
class Pacing:
    """How fast records go out on the wall clock; no limit when both are None.

    ``rate``: at most this many records per second. ``speedup``: simulated seconds per
    wall-clock second (3600 plays one simulated hour per second; 1 is real time).
    ``elapsed_at_start``: simulated seconds already behind the start when sending begins
    (real-time runs anchored to "now" lose a little time between anchoring and sending).
    """

    rate: float | None = None
    speedup: float | None = None
    elapsed_at_start: float = 0.0

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.speedup is not None and self.speedup <= 0:
            raise ValueError("speedup must be positive")


class Pacer:
    """The wall-clock schedule of a run: how long to wait before each record."""

    def __init__(self, pacing: Pacing, monotonic: Monotonic) -> None:
        self._pacing = pacing
        self._monotonic = monotonic
        self._t0: float | None = None

    @property
    def limited(self) -> bool:
        return self._pacing.rate is not None or self._pacing.speedup is not None

    def delay(self, index: int, stream_ms: int) -> float:
        """Seconds to wait before sending record number ``index`` (from 0)."""
        now = self._monotonic()
        if self._t0 is None:
            self._t0 = now
        if not self.limited:
            return 0.0
        pacing = self._pacing
        due = 0.0
        if pacing.rate is not None:
            due = index / pacing.rate
        if pacing.speedup is not None:
            simulated = stream_ms / 1000 - pacing.elapsed_at_start
            due = max(due, simulated / pacing.speedup)
        return due - (now - self._t0)


class Progress(Protocol):
    """Receives how far a run got; a rich bar on terminals, log lines otherwise.

    The sinks only call ``update``; whoever made the progress closes it.
    """

    def update(self, records: int, stream_time: datetime) -> None: ...

    def close(self, records: int) -> None: ...


class LogProgress:
    """A log line every ``interval`` seconds: records so far, the simulated time and the rate."""

    def __init__(self, interval: float = 5.0, monotonic: Monotonic = time.monotonic) -> None:
        self._interval = interval
        self._monotonic = monotonic
        self._start = monotonic()
        self._next = self._start + interval

    def update(self, records: int, stream_time: datetime) -> None:
        now = self._monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        rate = records / max(now - self._start, 1e-9)
        logger.info(
            "%d records sent, simulated time %s (%.0f records/s)",
            records,
            stream_time.isoformat(timespec="seconds"),
            rate,
        )

    def close(self, records: int) -> None:
        """Nothing to tear down: the final summary is logged by the caller."""


class RichProgress:
    """A progress bar (on stderr) with the simulated clock, against the expected total."""

    def __init__(self, expected: float) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]simulate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sim {task.fields[clock]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("simulate", total=max(int(expected), 1), clock="-")
        self._progress.start()

    def update(self, records: int, stream_time: datetime) -> None:
        clock = stream_time.strftime("%Y-%m-%d %H:%M")
        # The expected total is an estimate: never let the bar claim more than 100 %.
        total = self._progress.tasks[0].total or 1
        self._progress.update(self._task, completed=records, total=max(total, records), clock=clock)

    def close(self, records: int) -> None:
        self._progress.update(self._task, completed=records, total=max(records, 1))
        self._progress.stop()


@dataclass(frozen=True)
class RunResult:
    """How a run ended: records delivered, whether it was stopped early, any error."""

    sent: int
    interrupted: bool
    elapsed: float
    error: str | None = None


def _paced(
    simulation: Simulation,
    pacer: Pacer,
    progress: Progress | None,
    sleep: Callable[[float], None],
    before_sleep: Callable[[], None],
    counter: list[int],
) -> Iterator[Emission]:
    """The simulation's emissions, each held back until its wall-clock time."""
    for index, emission in enumerate(simulation.emissions()):
        wait = pacer.delay(index, emission.stream_ms)
        if wait > _MIN_SLEEP_S:
            before_sleep()
            sleep(wait)
        yield emission
        # Resumed: the consumer has finished with this record.
        counter[0] = index + 1
        if progress is not None and (pacer.limited or counter[0] % _PROGRESS_EVERY == 0):
            progress.update(counter[0], simulation.moment(emission.stream_ms))


def write_jsonl(
    simulation: Simulation,
    out: IO[bytes],
    *,
    pacing: Pacing | None = None,
    progress: Progress | None = None,
    monotonic: Monotonic = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    """Write the records to ``out`` as an event log; Ctrl-C stops cleanly after a record.

    A reader closing a pipe ends the run early (``interrupted``) rather than failing it.
    """
    pacer = Pacer(pacing or Pacing(), monotonic)
    counter = [0]
    started = monotonic()
    interrupted = False
    records = (
        emission.record
        for emission in _paced(simulation, pacer, progress, sleep, out.flush, counter)
    )
    try:
        write_log(records, out)
        out.flush()
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("interrupted: stopping after %d records", counter[0])
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): a normal way for a pipeline to end.
        interrupted = True
        logger.info("the output was closed after %d records", counter[0])
    finally:
        with contextlib.suppress(BrokenPipeError, ValueError):
            out.flush()
    return RunResult(counter[0], interrupted, monotonic() - started)


ProducerFactory = Callable[[Settings], Any]


def _default_producer(settings: Settings) -> AIOKafkaProducer:
    # Oversized bad messages (> 64 KiB) must reach the broker: the processor rejects them.
    return AIOKafkaProducer(
        **aiokafka_options(settings),
        linger_ms=20,
        max_request_size=4 * 1024 * 1024,
    )


async def send_to_kafka(
    simulation: Simulation,
    settings: Settings,
    *,
    pacing: Pacing | None = None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    batch_size: int = 500,
    monotonic: Monotonic = time.monotonic,
    producer_factory: ProducerFactory = _default_producer,
) -> RunResult:
    """Send the records to the input topics, keyed by customer, in batches.

    Setting ``stop`` ends the run after the records handed to the producer so far are
    delivered. Records are only counted as sent once the broker acknowledged them.
    """
    stop = stop if stop is not None else asyncio.Event()
    pacer = Pacer(pacing or Pacing(), monotonic)
    topics = input_topics(settings)
    producer = producer_factory(settings)
    started = monotonic()
    await producer.start()
    pending: list[asyncio.Future[Any]] = []
    sent = 0
    interrupted = False
    error: str | None = None

    async def settle() -> int:
        batch = pending[:]
        pending.clear()
        await asyncio.gather(*batch)
        return len(batch)

    try:
        for index, emission in enumerate(simulation.emissions()):
            if stop.is_set():
                interrupted = True
                break
            wait = pacer.delay(index, emission.stream_ms)
            if wait > _MIN_SLEEP_S:
                sent += await settle()  # deliver what is queued before idling
                if await _wait_for(stop, wait):
                    interrupted = True
                    break
            record = emission.record
            future = await producer.send(topics[record.event_type], record.value, key=record.key)
            pending.append(future)
            if len(pending) >= batch_size:
                sent += await settle()
            if progress is not None and (pacer.limited or (index + 1) % _PROGRESS_EVERY == 0):
                progress.update(sent + len(pending), simulation.moment(emission.stream_ms))
        sent += await settle()
    except KafkaError as exc:
        error = error_text(exc)
        logger.error("sending to Kafka failed after %d records: %s", sent, error)
    finally:
        with contextlib.suppress(KafkaError):
            await producer.stop()  # flushes whatever is still buffered
    if interrupted:
        logger.warning("stopped: %d records sent", sent)
    return RunResult(sent, interrupted, monotonic() - started, error)


async def _wait_for(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; True if it was."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
