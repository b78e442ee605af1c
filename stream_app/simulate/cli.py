"""The ``kpi simulate`` subcommand: generate CRM traffic into a JSONL log or the Kafka topics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from stream_app.cliutil import positive, with_signals
from stream_app.clock import Clock, utc_now
from stream_app.settings import Settings, format_duration, parse_duration
from stream_app.simulate.config import DEFAULT_START, MAX_DISORDER, SimulationConfig
from stream_app.simulate.model import Simulation
from stream_app.simulate.runner import (
    LogProgress,
    Pacing,
    Progress,
    RichProgress,
    RunResult,
    write_jsonl,
)
from stream_app.simulate.scenarios import SCENARIO_TYPES, Scenario, parse_scenario, parse_timestamp

logger = logging.getLogger("kpi.simulate")

REALTIME_WARMUP = timedelta(days=2)

_EPILOG = f"""\
volume:
  --events N sets the approximate total of records (faults included) and --rate-per-day N
  the records per simulated day; the customers' activity is scaled to match. Without
  either, about 0.5 events per customer and day (1000 customers x 40 days = ~20,000).
  With --realtime, --warmup-events N sizes the history sent at once on its own, so a
  long history can be small while the live traffic keeps its rate.

scenarios (repeatable --scenario NAME:key=value,...; duration as hours=, days=,
minutes= or duration=6h):
  churn_spike:region=EU,at=2026-11-10T00:00:00Z,hours=6,factor=8
      customers in EU cancel 8 times as often for 6 hours
  conversion_collapse:campaign=spring-sale,at=2026-11-12T00:00:00Z,hours=48,factor=0
      clicks on spring-sale stop leading to purchases for 2 days
  traffic_surge:region=*,at=2026-11-20T18:00:00Z,hours=3,factor=4
      everybody clicks, buys and answers 4 times as much for 3 hours
  known: {", ".join(sorted(SCENARIO_TYPES))}

examples:
  kpi simulate --out events.jsonl                         # 40 days, ~20,000 records
  kpi simulate --kafka --speedup 3600 --inject-bad 0.01   # one simulated hour per second
  kpi simulate --kafka --realtime --rate-per-day 50000    # 2 days of history, then live
  kpi simulate --kafka --realtime --warmup 36d --warmup-events 150000 \\
      --rate-per-day 250000 --disorder 1s    # 36 days at once, then ~3 records/s
  kpi simulate --out spike.jsonl \\
      --scenario churn_spike:region=EU,at=2026-11-10T00:00:00Z,hours=6,factor=8

The same options (and seed) give byte-identical output; runs with the same seed and
start reuse event ids, so replaying one into the same topics is deduplicated.
"""


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a ratio between 0 and 1")
    return value


def _duration(text: str) -> timedelta:
    value = parse_duration(text)
    if not isinstance(value, timedelta):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 10m, 2h or 90s")
    return value


def _timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _scenario(text: str) -> Scenario:
    try:
        return parse_scenario(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` to the ``kpi`` command's subparsers."""
    parser = subparsers.add_parser(
        "simulate",
        help="generate realistic CRM traffic into a JSONL file or the Kafka input topics",
        description=(
            "Simulate a customer population: signups through campaigns and regions, campaign\n"
            "clicks with costs, purchases (often after a click), NPS and CSAT surveys driven\n"
            "by satisfaction, churn and returns, with daily and weekly seasonality. Optionally\n"
            "mixes in malformed, duplicate and late messages and scenario disturbances.\n"
            "Deterministic for a given seed; every message is keyed by its customer_id."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("population and volume")
    model.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="N",
        help="random seed; same options and seed give the same bytes (1)",
    )
    model.add_argument(
        "--customers",
        type=positive(int),
        metavar="N",
        default=1000,
        help="initial customers; they sign up during the first 2 days, more arrive later (1000)",
    )
    model.add_argument(
        "--days",
        type=positive(float),
        default=40.0,
        metavar="N",
        help="simulated duration in days, fractions allowed (40)",
    )
    volume = model.add_mutually_exclusive_group()
    volume.add_argument(
        "--events",
        type=positive(int),
        metavar="N",
        help="approximate total number of records, faults included",
    )
    volume.add_argument(
        "--rate-per-day",
        type=positive(float),
        metavar="N",
        help="approximate records per simulated day",
    )
    model.add_argument(
        "--start",
        type=_timestamp,
        default=None,
        metavar="RFC3339",
        help="simulated start, with Z or an offset "
        f"(default {DEFAULT_START.isoformat().replace('+00:00', 'Z')})",
    )
    model.add_argument(
        "--scenario",
        type=_scenario,
        action="append",
        default=[],
        metavar="NAME:key=value,...",
        help="a disturbance, e.g. churn_spike:region=EU,at=...,hours=6,factor=8 (repeatable)",
    )

    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--inject-bad",
        type=_ratio,
        default=0.0,
        metavar="RATIO",
        help="malformed messages per valid event: bad JSON, arrays, naive or broken "
        "timestamps, wrong currency, out-of-range scores, non-UTF-8, > 64 KiB, missing "
        "fields, empty values, key mismatches (0)",
    )
    faults.add_argument(
        "--duplicates",
        type=_ratio,
        default=0.0,
        metavar="RATIO",
        help="exact re-sends per valid event, within the next few hundred records (0)",
    )
    faults.add_argument(
        "--late",
        type=_ratio,
        default=0.0,
        metavar="RATIO",
        help="events per valid event that are >= 35 days older than the newest one "
        "(too late for the processor); only after 36 simulated days (0)",
    )
    faults.add_argument(
        "--disorder",
        type=_duration,
        default=timedelta(minutes=10),
        metavar="DURATION",
        help="how far events of different customers may overtake each other, at most "
        f"{format_duration(MAX_DISORDER)} (10m)",
    )

    sink = parser.add_argument_group("output")
    target = sink.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--out", metavar="FILE.jsonl", help="write an event log (JSONL; '-' for stdout)"
    )
    target.add_argument(
        "--kafka",
        action="store_true",
        help="send to the five input topics (KPI_KAFKA_* settings, KPI_TOPIC_PREFIX)",
    )
    sink.add_argument(
        "--rate", type=positive(float), metavar="N", help="at most N records per wall-clock second"
    )
    sink.add_argument(
        "--speedup",
        type=positive(float),
        metavar="X",
        help="play X simulated seconds per wall-clock second (3600: an hour per second)",
    )
    sink.add_argument(
        "--realtime",
        action="store_true",
        help="simulated time is wall-clock time: occurred_at is current. The first --warmup "
        "of the population (its initial signups) is sent at once as recent history",
    )
    sink.add_argument(
        "--warmup",
        type=_duration,
        default=REALTIME_WARMUP,
        metavar="DURATION",
        help="with --realtime: simulated history before now, sent at once; --days counts "
        f"from now ({format_duration(REALTIME_WARMUP)})",
    )
    sink.add_argument(
        "--warmup-events",
        type=positive(int),
        metavar="N",
        help="with --realtime: approximate records of the warmup, faults included; "
        "--events or --rate-per-day then set the live traffic only (default: one rate for both)",
    )
    sink.add_argument(
        "--batch-size",
        type=positive(int),
        default=500,
        metavar="N",
        help="Kafka sends awaited together (500)",
    )
    sink.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar even when stdout is not a terminal",
    )
    parser.set_defaults(func=run)


def build_config(
    settings: Settings, args: argparse.Namespace, clock: Clock = utc_now
) -> tuple[SimulationConfig, Pacing]:
    """The simulation and pacing the options ask for; ValueError names what is wrong."""
    if args.realtime and (args.start is not None or args.speedup is not None):
        raise ValueError("--realtime starts now at real speed: drop --start and --speedup")
    start = DEFAULT_START if args.start is None else args.start
    elapsed = 0.0
    if args.realtime:
        # Start the population in the recent past: the initial signups are history by now,
        # so live traffic comes from an established customer base.
        now = clock()
        start = now.replace(microsecond=0) - args.warmup
        elapsed = (now - start).total_seconds()
    if args.warmup_events is not None and not args.realtime:
        raise ValueError("--warmup-events needs --realtime")
    if args.disorder > MAX_DISORDER:
        raise ValueError(f"--disorder must be at most {format_duration(MAX_DISORDER)}")
    duration = timedelta(days=args.days) + (args.warmup if args.realtime else timedelta(0))
    config = SimulationConfig(
        seed=args.seed,
        start=start,
        duration=duration,
        customers=args.customers,
        events_target=args.events,
        rate_per_day=args.rate_per_day,
        history=args.warmup if args.warmup_events is not None else timedelta(0),
        history_events=args.warmup_events,
        scenarios=tuple(args.scenario),
        disorder=args.disorder,
        inject_bad=args.inject_bad,
        duplicates=args.duplicates,
        late=args.late,
        reporting_currency=settings.reporting_currency,
    )
    speedup = 1.0 if args.realtime else args.speedup
    return config, Pacing(rate=args.rate, speedup=speedup, elapsed_at_start=elapsed)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``kpi simulate``; 0 when done or stopped by Ctrl-C, 1 on a sink error, 2 on bad input."""
    try:
        config, pacing = build_config(settings, args)
    except ValueError as exc:
        logger.error("simulate: %s", exc)
        return 2
    simulation = Simulation(config)
    logger.info(
        "simulating %d customers from %s for %s, about %.0f records (seed %d)%s",
        config.customers,
        config.start.isoformat(),
        format_duration(config.duration),
        simulation.plan.expected_records,
        config.seed,
        "".join(f"; {s.describe()}" for s in config.scenarios),
    )
    writes_stdout = not args.kafka and args.out == "-"
    progress = _progress(args, simulation, writes_stdout)
    result: RunResult | None = None
    try:
        if args.kafka:
            result = _run_kafka(settings, simulation, pacing, progress, args.batch_size)
            where = f"Kafka topics {settings.topic_prefix}* at {settings.kafka_bootstrap_servers}"
        else:
            with _open_out(args.out) as out:
                result = write_jsonl(simulation, out, pacing=pacing, progress=progress)
            where = "stdout" if writes_stdout else args.out
            if writes_stdout and result.interrupted:
                _silence_stdout()
    finally:
        progress.close(result.sent if result is not None else 0)
    if result is None:
        return 1
    logger.info(
        "%s %d records to %s in %.1fs; generated %s",
        "stopped after" if result.interrupted else "wrote",
        result.sent,
        where,
        result.elapsed,
        simulation.stats.summary(),
    )
    return 1 if result.error else 0


def _progress(args: argparse.Namespace, simulation: Simulation, writes_stdout: bool) -> Progress:
    if args.progress or (sys.stdout.isatty() and not writes_stdout):
        return RichProgress(simulation.plan.expected_records)
    return LogProgress()


def _silence_stdout() -> None:
    """After a closed pipe, keep the interpreter's final flush of stdout from failing."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdout.buffer
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        yield handle


def _run_kafka(
    settings: Settings,
    simulation: Simulation,
    pacing: Pacing,
    progress: Progress,
    batch_size: int,
) -> RunResult | None:
    from aiokafka.errors import KafkaError

    from stream_app.kafka import topics_ready
    from stream_app.simulate.runner import send_to_kafka

    async def main() -> RunResult | None:
        if not await topics_ready(settings):
            return None
        return await with_signals(
            lambda stop: send_to_kafka(
                simulation,
                settings,
                pacing=pacing,
                progress=progress,
                stop=stop,
                batch_size=batch_size,
            )
        )

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        # Ctrl-C before sending started (while creating topics): nothing was sent.
        logger.warning("interrupted before sending")
        return RunResult(0, True, 0.0)
    except (KafkaError, OSError) as exc:
        logger.error(
            "no Kafka broker answers at %s (%s: %s)",
            settings.kafka_bootstrap_servers,
            exc.__class__.__name__,
            exc,
        )
        return None
