"""The dashboard page in a real browser, against a real stack: broker, worker and Redis.

Debian's Chromium runs headless (installed by ``scripts/ensure-chromium.sh`` when missing;
the test skips, saying why, only if that fails) with a fresh profile and the flags that keep
it off the network, driven over the DevTools protocol (``tests/cdp.py``). The worker
processes real events; the page must load without a failed request, show in its tiles
exactly what Redis holds, follow a new snapshot within 3 seconds, turn "stale" when updates
stop, draw each KPI's benchmark band and list the strengths and weaknesses the API ranks,
and switch segments. A screenshot goes to ``test-artifacts/dashboard.png`` (README's picture
is the demo's dashboard, taken by ``tests/test_demo.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer

from stream_app.benchmarks.profile import load_profile
from stream_app.published import kpi_kind
from stream_app.watch.view import format_value
from tests.cdp import Browser, Page, ensure_chromium
from tests.conftest import StackEnv
from tests.kpi_data import alert, rfc3339, write_alert, write_snapshot

pytestmark = pytest.mark.integration

DB = 14
WINDOWS = ("1h", "24h", "7d", "30d")
CAMPAIGN = "campaign:spring-sale"


@pytest.fixture(scope="module")
def chromium() -> None:
    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(f"no headless Chromium: {reason}")


@pytest.fixture
def rdb(redis_url: str) -> Iterator[tuple[str, redis.Redis]]:
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url, client
    client.flushdb()
    client.close()


async def _send_events(bootstrap: str, prefix: str) -> None:
    """Signups in two regions (half via a campaign), clicks, purchases and surveys, now."""
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for n in range(12):
            customer = f"web-{n}"
            key = customer.encode()
            at = rfc3339(now - timedelta(seconds=60 - n))
            base = {"customer_id": customer, "occurred_at": at}
            events: list[tuple[str, dict[str, Any]]] = [
                ("campaign-clicks", {"event_id": f"c{n}", "campaign_id": "spring-sale",
                                     "cost": "0.75"}),
                ("signups", {"event_id": f"s{n}", "region": "EU" if n % 3 else "NA",
                             **({"campaign_id": "spring-sale"} if n % 2 else {})}),
                ("purchases", {"event_id": f"p{n}", "order_id": f"o{n}",
                               "amount": f"{20 + n * 3.35:.2f}", "currency": "USD"}),
                ("surveys", {"event_id": f"v{n}", "survey_type": "nps", "score": n % 11}),
            ]  # fmt: skip
            if n % 4 == 0:
                events.append(("surveys", {"event_id": f"w{n}", "survey_type": "csat",
                                           "score": 1 + n % 5}))  # fmt: skip
            for topic, fields in events:
                value = orjson.dumps({**base, **fields})
                await producer.send_and_wait(f"{prefix}{topic}", value, key=key)
    finally:
        await producer.stop()


def _stored(client: redis.Redis, window: str, segment: str) -> dict[str, Any]:
    raw = client.hgetall(f"kpi:{window}:{segment}")
    return {k.decode(): orjson.loads(v) for k, v in raw.items()}


def _shown_matches(name: str, value: Any, text: str) -> bool:
    """Whether the page's text shows ``value``: the same rules as ``kpi watch``.

    Counts and money must match digit for digit (thousands separators and the currency
    symbol aside); rounded ratios within half a unit of their last shown digit (a browser
    and Python may round an exact tie differently).
    """
    expected = format_value(name, value)
    shown = text.replace(",", "").replace("$", "").replace("\u2212", "-")
    kind = kpi_kind(name)
    if value is None or kind in ("count", "money"):
        return shown == expected
    digits = {"percent": 2, "score": 1, "ratio": 2}[kind]
    number = float(shown.rstrip("%"))
    scaled = value * 100 if kind == "percent" else value
    return abs(number - scaled) <= 0.5 * 10**-digits + 1e-9


TILES_JS = """
[...document.querySelectorAll('.tile .tile-value, #kpi-table td .cell-value')].map((node) => {
  const host = node.closest('[data-kpi]');
  return {window: host.dataset.window, kpi: host.dataset.kpi, where: host.className,
          value: node.dataset.value, text: node.textContent};
})
"""


async def _assert_page_shows_redis(page: Page, client: redis.Redis, segment: str) -> int:
    """Every tile and table cell holds, and shows, the value of Redis; returns how many."""
    cells = await page.evaluate(TILES_JS)
    checked = 0
    for window in WINDOWS:
        stored = _stored(client, window, segment)
        assert stored, f"no snapshot kpi:{window}:{segment} in Redis"
        mine = [c for c in cells if c["window"] == window]
        assert len(mine) >= 8, f"{window}: {len(mine)} cells"
        for cell in mine:
            expected = stored[cell["kpi"]]
            assert cell["value"], f"{window} {cell['kpi']} shows nothing ({cell['where']})"
            assert json.loads(cell["value"]) == expected, (window, cell, expected)
            assert _shown_matches(cell["kpi"], expected, cell["text"]), (window, cell, expected)
            checked += 1
    return checked


async def _wait_values(page: Page, segment: str, client: redis.Redis) -> None:
    """Until the page shows the current snapshots of ``segment`` (the orders of 1h, say)."""
    kpi = "clicks" if segment.startswith("campaign:") else "orders"
    expected = _stored(client, "1h", segment)[kpi]
    await page.wait_for(
        f"""(() => {{
          const sel = document.getElementById('segment');
          const tile = document.querySelector(
            '.tile[data-window="1h"][data-kpi="{kpi}"] .tile-value');
          return sel.value === {json.dumps(segment)} && tile && tile.dataset.value === '{expected}';
        }})()""",
        10,
    )


BANDS_JS = """
[...document.querySelectorAll('.tile')].map((tile) => {
  const band = tile.querySelector('.band');
  return {window: tile.dataset.window, kpi: tile.dataset.kpi, hidden: band.hidden,
          position: band.dataset.position, side: band.dataset.side,
          text: tile.querySelector('.band-text').textContent, title: band.title};
})
"""

PANEL_JS = """
(async () => {
  const shown = (cls) => [...document.querySelectorAll(`#bench li.${cls}`)]
    .map((li) => li.dataset.kpi);
  const response = await fetch('api/v1/benchmarks/strengths-weaknesses?window=30d&segment=all');
  const body = await response.json();
  return {strengths: shown('strength'), weaknesses: shown('weakness'),
          api: {strengths: body.strengths.map((e) => e.kpi).slice(0, 5),
                weaknesses: body.weaknesses.map((e) => e.kpi).slice(0, 5)},
          hint: document.getElementById('bench-hint').textContent,
          bands: document.querySelector('.chart[data-chart="satisfaction"]').dataset.bands};
})()
"""


async def _assert_bands_and_panel(page: Page) -> None:
    """Each tile with a benchmark band on its window draws it and places the value; the
    strengths and weaknesses panel lists what the API ranks, in its order."""
    profile = load_profile("ecommerce", WINDOWS)
    tiles = await page.evaluate(BANDS_JS)
    banded = 0
    for tile in tiles:
        band = profile.band(tile["kpi"], tile["window"])
        assert tile["hidden"] == (band is None), tile
        if band is None:
            continue
        banded += 1
        assert tile["text"].startswith((f"{tile['position']} ", "band ")), tile
        assert "E-commerce" in tile["title"], tile
        assert tile["position"] in ("below", "within", "above", ""), tile
    assert banded >= 4 * 3  # NPS, CSAT and AOV have a band on every window
    month_nps = next(t for t in tiles if t["window"] == "30d" and t["kpi"] == "nps")
    # Scores 0 to 10 and 0 again: 2 promoters, 8 detractors of 12, NPS -50, under 28-55.
    assert month_nps["position"] == "below"
    assert month_nps["side"] == "worse"
    assert month_nps["text"] == "below 28.0\u201355.0"
    await page.wait_for("document.querySelectorAll('#bench li[data-kpi]').length > 0", 10)
    panel = await page.evaluate(PANEL_JS)
    assert panel["weaknesses"] == panel["api"]["weaknesses"]
    assert panel["strengths"] == panel["api"]["strengths"]
    assert "nps" in panel["weaknesses"]
    assert panel["strengths"], "the clicks all converted: a conversion rate above 1-4 %"
    assert panel["hint"].startswith("30d")
    assert set(panel["bands"].split(",")) == {"nps", "csat"}  # shaded on the NPS/CSAT chart


async def test_the_dashboard_in_headless_chromium(
    chromium: None,
    stack: StackEnv,
    rdb: tuple[str, redis.Redis],
    artifacts_dir: Path,
) -> None:
    url, client = rdb
    worker = stack.start_worker("dashboard", KPI_REDIS_URL=url, KPI_CHURN_ENABLED="false")
    write_alert(client, alert(1, segment="region:EU"))
    await asyncio.to_thread(worker.wait_assigned, 4)
    await _send_events(stack.bootstrap, stack.prefix)
    deadline = time.monotonic() + 60
    while not (
        client.hget("kpi:1h:all", "orders") == b"12"
        and client.hget("kpi:1h:all", "nps_responses") == b"12"
        and client.hget(f"kpi:1h:{CAMPAIGN}", "clicks") == b"12"
        and client.hget("kpi:30d:region:NA", "orders") == b"4"
    ):
        assert time.monotonic() < deadline, f"KPIs not published:\n{worker.log_tail()}"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # the publisher's last coalesced round for every window

    origin = f"http://127.0.0.1:{worker.web_port}"
    browser = await Browser.start(log_path=artifacts_dir / "chromium.log")
    page = await browser.new_page()
    try:
        await page.enable(1440, 900)
        await page.goto(f"{origin}/?stale=4")
        await _wait_values(page, "all", client)

        # The tiles and the table show exactly what Redis holds.
        assert await _assert_page_shows_redis(page, client, "all") >= 4 * (8 + 29)
        assert await page.evaluate("document.querySelectorAll('.window-card').length") == 4
        charts = await page.evaluate("document.querySelectorAll('#charts .uplot').length")
        assert charts == 4, "the four trend charts are drawn"
        feed = await page.evaluate("document.getElementById('alerts').textContent")
        assert "Churn spike #1 in region:EU" in feed

        # No new snapshot for 4 s: the page says it is stale.
        await page.wait_for(
            "document.getElementById('status').dataset.state === 'stale'", 15, interval_s=0.2
        )
        status = await page.evaluate("document.getElementById('status').textContent")
        assert "Stale" in status
        assert (
            await page.evaluate(
                "document.querySelector('.window-card[data-window=\"1h\"]').dataset.stale"
            )
            == "true"
        )

        # A new snapshot, written the way the publisher writes it, is on the page within 3 s.
        current = _stored(client, "1h", "all")
        fresh = {
            **current,
            "orders": current["orders"] + 1000,
            "revenue": "987654.32",
            "churn_rate": 0.0421,
            "updated_at": rfc3339(datetime.now(UTC)),
        }
        started = time.monotonic()
        write_snapshot(client, fresh)
        await page.wait_for(
            """(() => {
              const tile = (k) => document.querySelector(
                `.tile[data-window="1h"][data-kpi="${k}"] .tile-value`);
              return tile('orders').dataset.value === 'ORDERS'
                && tile('revenue').textContent === '$987,654.32'
                && tile('churn_rate').textContent === '4.21%';
            })()""".replace("ORDERS", str(fresh["orders"])),
            3.0,
        )
        elapsed = time.monotonic() - started
        assert elapsed < 3.0
        await page.wait_for("document.getElementById('status').dataset.state === 'live'", 2)
        await _assert_page_shows_redis(page, client, "all")
        await _assert_bands_and_panel(page)
        await page.enable(1440, 1280)  # tall enough for the panels under the window cards
        await asyncio.sleep(0.5)
        await page.screenshot(artifacts_dir / "dashboard.png")

        # The segment selector offers all, the regions and the campaign; each shows its own.
        options = await page.evaluate(
            "[...document.querySelectorAll('#segment option')].map((o) => o.value)"
        )
        assert options == ["all", "region:EU", "region:NA", CAMPAIGN]
        for segment in ("region:EU", CAMPAIGN):
            await page.evaluate(
                f"""(() => {{ const s = document.getElementById('segment');
                s.value = {json.dumps(segment)}; s.dispatchEvent(new Event('change')); }})()"""
            )
            await _wait_values(page, segment, client)
            await _assert_page_shows_redis(page, client, segment)
        await page.screenshot(artifacts_dir / "dashboard-campaign.png")

        # Nothing failed, nothing came from anywhere but this server, no script error.
        assert page.failures() == []
        assert page.exceptions == []
        assert page.console_errors == []
        urls = {request.url for request in page.requests.values()}
        assert urls
        assert all(u.startswith(origin + "/") for u in urls), sorted(urls)
    finally:
        await page.close()
        await browser.close()
