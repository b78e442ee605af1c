"""``kpi bench`` end to end on a small load: every measurement completes and stays exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_measures_everything_and_the_numbers_stay_exact(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            sys.executable, "-m", "stream_app", "bench",
            "--events", "3000",
            "--workers", "1,2",
            "--latency-seconds", "3",
            "--memory-customers", "3000",
            "--out", str(out),
            "--log-dir", str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["events"] > 2500
    assert result["plain_consumer"]["events_per_s"] > 0
    for workers in ("1", "2"):
        figures = result["engine"][workers]
        assert figures["verify_mismatches"] == 0
        assert figures["events_per_s"] > 0
        assert 0 < figures["ratio_to_plain_per_worker"] < 1
    assert result["scaling_2_vs_1"] > 0
    latency = result["latency"]
    assert latency["events"] > 0
    assert 0 < latency["p50_s"] <= latency["p99_s"] <= latency["max_s"]
    memory = result["memory"]
    assert memory["rss_mb_after_customers"] > memory["idle_rss_mb"] > 0
    # The printed table carries the ratios users compare.
    assert "plain aiokafka consumer" in completed.stdout
