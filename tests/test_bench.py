"""``kpi bench`` end to end on a small load: every measurement completes and stays exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _bench(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """Run ``kpi bench`` with ``args``; its standard output and its JSON result."""
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable, "-m", "stream_app", "bench", *args,
            "--out", str(out), "--log-dir", str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return completed.stdout, result


def test_bench_measures_everything_and_the_numbers_stay_exact(tmp_path: Path) -> None:
    stdout, result = _bench(
        tmp_path,
        "--events", "3000",
        "--workers", "1,2",
        "--latency-seconds", "3",
        "--memory-customers", "3000",
        "--lifecycle",
    )  # fmt: skip
    assert result["events"] > 2500
    assert result["plain_consumer"]["events_per_s"] > 0
    for workers in ("1", "2"):
        figures = result["engine"][workers]
        assert figures["verify_mismatches"] == 0
        assert figures["events_per_s"] > 0
        assert 0 < figures["ratio_to_plain_per_worker"] < 1
    assert result["scaling_2_vs_1"] > 0
    # --lifecycle: one more one-worker run, paired with the first, exact on its own recount,
    # which has the lifecycle:<stage> segments too.
    lifecycle, one = result["lifecycle"], result["engine"]["1"]
    assert lifecycle["verify_mismatches"] == 0
    assert lifecycle["runs"][0]["snapshots_checked"] > one["runs"][0]["snapshots_checked"]
    assert lifecycle["drop_from_one_worker"] == pytest.approx(
        one["ratio_to_plain_per_worker"] - lifecycle["ratio_to_plain_per_worker"]
    )
    assert "lifecycle on" in stdout
    latency = result["latency"]
    assert latency["events"] > 0
    assert 0 < latency["p50_s"] <= latency["p99_s"] <= latency["max_s"]
    memory = result["memory"]
    assert memory["rss_mb_after_customers"] > memory["idle_rss_mb"] > 0
    # The printed table carries the ratios users compare.
    assert "plain aiokafka consumer" in stdout


def test_bench_repeat_pairs_each_engine_run_with_its_own_plain_run(tmp_path: Path) -> None:
    stdout, result = _bench(
        tmp_path,
        "--events", "2000",
        "--workers", "1",
        "--repeat", "2",
        "--latency-seconds", "0",
        "--memory-customers", "0",
    )  # fmt: skip
    assert result["repeat"] == 2
    plain_runs = result["plain_consumer"]["runs"]
    runs = result["engine"]["1"]["runs"]
    assert len(plain_runs) == len(runs) == 2
    for run, plain in zip(runs, plain_runs, strict=True):
        # (a) is the median of three passes over the messages of its repetition.
        assert len(plain["passes"]) == 3
        assert plain["seconds"] == sorted(plain["passes"])[1]
        assert run["verify_mismatches"] == 0
        assert run["ratio_to_plain_per_worker"] == pytest.approx(
            run["events_per_s_per_worker"] / plain["events_per_s"]
        )
    figures = result["engine"]["1"]
    assert figures["ratio_min"] <= figures["ratio_to_plain_per_worker"] <= figures["ratio_max"]
    assert "medians of 2 runs" in stdout
    assert "latency" not in result
    assert "memory" not in result
