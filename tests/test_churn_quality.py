"""The churn-risk model's documented quality holds: the documented run, re-run, keeps its AUC
(within a margin) and beats the recency baseline."""

from __future__ import annotations

import re
from pathlib import Path

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
