"""How ``kpi bench --repeat`` condenses its runs: per-repetition ratios, medians, every run kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.bench.cli import summarise_lifecycle, summarise_runs


def _run(rate: float, plain: float, mismatches: int = 0) -> dict[str, float]:
    return {
        "seconds": 200_000 / rate,
        "events_per_s": rate,
        "events_per_s_per_worker": rate,
        "producer_seconds": 4.0,
        "ratio_to_plain_per_worker": rate / plain,
        "verify_mismatches": mismatches,
    }


def test_ratios_are_paired_per_repetition_and_the_median_reported() -> None:
    # The machine slows down in the second repetition: both (a) and (b) halve. The ratio of
    # each pair stays 0.2; a ratio of the medians (or of a fast (b) to a slow (a)) would not.
    plain_rates = [200_000.0, 100_000.0, 150_000.0]
    plain = [{"seconds": 200_000 / r, "events_per_s": r} for r in plain_rates]
    one = [_run(40_000, 200_000), _run(20_000, 100_000), _run(36_000, 150_000)]
    summary = summarise_runs(plain, {1: one})

    assert summary["repeat"] == 3
    assert summary["plain_consumer"]["events_per_s"] == 150_000
    assert summary["plain_consumer"]["runs"] == plain
    figures = summary["engine"]["1"]
    assert figures["events_per_s"] == 36_000
    assert figures["ratio_to_plain_per_worker"] == pytest.approx(0.2)
    assert figures["ratio_min"] == pytest.approx(0.2)
    assert figures["ratio_max"] == pytest.approx(0.24)
    assert figures["runs"] == one
    assert "scaling_2_vs_1" not in summary


def test_scaling_pairs_runs_of_one_repetition_and_mismatches_add_up() -> None:
    plain = [{"seconds": 1.0, "events_per_s": 200_000.0}] * 3
    one = [_run(40_000, 200_000), _run(20_000, 200_000, mismatches=2), _run(30_000, 200_000)]
    two = [_run(60_000, 200_000), _run(40_000, 200_000), _run(30_000, 200_000, mismatches=1)]
    summary = summarise_runs(plain, {1: one, 2: two})

    # Per repetition 1.5, 2.0 and 1.0: the median is 1.5 (medians of the rates give 4/3).
    assert summary["scaling_2_vs_1"] == pytest.approx(1.5)
    assert summary["engine"]["1"]["verify_mismatches"] == 2
    assert summary["engine"]["2"]["verify_mismatches"] == 1


def test_one_run_reports_that_run() -> None:
    plain = [{"seconds": 1.0, "events_per_s": 180_000.0}]
    one = [_run(45_000, 180_000)]
    figures = summarise_runs(plain, {1: one})["engine"]["1"]
    assert figures["ratio_to_plain_per_worker"] == pytest.approx(0.25)
    assert figures["ratio_min"] == figures["ratio_max"] == figures["ratio_to_plain_per_worker"]


def test_the_lifecycle_drop_is_paired_per_repetition() -> None:
    # One worker 0.30, 0.20, 0.36 and lifecycle on 0.24, 0.19, 0.30 in the same repetitions:
    # drops 0.06, 0.01, 0.06, median 0.06 (the difference of the medians would be 0.06 too,
    # but the pairs keep a slow repetition from meeting a fast one).
    one = [_run(60_000, 200_000), _run(20_000, 100_000), _run(54_000, 150_000)]
    on = [_run(48_000, 200_000), _run(19_000, 100_000), _run(45_000, 150_000)]
    figures = summarise_lifecycle(one, on)
    assert figures["drops"] == pytest.approx([0.06, 0.01, 0.06])
    assert figures["drop_from_one_worker"] == pytest.approx(0.06)
    assert figures["ratio_to_plain_per_worker"] == pytest.approx(0.24)
    assert (figures["ratio_min"], figures["ratio_max"]) == pytest.approx((0.19, 0.30))
    assert figures["runs"] == on


_RANGES = "--repeat at least 1"


@pytest.mark.parametrize(
    ("args", "cure"),
    [
        (["--repeat", "0"], _RANGES),
        (["--repeat", "-2"], _RANGES),
        (["--workers", "0"], _RANGES),
        (["--events", "10"], _RANGES),
        (["--lifecycle", "--workers", "2"], "add 1 to --workers"),
    ],
)
def test_arguments_out_of_range_are_refused_before_anything_starts(
    args: list[str], cure: str, tmp_path: Path
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "stream_app", "bench", *args, "--log-dir", str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert completed.returncode == 2
    assert cure in completed.stderr + completed.stdout
    # Refused before a broker or Redis was started: no child logs were written.
    assert not (tmp_path / "logs").exists()
