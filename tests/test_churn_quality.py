"""The churn-risk model's documented quality holds: the documented run, re-run, keeps its AUC
(within a margin) and beats the recency baseline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_app.cli import main
from stream_app.lifecycle.evaluate import DOCUMENTED, evaluate

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
MARGIN = 0.02


def documented(row: str) -> float:
    match = re.search(rf"^\| {re.escape(row)} \| ([0-9.]+) \|$", DOCS.read_text(), re.M)
    assert match, f"docs/metrics.md has no AUC row {row!r}"
    return float(match.group(1))


def test_the_model_keeps_its_documented_auc_and_beats_the_baseline() -> None:
    report = evaluate(DOCUMENTED)
    assert report.auc_model >= documented("churn-risk model") - MARGIN
    assert report.auc_model > report.auc_baseline + 0.05
    # Calibrated within a few points on average over the deciles.
    gap = sum(abs(d.predicted - d.observed) for d in report.deciles) / len(report.deciles)
    assert gap < 0.03


def test_kpi_churn_eval_prints_the_tables_and_refuses_periods_that_do_not_fit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["churn-eval", "--customers", "150", "--days", "45", "--train-days", "10"]) == 0
    out = capsys.readouterr().out
    assert "| churn-risk model | 0." in out
    assert "| baseline: days since the last purchase | 0." in out
    assert len([line for line in out.splitlines() if re.match(r"^\| \d+ \| 0\.", line)]) == 10
    assert main(["churn-eval", "--days", "40", "--train-days", "20"]) == 2
    assert "must leave 30 days" in capsys.readouterr().err
