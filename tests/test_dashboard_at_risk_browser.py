"""The dashboard's at-risk panel in headless Chromium, against the standalone dashboard app
and a real Redis seeded with snapshots and ``kpi-at-risk:<segment>`` sorted sets.

The panel must list the segment's ten highest risks in order with their percentages, show
only text (a customer id that looks like HTML stays text), follow a change of segment, say
so when a segment has nobody at risk, and load without a failed request or script error.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from stream_app.redis_keys import at_risk_key
from tests.cdp import Browser, Page, ensure_chromium
from tests.kpi_data import snapshot, write_snapshot
from tests.test_api import END, db_url, rdb, serve, settings_for

__all__ = ["db_url", "rdb"]  # fixtures shared with tests/test_api.py

pytestmark = pytest.mark.integration

WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
HTML_ID = "<b>bold</b>"

PANEL_JS = """
[...document.querySelectorAll('#at-risk li')].map((li) => ({
  customer: li.dataset.customer || null, cls: li.className,
  text: li.querySelector('.risk-value') ? li.querySelector('.risk-value').textContent : null,
  name: li.querySelector('.risk-customer') ? li.querySelector('.risk-customer').textContent
    : li.textContent,
  bold: li.querySelectorAll('b').length,
}))
"""


@pytest.fixture(scope="module")
def chromium() -> None:
    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(f"no headless Chromium: {reason}")


def _seed(client: redis.Redis) -> dict[str, float]:
    for segment in ("all", "region:EU", "region:NA"):
        for window, size in WINDOWS.items():
            write_snapshot(client, snapshot(window, segment, END, size=size), publish=False)
    risks = {f"cust-{n:02d}": round(0.05 + n * 0.03, 2) for n in range(25)}
    risks[HTML_ID] = 0.999
    client.zadd(at_risk_key("all"), risks)
    client.zadd(at_risk_key("region:EU"), {"eu-7": 0.42, "eu-3": 0.61})
    return risks


async def _select(page: Page, segment: str) -> None:
    await page.evaluate(
        f"""(() => {{ const s = document.getElementById('segment');
        s.value = {json.dumps(segment)}; s.dispatchEvent(new Event('change')); }})()"""
    )


async def _panel(page: Page, first: str) -> list[dict[str, Any]]:
    await page.wait_for(
        f"(() => {{ const li = document.querySelector('#at-risk li');"
        f" return li && (li.dataset.customer || li.textContent) === {json.dumps(first)}; }})()",
        10,
    )
    result: list[dict[str, Any]] = await page.evaluate(PANEL_JS)
    return result


async def test_the_at_risk_panel_in_headless_chromium(
    chromium: None, db_url: str, rdb: redis.Redis, artifacts_dir: Path
) -> None:
    risks = _seed(rdb)
    top = sorted(risks.items(), key=lambda kv: kv[1], reverse=True)[:10]
    async with serve(settings_for(db_url)) as origin:
        browser = await Browser.start(log_path=artifacts_dir / "chromium-at-risk.log")
        page = await browser.new_page()
        try:
            await page.enable(1440, 1700)
            await page.goto(f"{origin}/")
            shown = await _panel(page, HTML_ID)
            assert [(e["customer"], e["text"]) for e in shown] == [
                (customer, f"{risk * 100:.1f}%") for customer, risk in top
            ]
            assert shown[0]["name"] == HTML_ID  # shown as text, never as HTML
            assert all(e["bold"] == 0 for e in shown)
            assert (await page.evaluate("document.getElementById('risk-hint').textContent")) == (
                "churn risk within 30 days"
            )
            await asyncio.sleep(0.3)
            await page.screenshot(artifacts_dir / "dashboard-at-risk.png")

            await _select(page, "region:EU")
            shown = await _panel(page, "eu-3")
            assert [(e["customer"], e["text"]) for e in shown] == [
                ("eu-3", "61.0%"),
                ("eu-7", "42.0%"),
            ]
            # A segment with no at-risk set: nobody at risk, and no failed request.
            await _select(page, "region:NA")
            shown = await _panel(page, "No customer at risk")
            assert [e["cls"] for e in shown] == ["empty"]

            assert page.failures() == []
            assert page.exceptions == []
            assert page.console_errors == []
        finally:
            await page.close()
            await browser.close()
