"""``python -m stream_app.alerts``: check a rules file; measure the churn detector offline.

    python -m stream_app.alerts check-rules alerts.toml
    python -m stream_app.alerts fp-rate --seeds 200 --customers 1000,3000,10000
    python -m stream_app.alerts detection --seeds 100 --customers 3000 --factor 8

Detector settings come from the ``KPI_CHURN_*`` variables unless given as options.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from stream_app.alerts.detector import DetectorParams
from stream_app.alerts.fprate import measure, run
from stream_app.alerts.rules import RulesError, load_rules
from stream_app.settings import SettingsError, load_settings
from stream_app.simulate.config import DEFAULT_START
from stream_app.simulate.scenarios import ChurnSpike


def _out(*parts: object, flush: bool = False) -> None:
    sys.stdout.write(" ".join(str(part) for part in parts) + "\n")
    if flush:
        sys.stdout.flush()


def _params(args: argparse.Namespace) -> DetectorParams:
    params = DetectorParams.from_settings(load_settings())
    changes = {
        name: value
        for name, value in (
            ("z_threshold", args.z),
            ("min_count", args.min_count),
            ("std_floor", args.std_floor),
        )
        if value is not None
    }
    return dataclasses.replace(params, **changes)


def _customers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def cmd_check_rules(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        rules = load_rules(Path(args.file), [w.name for w in settings.windows])
    except RulesError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    for rule in rules:
        _out(
            f"ok  {rule.name}: {rule.kpi} on {rule.window} for {rule.segment} "
            f"{rule.op} {rule.value:g} (min_volume {rule.min_volume}, {rule.severity})"
        )
    _out(f"{len(rules)} rule(s) valid")
    return 0


def cmd_fp_rate(args: argparse.Namespace) -> int:
    params = _params(args)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    _out(
        f"steady traffic, {args.days:g} simulated days after a warm-up of {args.warmup:g}, "
        f"seeds {seeds.start}..{seeds.stop - 1}; "
        f"min_count={params.min_count} z={params.z_threshold:g} floor={params.std_floor:g} "
        f"baseline={params.baseline_buckets}h (min {params.min_baseline_buckets}h)\n"
    )
    _out(
        "| customers | hourly churn (all) | false alerts / run | runs with one "
        "| per segment-hour | per segment-week |"
    )
    _out("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for customers in _customers(args.customers):
        started = time.perf_counter()
        summary = measure(seeds, customers, args.days, params, warmup_days=args.warmup)
        _out(
            f"| {customers:,} | {summary.hourly_churn_all:.2f} | {summary.per_run:.2f} "
            f"| {summary.runs_with_alert}/{summary.seeds} | {summary.per_bucket:.5f} "
            f"| {summary.per_segment_week:.3f} |",
            flush=True,
        )
        sys.stderr.write(f"  ({customers} customers: {time.perf_counter() - started:.0f}s)\n")
    return 0


def cmd_detection(args: argparse.Namespace) -> int:
    params = _params(args)
    at = DEFAULT_START + timedelta(days=args.days - 2, hours=12)
    spike = ChurnSpike(region="EU", at=at, duration=timedelta(hours=6), factor=args.factor)
    bucket = int(at.timestamp()) // 3600 + 1
    _out(
        f"churn_spike region=EU factor={args.factor:g} for 6h at {at.isoformat()}, "
        f"{args.days:g} simulated days, {args.seeds} seeds\n"
    )
    _out("| customers | EU alerted in the first hour | within the 6 h | other regions, same 6 h |")
    _out("| ---: | ---: | ---: | ---: |")
    for customers in _customers(args.customers):
        first = within = others = 0
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            result = run(seed, customers, args.days, params, scenarios=[spike])
            eu = [f.bucket for f in result.fired if f.segment == "region:EU"]
            first += bucket in eu
            within += any(bucket <= b < bucket + 6 for b in eu)
            others += any(
                f.segment.startswith("region:")
                and f.segment != "region:EU"
                and bucket <= f.bucket < bucket + 6
                for f in result.fired
            )
        n = args.seeds
        _out(f"| {customers:,} | {first}/{n} | {within}/{n} | {others}/{n} runs |", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stream_app.alerts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-rules", help="validate a rules file (TOML or YAML)")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_rules)
    for name, func, helptext in (
        ("fp-rate", cmd_fp_rate, "false positives of the churn detector on steady traffic"),
        ("detection", cmd_detection, "how often an injected churn spike is caught"),
    ):
        command = sub.add_parser(name, help=helptext)
        command.add_argument("--seeds", type=int, default=100)
        command.add_argument("--first-seed", type=int, default=1)
        command.add_argument("--customers", default="1000,3000,10000")
        command.add_argument("--days", type=float, default=14.0)
        command.add_argument("--z", type=float, default=None, help="z threshold")
        command.add_argument("--min-count", type=int, default=None)
        command.add_argument("--std-floor", type=float, default=None)
        if name == "detection":
            command.add_argument("--factor", type=float, default=8.0)
        else:
            command.add_argument(
                "--warmup",
                type=float,
                default=2.0,
                help="simulated days before the counted ones (the initial signups take 2)",
            )
        command.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
