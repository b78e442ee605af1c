"""README's figures about ``make demo`` are the demo's: this fails when either drifts.

The demo's traffic is declared once (``stream_app.simulate.demo``); README states its
population, history (days and events), live rate and disorder, and ``kpi dev --help`` its
history and rate. How fast it runs is measured by tests/test_demo.py (every headline KPI
within a minute), not here.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

import pytest

from stream_app.cli import build_parser
from stream_app.settings import Settings
from stream_app.simulate import Simulation
from stream_app.simulate.cli import add_parser, build_config
from stream_app.simulate.demo import DEMO_CUSTOMERS, DISORDER, HISTORY, DemoTraffic
from tests.conftest import ROOT


def _demo_paragraph() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("`make demo` runs `kpi dev --simulate --watch`")
    return " ".join(text[start : text.index("### What you should see", start)].split())


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_readme_states_the_demos_size_and_pace() -> None:
    paragraph = _demo_paragraph()
    traffic = DemoTraffic()
    population = re.search(r"population of ([\d,]+) customers", paragraph)
    assert population, paragraph
    assert _number(population.group(1)) == DEMO_CUSTOMERS
    history = re.search(
        r"first sends (\d+) days of history at once, about ([\d,]+) events", paragraph
    )
    assert history, paragraph
    assert int(history.group(1)) == HISTORY.days
    assert _number(history.group(2)) == traffic.history_events
    live = re.search(r"live events, about (\d+) a second", paragraph)
    assert live, paragraph
    assert int(live.group(1)) == round(traffic.live_per_second)
    assert f"`--disorder {DISORDER}`" in paragraph
    # The first line the demo prints says the same.
    summary = traffic.summary()
    assert f"{DEMO_CUSTOMERS:,} simulated customers" in summary
    assert f"{HISTORY.days} days" in summary
    assert f"about {traffic.history_events:,} events" in summary
    assert f"about {round(traffic.live_per_second)} live events a second" in summary


def test_kpi_dev_help_states_the_same_history_and_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser("dev").parse_args(["dev", "--help"])
    dev_help = " ".join(capsys.readouterr().out.split())
    traffic = DemoTraffic()
    assert f"{HISTORY.days} days of history at once" in dev_help
    assert f"about {round(traffic.live_per_second)} a second" in dev_help


def test_the_history_plays_at_the_populations_own_pace() -> None:
    # The calibrated KPIs hold for the default activity: the history is not scaled up or
    # down to reach its size (the population is), so the 24h, 7d and 30d windows read true.
    parser = argparse.ArgumentParser(prog="kpi")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(DemoTraffic().argv()))
    now = datetime(2027, 1, 5, 12, tzinfo=UTC)
    config, _ = build_config(Settings(_env_file=None), args, clock=lambda: now)  # type: ignore[call-arg]
    plan = Simulation(config).plan
    assert plan.history_activity_scale is not None
    assert 0.97 < plan.history_activity_scale < 1.03
    assert config.history == HISTORY
