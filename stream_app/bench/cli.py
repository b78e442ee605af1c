"""The ``kpi bench`` subcommand: throughput, latency and memory of the engine, in one run."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from stream_app.bench.runner import (
    Deployment,
    EngineResult,
    measure_latency,
    percentile,
    plain_consumer,
    produce,
    reference_for,
    run_engine,
    signups,
    start_workers,
    wait_accepted,
    wait_split,
)
from stream_app.devstack import DevStack, DevStackError, free_port
from stream_app.kafka import input_topics
from stream_app.settings import Settings
from stream_app.verify.compare import verify_redis
from stream_app.verify.reference import Reference

logger = logging.getLogger("kpi.bench")

_DESCRIPTION = """\
Measure the processor on this machine, in one run, against its own embedded broker and a
private redis-server (nothing else is touched):

  (a) the limit: a plain aiokafka consumer reading and JSON-decoding the input messages
      (the median of three passes);
  (b) the full engine end to end: the events are produced first, then the workers start;
      timed from the first event a worker reads to the moment the snapshots of segment
      `all` in Redis match an independent batch recount of the same events, with 1 and 2
      workers (events/s per worker, and the ratio to (a));
  (c) event-to-Redis latency p50/p99 at a steady load of half of (b) with one worker:
      each signup is timed from its send until a pub/sub snapshot counts it;
  (d) resident memory of one worker after N distinct customers, and again after event
      time moves past every window (state must stay flat).

Prints the ratios and writes every figure to a JSON file.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the ``kpi`` command's subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput, latency and memory against a plain consumer",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=200_000, help="events for (a) and (b)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (default: 1)")
    parser.add_argument(
        "--days",
        type=float,
        default=1.0,
        help="simulated days the events span (default: 1). Per-event work grows with the "
        "load and per-step work with event time, which live runs at 1 s per s: a short "
        "span measures the busy-shop case, a long one the catch-up after an outage",
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions per input topic (default: 4)"
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker counts to run (b) with, comma-separated (default: 1,2)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=30.0,
        help="duration of the steady load for (c); 0 skips it (default: 30)",
    )
    parser.add_argument(
        "--memory-customers",
        type=int,
        default=1_000_000,
        help="distinct customers for (d); 0 skips it (default: 1000000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure (a) and each (b) this many times, in turn, each (b) on fresh topics, "
        "and report the medians (default: 1). The machine's speed drifts between runs "
        "minutes apart; the median of paired runs is the figure to compare",
    )
    parser.add_argument(
        "--lifecycle",
        action="store_true",
        help="also run (b) with one worker and KPI_LIFECYCLE_ENABLED=true (lifecycle stages, "
        "their segments and messages, churn risk) right after each one-worker run, and report "
        "its ratio and the drop from the one-worker ratio (medians of the paired runs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-result.json"),
        help="where to write the JSON result (default: bench-result.json)",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=Path("var/bench"), help="child process logs"
    )
    parser.set_defaults(func=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run every measurement; exit 0 when all of them completed."""
    try:
        worker_counts = [int(part) for part in args.workers.split(",") if part.strip()]
    except ValueError:
        logger.error("--workers takes comma-separated whole numbers, e.g. 1,2")
        return 2
    if args.events < 1000 or not worker_counts or min(worker_counts) < 1 or args.repeat < 1:
        logger.error("--events must be at least 1000, --workers and --repeat at least 1")
        return 2
    if args.lifecycle and 1 not in worker_counts:
        logger.error("--lifecycle is compared with one worker: add 1 to --workers")
        return 2
    stack = DevStack(log_dir=args.log_dir)
    try:
        result = _bench(stack, args, worker_counts)
    except DevStackError as exc:
        logger.error("bench failed: %s", exc)
        return 1
    except KeyboardInterrupt:
        logger.warning("interrupted")
        return 1
    finally:
        stack.stop()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print_summary(result)
    logger.info("wrote %s", args.out)
    wrong = sum(figures["verify_mismatches"] for figures in result["engine"].values())
    wrong += result.get("lifecycle", {}).get("verify_mismatches", 0)
    if wrong:
        logger.error("%d KPI values differ from the batch recount: the run is not exact", wrong)
        return 1
    return 0


def _bench(stack: DevStack, args: argparse.Namespace, worker_counts: list[int]) -> dict[str, Any]:
    from stream_app.simulate.config import SimulationConfig
    from stream_app.simulate.model import generate

    bootstrap = stack.start_broker(free_port())
    redis_url = stack.start_redis(free_port())
    data_dir = Path(tempfile.mkdtemp(prefix="kpi-bench-"))

    def deployment(lifecycle: bool = False) -> Deployment:
        return Deployment(bootstrap, redis_url, args.partitions, data_dir, lifecycle=lifecycle)

    logger.info("generating %d simulated events (seed %d)", args.events, args.seed)
    records = list(
        generate(
            SimulationConfig(
                seed=args.seed,
                duration=timedelta(days=args.days),
                customers=max(100, args.events // 20),
                events_target=args.events,
            )
        )
    )
    first = deployment()
    reference = reference_for(records, first.settings())
    # Lifecycle segments are recounted only when the settings turn them on.
    lifecycle_reference = (
        reference_for(records, deployment(lifecycle=True).settings()) if args.lifecycle else None
    )
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "started_at": datetime.now(UTC).isoformat(),
        "events": len(records),
        "partitions": args.partitions,
    }

    plain_runs: list[dict[str, Any]] = []
    engine_runs: dict[int, list[dict[str, float]]] = {count: [] for count in worker_counts}
    lifecycle_runs: list[dict[str, float]] = []
    for repetition in range(1, args.repeat + 1):
        of = f" (run {repetition} of {args.repeat})" if args.repeat > 1 else ""
        outcomes: dict[str, tuple[EngineResult, tuple[int, int]]] = {}
        topics: list[str] = []
        for count in worker_counts:
            run_deployment = first if repetition == 1 and not topics else deployment()
            outcomes[str(count)] = _one_run(stack, run_deployment, records, reference, count, of)
            if not topics:
                topics = list(input_topics(run_deployment.settings()).values())
            if count == 1 and lifecycle_reference is not None:
                # Paired with the run just before it: the drop is taken within a repetition.
                lifecycle = deployment(lifecycle=True)
                outcomes[LIFECYCLE] = _one_run(
                    stack, lifecycle, records, lifecycle_reference, 1, of
                )
        # Right after the (b) runs it is compared with, on the same messages: the machine's
        # speed drifts over minutes, and a ratio of two moments is no ratio.
        logger.info("(a) plain aiokafka consumer of the same %d messages%s", len(records), of)
        passes = asyncio.run(plain_consumer(bootstrap, topics, args.partitions, len(records)))
        plain_s = statistics.median(passes)
        plain_rate = len(records) / plain_s
        plain_runs.append({"seconds": plain_s, "events_per_s": plain_rate, "passes": passes})
        for label, (outcome, (mismatches, checked)) in outcomes.items():
            runs = lifecycle_runs if label == LIFECYCLE else engine_runs[int(label)]
            runs.append(
                {
                    "seconds": outcome.seconds,
                    "events_per_s": outcome.events_per_s,
                    "events_per_s_per_worker": outcome.events_per_s_per_worker,
                    "producer_seconds": outcome.produce_seconds,
                    "ratio_to_plain_per_worker": outcome.events_per_s_per_worker / plain_rate,
                    "verify_mismatches": mismatches,
                    "snapshots_checked": checked,
                }
            )
        logger.info(
            "(a) %.0f events/s; (b)/(a) per worker: %s",
            plain_rate,
            ", ".join(
                f"{label} {outcome.events_per_s_per_worker / plain_rate:.3f}"
                for label, (outcome, _) in outcomes.items()
            ),
        )
    result.update(summarise_runs(plain_runs, engine_runs))
    if lifecycle_runs:
        result["lifecycle"] = summarise_lifecycle(engine_runs[1], lifecycle_runs)

    if args.latency_seconds > 0:
        fewest = result["engine"][str(min(worker_counts))]
        rate = max(10.0, fewest["events_per_s_per_worker"] / 2)
        result["latency"] = _latency(stack, deployment(), rate, args.latency_seconds)
    if args.memory_customers > 0:
        result["memory"] = _memory(stack, deployment(), args.memory_customers)
    result["finished_at"] = datetime.now(UTC).isoformat()
    return result


# ``--lifecycle``: the label of its runs.
LIFECYCLE = "1 worker, lifecycle on"


def _one_run(
    stack: DevStack,
    deployment: Deployment,
    records: list[Any],
    reference: Reference,
    count: int,
    of: str,
) -> tuple[EngineResult, tuple[int, int]]:
    """One (b) run, verified against the recount; its workers are stopped after it."""
    lifecycle = " (lifecycle on)" if deployment.lifecycle else ""
    logger.info("(b) full engine with %d worker(s)%s%s", count, lifecycle, of)
    outcome, workers = run_engine(
        stack, deployment, records, reference, count, timeout_s=900, progress=_progress
    )
    verified = _verify(deployment, reference)
    logger.info(
        "(b) %d worker(s)%s: %.0f events/s (%.0f per worker); producing them took %.1fs",
        count,
        lifecycle,
        outcome.events_per_s,
        outcome.events_per_s_per_worker,
        outcome.produce_seconds,
    )
    for worker in workers:
        worker.process.popen.terminate()
    for worker in workers:
        worker.process.popen.wait(30)
    return outcome, verified


def summarise_lifecycle(
    one_worker: list[dict[str, float]], lifecycle: list[dict[str, float]]
) -> dict[str, Any]:
    """``--lifecycle``: its one-worker ratio, and the drop from the plain one-worker ratio of
    the same repetition (the median of the paired drops, as the issue's must-show reads)."""
    drops = [
        off["ratio_to_plain_per_worker"] - on["ratio_to_plain_per_worker"]
        for off, on in zip(one_worker, lifecycle, strict=True)
    ]
    return {
        **_engine_figures(lifecycle),
        "drop_from_one_worker": float(statistics.median(drops)),
        "drops": drops,
    }


def summarise_runs(
    plain_runs: list[dict[str, Any]], engine_runs: dict[int, list[dict[str, float]]]
) -> dict[str, Any]:
    """The result's throughput part: medians of the repeated runs, each run kept under ``runs``.

    A ratio is taken within a repetition ((b) over the (a) measured right after it) and
    the median of those ratios reported, not the ratio of two medians. Mismatches add up:
    one inexact run makes the whole result inexact.
    """

    summary: dict[str, Any] = {
        "repeat": len(plain_runs),
        "plain_consumer": {
            "seconds": _median(plain_runs, "seconds"),
            "events_per_s": _median(plain_runs, "events_per_s"),
            "runs": plain_runs,
        },
        "engine": {str(count): _engine_figures(runs) for count, runs in engine_runs.items()},
    }
    if 1 in engine_runs and 2 in engine_runs:
        summary["scaling_2_vs_1"] = float(
            statistics.median(
                two["events_per_s"] / one["events_per_s"]
                for one, two in zip(engine_runs[1], engine_runs[2], strict=True)
            )
        )
    return summary


def _median(runs: list[dict[str, Any]], name: str) -> float:
    return float(statistics.median(run[name] for run in runs))


def _engine_figures(runs: list[dict[str, float]]) -> dict[str, Any]:
    """One kind of (b) run over the repetitions: medians, the ratio's range, every run."""
    ratios = [run["ratio_to_plain_per_worker"] for run in runs]
    return {
        "seconds": _median(runs, "seconds"),
        "events_per_s": _median(runs, "events_per_s"),
        "events_per_s_per_worker": _median(runs, "events_per_s_per_worker"),
        "producer_seconds": _median(runs, "producer_seconds"),
        "ratio_to_plain_per_worker": float(statistics.median(ratios)),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "verify_mismatches": int(sum(run["verify_mismatches"] for run in runs)),
        "runs": runs,
    }


def _verify(deployment: Deployment, reference: Reference) -> tuple[int, int]:
    """Every window and segment in Redis against the batch recount, as ``kpi verify`` does:
    the mismatches, and how many snapshots were checked."""
    client = redis.Redis.from_url(deployment.redis_url)
    # Segments other than `all` may still be a publish interval behind: poll a little.
    deadline = time.monotonic() + 30
    try:
        report = verify_redis(client, reference, deployment.settings(), history=50)
        while report.mismatches and time.monotonic() < deadline:
            time.sleep(1.0)
            report = verify_redis(client, reference, deployment.settings(), history=50)
    finally:
        client.close()
    for mismatch in report.mismatches[:10]:
        logger.error(
            "mismatch %s %s %s %s %s: expected %r, got %r",
            mismatch.where,
            mismatch.window,
            mismatch.segment,
            mismatch.window_end,
            mismatch.field,
            mismatch.expected,
            mismatch.actual,
        )
    logger.info(
        "verify: %d snapshots and %d history entries checked, %d mismatches",
        report.snapshots_checked,
        report.history_checked,
        len(report.mismatches),
    )
    return len(report.mismatches), report.snapshots_checked


def _latency(
    stack: DevStack, deployment: Deployment, rate: float, seconds: float
) -> dict[str, float]:
    logger.info("(c) latency at %.0f events/s for %.0fs (one worker)", rate, seconds)
    from stream_app.kafka import ensure_topics

    asyncio.run(ensure_topics(deployment.settings()))
    redis.Redis.from_url(deployment.redis_url).flushdb()
    workers = start_workers(stack, deployment, 1)
    wait_split(workers, deployment.partitions)
    latencies = asyncio.run(measure_latency(deployment, rate, seconds))
    workers[0].process.popen.terminate()
    workers[0].process.popen.wait(30)
    figures = {
        "offered_events_per_s": rate,
        "events": float(len(latencies)),
        "p50_s": percentile(latencies, 0.50),
        "p99_s": percentile(latencies, 0.99),
        "max_s": max(latencies),
    }
    logger.info("(c) p50 %.3fs, p99 %.3fs", figures["p50_s"], figures["p99_s"])
    return figures


def _memory(stack: DevStack, deployment: Deployment, customers: int) -> dict[str, float]:
    logger.info("(d) memory with %d distinct customers (one worker)", customers)
    from stream_app.kafka import ensure_topics

    settings = deployment.settings()
    asyncio.run(ensure_topics(settings))
    redis.Redis.from_url(deployment.redis_url).flushdb()
    workers = start_workers(stack, deployment, 1)
    wait_split(workers, deployment.partitions)
    idle_rss = workers[0].rss_bytes()
    start = datetime.now(UTC) - timedelta(days=60)
    asyncio.run(
        produce(deployment.bootstrap, signups(settings, customers, start), _progress, customers)
    )
    wait_accepted(workers, customers, timeout_s=1800)
    time.sleep(3)
    loaded_rss = workers[0].rss_bytes()
    # Event time jumps past the largest window, the lateness and the history: windows expire.
    later = start + timedelta(seconds=customers) + timedelta(days=120)
    asyncio.run(produce(deployment.bootstrap, signups(settings, 200, later, prefix="late")))
    wait_accepted(workers, customers + 200, timeout_s=300)
    time.sleep(5)
    expired_rss = workers[0].rss_bytes()
    workers[0].process.popen.terminate()
    workers[0].process.popen.wait(60)
    figures = {
        "customers": float(customers),
        "idle_rss_mb": idle_rss / 2**20,
        "rss_mb_after_customers": loaded_rss / 2**20,
        "rss_mb_after_windows_expire": expired_rss / 2**20,
        "bytes_per_customer": (loaded_rss - idle_rss) / customers,
    }
    logger.info(
        "(d) RSS idle %.0f MB, %.0f MB after %d customers, %.0f MB after windows expire",
        figures["idle_rss_mb"],
        figures["rss_mb_after_customers"],
        customers,
        figures["rss_mb_after_windows_expire"],
    )
    return figures


_last_progress = [0.0]


def _progress(stage: str, done: int, total: int) -> None:
    now = time.monotonic()
    if now - _last_progress[0] >= 5 or done >= total:
        _last_progress[0] = now
        logger.info("%s: %d of %d", stage, done, total)


def _print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"kpi bench: {result['events']:,} events, {result['partitions']} partitions"
    if result["repeat"] > 1:
        title += f", medians of {result['repeat']} runs"
    table = Table(title=title)
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    table.add_column("ratio", justify="right")
    plain = result["plain_consumer"]["events_per_s"]
    table.add_row("(a) plain aiokafka consumer + JSON decode", f"{plain:,.0f} ev/s", "1.00")
    for count, figures in result["engine"].items():
        ratio = f"{figures['ratio_to_plain_per_worker']:.2f}"
        if len(figures["runs"]) > 1:
            ratio += f" ({figures['ratio_min']:.2f} to {figures['ratio_max']:.2f})"
        table.add_row(
            f"(b) full engine, {count} worker(s), per worker",
            f"{figures['events_per_s_per_worker']:,.0f} ev/s",
            ratio,
        )
    if "lifecycle" in result:
        lifecycle = result["lifecycle"]
        table.add_row(
            "(b) 1 worker, lifecycle on; drop from 1 worker",
            f"{lifecycle['events_per_s_per_worker']:,.0f} ev/s",
            f"{lifecycle['ratio_to_plain_per_worker']:.2f}; "
            f"-{lifecycle['drop_from_one_worker']:.2f}",
        )
    if "scaling_2_vs_1" in result:
        table.add_row("(b) 2 workers / 1 worker", "", f"{result['scaling_2_vs_1']:.2f}")
    if "latency" in result:
        latency = result["latency"]
        table.add_row(
            f"(c) latency at {latency['offered_events_per_s']:,.0f} ev/s, p50 / p99",
            f"{latency['p50_s']:.2f} s / {latency['p99_s']:.2f} s",
            "",
        )
    if "memory" in result:
        memory = result["memory"]
        table.add_row(
            f"(d) RSS after {memory['customers']:,.0f} customers / after expiry",
            f"{memory['rss_mb_after_customers']:,.0f} MB / "
            f"{memory['rss_mb_after_windows_expire']:,.0f} MB",
            f"{memory['bytes_per_customer']:,.0f} B/customer",
        )
    Console(file=sys.stdout).print(table)


__all__ = ["add_parser", "run", "summarise_lifecycle", "summarise_runs"]
