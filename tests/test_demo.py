"""The README's run command: ``kpi dev --simulate --watch`` shows live KPIs within a minute.

Once they are there, the dashboard of the demo is photographed in headless Chromium for
README's "what you should see" (``docs/img/dashboard.png``), so the picture is what a user
of ``make demo`` sees; without Chromium the picture is left as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from stream_app.dashboard.kpimeta import CRM_HEADLINE
from stream_app.devstack import free_port
from tests.cdp import Browser, ensure_chromium
from tests.conftest import ROOT
from tests.test_devstack import _alive, _children, _start_dev

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

LONG_WINDOWS = ("24h", "7d", "30d")
TEST_CUSTOMERS = 2000
README_PICTURE = ROOT / "docs" / "img" / "dashboard.png"
# Every headline tile of the 30d card shows a value, and the strengths and weaknesses panel
# has been drawn: what the picture must show.
_PAGE_READY = """(() => {
  const tiles = [...document.querySelectorAll('.tile[data-window="30d"] .tile-value')];
  return tiles.length > 0 && tiles.every((t) => t.textContent.trim() && t.textContent !== '—')
    && document.querySelectorAll('#bench section').length === 2;
})()"""


def _headline_gaps(client: redis.Redis) -> list[str]:
    """What is still missing: windows without a snapshot, null headline KPIs, equal orders."""
    gaps = []
    snapshots = {w: client.hgetall(f"kpi:{w}:all") for w in LONG_WINDOWS}
    for window, snapshot in snapshots.items():
        if not snapshot:
            gaps.append(f"no kpi:{window}:all")
            continue
        values = {k: json.loads(snapshot.get(k.encode(), b"null")) for k in CRM_HEADLINE}
        gaps += [f"{window} {k}" for k, v in values.items() if v is None]
    day, month = snapshots["24h"], snapshots["30d"]
    if day and month and day[b"orders"] == month[b"orders"]:
        gaps.append("24h and 30d have the same orders")
    return gaps


def _fresh_publish_rounds(web_port: int) -> float:
    """Publish rounds so far that were at most 5 s behind their newest event."""
    url = f"http://127.0.0.1:{web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read()
    found = re.search(rb'^kpi_event_to_publish_seconds_bucket\{le="5.0"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def _photograph(web_port: int, picture: Path, log_path: Path) -> None:
    browser = await Browser.start(log_path=log_path)
    page = await browser.new_page()
    try:
        await page.enable(1440, 1280)
        await page.goto(f"http://127.0.0.1:{web_port}/")
        await page.wait_for(_PAGE_READY, 30, interval_s=0.2)
        await asyncio.sleep(1.0)  # the trend charts draw after the tiles
        await page.screenshot(picture)
    finally:
        await page.close()
        await browser.close()


def test_demo_shows_live_kpis_within_a_minute_and_stops_cleanly(
    tmp_path: Path, artifacts_dir: Path
) -> None:
    broker_port, redis_port, web_port = free_port(), free_port(), free_port()
    started = time.monotonic()
    # A third of the demo's population (and so of its history): the same 36 days and live
    # rate, lighter on a machine that runs the rest of the suite beside it.
    dev = _start_dev(
        tmp_path,
        broker_port,
        redis_port,
        web_port,
        "--simulate",
        "--simulate-customers",
        str(TEST_CUSTOMERS),
        "--watch",
    )
    log = tmp_path / "dev.log"
    try:
        client = redis.Redis(port=redis_port)
        # The history (36 days) gives every headline KPI a value in every long window, and
        # the windows differ, within a minute of the start.
        gaps = ["no Redis yet"]
        while time.monotonic() - started < 60 and gaps:
            assert dev.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(redis.ConnectionError):
                gaps = _headline_gaps(client)
            if gaps:
                time.sleep(0.5)
        assert not gaps, f"after 60 s: {gaps}\n" + log.read_text()[-3000:]
        logger.info("every headline KPI after %.1f s", time.monotonic() - started)
        first = client.hgetall("kpi:1h:all")

        # Live: the simulator keeps sending events stamped now, so the snapshot moves on.
        deadline = time.monotonic() + 30
        later = first
        while time.monotonic() < deadline and later[b"updated_at"] == first[b"updated_at"]:
            time.sleep(0.5)
            later = client.hgetall("kpi:1h:all")
        assert later[b"updated_at"] != first[b"updated_at"], "the snapshot stopped updating"
        client.close()
        # Live events are stamped close to now (small --disorder): once the history is in,
        # publish rounds reach Redis within 5 s of their newest event's occurred_at.
        deadline = time.monotonic() + 20
        fresh = 0.0
        while time.monotonic() < deadline and not fresh:
            fresh = _fresh_publish_rounds(web_port)
            time.sleep(0.5 if not fresh else 0)
        assert fresh > 0, "no publish round within 5 s of its newest event"

        # README's picture: the demo's own dashboard, every headline tile of 30d filled.
        no_browser = ensure_chromium()
        if no_browser is None:
            picture = artifacts_dir / "dashboard-demo.png"
            asyncio.run(_photograph(web_port, picture, artifacts_dir / "chromium-demo.log"))
            README_PICTURE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, README_PICTURE)
        else:
            logger.warning("README's picture not refreshed: no headless Chromium (%s)", no_browser)

        children = _children(dev.pid)
        names = {Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children if _alive(pid)}
        assert any(b"simulate" in name for name in names), names
        assert any(b"watch" in name for name in names), names

        dev.send_signal(signal.SIGINT)
        dev.wait(60)
        assert dev.returncode == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.3)
        assert not [pid for pid in children if _alive(pid)], "processes left behind"
        # The live view drew the KPIs into the terminal (here: the captured output).
        assert "new_customers" in log.read_text(errors="replace")
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
