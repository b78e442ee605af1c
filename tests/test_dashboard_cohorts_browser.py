"""The dashboard's cohort panel in headless Chromium, against the real Redis (section 6).

The standalone dashboard app serves this process's event loop; cohorts are written to Redis
in the contract's format through its models (``tests/cohort_data.py``), as the engine writes
them. The heatmap must show, cell for cell, what ``GET /api/v1/cohorts`` answers (each
retention as a percentage, colour by value, incomplete cells marked), follow a cohort
published on its channel within 3 seconds, switch grain and segment, and draw the
retention and LTV curves. The picture of the panel goes to ``docs/img/cohorts.png``
(README), refreshed at every run.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from schemas.cohort import Cohort
from stream_app.kpis.cohorts import to_us
from tests.cdp import Browser, Page, ensure_chromium
from tests.cohort_data import cohort, cohorts, publish_update, write_cohorts
from tests.conftest import ROOT
from tests.kpi_data import snapshot, write_snapshot
from tests.test_api import db_url, get, rdb, serve, settings_for

__all__ = ["db_url", "rdb"]  # fixtures shared with tests/test_api.py

pytestmark = pytest.mark.integration

WATERMARK = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
PICTURE = ROOT / "docs" / "img" / "cohorts.png"
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}  # fmt: skip

CELLS_JS = """
[...document.querySelectorAll('#cohort-table tbody tr')].map((tr) => ({
  start: tr.dataset.cohort,
  size: tr.querySelector('td.size').textContent,
  cells: [...tr.querySelectorAll('td.heat')].filter((td) => td.dataset.k).map((td) => ({
    k: Number(td.dataset.k),
    retention: JSON.parse(td.dataset.retention),
    complete: td.dataset.complete === 'true',
    text: td.querySelector('.heat-value').textContent,
    marked: td.classList.contains('incomplete') && td.querySelector('.open-mark') !== null,
    background: getComputedStyle(td).backgroundColor,
  })),
}))
"""


@pytest.fixture(scope="module")
def chromium() -> None:
    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(f"no headless Chromium: {reason}")


def _seed(client: redis.Redis) -> dict[str, list[Cohort]]:
    found = {
        "week:all": cohorts(WATERMARK, "week", seed=2),
        "month:all": cohorts(WATERMARK, "month", seed=4),
        "week:region:EU": cohorts(WATERMARK, "week", seed=7, count=8),
    }
    for name, written in found.items():
        grain, _, segment = name.partition(":")
        write_cohorts(client, grain, segment, written)  # type: ignore[arg-type]
    for window, size in WINDOWS.items():  # the rest of the page has something to show
        write_snapshot(client, snapshot(window, "all", WATERMARK, size=size))
    return found


async def _assert_cells_are_the_api(page: Page, base: str, grain: str, segment: str) -> int:
    """Every row and cell of the heatmap is the API's cohort and period; returns the cells."""
    await page.wait_for(
        f"document.getElementById('cohorts-panel').dataset.loaded === '{grain}:{segment}'", 10
    )
    status, body, _ = await get(f"{base}/api/v1/cohorts?grain={grain}&segment={segment}")
    assert status == 200, body
    rows = await page.evaluate(CELLS_JS)
    assert [row["start"] for row in rows] == [c["cohort_start"] for c in body["cohorts"]]
    checked = 0
    for row, expected in zip(rows, body["cohorts"], strict=True):
        assert row["size"] == str(expected["size"])
        assert len(row["cells"]) == len(expected["periods"]), row["start"]
        for cell, period in zip(row["cells"], expected["periods"], strict=True):
            assert cell["k"] == period["k"]
            assert cell["retention"] == period["retention"]
            assert cell["complete"] == period["complete"]
            # One decimal; within half a unit (a browser and Python round a tie apart).
            assert cell["text"].endswith("%"), cell
            shown = float(cell["text"].removesuffix("%"))
            assert abs(shown - period["retention"] * 100) <= 0.05 + 1e-9, (row["start"], cell)
            assert cell["marked"] == (not period["complete"]), (row["start"], cell)
            checked += 1
    # The colour scale: a lower retention is a lighter (or at least another) colour.
    by_retention = {cell["retention"]: cell["background"] for row in rows for cell in row["cells"]}
    assert by_retention[max(by_retention)] != by_retention[min(by_retention)]
    return checked


async def _choose(page: Page, select: str, value: str) -> None:
    await page.evaluate(
        f"""(() => {{ const s = document.getElementById({json.dumps(select)});
        s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})()"""
    )


async def test_the_cohort_panel_in_headless_chromium(
    chromium: None, db_url: str, rdb: redis.Redis, artifacts_dir: Path
) -> None:
    seeded = _seed(rdb)
    browser = await Browser.start(log_path=artifacts_dir / "chromium-cohorts.log")
    page = await browser.new_page()
    try:
        async with serve(settings_for(db_url)) as base:
            await page.enable(1440, 1000)
            await page.goto(f"{base}/")
            cells = await _assert_cells_are_the_api(page, base, "week", "all")
            assert cells == sum(len(c.periods) for c in seeded["week:all"])
            curves = await page.evaluate(
                """['cohort-retention', 'cohort-ltv'].map((id) =>
                   document.querySelectorAll(`#${id} .uplot .u-legend .u-series`).length)"""
            )
            assert curves == [1 + 6, 1 + 6]  # x, then the six newest cohorts with a k1

            # A cohort published on its channel is on the page within 3 s.
            second = seeded["week:all"][1]
            changed = cohort(to_us(second.cohort_start), to_us(WATERMARK), "week", size=77, seed=11)
            assert changed.periods[-1].retention != second.periods[-1].retention
            started = time.monotonic()
            publish_update(rdb, "week", "all", changed)
            retention = changed.periods[-1].retention
            assert retention is not None
            start = changed.model_dump(mode="json")["cohort_start"]
            await page.wait_for(
                f"""(() => {{ const tr = document.querySelector(
                  '#cohort-table tr[data-cohort="{start}"]');
                  return tr && tr.querySelector('td.size').textContent === '77'
                    && tr.querySelector('td.heat[data-k="1"]').dataset.retention
                       === '{json.dumps(retention)}'; }})()""",
                3.0,
            )
            assert time.monotonic() - started < 3.0
            await _assert_cells_are_the_api(page, base, "week", "all")

            await page.enable(1440, 1060)
            await page.evaluate(  # under the sticky top bar
                "window.scrollTo(0, document.getElementById('cohorts-panel').offsetTop - 64)"
            )
            await asyncio.sleep(0.5)
            await page.screenshot(PICTURE)
            await page.screenshot(artifacts_dir / "cohorts.png")

            # The grain switch, then the segment selector (the cohort segments of the grain).
            await page.evaluate(
                "document.querySelector('#cohort-grains [data-grain=month]').click()"
            )
            await _assert_cells_are_the_api(page, base, "month", "all")
            options = await page.evaluate(
                "[...document.querySelectorAll('#cohort-segment option')].map((o) => o.value)"
            )
            assert options == ["all"]  # region:EU has weekly cohorts only
            await page.evaluate(
                "document.querySelector('#cohort-grains [data-grain=week]').click()"
            )
            await _assert_cells_are_the_api(page, base, "week", "all")
            await _choose(page, "cohort-segment", "region:EU")
            await _assert_cells_are_the_api(page, base, "week", "region:EU")
            # The page's own segment is left alone; the stream now carries region:EU's cohorts.
            assert await page.evaluate("document.getElementById('segment').value") == "all"
            eu = seeded["week:region:EU"][0]
            moved = cohort(to_us(eu.cohort_start), to_us(WATERMARK), "week", size=5, seed=1)
            publish_update(rdb, "week", "region:EU", moved)
            await page.wait_for(
                "document.querySelector('#cohort-table tbody tr td.size').textContent === '5'", 3
            )
            assert page.failures() == []
            assert page.exceptions == []
            assert page.console_errors == []
    finally:
        await page.close()
        await browser.close()
