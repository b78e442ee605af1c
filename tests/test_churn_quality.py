"""The churn-risk model's documented quality holds: the documented run, re-run, keeps its AUC
(within a margin) and beats the recency baseline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_app.cli import main
from stream_app.lifecycle.evaluate import DOCUMENTED, auc, deciles, evaluate

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


def test_auc_and_deciles_on_small_tables() -> None:
    labels = [False, False, True, True]
    assert auc([0.1, 0.2, 0.3, 0.4], labels) == 1.0
    assert auc([0.4, 0.3, 0.2, 0.1], labels) == 0.0
    assert auc([0.5, 0.5, 0.5, 0.5], labels) == 0.5  # ties count half
    assert auc([0.1, 0.3, 0.2, 0.4], labels) == 0.75
    with pytest.raises(ValueError, match="positives and negatives"):
        auc([0.1, 0.2], [True, True])
    predicted = [i / 100 for i in range(100)]
    observed = [i >= 90 for i in range(100)]
    table = deciles(predicted[::-1], observed[::-1])
    assert [d.count for d in table] == [10] * 10
    assert [d.observed for d in table] == [0.0] * 9 + [1.0]
    assert table[0].predicted == pytest.approx(0.045)
    assert table[9].predicted == pytest.approx(0.945)
