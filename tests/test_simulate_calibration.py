"""The simulator's default population reads like an e-commerce business (issue 24, item 2).

A default run, generated in process (no broker), is recounted with ``kpi verify``'s
reference; each KPI the defaults are calibrated to must land inside the ecommerce
benchmark profile's band for the 30d window: the same file the API and the dashboard read.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from stream_app.benchmarks.compare import as_number, position
from stream_app.benchmarks.profile import load_profile
from stream_app.settings import Settings
from stream_app.simulate import SimulationConfig, generate
from stream_app.verify.reference import filter_records, reference_from_intake

# Monthly churn, repeat purchases, NPS, CSAT, click-to-purchase conversion, AOV and CAC.
CALIBRATED = (
    "churn_rate",
    "repeat_purchase_rate",
    "nps",
    "csat",
    "conversion_rate",
    "aov",
    "cac",
)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_default_run_lands_inside_the_ecommerce_bands(seed: int) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    config = SimulationConfig(seed=seed, customers=3000)  # the default 40 days and behaviour
    assert config.duration >= timedelta(days=36)  # a whole 30d window after the ramp-up
    intake = filter_records(generate(config), settings)
    reference = reference_from_intake(intake, settings)
    month = next(w for w in reference.current_windows() if w.name == "30d")
    kpis = reference.expected_kpis("all", month.start_ms, month.end_ms)
    profile = load_profile("ecommerce", [w.name for w in settings.windows])
    outside = {}
    for name in CALIBRATED:
        band = profile.band(name, "30d")
        assert band is not None, f"the ecommerce profile has no 30d band for {name}"
        if position(kpis[name], band) != "within":
            outside[name] = (as_number(kpis[name]), band.low, band.high)
    assert not outside, f"outside their bands (value, low, high): {outside}"
